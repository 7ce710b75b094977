/**
 * 4 KiB random reads through the store API (Store.read), one process (one JS thread).
 *
 *   working set in cache: 4 KiB-aligned reads uniform over the first W MiB of the file, W = half
 *                         the segment cache (default cache 64 MiB -> W = 32 MiB), after one warm-up
 *                         pass: every read is a cache hit (no decrypt)
 *   uniform:              4 KiB-aligned reads uniform over the whole BENCH_SIZE_MB file: with the
 *                         default 64 MiB cache and 1 MiB segments, most reads miss and each miss
 *                         reads and decrypts a whole 1 MiB segment
 *
 * Each at queue depth 1 (await each read) and 32 (32 concurrent readers), for BENCH_SECONDS
 * seconds (default 5). Segment files are in the OS page cache (one untimed sequential read of the
 * file first: the store writes segment files past the page cache, with O_DIRECT): this measures
 * the store, not the disk. Correctness is checked on a separate sample afterwards.
 *
 * Env: BENCH_SIZE_MB (default 1024), BENCH_SECONDS (default 5), BENCH_QD (default 32),
 * BENCH_SEGMENT_KIB (capsule segment size, default 1024 = the policy default; try 64 to see what
 * smaller segments do to miss cost).
 * Run: npx tsc -p . && node dist/bench/random-read.js
 */
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { MiB, UniqueBlocks, envInt, meta, now, rmrf, rng, round, scratchDir, sizeMiB, table, writeResult, exitWhenDone } from './common.js';

const REF = 'bench';
const FILE = 'content';
const IO = 4096;
const CACHE_BYTES = 64 * MiB; // the store's default; passed explicitly so the bench states it

interface CaseResult {
  name: string;
  workingSetMiB: number;
  qd: number;
  reads: number;
  secs: number;
  iops: number;
  mibps: number;
  latencyUs: { p50: number; p99: number; max: number };
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

async function runCase(store: Store, name: string, workingSetMiB: number, qd: number, seconds: number, seed: number): Promise<CaseResult> {
  const pages = (workingSetMiB * MiB) / IO;
  const lat: number[] = [];
  let reads = 0;
  const deadline = now() + seconds * 1000;
  const worker = async (w: number) => {
    const rand = rng(seed * 1000 + w + 1);
    while (now() < deadline) {
      const off = Math.floor(rand() * pages) * IO;
      const t0 = now();
      const b = await store.read(REF, FILE, off, IO);
      lat.push(now() - t0);
      if (b.length !== IO) throw new Error(`short read at ${off}: ${b.length}`);
      reads++;
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: qd }, (_, w) => worker(w)));
  const secs = (now() - t0) / 1000;
  const sorted = Float64Array.from(lat).sort();
  return {
    name, workingSetMiB, qd, reads, secs,
    iops: reads / secs,
    mibps: (reads * IO) / MiB / secs,
    latencyUs: { p50: pct(sorted, 0.5) * 1000, p99: pct(sorted, 0.99) * 1000, max: (sorted[sorted.length - 1] ?? NaN) * 1000 },
  };
}

async function verify(store: Store, blocks: UniqueBlocks, count: number, samples = 200): Promise<number> {
  const rand = rng(4242);
  const blockCache = new Map<number, Buffer>();
  for (let i = 0; i < samples; i++) {
    const off = Math.floor(rand() * ((count * MiB) / IO)) * IO;
    const idx = Math.floor(off / MiB);
    let blk = blockCache.get(idx);
    if (!blk) {
      blk = blocks.block(idx);
      if (blockCache.size < 64) blockCache.set(idx, blk);
    }
    const want = blk.subarray(off - idx * MiB, off - idx * MiB + IO);
    const got = await store.read(REF, FILE, off, IO);
    if (!got.equals(want)) throw new Error(`4 KiB read at offset ${off} differs from what was put`);
  }
  return samples;
}

async function main(): Promise<void> {
  const count = sizeMiB();
  const seconds = envInt('BENCH_SECONDS', 5);
  const qdHigh = Math.max(2, envInt('BENCH_QD', 32));
  const segKiB = envInt('BENCH_SEGMENT_KIB', 1024);
  const workingSet = Math.max(1, Math.min(count, CACHE_BYTES / MiB / 2));
  const dir = scratchDir('randread');
  const blocks = new UniqueBlocks(13);
  console.log(`random-read: ${count} MiB file, ${segKiB} KiB segments, 4 KiB reads, ${seconds} s per case, data dir ${dir}`);
  const results: CaseResult[] = [];
  let verified = 0;
  try {
    {
      const s = Store.open(dir, { fsync: false });
      await s.create({ id: REF, policy: validatePolicy({ encryption: true, compression: 'none', segmentSize: segKiB * 1024 }) });
      const t0 = now();
      await s.put(REF, FILE, blocks.stream(count));
      console.log(`  setup: put ${count} MiB in ${round((now() - t0) / 1000, 2)} s`);
      for await (const chunk of s.readStream(REF, FILE)) void chunk; // segment files into the page cache
      await s.close();
    }
    const store = Store.open(dir, { cacheBytes: CACHE_BYTES });
    try {
      // warm the working set into the segment cache, then a short untimed warm-up of the read path
      for (let off = 0; off < workingSet * MiB; off += segKiB * 1024) await store.read(REF, FILE, off, IO);
      await runCase(store, 'warm-up', workingSet, 1, Math.min(1, seconds), 99);
      let seed = 1;
      for (const qd of [1, qdHigh]) {
        const r = await runCase(store, 'working set in cache', workingSet, qd, seconds, seed++);
        results.push(r);
        console.log(`  ${r.name} qd=${qd}: ${round(r.iops)} IOPS`);
      }
      for (const qd of [1, qdHigh]) {
        const r = await runCase(store, 'uniform over file', count, qd, seconds, seed++);
        results.push(r);
        console.log(`  ${r.name} qd=${qd}: ${round(r.iops)} IOPS`);
      }
      verified = await verify(store, blocks, count);
    } finally {
      await store.close();
    }
  } finally {
    rmrf(dir);
  }
  table(`4 KiB random reads via Store.read, ${count} MiB encrypted capsule, ${segKiB} KiB segments, segment cache ${CACHE_BYTES / MiB} MiB, ${seconds} s each`,
    ['case', 'working set MiB', 'QD', 'reads', 'IOPS', 'MiB/s', 'p50 us', 'p99 us'],
    results.map((r) => [r.name, r.workingSetMiB, r.qd, r.reads, round(r.iops, 0), round(r.mibps, 2), round(r.latencyUs.p50), round(r.latencyUs.p99)]));
  console.log(`verified ${verified} random 4 KiB reads against the source`);
  const by = (name: string, qd: number) => results.find((r) => r.name === name && r.qd === qd)!;
  writeResult('random-read', {
    meta: meta('random-read'),
    ioBytes: IO,
    segmentBytes: segKiB * 1024,
    cacheBytes: CACHE_BYTES,
    seconds,
    results,
    verifiedReads: verified,
    summary: {
      cachedQd1Iops: round(by('working set in cache', 1).iops, 0),
      cachedQdHighIops: round(by('working set in cache', qdHigh).iops, 0),
      uniformQd1Iops: round(by('uniform over file', 1).iops, 0),
      uniformQdHighIops: round(by('uniform over file', qdHigh).iops, 0),
      qdHigh,
    },
  });
}

main().then(() => exitWhenDone('random-read'), (e) => {
  console.error(e);
  process.exit(1);
});
