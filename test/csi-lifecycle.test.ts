/**
 * The CSI plugin as shipped: a real `spacectl csi --mode all` process (standalone, owning its
 * store in --data-dir), driven over its unix socket by a grpc-js client built from our proto,
 * with real FUSE mounts read and written by shell tools. Covers the volume lifecycle a kubelet
 * and the sidecars walk through: create, stage, publish rw + ro, snapshot, restore, a plugin
 * restart under a published volume, delete.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { fuseAvailability } from '../gateway/fuse/native.js';
import { loadCsiClients } from '../csi-node/proto.js';
import { NodeState } from '../csi-node/node-state.js';
import { SPACECTL, REPO, sh, spacectl } from './helpers/cli.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const MiB = 1 << 20;
type Req = Record<string, unknown>;
type Raw = grpc.Client & Record<string, (req: Req, cb: (err: grpc.ServiceError | null, res: any) => void) => void>;

function call(client: Raw, method: string, req: Req): Promise<any> {
  return new Promise((resolve, reject) => client[method]!.call(client, req, (err, res) => (err ? reject(err) : resolve(res))));
}

const MOUNT_RW = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

interface Plugin {
  child: ChildProcess;
  identity: Raw;
  controller: Raw;
  node: Raw;
  stderr(): string;
  close(): void;
}

/** Start `spacectl csi --mode all` and wait for its ready line on stderr. */
function startPlugin(sock: string, dataDir: string): Promise<Plugin> {
  const child = spawn(process.execPath, [SPACECTL, 'csi', '--mode', 'all', '--endpoint', `unix://${sock}`, '--node-id', 'n1', '--data-dir', dataDir], {
    cwd: REPO,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d;
      if (err.includes('space csi: all on')) {
        const c = loadCsiClients();
        const mk = (C: grpc.ServiceClientConstructor) => new C(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as Raw;
        const identity = mk(c.Identity), controller = mk(c.Controller), node = mk(c.Node);
        resolve({ child, identity, controller, node, stderr: () => err, close: () => [identity, controller, node].forEach((x) => x.close()) });
      }
    });
    child.once('exit', (code) => reject(new Error(`csi plugin exited (${code}) before ready: ${err}`)));
  });
}

async function stopPlugin(p: Plugin, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  p.close();
  if (p.child.exitCode !== null || p.child.signalCode !== null) return p.child.exitCode;
  const exited = new Promise<number | null>((r) => p.child.once('exit', (code) => r(code)));
  p.child.kill(signal);
  return exited;
}

const fuseReason = !fs.existsSync('/dev/fuse') ? '/dev/fuse does not exist' : fuseAvailability().ok ? '' : (fuseAvailability() as { reason: string }).reason;

