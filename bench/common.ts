/**
 * Shared helpers for the benchmarks: sizes from the environment, unique pseudo-random data,
 * timing, tables, result files, and drop_caches.
 *
 * Conventions: sizes and rates are binary (1 MiB = 2^20 bytes; "MiB/s"). Every benchmark writes
 * its machine-readable result to .bench-out/<name>.json (gitignored) and prints a table.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MiB = 1 << 20;

/** The repository root (benchmarks run compiled, from dist/bench/). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Where result JSON files go (override with BENCH_OUT). */
export const OUT_DIR = process.env.BENCH_OUT ?? path.join(REPO_ROOT, '.bench-out');
/** Compiled benchmark scripts live next to this module. */
export const DIST_BENCH = path.dirname(fileURLToPath(import.meta.url));

/** Data size in MiB (BENCH_SIZE_MB, default 1024 = 1 GiB). */
export function sizeMiB(): number {
  const raw = process.env.BENCH_SIZE_MB;
  if (raw === undefined || raw === '') return 1024;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_SIZE_MB must be a positive integer (got ${JSON.stringify(raw)})`);
  return n;
}

export function envInt(name: string, def: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number (got ${JSON.stringify(raw)})`);
  return n;
}

/** Scratch directories go under BENCH_TMP (default os.tmpdir()). */
export function scratchDir(prefix: string): string {
  const base = process.env.BENCH_TMP ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, `space-bench-${prefix}-`));
}

export function rmrf(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}

/**
 * A source of distinct 1 MiB blocks: 64 pre-generated random MiB blocks; block i is base[i % 64]
 * with the 8-byte counter i written at offset 0 (and at offset 4096, so that 4 KiB-aligned reads
 * of the first page differ too). Every block is unique, so the store's dedup never kicks in, and
 * any block can be regenerated for verification.
 */
export class UniqueBlocks {
  private readonly bases: Buffer[] = [];
  constructor(readonly seed = 1, distinct = 64) {
    const key = crypto.createHash('sha256').update(`space-bench:${seed}`).digest();
    const c = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
    const zero = Buffer.alloc(MiB);
    for (let i = 0; i < distinct; i++) this.bases.push(Buffer.from(c.update(zero)));
  }

  /** Block i, written into `into` (a MiB buffer, default a fresh one). */
  block(i: number, into: Buffer = Buffer.allocUnsafe(MiB)): Buffer {
    this.bases[i % this.bases.length]!.copy(into);
    stamp(into, i);
    return into;
  }

  /**
   * `count` blocks as an async iterable, reusing a ring of `ring` buffers (the consumer must be
   * done with a chunk before `ring` more have been pulled; Store.put copies synchronously).
   */
  async *stream(count: number, ring = 4): AsyncGenerator<Buffer> {
    const bufs = Array.from({ length: ring }, () => Buffer.allocUnsafe(MiB));
    for (let i = 0; i < count; i++) yield this.block(i, bufs[i % ring]);
  }
}

function stamp(b: Buffer, i: number): void {
  const big = BigInt(i) ^ 0x5a5a_0000_0000_0000n;
  b.writeBigUInt64LE(big, 0);
  if (b.length >= 4104) b.writeBigUInt64LE(big, 4096);
}

export function now(): number {
  return performance.now();
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Print a table with right-aligned numeric columns. */
export function table(title: string, header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmtNum(c) : c)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.some((r) => typeof r[i] === 'number'));
  const line = (r: (string | number)[]) =>
    r.map((c, i) => (numeric[i] ? String(c).padStart(widths[i]!) : String(c).padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [`\n== ${title}`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
  console.log(out);
  return out;
}

function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);
}

export interface ResultMeta {
  name: string;
  sizeMiB: number;
  startedAt: string;
  host: { cpus: number; cpuModel: string; node: string; totalMemMiB: number };
}

export function meta(name: string): ResultMeta {
  return {
    name,
    sizeMiB: sizeMiB(),
    startedAt: new Date().toISOString(),
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '?', node: process.version, totalMemMiB: Math.round(os.totalmem() / MiB) },
  };
}

export function writeResult(name: string, result: unknown): string {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  console.log(`\nresult: ${path.relative(process.cwd(), file) || file}`);
  return file;
}

/** Drop the kernel page cache (root only). Returns false, with the reason, when not permitted. */
export function dropCaches(): { ok: boolean; reason?: string } {
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/** sync(1) in a child process (asynchronous: never blocks this event loop, which may serve FUSE). */
export async function sync(): Promise<void> {
  await new Promise<void>((resolve) => spawn('sync', [], { stdio: 'ignore' }).on('close', () => resolve()).on('error', () => resolve()));
}

/**
 * Run a command to its end, collecting its output; resolves with its wall time (spawn to exit).
 * A non-zero exit, a signal or `timeoutS` (then SIGKILL) rejects with the output. `onChild`
 * sees the process while it runs (to kill it on a signal of the caller's).
 */
export function runCommand(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutS: number; onChild?: (c: ChildProcess, running: boolean) => void }): Promise<{ secs: number; out: string }> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    opts.onChild?.(c, true);
    let out = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => c.kill('SIGKILL'), opts.timeoutS * 1000);
    c.on('error', (e) => {
      clearTimeout(timer);
      opts.onChild?.(c, false);
      reject(e);
    });
    c.on('close', (code, sig) => {
      const secs = (now() - t0) / 1000;
      clearTimeout(timer);
      opts.onChild?.(c, false);
      if (code === 0) resolve({ secs, out });
      else reject(new Error(`${cmd} ${args.join(' ')}: exit ${code ?? sig} after ${round(secs)} s\n${out.trim()}`));
    });
  });
}

/** sync(1) then drop caches: dirty pages must be written back before they can be dropped. */
export async function syncAndDrop(): Promise<{ ok: boolean; reason?: string }> {
  await sync();
  return dropCaches();
}

/** Peak and current RSS of this process from /proc/self/status (KiB); null off Linux. */
export function procMem(): { vmHWMKiB: number; vmRSSKiB: number } | null {
  try {
    const s = fs.readFileSync('/proc/self/status', 'utf8');
    const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { vmHWMKiB: get('VmHWM'), vmRSSKiB: get('VmRSS') };
  } catch {
    return null;
  }
}

/**
 * Call when a benchmark's work is done. The process should then exit by itself; if something
 * (a store's worker, a timer, a socket) still holds the event loop 10 s later, say so, listing
 * the active handles, and exit anyway so a benchmark run never hangs on a leaked handle.
 */
export function exitWhenDone(name: string, code = 0): void {
  process.exitCode = code;
  setTimeout(() => {
    console.error(`warning: ${name} finished but the process was still alive 10 s later ` +
      `(active: ${process.getActiveResourcesInfo().join(', ') || 'none'}): a handle is leaking; exiting`);
    process.exit(code);
  }, 10_000).unref();
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `p`, or `fallback` after `ms` (the timer is cleared either way: nothing keeps the loop alive). */
export async function raceTimeout<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<F>((r) => (timer = setTimeout(() => r(fallback), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Nearest-rank quantile, q in 0..1 (with 20 samples, p99 is the maximum). */
export function nearestRank(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** xorshift32: cheap, seeded, good enough to pick offsets. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}
