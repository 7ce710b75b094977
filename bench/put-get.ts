/**
 * Sequential put/get throughput of the capsule store against its crypto bound, in one process.
 *
 *   bound (put): per 1 MiB piece, HMAC-SHA-256 (the segment address) + AES-256-GCM encrypt
 *   bound (get): per 1 MiB piece, AES-256-GCM decrypt + HMAC-SHA-256 (the definition;
 *                the store itself skips the HMAC for encrypted segments, whose GCM tag already
 *                authenticates the address, and decrypts in two workers, so it can pass 1.0)
 *   store put:   Store.put of BENCH_SIZE_MB MiB (encryption on, compression none, 1 MiB
 *                segments) from a generator of unique pseudo-random MiB blocks; once with the
 *                default fsync (fdatasync per segment) and once with fsync:false
 *   store get:   Store.readStream of that file on a freshly opened store, consuming only (the
 *                store writes segment files with O_DIRECT, so this first read after the put
 *                reads them from the disk; one extra run after drop_caches)
 *
 *   disk bound:  writing the same number of segment-sized files (1 MiB + 44 bytes of header,
 *                nonce and tag) into a fresh directory on the same filesystem the way the store
 *                does (SegmentFileWriter: O_DIRECT where the filesystem takes it), no fsync.
 *                Reported beside the crypto ratio.
 *
 * Bound and store runs alternate (bound, store, bound, store, ...) and each store run is
 * divided by the bound run just before it; the median of those pair ratios is the figure.
 * Both the bound and the store pull their input from the same generator, so the ratio isolates
 * what the store adds on top of the unavoidable crypto work.
 *
 * Env: BENCH_SIZE_MB (default 1024), BENCH_REPS (default 3), BENCH_COLD=0 to skip the cold get.
 * Run: npx tsc -p . && node dist/bench/put-get.js
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { SegmentFileWriter } from '../capsule/direct-write.js';
import { validatePolicy } from '../capsule/policy.js';
import { HEADER_BYTES } from '../capsule/segment-codec.js';
import {
  MiB, UniqueBlocks, envInt, sync, median, meta, now, rmrf, round, scratchDir, sizeMiB, syncAndDrop, table, writeResult, exitWhenDone,
} from './common.js';

const TARGET = 0.7;
const REF = 'bench';
const FILE = 'content';

interface Keys {
  hashKey: Buffer;
  dataKey: Buffer;
}

/** The put bound: what the store must do per segment at the very least. */
async function boundPut(blocks: UniqueBlocks, count: number, keys: Keys): Promise<number> {
  const header = Buffer.alloc(HEADER_BYTES);
  const t0 = now();
  let sink = 0;
  for await (const block of blocks.stream(count)) {
    const id = crypto.createHmac('sha256', keys.hashKey).update(block).digest();
    const c = crypto.createCipheriv('aes-256-gcm', keys.dataKey, crypto.randomBytes(12));
    c.setAAD(Buffer.concat([header, id]));
    const ct = c.update(block);
    c.final();
    sink += ct.length + c.getAuthTag().length;
  }
  const secs = (now() - t0) / 1000;
  if (sink < count * MiB) throw new Error('bound put produced too little output');
  return secs;
}

/** The disk bound: create `count` segment-sized files the way the store does (no fsync). */
async function boundDisk(blocks: UniqueBlocks, count: number): Promise<number> {
  await sync();
  const dir = scratchDir('diskbound');
  const extra = Buffer.alloc(HEADER_BYTES + 12 + 16);
  const writer = new SegmentFileWriter(true);
  try {
    for (let i = 0; i < 256; i++) fs.mkdirSync(path.join(dir, i.toString(16).padStart(2, '0')));
    const t0 = now();
    let i = 0;
    for await (const block of blocks.stream(count)) {
      const name = path.join(dir, (i & 255).toString(16).padStart(2, '0'), String(i++));
      writer.writeNew(name, [extra, block], false);
    }
    return (now() - t0) / 1000;
  } finally {
    rmrf(dir);
  }
}

