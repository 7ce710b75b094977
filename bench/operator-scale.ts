/**
 * The operator at scale in standalone mode: BENCH_SCALE_N Capsules (default 1000; inline data of
 * ~330 unique bytes each) and as many CapsuleViews (protocol csi, one per capsule: fuse views
 * at this scale would be that many kernel mounts), applied as fast as one process can.
 *
 * Three processes, so that RSS and CPU are the operator's own:
 *   - a gateway: `spacectl serve --no-operator` on a scratch data dir (ingests, serves mounts);
 *   - the operator: bench/operator-child.ts (openObjectStore + createOperator + /metrics);
 *   - this process: opens the same object store (SQLite WAL; the operator's watches see our
 *     commits by polling data_version every 50 ms, as they see `spacectl apply`'s) and applies
 *     the objects with applyObject, sequentially, then measures.
 *
 * Reported:
 *   1. time from the first apply to all 2N objects Ready (Ready condition True; the store's list
 *      polled every 100 ms), and objects/s; then until the operator is quiescent (work queues
 *      empty, no reconcile between two scrapes: each status write queues one more no-op
 *      reconcile of its object, so a backlog outlives the last Ready);
 *   2. reconcile latency p50/p99 per controller over the scale-up (up to quiescence),
 *      interpolated from the operator's controller_runtime_reconcile_time_seconds buckets as
 *      Prometheus' histogram_quantile does (so only as fine as the buckets: 5, 10, 25, 50,
 *      100 ms ...); target p99 < 100 ms. The same for the projection phase (5.) from the
 *      difference of two scrapes;
 *   3. the operator's peak RSS (VmHWM) and RSS at the end; target < 300 MiB;
 *   4. idle: after quiescence and a settle time, the operator's utime+stime over
 *      BENCH_IDLE_SECONDS as % of one core (target < 1%; also measured before the first apply,
 *      with an empty store, as a baseline) and the store writes in that window
 *      (the store's resourceVersion before and after; target 0). No FederationZones are created:
 *      their probes are periodic by design;
 *   5. view projection: BENCH_PROJECTION_VIEWS (default 20) new fuse views (mountPath under the
 *      scratch dir) of Ready capsules, one at a time, then as many csi views: time from the apply
 *      call returning to the view's Ready condition, polled every BENCH_POLL_MS (default 2) ms;
 *      p50/p99 (nearest rank)/max; target p99 < 50 ms. Also the time until the operator's first
 *      write (its finalizer), which is how long it takes to notice another process's commit (inotify on the WAL file).
 * The fuse views are deleted (the operator unmounts them) before the processes stop; leftover
 * mounts under the scratch dir are lazily unmounted as a last resort.
 *
 * Env: BENCH_SCALE_N (default 1000), BENCH_IDLE_SECONDS (10), BENCH_IDLE_SETTLE_SECONDS (5),
 * BENCH_PROJECTION_VIEWS (20), BENCH_POLL_MS (2), BENCH_SCALE_TIMEOUT_S (600, for all Ready).
 * Run: npx tsc -p . && node dist/bench/operator-scale.js
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DIST_BENCH, REPO_ROOT, envInt, exitWhenDone, meta, now, rmrf, round, scratchDir, table, writeResult, raceTimeout, sleep, nearestRank } from './common.js';
import { openObjectStore } from '../operator/standalone/run.js';
import type { ObjectStore } from '../operator/standalone/object-store.js';
import { applyObject } from '../operator/standalone/manifests.js';
import { CAPSULES, CAPSULE_VIEWS, isNotFound, type KubeObject } from '../operator/runtime/object-api.js';

const RECONCILE_P99_TARGET_MS = 100;
const RSS_TARGET_MIB = 300;
const IDLE_CPU_TARGET_PCT = 1;
const PROJECTION_TARGET_MS = 50;
const NS = 'default';

// ------------------------------------------------------------------ child processes

/** A child process whose stdout lines and stderr tail we keep; killed for sure on our exit. */
class Child {
  private buf = '';
  private lines: string[] = [];
  private waiters: ((line: string) => void)[] = [];
  private stderrTail = '';
  readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(readonly name: string, readonly proc: ChildProcess, private readonly onStderrLine?: (line: string) => void) {
    proc.stdout!.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
    let errBuf = '';
    proc.stderr!.on('data', (d: Buffer) => {
      const s = d.toString();
      this.stderrTail = (this.stderrTail + s).slice(-16 << 10);
      errBuf += s;
      let nl: number;
      while ((nl = errBuf.indexOf('\n')) >= 0) {
        this.onStderrLine?.(errBuf.slice(0, nl));
        errBuf = errBuf.slice(nl + 1);
      }
    });
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve((this.exitCode = code))));
    live.add(this);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get stderr(): string {
    return this.stderrTail.trim();
  }

  nextLine(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((r) => this.waiters.push(r));
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 30_000): Promise<void> {
    if (this.exitCode === undefined) {
      this.proc.kill('SIGTERM');
      const code = await raceTimeout(this.exited, graceMs, 'timeout' as const);
      if (code === 'timeout') {
        console.error(`${this.name}: did not exit ${graceMs / 1000} s after SIGTERM; killing`);
        this.proc.kill('SIGKILL');
        await this.exited;
      } else if (code !== 0) console.error(`${this.name}: exited with ${code}: ${this.stderr}`);
    }
    live.delete(this);
  }
}

