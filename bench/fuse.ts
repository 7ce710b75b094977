/**
 * Sequential FUSE throughput: a capsule mounted rw through the gateway's FUSE view versus
 *   (i)  a plain directory on the same disk, and
 *   (ii) a minimal pass-through FUSE filesystem (bench/passthrough-fs.ts: same binding, same
 *        mount options, its own process).
 * The capsule mount runs in its own process too (bench/capsule-mount-child.ts), twice: with the
 * store's default fsync (fdatasync per segment) and with fsync:false.
 *
 * All I/O is done by dd in child processes:
 *   write: dd if=SRC of=T/file bs=1M conv=fsync   (SRC: a pre-made random file, in page cache;
 *                                                  zeros would be holes in the store and free;
 *                                                  new content each repetition: no dedup)
 *   read:  dd if=T/file of=/dev/null bs=1M        after sync + drop_caches (cold), then again
 *                                                  without dropping (warm; informative)
 * The targets take turns within each repetition (order rotates) and capsule/plain and
 * capsule/passthrough ratios are taken within a repetition; the median over repetitions is
 * reported. The FUSE servers' CPU time per phase (from SIGUSR2) is reported as well.
 *
 * Env: BENCH_SIZE_MB (default 1024), BENCH_REPS (default 2), BENCH_FUSE_NOFSYNC=0 to skip the
 * fsync:false capsule mount. Needs /dev/fuse and root for drop_caches (otherwise reads are warm
 * and the result says so). Run: npx tsc -p . && node dist/bench/fuse.js
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { DIST_BENCH, MiB, UniqueBlocks, envInt, median, meta, rmrf, round, scratchDir, sizeMiB, sync, dropCaches, table, writeResult, exitWhenDone, raceTimeout } from './common.js';

const TARGET = 0.8;
const FILE = 'file';

interface ServerStats {
  cpu: { user: number; system: number };
  ops: Record<string, number> | null;
}

/** A FUSE server in a child process: waits for "ready", answers SIGUSR2 with a JSON line. */
class Server {
  private lines: string[] = [];
  private waiters: ((line: string) => void)[] = [];
  private exited: Promise<number | null>;
  private stderr = '';

  private constructor(readonly name: string, readonly mnt: string, private readonly child: ChildProcess) {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
    child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      if (this.stderr.length > 64 << 10) this.stderr = this.stderr.slice(-32 << 10);
    });
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  static async start(name: string, script: string, args: string[], mnt: string): Promise<Server> {
    const child = spawn(process.execPath, [path.join(DIST_BENCH, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = new Server(name, mnt, child);
    const ready = await raceTimeout(Promise.race([s.nextLine(), s.exited.then((code) => `exited with ${code}`)]), 30_000, 'timed out');
    if (ready !== 'ready') {
      child.kill('SIGKILL');
      throw new Error(`${name} server did not start (${ready}): ${s.stderr.trim()}`);
    }
    return s;
  }

  private nextLine(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((r) => this.waiters.push(r));
  }

  async stats(): Promise<ServerStats> {
    this.child.kill('SIGUSR2');
    const line = await raceTimeout(this.nextLine(), 10_000, '{}');
    return JSON.parse(line) as ServerStats;
  }

  /** SIGTERM, wait for a clean exit; lazily unmount as the last resort. */
  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    const code = await raceTimeout(this.exited, 60_000, 'timeout' as const);
    if (code === 'timeout') {
      console.error(`${this.name}: did not exit after SIGTERM; killing`);
      this.child.kill('SIGKILL');
      await this.exited;
    } else if (code !== 0) console.error(`${this.name}: exited with ${code}: ${this.stderr.trim()}`);
    if (mountedAt(this.mnt)) {
      console.error(`${this.name}: ${this.mnt} still mounted; fusermount -uz`);
      await run('fusermount', ['-uz', this.mnt]);
    }
  }
}


function mountInfoLine(target: string): string | undefined {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return text.split('\n').find((l) => l.split(' ')[4] === target);
}

function mountedAt(target: string): boolean {
  return mountInfoLine(target) !== undefined;
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d));
    c.stderr.on('data', (d: Buffer) => (stderr += d));
    c.on('error', reject);
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

interface DdResult {
  bytes: number;
  secs: number;
  mibps: number;
}