interface Sealed {
  nonce: Buffer;
  aad: Buffer;
  ct: Buffer;
  tag: Buffer;
  id: string;
}

/** Pre-encrypt `distinct` blocks for the get bound (decrypting them again in rotation). */
function seal(blocks: UniqueBlocks, keys: Keys, distinct = 16): Sealed[] {
  const out: Sealed[] = [];
  for (let i = 0; i < distinct; i++) {
    const plain = blocks.block(i);
    const idBuf = crypto.createHmac('sha256', keys.hashKey).update(plain).digest();
    const nonce = crypto.randomBytes(12);
    const aad = Buffer.concat([Buffer.alloc(HEADER_BYTES), idBuf]);
    const c = crypto.createCipheriv('aes-256-gcm', keys.dataKey, nonce);
    c.setAAD(aad);
    const ct = Buffer.concat([c.update(plain), c.final()]);
    out.push({ nonce, aad, ct, tag: c.getAuthTag(), id: idBuf.toString('hex') });
  }
  return out;
}

/** The get bound: decrypt + verify the address of every segment. */
function boundGet(sealed: Sealed[], count: number, keys: Keys): number {
  const t0 = now();
  for (let i = 0; i < count; i++) {
    const s = sealed[i % sealed.length]!;
    const d = crypto.createDecipheriv('aes-256-gcm', keys.dataKey, s.nonce);
    d.setAAD(s.aad);
    d.setAuthTag(s.tag);
    const plain = d.update(s.ct);
    d.final();
    if (crypto.createHmac('sha256', keys.hashKey).update(plain).digest('hex') !== s.id) throw new Error('bound get: address mismatch');
  }
  return (now() - t0) / 1000;
}

async function storePut(blocks: UniqueBlocks, count: number, fsync: boolean): Promise<{ dir: string; secs: number }> {
  // start from a clean disk: write-back of an earlier run's dirty pages would slow this one
  await sync();
  const dir = scratchDir('putget');
  const store = Store.open(dir, { fsync });
  try {
    await store.create({ id: REF, policy: validatePolicy({ encryption: true, compression: 'none' }) });
    const t0 = now();
    const attr = await store.put(REF, FILE, blocks.stream(count));
    const secs = (now() - t0) / 1000;
    if (attr.size !== count * MiB) throw new Error(`put stored ${attr.size} bytes, expected ${count * MiB}`);
    const st = await store.storeStat();
    if (st.segments !== count) throw new Error(`expected ${count} distinct segments (no dedup), store has ${st.segments}`);
    return { dir, secs };
  } finally {
    await store.close();
  }
}

async function storeGet(dir: string, count: number): Promise<number> {
  const store = Store.open(dir);
  try {
    let bytes = 0;
    let pieces = 0;
    const t0 = now();
    for await (const chunk of store.readStream(REF, FILE)) {
      bytes += chunk.length;
      pieces++;
    }
    const secs = (now() - t0) / 1000;
    if (bytes !== count * MiB) throw new Error(`readStream returned ${bytes} bytes, expected ${count * MiB}`);
    if (pieces !== count) throw new Error(`readStream returned ${pieces} pieces, expected ${count}`);
    return secs;
  } finally {
    await store.close();
  }
}

/** Check a sample of segments (whole and partial reads) against the regenerated source. */
async function verify(dir: string, blocks: UniqueBlocks, count: number): Promise<number> {
  const store = Store.open(dir);
  let checked = 0;
  try {
    const idxs = new Set([0, 1, count >> 1, count - 1]);
    for (let k = 0; k < 4; k++) idxs.add(Math.floor(Math.random() * count));
    for (const idx of idxs) {
      const want = blocks.block(idx);
      const got = await store.read(REF, FILE, idx * MiB, MiB);
      if (!got.equals(want)) throw new Error(`segment ${idx} differs from what was put`);
      const off = 4093;
      const part = await store.read(REF, FILE, idx * MiB + off, 5000);
      if (!part.equals(want.subarray(off, off + 5000))) throw new Error(`partial read in segment ${idx} differs`);
      checked++;
    }
    // a read straddling two segments
    if (count > 1) {
      const got = await store.read(REF, FILE, MiB - 100, 200);
      const want = Buffer.concat([blocks.block(0).subarray(MiB - 100), blocks.block(1).subarray(0, 100)]);
      if (!got.equals(want)) throw new Error('read across a segment boundary differs');
    }
  } finally {
    await store.close();
  }
  return checked;
}