/** Children still running: killed outright if this process exits before stopping them. */
const live = new Set<Child>();
process.on('exit', () => {
  for (const c of live) c.proc.kill('SIGKILL');
});



async function startGateway(dataDir: string): Promise<{ child: Child; address: string }> {
  let resolvePort!: (port: string) => void;
  const port = new Promise<string>((r) => (resolvePort = r));
  const proc = spawn(process.execPath, [path.join(REPO_ROOT, 'dist', 'cli', 'spacectl.js'), 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--no-operator'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // per-call info logs would be the gateway's main work at this rate; warnings still show
    env: { ...process.env, SPACE_LOG_LEVEL: 'warn' },
  });
  const child = new Child('gateway', proc, (line) => {
    const m = /^space gateway: .*gRPC 127\.0\.0\.1:(\d+)/.exec(line);
    if (m) resolvePort(m[1]!);
  });
  const got = await raceTimeout(Promise.race([port, child.exited.then((c) => `exit ${c}`)]), 30_000, 'timeout');
  if (!/^\d+$/.test(got)) {
    await child.stop(5000);
    throw new Error(`gateway did not start (${got}): ${child.stderr}`);
  }
  return { child, address: `127.0.0.1:${got}` };
}

async function startOperator(standaloneDir: string, gateway: string, viewRoot: string, logFile: string): Promise<{ child: Child; metricsPort: number }> {
  // stdin stays a pipe: the child exits when it closes (we died without stopping it)
  const proc = spawn(process.execPath, [path.join(DIST_BENCH, 'operator-child.js'), standaloneDir, gateway, viewRoot, logFile], { stdio: ['pipe', 'pipe', 'pipe'] });
  const child = new Child('operator', proc);
  const line = await raceTimeout(Promise.race([child.nextLine(), child.exited.then((c) => `exit ${c}`)]), 30_000, 'timeout');
  let port: number | undefined;
  try {
    port = (JSON.parse(line) as { metricsPort?: number }).metricsPort;
  } catch {
    // not the JSON line: reported below
  }
  if (!port) {
    await child.stop(5000);
    throw new Error(`operator did not start (${line}): ${child.stderr}`);
  }
  return { child, metricsPort: port };
}

// ------------------------------------------------------------------ /proc

function procStatus(pid: number): { hwmKiB: number; rssKiB: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { hwmKiB: get('VmHWM'), rssKiB: get('VmRSS') };
}

const CLK_TCK = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of a process in seconds (fields 14 and 15 of /proc/<pid>/stat). */
function cpuSecs(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // the command name (field 2) may contain spaces: count fields from after its ')'
  const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}

/** Mount points at or under `dir`, from /proc/mounts (octal escapes decoded). */
function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => unescape(l.split(' ')[1] ?? '')).filter((m) => m === dir || m.startsWith(dir + '/'));
}

// ------------------------------------------------------------------ metrics

interface Histogram {
  /** Cumulative counts by upper bound, ascending, ending with +Inf. */
  buckets: { le: number; count: number }[];
  sum: number;
  count: number;
}

function labelsOf(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

/** Every series of `name` in Prometheus text format: labels and value. */
function series(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^(\w+)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    out.push({ labels: labelsOf(m[2] ?? ''), value: Number(m[3]) });
  }
  return out;
}

