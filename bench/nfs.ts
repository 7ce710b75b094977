/**
 * Our NFSv3 server against nfs-ganesha, with the same clients, in one run on this machine.
 *
 * Setup: everything runs in one private network namespace that has only `lo` (this script
 * creates it, then re-executes itself inside with `ip netns exec`), so ganesha's rpcbind and
 * every listener stay off the host's network, and both servers are reached the same way.
 *   ganesha   Debian's nfs-ganesha + FSAL_VFS exporting a plain directory, started with
 *             hack/ganesha.sh (rpcbind + ganesha, ports 2049 / 20048), default tuning
 *   ours      NfsServer in this process on 12049 / 12048, over a Store in the same scratch
 *             directory (same filesystem as ganesha's export), configured as `spacectl serve`
 *             configures it (fdatasync per segment; segment cache an eighth of the memory
 *             limit, capsule/cache-size.ts; V8 heap tuning, gateway/heap-tuning.ts),
 *             exporting an UNENCRYPTED, UNCOMPRESSED capsule (/plain); and, as extra rows, an
 *             encrypted (AES-256-GCM) capsule (/enc)
 *
 * Measurements (each BENCH_REPS times, default 4; the servers take turns, and which one goes
 * first alternates per repetition, so drifting noise hits both; a ratio is ours / ganesha within
 * one repetition, the figure is the median ratio with min..max). An even count gives each order
 * as many repetitions: here, cold reads depend on the order (whichever server reads second can
 * find the memory it needs costlier to get: see the read ratios by order printed after the
 * table), and with an odd count the majority order would decide the median.
 *   write     `nfs-cp <source> nfs://127.0.0.1/<export>/big?version=3&nfsport=..&mountport=..`
 *             (libnfs: 1 MiB UNSTABLE WRITEs one at a time, then COMMIT on close; the time is
 *             the whole nfs-cp process, COMMIT included). The source is BENCH_SIZE_MB MiB of
 *             unique data in /dev/shm, new per repetition (so our store cannot deduplicate
 *             against an earlier copy); the previous copy is removed over NFS first (and our
 *             store's reclaim of its segments run to the end, as ganesha's REMOVE frees the
 *             file's blocks before it replies; our freed files are kept as spares for the new
 *             segments, capsule/segment-files.ts), then sync.
 *   read      `nfs-cp nfs://.../big /dev/shm/...`: cold = after sync + drop_caches, with our
 *             store closed and reopened first, whichever server reads (ganesha caches no file
 *             data of its own, and ours then holds none either: both servers start from the
 *             same memory); one per server. Then warm = the file in the server's memory (our
 *             segment cache, ganesha's page cache): after an untimed read that refills the
 *             servers the later cold reads evicted, BENCH_NFS_WARM_READS (default 3) rounds
 *             of one read per server, the order flipped every round; the server's warm figure
 *             in a repetition is the median of its rounds. Every copy is checked (size, and
 *             sampled 1 MiB blocks against the source).
 *   metadata  bench/nfs/meta-client.ts (own process, the project's RPC client): MOUNT, then
 *             BENCH_NFS_FILES (default 10000) x (CREATE UNCHECKED + GETATTR + REMOVE) with
 *             BENCH_NFS_QD (default 16) files in flight on one connection; files/s (each file
 *             is 3 RPCs).
 *   CPU       server CPU time per GiB moved (ours: this process, all threads; ganesha: its
 *             process from /proc), a hint of where the two differ; per repetition also the
 *             client's (nfs-cp under GNU time, Debian package `time`, where installed) and the
 *             segments our store loaded from disk.
 * Targets (from the issue): read >= 1.0 x ganesha, write >= 0.8 x ganesha.
 *
 * Needs root, `ip netns`, nfs-ganesha + nfs-ganesha-vfs + rpcbind and libnfs-utils (nfs-cp);
 * without them it prints why and how to install them, and exits 0 with a "skipped" result.
 *
 * Before them, BENCH_NFS_WARMUP (default 1) repetitions of the write and reads are run and printed
 * but not counted: the first gigabytes a run moves pay for memory the VM's host has not backed
 * yet, and whichever server goes first would pay for it.
 * Env: BENCH_SIZE_MB (default 1024), BENCH_REPS (4), BENCH_NFS_WARM_READS (3), BENCH_NFS_FILES (10000), BENCH_NFS_QD (16),
 * BENCH_NFS_ENC=0 (skip the encrypted rows), BENCH_NFS_FSYNC=0 (store with fsync:false),
 * BENCH_NFS_PROFILE=1 (after the measured runs: one more write, cold read, warm read and metadata
 * run of ours under the main thread's CPU profiler, not counted in the figures; .cpuprofile files
 * in .bench-out/ and a summary), BENCH_NFS_JOB_TIMEOUT_S (600).
 * Run: npx tsc -p . && node dist/bench/nfs.js
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { serverCacheBytes } from '../capsule/cache-size.js';
import { sharedCodecPool, type CodecPool } from '../capsule/codec-pool.js';
import { validatePolicy } from '../capsule/policy.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { tuneHeapForServing } from '../gateway/heap-tuning.js';
import {
  DIST_BENCH, MiB, OUT_DIR, REPO_ROOT, UniqueBlocks, envInt, exitWhenDone, median, meta, now, rmrf, round, runCommand, scratchDir, sizeMiB, sync,
  syncAndDrop, table, writeResult,
} from './common.js';
import type { FsInfo, Job, Reply } from './nfs/meta-client.js';
import { Profiler, summarize, type ProfileSummary } from './profile.js';

const NAME = 'nfs';
const HOST = '127.0.0.1';
const GANESHA_SH = path.join(REPO_ROOT, 'hack', 'ganesha.sh');
const G_PORT = 2049;
const G_MOUNT_PORT = 20048;
const O_PORT = 12049;
const O_MOUNT_PORT = 12048;
const G_EXPORT = '/export';
const PLAIN = 'plain';
const ENC = 'enc';
const FILE = 'big';
const READ_TARGET = 1.0;
const WRITE_TARGET = 0.8;
const INNER_ENV = 'BENCH_NFS_INNER_NS';
const SCRATCH_ENV = 'BENCH_NFS_SCRATCH';
const SHM_ENV = 'BENCH_NFS_SHM';
const TIME_TOOL = '/usr/bin/time';
const INSTALL_HINT = 'apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils';

type ServerName = 'ours' | 'ganesha' | 'ours-enc';
/** A job without its id (Omit over each member of the union). */
type DistOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type JobArgs = DistOmit<Job, 'id'>;

