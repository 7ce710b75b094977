/**
 * The CSI node mounter sidecar (csi-node/mounter-service.ts), all real: a gateway (`spacectl
 * serve`), the mounter (`spacectl csi-mounter`) and the node plugin (`spacectl csi --mode node
 * --mounter-socket`) each in their own process, a grpc-js CSI client, real FUSE mounts used by
 * shell tools.
 *
 * A container restart is simulated faithfully: the plugin runs as PID 1 of its own PID namespace
 * (`unshare --pid --fork`), and "the container dies" is SIGKILL to its whole process group, after
 * which the kernel kills every process in that namespace, detached or not, exactly as a container
 * runtime does. The first FUSE test shows that this kills in-process mount processes (the gap);
 * the next ones show that mount processes owned by the mounter survive it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { SpaceError } from '../capsule/errors.js';
import { GatewayClient } from '../gateway/client.js';
import { fuseAvailability } from '../gateway/fuse/native.js';
import { loadCsiClients } from '../csi-node/proto.js';
import { NodeState } from '../csi-node/node-state.js';
import { MounterClient } from '../csi-node/mounter-client.js';
import { mountProcessAlive } from '../csi-node/mounters/fuse.js';
import { mountAtPath, parseMountInfo } from '../csi-node/mounters/mountinfo.js';
import { REPO, SPACECTL, sh, spacectl, startServe } from './helpers/cli.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

type Req = Record<string, unknown>;
type NodeClient = grpc.Client & Record<string, (req: Req, cb: (err: grpc.ServiceError | null, res: Req) => void) => void>;

function call(client: NodeClient, method: string, req: Req): Promise<Req> {
  return new Promise((resolve, reject) => client[method]!.call(client, req, (err, res) => (err ? reject(err) : resolve(res))));
}

const MOUNT_RW = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const fuseReason = !fs.existsSync('/dev/fuse') ? '/dev/fuse does not exist' : fuseAvailability().ok ? '' : (fuseAvailability() as { reason: string }).reason;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mountInfo = () => parseMountInfo(fs.readFileSync('/proc/self/mountinfo', 'utf8'));

/** A process we started in its own process group; `kill()` takes the whole group. */
interface Proc {
  child: ChildProcess;
  stderr(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

function launch(argv: string[], ready: string): Promise<Proc> {
  // detached: its own process group, so the group (unshare + the plugin) can be killed at once.
  const child = spawn(argv[0]!, argv.slice(1), { cwd: REPO, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const proc: Proc = {
    child,
    stderr: () => err,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      try {
        process.kill(-child.pid!, signal);
      } catch {
        /* already gone */
      }
      await exited;
    },
  };
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d;
      if (err.includes(ready)) resolve(proc);
    });
    child.once('exit', (code, sig) => reject(new Error(`${argv.slice(0, 4).join(' ')} exited (${code ?? sig}) before ready: ${err}`)));
  });
}

/** Host pids of the mount processes serving `staging` (found by argv in /proc). */
function mountProcessPids(staging: string): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const t = argv.indexOf('--target');
    if (argv.some((a) => a.endsWith('mount-process.js')) && t >= 0 && argv[t + 1] === staging && !isZombie(Number(pid))) out.push(Number(pid));
  }
  return out;
}

function isZombie(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true; // gone counts as not running
  }
}

async function waitGone(pid: number, what: string): Promise<void> {
  for (let i = 0; i < 200 && !isZombie(pid); i++) await sleep(50);
  assert.ok(isZombie(pid), `${what} (pid ${pid}) is still running`);
}

function ppidOf(pid: number): number {
  return Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
}

