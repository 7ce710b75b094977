/**
 * NVMe/TCP target throughput and IOPS on loopback, against raw Node TCP in the same run.
 *
 * Process design (the same for the baseline and for NVMe): the SERVER runs in this process (the
 * raw TCP server, or NvmeTarget over a capsule Store), the CLIENT in one forked child process
 * (bench/nvme/client-child.ts: the raw TCP client, or the benchmark initiator
 * bench/nvme/initiator.ts). That is how the target runs for real (its initiator is another
 * kernel, not its own event loop), and on this 2-core machine it gives server and client a core
 * each instead of making one JS thread do both ends. The child stays up for the whole run (warm
 * JIT) and times each job itself, from its first submission to its last completion (connection
 * setup excluded). Both use one TCP connection (= one NVMe I/O queue) with TCP_NODELAY; both
 * servers and both clients send what one event-loop turn produces with one write (cork/uncork).
 *
 *   baseline    raw TCP: a 16-byte request/response header (bench/nvme/workload.ts) plus 128 KiB
 *               of data, QD (BENCH_QD, default 16) transfers in flight; read = server -> client
 *               (a constant buffer), write = client -> server (discarded)
 *   seq write   sequential 128 KiB NVMe Writes over the whole namespace at the same QD (R2T +
 *               H2CData, as the Linux host does past 16 KiB in-capsule), then a Flush, which is
 *               inside the timed interval. The target buffers writes (volatile write cache) and
 *               commits them to segments on Flush (and by write-behind while they stream). The
 *               first pass onto the unwritten namespace is reported on its own; the repeated
 *               passes overwrite (a segment's committed bytes are loaded only if the writes
 *               leave part of it unset, which sequential 128 KiB writes never do).
 *               Every pass writes unique data (no dedup); reads check a sample against it.
 *   disk bound  per rep: as many 1 MiB segment-sized files written the way the store writes
 *               them (SegmentFileWriter: O_DIRECT where the filesystem takes it; no fsync)
 *               beside the store, i.e. the floor of the store's own segment writes here
 *   seq read    sequential 128 KiB NVMe Reads over the whole namespace, same QD: pass 1 right
 *               after the write pass (every segment loaded: read from disk and verified) and
 *               pass 2 ("warm"), which is compared with the baseline. The target runs with the
 *               segment cache a serving process gets (capsule/cache-size.ts: an eighth of the
 *               memory limit, 64 MiB..4 GiB); when the namespace fits in it, pass 2 is served from
 *               verified plaintext in memory, as a kernel target serves warm reads from the page
 *               cache. So also: the same amount read over the first 32 MiB only, every read a
 *               cache hit: the transport's own figure.
 *   cold read   once at the end: target and store closed, sync + drop_caches, store and target
 *               reopened, one sequential read pass (skipped without root; BENCH_COLD=0 skips).
 *   random      4 KiB reads at QD 32 (BENCH_RAND_QD) uniform over the first 32 MiB (read once
 *               beforehand: all segment-cache hits) for BENCH_SECONDS (default 5): IOPS, p50/p99
 *               latency; and the baseline protocol with 4 KiB responses.
 *   guest dd    (BENCH_GUEST=0 skips; skipped with a message when QEMU or the guest build is
 *               missing) the hack/guest Linux guest's kernel initiator against this target
 *               (10.0.2.2:port via QEMU user networking): dd bs=1M count=64 oflag=direct, then
 *               iflag=direct; and hack/guest/nvmet-dd.sh, the same dd against the guest kernel's
 *               own nvmet-tcp target on the guest's loopback. Both run under the same emulation
 *               (TCG here), so absolute numbers are small and the ratio is only a reference; the
 *               path to our target also crosses QEMU's user-mode network stack.
 *
 * Capsule: BENCH_SIZE_MB MiB (default 1024), created with `create({ size })` and no policy, i.e.
 * the default policy of a block volume: encryption OFF, compression none, 1 MiB segments.
 * BENCH_NVME_CRYPTO=1 (default) also runs the sequential writes and a read on an encrypted
 * (AES-256-GCM) capsule of the same size, as info rows. The store runs with fsync:false by
 * default, so the write figure is transport + store, not this VM's disk flushes
 * (BENCH_NVME_FSYNC=1: the store's default fdatasync per segment).
 *
 * Each sequential measurement is repeated BENCH_REPS times (default 3), baseline and NVMe
 * interleaved; a ratio is NVMe / baseline within one repetition, the figure is the median of
 * those ratios (min..max printed as the spread). GB/s = 10^9 bytes/s.
 * Targets (from the issue): seq read and write >= 0.6 x raw TCP; 4 KiB random QD32 >= 40k IOPS.
 *
 * Env: BENCH_SIZE_MB, BENCH_REPS, BENCH_QD, BENCH_RAND_QD, BENCH_SECONDS, BENCH_COLD,
 * BENCH_NVME_CRYPTO, BENCH_NVME_FSYNC, BENCH_NVME_PROFILE=1 (one more warm read pass under the main
 * thread's CPU profiler, not counted; summary printed, .cpuprofile in .bench-out/), BENCH_GUEST, BENCH_GUEST_TIMEOUT_S (default 400),
 * BENCH_JOB_TIMEOUT_S (one client job, default 600).
 * Run: npx tsc -p . && node dist/bench/nvme.js
 */
