/**
 * Run every benchmark in sequence, each in its own node process (separate heaps; the FUSE
 * benchmark needs its event loop free), then print one combined summary from their
 * .bench-out/<name>.json results.
 *
 *   npm run bench                                   (builds first)
 *   BENCH_SIZE_MB=64 BENCH_SCALE_N=100 node dist/bench/run-all.js     (smoke run)
 *   BENCH_ONLY=put-get,rss node dist/bench/run-all.js
 *
 * All BENCH_* variables are passed through (see each benchmark's header). A benchmark still
 * running after BENCH_TIMEOUT_S seconds (default 1200) is stopped with SIGTERM (the FUSE
 * benchmark unmounts and cleans up on it). Exit status is 1 when a benchmark failed to run;
 * missed targets are reported, not failures.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DIST_BENCH, OUT_DIR, envInt, meta, round, sizeMiB, table, writeResult } from './common.js';

const ALL = ['put-get', 'rss', 'random-read', 'delete-stall', 'fuse', 'operator-scale', 'csi', 'nvme', 'nfs'] as const;
type Name = (typeof ALL)[number];

function runOne(name: Name): Promise<{ code: number | null; secs: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    console.log(`\n######## ${name} ########`);
    const c = spawn(process.execPath, [path.join(DIST_BENCH, `${name}.js`)], { stdio: 'inherit', env: process.env });
    const limit = envInt('BENCH_TIMEOUT_S', 1200);
    const timer = setTimeout(() => {
      console.error(`${name}: still running after ${limit} s; sending SIGTERM`);
      c.kill('SIGTERM');
      setTimeout(() => c.kill('SIGKILL'), 60_000).unref();
    }, limit * 1000);
    c.on('error', (e) => {
      clearTimeout(timer);
      console.error(`${name}: ${e.message}`);
      resolve({ code: -1, secs: (Date.now() - t0) / 1000 });
    });
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, secs: (Date.now() - t0) / 1000 });
    });
  });
}

function load(name: Name): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(OUT_DIR, `${name}.json`), 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
}

type Row = [string, string, string, string];

function summarize(name: Name, r: Record<string, unknown>): Row[] {
  const s = r.summary as Record<string, number | boolean | string | null>;
  const v = (b: unknown) => (b === true ? 'MET' : b === false ? 'MISSED' : 'info');
  switch (name) {
    case 'put-get':
      return [
        ['put-get', 'put, fsync per segment (default)', `${s.putFsyncMiBps} MiB/s (bound ${s.boundPutMiBps}), ratio ${s.putFsyncRatio}`, 'info'],
        ['put-get', 'put, fsync:false', `${s.putNoFsyncMiBps} MiB/s (bound ${s.boundPutMiBps}), ratio ${s.putNoFsyncRatio}`, `${v(s.putMeetsTarget)} (>= 0.7)`],
        ['put-get', 'get (readStream)', `${s.getMiBps} MiB/s (bound ${s.boundGetMiBps}), ratio ${s.getRatio}`, `${v(s.getMeetsTarget)} (>= 0.7)`],
        ['put-get', 'get, cold page cache', s.getColdMiBps === null ? 'n/a' : `${s.getColdMiBps} MiB/s`, 'info'],
      ];
    case 'rss':
      return [
        ['rss', 'node baseline (open+close)', `${s.idlePeakMiB} MiB`, 'info'],
        ['rss', 'peak RSS, put', `${s.putPeakMiB} MiB`, `${v(s.putMeetsTarget)} (< 256)`],
        ['rss', 'peak RSS, get', `${s.getPeakMiB} MiB`, `${v(s.getMeetsTarget)} (< 256)`],
      ];
    case 'random-read':
      return [
        ['random-read', '4 KiB, working set in cache, QD1', `${s.cachedQd1Iops} IOPS`, 'info'],
        ['random-read', `4 KiB, working set in cache, QD${s.qdHigh}`, `${s.cachedQdHighIops} IOPS`, 'info'],
        ['random-read', '4 KiB, uniform over file, QD1', `${s.uniformQd1Iops} IOPS`, 'info'],
        ['random-read', `4 KiB, uniform over file, QD${s.qdHigh}`, `${s.uniformQdHighIops} IOPS`, 'info'],
      ];
    case 'fuse': {
      const rows: Row[] = [
        ['fuse', 'plain disk write / read', `${s.plainWriteMiBps} / ${s.plainReadMiBps} MiB/s`, 'info'],
        ['fuse', 'passthrough FUSE write / read', `${s.passthroughWriteMiBps} / ${s.passthroughReadMiBps} MiB/s`, 'info'],
        ['fuse', 'capsule FUSE write', `${s.capsuleWriteMiBps} MiB/s: ${s.capsuleWriteVsPassthrough} x passthrough, ${s.capsuleWriteVsPlain} x plain`, `${v(s.writeMeetsTarget)} (>= 0.8 pt)`],
        ['fuse', 'capsule FUSE read (cold)', `${s.capsuleReadMiBps} MiB/s: ${s.capsuleReadVsPassthrough} x passthrough, ${s.capsuleReadVsPlain} x plain`, `${v(s.readMeetsTarget)} (>= 0.8 pt)`],
      ];
      if (s.capsuleNoFsyncWriteMiBps !== undefined) {
        rows.push(['fuse', 'capsule FUSE, store fsync:false, w / r', `${s.capsuleNoFsyncWriteMiBps} / ${s.capsuleNoFsyncReadMiBps} MiB/s (${s.capsuleNoFsyncWriteVsPassthrough} / ${s.capsuleNoFsyncReadVsPassthrough} x pt)`, 'info']);
      }
      return rows;
    }
    case 'operator-scale': {
      const rows: Row[] = [
        ['operator-scale', `${s.n} capsules + ${s.n} csi views -> all Ready`, `${s.allReadySecs} s (${s.readyObjPerSec} obj/s); quiescent ${s.quiescentSecs} s`, 'info'],
        ['operator-scale', 'reconcile p50 / p99, capsule', `${s.capsuleP50Ms} / ${s.capsuleP99Ms} ms`, 'info'],
        ['operator-scale', 'reconcile p50 / p99, capsuleview', `${s.viewP50Ms} / ${s.viewP99Ms} ms`, `${v(s.reconcileMeetsTarget)} (p99 < 100 ms, both)`],
        ['operator-scale', 'operator peak / end RSS', `${s.peakRssMiB} / ${s.endRssMiB} MiB`, `${v(s.rssMeetsTarget)} (< 300)`],
        ['operator-scale', 'idle CPU, store writes', `${s.idleCpuPct} % of a core, ${s.idleWrites} writes in ${s.idleSecs} s`, `${v(s.idleMeetsTarget)} (< 1 %, 0)`],
      ];
      const proj = (p: string) => s[`${p}P50Ms`] === null ? 'n/a' : `${s[`${p}P50Ms`]} / ${s[`${p}P99Ms`]} / ${s[`${p}MaxMs`]} ms`;
      rows.push(['operator-scale', 'view apply -> Ready p50/p99/max, fuse', proj('fuse'), 'info']);
      rows.push(['operator-scale', 'view apply -> Ready p50/p99/max, csi', proj('csi'), `${v(s.projectionMeetsTarget)} (p99 < 50 ms, both)`]);
      return rows;
    }
    case 'csi':
      return [
        ['csi', `${s.n} fuse volumes: create -> stage -> publish -> usable, p50/p99/max`, `${s.chainP50Ms} / ${s.chainP99Ms} / ${s.chainMaxMs} ms`, `${v(s.chainMeetsTarget)} (p99 < 1000 ms)`],
        ['csi', 'p99 per step: create / stage / publish / usable', `${s.createP99Ms} / ${s.stageP99Ms} / ${s.publishP99Ms} / ${s.usableP99Ms} ms`, 'info'],
        ['csi', `${s.concurrent} concurrent CreateVolume, distinct / 10 names`, `${s.distinctWallMs} / ${s.sameWallMs} ms; ids ${s.distinctIds} / ${s.sameIds}; errors ${s.distinctErrors} / ${s.sameErrors}; ABORTED retries ${s.distinctRetries} / ${s.sameRetries}`, `${v(s.concurrencyMeetsTarget)} (0 errors, no duplicate ids)`],
      ];
    case 'nvme':
      return [
        ['nvme', `seq write 128 KiB QD${s.qd} + Flush vs raw TCP`, `${s.writeGBps} / ${s.tcpWriteGBps} GB/s, ratio ${s.writeRatio} (${s.writeRatioMin}..${s.writeRatioMax}); disk bound ${s.diskBoundGBps}`, `${v(s.writeMeetsTarget)} (>= 0.6)`],
        ['nvme', `seq read 128 KiB QD${s.qd} (warm) vs raw TCP`, `${s.readGBps} / ${s.tcpReadGBps} GB/s, ratio ${s.readRatio} (${s.readRatioMin}..${s.readRatioMax})`, `${v(s.readMeetsTarget)} (>= 0.6)`],
        ['nvme', 'seq read, range in the segment cache', `${s.cachedReadGBps} GB/s, ratio ${s.cachedReadRatio} (${s.cachedReadRatioMin}..${s.cachedReadRatioMax})`, `${v(s.cachedReadMeetsTarget)} (>= 0.6)`],
        ['nvme', `4 KiB random read QD${s.randQd}`, `${s.randIops} IOPS, p50 ${s.randP50Us} us, p99 ${s.randP99Us} us (raw TCP ${s.randTcpIops})`, `${v(s.randMeetsTarget)} (>= 40k)`],
        ['nvme', 'guest dd write / read: Space vs guest nvmet', s.guestSkipped ? `skipped: ${s.guestSkipped}` : `${s.guestOurWriteMiBps} / ${s.guestOurReadMiBps} vs ${s.guestNvmetWriteMiBps} / ${s.guestNvmetReadMiBps} MiB/s`, 'info'],
      ];
    case 'delete-stall':
      return [['delete-stall', `delete of ${s.sizeMiB} MiB: longest event-loop delay`, `${s.backgroundMaxDelayMs} ms (one batch of 256 unlinked on the loop: ${s.baselinePerBatchMs} ms)`, 'info']];
    case 'nfs':
      if (s.skipped) return [['nfs', 'NFSv3 vs nfs-ganesha', `skipped: ${s.skipped}`, 'info']];
      return [
        ['nfs', 'nfs-cp write vs ganesha (incl. COMMIT)', `${s.oursWriteMiBps} / ${s.ganeshaWriteMiBps} MiB/s, ratio ${s.writeRatio} (${s.writeRatioMin}..${s.writeRatioMax})`, `${v(s.writeMeetsTarget)} (>= 0.8)`],
        ['nfs', 'nfs-cp read vs ganesha, cold', `${s.oursReadColdMiBps} / ${s.ganeshaReadColdMiBps} MiB/s, ratio ${s.readColdRatio} (${s.readColdRatioMin}..${s.readColdRatioMax})`, `${v(s.readColdMeetsTarget)} (>= 1.0)`],
        ['nfs', 'nfs-cp read vs ganesha, warm', `${s.oursReadWarmMiBps} / ${s.ganeshaReadWarmMiBps} MiB/s, ratio ${s.readWarmRatio} (${s.readWarmRatioMin}..${s.readWarmRatioMax})`, `${v(s.readWarmMeetsTarget)} (>= 1.0)`],
        ['nfs', `metadata ${s.metaFiles} x create+getattr+remove, QD${s.metaQd}`, `${s.oursMetaFilesPerSec} / ${s.ganeshaMetaFilesPerSec} files/s, ratio ${s.metaRatio}`, 'info'],
      ];
  }
}

async function main(): Promise<void> {
  const only = process.env.BENCH_ONLY?.split(',').map((x) => x.trim()).filter(Boolean);
  for (const n of only ?? []) if (!(ALL as readonly string[]).includes(n)) throw new Error(`BENCH_ONLY: unknown benchmark ${n} (known: ${ALL.join(', ')})`);
  const names = ALL.filter((n) => !only || only.includes(n));
  console.log(`run-all: ${names.join(', ')} at ${sizeMiB()} MiB (BENCH_SIZE_MB)`);
  const runs: Record<string, { code: number | null; secs: number }> = {};
  const started = Date.now();
  for (const n of names) {
    // a stale result must not pass for this run's
    fs.rmSync(path.join(OUT_DIR, `${n}.json`), { force: true });
    runs[n] = await runOne(n);
  }
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  let failed = 0;
  for (const n of names) {
    const r = runs[n]!.code === 0 ? load(n) : null;
    if (!r) {
      failed++;
      rows.push([n, 'FAILED', `exit ${runs[n]!.code} after ${round(runs[n]!.secs)} s`, '-']);
      continue;
    }
    results[n] = r.summary;
    rows.push(...summarize(n, r));
  }
  table(`summary (${sizeMiB()} MiB; ${round((Date.now() - started) / 1000)} s total)`, ['benchmark', 'measurement', 'result', 'target'], rows);
  writeResult('summary', { meta: meta('summary'), runs, results });
  if (failed) process.exit(1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