// ---------------------------------------------------------------- outside the namespace

/** Why the benchmark cannot run here, or null. */
function unavailable(): string | null {
  if (process.platform !== 'linux') return 'needs Linux (network namespaces)';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, drop_caches)';
  const missing = ['ip', 'unshare', 'setsid', 'timeout', 'ganesha.nfsd', 'rpcbind', 'rpcinfo', 'nfs-cp', 'nfs-ls']
    .filter((c) => spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status !== 0);
  if (missing.length) return `missing ${missing.join(', ')}; install with: ${INSTALL_HINT}`;
  const fsal = spawnSync('sh', ['-c', 'ls /usr/lib/*/ganesha/libfsalvfs.so* /usr/lib*/ganesha/libfsalvfs.so* 2>/dev/null'], { encoding: 'utf8' });
  if (!fsal.stdout.trim()) return `ganesha's VFS FSAL (libfsalvfs.so) is missing; install with: apt-get install nfs-ganesha-vfs`;
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (ns.status !== 0) return `'ip netns' does not work here: ${(ns.stderr || ns.error?.message || '').trim()}`;
  return null;
}

function must(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
}

async function outer(): Promise<void> {
  const why = unavailable();
  if (why) {
    console.log(`nfs: SKIPPED: ${why}`);
    writeResult(NAME, { meta: meta(NAME), skipped: why, summary: { skipped: why } });
    return;
  }
  const ns = `space-bench-nfs-${process.pid}`;
  const scratch = scratchDir('nfs');
  const shm = path.join('/dev/shm', `space-bench-nfs-${process.pid}`);
  const ganeshaEnv = { ...process.env, GANESHA_NETNS: ns, GANESHA_RUN: path.join(scratch, 'ganesha-run') };
  let code: number | null = 1;
  try {
    must('ip', ['netns', 'add', ns]);
    must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // a second loopback address: see hack/ganesha.sh (glibc's AI_ADDRCONFIG and ganesha's Bind_addr)
    must('ip', ['-n', ns, 'addr', 'add', '127.0.0.2/8', 'dev', 'lo']);
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, process.argv[1]!], {
      stdio: 'inherit',
      env: { ...process.env, [INNER_ENV]: ns, [SCRATCH_ENV]: scratch, [SHM_ENV]: shm },
    });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on('SIGTERM', forward);
    process.on('SIGINT', forward);
    code = await new Promise<number | null>((resolve) => {
      child.on('error', (e) => {
        console.error(`nfs: ${e.message}`);
        resolve(1);
      });
      child.on('close', (c) => resolve(c));
    });
    process.off('SIGTERM', forward);
    process.off('SIGINT', forward);
  } finally {
    // Whatever happened inside: ganesha and rpcbind stopped, namespace and scratch gone.
    spawnSync(GANESHA_SH, ['stop'], { env: ganeshaEnv, stdio: ['ignore', 'ignore', 'inherit'] });
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    rmrf(scratch);
    rmrf(shm);
  }
  if (code !== 0) {
    console.error(`nfs: the run inside namespace ${ns} failed (exit ${code})`);
    process.exitCode = 1;
  }
}

// ---------------------------------------------------------------- inside the namespace

/** Child processes to kill if we are told to stop. */
const children = new Set<ChildProcess>();