import { fork, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { SegmentFileWriter } from '../capsule/direct-write.js';
import { serverCacheBytes } from '../capsule/cache-size.js';
import { validatePolicy } from '../capsule/policy.js';
import { NvmeTarget } from '../gateway/nvme/target.js';
import { tuneHeapForServing } from '../gateway/heap-tuning.js';
import { Profiler, summarize } from './profile.js';
import { guestAvailability, runGuest, REPO } from '../test/helpers/guest.js';
import {
  DIST_BENCH, MiB, OUT_DIR, envInt, exitWhenDone, median, meta, now, rmrf, round, scratchDir, sizeMiB, sync, syncAndDrop, table, writeResult,
} from './common.js';
import {
  FrameReader, OP_READ, OP_RESP, OP_WRITE, header,
  type Job, type RandJob, type RandResult, type Reply, type SeqJob, type SeqResult,
} from './nvme/workload.js';

const IO = 128 * 1024;
const RAND_IO = 4096;
const CACHE_BYTES = serverCacheBytes(); // what `spacectl serve` / `project nvme` give the store
const TARGET_RATIO = 0.6;
const TARGET_IOPS = 40_000;
const HOST = '127.0.0.1';
const GUEST_MB = 64;

// ---------------------------------------------------------------- the baseline server

/** Raw TCP server for the baseline protocol: answers reads from one constant buffer, discards writes. */
async function startBaseline(): Promise<{ port: number; close: () => Promise<void> }> {
  const payload = Buffer.alloc(IO, 0xa5);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.setNoDelay(true);
    let corked = false;
    const reader = new FrameReader((op) => op === OP_WRITE);
    sock.on('data', (chunk: Buffer) => reader.push(chunk, (op, id, length, data) => {
      // the same batching as the target's Connection.send: one write per event-loop turn
      if (!corked) {
        corked = true;
        sock.cork();
        process.nextTick(() => {
          corked = false;
          sock.uncork();
        });
      }
      if (op === OP_READ) {
        sock.write(header(OP_RESP | OP_READ, id, length));
        sock.write(payload.subarray(0, Math.min(length, IO)));
      } else if (op === OP_WRITE) {
        if (data?.length !== length) throw new Error('baseline: short write frame');
        sock.write(header(OP_RESP | OP_WRITE, id, length));
      }
    }));
    sock.on('error', () => {});
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    }),
  };
}

// ---------------------------------------------------------------- the disk bound

/**
 * What the store's segment writes cost on this filesystem at the very least: `count` files of one
 * segment (1 MiB plus a 44-byte header, nonce and tag) written as the store writes them
 * (SegmentFileWriter) into a fresh directory beside the store's, no fsync (the store runs with
 * fsync:false here too). Seconds.
 */
