/**
 * A sequential reader through the segment cache has the segments after it loaded in advance
 * (prefetch): READ_AHEAD (8) of them, or up to 24 when the cache holds sixteen times as much.
 */
import assert from 'node:assert/strict';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import type { CodecPool } from '../capsule/codec-pool.js';
import { tmpDir, rmrf, prand, chunks } from './helpers/tmp.js';

const SEG = 64 * 1024;
const policy = validatePolicy({ segmentSize: '64KiB', encryption: false });
const SEGMENTS = 64;

/** Segment files the store asked its codec pool to load, by path. */
function watchLoads(store: Store): { files: Set<string>; restore(): void } {
  const codec = (store as unknown as { codec: CodecPool }).codec;
  const original = codec.readAndDecode;
  const files = new Set<string>();
  codec.readAndDecode = function (this: CodecPool, ...args: Parameters<CodecPool['readAndDecode']>) {
    files.add(args[1]);
    return original.apply(this, args);
  };
  return { files, restore: () => void (codec.readAndDecode = original) };
}

describe('capsule store: read-ahead', function () {
  let dir: string;
  let store: Store | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
    rmrf(dir);
  });

  for (const [cacheBytes, expected] of [[4 << 20, 8], [256 << 20, 24]] as const) {
    it(`loads ${expected} segments ahead of a sequential reader with a ${cacheBytes >> 20} MiB cache`, async () => {
      dir = tmpDir();
      store = Store.open(dir, { cacheBytes, fsync: false });
      await store.create({ id: 'c', policy });
      const data = prand(SEGMENTS * SEG, 5);
      await store.put('c', 'f', chunks(data));
      await store.close();
      store = Store.open(dir, { cacheBytes, fsync: false }); // nothing cached
      const loads = watchLoads(store);
      try {
        // Two reads in a row make a stream; the second one moves the read-ahead window.
        for (const idx of [0, 1]) {
          const h = await store.readHeld('c', 'f', idx * SEG, SEG);
          assert.ok(h.data.equals(data.subarray(idx * SEG, (idx + 1) * SEG)));
          h.release();
        }
        // The prefetch runs after the read's turn of the event loop; let its loads start.
        for (let i = 0; i < 50 && loads.files.size < 2 + expected; i++) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(loads.files.size, 2 + expected, 'the two segments read and the ones ahead of them');
      } finally {
        loads.restore();
      }
    });
  }

  it('a stream read through tryReadSyncHeld takes its extent rows from the read-ahead query, not one query per segment', async () => {
    dir = tmpDir();
    store = Store.open(dir, { cacheBytes: 256 << 20, fsync: false });
    await store.create({ id: 'c', policy });
    const data = prand(SEGMENTS * SEG, 6);
    await store.put('c', 'f', chunks(data));
    const inner = store as unknown as { extent: (...a: unknown[]) => unknown };
    const extent = inner.extent.bind(store);
    let lookups = 0;
    inner.extent = (...a: unknown[]) => {
      lookups++;
      return extent(...a);
    };
    try {
      let syncHits = 0;
      for (let idx = 0; idx < SEGMENTS; idx++) {
        const sync = store.tryReadSyncHeld('c', 'f', idx * SEG, SEG);
        const h = sync ?? (await store.readHeld('c', 'f', idx * SEG, SEG));
        if (sync) syncHits++;
        assert.ok(h.data.equals(data.subarray(idx * SEG, (idx + 1) * SEG)), `segment ${idx}`);
        h.release();
        await new Promise((r) => setTimeout(r, 2)); // the read-ahead runs between reads
      }
      assert.ok(syncHits > SEGMENTS / 2, `most reads are cache hits (${syncHits})`);
      assert.ok(lookups <= 4, `per-segment extent lookups: ${lookups}`);
      // A change to the file's metadata is seen: the memo is dropped, rows are looked up again.
      await store.truncate('c', 'f', 10 * SEG);
      assert.equal(store.tryReadSyncHeld('c', 'f', 20 * SEG, SEG)?.data.length, 0, 'past the new end');
    } finally {
      inner.extent = extent;
    }
  });
});