/** A histogram's per-controller buckets. */
function histograms(text: string, name: string, by: string): Map<string, Histogram> {
  const out = new Map<string, Histogram>();
  const of = (k: string) => {
    let h = out.get(k);
    if (!h) out.set(k, (h = { buckets: [], sum: 0, count: 0 }));
    return h;
  };
  for (const s of series(text, `${name}_bucket`)) of(s.labels[by] ?? '').buckets.push({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value });
  for (const s of series(text, `${name}_sum`)) of(s.labels[by] ?? '').sum = s.value;
  for (const s of series(text, `${name}_count`)) of(s.labels[by] ?? '').count = s.value;
  for (const h of out.values()) h.buckets.sort((a, b) => a.le - b.le);
  return out;
}

/** What was observed between two scrapes of the same histogram. */
function minus(a: Histogram, b: Histogram | undefined): Histogram {
  if (!b) return a;
  return { buckets: a.buckets.map((x, i) => ({ le: x.le, count: x.count - (b.buckets[i]?.count ?? 0) })), sum: a.sum - b.sum, count: a.count - b.count };
}

/**
 * Prometheus' histogram_quantile: find the bucket holding rank q*count and interpolate linearly
 * inside it (the first bucket starts at 0); a rank in the +Inf bucket gives the highest finite
 * bound. NaN without observations.
 */
function histogramQuantile(q: number, h: Histogram): number {
  const b = h.buckets;
  const total = b[b.length - 1]?.count ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  const i = b.findIndex((x) => x.count >= rank);
  if (b[i]!.le === Infinity) return b.length >= 2 ? b[b.length - 2]!.le : NaN;
  const lower = i === 0 ? 0 : b[i - 1]!.le;
  const below = i === 0 ? 0 : b[i - 1]!.count;
  const inBucket = b[i]!.count - below;
  if (inBucket <= 0) return b[i]!.le;
  return lower + (b[i]!.le - lower) * ((rank - below) / inBucket);
}

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!res.ok) throw new Error(`/metrics: HTTP ${res.status}`);
  return res.text();
}

const total = (text: string, name: string) => series(text, name).reduce((a, s) => a + s.value, 0);

/** Scrape every 500 ms until two scrapes in a row show empty queues, idle workers and the same reconcile count; returns the last scrape. */
async function waitQuiescent(port: number, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let prev: number | undefined;
  for (;;) {
    const text = await scrape(port);
    const busy = total(text, 'workqueue_depth') + total(text, 'controller_runtime_active_workers');
    const done = total(text, 'controller_runtime_reconcile_total');
    if (busy === 0 && prev === done) return text;
    prev = busy === 0 ? done : undefined;
    if (Date.now() > deadline) throw new Error(`the operator is still busy ${timeoutMs / 1000} s later (queue depth + active workers ${busy})`);
    await sleep(500);
  }
}

// ------------------------------------------------------------------ objects

const capsuleName = (i: number) => `scale-${String(i).padStart(5, '0')}`;

/** ~330 bytes, different for every capsule (no two ingests are the same content). */
function capsuleData(i: number): string {
  let s = `operator-scale capsule ${i}\n`;
  for (let j = 0; j < 5; j++) s += crypto.createHash('sha256').update(`space-bench:operator-scale:${i}:${j}`).digest('hex') + '\n';
  return s;
}

function capsule(i: number): KubeObject {
  return { apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: capsuleName(i), namespace: NS }, spec: { source: { inline: { data: capsuleData(i) } } } };
}

function view(name: string, capsuleIndex: number, protocol: 'csi' | 'fuse', mountPath?: string): KubeObject {
  return {
    apiVersion: 'space.io/v1alpha1',
    kind: 'CapsuleView',
    metadata: { name, namespace: NS },
    spec: { capsuleRef: { name: capsuleName(capsuleIndex) }, protocol, ...(mountPath ? { options: { mountPath } } : {}) },
  };
}

interface Cond { type: string; status: string; reason?: string; message?: string }
const readyCond = (o: KubeObject) => ((o.status as { conditions?: Cond[] } | undefined)?.conditions ?? []).find((c) => c.type === 'Ready');
const isReady = (o: KubeObject) => readyCond(o)?.status === 'True';

/** The most common reasons objects are not Ready (for a run that timed out). */
function notReadyReasons(items: KubeObject[]): string {
  const n = new Map<string, number>();
  for (const o of items) {
    if (isReady(o)) continue;
    const c = readyCond(o);
    const k = `${o.kind}: ${c ? `${c.reason}: ${(c.message ?? '').slice(0, 120)}` : 'no Ready condition'}`;
    n.set(k, (n.get(k) ?? 0) + 1);
  }
  return [...n].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([k, v]) => `  ${v} x ${k}`).join('\n');
}


