/**
 * One measured operation in its own process, for bench/rss.ts:
 *
 *   node dist/bench/rss-child.js put DIR    Store.put of BENCH_SIZE_MB MiB (encrypted, default fsync)
 *   node dist/bench/rss-child.js get DIR    Store.readStream of that file, consumed
 *   node dist/bench/rss-child.js idle DIR   open and close the store only (the baseline)
 *
 * Prints one JSON line: { mode, sizeMiB, secs, mibps, vmHWMKiB, vmRSSKiB, heapUsedMiB, externalMiB }.
 * The source generator uses only 4 distinct base blocks (each block still unique through its
 * counter) so that the generator itself adds just 4 MiB to the peak.
 */
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { MiB, UniqueBlocks, now, procMem, sizeMiB, exitWhenDone } from './common.js';

const REF = 'bench';
const FILE = 'content';

async function main(): Promise<void> {
  const [mode, dir] = process.argv.slice(2);
  if (!mode || !dir || !['put', 'get', 'idle'].includes(mode)) {
    console.error('usage: rss-child.js put|get|idle DIR');
    process.exit(2);
  }
  const count = sizeMiB();
  const store = Store.open(dir);
  let secs = 0;
  try {
    if (mode === 'put') {
      const blocks = new UniqueBlocks(11, 4);
      await store.create({ id: REF, policy: validatePolicy({ encryption: true, compression: 'none' }) });
      const t0 = now();
      const attr = await store.put(REF, FILE, blocks.stream(count));
      secs = (now() - t0) / 1000;
      if (attr.size !== count * MiB) throw new Error(`put stored ${attr.size} bytes`);
    } else if (mode === 'get') {
      let bytes = 0;
      const t0 = now();
      for await (const c of store.readStream(REF, FILE)) bytes += c.length;
      secs = (now() - t0) / 1000;
      if (bytes !== count * MiB) throw new Error(`get returned ${bytes} bytes, expected ${count * MiB}`);
    }
  } finally {
    await store.close();
  }
  const mem = procMem();
  const mu = process.memoryUsage();
  console.log(JSON.stringify({
    mode, sizeMiB: count, secs, mibps: secs ? count / secs : null,
    vmHWMKiB: mem?.vmHWMKiB ?? null, vmRSSKiB: mem?.vmRSSKiB ?? null,
    heapUsedMiB: mu.heapUsed / MiB, externalMiB: mu.external / MiB, arrayBuffersMiB: mu.arrayBuffers / MiB,
  }));
}

main().then(() => exitWhenDone('rss-child'), (e) => {
  console.error(e);
  process.exit(1);
});
