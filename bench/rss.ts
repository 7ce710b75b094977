/**
 * Peak resident memory of a put and a get of BENCH_SIZE_MB MiB (default 1 GiB), each in a fresh
 * process (dist/bench/rss-child.js), measured two ways: /usr/bin/time -v "Maximum resident set
 * size" (when installed; Debian package `time`) and VmHWM read by the child at its end.
 * An `idle` child (open + close the store) gives node's own baseline. Target: < 256 MiB.
 *
 * Env: BENCH_SIZE_MB (default 1024). Run: npx tsc -p . && node dist/bench/rss.js
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DIST_BENCH, meta, rmrf, round, scratchDir, sizeMiB, table, writeResult, exitWhenDone } from './common.js';

const TARGET_MIB = 256;
const TIME = '/usr/bin/time';

interface ChildOut {
  mode: string;
  secs: number;
  mibps: number | null;
  vmHWMKiB: number | null;
  vmRSSKiB: number | null;
  heapUsedMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
}

interface Measured extends ChildOut {
  timeMaxRssKiB: number | null;
  peakMiB: number;
}

function runChild(mode: string, dir: string): Promise<Measured> {
  const haveTime = fs.existsSync(TIME);
  const script = path.join(DIST_BENCH, 'rss-child.js');
  const [cmd, args] = haveTime ? [TIME, ['-v', process.execPath, script, mode, dir]] : [process.execPath, [script, mode, dir]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`rss-child ${mode} exited ${code}:\n${err}`));
      const line = out.trim().split('\n').pop() ?? '';
      const r = JSON.parse(line) as ChildOut;
      const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(err);
      const timeMaxRssKiB = m ? Number(m[1]) : null;
      const peakKiB = Math.max(timeMaxRssKiB ?? 0, r.vmHWMKiB ?? 0);
      resolve({ ...r, timeMaxRssKiB, peakMiB: round(peakKiB / 1024) });
    });
  });
}

async function main(): Promise<void> {
  const count = sizeMiB();
  const dir = scratchDir('rss');
  const haveTime = fs.existsSync(TIME);
  console.log(`rss: ${count} MiB, data dir ${dir}${haveTime ? '' : ` (${TIME} missing: VmHWM only; apt-get install time)`}`);
  const results: Record<string, Measured> = {};
  try {
    results.idle = await runChild('idle', dir);
    results.put = await runChild('put', dir);
    results.get = await runChild('get', dir);
  } finally {
    rmrf(dir);
  }
  const kib = (x: number | null) => (x === null ? 'n/a' : round(x / 1024));
  const verdict = (m: Measured) => (m.peakMiB < TARGET_MIB ? 'MET' : 'MISSED');
  table(`peak RSS, ${count} MiB, one process per operation (MiB; target < ${TARGET_MIB} MiB for put and get)`,
    ['operation', 'time -v maxRSS', 'VmHWM', 'peak', 'MiB/s', 'heap used at end', 'target'],
    (['idle', 'put', 'get'] as const).map((k) => {
      const m = results[k]!;
      return [k === 'idle' ? 'idle (open+close: baseline)' : k, kib(m.timeMaxRssKiB), kib(m.vmHWMKiB), m.peakMiB, m.mibps === null ? '-' : round(m.mibps), round(m.heapUsedMiB), k === 'idle' ? 'info' : verdict(m)];
    }));
  writeResult('rss', {
    meta: meta('rss'),
    targetMiB: TARGET_MIB,
    method: haveTime ? '/usr/bin/time -v and /proc/self/status VmHWM' : '/proc/self/status VmHWM',
    results,
    summary: {
      idlePeakMiB: results.idle!.peakMiB,
      putPeakMiB: results.put!.peakMiB,
      getPeakMiB: results.get!.peakMiB,
      putMeetsTarget: results.put!.peakMiB < TARGET_MIB,
      getMeetsTarget: results.get!.peakMiB < TARGET_MIB,
    },
  });
}

main().then(() => exitWhenDone('rss'), (e) => {
  console.error(e);
  process.exit(1);
});