function diskBound(count: number, block: Buffer): number {
  const dir = scratchDir('nvme-diskbound');
  const seg = Buffer.concat([Buffer.alloc(44), block]);
  const writer = new SegmentFileWriter(true);
  try {
    const t0 = now();
    for (let i = 0; i < count; i++) {
      seg.writeUInt32LE(i, 0); // distinct contents, as segments have
      writer.writeNew(path.join(dir, `seg-${i}`), [seg], false);
    }
    return (now() - t0) / 1000;
  } finally {
    rmrf(dir);
  }
}

// ---------------------------------------------------------------- the client process

class Client {
  private readonly child: ChildProcess;
  private waiting?: (r: Reply) => void;

  constructor() {
    this.child = fork(path.join(DIST_BENCH, 'nvme', 'client-child.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: Reply) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.(m);
    });
    this.child.on('exit', (code) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.({ ok: false, error: `client process exited (${code})` });
    });
  }

  async run<T extends SeqResult | RandResult>(job: Job): Promise<T> {
    const limit = envInt('BENCH_JOB_TIMEOUT_S', 600);
    let timer: NodeJS.Timeout | undefined;
    const c0 = process.cpuUsage();
    const reply = await new Promise<Reply>((resolve) => {
      this.waiting = resolve;
      this.child.send(job);
      timer = setTimeout(() => resolve({ ok: false, error: `no reply after ${limit} s (BENCH_JOB_TIMEOUT_S)` }), limit * 1000);
    }).finally(() => clearTimeout(timer));
    if (!reply.ok) throw new Error(`client job ${job.kind} failed: ${reply.error}`);
    const cpu = process.cpuUsage(c0);
    const result = reply.result as T;
    if ('bytes' in result) result.serverCpuSecs = (cpu.user + cpu.system) / 1e6;
    return result;
  }

  close(): void {
    if (this.child.connected) this.child.disconnect();
  }
}

// ---------------------------------------------------------------- the target

interface Served {
  store: Store;
  target: NvmeTarget;
  port: number;
  nqn: Record<string, string>;
}

async function serve(dir: string, refs: string[], fsync: boolean): Promise<Served> {
  const store = Store.open(dir, { fsync, cacheBytes: CACHE_BYTES });
  const target = await NvmeTarget.listen({ store, host: HOST, port: 0 });
  const nqn: Record<string, string> = {};
  for (const ref of refs) nqn[ref] = (await target.addSubsystem({ ref })).nqn;
  return { store, target, port: target.address().port, nqn };
}

async function unserve(s: Served): Promise<void> {
  await s.target.close(); // flushes what is buffered
  await s.store.close();
}

// ---------------------------------------------------------------- guest dd

interface GuestDd {
  writeMiBps: number;
  readMiBps: number;
  seconds: number;
}

function parseDd(output: string, what: string): GuestDd {
  const get = (k: string) => {
    const m = new RegExp(`^${k}=(\\d+(?:\\.\\d+)?)$`, 'm').exec(output);
    if (!m) throw new Error(`${what}: no ${k} in the guest's output:\n${output.slice(-3000)}`);
    return Number(m[1]);
  };
  return { writeMiBps: get('dd-write-MiBps'), readMiBps: get('dd-read-MiBps'), seconds: get('dd-write-seconds') + get('dd-read-seconds') };
}