describe('CSI node with the mounter sidecar (real processes, real FUSE)', function () {
  this.timeout(120_000);
  let dir: string;
  let serve: ChildProcess | undefined;
  let gwAddr: string;
  let gw: GatewayClient;
  let mounterSock: string;
  let mounterState: string;
  let pluginState: string;
  let pluginSock: string;
  let mounter: Proc | undefined;
  let plugin: Proc | undefined;
  let node: NodeClient | undefined;
  let client: MounterClient;
  const caps: string[] = [];

  const startMounter = async () => {
    mounter = await launch([process.execPath, SPACECTL, 'csi-mounter', '--socket', mounterSock, '--state-dir', mounterState], 'space csi-mounter: listening');
    return mounter;
  };

  /** The node plugin as PID 1 of a new PID namespace: a stand-in for its container. */
  const startPlugin = async (opts: { mounter: boolean; pidns?: boolean }) => {
    node?.close();
    const args = [SPACECTL, 'csi', '--mode', 'node', '--endpoint', `unix://${pluginSock}`, '--node-id', 'node-m', '--gateway', gwAddr, '--state-dir', pluginState,
      ...(opts.mounter ? ['--mounter-socket', mounterSock] : [])];
    const argv = opts.pidns === false ? [process.execPath, ...args] : ['unshare', '--pid', '--fork', process.execPath, ...args];
    plugin = await launch(argv, 'space csi: node on');
    node = new (loadCsiClients().Node)(`unix://${pluginSock}`, grpc.credentials.createInsecure()) as unknown as NodeClient;
    return node;
  };

  const killPlugin = async () => {
    node?.close();
    node = undefined;
    await plugin?.kill('SIGKILL');
    plugin = undefined;
  };

  /** Wait for the plugin's watch to have run repair() for the mounter now answering. */
  const repairedFor = async () => {
    const { instance } = await client.hello();
    const line = `"event":"csi.mounter.repaired"`;
    for (let i = 0; i < 300 && !plugin!.stderr().split('\n').some((l) => l.includes(line) && l.includes(instance)); i++) await sleep(100);
    assert.ok(plugin!.stderr().split('\n').some((l) => l.includes(line) && l.includes(instance)), `the plugin did not repair for mounter ${instance}: ${plugin!.stderr().slice(-2000)}`);
  };

  const ctx = (capsuleId: string) => ({ protocol: 'fuse', capsuleId });
  const stageReq = (cap: string, staging: string) => ({ volume_id: cap, staging_target_path: staging, volume_capability: MOUNT_RW, volume_context: ctx(cap) });
  const publishReq = (cap: string, staging: string, target: string, readonly = false) => ({ ...stageReq(cap, staging), target_path: target, readonly });
  const paths = (name: string) => ({ staging: path.join(dir, 'kubelet', 'plugins', name, 'globalmount'), target: path.join(dir, 'kubelet', 'pods', name, 'mount') });
  const readThrough = (file: string) => sh('cat', [file]);

  before(async function () {
    if (fuseReason) {
      console.log(`      skipping the CSI mounter tests: ${fuseReason}`);
      this.skip();
    }
    const unshare = await sh('unshare', ['--pid', '--fork', 'true']);
    if (unshare.code !== 0) {
      console.log(`      skipping the CSI mounter tests: unshare --pid does not work here: ${unshare.stderr.trim()}`);
      this.skip();
    }
    dir = tmpDir('space-csi-mounter-');
    mounterSock = path.join(dir, 'csi', 'mounter.sock');
    mounterState = path.join(dir, 'csi', 'mounter');
    pluginState = path.join(dir, 'csi', 'state');
    pluginSock = path.join(dir, 'csi', 'csi.sock');
    const s = await startServe(['--data-dir', path.join(dir, 'gw'), '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--no-operator'], {});
    serve = s.child;
    gwAddr = `127.0.0.1:${s.port}`;
    gw = new GatewayClient(gwAddr);
    for (let i = 0; i < 6; i++) caps.push((await gw.create({ name: `pvc-m${i}`, size: 1 << 20 })).id);
    await startMounter();
    client = new MounterClient(mounterSock);
  });

  after(async function () {
    this.timeout(60_000);
    node?.close();
    await plugin?.kill('SIGKILL').catch(() => {});
    await mounter?.kill('SIGKILL').catch(() => {});
    gw?.close();
    if (!dir) return;
    // Whatever a failed test left: bind mounts and stagings (deepest first), then every mount
    // process serving a path under our dir, then the gateway.
    for (const m of mountInfo().reverse()) if (m.mountPoint.startsWith(dir)) await sh('umount', ['-l', m.mountPoint]);
    for (const pid of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      const cmd = await fs.promises.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmd.includes('mount-process.js') && cmd.includes(dir)) try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
    for (const m of mountInfo().reverse()) if (m.mountPoint.startsWith(dir)) await sh('umount', ['-l', m.mountPoint]);
    serve?.kill('SIGTERM');
    if (serve && serve.exitCode === null) await new Promise((r) => serve!.once('exit', r));
    rmrf(dir);
  });

  it('mounter API: start waits for the mount and is idempotent, refuses a second volume on a path, lists, stops; survives a client that hangs up', async () => {
    const { staging } = paths('api');
    fs.mkdirSync(staging, { recursive: true });
    const spec = { volumeId: 'vol-api', capsuleId: caps[0]!, stagingPath: staging, gateway: gwAddr, rw: true, logFile: '/nonexistent/ignored.log' };
    const log = { info() {}, warn() {}, error() {}, debug() {}, child() { return this; } };
    const rec = await client.start(spec, log);
    assert.equal(mountAtPath(mountInfo(), staging)?.fstype, 'fuse.space', 'mounted when start() returns');
    assert.ok(mountProcessAlive(rec), 'the record names a running mount process');
    assert.equal(ppidOf(rec.pid), mounter!.child.pid, 'the mounter is its parent');
    assert.ok(fs.existsSync(path.join(mounterState, 'logs', 'vol-api.log')), 'its log goes to the mounter state dir, not the client-given path');
    assert.deepEqual(await client.start(spec, log), rec, 'a repeated start returns the live record');
    await assert.rejects(client.start({ ...spec, volumeId: 'vol-other', capsuleId: caps[1]! }, log), (e: SpaceError) => e.code === 'ALREADY_EXISTS' && /vol-api/.test(e.message));
    await assert.rejects(client.start({ ...spec, stagingPath: 'relative/path' }, log), (e: SpaceError) => e.code === 'INVALID_ARGUMENT');
    const missing = paths('api-missing').staging;
    fs.mkdirSync(missing, { recursive: true });
    await assert.rejects(client.start({ ...spec, volumeId: 'vol-missing', capsuleId: '00000000-0000-4000-8000-000000000000', stagingPath: missing }, log), /exited/);

    const w = await sh('sh', ['-c', 'echo via-mounter > "$1/a.txt"', 'sh', staging]);
    assert.equal(w.code, 0, w.stderr);
    assert.equal((await gw.read(caps[0]!, 'a.txt', 0, 100)).toString(), 'via-mounter\n');

    // A client that sends start and hangs up at once: the start still completes and is
    // recorded, and the next start finds it instead of mounting a second time.
    const hung = paths('api-hangup').staging;
    fs.mkdirSync(hung, { recursive: true });
    await new Promise<void>((resolve, reject) => {
      const s = net.createConnection(mounterSock, () => {
        // Hang up as soon as the request is out, long before the mount is up.
        s.end(JSON.stringify({ id: 7, op: 'start', spec: { ...spec, volumeId: 'vol-hangup', capsuleId: caps[1]!, stagingPath: hung } }) + '\n', () => {
          s.destroy();
          resolve();
        });
      });
      s.on('error', reject);
    });
    const rec2 = await client.start({ ...spec, volumeId: 'vol-hangup', capsuleId: caps[1]!, stagingPath: hung }, log);
    assert.match(mounter!.stderr(), new RegExp(`"event":"mounter.start.exists"[^\\n]*"staging":"${hung.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}"`), 'the second start found the first one\'s mount');
    assert.deepEqual(mountProcessPids(hung), [rec2.pid], 'exactly one mount process for the path');

    // A second mounter on the same socket would orphan the first one's processes: refused.
    const second = await spacectl(['csi-mounter', '--socket', mounterSock, '--state-dir', path.join(dir, 'other-mounter')], {});
    assert.notEqual(second.code, 0);
    assert.match(second.stderr, /another mounter is already serving/);

    const listed = await client.list();
    assert.deepEqual(listed.map((e) => [e.stagingPath, e.volumeId, e.record.pid, e.alive, e.mounted]).sort(), [
      [staging, 'vol-api', rec.pid, true, true],
      [hung, 'vol-hangup', rec2.pid, true, true],
    ].sort());

    await client.stop(rec, staging, log);
    await waitGone(rec.pid, 'the stopped mount process');
    assert.equal(mountAtPath(mountInfo(), staging), undefined, 'unmounted');
    await client.stop(rec, staging, log); // idempotent
    await client.stop(undefined, hung, log);
    await waitGone(rec2.pid, 'the second mount process');
    assert.deepEqual(await client.list(), []);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(mounterState, 'mounter-state.json'), 'utf8')).mounts, {}, 'the state file is empty again');
  });

  it('without a mounter, killing the plugin\'s container kills its FUSE mounts (the gap); a restarted plugin repairs them', async () => {
    const { staging, target } = paths('local');
    let c = await startPlugin({ mounter: false });
    await call(c, 'NodeStageVolume', stageReq(caps[2]!, staging));
    await call(c, 'NodePublishVolume', publishReq(caps[2]!, staging, target));
    assert.equal((await sh('sh', ['-c', 'echo local > "$1/l.txt"', 'sh', target])).code, 0);
    const [pid] = mountProcessPids(staging);
    assert.ok(pid, 'a mount process serves the staging path');
    await killPlugin();
    await waitGone(pid, 'the plugin\'s own mount process after the container kill');
    const broken = await readThrough(path.join(target, 'l.txt'));
    assert.notEqual(broken.code, 0, 'reads fail once the container is gone');
    assert.match(broken.stderr, /not connected|connection abort/i);

    // Back in local mode (no PID namespace: its recorded pids must mean what they say).
    c = await startPlugin({ mounter: false, pidns: false });
    assert.equal((await readThrough(path.join(target, 'l.txt'))).stdout, 'local\n', 'repair() at start brought it back');
    await call(c, 'NodeUnpublishVolume', { volume_id: caps[2]!, target_path: target });
    await call(c, 'NodeUnstageVolume', { volume_id: caps[2]!, staging_target_path: staging });
    assert.deepEqual(mountProcessPids(staging), []);
    assert.equal(mountAtPath(mountInfo(), staging), undefined);
    await killPlugin();
  });

  it('with --mounter-socket, the mount survives SIGKILL of the plugin\'s container; the restarted plugin adopts it and unpublishes/unstages', async () => {
    const { staging, target } = paths('remote');
    const roTarget = paths('remote-ro').target;
    let c = await startPlugin({ mounter: true });
    await call(c, 'NodeStageVolume', stageReq(caps[3]!, staging));
    await call(c, 'NodeStageVolume', stageReq(caps[3]!, staging)); // idempotent through the mounter
    await call(c, 'NodePublishVolume', publishReq(caps[3]!, staging, target));
    await call(c, 'NodePublishVolume', publishReq(caps[3]!, staging, roTarget, true));
    assert.equal((await sh('sh', ['-c', 'echo before-kill > "$1/r.txt"', 'sh', target])).code, 0);

    const [entry] = await client.list();
    assert.ok(entry && entry.stagingPath === staging && entry.alive && entry.mounted, JSON.stringify(entry));
    const pid = entry.record.pid;
    assert.deepEqual(mountProcessPids(staging), [pid], 'exactly one mount process, the mounter\'s');
    assert.equal(ppidOf(pid), mounter!.child.pid, 'started by the mounter, not the plugin');
    assert.deepEqual((await NodeState.open(pluginState)).get(caps[3]!)!.mountProcess, entry.record, 'the plugin recorded the mounter\'s record');

    await killPlugin();
    assert.ok(mountProcessAlive(entry.record), 'the mount process outlived the plugin\'s container');
    assert.equal((await readThrough(path.join(target, 'r.txt'))).stdout, 'before-kill\n', 'readable while the plugin is down');
    assert.equal((await readThrough(path.join(roTarget, 'r.txt'))).stdout, 'before-kill\n', 'the ro target too');
    assert.equal((await sh('sh', ['-c', 'echo while-down >> "$1/r.txt"', 'sh', target])).code, 0, 'writable while the plugin is down');

    c = await startPlugin({ mounter: true });
    const after = await client.list();
    assert.deepEqual(after.map((e) => [e.record.pid, e.alive]), [[pid, true]], 'repair at start left the healthy mount alone');
    assert.equal((await readThrough(path.join(target, 'r.txt'))).stdout, 'before-kill\nwhile-down\n');
    const stats = await call(c, 'NodeGetVolumeStats', { volume_id: caps[3]!, volume_path: target, staging_target_path: staging });
    assert.deepEqual(stats.volume_condition, { abnormal: false, message: 'healthy' }, 'health is judged through the mounter');

    await call(c, 'NodeUnpublishVolume', { volume_id: caps[3]!, target_path: roTarget });
    await call(c, 'NodeUnpublishVolume', { volume_id: caps[3]!, target_path: target });
    await call(c, 'NodeUnstageVolume', { volume_id: caps[3]!, staging_target_path: staging });
    await waitGone(pid, 'the mount process after unstage');
    assert.deepEqual(await client.list(), [], 'the mounter forgot it');
    assert.equal(mountAtPath(mountInfo(), staging), undefined, 'nothing mounted at the staging path');
    assert.ok(!fs.existsSync(target) && !fs.existsSync(staging), 'target and staging dirs removed');
    assert.equal((await NodeState.open(pluginState)).list().length, 0);
    assert.equal((await gw.read(caps[3]!, 'r.txt', 0, 100)).toString(), 'before-kill\nwhile-down\n');
    await killPlugin();
  });

  it('a mounter restarted by SIGKILL adopts the live mount processes; stage fails UNAVAILABLE while it is down; unstage works after', async () => {
    const { staging, target } = paths('adopt');
    const c = await startPlugin({ mounter: true });
    await call(c, 'NodeStageVolume', stageReq(caps[4]!, staging));
    await call(c, 'NodePublishVolume', publishReq(caps[4]!, staging, target));
    assert.equal((await sh('sh', ['-c', 'echo adopt-me > "$1/a.txt"', 'sh', target])).code, 0);
    const [entry] = await client.list();
    const rec = entry!.record;

    await mounter!.kill('SIGKILL'); // its group only: mount processes run in their own sessions
    mounter = undefined;
    assert.ok(mountProcessAlive(rec), 'the mount process outlived the mounter');
    assert.equal((await readThrough(path.join(target, 'a.txt'))).stdout, 'adopt-me\n');
    const other = paths('adopt-other');
    await assert.rejects(call(c, 'NodeStageVolume', stageReq(caps[5]!, other.staging)), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE && /mounter/.test(e.details));

    const m = await startMounter();
    assert.match(m.stderr(), /adopted 1 live, 0 dead/);
    const listed = await client.list();
    assert.deepEqual(listed.map((e) => [e.stagingPath, e.record, e.alive, e.mounted]), [[staging, rec, true, true]]);
    await repairedFor(); // the plugin noticed the new mounter; its repair must leave the live mount alone
    await call(c, 'NodeStageVolume', stageReq(caps[4]!, staging)); // idempotent: judged healthy via the new mounter
    assert.deepEqual((await client.list()).map((e) => e.record.pid), [rec.pid], 'nothing was restarted');
    assert.equal((await readThrough(path.join(target, 'a.txt'))).stdout, 'adopt-me\n');

    await call(c, 'NodeUnpublishVolume', { volume_id: caps[4]!, target_path: target });
    await call(c, 'NodeUnstageVolume', { volume_id: caps[4]!, staging_target_path: staging });
    await waitGone(rec.pid, 'the adopted mount process after unstage');
    assert.deepEqual(await client.list(), []);
    assert.equal(mountAtPath(mountInfo(), staging), undefined);
    await killPlugin();
  });

  it('when the mounter\'s container dies with its mount processes, the running plugin notices the new mounter and repairs the volume', async () => {
    const { staging, target } = paths('revive');
    const c = await startPlugin({ mounter: true });
    await call(c, 'NodeStageVolume', stageReq(caps[5]!, staging));
    await call(c, 'NodePublishVolume', publishReq(caps[5]!, staging, target));
    assert.equal((await sh('sh', ['-c', 'echo revive > "$1/v.txt"', 'sh', target])).code, 0);
    const [entry] = await client.list();
    const pid = entry!.record.pid;

    // The container runtime kills everything in the container: the mounter and its children.
    await mounter!.kill('SIGKILL');
    mounter = undefined;
    process.kill(pid, 'SIGKILL');
    await waitGone(pid, 'the killed mount process');
    const broken = await readThrough(path.join(target, 'v.txt'));
    assert.match(broken.stderr, /not connected|connection abort/i, 'the pod sees a dead mount');

    const m = await startMounter();
    assert.match(m.stderr(), /adopted 0 live, 1 dead/);
    // The plugin's watch sees a new mounter instance and runs repair().
    await repairedFor();
    const back = await readThrough(path.join(target, 'v.txt'));
    assert.equal(back.stdout, 'revive\n', `the pod's target works again: ${back.stderr} ${plugin!.stderr().slice(-2000)}`);
    const [revived] = await client.list();
    assert.ok(revived && revived.alive && revived.record.pid !== pid, JSON.stringify(revived));
    assert.match(plugin!.stderr(), /"event":"csi\.mounter\.new-instance"/);
    assert.equal((await sh('sh', ['-c', 'echo again >> "$1/v.txt"', 'sh', target])).code, 0);

    await call(c, 'NodeUnpublishVolume', { volume_id: caps[5]!, target_path: target });
    await call(c, 'NodeUnstageVolume', { volume_id: caps[5]!, staging_target_path: staging });
    await waitGone(revived!.record.pid, 'the revived mount process after unstage');
    assert.deepEqual(await client.list(), []);
    assert.equal((await gw.read(caps[5]!, 'v.txt', 0, 100)).toString(), 'revive\nagain\n');
    await killPlugin();
  });
});
