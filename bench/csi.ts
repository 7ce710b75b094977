/**
 * The CSI plugin as shipped: one `spacectl csi --mode all` process (standalone: it owns the store
 * in a scratch --data-dir and serves each FUSE volume from its own mount process), driven over
 * its unix socket by a grpc-js client, as the sidecars and the kubelet would.
 *
 * (a) Provision-to-usable latency, BENCH_CSI_N volumes (default 100) one after another:
 *     CreateVolume (protocol fuse, 16 MiB, SINGLE_NODE_WRITER mount) -> NodeStageVolume ->
 *     NodePublishVolume -> "usable". Usable means: fs.promises.readdir(target) succeeds, then
 *     fs.promises.writeFile(target/x, 'a') and fs.promises.readFile(target/x) returns 'a' (the
 *     volume starts empty, so the first byte readable is one we wrote through the mount; this
 *     covers the kernel mount, the bind mount and a round trip to the gateway). Reported:
 *     p50/p99 (nearest rank)/max of each step and of the whole chain; target: chain p99 < 1 s.
 *     Then every volume is unpublished, unstaged and deleted (timed, info only).
 * (b) Controller concurrency: 100 concurrent CreateVolume calls with distinct names, then 100
 *     concurrent calls over the SAME 10 names (10 calls each). The controller answers ABORTED to
 *     a second operation on a name already in flight (CSI's rule); we retry those as the
 *     external-provisioner does, after a short backoff (BENCH_CSI_BACKOFF_MS, default 20, doubled
 *     per attempt, up to 10 attempts), and count the retries. Targets: no errors other than those
 *     retried ABORTEDs; distinct names -> 100 distinct volume ids; same names -> exactly 10 ids,
 *     every call for one name answered with the same id.
 *
 * All I/O on the mounts is asynchronous (fs.promises) and the mounts are served by other
 * processes, so this event loop never waits on itself. On exit (or SIGINT/SIGTERM) the plugin is
 * stopped, leftover mounts under the scratch dir are lazily unmounted and leftover mount
 * processes naming it are killed.
 *
 * Env: BENCH_CSI_N (100), BENCH_CSI_CONCURRENT (100, calls per part of (b)), BENCH_CSI_BACKOFF_MS (20).
 * Run: npx tsc -p . && node dist/bench/csi.js   (needs /dev/fuse and root for mounts)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { REPO_ROOT, envInt, exitWhenDone, meta, now, rmrf, round, scratchDir, table, writeResult, sleep, nearestRank } from './common.js';
import { loadCsiClients } from '../csi-node/proto.js';

const CHAIN_P99_TARGET_MS = 1000;
const MiB = 1 << 20;
const MOUNT_RW = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

type Req = Record<string, unknown>;
type Raw = grpc.Client & Record<string, (req: Req, cb: (err: grpc.ServiceError | null, res: any) => void) => void>;

function call(client: Raw, method: string, req: Req): Promise<any> {
  return new Promise((resolve, reject) => client[method]!.call(client, req, (err, res) => (err ? reject(err) : resolve(res))));
}

/** Nearest-rank percentile (p in 0..100). */
const pct = (xs: number[], p: number): number => nearestRank(xs, p / 100);


let scratch = '';
let plugin: ChildProcess | undefined;

function startPlugin(sock: string, dataDir: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'dist', 'cli', 'spacectl.js'), 'csi', '--mode', 'all', '--endpoint', `unix://${sock}`, '--node-id', 'bench', '--data-dir', dataDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-8192);
      if (err.includes('space csi: all on')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`csi plugin exited (${code}) before ready: ${err}`)));
  });
}

