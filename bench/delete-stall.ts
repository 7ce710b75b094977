/**
 * How long a large delete holds the event loop: every view a gateway serves (NFS, FUSE,
 * NVMe/TCP, gRPC) waits while it is held.
 *
 * A file of BENCH_SIZE_MB MiB (default 1024; 1 MiB segments, unencrypted) is put, then removed.
 *   background  the store frees its segments by itself (capsule/reclaim.ts): rows dropped and
 *               files renamed out of segments/ in batches of 256 on the event loop, the files
 *               deleted by the thread pool. Measured: the longest event-loop delay
 *               (perf_hooks.monitorEventLoopDelay, 1 ms resolution) from the unlink until the
 *               last segment file is deleted, and that time.
 *   baseline    the same delete, its segments freed by `store.reclaim()`, which unlinks on the
 *               event loop (as every batch did before the background unlinks): the time one
 *               batch of 256 held the loop = the call's duration / batches.
 * Each round does both, alternating which goes first.
 *
 * Env: BENCH_SIZE_MB (1024), BENCH_REPS (3). Run: npx tsc -p . && node dist/bench/delete-stall.js
 */
import fs from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { segmentFiles } from '../test/helpers/tmp.js';
import { UniqueBlocks, envInt, exitWhenDone, median, meta, now, rmrf, round, scratchDir, sizeMiB, table, writeResult } from './common.js';

const NAME = 'delete-stall';
const BATCH = 256; // reclaim.ts

/** Segment files still taking space: in segments/, or taken out into tmp/ and not yet deleted. */
function segmentFileCount(dir: string): number {
  return segmentFiles(dir).length + fs.readdirSync(path.join(dir, 'tmp')).length;
}

async function main(): Promise<void> {
  const mib = sizeMiB();
  const reps = Math.max(1, envInt('BENCH_REPS', 3));
  const dir = scratchDir('space-bench-delete-');
  const store = Store.open(dir, { cacheBytes: 64 << 20 });
  await store.create({ id: 'c', policy: validatePolicy({ encryption: false, compression: 'none' }) });
  const background = { maxDelayMs: [] as number[], freeMs: [] as number[] };
  const baseline = { perBatchMs: [] as number[] };
  let seed = 1;
  const putFile = async () => {
    await store.put('c', 'f', new UniqueBlocks(seed++).stream(mib));
    if (segmentFileCount(dir) < mib) throw new Error('the put left fewer segment files than MiB written');
  };
  const runBackground = async () => {
    await putFile();
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    const t0 = now();
    await store.unlink('c', 'f');
    // Polled every 20 ms: a readdir of the 256 fan-out directories costs ~2 ms of loop time itself.
    while (segmentFileCount(dir) > 0) await new Promise((r) => setTimeout(r, 20));
    const t = now() - t0;
    h.disable();
    background.maxDelayMs.push(h.max / 1e6);
    background.freeMs.push(t);
    console.log(`  background: ${mib} segments freed in ${round(t, 0)} ms, longest event-loop delay ${round(h.max / 1e6, 1)} ms`);
  };
  const runBaseline = async () => {
    await putFile();
    await store.unlink('c', 'f'); // the background batch starts only in a later turn
    const t0 = now();
    const r = store.reclaim();
    const t = now() - t0;
    if (segmentFileCount(dir) !== 0 || r.segmentsRemoved === 0) throw new Error('reclaim() left segment files behind');
    const perBatch = t / Math.ceil(r.segmentsRemoved / BATCH);
    baseline.perBatchMs.push(perBatch);
    console.log(`  baseline: reclaim() unlinked ${r.segmentsRemoved} segments on the event loop in ${round(t, 0)} ms (${round(perBatch, 1)} ms per batch of ${BATCH})`);
  };
  for (let r = 0; r < reps; r++) {
    if (r % 2 === 0) {
      await runBackground();
      await runBaseline();
    } else {
      await runBaseline();
      await runBackground();
    }
  }
  await store.close();
  rmrf(dir);
  const med = (xs: number[]) => round(median(xs), 1);
  table(`delete of a ${mib} MiB file (1 MiB segments): event loop held, ${reps} rounds, median (min..max)`, ['measurement', 'ms'], [
    ['background reclaim: longest event-loop delay', `${med(background.maxDelayMs)} (${round(Math.min(...background.maxDelayMs), 1)}..${round(Math.max(...background.maxDelayMs), 1)})`],
    ['background reclaim: until the last file is gone', `${med(background.freeMs)}`],
    [`baseline: one batch of ${BATCH} unlinked on the event loop`, `${med(baseline.perBatchMs)} (${round(Math.min(...baseline.perBatchMs), 1)}..${round(Math.max(...baseline.perBatchMs), 1)})`],
  ]);
  const summary = {
    sizeMiB: mib,
    backgroundMaxDelayMs: med(background.maxDelayMs),
    backgroundFreeMs: med(background.freeMs),
    baselinePerBatchMs: med(baseline.perBatchMs),
  };
  console.log(`json: ${JSON.stringify(summary)}`);
  writeResult(NAME, { meta: meta(NAME), reps, background, baseline, summary });
}

main().then(() => exitWhenDone(NAME), (e) => {
  console.error(e);
  process.exit(1);
});