/** dd with its transfer summary parsed ("N bytes ... copied, S s, ..."). */
async function ddTimed(args: string[]): Promise<DdResult> {
  const r = await run('dd', [...args, 'bs=1M']);
  if (r.code !== 0) throw new Error(`dd ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  const m = /(\d+) bytes .* copied, ([\d.e+-]+) s/.exec(r.stderr);
  if (!m) throw new Error(`cannot parse dd output: ${r.stderr}`);
  const bytes = Number(m[1]);
  const secs = Number(m[2]);
  return { bytes, secs, mibps: bytes / MiB / secs };
}

interface TargetDef {
  name: string;
  dir: string;
  server?: Server;
}

interface PhaseResult {
  mibps: number;
  secs: number;
  serverCpuSecs?: number;
  serverOps?: Record<string, number> | null;
}

async function phase(t: TargetDef, fn: () => Promise<DdResult>, expectBytes: number): Promise<PhaseResult> {
  const before = t.server ? await t.server.stats() : undefined;
  const r = await fn();
  if (r.bytes !== expectBytes) throw new Error(`${t.name}: dd moved ${r.bytes} bytes, expected ${expectBytes}`);
  const out: PhaseResult = { mibps: r.mibps, secs: r.secs };
  if (t.server && before?.cpu) {
    const after = await t.server.stats();
    if (!after.cpu) return out; // the server did not answer in time: no CPU figure for this phase
    out.serverCpuSecs = (after.cpu.user + after.cpu.system - before.cpu.user - before.cpu.system) / 1e6;
    if (after.ops && before.ops) {
      out.serverOps = Object.fromEntries(Object.entries(after.ops).map(([k, v]) => [k, k.startsWith('max') ? v : v - (before.ops![k] ?? 0)]));
    }
  }
  return out;
}

/**
 * The random source file: unique MiB blocks (no zero holes, no dedup within the file), and new
 * content for every repetition: the capsule keeps an unlinked file's segments until GC, so
 * rewriting the same bytes would be deduplicated (only hashed, never encrypted or written).
 */
function makeSource(file: string, count: number, seed: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    const blocks = new UniqueBlocks(seed, 16);
    const buf = Buffer.allocUnsafe(MiB);
    for (let i = 0; i < count; i++) fs.writeSync(fd, blocks.block(i, buf));
  } finally {
    fs.closeSync(fd);
  }
}

async function main(): Promise<void> {
  const count = sizeMiB();
  const reps = Math.max(1, envInt('BENCH_REPS', 2));
  const withNoFsync = envInt('BENCH_FUSE_NOFSYNC', 1) !== 0;
  const bytes = count * MiB;
  if (!fs.existsSync('/dev/fuse')) throw new Error('/dev/fuse is missing: the FUSE benchmark cannot run here');

  const base = scratchDir('fuse');
  const dirs = {
    src: path.join(base, 'src.bin'),
    plain: path.join(base, 'plain'),
    ptBacking: path.join(base, 'pt-backing'),
    ptMnt: path.join(base, 'pt-mnt'),
    capData: path.join(base, 'cap-data'),
    capMnt: path.join(base, 'cap-mnt'),
    capNfData: path.join(base, 'cap-nofsync-data'),
    capNfMnt: path.join(base, 'cap-nofsync-mnt'),
  };
  for (const d of [dirs.plain, dirs.ptBacking, dirs.ptMnt, dirs.capMnt, dirs.capNfMnt]) fs.mkdirSync(d, { recursive: true });
  console.log(`fuse: ${count} MiB, ${reps} repetitions, scratch ${base}`);

  const servers: Server[] = [];
  // Stop the FUSE servers (unmounting) and remove the scratch data, once: at the end, or when
  // this benchmark is interrupted (run-all's timeout, ^C).
  let cleaned: Promise<void> | undefined;
  const cleanup = () => (cleaned ??= (async () => {
    for (const s of servers.reverse()) await s.stop().catch((e: Error) => console.error(e.message));
    rmrf(base);
  })());
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`fuse: ${sig}: unmounting and cleaning up`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const results: Record<string, { write: PhaseResult[]; readCold: PhaseResult[]; readWarm: PhaseResult[] }> = {};
  let dropNote: string | undefined;
  const mountOptions: Record<string, string | undefined> = {};
  const verified: string[] = [];
  try {
    const pt = await Server.start('passthrough', 'passthrough-fs.js', [dirs.ptBacking, dirs.ptMnt], dirs.ptMnt);
    servers.push(pt);
    const cap = await Server.start('capsule', 'capsule-mount-child.js', [dirs.capData, dirs.capMnt], dirs.capMnt);
    servers.push(cap);
    const targets: TargetDef[] = [
      { name: 'plain (same disk)', dir: dirs.plain },
      { name: 'passthrough FUSE', dir: dirs.ptMnt, server: pt },
      { name: 'capsule FUSE (fsync default)', dir: dirs.capMnt, server: cap },
    ];
    if (withNoFsync) {
      const capNf = await Server.start('capsule-nofsync', 'capsule-mount-child.js', [dirs.capNfData, dirs.capNfMnt, '--no-fsync'], dirs.capNfMnt);
      servers.push(capNf);
      targets.push({ name: 'capsule FUSE (fsync:false)', dir: dirs.capNfMnt, server: capNf });
    }
    for (const t of targets) {
      results[t.name] = { write: [], readCold: [], readWarm: [] };
      if (t.server) {
        const line = mountInfoLine(t.server.mnt);
        mountOptions[t.name] = line?.split(' - ')[1];
      }
    }
    console.log('kernel mount options (fstype source super-options):');
    for (const [k, v] of Object.entries(mountOptions)) console.log(`  ${k}: ${v}`);

    for (let r = 0; r < reps; r++) {
      makeSource(dirs.src, count, 1000 + r);
      const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
      for (const t of order) {
        const file = path.join(t.dir, FILE);
        await fsp.rm(file, { force: true });
        // clean start: no dirty pages from the previous target, source warm in page cache
        await sync();
        const d = dropCaches();
        if (!d.ok) dropNote = `drop_caches not permitted (${d.reason}): "cold" reads are warm`;
        await ddTimed([`if=${dirs.src}`, 'of=/dev/null']);
        const w = await phase(t, () => ddTimed([`if=${dirs.src}`, `of=${file}`, 'conv=fsync']), bytes);
        results[t.name]!.write.push(w);

        await sync();
        dropCaches();
        const rc = await phase(t, () => ddTimed([`if=${file}`, 'of=/dev/null']), bytes);
        results[t.name]!.readCold.push(rc);
        const rw = await phase(t, () => ddTimed([`if=${file}`, 'of=/dev/null']), bytes);
        results[t.name]!.readWarm.push(rw);
        console.log(`  rep ${r + 1} ${t.name}: write ${round(w.mibps)} MiB/s, read cold ${round(rc.mibps)}, warm ${round(rw.mibps)}` +
          (t.server ? ` (server CPU s: write ${round(w.serverCpuSecs ?? NaN, 2)}, read ${round(rc.serverCpuSecs ?? NaN, 2)})` : ''));
        if (r === 0) {
          const c = await run('cmp', [dirs.src, file]);
          if (c.code !== 0) throw new Error(`${t.name}: file read back differs from the source: ${c.stdout}${c.stderr}`);
          verified.push(t.name);
        }
      }
    }
  } finally {
    await cleanup();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }

  const names = Object.keys(results);
  const plainName = names[0]!;
  const ptName = names[1]!;
  const ratio = (num: string, den: string, k: 'write' | 'readCold' | 'readWarm') =>
    round(median(results[num]![k].map((x, i) => x.mibps / results[den]![k][i]!.mibps)), 3);
  const med = (n: string, k: 'write' | 'readCold' | 'readWarm') => round(median(results[n]![k].map((x) => x.mibps)));
  const cpu = (n: string, k: 'write' | 'readCold' | 'readWarm') => {
    const xs = results[n]![k].map((x) => x.serverCpuSecs).filter((x): x is number => x !== undefined);
    return xs.length ? round(median(xs), 2) : '-';
  };
  table(`FUSE sequential I/O, ${count} MiB via dd bs=1M (median of ${reps}; ratios within a repetition)`,
    ['target', 'write MiB/s', 'read cold MiB/s', 'read warm MiB/s', 'server CPU s (w/r)', 'w vs plain', 'w vs pt', 'r vs plain', 'r vs pt'],
    names.map((n) => [n, med(n, 'write'), med(n, 'readCold'), med(n, 'readWarm'), `${cpu(n, 'write')}/${cpu(n, 'readCold')}`,
      ratio(n, plainName, 'write'), ratio(n, ptName, 'write'), ratio(n, plainName, 'readCold'), ratio(n, ptName, 'readCold')]));
  const capName = names[2]!;
  const summary = {
    plainWriteMiBps: med(plainName, 'write'), plainReadMiBps: med(plainName, 'readCold'),
    passthroughWriteMiBps: med(ptName, 'write'), passthroughReadMiBps: med(ptName, 'readCold'),
    capsuleWriteMiBps: med(capName, 'write'), capsuleReadMiBps: med(capName, 'readCold'),
    capsuleWriteVsPlain: ratio(capName, plainName, 'write'), capsuleWriteVsPassthrough: ratio(capName, ptName, 'write'),
    capsuleReadVsPlain: ratio(capName, plainName, 'readCold'), capsuleReadVsPassthrough: ratio(capName, ptName, 'readCold'),
    ...(names[3] ? {
      capsuleNoFsyncWriteMiBps: med(names[3], 'write'), capsuleNoFsyncReadMiBps: med(names[3], 'readCold'),
      capsuleNoFsyncWriteVsPassthrough: ratio(names[3], ptName, 'write'), capsuleNoFsyncReadVsPassthrough: ratio(names[3], ptName, 'readCold'),
    } : {}),
    target: TARGET,
    writeMeetsTarget: ratio(capName, ptName, 'write') >= TARGET,
    readMeetsTarget: ratio(capName, ptName, 'readCold') >= TARGET,
  };
  console.log(`target: capsule >= ${TARGET} x passthrough (default store options): write ${summary.writeMeetsTarget ? 'MET' : 'MISSED'}, read ${summary.readMeetsTarget ? 'MET' : 'MISSED'}`);
  console.log(`verified by cmp against the source: ${verified.join(', ')}`);
  if (dropNote) console.log(dropNote);
  writeResult('fuse', { meta: meta('fuse'), reps, mountOptions, results, summary, verified, ...(dropNote ? { dropNote } : {}) });
}

main().then(() => exitWhenDone('fuse'), (e) => {
  console.error(e);
  process.exit(1);
});