/** Stop the plugin, then remove whatever is still mounted or running under the scratch dir. */
async function cleanup(): Promise<void> {
  if (plugin && plugin.exitCode === null && plugin.signalCode === null) {
    const exited = new Promise((r) => plugin!.once('exit', r));
    plugin.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
    clearTimeout(timer); // a pending timer would keep this process alive after the work is done
    if (plugin.exitCode === null && plugin.signalCode === null) plugin.kill('SIGKILL');
  }
  // Mount processes the plugin started may still hold its stderr pipe open: let go of our end.
  plugin?.stderr?.destroy();
  plugin = undefined;
  if (!scratch) return;
  const run = (cmd: string, args: string[]) => new Promise<void>((r) => spawn(cmd, args, { stdio: 'ignore' }).on('close', () => r()).on('error', () => r()));
  const mounts = (await fs.promises.readFile('/proc/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(scratch));
  for (const m of mounts.sort((a, b) => b.length - a.length)) await run('umount', ['-l', m]);
  for (const pid of await fs.promises.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fs.promises.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('mount-process.js') && cmd.includes(scratch)) try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
  }
  rmrf(scratch);
  scratch = '';
}

async function main(): Promise<void> {
  if (!fs.existsSync('/dev/fuse')) throw new Error('/dev/fuse does not exist: this benchmark needs FUSE');
  const n = envInt('BENCH_CSI_N', 100);
  const concurrent = envInt('BENCH_CSI_CONCURRENT', 100);
  const backoffMs = envInt('BENCH_CSI_BACKOFF_MS', 20);
  scratch = scratchDir('csi');
  const sock = path.join(scratch, 'csi.sock');
  plugin = await startPlugin(sock, path.join(scratch, 'data'));
  const clients = loadCsiClients();
  const controller = new clients.Controller(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as Raw;
  const node = new clients.Node(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as Raw;
  console.log(`csi: ${n} volumes sequentially (fuse, 16 MiB), then ${concurrent} + ${concurrent} concurrent CreateVolume; scratch ${scratch}`);

  // ---- (a) sequential provision -> usable
  const steps = { create: [] as number[], stage: [] as number[], publish: [] as number[], usable: [] as number[], chain: [] as number[] };
  const vols: { id: string; staging: string; target: string }[] = [];
  for (let i = 0; i < n; i++) {
    const staging = path.join(scratch, 'staging', `v${i}`, 'globalmount');
    const target = path.join(scratch, 'pods', `p${i}`, 'mount');
    const t0 = now();
    const v = (await call(controller, 'CreateVolume', { name: `pvc-seq-${i}`, capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [MOUNT_RW], parameters: { protocol: 'fuse' } })).volume;
    const t1 = now();
    const common = { volume_id: v.volume_id, volume_capability: MOUNT_RW, volume_context: v.volume_context, staging_target_path: staging };
    await call(node, 'NodeStageVolume', common);
    vols.push({ id: v.volume_id, staging, target });
    const t2 = now();
    await call(node, 'NodePublishVolume', { ...common, target_path: target, readonly: false });
    const t3 = now();
    await fs.promises.readdir(target);
    await fs.promises.writeFile(path.join(target, 'x'), 'a');
    const back = await fs.promises.readFile(path.join(target, 'x'), 'utf8');
    const t4 = now();
    if (back !== 'a') throw new Error(`volume ${v.volume_id}: read back ${JSON.stringify(back)}, wrote "a"`);
    steps.create.push(t1 - t0);
    steps.stage.push(t2 - t1);
    steps.publish.push(t3 - t2);
    steps.usable.push(t4 - t3);
    steps.chain.push(t4 - t0);
  }
  const teardown = { unpublish: [] as number[], unstage: [] as number[], delete: [] as number[] };
  for (const v of vols) {
    const t0 = now();
    await call(node, 'NodeUnpublishVolume', { volume_id: v.id, target_path: v.target });
    const t1 = now();
    await call(node, 'NodeUnstageVolume', { volume_id: v.id, staging_target_path: v.staging });
    const t2 = now();
    await call(controller, 'DeleteVolume', { volume_id: v.id });
    const t3 = now();
    teardown.unpublish.push(t1 - t0);
    teardown.unstage.push(t2 - t1);
    teardown.delete.push(t3 - t2);
  }
  const leftAfterA = (await call(controller, 'ListVolumes', {})).entries.length as number;

  const row = (name: string, xs: number[], target = 'info') => [name, round(pct(xs, 50)), round(pct(xs, 99)), round(Math.max(...xs)), target];
  const chainP99 = pct(steps.chain, 99);
  const chainMet = chainP99 < CHAIN_P99_TARGET_MS;
  table(`(a) ${n} FUSE volumes, one at a time: latency (ms)`, ['step', 'p50', 'p99', 'max', 'target'], [
    row('CreateVolume', steps.create),
    row('NodeStageVolume', steps.stage),
    row('NodePublishVolume', steps.publish),
    row('usable (readdir + write + read)', steps.usable),
    row('whole chain', steps.chain, `${chainMet ? 'MET' : 'MISSED'} (p99 < ${CHAIN_P99_TARGET_MS})`),
    row('teardown: NodeUnpublishVolume', teardown.unpublish),
    row('teardown: NodeUnstageVolume', teardown.unstage),
    row('teardown: DeleteVolume', teardown.delete),
  ]);

  // ---- (b) concurrent CreateVolume
  const createRetrying = async (name: string, counters: { retries: number; errors: string[] }): Promise<string | null> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return (await call(controller, 'CreateVolume', { name, capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [MOUNT_RW], parameters: { protocol: 'fuse' } })).volume.volume_id as string;
      } catch (e) {
        const err = e as grpc.ServiceError;
        if (err.code === grpc.status.ABORTED && attempt < 10) {
          counters.retries++;
          await sleep(backoffMs * 2 ** attempt);
          continue;
        }
        counters.errors.push(`${name}: ${grpc.status[err.code] ?? err.code} ${err.details ?? err.message}`);
        return null;
      }
    }
  };
  const distinct = { retries: 0, errors: [] as string[] };
  let t0 = now();
  const distinctIds = await Promise.all(Array.from({ length: concurrent }, (_, i) => createRetrying(`pvc-par-${i}`, distinct)));
  const distinctMs = now() - t0;
  const names = 10;
  const same = { retries: 0, errors: [] as string[] };
  t0 = now();
  const sameNames = Array.from({ length: concurrent }, (_, i) => `pvc-same-${i % names}`);
  const sameIds = await Promise.all(sameNames.map((nm) => createRetrying(nm, same)));
  const sameMs = now() - t0;
  const distinctUnique = new Set(distinctIds.filter(Boolean)).size;
  const sameUnique = new Set(sameIds.filter(Boolean)).size;
  // Every call for one name must have been answered with the same id (idempotent CreateVolume).
  const perName = new Map<string, Set<string>>();
  sameNames.forEach((nm, i) => sameIds[i] && (perName.get(nm) ?? perName.set(nm, new Set()).get(nm)!).add(sameIds[i]!));
  const sameConsistent = [...perName.values()].every((s) => s.size === 1) && perName.size === Math.min(names, concurrent);
  const distinctMet = distinct.errors.length === 0 && distinctUnique === concurrent;
  const sameMet = same.errors.length === 0 && sameUnique === Math.min(names, concurrent) && sameConsistent;
  table(`(b) ${concurrent} concurrent CreateVolume calls (ABORTED retried with ${backoffMs} ms doubling backoff)`, ['names', 'wall ms', 'ABORTED retries', 'errors', 'volume ids', 'target'], [
    [`${concurrent} distinct`, round(distinctMs), distinct.retries, distinct.errors.length, distinctUnique, `${distinctMet ? 'MET' : 'MISSED'} (0 errors, ${concurrent} ids)`],
    [`10 names x ${concurrent / names}`, round(sameMs), same.retries, same.errors.length, sameUnique, `${sameMet ? 'MET' : 'MISSED'} (0 errors, 10 ids, 1 per name)`],
  ]);
  for (const e of [...distinct.errors, ...same.errors].slice(0, 10)) console.log(`  error: ${e}`);
  for (const id of new Set([...distinctIds, ...sameIds])) if (id) await call(controller, 'DeleteVolume', { volume_id: id });
  const leftAtEnd = (await call(controller, 'ListVolumes', {})).entries.length as number;
  controller.close();
  node.close();

  const summary = {
    n,
    chainP50Ms: round(pct(steps.chain, 50)), chainP99Ms: round(chainP99), chainMaxMs: round(Math.max(...steps.chain)),
    createP99Ms: round(pct(steps.create, 99)), stageP99Ms: round(pct(steps.stage, 99)), publishP99Ms: round(pct(steps.publish, 99)), usableP99Ms: round(pct(steps.usable, 99)),
    chainMeetsTarget: chainMet,
    concurrent,
    distinctWallMs: round(distinctMs), distinctRetries: distinct.retries, distinctErrors: distinct.errors.length, distinctIds: distinctUnique,
    sameWallMs: round(sameMs), sameRetries: same.retries, sameErrors: same.errors.length, sameIds: sameUnique, sameConsistent,
    concurrencyMeetsTarget: distinctMet && sameMet,
    volumesLeftAfterTeardown: leftAfterA, volumesLeftAtEnd: leftAtEnd,
  };
  await cleanup();
  writeResult('csi', { meta: meta('csi'), summary, steps, teardown, errors: [...distinct.errors, ...same.errors] });
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`csi: ${sig}, cleaning up`);
    void cleanup().finally(() => process.exit(1));
  });
}

main().then(
  () => exitWhenDone('csi'),
  async (e) => {
    console.error(e);
    await cleanup().catch(() => {});
    process.exit(1);
  },
);