export interface PutGetResult {
  meta: ReturnType<typeof meta>;
  reps: number;
  target: number;
  mibps: { boundDisk: number[]; boundPut: number[]; boundGet: number[]; putFsync: number[]; putNoFsync: number[]; get: number[]; getCold: number | null };
  ratios: { putFsync: number[]; putNoFsync: number[]; putNoFsyncVsBoth: number[]; get: number[] };
  summary: {
    boundPutMiBps: number; boundGetMiBps: number; boundDiskMiBps: number; putNoFsyncRatioVsSlowerBound: number;
    putFsyncMiBps: number; putNoFsyncMiBps: number; getMiBps: number; getColdMiBps: number | null;
    putFsyncRatio: number; putNoFsyncRatio: number; getRatio: number;
    putFsyncRatioBest: number; putNoFsyncRatioBest: number; getRatioBest: number;
    targetAppliesTo: string;
    putMeetsTarget: boolean; getMeetsTarget: boolean;
  };
  verifiedSegments: number;
  coldNote?: string;
}

async function main(): Promise<void> {
  const count = sizeMiB();
  const reps = Math.max(1, envInt('BENCH_REPS', 3));
  const blocks = new UniqueBlocks(7);
  const keys: Keys = { hashKey: crypto.randomBytes(32), dataKey: crypto.randomBytes(32) };
  const sealed = seal(blocks, keys);
  console.log(`put-get: ${count} MiB, ${reps} repetitions (bound and store alternate)`);

  const mb = (secs: number) => count / secs;
  const m = { boundDisk: [] as number[], boundPut: [] as number[], boundGet: [] as number[], putFsync: [] as number[], putNoFsync: [] as number[], get: [] as number[] };
  const ratios = { putFsync: [] as number[], putNoFsync: [] as number[], putNoFsyncVsBoth: [] as number[], get: [] as number[] };
  let verified = 0;
  let lastDir: string | null = null;

  // warm-up: JIT, crypto init (small, untimed)
  await boundPut(blocks, Math.min(count, 32), keys);
  boundGet(sealed, Math.min(count, 32), keys);

  for (let r = 0; r < reps; r++) {
    let b = mb(await boundPut(blocks, count, keys));
    m.boundPut.push(b);
    const pf = await storePut(blocks, count, true);
    rmrf(pf.dir);
    m.putFsync.push(mb(pf.secs));
    ratios.putFsync.push(mb(pf.secs) / b);

    b = mb(await boundPut(blocks, count, keys));
    m.boundPut.push(b);
    const pn = await storePut(blocks, count, false);
    m.putNoFsync.push(mb(pn.secs));
    ratios.putNoFsync.push(mb(pn.secs) / b);
    const disk = mb(await boundDisk(blocks, count));
    m.boundDisk.push(disk);
    ratios.putNoFsyncVsBoth.push(mb(pn.secs) / Math.min(b, disk));

    const bg = mb(boundGet(sealed, count, keys));
    m.boundGet.push(bg);
    const g = mb(await storeGet(pn.dir, count));
    m.get.push(g);
    ratios.get.push(g / bg);

    if (r === 0) verified = await verify(pn.dir, blocks, count);
    if (lastDir) rmrf(lastDir);
    lastDir = pn.dir;
    console.log(`  rep ${r + 1}: bound put ${round(b)} MiB/s | put fsync ${round(mb(pf.secs))} | put no-fsync ${round(mb(pn.secs))} | disk bound ${round(m.boundDisk[r]!)} | bound get ${round(bg)} | get ${round(g)} MiB/s`);
  }

  let getCold: number | null = null;
  let coldNote: string | undefined;
  if (envInt('BENCH_COLD', 1) && lastDir) {
    const d = await syncAndDrop();
    if (d.ok) {
      getCold = mb(await storeGet(lastDir, count));
      console.log(`  cold get (after drop_caches): ${round(getCold)} MiB/s`);
    } else coldNote = `drop_caches not permitted (${d.reason}); cold get skipped`;
  }
  if (lastDir) rmrf(lastDir);

  const best = (store: number[], bound: number[]) => Math.max(...store) / Math.max(...bound);
  const summary = {
    boundPutMiBps: round(median(m.boundPut)),
    boundGetMiBps: round(median(m.boundGet)),
    boundDiskMiBps: round(median(m.boundDisk)),
    putNoFsyncRatioVsSlowerBound: round(median(ratios.putNoFsyncVsBoth), 3),
    putFsyncMiBps: round(median(m.putFsync)),
    putNoFsyncMiBps: round(median(m.putNoFsync)),
    getMiBps: round(median(m.get)),
    getColdMiBps: getCold === null ? null : round(getCold),
    putFsyncRatio: round(median(ratios.putFsync), 3),
    putNoFsyncRatio: round(median(ratios.putNoFsync), 3),
    getRatio: round(median(ratios.get), 3),
    putFsyncRatioBest: round(best(m.putFsync, m.boundPut), 3),
    putNoFsyncRatioBest: round(best(m.putNoFsync, m.boundPut), 3),
    getRatioBest: round(best(m.get, m.boundGet), 3),
    targetAppliesTo: 'put with fsync:false (pure CPU path; fsync cost is the disk, reported separately) and get with a warm page cache',
    putMeetsTarget: median(ratios.putNoFsync) >= TARGET,
    getMeetsTarget: median(ratios.get) >= TARGET,
  };

  table(`put/get ${count} MiB (median of ${reps}; ratio = store / crypto bound of the adjacent run; target >= ${TARGET})`,
    ['measurement', 'MiB/s', 'bound MiB/s', 'ratio (median)', 'ratio (best/best)', 'target'],
    [
      ['put, fsync per segment (default)', summary.putFsyncMiBps, summary.boundPutMiBps, summary.putFsyncRatio, summary.putFsyncRatioBest, 'info'],
      ['put, fsync:false', summary.putNoFsyncMiBps, summary.boundPutMiBps, summary.putNoFsyncRatio, summary.putNoFsyncRatioBest, summary.putMeetsTarget ? 'MET' : 'MISSED'],
      ['put, fsync:false vs min(crypto, disk bound)', summary.putNoFsyncMiBps, `${summary.boundDiskMiBps} (disk)`, summary.putNoFsyncRatioVsSlowerBound, '', 'info'],
      ['get (readStream, first read after the put)', summary.getMiBps, summary.boundGetMiBps, summary.getRatio, summary.getRatioBest, summary.getMeetsTarget ? 'MET' : 'MISSED'],
      ['get (cold, after drop_caches)', summary.getColdMiBps ?? 'n/a', summary.boundGetMiBps, summary.getColdMiBps === null ? 'n/a' : round(summary.getColdMiBps / summary.boundGetMiBps, 3), '', 'info'],
    ]);
  console.log(`verified ${verified} sampled segments (whole, partial and boundary-straddling reads) against the source`);
  if (coldNote) console.log(coldNote);

  const result: PutGetResult = {
    meta: meta('put-get'), reps, target: TARGET,
    mibps: { ...m, getCold },
    ratios,
    summary,
    verifiedSegments: verified,
    ...(coldNote ? { coldNote } : {}),
  };
  writeResult('put-get', result);
}

main().then(() => exitWhenDone('put-get'), (e) => {
  console.error(e);
  process.exit(1);
});
