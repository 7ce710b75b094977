/**
 * CSI Node service: the gRPC API on a real unix socket, FUSE staging through real mount
 * processes against a real gateway in another process, plugin restart and repair; NVMe/TCP and
 * NFS command lines and parsers against recorded outputs (test/fixtures/csi/).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../capsule/log.js';
import { GatewayClient } from '../gateway/client.js';
import { fuseAvailability } from '../gateway/fuse/native.js';
import { loadCsiClients, loadCsiProto } from '../csi-node/proto.js';
import { createNodeService, type NodeService } from '../csi-node/node-service.js';
import { NodeState } from '../csi-node/node-state.js';
import type { CommandRunner } from '../csi-node/mounters/exec.js';
import { bindArgs } from '../csi-node/mounters/bind.js';
import { mountAtPath, nfsMountsOf, parseMountInfo } from '../csi-node/mounters/mountinfo.js';
import { connectArgs, disconnectArgs, findDevice, NvmeMounter, parseBlkid, parseList, parseListSubsys } from '../csi-node/mounters/nvme.js';
import { NfsMounter, nfsMountArgs } from '../csi-node/mounters/nfs.js';
import { REPO, sh, startServe } from './helpers/cli.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const FIXTURES = path.join(REPO, 'test', 'fixtures', 'csi');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');

const logLines: string[] = [];
const logger = createLogger({ component: 'test', level: 'debug', write: (l) => logLines.push(l) });

type Req = Record<string, unknown>;
type NodeClient = grpc.Client & Record<string, (req: Req, cb: (err: grpc.ServiceError | null, res: Req) => void) => void>;

function call(client: NodeClient, method: string, req: Req): Promise<Req> {
  return new Promise((resolve, reject) => client[method]!.call(client, req, (err, res) => (err ? reject(err) : resolve(res))));
}

async function rejectsWith(p: Promise<unknown>, code: grpc.status, what = ''): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    assert.equal(err.code, code, `${what}: expected ${grpc.status[code]}, got ${grpc.status[err.code]} (${err.details})`);
    return err;
  }
  assert.fail(`${what}: expected ${grpc.status[code]}, but the call succeeded`);
}

const MOUNT_RW = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const BLOCK_RW = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

/** A Node service on its own unix socket (a plugin instance). */
async function startPlugin(dir: string, name: string, stateDir: string, gateway: string): Promise<{ svc: NodeService; client: NodeClient; stop(): Promise<void> }> {
  const svc = createNodeService({ nodeId: 'node-a', zone: 'zone-1', maxVolumes: 64, stateDir, gateway, logger });
  const server = new grpc.Server();
  server.addService(loadCsiProto().Node, svc.implementation);
  const sock = path.join(dir, `${name}.sock`);
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  const client = new (loadCsiClients().Node)(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as NodeClient;
  return {
    svc,
    client,
    async stop() {
      client.close();
      await new Promise<void>((r) => server.tryShutdown(() => r()));
      await svc.close();
    },
  };
}

/** The plugin in a separate process (killed with SIGKILL to simulate a crash). */
async function startPluginProcess(dir: string, name: string, stateDir: string, gateway: string): Promise<{ child: ChildProcess; client: NodeClient }> {
  const sock = path.join(dir, `${name}.sock`);
  const child = spawn(process.execPath, [path.join(REPO, 'dist', 'test', 'helpers', 'csi-node-plugin.js'), stateDir, gateway, sock], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    child.once('exit', (code) => reject(new Error(`plugin exited (${code}): ${err}`)));
  });
  return { child, client: new (loadCsiClients().Node)(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as NodeClient };
}

const fuseReason = !fs.existsSync('/dev/fuse') ? '/dev/fuse does not exist' : fuseAvailability().ok ? '' : (fuseAvailability() as { reason: string }).reason;

describe('CSI node service (FUSE, real gateway)', function () {
  this.timeout(120_000);
  let dir: string;
  let serve: ChildProcess | undefined;
  let gwAddr: string;
  let gw: GatewayClient;
  let plugin: Awaited<ReturnType<typeof startPlugin>> | undefined;
  let stateDir: string;
  let cap1: string;
  let cap2: string;

  before(async function () {
    if (fuseReason) {
      console.log(`      skipping the CSI FUSE tests: ${fuseReason}`);
      this.skip();
    }
    dir = tmpDir('space-csi-node-');
    stateDir = path.join(dir, 'state');
    const s = await startServe(['--data-dir', path.join(dir, 'gw'), '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--no-operator'], {});
    serve = s.child;
    gwAddr = `127.0.0.1:${s.port}`;
    gw = new GatewayClient(gwAddr);
    cap1 = (await gw.create({ name: 'pvc-one', size: 1 << 20 })).id;
    cap2 = (await gw.create({ name: 'pvc-two', size: 1 << 20 })).id;
    plugin = await startPlugin(dir, 'csi-1', stateDir, gwAddr);
  });

  after(async function () {
    await plugin?.stop().catch(() => {});
    // Whatever a failed test left behind: bind mounts first, then the mount processes.
    if (stateDir && fs.existsSync(stateDir)) {
      const state = await NodeState.open(stateDir);
      for (const v of state.list()) {
        for (const t of Object.keys(v.publishes)) await sh('umount', ['-l', t]);
        if (v.mountProcess) try { process.kill(v.mountProcess.pid, 'SIGKILL'); } catch { /* gone */ }
        await sh('umount', ['-l', v.stagingPath]);
      }
    }
    gw?.close();
    serve?.kill('SIGTERM');
    if (serve && serve.exitCode === null) await new Promise((r) => serve!.once('exit', r));
    if (dir) {
      for (const m of parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8')).reverse()) {
        if (m.mountPoint.startsWith(dir)) await sh('umount', ['-l', m.mountPoint]);
      }
      rmrf(dir);
    }
  });

  const ctx = (capsuleId: string) => ({ protocol: 'fuse', capsuleId });
  const stageReq = (capsuleId: string, staging: string) => ({ volume_id: capsuleId, staging_target_path: staging, volume_capability: MOUNT_RW, volume_context: ctx(capsuleId) });
  const publishReq = (capsuleId: string, staging: string, target: string, readonly: boolean) => ({ ...stageReq(capsuleId, staging), target_path: target, readonly });

  it('reports capabilities and node info', async () => {
    const caps = await call(plugin!.client, 'NodeGetCapabilities', {});
    const types = (caps.capabilities as { rpc: { type: string } }[]).map((c) => c.rpc.type).sort();
    assert.deepEqual(types, ['EXPAND_VOLUME', 'GET_VOLUME_STATS', 'STAGE_UNSTAGE_VOLUME', 'VOLUME_CONDITION']);
    const info = await call(plugin!.client, 'NodeGetInfo', {});
    assert.equal(info.node_id, 'node-a');
    assert.equal(info.max_volumes_per_node, '64');
    assert.deepEqual((info.accessible_topology as { segments: Record<string, string> }).segments, { 'topology.space.io/zone': 'zone-1' });
  });

  it('rejects every missing required field with INVALID_ARGUMENT', async () => {
    const c = plugin!.client;
    const st = path.join(dir, 'x-stage');
    const tg = path.join(dir, 'x-target');
    const cases: [string, Req][] = [
      ['NodeStageVolume', { ...stageReq(cap1, st), volume_id: '' }],
      ['NodeStageVolume', { ...stageReq(cap1, st), staging_target_path: '' }],
      ['NodeStageVolume', { ...stageReq(cap1, st), volume_capability: null }],
      ['NodeStageVolume', { ...stageReq(cap1, 'relative/path') }],
      ['NodeUnstageVolume', { volume_id: '', staging_target_path: st }],
      ['NodeUnstageVolume', { volume_id: cap1, staging_target_path: '' }],
      ['NodePublishVolume', { ...publishReq(cap1, st, tg, false), volume_id: '' }],
      ['NodePublishVolume', { ...publishReq(cap1, st, tg, false), target_path: '' }],
      ['NodePublishVolume', { ...publishReq(cap1, st, tg, false), staging_target_path: '' }],
      ['NodePublishVolume', { ...publishReq(cap1, st, tg, false), volume_capability: null }],
      ['NodeUnpublishVolume', { volume_id: '', target_path: tg }],
      ['NodeUnpublishVolume', { volume_id: cap1, target_path: '' }],
      ['NodeGetVolumeStats', { volume_id: '', volume_path: tg }],
      ['NodeGetVolumeStats', { volume_id: cap1, volume_path: '' }],
      ['NodeExpandVolume', { volume_id: '', volume_path: tg }],
      ['NodeExpandVolume', { volume_id: cap1, volume_path: '' }],
    ];
    for (const [m, r] of cases) await rejectsWith(call(c, m, r), grpc.status.INVALID_ARGUMENT, `${m} ${JSON.stringify(r)}`);
    assert.ok(!fs.existsSync(st) && !fs.existsSync(tg), 'a rejected call leaves nothing behind');
  });

  it('answers NOT_FOUND for unknown volumes and paths', async () => {
    const c = plugin!.client;
    const missing = '00000000-0000-4000-8000-000000000000';
    await rejectsWith(call(c, 'NodeStageVolume', stageReq(missing, path.join(dir, 'nf-stage'))), grpc.status.NOT_FOUND, 'stage of a missing capsule');
    await rejectsWith(call(c, 'NodePublishVolume', publishReq(missing, path.join(dir, 'nf-stage'), path.join(dir, 'nf-t'), false)), grpc.status.NOT_FOUND, 'publish of a missing capsule');
    await rejectsWith(call(c, 'NodeGetVolumeStats', { volume_id: cap1, volume_path: path.join(dir, 'nowhere') }), grpc.status.NOT_FOUND, 'stats of an unknown path');
    await rejectsWith(call(c, 'NodeExpandVolume', { volume_id: cap1, volume_path: path.join(dir, 'nowhere') }), grpc.status.NOT_FOUND, 'expand of an unknown path');
    assert.ok(!fs.existsSync(path.join(dir, 'nf-stage')));
  });

  it('runs the full FUSE lifecycle: stage, publish rw + ro, shell I/O, stats, unpublish, unstage', async () => {
    const c = plugin!.client;
    const staging = path.join(dir, 'plugins', 'v1', 'globalmount');
    const t1 = path.join(dir, 'pods', 'a', 'mount');
    const t2 = path.join(dir, 'pods', 'b', 'mount');
    await call(c, 'NodeStageVolume', stageReq(cap1, staging));
    await call(c, 'NodeStageVolume', stageReq(cap1, staging)); // idempotent
    const rec = (await NodeState.open(stateDir)).get(cap1)!;
    assert.ok(rec.mountProcess && rec.mountProcess.pid !== process.pid, 'served by its own process');
    assert.equal(mountAtPath(parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8')), staging)?.fstype, 'fuse.space');

    await call(c, 'NodePublishVolume', publishReq(cap1, staging, t1, false));
    await call(c, 'NodePublishVolume', publishReq(cap1, staging, t1, false)); // idempotent
    await rejectsWith(call(c, 'NodePublishVolume', publishReq(cap1, staging, t1, true)), grpc.status.ALREADY_EXISTS, 'same target, other readonly flag');

    const w = await sh('sh', ['-c', 'echo hi > "$1/hello" && printf volume-data | dd of="$1/content" conv=notrunc status=none', 'sh', t1]);
    assert.equal(w.code, 0, w.stderr);
    assert.equal((await gw.read(cap1, 'hello', 0, 100)).toString(), 'hi\n', 'the write reached the gateway');

    await call(c, 'NodePublishVolume', publishReq(cap1, staging, t2, true));
    assert.equal((await sh('cat', [path.join(t2, 'hello')])).stdout, 'hi\n');
    assert.equal((await sh('head', ['-c', '11', path.join(t2, 'content')])).stdout, 'volume-data');
    const ro = await sh('sh', ['-c', 'echo no > "$1/other"', 'sh', t2]);
    assert.notEqual(ro.code, 0);
    assert.match(ro.stderr, /read-only/i);

    // A different volume at a busy target.
    const staging2 = path.join(dir, 'plugins', 'v2', 'globalmount');
    await call(c, 'NodeStageVolume', stageReq(cap2, staging2));
    await rejectsWith(call(c, 'NodePublishVolume', publishReq(cap2, staging2, t1, false)), grpc.status.ALREADY_EXISTS, 'other volume at a busy target');

    const stats = await call(c, 'NodeGetVolumeStats', { volume_id: cap1, volume_path: t1, staging_target_path: staging });
    const usage = stats.usage as { unit: string; total: string; available: string; used: string }[];
    const bytes = usage.find((u) => u.unit === 'BYTES')!;
    const inodes = usage.find((u) => u.unit === 'INODES')!;
    assert.ok(BigInt(bytes.total) > 0n && BigInt(bytes.available) <= BigInt(bytes.total), JSON.stringify(bytes));
    assert.ok(BigInt(inodes.total) > 0n, JSON.stringify(inodes));
    assert.deepEqual(stats.volume_condition, { abnormal: false, message: 'healthy' });
    await rejectsWith(call(c, 'NodeGetVolumeStats', { volume_id: cap2, volume_path: t1 }), grpc.status.NOT_FOUND, 'stats with the wrong volume id');

    const exp = await call(c, 'NodeExpandVolume', { volume_id: cap1, volume_path: t1, capacity_range: { required_bytes: String(2 << 20), limit_bytes: '0' } });
    assert.equal(exp.capacity_bytes, String(2 << 20));

    // Unstaging a published volume is refused rather than pulling the mount from under a pod.
    await rejectsWith(call(c, 'NodeUnstageVolume', { volume_id: cap1, staging_target_path: staging }), grpc.status.FAILED_PRECONDITION, 'unstage while published');

    await call(c, 'NodeUnpublishVolume', { volume_id: cap1, target_path: t2 });
    await call(c, 'NodeUnpublishVolume', { volume_id: cap1, target_path: t1 });
    await call(c, 'NodeUnpublishVolume', { volume_id: cap1, target_path: t1 }); // idempotent
    assert.ok(!fs.existsSync(t1) && !fs.existsSync(t2), 'target dirs removed');
    await call(c, 'NodeUnstageVolume', { volume_id: cap1, staging_target_path: staging });
    await call(c, 'NodeUnstageVolume', { volume_id: cap1, staging_target_path: staging }); // idempotent
    await call(c, 'NodeUnstageVolume', { volume_id: cap2, staging_target_path: staging2 });
    assert.ok(!fs.existsSync(staging) && !fs.existsSync(staging2), 'staging dirs we created are removed');
    assert.throws(() => process.kill(rec.mountProcess!.pid, 0), 'the mount process exited');
    assert.equal((await NodeState.open(stateDir)).list().length, 0);
    assert.equal((await gw.read(cap1, 'hello', 0, 100)).toString(), 'hi\n', 'data kept after unstage');
    assert.ok(logLines.some((l) => l.includes('"event":"node.staged"') && l.includes(`"volume":"${cap1}"`)), 'logs carry the volume id');
  });

  it('answers ABORTED to a second operation on a volume while one is in flight', async () => {
    const c = plugin!.client;
    const staging = path.join(dir, 'plugins', 'ab', 'globalmount');
    const results = await Promise.allSettled([call(c, 'NodeStageVolume', stageReq(cap1, staging)), call(c, 'NodeStageVolume', stageReq(cap1, staging))]);
    const codes = results.map((r) => (r.status === 'fulfilled' ? 'OK' : grpc.status[(r.reason as grpc.ServiceError).code])).sort();
    assert.deepEqual(codes, ['ABORTED', 'OK']);
    const pubs = await Promise.allSettled([
      call(c, 'NodePublishVolume', publishReq(cap1, staging, path.join(dir, 'pods', 'ab1'), false)),
      call(c, 'NodePublishVolume', publishReq(cap1, staging, path.join(dir, 'pods', 'ab2'), false)),
    ]);
    const pcodes = pubs.map((r) => (r.status === 'fulfilled' ? 'OK' : grpc.status[(r.reason as grpc.ServiceError).code])).sort();
    assert.deepEqual(pcodes, ['ABORTED', 'OK']);
    for (const t of ['ab1', 'ab2']) await call(c, 'NodeUnpublishVolume', { volume_id: cap1, target_path: path.join(dir, 'pods', t) });
    await call(c, 'NodeUnstageVolume', { volume_id: cap1, staging_target_path: staging });
  });

  it('keeps data readable across a plugin crash and restart, and repair() revives a killed mount process', async () => {
    // The first plugin instance runs in its own process and dies by SIGKILL, as a crashed pod.
    await plugin!.stop();
    plugin = undefined;
    const crashing = await startPluginProcess(dir, 'csi-crash', stateDir, gwAddr);
    let c = crashing.client;
    const staging = path.join(dir, 'plugins', 'r', 'globalmount');
    const target = path.join(dir, 'pods', 'r', 'mount');
    const roTarget = path.join(dir, 'pods', 'r-ro', 'mount');
    try {
      await call(c, 'NodeStageVolume', stageReq(cap2, staging));
      await call(c, 'NodePublishVolume', publishReq(cap2, staging, target, false));
      await call(c, 'NodePublishVolume', publishReq(cap2, staging, roTarget, true));
      assert.equal((await sh('sh', ['-c', 'echo before-restart > "$1/r.txt"', 'sh', target])).code, 0);
    } finally {
      c.close();
      crashing.child.kill('SIGKILL');
      if (crashing.child.exitCode === null) await new Promise((r) => crashing.child.once('exit', r));
    }
    assert.equal((await sh('cat', [path.join(target, 'r.txt')])).stdout, 'before-restart\n', 'mount survived the plugin');
    // A new instance (in this process) on the same state dir; a graceful close() must not stop
    // the mount processes either.
    const second = await startPlugin(dir, 'csi-2', stateDir, gwAddr);
    await second.svc.repair();
    await second.stop();
    assert.equal((await sh('cat', [path.join(target, 'r.txt')])).stdout, 'before-restart\n', 'mount survived close()');
    plugin = await startPlugin(dir, 'csi-3', stateDir, gwAddr);
    c = plugin.client;
    await plugin.svc.repair(); // nothing to do: everything is healthy
    const pid1 = (await NodeState.open(stateDir)).get(cap2)!.mountProcess!.pid;
    assert.equal((await sh('cat', [path.join(target, 'r.txt')])).stdout, 'before-restart\n');

    // The mount process dies: the target is broken ("transport endpoint is not connected").
    process.kill(pid1, 'SIGKILL');
    for (let i = 0; i < 100 && fs.existsSync(`/proc/${pid1}/status`) && !/State:\s+Z/.test(fs.readFileSync(`/proc/${pid1}/status`, 'utf8')); i++) await new Promise((r) => setTimeout(r, 50));
    const broken = await sh('cat', [path.join(target, 'r.txt')]);
    assert.notEqual(broken.code, 0);
    assert.match(broken.stderr, /not connected|connection abort/i);
    const sick = await call(c, 'NodeGetVolumeStats', { volume_id: cap2, volume_path: target });
    assert.equal((sick.volume_condition as { abnormal: boolean }).abnormal, true);

    await plugin.svc.repair();
    const pid2 = (await NodeState.open(stateDir)).get(cap2)!.mountProcess!.pid;
    assert.notEqual(pid2, pid1);
    assert.equal((await sh('cat', [path.join(target, 'r.txt')])).stdout, 'before-restart\n', 'target works again');
    assert.equal((await sh('cat', [path.join(roTarget, 'r.txt')])).stdout, 'before-restart\n', 'ro target works again');
    assert.equal((await sh('sh', ['-c', 'echo after-repair >> "$1/r.txt"', 'sh', target])).code, 0);
    assert.notEqual((await sh('sh', ['-c', 'echo x > "$1/r2.txt"', 'sh', roTarget])).code, 0, 'ro target still read-only');
    assert.equal((await gw.read(cap2, 'r.txt', 0, 100)).toString(), 'before-restart\nafter-repair\n');
    const healthy = await call(c, 'NodeGetVolumeStats', { volume_id: cap2, volume_path: target });
    assert.equal((healthy.volume_condition as { abnormal: boolean }).abnormal, false);

    await call(c, 'NodeUnpublishVolume', { volume_id: cap2, target_path: target });
    await call(c, 'NodeUnpublishVolume', { volume_id: cap2, target_path: roTarget });
    await call(c, 'NodeUnstageVolume', { volume_id: cap2, staging_target_path: staging });
    assert.ok(!fs.existsSync(target) && !fs.existsSync(staging));
  });
});

/** A fake host: records every argv, answers from recorded outputs. */
function fakeRunner(answer: (cmd: string, args: string[]) => { code?: number; stdout?: string; stderr?: string }): { run: CommandRunner; calls: string[][] } {
  const calls: string[][] = [];
  const run: CommandRunner = async (cmd, args) => {
    calls.push([cmd, ...args]);
    const a = answer(cmd, args);
    return { code: a.code ?? 0, stdout: a.stdout ?? '', stderr: a.stderr ?? '' };
  };
  return { run, calls };
}

const NQN = 'nqn.2024-06.io.space:capsule:4b8d2f0e-5c1a-4d7e-9f3b-2a6c8e1d7b90';

describe('CSI node mounters against recorded outputs (NVMe/TCP, NFS)', () => {
  it('parses nvme list-subsys (2.x and 1.x shapes) and nvme list', () => {
    const subs = parseListSubsys(fixture('nvme-list-subsys.json'));
    assert.deepEqual(subs.map((s) => s.name), ['nvme-subsys0', 'nvme-subsys1', 'nvme-subsys2']);
    assert.deepEqual(subs[2]!.paths, [{ name: 'nvme3', transport: 'tcp', address: 'traddr=10.96.14.20,trsvcid=4420,src_addr=10.244.1.7', state: 'live' }]);
    assert.equal(parseListSubsys(fixture('nvme-list-subsys-v1.json'))[0]!.nqn, NQN);
    assert.deepEqual(parseListSubsys(''), []);
    const devs = parseList(fixture('nvme-list.json'));
    assert.equal(devs.length, 3);
    assert.deepEqual(devs[2], { devicePath: '/dev/nvme2n1', namespace: 1, sizeBytes: 2147483648, modelNumber: 'Space capsule volume', serialNumber: '4b8d2f0e5c1a4d7e' });
  });

  it('finds the namespace device of an NQN with and without native multipath', () => {
    const subs = parseListSubsys(fixture('nvme-list-subsys.json'));
    assert.equal(findDevice(subs, parseList(fixture('nvme-list.json')), NQN, true), '/dev/nvme2n1');
    assert.equal(findDevice(subs, parseList(fixture('nvme-list-no-multipath.json')), NQN, false), '/dev/nvme3n1');
    assert.equal(findDevice(subs, parseList(fixture('nvme-list.json')), 'nqn.2024-06.io.space:capsule:other', true), undefined);
  });

  it('connects with the exact nvme-cli argv, skips connect when already connected, disconnects', async () => {
    assert.deepEqual(connectArgs({ address: '10.96.14.20', port: '4420', nqn: NQN }), ['connect', '-t', 'tcp', '-a', '10.96.14.20', '-s', '4420', '-n', NQN]);
    assert.deepEqual(disconnectArgs(NQN), ['disconnect', '-n', NQN]);
    let connected = false;
    const { run, calls } = fakeRunner((cmd, args) => {
      if (cmd === 'nvme' && args[0] === 'list-subsys') return connected ? { stdout: fixture('nvme-list-subsys.json') } : { code: 1, stderr: 'Failed to scan topology: No such file or directory' };
      if (cmd === 'nvme' && args[0] === 'list') return { stdout: fixture('nvme-list.json') };
      if (cmd === 'nvme' && args[0] === 'connect') connected = true;
      return {};
    });
    const m = new NvmeMounter({ run, multipath: async () => true, sleep: async () => {} });
    const dev = await m.connect({ address: '10.96.14.20', port: '4420', nqn: NQN, hostNqn: 'nqn.2014-08.org.nvmexpress:uuid:node-a' });
    assert.equal(dev, '/dev/nvme2n1');
    assert.deepEqual(calls.slice(0, 2), [
      ['nvme', 'list-subsys', '-o', 'json'],
      ['nvme', 'connect', '-t', 'tcp', '-a', '10.96.14.20', '-s', '4420', '-n', NQN, '--hostnqn', 'nqn.2014-08.org.nvmexpress:uuid:node-a'],
    ]);
    calls.length = 0;
    assert.equal(await m.connect({ address: '10.96.14.20', port: '4420', nqn: NQN }), '/dev/nvme2n1');
    assert.ok(!calls.some((c) => c[1] === 'connect'), 'nvme connect is not idempotent: not called again');
    calls.length = 0;
    await m.disconnect(NQN);
    assert.deepEqual(calls.at(-1), ['nvme', 'disconnect', '-n', NQN]);
  });

  it('makes a filesystem only when blkid finds none, never over a partition table', async () => {
    assert.deepEqual(parseBlkid(2, ''), {});
    assert.deepEqual(parseBlkid(0, fixture('blkid-ext4.txt')), { type: 'ext4', ptType: undefined });
    assert.deepEqual(parseBlkid(0, fixture('blkid-gpt.txt')), { type: undefined, ptType: 'gpt' });
    const empty = fakeRunner((cmd) => (cmd === 'blkid' ? { code: 2 } : {}));
    assert.equal(await new NvmeMounter({ run: empty.run }).ensureFilesystem('/dev/nvme2n1', 'ext4'), 'created');
    assert.deepEqual(empty.calls, [['blkid', '-p', '-o', 'export', '/dev/nvme2n1'], ['mkfs.ext4', '-q', '-m', '0', '/dev/nvme2n1']]);
    const ext4 = fakeRunner((cmd) => (cmd === 'blkid' ? { stdout: fixture('blkid-ext4.txt') } : {}));
    assert.equal(await new NvmeMounter({ run: ext4.run }).ensureFilesystem('/dev/nvme2n1', 'ext4'), 'existing');
    assert.equal(ext4.calls.length, 1);
    const gpt = fakeRunner((cmd) => (cmd === 'blkid' ? { stdout: fixture('blkid-gpt.txt') } : {}));
    await assert.rejects(new NvmeMounter({ run: gpt.run }).ensureFilesystem('/dev/nvme2n1', 'ext4'), /partition table/);
    const m = fakeRunner(() => ({}));
    await new NvmeMounter({ run: m.run }).mount('/dev/nvme2n1', '/stage', 'ext4', ['noatime'], true);
    assert.deepEqual(m.calls, [['mount', '-t', 'ext4', '-o', 'ro,noatime', '/dev/nvme2n1', '/stage']]);
  });

  it('parses mountinfo (this machine + an nfs4 line + escaped paths)', () => {
    const entries = parseMountInfo(fixture('mountinfo.txt'));
    assert.ok(entries.length >= 3);
    assert.equal(mountAtPath(entries, '/')?.fstype, entries.find((e) => e.mountPoint === '/')!.fstype);
    const nfs = nfsMountsOf(entries, '10.96.14.20:/capsules/4b8d2f0e-5c1a-4d7e-9f3b-2a6c8e1d7b90');
    assert.equal(nfs.length, 1);
    assert.equal(nfs[0]!.fstype, 'nfs4');
    assert.equal(nfs[0]!.mountPoint, '/var/lib/kubelet/plugins/kubernetes.io/csi/space.io/3f1c0e9a/globalmount');
    assert.ok(nfs[0]!.superOptions.includes('vers=4.2'));
    const fuse = entries.find((e) => e.fstype === 'fuse.space')!;
    assert.equal(fuse.mountPoint, '/var/lib/kubelet/pods/9e2d/volumes/kubernetes.io~csi/pvc with space/mount');
    assert.equal(fuse.source, 'space:4b8d2f0e-5c1a-4d7e-9f3b-2a6c8e1d7b90');
  });

  it('mounts NFS v4.2 with the exact argv, and is idempotent against an existing mount', async () => {
    const exp = { address: '10.96.14.20', port: '2049', export: '/capsules/4b8d2f0e-5c1a-4d7e-9f3b-2a6c8e1d7b90' };
    assert.deepEqual(nfsMountArgs(exp, '/stage', false), ['-t', 'nfs', '-o', 'vers=4.2,proto=tcp,port=2049', '10.96.14.20:/capsules/4b8d2f0e-5c1a-4d7e-9f3b-2a6c8e1d7b90', '/stage']);
    assert.deepEqual(nfsMountArgs({ ...exp, address: 'fd00::5', port: '20490' }, '/s', true), ['-t', 'nfs', '-o', 'vers=4.2,proto=tcp,port=20490,ro', '[fd00::5]:/capsules/4b8d2f0e-5c1a-4d7e-9f3b-2a6c8e1d7b90', '/s']);
    const entries = parseMountInfo(fixture('mountinfo.txt'));
    const existing = '/var/lib/kubelet/plugins/kubernetes.io/csi/space.io/3f1c0e9a/globalmount';
    const f = fakeRunner(() => ({}));
    const m = new NfsMounter(f.run, async () => entries);
    assert.equal(await m.mount(exp, existing, false), 'existing');
    assert.equal(f.calls.length, 0);
    assert.equal(await m.mount(exp, '/var/lib/kubelet/plugins/new/globalmount', false), 'mounted');
    assert.deepEqual(f.calls, [['mount', ...nfsMountArgs(exp, '/var/lib/kubelet/plugins/new/globalmount', false)]]);
    await assert.rejects(m.mount({ ...exp, export: '/other' }, existing, false), /already has a nfs4 mount/);
    f.calls.length = 0;
    await m.unmount(existing);
    await m.unmount('/not/mounted');
    assert.deepEqual(f.calls, [['umount', existing]]);
  });

  it('binds read-only publishes with an explicit ro remount', () => {
    assert.deepEqual(bindArgs('/stage', '/target', false), [['--bind', '/stage', '/target']]);
    assert.deepEqual(bindArgs('/dev/nvme2n1', '/target', true), [['--bind', '/dev/nvme2n1', '/target'], ['-o', 'remount,bind,ro', '/target']]);
  });

  it('stages and publishes an NVMe/TCP raw block volume through the node service (fake host)', async () => {
    const dir = tmpDir('space-csi-nvme-');
    let connected = false;
    const { run, calls } = fakeRunner((cmd, args) => {
      if (cmd === 'nvme' && args[0] === 'list-subsys') return connected ? { stdout: fixture('nvme-list-subsys.json') } : { code: 1 };
      if (cmd === 'nvme' && args[0] === 'list') return { stdout: fixture('nvme-list.json') };
      if (cmd === 'nvme' && args[0] === 'connect') connected = true;
      if (cmd === 'nvme' && args[0] === 'disconnect') connected = false;
      return {};
    });
    const svc = createNodeService({ nodeId: 'n', stateDir: path.join(dir, 'state'), gateway: '127.0.0.1:1', logger, run, nvme: { multipath: async () => true, sleep: async () => {} } });
    const invoke = (m: string, request: Req) => new Promise<Req>((resolve, reject) =>
      (svc.implementation[m] as grpc.handleUnaryCall<Req, Req>)({ request } as grpc.ServerUnaryCall<Req, Req>, (err, res) => (err ? reject(err) : resolve(res!))));
    try {
      const vctx = { protocol: 'nvme', capsuleId: 'cap-b', nvmeAddress: '10.96.14.20', nvmePort: '4420', nqn: NQN };
      const staging = path.join(dir, 'staging');
      const target = path.join(dir, 'pods', 'p', 'volumeDevices', 'dev');
      await invoke('NodeStageVolume', { volume_id: 'vol-b', staging_target_path: staging, volume_capability: BLOCK_RW, volume_context: vctx, publish_context: {} });
      assert.ok(calls.some((c) => c.join(' ') === `nvme connect -t tcp -a 10.96.14.20 -s 4420 -n ${NQN}`));
      await invoke('NodePublishVolume', { volume_id: 'vol-b', staging_target_path: staging, target_path: target, volume_capability: BLOCK_RW, readonly: false, volume_context: vctx, publish_context: {} });
      assert.deepEqual(calls.at(-1), ['mount', '--bind', '/dev/nvme2n1', target]);
      assert.ok(fs.statSync(target).isFile(), 'raw block target is a file');
      await invoke('NodeUnpublishVolume', { volume_id: 'vol-b', target_path: target });
      assert.ok(!fs.existsSync(target));
      await invoke('NodeUnstageVolume', { volume_id: 'vol-b', staging_target_path: staging });
      assert.deepEqual(calls.at(-1), ['nvme', 'disconnect', '-n', NQN]);
      await assert.rejects(invoke('NodeStageVolume', { volume_id: 'vol-c', staging_target_path: staging, volume_capability: BLOCK_RW, volume_context: { protocol: 'nfs', nfsAddress: 'x' }, publish_context: {} }),
        (e: grpc.ServiceError) => e.code === grpc.status.FAILED_PRECONDITION);
    } finally {
      await svc.close();
      rmrf(dir);
    }
  });
});