async function guestDd(dir: string, fsync: boolean): Promise<{ ours: GuestDd; nvmet: GuestDd; ourRunSecs: number; nvmetRunSecs: number } | { skipped: string }> {
  if (envInt('BENCH_GUEST', 1) === 0) return { skipped: 'BENCH_GUEST=0' };
  const avail = guestAvailability();
  if (!avail.ok) return { skipped: avail.reason };
  const nvmetScript = path.join(REPO, 'hack', 'guest', 'nvmet-dd.sh');
  if (!fs.existsSync(nvmetScript)) return { skipped: `${nvmetScript} not found` };
  const timeoutMs = envInt('BENCH_GUEST_TIMEOUT_S', 400) * 1000;
  // A capsule of its own, the size of nvmet-dd.sh's backing file. The target listens on
  // 127.0.0.1, which the guest reaches as 10.0.2.2.
  {
    const s = Store.open(dir, { fsync });
    await s.create({ name: 'guest', size: 128 * MiB });
    await s.close();
  }
  const srv = await serve(dir, ['guest'], fsync);
  let oursDd: GuestDd;
  let ourRunSecs: number;
  try {
    console.log(`  guest: dd against this target (127.0.0.1:${srv.port} = 10.0.2.2:${srv.port} in the guest)`);
    // The same script and dd as the nvmet baseline, pointed at our target instead.
    const ours = `ADDR=10.0.2.2\nPORT=${srv.port}\nNQN=${srv.nqn.guest!}\nMB=${GUEST_MB}\n`;
    const r = await runGuest(ours + (await fs.promises.readFile(nvmetScript, 'utf8')), { timeoutMs });
    if (r.code !== 0) throw new Error(`guest dd against our target failed (exit ${r.code}):\n${r.output.slice(-3000)}`);
    oursDd = parseDd(r.output, 'our target');
    ourRunSecs = r.seconds;
  } finally {
    await unserve(srv);
  }
  console.log(`  guest: dd against the guest kernel's nvmet-tcp (hack/guest/nvmet-dd.sh)`);
  const n = await runGuest(await fs.promises.readFile(nvmetScript, 'utf8'), { timeoutMs });
  if (n.code !== 0) throw new Error(`hack/guest/nvmet-dd.sh failed (exit ${n.code}):\n${n.output.slice(-3000)}`);
  return { ours: oursDd, nvmet: parseDd(n.output, 'nvmet-dd.sh'), ourRunSecs, nvmetRunSecs: n.seconds };
}

// ---------------------------------------------------------------- main

const gbps = (r: SeqResult) => r.bytes / r.secs / 1e9;
const stats = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });

async function main(): Promise<void> {
  tuneHeapForServing(); // this process hosts the target: tuned as a serving process is (gateway/heap-tuning.ts)
  const sizeMB = sizeMiB();
  const bytes = sizeMB * MiB;
  const reps = Math.max(1, envInt('BENCH_REPS', 3));
  const qd = Math.max(1, envInt('BENCH_QD', 16));
  const randQd = Math.max(1, envInt('BENCH_RAND_QD', 32));
  const seconds = Math.max(1, envInt('BENCH_SECONDS', 5));
  const fsync = envInt('BENCH_NVME_FSYNC', 0) === 1;
  const withCrypto = envInt('BENCH_NVME_CRYPTO', 1) === 1;
  const withCold = envInt('BENCH_COLD', 1) === 1;
  const profileRead = envInt('BENCH_NVME_PROFILE', 0) === 1;
  const cachedRange = Math.min(bytes, CACHE_BYTES / 2, 32 * MiB);
  const dir = scratchDir('nvme');
  console.log(`nvme: ${sizeMB} MiB namespace, 128 KiB sequential at QD${qd}, 4 KiB random at QD${randQd} for ${seconds} s, ` +
    `${reps} reps, store fsync ${fsync}, segment cache ${CACHE_BYTES / MiB} MiB, data dir ${dir}`);

  const PLAIN = 'bench';
  const ENC = 'bench-enc';
  const WARM = 'bench-warm';
  const warmBytes = Math.min(bytes, 64 * MiB);
  {
    const s = Store.open(dir, { fsync });
    await s.create({ name: PLAIN, size: bytes }); // no policy: what a block volume gets by default
    await s.create({ name: WARM, size: warmBytes });
    if (withCrypto) await s.create({ name: ENC, size: bytes, policy: validatePolicy({ encryption: true }) });
    const pol = (await s.get(PLAIN)).policy;
    console.log(`  capsule ${PLAIN}: encryption ${pol.encryption.enabled ? 'on' : 'off'}, compression ${pol.compression}, segments ${pol.segmentSize / 1024} KiB`);
    await s.close();
  }
  const baseline = await startBaseline();
  const client = new Client();
  let srv = await serve(dir, withCrypto ? [PLAIN, WARM, ENC] : [PLAIN, WARM], fsync);
  const seqJob = (kind: 'tcp-seq' | 'nvme-seq', op: 'read' | 'write', extra: Partial<SeqJob> = {}): SeqJob => ({
    kind, op, host: HOST, port: kind === 'tcp-seq' ? baseline.port : srv.port, qd, ioBytes: IO, totalBytes: bytes, stampBase: 0, ...extra,
  });
  let pass = 0; // write passes so far: each writes unique data (its own stamps)
  const stampOf: Record<string, number> = {};
  const nvmeWrite = async (ref: string, totalBytes = bytes) => {
    const stampBase = ++pass * sizeMB;
    const r = await client.run<SeqResult>(seqJob('nvme-seq', 'write', { subnqn: srv.nqn[ref], stampBase, flush: true, totalBytes }));
    stampOf[ref] = stampBase;
    // Untimed: the kernel's writeback of what the pass left dirty must not run into the next measurement.
    await sync();
    return r;
  };
  const nvmeRead = (ref: string, extra: Partial<SeqJob> = {}) =>
    client.run<SeqResult>(seqJob('nvme-seq', 'read', { subnqn: srv.nqn[ref], stampBase: stampOf[ref], verify: 16, ...extra }));

  const m = {
    tcpRead: [] as SeqResult[], tcpWrite: [] as SeqResult[],
    write: [] as SeqResult[], read1: [] as SeqResult[], read2: [] as SeqResult[], cached: [] as SeqResult[],
    encWrite: [] as SeqResult[], encRead: [] as SeqResult[], disk: [] as SeqResult[],
  };
  const diskBlock = crypto.randomBytes(MiB);
  let fresh: SeqResult;
  let encFresh: SeqResult | undefined;
  let cold: SeqResult | { skipped: string };
  let randNvme: RandResult;
  let randTcp: RandResult;
  let guest: Awaited<ReturnType<typeof guestDd>>;
  try {
    // warm-up (untimed): both clients and the target's paths, on a capsule of its own
    await client.run(seqJob('tcp-seq', 'read', { totalBytes: warmBytes }));
    await client.run(seqJob('tcp-seq', 'write', { totalBytes: warmBytes }));
    for (let i = 0; i < 2; i++) await nvmeWrite(WARM, warmBytes);
    await nvmeRead(WARM, { totalBytes: warmBytes });

    // The first write onto the unwritten (sparse) namespace; every later write pass overwrites.
    fresh = await nvmeWrite(PLAIN);
    if (withCrypto) encFresh = await nvmeWrite(ENC);
    console.log(`  first write pass (unwritten namespace): ${round(gbps(fresh), 3)} GB/s` + (encFresh ? `, encrypted ${round(gbps(encFresh), 3)}` : ''));

    for (let rep = 0; rep < reps; rep++) {
      const t0 = now();
      m.tcpWrite.push(await client.run<SeqResult>(seqJob('tcp-seq', 'write')));
      m.disk.push({ bytes, secs: diskBound(sizeMB, diskBlock) });
      await sync();
      m.write.push(await nvmeWrite(PLAIN));
      m.tcpRead.push(await client.run<SeqResult>(seqJob('tcp-seq', 'read')));
      m.read1.push(await nvmeRead(PLAIN));
      m.read2.push(await nvmeRead(PLAIN));
      m.cached.push(await nvmeRead(PLAIN, { rangeBytes: cachedRange }));
      if (withCrypto) {
        m.encWrite.push(await nvmeWrite(ENC));
        m.encRead.push(await nvmeRead(ENC));
      }
      const g = (xs: SeqResult[]) => round(gbps(xs[rep]!), 3);
      console.log(`  rep ${rep + 1}/${reps} (${round((now() - t0) / 1000, 1)} s): tcp write ${g(m.tcpWrite)} GB/s, disk bound ${g(m.disk)}, nvme write+flush ${g(m.write)} ` +
        `(flush ${round(m.write[rep]!.flushSecs! * 1000)} ms); tcp read ${g(m.tcpRead)}, nvme read ${g(m.read1)} / ${g(m.read2)}, cached ${g(m.cached)}` +
        (withCrypto ? `; encrypted write ${g(m.encWrite)}, read ${g(m.encRead)}` : ''));
    }

    if (profileRead) {
      // not part of the figures: one more warm read pass under the main thread's profiler
      const p = new Profiler();
      await p.start();
      const c0 = process.cpuUsage();
      const r = await nvmeRead(PLAIN);
      fs.mkdirSync(OUT_DIR, { recursive: true });
      const s = summarize(await p.stop(path.join(OUT_DIR, 'nvme-read.cpuprofile')));
      const cpu = process.cpuUsage(c0);
      console.log(`  profile read: ${round(gbps(r), 3)} GB/s, main thread busy ${round(s.busyMs / 1000, 2)} s of ${round(s.totalMs / 1000, 2)},`
        + ` process CPU ${round((cpu.user + cpu.system) / 1e6, 2)} s -> .bench-out/nvme-read.cpuprofile`);
      for (const c of s.categories.slice(0, 8)) console.log(`    ${String(c.pct).padStart(5)} %  ${c.category}`);
      for (const x of s.top.slice(0, 12)) console.log(`    ${String(x.pct).padStart(5)} %  ${x.fn}`);
    }

    if (!withCold) cold = { skipped: 'BENCH_COLD=0' };
    else {
      await unserve(srv);
      const dropped = await syncAndDrop();
      srv = await serve(dir, [PLAIN], fsync);
      if (!dropped.ok) cold = { skipped: `drop_caches: ${dropped.reason}` };
      else {
        cold = await nvmeRead(PLAIN);
        console.log(`  cold read (fresh store, page cache dropped): ${round(gbps(cold), 3)} GB/s`);
      }
    }

    // random 4 KiB: read the range once (fills the segment cache), then QD32 for `seconds`
    await nvmeRead(PLAIN, { totalBytes: cachedRange, verify: 0 });
    const rj = (kind: 'tcp-rand' | 'nvme-rand', seed: number): RandJob => ({
      kind, host: HOST, port: kind === 'tcp-rand' ? baseline.port : srv.port, subnqn: srv.nqn[PLAIN], qd: randQd, ioBytes: RAND_IO, rangeBytes: cachedRange, seconds, seed,
    });
    await client.run<RandResult>({ ...rj('nvme-rand', 99), seconds: 1 }); // warm-up
    randTcp = await client.run<RandResult>(rj('tcp-rand', 1));
    randNvme = await client.run<RandResult>(rj('nvme-rand', 2));
    console.log(`  4 KiB random QD${randQd}: nvme ${round(randNvme.ios / randNvme.secs, 0)} IOPS, tcp ${round(randTcp.ios / randTcp.secs, 0)}`);
    await unserve(srv);
    await baseline.close();
    client.close();

    guest = await guestDd(dir, fsync);
  } finally {
    client.close();
    rmrf(dir);
  }

  // ------------------------------------------------------------ report
  const ratios = (num: SeqResult[], den: SeqResult[]) => num.map((x, i) => gbps(x) / gbps(den[i]!));
  const rw = stats(ratios(m.write, m.tcpWrite));
  const rwd = stats(ratios(m.write, m.disk));
  const rr = stats(ratios(m.read2, m.tcpRead));
  const rr1 = stats(ratios(m.read1, m.tcpRead));
  const rc = stats(ratios(m.cached, m.tcpRead));
  const g = (xs: SeqResult[]) => stats(xs.map(gbps));
  const iops = randNvme.ios / randNvme.secs;
  const r2 = (x: number) => round(x, 2);
  const fmt = (s: { median: number; min: number; max: number }) => [r2(s.median), `${r2(s.min)}..${r2(s.max)}`] as const;
  const verdict = (ok: boolean) => `${ok ? 'MET' : 'MISSED'} (>= ${TARGET_RATIO})`;
  const one = (r: SeqResult, vs: number) => [r2(gbps(r)), '-', r2(gbps(r) / vs), '-'] as const;
  const tcpW = g(m.tcpWrite).median;
  const tcpR = g(m.tcpRead).median;
  const rows: (string | number)[][] = [
    ['baseline: raw TCP write 128 KiB', ...fmt(g(m.tcpWrite)), '', '', ''],
    ['NVMe write + Flush, first pass (unwritten namespace)', ...one(fresh, tcpW), 'info'],
    ['NVMe write + Flush (overwrite)', ...fmt(g(m.write)), ...fmt(rw), verdict(rw.median >= TARGET_RATIO)],
    ['bound: 1 MiB segment files written as the store does, no fsync', ...fmt(g(m.disk)), ...fmt(stats(ratios(m.disk, m.tcpWrite))), 'info'],
    ['NVMe write (overwrite) / that disk bound', '', '', ...fmt(rwd), 'info'],
    ['baseline: raw TCP read 128 KiB', ...fmt(g(m.tcpRead)), '', '', ''],
    ['NVMe read, pass 1 after the write', ...fmt(g(m.read1)), ...fmt(rr1), 'info'],
    [`NVMe read, pass 2 (warm, ${CACHE_BYTES / MiB} MiB segment cache)`, ...fmt(g(m.read2)), ...fmt(rr), verdict(rr.median >= TARGET_RATIO)],
    [`NVMe read, ${cachedRange / MiB} MiB range in the segment cache`, ...fmt(g(m.cached)), ...fmt(rc), verdict(rc.median >= TARGET_RATIO)],
  ];
  if ('bytes' in cold) rows.push(['NVMe read, cold (fresh store, page cache dropped)', ...one(cold, tcpR), 'info']);
  else rows.push(['NVMe read, cold', '-', '-', '-', '-', `skipped: ${cold.skipped}`]);
  if (withCrypto) {
    rows.push(['encrypted capsule: NVMe write + Flush, first pass', ...one(encFresh!, tcpW), 'info']);
    rows.push(['encrypted capsule: NVMe write + Flush (overwrite)', ...fmt(g(m.encWrite)), ...fmt(stats(ratios(m.encWrite, m.tcpWrite))), 'info']);
    rows.push(['encrypted capsule: NVMe read after the write', ...fmt(g(m.encRead)), ...fmt(stats(ratios(m.encRead, m.tcpRead))), 'info']);
  }
  table(`NVMe/TCP on loopback, ${sizeMB} MiB namespace (default policy: no encryption, no compression), 128 KiB at QD${qd}, ` +
    `${reps} reps: median, min..max (GB/s = 1e9 B/s; ratio = NVMe / raw TCP within a rep)`,
    ['measurement', 'GB/s', 'GB/s range', 'ratio', 'ratio range', 'target'], rows);
  // Where the time goes: CPU per GiB moved, on each side (this VM has two cores for both ends).
  const perGiB = (xs: SeqResult[], side: 'serverCpuSecs' | 'clientCpuSecs') => {
    const v = xs.map((x) => (x[side] ?? NaN) / (x.bytes / 2 ** 30)).filter((x) => Number.isFinite(x));
    return v.length ? r2(median(v)) : '-';
  };
  const cpuRow = (label: string, xs: SeqResult[]) => [label, perGiB(xs, 'serverCpuSecs'), perGiB(xs, 'clientCpuSecs')];
  table('CPU seconds per GiB moved (median; server = this process, all threads; client = the child)',
    ['measurement', 'server', 'client'],
    [
      cpuRow('raw TCP write', m.tcpWrite), cpuRow('NVMe write + Flush (overwrite)', m.write),
      cpuRow('raw TCP read', m.tcpRead), cpuRow('NVMe read, pass 2', m.read2), cpuRow('NVMe read, in the segment cache', m.cached),
    ]);
  table(`4 KiB random reads, QD${randQd}, uniform over ${cachedRange / MiB} MiB (segment-cache hits), ${seconds} s`,
    ['client -> server', 'IOPS', 'p50 us', 'p99 us', 'max us', 'target'],
    [
      ['baseline: raw TCP, 4 KiB responses', round(randTcp.ios / randTcp.secs, 0), round(randTcp.p50Us), round(randTcp.p99Us), round(randTcp.maxUs), 'info'],
      ['NVMe Read 4 KiB', round(iops, 0), round(randNvme.p50Us), round(randNvme.p99Us), round(randNvme.maxUs), `${iops >= TARGET_IOPS ? 'MET' : 'MISSED'} (>= ${TARGET_IOPS / 1000}k)`],
    ]);
  if ('skipped' in guest) console.log(`\nguest dd: skipped (${guest.skipped})`);
  else {
    table(`guest kernel dd bs=1M count=${GUEST_MB}, direct I/O, under QEMU emulation (small absolute numbers)`,
      ['target', 'write MiB/s', 'read MiB/s'],
      [
        ['Space NVMe/TCP target (host loopback via QEMU user net)', guest.ours.writeMiBps, guest.ours.readMiBps],
        ['guest kernel nvmet-tcp (guest loopback, tmpfs)', guest.nvmet.writeMiBps, guest.nvmet.readMiBps],
        ['ratio Space / nvmet', round(guest.ours.writeMiBps / guest.nvmet.writeMiBps, 3), round(guest.ours.readMiBps / guest.nvmet.readMiBps, 3)],
      ]);
  }
  const all = (xs: SeqResult[]) => xs.map((x) => round(gbps(x), 3));
  const summary = {
    tcpWriteGBps: round(tcpW, 3),
    freshWriteGBps: round(gbps(fresh), 3),
    writeGBps: round(g(m.write).median, 3),
    writeRatio: round(rw.median, 3),
    writeRatioMin: round(rw.min, 3),
    writeRatioMax: round(rw.max, 3),
    diskBoundGBps: round(g(m.disk).median, 3),
    writeVsDiskBound: round(rwd.median, 3),
    tcpReadGBps: round(tcpR, 3),
    readGBps: round(g(m.read2).median, 3),
    readRatio: round(rr.median, 3),
    readRatioMin: round(rr.min, 3),
    readRatioMax: round(rr.max, 3),
    cachedReadGBps: round(g(m.cached).median, 3),
    cachedReadRatio: round(rc.median, 3),
    cachedReadRatioMin: round(rc.min, 3),
    cachedReadRatioMax: round(rc.max, 3),
    coldReadGBps: 'bytes' in cold ? round(gbps(cold), 3) : null,
    encWriteGBps: withCrypto ? round(g(m.encWrite).median, 3) : null,
    encReadGBps: withCrypto ? round(g(m.encRead).median, 3) : null,
    randIops: round(iops, 0),
    randP50Us: round(randNvme.p50Us),
    randP99Us: round(randNvme.p99Us),
    randTcpIops: round(randTcp.ios / randTcp.secs, 0),
    qd,
    randQd,
    guestOurWriteMiBps: 'skipped' in guest ? null : guest.ours.writeMiBps,
    guestOurReadMiBps: 'skipped' in guest ? null : guest.ours.readMiBps,
    guestNvmetWriteMiBps: 'skipped' in guest ? null : guest.nvmet.writeMiBps,
    guestNvmetReadMiBps: 'skipped' in guest ? null : guest.nvmet.readMiBps,
    guestSkipped: 'skipped' in guest ? guest.skipped : null,
    writeMeetsTarget: rw.median >= TARGET_RATIO,
    readMeetsTarget: rr.median >= TARGET_RATIO,
    cachedReadMeetsTarget: rc.median >= TARGET_RATIO,
    randMeetsTarget: iops >= TARGET_IOPS,
  };
  console.log(`\n${JSON.stringify({ nvme: summary })}`);
  writeResult('nvme', {
    meta: meta('nvme'),
    config: {
      namespaceMiB: sizeMB, ioBytes: IO, qd, randQd, randIoBytes: RAND_IO, cachedRangeMiB: cachedRange / MiB, seconds, reps, fsync,
      policy: { encryption: false, compression: 'none', segmentBytes: 1 << 20 }, cacheBytes: CACHE_BYTES,
      design: 'servers (raw TCP / NvmeTarget) in the bench process, clients (raw TCP / bench initiator) in one forked child; one TCP connection each',
    },
    gbps: {
      tcpWrite: all(m.tcpWrite), diskBound: all(m.disk), freshWrite: round(gbps(fresh), 3), write: all(m.write), tcpRead: all(m.tcpRead),
      read1: all(m.read1), read2: all(m.read2), cached: all(m.cached),
      encFreshWrite: encFresh ? round(gbps(encFresh), 3) : null, encWrite: all(m.encWrite), encRead: all(m.encRead),
      cold: 'bytes' in cold ? round(gbps(cold), 3) : null,
    },
    flushMs: m.write.map((x) => round(x.flushSecs! * 1000)),
    random: { nvme: randNvme, tcp: randTcp },
    guest,
    summary,
  });
}

main().then(() => exitWhenDone('nvme'), (e) => {
  console.error(e);
  process.exit(1);
});