function onSignal(sig: NodeJS.Signals): void {
  console.error(`nfs: ${sig}; stopping`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
}

function runTool(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutS?: number } = {}): Promise<{ secs: number; out: string }> {
  return runCommand(cmd, args, {
    env: opts.env,
    timeoutS: opts.timeoutS ?? envInt('BENCH_NFS_JOB_TIMEOUT_S', 600),
    onChild: (c, running) => (running ? children.add(c) : children.delete(c)),
  });
}

/** The meta client process (bench/nfs/meta-client.js): jobs over IPC, one at a time. */
class MetaClient {
  private nextId = 1;
  private readonly waiting = new Map<number, (r: Reply) => void>();
  private constructor(private readonly proc: ChildProcess) {
    proc.on('message', (r: Reply) => {
      const w = this.waiting.get(r.id);
      this.waiting.delete(r.id);
      w?.(r);
    });
    proc.on('exit', (code) => {
      for (const w of this.waiting.values()) w({ id: 0, ok: false, error: `meta client exited (${code})` });
      this.waiting.clear();
    });
  }

  static start(): MetaClient {
    const proc = fork(path.join(DIST_BENCH, 'nfs', 'meta-client.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(proc);
    return new MetaClient(proc);
  }

  async run<T extends Reply & { ok: true }>(job: JobArgs): Promise<T> {
    const id = this.nextId++;
    const r = await new Promise<Reply>((resolve) => {
      this.waiting.set(id, resolve);
      this.proc.send({ ...job, id });
    });
    if (!r.ok) throw new Error(`meta client ${job.op}: ${r.error}`);
    return r as T;
  }

  close(): void {
    this.proc.disconnect();
    children.delete(this.proc);
  }
}

/** Our server over a store in `dir`; closed and reopened for cold reads (empty segment cache). */
class Ours {
  store: Store | undefined;
  server: NfsServer | undefined;
  constructor(readonly dir: string, readonly fsync: boolean, readonly withEnc: boolean) {}

  async open(): Promise<void> {
    const store = Store.open(this.dir, { fsync: this.fsync, cacheBytes: serverCacheBytes() });
    this.store = store;
    const ensure = async (name: string, policy: unknown) => {
      try {
        await store.get(name);
      } catch {
        await store.create({ name, policy: validatePolicy(policy) });
      }
    };
    await ensure(PLAIN, { encryption: false, compression: 'none' });
    if (this.withEnc) await ensure(ENC, { encryption: true, compression: 'none' });
    this.server = await NfsServer.listen({ store, host: HOST, port: O_PORT, mountPort: O_MOUNT_PORT });
    await this.server.addExport({ ref: PLAIN, path: `/${PLAIN}` });
    if (this.withEnc) await this.server.addExport({ ref: ENC, path: `/${ENC}` });
  }

  async close(): Promise<void> {
    await this.server?.close();
    await this.store?.close();
    this.server = undefined;
    this.store = undefined;
  }

  async reopen(): Promise<void> {
    await this.close();
    await this.open();
  }
}

interface Target {
  name: ServerName;
  port: number;
  mountPort: number;
  exportPath: string;
}

const url = (t: Target, file: string) => `nfs://${HOST}${t.exportPath}/${file}?version=3&nfsport=${t.port}&mountport=${t.mountPort}`;
const endpoint = (t: Target) => ({ host: HOST, port: t.port, mountPort: t.mountPort, exportPath: t.exportPath });

/** CPU seconds (user + system) of a process, from /proc/<pid>/stat. */
function procCpuSecs(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime (fields 14, 15) in clock ticks (USER_HZ = 100)
}

function selfCpuSecs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Write the source file: `mib` MiB of unique blocks (seeded, so a block can be regenerated). */
function writeSource(file: string, mib: number, seed: number): UniqueBlocks {
  const blocks = new UniqueBlocks(seed);
  const fd = fs.openSync(file, 'w');
  try {
    const buf = Buffer.allocUnsafe(MiB);
    for (let i = 0; i < mib; i++) fs.writeSync(fd, blocks.block(i, buf));
  } finally {
    fs.closeSync(fd);
  }
  return blocks;
}

/** A read's copy: its size and a sample of its blocks (first, last, and a few between). */
function checkCopy(file: string, mib: number, blocks: UniqueBlocks, what: string): void {
  const size = fs.statSync(file).size;
  if (size !== mib * MiB) throw new Error(`${what}: read ${size} bytes, expected ${mib * MiB}`);
  const fd = fs.openSync(file, 'r');
  try {
    const got = Buffer.allocUnsafe(MiB);
    const idxs = new Set([0, mib - 1, ...Array.from({ length: 6 }, () => Math.floor(Math.random() * mib))]);
    for (const i of idxs) {
      fs.readSync(fd, got, 0, MiB, i * MiB);
      if (!got.equals(blocks.block(i))) throw new Error(`${what}: block ${i} of the copy differs from the source`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

interface Series {
  mibps: number[];
  cpuPerGiB: number[];
}
const series = (): Series => ({ mibps: [], cpuPerGiB: [] });

/** One timed nfs-cp: MiB/s, server CPU s/GiB, segments our store loaded, client CPU s/GiB. */
interface Sample {
  rate: number;
  cpu: number;
  loads: number;
  clientCpu?: number;
}

/** Several samples of one server as one: the median of each figure, and every segment load. */
function medianSample(xs: Sample[]): Sample {
  const clients = xs.map((x) => x.clientCpu).filter((c): c is number => c !== undefined);
  return {
    rate: median(xs.map((x) => x.rate)),
    cpu: median(xs.map((x) => x.cpu)),
    loads: xs.reduce((n, x) => n + x.loads, 0),
    clientCpu: clients.length === xs.length ? median(clients) : undefined,
  };
}

async function inner(): Promise<void> {
  // This process hosts our server: the V8 heap tuning of a serving process (spacectl serve).
  const heapGrowing = tuneHeapForServing();
  const ns = process.env[INNER_ENV]!;
  const scratch = process.env[SCRATCH_ENV]!;
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const mib = sizeMiB();
  const reps = Math.max(1, envInt('BENCH_REPS', 4));
  const warmups = Math.max(0, envInt('BENCH_NFS_WARMUP', 1));
  const files = Math.max(1, envInt('BENCH_NFS_FILES', 10_000));
  const qd = Math.max(1, envInt('BENCH_NFS_QD', 16));
  const withEnc = envInt('BENCH_NFS_ENC', 1) !== 0;
  const fsync = envInt('BENCH_NFS_FSYNC', 1) !== 0;
  const profile = envInt('BENCH_NFS_PROFILE', 0) !== 0;
  const warmReads = Math.max(1, envInt('BENCH_NFS_WARM_READS', 3));

  const exportDir = path.join(scratch, 'ganesha-export');
  const storeDir = path.join(scratch, 'store');
  fs.mkdirSync(exportDir, { recursive: true });
  // Source and read copies in RAM (tmpfs) when there is room, so the client side costs no disk I/O.
  let dataDir = process.env[SHM_ENV]!;
  let dataNote = 'source and read copies on /dev/shm (tmpfs)';
  try {
    const st = fs.statfsSync('/dev/shm');
    if (st.bavail * st.bsize < (2 * mib + 256) * MiB) throw new Error('too small');
    fs.mkdirSync(dataDir, { recursive: true });
  } catch {
    dataDir = path.join(scratch, 'data');
    fs.mkdirSync(dataDir, { recursive: true });
    dataNote = `/dev/shm unusable or too small: source and read copies on disk (${dataDir})`;
  }

  const gEnv = { ...process.env, GANESHA_NETNS: ns, GANESHA_RUN: path.join(scratch, 'ganesha-run'), GANESHA_PORT: String(G_PORT),
    GANESHA_MOUNT_PORT: String(G_MOUNT_PORT), GANESHA_PSEUDO: G_EXPORT, GANESHA_PROTOCOLS: '3', GANESHA_MAX_S: String(envInt('BENCH_TIMEOUT_S', 1200) + 120) };
  const started = await runTool(GANESHA_SH, ['start', exportDir], { env: gEnv, timeoutS: 60 });
  process.stdout.write(started.out);
  const ganeshaPid = Number(fs.readFileSync(path.join(gEnv.GANESHA_RUN, 'ganesha.pid'), 'utf8').trim());
  const ganeshaVersion = spawnSync('sh', ['-c', "dpkg-query -W -f '${Version}' nfs-ganesha 2>/dev/null"], { encoding: 'utf8' }).stdout.trim() || '?';
  const libnfsVersion = spawnSync('sh', ['-c', "dpkg-query -W -f '${Version}' libnfs-utils 2>/dev/null"], { encoding: 'utf8' }).stdout.trim() || '?';

  const ours = new Ours(storeDir, fsync, withEnc);
  await ours.open();
  const client = MetaClient.start();
  const targets: Record<ServerName, Target> = {
    ours: { name: 'ours', port: O_PORT, mountPort: O_MOUNT_PORT, exportPath: `/${PLAIN}` },
    'ours-enc': { name: 'ours-enc', port: O_PORT, mountPort: O_MOUNT_PORT, exportPath: `/${ENC}` },
    ganesha: { name: 'ganesha', port: G_PORT, mountPort: G_MOUNT_PORT, exportPath: G_EXPORT },
  };
  const fsinfo: Partial<Record<ServerName, FsInfo>> = {};
  for (const t of ['ours', 'ganesha'] as const) fsinfo[t] = (await client.run<{ id: number; ok: true; fsinfo: FsInfo }>({ op: 'fsinfo', ...endpoint(targets[t]) })).fsinfo;

  console.log(`nfs: ${mib} MiB file, ${reps} repetitions, metadata ${files} files at ${qd} in flight; netns ${ns}; ${dataNote}`);
  console.log(`  ours: NfsServer ${HOST}:${O_PORT} (mount ${O_MOUNT_PORT}), capsule "${PLAIN}" UNENCRYPTED, compression none, 1 MiB segments, store fsync ${fsync ? 'on (default: fdatasync per segment)' : 'OFF'}, segment cache ${serverCacheBytes() / (1 << 20)} MiB, V8 heap growing ${heapGrowing === null ? 'default' : `${heapGrowing}%`}`
    + `${withEnc ? `; extra rows: capsule "${ENC}" encrypted (AES-256-GCM)` : ''}; rtmax/wtmax ${fsinfo.ours!.rtmax}/${fsinfo.ours!.wtmax}`);
  console.log(`  ganesha ${ganeshaVersion}: FSAL_VFS, ${HOST}:${G_PORT} (mount ${G_MOUNT_PORT}), plain directory on the same filesystem; rtmax/wtmax ${fsinfo.ganesha!.rtmax}/${fsinfo.ganesha!.wtmax}`);
  console.log(`  client: nfs-cp (libnfs-utils ${libnfsVersion}) for the big file, bench/nfs/meta-client.js for metadata`);

  const src = path.join(dataDir, 'source');
  const copy = path.join(dataDir, 'copy');
  const names: ServerName[] = withEnc ? ['ours', 'ganesha', 'ours-enc'] : ['ours', 'ganesha'];
  const m = {
    write: Object.fromEntries(names.map((n) => [n, series()])) as Record<ServerName, Series>,
    readCold: Object.fromEntries(names.map((n) => [n, series()])) as Record<ServerName, Series>,
    readWarm: Object.fromEntries(names.map((n) => [n, series()])) as Record<ServerName, Series>,
    meta: { ours: [] as number[], ganesha: [] as number[] },
  };
  const ratios = { write: [] as number[], readCold: [] as number[], readWarm: [] as number[], meta: [] as number[], encWrite: [] as number[], encReadCold: [] as number[], encReadWarm: [] as number[] };
  // The read ratios again, split by which server went first in the repetition.
  type Order = 'oursFirst' | 'ganeshaFirst';
  const byOrder: Record<Order, { readCold: number[]; readWarm: number[] }> = {
    oursFirst: { readCold: [], readWarm: [] },
    ganeshaFirst: { readCold: [], readWarm: [] },
  };
  let coldNote: string | undefined;

  const serverCpu = (n: ServerName) => (n === 'ganesha' ? procCpuSecs(ganeshaPid) : selfCpuSecs());
  const gib = mib / 1024;

  /** One nfs-cp; returns MiB/s and the server's CPU seconds per GiB. */
  // Segments our store reads from disk (decodes in the codec pool), to tell a warm read that
  // was served from the segment cache from one that was not.
  let segmentLoads = 0;
  const pool = sharedCodecPool();
  const readAndDecode = pool.readAndDecode.bind(pool);
  pool.readAndDecode = (...args: Parameters<CodecPool['readAndDecode']>) => {
    segmentLoads++;
    return readAndDecode(...args);
  };
  // The client's CPU too (GNU time, where installed): a slow repetition of either server has
  // shown up as client kernel time (its copy into /dev/shm landing on memory the VM's host had
  // taken back), not as server time.
  const timeTool = fs.existsSync(TIME_TOOL) ? TIME_TOOL : undefined;
  const timeOut = path.join(process.env[SHM_ENV] ?? scratch, 'nfs-cp.time');
  const copyTimed = async (n: ServerName, args: string[]): Promise<Sample> => {
    const c0 = serverCpu(n);
    const l0 = segmentLoads;
    // Started by the client process, not forked from this one (see bench/nfs/meta-client.ts).
    const [cmd, cmdArgs] = timeTool ? [timeTool, ['-f', '%U %S', '-o', timeOut, 'nfs-cp', ...args]] : ['nfs-cp', args];
    const { secs } = await client.run<{ id: number; ok: true; secs: number }>({ op: 'spawn', cmd, args: cmdArgs, timeoutS: envInt('BENCH_NFS_JOB_TIMEOUT_S', 600) });
    let clientCpu: number | undefined;
    if (timeTool) {
      const [user, sys] = fs.readFileSync(timeOut, 'utf8').trim().split(/\s+/).slice(-2).map(Number);
      if (Number.isFinite(user) && Number.isFinite(sys)) clientCpu = (user! + sys!) / gib;
    }
    return { rate: mib / secs, cpu: (serverCpu(n) - c0) / gib, loads: segmentLoads - l0, clientCpu };
  };

  const write = async (n: ServerName): Promise<Sample> => {
    const t = targets[n];
    await client.run({ op: 'remove', name: FILE, ...endpoint(t) });
    // Ganesha frees the old copy's blocks inside REMOVE; our store deletes its segment files
    // just after (capsule/reclaim.ts). Finish that first: the write is timed, not the delete.
    if (n !== 'ganesha') await ours.store!.reclaimSettled();
    await sync();
    return copyTimed(n, [src, url(t, FILE)]);
  };

  /**
   * cold: our store reopened (empty segment cache), then sync + drop_caches. Before ganesha's
   * cold read too: otherwise ganesha's read after ours ran beside the gigabyte our cache still
   * held from our warm read, and the two cold reads did not start from the same machine state.
   */
  const read = async (n: ServerName, cold: boolean, blocks: UniqueBlocks): Promise<Sample> => {
    const t = targets[n];
    rmrf(copy);
    if (cold) {
      await ours.reopen();
      const d = await syncAndDrop();
      if (!d.ok) coldNote = `drop_caches not permitted (${d.reason}): "cold" reads were not cold`;
    }
    const res = await copyTimed(n, [url(t, FILE), copy]);
    checkCopy(copy, mib, blocks, `${n} ${cold ? 'cold' : 'warm'} read`);
    rmrf(copy);
    return res;
  };

  const record = (s: Series, x: { rate: number; cpu: number }): number => {
    s.mibps.push(x.rate);
    s.cpuPerGiB.push(x.cpu);
    return x.rate;
  };

  // warm-up (untimed): the meta client's JIT, both servers' first connections
  for (const n of ['ours', 'ganesha'] as const) await client.run({ op: 'meta', files: Math.min(200, files), concurrency: qd, prefix: 'warmup-', ...endpoint(targets[n]) });

  // Negative r: warm-up repetitions, measured the same way but not counted. The first big
  // transfers of a run pay for memory the VM's host has not backed yet (the client's /dev/shm
  // copy, both servers' buffers); whichever server went first paid for it.
  for (let r = -warmups; r < reps; r++) {
    const counted = r >= 0;
    const order: ServerName[] = r % 2 === 0 ? ['ours', 'ganesha'] : ['ganesha', 'ours'];
    if (withEnc) order.push('ours-enc');
    const t0 = now();
    const blocks = writeSource(src, mib, 1000 + r + warmups);
    await sync();
    const w: Partial<Record<ServerName, number>> = {};
    const rc: Partial<Record<ServerName, number>> = {};
    const rw: Partial<Record<ServerName, number>> = {};
    const keep = (s: Series, x: { rate: number; cpu: number }) => (counted ? record(s, x) : x.rate);
    const detail: string[] = [];
    for (const n of order) w[n] = keep(m.write[n], await write(n));
    const colds: Partial<Record<ServerName, Sample>> = {};
    for (const n of order) colds[n] = await read(n, true, blocks);
    // Each cold read evicted the servers before it (our store reopened, the page cache
    // dropped): read them once more, untimed, so that every warm read below is warm.
    for (const n of order.slice(0, -1)) await read(n, false, blocks);
    // Warm reads in turns, the order flipped every round (A B, B A, A B, ...): a warm read is
    // about one second and swings by a third from one read to the next on this VM, so one
    // sample per server would leave the repetition's ratio to chance.
    const warms = Object.fromEntries(order.map((n) => [n, [] as Sample[]])) as Record<ServerName, Sample[]>;
    for (let k = 0; k < warmReads; k++) for (const n of k % 2 === 0 ? order : [...order].reverse()) warms[n].push(await read(n, false, blocks));
    for (const n of order) {
      const cold = colds[n]!;
      const warm = medianSample(warms[n]);
      rc[n] = keep(m.readCold[n], cold);
      rw[n] = keep(m.readWarm[n], warm);
      const loads = n === 'ganesha' ? '' : `, segments loaded ${cold.loads} / ${warm.loads}`;
      const client = cold.clientCpu === undefined ? '' : ` (client ${round(cold.clientCpu)} / ${round(warm.clientCpu ?? NaN)})`;
      detail.push(`${n} read CPU cold / warm ${round(cold.cpu)} / ${round(warm.cpu)} s/GiB${client}${loads}, warm MiB/s ${warms[n].map((x) => Math.round(x.rate)).join(' ')}`);
    }
    const f = (x: number | undefined) => (x === undefined ? '-' : String(Math.round(x)));
    const reads = `write ours ${f(w.ours)} / ganesha ${f(w.ganesha)}${withEnc ? ` / enc ${f(w['ours-enc'])}` : ''} MiB/s`
      + ` | cold read ${f(rc.ours)} / ${f(rc.ganesha)}${withEnc ? ` / ${f(rc['ours-enc'])}` : ''} | warm read ${f(rw.ours)} / ${f(rw.ganesha)}${withEnc ? ` / ${f(rw['ours-enc'])}` : ''}`;
    if (!counted) {
      console.log(`  warm-up ${r + warmups + 1} (not counted; ${order.join(' -> ')}, ${round((now() - t0) / 1000)} s): ${reads}`);
      console.log(`    ${detail.join('; ')}`);
      continue;
    }
    const mt: Partial<Record<'ours' | 'ganesha', number>> = {};
    for (const n of order) {
      if (n === 'ours-enc') continue;
      const res = await client.run<{ id: number; ok: true; secs: number }>({ op: 'meta', files, concurrency: qd, prefix: `r${r}-`, ...endpoint(targets[n]) });
      mt[n] = files / res.secs;
      m.meta[n].push(mt[n]!);
    }
    ratios.write.push(w.ours! / w.ganesha!);
    const cold = rc.ours! / rc.ganesha!;
    const warm = rw.ours! / rw.ganesha!;
    ratios.readCold.push(cold);
    ratios.readWarm.push(warm);
    const o = byOrder[order[0] === 'ours' ? 'oursFirst' : 'ganeshaFirst'];
    o.readCold.push(cold);
    o.readWarm.push(warm);
    ratios.meta.push(mt.ours! / mt.ganesha!);
    if (withEnc) {
      ratios.encWrite.push(w['ours-enc']! / w.ganesha!);
      ratios.encReadCold.push(rc['ours-enc']! / rc.ganesha!);
      ratios.encReadWarm.push(rw['ours-enc']! / rw.ganesha!);
    }
    console.log(`  rep ${r + 1} (${order.join(' -> ')}, ${round((now() - t0) / 1000)} s): ${reads} | metadata ${f(mt.ours)} / ${f(mt.ganesha)} files/s`);
    console.log(`    ${detail.join('; ')}`);
  }

  // Optional: one more write and read of ours under the CPU profiler (not part of the figures above).
  let profiles: Record<string, ProfileSummary> | undefined;
  if (profile) {
    profiles = {};
    const blocks = writeSource(src, mib, 999);
    fs.mkdirSync(OUT_DIR, { recursive: true });
    const phase = async (label: string, fn: () => Promise<unknown>, moves = true) => {
      const p = new Profiler();
      await p.start();
      const c0 = selfCpuSecs();
      const t0 = now();
      try {
        await fn();
      } finally {
        const prof = await p.stop(path.join(OUT_DIR, `nfs-${label}.cpuprofile`));
        const s = summarize(prof);
        profiles![label] = s;
        const wall = (now() - t0) / 1000;
        console.log(`\n  profile ${label}: ${round(wall, 2)} s wall${moves ? ` (${round(mib / wall)} MiB/s)` : ''}, main thread busy ${round(s.busyMs / 1000, 2)} s,`
          + ` process CPU ${round(selfCpuSecs() - c0, 2)} s (all threads) -> .bench-out/nfs-${label}.cpuprofile`);
        for (const c of s.categories.slice(0, 8)) console.log(`    ${String(c.pct).padStart(5)} %  ${c.category}`);
        for (const x of s.top.slice(0, 10)) console.log(`    ${String(x.pct).padStart(5)} %  ${x.fn}`);
      }
    };
    // not recorded in the series: the profiler itself costs time
    await phase('write', () => write('ours'));
    await ours.reopen();
    await syncAndDrop();
    await phase('read-cold', () => read('ours', false, blocks)); // cold: reopened and dropped just above
    await phase('read-warm', () => read('ours', false, blocks));
    await phase('metadata', () => client.run({ op: 'meta', files, concurrency: qd, prefix: 'prof-', ...endpoint(targets.ours) }), false);
  }

  client.close();
  await ours.close();
  rmrf(dataDir);

  // ---------------------------------------------------------------- report
  const med = (xs: number[]) => round(median(xs), 1);
  const rng = (xs: number[], d = 0) => `${round(Math.min(...xs), d)}..${round(Math.max(...xs), d)}`;
  const ratio = (xs: number[]) => ({ median: round(median(xs), 3), min: round(Math.min(...xs), 3), max: round(Math.max(...xs), 3) });
  const verdict = (xs: number[], target: number) => (median(xs) >= target ? 'MET' : 'MISSED');
  const summary = {
    sizeMiB: mib,
    reps,
    warmups,
    storeFsync: fsync,
    oursWriteMiBps: med(m.write.ours.mibps), ganeshaWriteMiBps: med(m.write.ganesha.mibps),
    writeRatio: ratio(ratios.write).median, writeRatioMin: ratio(ratios.write).min, writeRatioMax: ratio(ratios.write).max,
    writeMeetsTarget: median(ratios.write) >= WRITE_TARGET,
    oursReadColdMiBps: med(m.readCold.ours.mibps), ganeshaReadColdMiBps: med(m.readCold.ganesha.mibps),
    readColdRatio: ratio(ratios.readCold).median, readColdRatioMin: ratio(ratios.readCold).min, readColdRatioMax: ratio(ratios.readCold).max,
    readColdMeetsTarget: median(ratios.readCold) >= READ_TARGET,
    oursReadWarmMiBps: med(m.readWarm.ours.mibps), ganeshaReadWarmMiBps: med(m.readWarm.ganesha.mibps),
    readWarmRatio: ratio(ratios.readWarm).median, readWarmRatioMin: ratio(ratios.readWarm).min, readWarmRatioMax: ratio(ratios.readWarm).max,
    readWarmMeetsTarget: median(ratios.readWarm) >= READ_TARGET,
    metaFiles: files, metaQd: qd,
    oursMetaFilesPerSec: med(m.meta.ours), ganeshaMetaFilesPerSec: med(m.meta.ganesha),
    metaRatio: ratio(ratios.meta).median, metaRatioMin: ratio(ratios.meta).min, metaRatioMax: ratio(ratios.meta).max,
    oursCpuSecsPerGiB: { write: round(median(m.write.ours.cpuPerGiB), 2), readCold: round(median(m.readCold.ours.cpuPerGiB), 2), readWarm: round(median(m.readWarm.ours.cpuPerGiB), 2) },
    ganeshaCpuSecsPerGiB: { write: round(median(m.write.ganesha.cpuPerGiB), 2), readCold: round(median(m.readCold.ganesha.cpuPerGiB), 2), readWarm: round(median(m.readWarm.ganesha.cpuPerGiB), 2) },
    ...(withEnc ? {
      encWriteMiBps: med(m.write['ours-enc'].mibps), encReadColdMiBps: med(m.readCold['ours-enc'].mibps), encReadWarmMiBps: med(m.readWarm['ours-enc'].mibps),
      encWriteRatio: ratio(ratios.encWrite).median, encReadColdRatio: ratio(ratios.encReadCold).median, encReadWarmRatio: ratio(ratios.encReadWarm).median,
    } : {}),
    readRatiosByOrder: Object.fromEntries((Object.keys(byOrder) as Order[]).map((k) => [k, {
      reps: byOrder[k].readCold.length,
      readCold: byOrder[k].readCold.length ? round(median(byOrder[k].readCold), 3) : null,
      readWarm: byOrder[k].readWarm.length ? round(median(byOrder[k].readWarm), 3) : null,
    }])),
    ...(coldNote ? { coldNote } : {}),
  };

  const row = (label: string, key: 'write' | 'readCold' | 'readWarm', rs: number[], target: number | null, n: ServerName = 'ours') => [
    label,
    `${med(m[key][n].mibps)} (${rng(m[key][n].mibps)})`,
    `${med(m[key].ganesha.mibps)} (${rng(m[key].ganesha.mibps)})`,
    `${round(median(rs), 3)} (${rng(rs, 3)})`,
    `${round(median(m[key][n].cpuPerGiB), 2)} / ${round(median(m[key].ganesha.cpuPerGiB), 2)}`,
    target === null ? 'info' : `${verdict(rs, target)} (>= ${target})`,
  ];
  const rows: (string | number)[][] = [
    row(`write ${mib} MiB (nfs-cp, incl. COMMIT)`, 'write', ratios.write, WRITE_TARGET),
    row(`read ${mib} MiB, cold (drop_caches)`, 'readCold', ratios.readCold, READ_TARGET),
    row(`read ${mib} MiB, warm (page cache)`, 'readWarm', ratios.readWarm, READ_TARGET),
  ];
  if (withEnc) {
    rows.push(row('  encrypted capsule: write', 'write', ratios.encWrite, null, 'ours-enc'));
    rows.push(row('  encrypted capsule: read, cold', 'readCold', ratios.encReadCold, null, 'ours-enc'));
    rows.push(row('  encrypted capsule: read, warm', 'readWarm', ratios.encReadWarm, null, 'ours-enc'));
  }
  rows.push([`metadata: ${files} x CREATE+GETATTR+REMOVE, ${qd} in flight (files/s)`,
    `${med(m.meta.ours)} (${rng(m.meta.ours)})`, `${med(m.meta.ganesha)} (${rng(m.meta.ganesha)})`,
    `${round(median(ratios.meta), 3)} (${rng(ratios.meta, 3)})`, '', 'info']);
  table(`NFSv3: ours (unencrypted capsule) vs nfs-ganesha ${ganeshaVersion} (VFS), same client, ${reps} reps, median (min..max); ratio = ours / ganesha per rep`,
    ['measurement', 'ours MiB/s', 'ganesha MiB/s', 'ratio', 'server CPU s/GiB ours / ganesha', 'target'], rows);
  const orderLine = (k: Order, label: string) => {
    const x = byOrder[k];
    return x.readCold.length === 0 ? `${label}: no repetitions`
      : `${label} (${x.readCold.length} reps): cold ${round(median(x.readCold), 3)} (${rng(x.readCold, 3)}), warm ${round(median(x.readWarm), 3)} (${rng(x.readWarm, 3)})`;
  };
  console.log(`read ratios by order: ${orderLine('oursFirst', 'ours first')}; ${orderLine('ganeshaFirst', 'ganesha first')}`);
  if (byOrder.oursFirst.readCold.length !== byOrder.ganeshaFirst.readCold.length) console.log('  (an odd BENCH_REPS: one order has more repetitions, and the medians lean its way)');
  console.log(`metadata RPC rate: ours ${Math.round(3 * median(m.meta.ours))} / ganesha ${Math.round(3 * median(m.meta.ganesha))} ops/s (3 RPCs per file)`);
  if (coldNote) console.log(coldNote);
  console.log(`json: ${JSON.stringify(summary)}`);

  writeResult(NAME, {
    meta: meta(NAME),
    setup: { netns: ns, ganeshaVersion, libnfsVersion, fsinfo, dataNote, storeFsync: fsync, encryptedRows: withEnc },
    mibps: m,
    ratios,
    summary,
    ...(profiles ? { profiles } : {}),
  });
}

const main = process.env[INNER_ENV] ? inner : outer;
main().then(() => exitWhenDone(NAME), (e) => {
  console.error(e);
  process.exit(1);
});
