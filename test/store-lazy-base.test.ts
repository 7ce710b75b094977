import assert from 'node:assert/strict';
import { Store } from '../capsule/store.js';
import { Coverage } from '../capsule/coverage.js';
import { validatePolicy } from '../capsule/policy.js';
import type { CodecPool } from '../capsule/codec-pool.js';
import { tmpDir, rmrf, prand, chunks } from './helpers/tmp.js';

const SEG = 64 * 1024;
const policy = validatePolicy({ segmentSize: '64KiB' });

/** Count the segment loads (file read + verify) the store asks its codec pool for. */
function countLoads(store: Store): { readonly n: number; restore(): void } {
  const codec = (store as unknown as { codec: CodecPool }).codec;
  const original = codec.readAndDecode;
  const counter = { n: 0, restore: () => void (codec.readAndDecode = original) };
  codec.readAndDecode = function (this: CodecPool, ...args: Parameters<CodecPool['readAndDecode']>) {
    counter.n++;
    return original.apply(this, args);
  };
  return counter;
}

/** A small deterministic PRNG for the model test. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0;
  return (n) => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x % n;
  };
}

/** Random buffered writes, reads, flushes, truncates and punches, checked against a Buffer. */
async function modelRun(store: Store, seeds: number[]): Promise<void> {
  for (const seed of seeds) {
    const r = rng(seed);
    const name = `m${seed}`;
    let model = prand(6 * SEG + 777, 100 + seed);
    await store.put('c', name, chunks(model));
    let flushing: Promise<void> | undefined;
    for (let step = 0; step < 300; step++) {
      const op = r(100);
      if (op < 55) {
        const off = r(model.length + SEG);
        const len = 1 + r(r(4) === 0 ? 2 * SEG : 6000);
        const data = prand(len, seed * 1000 + step);
        await store.writeBuffered('c', name, off, data);
        if (off + len > model.length) model = Buffer.concat([model, Buffer.alloc(off + len - model.length)]);
        data.copy(model, off);
      } else if (op < 80) {
        const off = r(model.length);
        const len = 1 + r(2 * SEG);
        const want = model.subarray(off, Math.min(model.length, off + len));
        const sync = r(2) === 0 ? store.tryReadSync('c', name, off, len) : undefined;
        if (sync) assert.deepEqual(sync, want, `seed ${seed} step ${step}: tryReadSync(${off}, ${len})`);
        else assert.deepEqual(await store.read('c', name, off, len), want, `seed ${seed} step ${step}: read(${off}, ${len})`);
      } else if (op < 88) {
        // Sometimes not awaited: writes and reads go on while the flush merges and commits.
        const f = store.flush('c', name);
        if (r(2) === 0) await f;
        else flushing = (flushing ?? Promise.resolve()).then(() => f);
      } else if (op < 94) {
        await flushing;
        const size = r(model.length + SEG);
        await store.truncate('c', name, size);
        model = size <= model.length ? Buffer.from(model.subarray(0, size)) : Buffer.concat([model, Buffer.alloc(size - model.length)]);
      } else {
        await flushing;
        const off = r(model.length);
        const len = 1 + r(2 * SEG);
        await store.punchHole('c', name, off, len);
        model.fill(0, off, Math.min(model.length, off + len));
      }
    }
    await flushing;
    assert.deepEqual(await store.read('c', name, 0, model.length + 10), model, `seed ${seed}: whole file before the flush`);
    await store.flush('c', name);
    assert.equal((await store.getattr('c', name)).size, model.length);
    assert.deepEqual(await store.read('c', name, 0, model.length + 10), model, `seed ${seed}: whole file after the flush`);
  }
}

describe('coverage of partly written segments', function () {
  it('merges ranges, answers covers() and lists the gaps below the committed length', () => {
    const c = new Coverage(100);
    assert.deepEqual(c.gaps(), [[0, 100]]);
    c.add(10, 20);
    c.add(30, 40);
    c.add(20, 30); // adjacent on both sides: one range
    assert.deepEqual(c.set(), [[10, 40]]);
    assert.ok(c.covers(10, 40) && c.covers(15, 25) && !c.covers(5, 15) && !c.covers(35, 45));
    c.add(90, 200); // past the committed length counts only up to it
    assert.ok(c.covers(95, 150), 'bytes past baseLen never come from the base');
    assert.deepEqual(c.gaps(), [[0, 10], [40, 90]]);
    const copy = c.clone();
    c.add(0, 90);
    assert.ok(c.complete);
    assert.deepEqual(c.gaps(), []);
    assert.equal(copy.complete, false, 'a clone is independent');
    c.add(5, 5); // empty: no change
    assert.deepEqual(c.set(), [[0, 200]]);
  });
});