interface Projection {
  protocol: 'fuse' | 'csi';
  /** apply returned -> Ready condition True (ms). */
  readyMs: number[];
  /** apply returned -> first write by the operator (its finalizer) (ms). */
  pickupMs: number[];
}

/**
 * Create `count` views one at a time and time each from its apply call returning to Ready.
 * A pause with jitter between views spreads the applies over the operator's 50 ms poll period
 * instead of locking them to one phase of it.
 */
async function project(objects: ObjectStore, protocol: 'fuse' | 'csi', count: number, pollMs: number, mountRoot: string, n: number): Promise<Projection> {
  const out: Projection = { protocol, readyMs: [], pickupMs: [] };
  for (let k = 0; k < count; k++) {
    await sleep(100 + Math.random() * 50);
    const name = `proj-${protocol}-${String(k).padStart(3, '0')}`;
    const created = (await applyObject(objects, CAPSULE_VIEWS, view(name, k % n, protocol, protocol === 'fuse' ? path.join(mountRoot, name) : undefined))).object;
    const t0 = now();
    let pickup: number | undefined;
    for (;;) {
      const o = await objects.get(CAPSULE_VIEWS, name, NS);
      const t = now() - t0;
      if (pickup === undefined && o.metadata.resourceVersion !== created.metadata.resourceVersion) pickup = t;
      if (isReady(o)) {
        out.readyMs.push(t);
        out.pickupMs.push(pickup ?? t);
        break;
      }
      const c = readyCond(o);
      if (o.status && (o.status as { phase?: string }).phase === 'Failed') throw new Error(`${name}: Failed: ${c?.reason}: ${c?.message}`);
      if (t > 30_000) throw new Error(`${name}: not Ready after 30 s (${c ? `${c.reason}: ${c.message}` : 'no condition'})`);
      await sleep(pollMs);
    }
  }
  return out;
}