describe('CSI lifecycle through `spacectl csi --mode all`', function () {
  this.timeout(120_000);
  let dir: string;
  let sock: string;
  let dataDir: string;
  let plugin: Plugin | undefined;

  before(async function () {
    if (fuseReason) {
      console.log(`      skipping the CSI lifecycle test: ${fuseReason}`);
      this.skip();
    }
    dir = tmpDir('space-csi-life-');
    sock = path.join(dir, 'csi.sock');
    dataDir = path.join(dir, 'data');
    plugin = await startPlugin(sock, dataDir);
  });

  after(async function () {
    if (plugin) await stopPlugin(plugin).catch(() => {});
    if (!dir) return;
    // Whatever a failed test left behind: publishes, then the mount processes, then any mount
    // under our dir (deepest first), then mount processes naming our dir.
    const stateDir = path.join(dataDir, 'csi-node');
    if (fs.existsSync(stateDir)) {
      const state = await NodeState.open(stateDir).catch(() => undefined);
      for (const v of state?.list() ?? []) {
        for (const t of Object.keys(v.publishes)) await sh('umount', ['-l', t]);
        if (v.mountProcess) try { process.kill(v.mountProcess.pid, 'SIGKILL'); } catch { /* gone */ }
        await sh('umount', ['-l', v.stagingPath]);
      }
    }
    const mounts = (await fs.promises.readFile('/proc/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(dir));
    for (const m of mounts.sort((a, b) => b.length - a.length)) await sh('umount', ['-l', m]);
    for (const pid of await fs.promises.readdir('/proc').catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      const cmd = await fs.promises.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmd.includes('mount-process.js') && cmd.includes(dir)) try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
    rmrf(dir);
  });

  it('refuses to start without --node-id, saying so', async () => {
    const r = await spacectl(['csi', '--mode', 'all', '--endpoint', `unix://${path.join(dir, 'other.sock')}`, '--data-dir', path.join(dir, 'other')], { NODE_ID: '' });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--node-id is required/);
  });

  it('creates, stages, publishes rw + ro, snapshots, restores, survives a restart and deletes', async () => {
    let p = plugin!;
    const identity = await call(p.identity, 'GetPluginInfo', {});
    assert.ok(identity.name, 'plugin has a name');

    const create = async (name: string, extra: Req = {}) =>
      (await call(p.controller, 'CreateVolume', { name, capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [MOUNT_RW], parameters: { protocol: 'fuse' }, ...extra })).volume;
    const vol = await create('pvc-life');
    assert.equal(vol.volume_context.protocol, 'fuse');
    assert.ok(BigInt(vol.capacity_bytes) >= BigInt(64 * MiB));

    const stage = (v: any, staging: string) => call(p.node, 'NodeStageVolume', { volume_id: v.volume_id, staging_target_path: staging, volume_capability: MOUNT_RW, volume_context: v.volume_context });
    const publish = (v: any, staging: string, target: string, readonly: boolean) =>
      call(p.node, 'NodePublishVolume', { volume_id: v.volume_id, staging_target_path: staging, target_path: target, readonly, volume_capability: MOUNT_RW, volume_context: v.volume_context });
    const unpublish = (v: any, target: string) => call(p.node, 'NodeUnpublishVolume', { volume_id: v.volume_id, target_path: target });
    const unstage = (v: any, staging: string) => call(p.node, 'NodeUnstageVolume', { volume_id: v.volume_id, staging_target_path: staging });

    const staging = path.join(dir, 'staging', 'life', 'globalmount');
    const t1 = path.join(dir, 'pods', 'a', 'mount');
    const t2 = path.join(dir, 'pods', 'b', 'mount');
    await stage(vol, staging);
    await publish(vol, staging, t1, false);
    const w = await sh('sh', ['-c', `echo hello > '${t1}/hello.txt'`]);
    assert.equal(w.code, 0, w.stderr);
    assert.equal((await sh('cat', [path.join(t1, 'hello.txt')])).stdout, 'hello\n');

    await publish(vol, staging, t2, true);
    assert.equal((await sh('cat', [path.join(t2, 'hello.txt')])).stdout, 'hello\n', 'the ro target sees the same volume');
    const ro = await sh('sh', ['-c', `echo no > '${t2}/nope.txt'`]);
    assert.notEqual(ro.code, 0, 'a write to the read-only target must fail');
    assert.match(ro.stderr, /read-only/i);

    const snap = (await call(p.controller, 'CreateSnapshot', { source_volume_id: vol.volume_id, name: 'snap-life' })).snapshot;
    assert.equal(snap.source_volume_id, vol.volume_id);
    assert.equal(snap.ready_to_use, true);

    await unpublish(vol, t2);
    await unpublish(vol, t1);
    await unstage(vol, staging);

    const restored = await create('pvc-life-restored', { volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    assert.notEqual(restored.volume_id, vol.volume_id);
    const rStaging = path.join(dir, 'staging', 'restored', 'globalmount');
    const rTarget = path.join(dir, 'pods', 'r', 'mount');
    await stage(restored, rStaging);
    await publish(restored, rStaging, rTarget, false);
    assert.equal((await sh('cat', [path.join(rTarget, 'hello.txt')])).stdout, 'hello\n', 'the restored volume has the snapshot\'s file');

    // Restart under a published volume: the mount process is not the plugin's child in the
    // sense that matters (it outlives SIGTERM), and the new plugin adopts it from the state dir.
    const code = await stopPlugin(p, 'SIGTERM');
    plugin = undefined;
    assert.equal(code, 0, 'the plugin exits cleanly on SIGTERM');
    // Standalone, the plugin owns the store and serves its gateway socket, so while it is down
    // the mount has nothing to read from: reads may fail then, but the mount itself must stay.
    const down = await sh('cat', [path.join(rTarget, 'hello.txt')]);
    console.log(`      while the plugin is down: cat exit ${down.code} ${down.stderr.trim()}`);
    assert.ok((await fs.promises.readFile('/proc/mounts', 'utf8')).includes(` ${rTarget} `), 'the target is still mounted while the plugin is down');
    p = plugin = await startPlugin(sock, dataDir);
    // The mount process's gRPC channel to the gateway socket reconnects with backoff, so the
    // first reads after the restart may still fail: allow it a bounded time to come back.
    const restarted = Date.now();
    let after = await sh('cat', [path.join(rTarget, 'hello.txt')]);
    while (after.code !== 0 && Date.now() - restarted < 30_000) {
      await new Promise((r) => setTimeout(r, 200));
      after = await sh('cat', [path.join(rTarget, 'hello.txt')]);
    }
    console.log(`      readable again ${Date.now() - restarted} ms after the restart`);
    assert.equal(after.stdout, 'hello\n', `readable after the restart: ${after.stderr}`);
    assert.equal((await sh('sh', ['-c', `echo again >> '${rTarget}/hello.txt'`])).code, 0, 'writable after the restart');
    assert.equal((await sh('cat', [path.join(rTarget, 'hello.txt')])).stdout, 'hello\nagain\n');
    const stats = await call(p.node, 'NodeGetVolumeStats', { volume_id: restored.volume_id, volume_path: rTarget, staging_target_path: rStaging });
    const bytes = (stats.usage as { unit: string; total: string }[]).find((u) => u.unit === 'BYTES')!;
    assert.ok(BigInt(bytes.total) > 0n, JSON.stringify(stats.usage));
    assert.equal(stats.volume_condition.abnormal, false, stats.volume_condition.message);

    await unpublish(restored, rTarget);
    await unstage(restored, rStaging);
    assert.ok(!fs.existsSync(rTarget) && !fs.existsSync(rStaging), 'target and staging dirs removed');
    assert.equal((await NodeState.open(path.join(dataDir, 'csi-node'))).list().length, 0, 'nothing left staged');

    await call(p.controller, 'DeleteVolume', { volume_id: restored.volume_id });
    await call(p.controller, 'DeleteVolume', { volume_id: restored.volume_id }); // idempotent
    const ids = (await call(p.controller, 'ListVolumes', {})).entries.map((e: any) => e.volume.volume_id);
    assert.ok(!ids.includes(restored.volume_id), 'deleted volume no longer listed');
    assert.ok(ids.includes(vol.volume_id), 'the other volume is still listed');
    await call(p.controller, 'DeleteSnapshot', { snapshot_id: snap.snapshot_id });
    await call(p.controller, 'DeleteVolume', { volume_id: vol.volume_id });
    assert.equal((await call(p.controller, 'ListVolumes', {})).entries.length, 0);
  });
});