describe('capsule store: partial overwrites load the committed segment only when needed', function () {
  let dir: string;
  let store: Store;
  beforeEach(async () => {
    dir = tmpDir();
    store = Store.open(dir, { cacheBytes: 0 }); // nothing comes from the segment cache
    await store.create({ id: 'c', policy });
  });
  afterEach(async () => {
    await store.close();
    rmrf(dir);
  });

  it('a sequential overwrite in pieces never reads the old segments', async () => {
    await store.put('c', 'f', chunks(prand(8 * SEG, 1)));
    const next = prand(8 * SEG, 2);
    const loads = countLoads(store);
    try {
      for (let off = 0; off < next.length; off += 8192) await store.writeBuffered('c', 'f', off, next.subarray(off, off + 8192));
      await store.flush('c', 'f');
      assert.equal(loads.n, 0, 'no segment was loaded for the overwrite');
    } finally {
      loads.restore();
    }
    assert.deepEqual(await store.read('c', 'f', 0, next.length), next);
  });

  it('reads of a partly written segment combine the committed bytes with the written ones', async () => {
    const base = prand(3 * SEG + 1000, 3);
    await store.put('c', 'f', chunks(base));
    const model = Buffer.from(base);
    const patch = prand(5000, 4);
    await store.writeBuffered('c', 'f', SEG + 100, patch);
    patch.copy(model, SEG + 100);
    const loads = countLoads(store);
    try {
      assert.deepEqual(await store.read('c', 'f', SEG + 100, 5000), model.subarray(SEG + 100, SEG + 5100), 'inside the write');
      assert.equal(loads.n, 0, 'a read of written bytes only needs no load');
      assert.deepEqual(store.tryReadSync('c', 'f', SEG + 200, 1000), model.subarray(SEG + 200, SEG + 1200));
      assert.equal(store.tryReadSync('c', 'f', SEG, 4096), undefined, 'uncovered bytes are not at hand');
      assert.deepEqual(await store.read('c', 'f', SEG, SEG), model.subarray(SEG, 2 * SEG), 'the whole segment');
      assert.deepEqual(await store.read('c', 'f', 0, model.length), model, 'across segments');
      assert.ok(loads.n >= 1);
    } finally {
      loads.restore();
    }
    // The last segment is short (1000 bytes): writing past its committed end extends it.
    const tail = prand(3000, 5);
    await store.writeBuffered('c', 'f', 3 * SEG + 500, tail);
    const grown = Buffer.concat([model, Buffer.alloc(3 * SEG + 3500 - model.length)]);
    tail.copy(grown, 3 * SEG + 500);
    assert.deepEqual(await store.read('c', 'f', 0, grown.length), grown);
    await store.flush('c', 'f');
    assert.deepEqual(await store.read('c', 'f', 0, grown.length), grown);
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('truncate and hole punching over partly written segments keep their meaning', async () => {
    const base = prand(4 * SEG, 6);
    await store.put('c', 'f', chunks(base));
    let model = Buffer.from(base);
    const w1 = prand(2000, 7);
    await store.writeBuffered('c', 'f', 2 * SEG + 10_000, w1);
    w1.copy(model, 2 * SEG + 10_000);
    // Cut inside the partly written segment, then grow the file again: the cut bytes are zeros.
    await store.truncate('c', 'f', 2 * SEG + 11_000);
    model = Buffer.concat([model.subarray(0, 2 * SEG + 11_000), Buffer.alloc(4 * SEG - (2 * SEG + 11_000))]);
    await store.writeBuffered('c', 'f', 4 * SEG - 10, Buffer.alloc(10, 0xaa));
    model.fill(0xaa, 4 * SEG - 10);
    assert.deepEqual(await store.read('c', 'f', 0, model.length), model);
    // Punch across written and never-loaded bytes of another partly written segment.
    const w2 = prand(3000, 8);
    await store.writeBuffered('c', 'f', SEG + 20_000, w2);
    w2.copy(model, SEG + 20_000);
    await store.punchHole('c', 'f', SEG + 15_000, 7000);
    model.fill(0, SEG + 15_000, SEG + 22_000);
    assert.deepEqual(await store.read('c', 'f', 0, model.length), model);
    await store.flush('c', 'f');
    assert.deepEqual(await store.read('c', 'f', 0, model.length), model);
    await store.close();
    store = Store.open(dir, { cacheBytes: 0 });
    assert.deepEqual(await store.read('c', 'f', 0, model.length), model, 'after a reopen');
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('a snapshot taken with partly written segments holds the merged bytes; the old version keeps its own', async () => {
    const base = prand(2 * SEG, 9);
    await store.put('c', 'f', chunks(base));
    const v1 = await store.snapshot('c');
    const patch = prand(100, 10);
    await store.writeBuffered('c', 'f', SEG + 50, patch);
    const v2 = await store.snapshot('c');
    const model = Buffer.from(base);
    patch.copy(model, SEG + 50);
    assert.deepEqual(await store.read('c', 'f', 0, model.length, v2), model);
    assert.deepEqual(await store.read('c', 'f', 0, base.length, v1), base);
  });

  for (const cache of [false, true]) {
    it(`random writes, reads, flushes (also while writing), truncates and punches match a model (segment cache ${cache ? 'on' : 'off'})`, async function () {
      this.timeout(120_000);
      if (cache) {
        await store.close();
        store = Store.open(dir); // partly written segments found in the cache are merged at once
      }
      await modelRun(store, cache ? [4, 5, 6] : [1, 2, 3]);
      await store.close();
      store = Store.open(dir, { cacheBytes: 0 });
      assert.equal((await store.fsck()).problems.length, 0);
    });
  }
});