/** Delete views and wait until the operator has let them go (fuse: unmounted). */
async function deleteViews(objects: ObjectStore, names: string[], timeoutMs = 60_000): Promise<string[]> {
  for (const name of names) {
    await objects.delete(CAPSULE_VIEWS, name, NS).catch((e: unknown) => {
      if (!isNotFound(e)) throw e;
    });
  }
  const deadline = Date.now() + timeoutMs;
  let left = names;
  while (left.length && Date.now() < deadline) {
    await sleep(50);
    const still: string[] = [];
    for (const name of left) {
      try {
        await objects.get(CAPSULE_VIEWS, name, NS);
        still.push(name);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    left = still;
  }
  return left;
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const n = envInt('BENCH_SCALE_N', 1000);
  if (n < 1) throw new Error('BENCH_SCALE_N must be at least 1');
  const idleSecs = envInt('BENCH_IDLE_SECONDS', 10);
  const settleSecs = envInt('BENCH_IDLE_SETTLE_SECONDS', 5);
  const projCount = envInt('BENCH_PROJECTION_VIEWS', 20);
  const pollMs = Math.max(1, envInt('BENCH_POLL_MS', 2));
  const timeoutSecs = envInt('BENCH_SCALE_TIMEOUT_S', 600);
  const fuseOk = fs.existsSync('/dev/fuse');

  const base = scratchDir('operator-scale');
  const dirs = {
    gateway: path.join(base, 'gateway'),
    standalone: path.join(base, 'standalone'),
    viewRoot: path.join(base, 'views'),
    mounts: path.join(base, 'mnt'),
    log: path.join(base, 'operator.log'),
  };
  for (const d of [dirs.gateway, dirs.standalone, dirs.viewRoot, dirs.mounts]) fs.mkdirSync(d, { recursive: true });
  console.log(`operator-scale: ${n} capsules + ${n} csi views, then ${projCount} fuse + ${projCount} csi views one at a time; scratch ${base}`);

  let gateway: Child | undefined;
  let operator: Child | undefined;
  let objects: ObjectStore | undefined;
  const projectionViews: string[] = [];
  let leftoverMounts: string[] = [];
  let cleaned: Promise<void> | undefined;
  // Stop everything once: at the end, on failure, or when interrupted (run-all's timeout, ^C).
  // Views first, while the operator and gateway still run to unmount them.
  const cleanup = () => (cleaned ??= (async () => {
    if (objects && operator && gateway && projectionViews.length) {
      const stuck = await deleteViews(objects, projectionViews, 30_000).catch((e: Error) => {
        console.error(`deleting the projection views: ${e.message}`);
        return projectionViews;
      });
      if (stuck.length) console.error(`views not gone 30 s after delete: ${stuck.join(', ')}`);
    }
    await operator?.stop().catch((e: Error) => console.error(e.message));
    await gateway?.stop().catch((e: Error) => console.error(e.message));
    await objects?.close().catch(() => {});
    leftoverMounts = mountsUnder(base);
    for (const m of leftoverMounts.reverse()) {
      console.error(`still mounted after shutdown: ${m}; umount -l`);
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch (e) {
        console.error(`umount -l ${m}: ${(e as Error).message}`);
      }
    }
    if (fs.existsSync(dirs.log) && fs.statSync(dirs.log).size > 0) {
      console.error(`operator warnings/errors (tail of its log):\n${fs.readFileSync(dirs.log, 'utf8').split('\n').slice(-15).join('\n')}`);
    }
    rmrf(base);
  })());
  const onSignal = (sig: NodeJS.Signals) => {
    console.error(`operator-scale: ${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);

  let result: Record<string, unknown>;
  try {
    const gw = await startGateway(dirs.gateway);
    gateway = gw.child;
    const op = await startOperator(dirs.standalone, gw.address, dirs.viewRoot, dirs.log);
    operator = op.child;
    objects = openObjectStore(dirs.standalone);
    const opPid = operator.pid;
    console.log(`gateway pid ${gateway.pid} at ${gw.address}; operator pid ${opPid}, metrics :${op.metricsPort}`);
    // Baseline: the same idle measurement with an empty store, to tell the operator's fixed
    // idle cost (timers, polling) from what the objects add.
    await sleep(settleSecs * 1000);
    const b0 = cpuSecs(opPid);
    const bt0 = now();
    await sleep(idleSecs * 1000);
    const baselineIdleCpuPct = ((cpuSecs(opPid) - b0) / ((now() - bt0) / 1000)) * 100;
    console.log(`idle with an empty store: operator CPU ${round(baselineIdleCpuPct, 2)} %`);
    const startMem = procStatus(opPid);
    const cpuAtStart = cpuSecs(opPid);

    // ---- 1. apply 2N objects as fast as possible, then wait for all Ready
    const t0 = now();
    for (let i = 0; i < n; i++) await applyObject(objects, CAPSULES, capsule(i));
    const tCapsulesApplied = now();
    for (let i = 0; i < n; i++) await applyObject(objects, CAPSULE_VIEWS, view(`${capsuleName(i)}-csi`, i, 'csi'));
    const tApplied = now();
    const applySecs = (tApplied - t0) / 1000;
    console.log(`applied ${2 * n} objects in ${round(applySecs, 2)} s (capsules ${round((tCapsulesApplied - t0) / 1000, 2)} s)`);

    let capsulesReadyAt: number | undefined;
    let allReadyAt: number | undefined;
    let lastReport = now();
    for (;;) {
      const caps = (await objects.list(CAPSULES, NS)).items;
      const views = (await objects.list(CAPSULE_VIEWS, NS)).items;
      const t = now();
      const rc = caps.filter(isReady).length;
      const rv = views.filter(isReady).length;
      if (capsulesReadyAt === undefined && rc === n) capsulesReadyAt = t;
      if (rc === n && rv === n) {
        allReadyAt = t;
        break;
      }
      if (t - lastReport > 5000) {
        lastReport = t;
        console.log(`  ${round((t - t0) / 1000)} s: ${rc}/${n} capsules, ${rv}/${n} views Ready`);
      }
      if (t - t0 > timeoutSecs * 1000) {
        throw new Error(`not all Ready after ${timeoutSecs} s (${rc}/${n} capsules, ${rv}/${n} views):\n${notReadyReasons([...caps, ...views])}`);
      }
      await sleep(100);
    }
    const readySecs = (allReadyAt - t0) / 1000;
    const capsulesReadySecs = (capsulesReadyAt! - t0) / 1000;
    console.log(`all ${2 * n} Ready ${round(readySecs, 2)} s after the first apply`);
    // Every status write comes back to the operator as a watch event and queues one more
    // (no-op) reconcile, so a backlog can remain after the last object turned Ready: the
    // scale-up is over when the queues are empty and no reconcile ran between two scrapes.
    const metricsAtReady = await waitQuiescent(op.metricsPort, timeoutSecs * 1000);
    const quiescentSecs = (now() - t0) / 1000;
    const scaleCpuSecs = cpuSecs(opPid) - cpuAtStart;
    const memAtReady = procStatus(opPid);
    console.log(`operator quiescent (queues empty, no reconciles) ${round(quiescentSecs, 2)} s after the first apply`);

    // ---- 4. idle: nothing changes; the operator should do (almost) nothing
    await sleep(settleSecs * 1000);
    const snapshot = async () => new Map([...(await objects!.list(CAPSULES, NS)).items, ...(await objects!.list(CAPSULE_VIEWS, NS)).items].map((o) => [`${o.kind}/${o.metadata.name}`, o.metadata.resourceVersion]));
    const before = await snapshot();
    const rv0 = Number(objects.resourceVersion());
    const cpu0 = cpuSecs(opPid);
    const i0 = now();
    await sleep(idleSecs * 1000);
    const cpu1 = cpuSecs(opPid);
    const idleWall = (now() - i0) / 1000;
    const rv1 = Number(objects.resourceVersion());
    const after = await snapshot();
    const idleCpuPct = ((cpu1 - cpu0) / idleWall) * 100;
    const idleWrites = rv1 - rv0;
    const idleChanged = [...after].filter(([k, v]) => before.get(k) !== v).length;
    console.log(`idle ${round(idleWall, 1)} s: operator CPU ${round(idleCpuPct, 2)} %, ${idleWrites} store writes, ${idleChanged} objects changed`);

    // ---- 5. view projection, one view at a time on an idle system
    const projections: Projection[] = [];
    const projected = (count: number, protocol: 'fuse' | 'csi') => {
      for (let k = 0; k < count; k++) projectionViews.push(`proj-${protocol}-${String(k).padStart(3, '0')}`);
    };
    if (fuseOk && projCount > 0) {
      projected(projCount, 'fuse');
      projections.push(await project(objects, 'fuse', projCount, pollMs, dirs.mounts, n));
    } else if (!fuseOk) console.log('/dev/fuse missing: fuse view projection skipped');
    if (projCount > 0) {
      projected(projCount, 'csi');
      projections.push(await project(objects, 'csi', projCount, pollMs, dirs.mounts, n));
    }
    const metricsAtEnd = await scrape(op.metricsPort);
    const endMem = procStatus(opPid);
    const fuseMountsDuring = mountsUnder(dirs.mounts).length;

    // delete the projection views now (cleanup would too): their unmount is part of the run
    const stuck = await deleteViews(objects, projectionViews);
    if (stuck.length) throw new Error(`views not gone 60 s after delete: ${stuck.join(', ')}`);
    projectionViews.length = 0;
    const mountsAfterDelete = mountsUnder(base);

    // ---- report
    const hScale = histograms(metricsAtReady, 'controller_runtime_reconcile_time_seconds', 'controller');
    const hEnd = histograms(metricsAtEnd, 'controller_runtime_reconcile_time_seconds', 'controller');
    const totals = series(metricsAtReady, 'controller_runtime_reconcile_total');
    const byResult = (c: string) => totals.filter((s) => s.labels.controller === c && s.value > 0).map((s) => `${s.labels.result} ${s.value}`).join(', ') || '-';
    const ms = (s: number) => round(s * 1000, 1);
    const controllers = [...hScale.keys()].sort();
    const reconcile: Record<string, { count: number; p50Ms: number; p99Ms: number; meanMs: number; projectionCount: number; projectionP50Ms: number; projectionP99Ms: number }> = {};
    for (const c of controllers) {
      const h = hScale.get(c)!;
      const p = minus(hEnd.get(c) ?? h, h);
      reconcile[c] = {
        count: h.count,
        p50Ms: ms(histogramQuantile(0.5, h)),
        p99Ms: ms(histogramQuantile(0.99, h)),
        meanMs: ms(h.count ? h.sum / h.count : NaN),
        projectionCount: p.count,
        projectionP50Ms: ms(histogramQuantile(0.5, p)),
        projectionP99Ms: ms(histogramQuantile(0.99, p)),
      };
    }
    const busy = controllers.filter((c) => reconcile[c]!.count > 0);
    const reconcileMet = busy.length > 0 && busy.every((c) => reconcile[c]!.p99Ms < RECONCILE_P99_TARGET_MS);
    const v = (b: boolean) => (b ? 'MET' : 'MISSED');

    table(`operator at scale: ${n} capsules + ${n} csi views (standalone, operator in its own process)`, ['measurement', 'value', 'target'], [
      ['apply 2N objects (one process, sequential)', `${round(applySecs, 2)} s = ${round((2 * n) / applySecs)} obj/s`, 'info'],
      ['first apply -> all capsules Ready', `${round(capsulesReadySecs, 2)} s`, 'info'],
      ['first apply -> all 2N objects Ready', `${round(readySecs, 2)} s = ${round((2 * n) / readySecs)} obj/s`, 'info'],
      ['first apply -> operator quiescent (queues drained)', `${round(quiescentSecs, 2)} s`, 'info'],
      ['operator CPU for the whole scale-up', `${round(scaleCpuSecs, 2)} s = ${round((scaleCpuSecs * 1000) / (2 * n), 2)} ms/object`, 'info'],
      ['operator RSS at start / quiescent after scale-up', `${round(startMem.rssKiB / 1024)} / ${round(memAtReady.rssKiB / 1024)} MiB`, 'info'],
      ['operator peak RSS (VmHWM, whole run)', `${round(endMem.hwmKiB / 1024)} MiB`, `${v(endMem.hwmKiB / 1024 < RSS_TARGET_MIB)} (< ${RSS_TARGET_MIB} MiB)`],
      ['operator RSS at the end', `${round(endMem.rssKiB / 1024)} MiB`, `${v(endMem.rssKiB / 1024 < RSS_TARGET_MIB)} (< ${RSS_TARGET_MIB} MiB)`],
      ['idle CPU with an empty store (baseline)', `${round(baselineIdleCpuPct, 2)} % of one core`, 'info'],
      [`idle CPU over ${round(idleWall, 1)} s (after ${settleSecs} s settle)`, `${round(idleCpuPct, 2)} % of one core`, `${v(idleCpuPct < IDLE_CPU_TARGET_PCT)} (< ${IDLE_CPU_TARGET_PCT} %)`],
      ['store writes while idle (resourceVersion delta)', `${idleWrites} (${idleChanged} capsules/views changed)`, `${v(idleWrites === 0)} (0)`],
    ]);

    table(`reconcile latency per controller (ms; histogram_quantile-style interpolation in the buckets 5, 10, 25, 50, 100, 200 ms ...; target p99 < ${RECONCILE_P99_TARGET_MS} ms)`,
      ['controller', 'reconciles', 'results', 'p50', 'p99', 'mean', 'target', 'projection: n', 'p50', 'p99'],
      controllers.map((c) => {
        const r = reconcile[c]!;
        const q = (x: number) => (Number.isNaN(x) ? '-' : x);
        return [c, r.count, byResult(c), q(r.p50Ms), q(r.p99Ms), q(r.meanMs), r.count ? `${v(r.p99Ms < RECONCILE_P99_TARGET_MS)}` : 'n/a', r.projectionCount, q(r.projectionP50Ms), q(r.projectionP99Ms)];
      }));

    const projRows = projections.map((p) => {
      const p99 = nearestRank(p.readyMs, 0.99);
      const work = p.readyMs.map((x, i) => x - p.pickupMs[i]!);
      return [`${p.protocol} (${p.readyMs.length} views)`, round(nearestRank(p.readyMs, 0.5), 1), round(p99, 1), round(Math.max(...p.readyMs), 1),
        round(nearestRank(p.pickupMs, 0.5), 1), `${round(nearestRank(work, 0.5), 1)} / ${round(nearestRank(work, 0.99), 1)}`, `${v(p99 < PROJECTION_TARGET_MS)} (p99 < ${PROJECTION_TARGET_MS} ms)`];
    });
    table(`view projection on an idle system: apply returned -> Ready (ms; polled every ${pollMs} ms; p99 nearest rank)`,
      ['views', 'p50', 'p99', 'max', 'first operator write p50', 'first write -> Ready p50 / p99', 'target'], projRows);
    console.log(`fuse mounts under the scratch dir while projected: ${fuseMountsDuring}; after deleting the views: ${mountsAfterDelete.length}`);
    console.log(`"first operator write": how long the operator took to see another process's commit (inotify on the WAL, then data_version) and write the finalizer`);

    const proj = (p: 'fuse' | 'csi') => projections.find((x) => x.protocol === p);
    const pSummary = (p: 'fuse' | 'csi') => {
      const x = proj(p);
      if (!x) return null;
      const work = x.readyMs.map((r, i) => r - x.pickupMs[i]!);
      return { p50Ms: round(nearestRank(x.readyMs, 0.5), 1), p99Ms: round(nearestRank(x.readyMs, 0.99), 1), maxMs: round(Math.max(...x.readyMs), 1), pickupMedianMs: round(nearestRank(x.pickupMs, 0.5), 1), afterPickupP50Ms: round(nearestRank(work, 0.5), 1), afterPickupP99Ms: round(nearestRank(work, 0.99), 1) };
    };
    const fuseS = pSummary('fuse');
    const csiS = pSummary('csi');
    const summary = {
      n,
      objects: 2 * n,
      applySecs: round(applySecs, 2),
      applyObjPerSec: round((2 * n) / applySecs),
      capsulesReadySecs: round(capsulesReadySecs, 2),
      allReadySecs: round(readySecs, 2),
      quiescentSecs: round(quiescentSecs, 2),
      readyObjPerSec: round((2 * n) / readySecs),
      scaleCpuSecs: round(scaleCpuSecs, 2),
      capsuleP50Ms: reconcile.capsule?.p50Ms ?? null,
      capsuleP99Ms: reconcile.capsule?.p99Ms ?? null,
      viewP50Ms: reconcile.capsuleview?.p50Ms ?? null,
      viewP99Ms: reconcile.capsuleview?.p99Ms ?? null,
      reconcileTargetMs: RECONCILE_P99_TARGET_MS,
      reconcileMeetsTarget: reconcileMet,
      peakRssMiB: round(endMem.hwmKiB / 1024),
      endRssMiB: round(endMem.rssKiB / 1024),
      rssTargetMiB: RSS_TARGET_MIB,
      rssMeetsTarget: endMem.hwmKiB / 1024 < RSS_TARGET_MIB,
      idleSecs: round(idleWall, 1),
      idleCpuPct: round(idleCpuPct, 2),
      baselineIdleCpuPct: round(baselineIdleCpuPct, 2),
      idleWrites,
      idleMeetsTarget: idleCpuPct < IDLE_CPU_TARGET_PCT && idleWrites === 0,
      fuseP50Ms: fuseS?.p50Ms ?? null,
      fuseP99Ms: fuseS?.p99Ms ?? null,
      fuseMaxMs: fuseS?.maxMs ?? null,
      fusePickupMs: fuseS?.pickupMedianMs ?? null,
      csiP50Ms: csiS?.p50Ms ?? null,
      csiP99Ms: csiS?.p99Ms ?? null,
      csiMaxMs: csiS?.maxMs ?? null,
      csiPickupMs: csiS?.pickupMedianMs ?? null,
      projectionTargetMs: PROJECTION_TARGET_MS,
      projectionMeetsTarget: projections.length > 0 ? projections.every((p) => nearestRank(p.readyMs, 0.99) < PROJECTION_TARGET_MS) : null,
    };
    result = {
      meta: { ...meta('operator-scale'), clkTck: CLK_TCK },
      method: {
        processes: 'gateway (spacectl serve --no-operator), operator (dist/bench/operator-child.js), this process (applies and polls)',
        ready: 'Ready condition True; the store list polled every 100 ms',
        reconcileQuantiles: 'interpolated within controller_runtime_reconcile_time_seconds buckets, as Prometheus histogram_quantile',
        rss: '/proc/<operator pid>/status VmHWM and VmRSS',
        idleCpu: '/proc/<operator pid>/stat utime+stime',
        idleWrites: 'object store resourceVersion delta (every write of any type bumps it)',
        projection: `apply call returned -> Ready condition True, get polled every ${pollMs} ms; nearest-rank percentiles`,
      },
      summary,
      reconcile,
      reconcileTotals: Object.fromEntries(controllers.map((c) => [c, byResult(c)])),
      memory: { startKiB: startMem, quiescentKiB: memAtReady, endKiB: endMem },
      projections,
      mounts: { duringProjection: fuseMountsDuring, afterDelete: mountsAfterDelete.length },
    };
  } finally {
    await cleanup();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
  (result.mounts as Record<string, number>).leftAfterShutdown = leftoverMounts.length;
  if (leftoverMounts.length) console.log(`WARNING: ${leftoverMounts.length} mounts were left after shutdown (lazily unmounted)`);
  writeResult('operator-scale', result);
}

main().then(() => exitWhenDone('operator-scale'), (e) => {
  console.error(e);
  process.exit(1);
});
