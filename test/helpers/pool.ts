import assert from 'node:assert/strict';
import { SegmentPool } from '../../capsule/segment-pool.js';
import { Store } from '../../capsule/store.js';
import { tmpDir } from './tmp.js';

/** A store (fsync off) whose cached plaintext lives in a segment pool of its own, to be inspected. */
export function openPooledStore(prefix: string, cacheBytes: number): { dir: string; pool: SegmentPool; store: Store } {
  const dir = tmpDir(prefix);
  const pool = new SegmentPool();
  return { dir, pool, store: Store.open(dir, { cacheBytes, fsync: false, segmentPool: pool }) };
}

/**
 * After reads through a cache much smaller than the data (every segment evicted and reloaded):
 * the readers gave their slots back, so evicted slots were reused, none was kept for good, and
 * no more are in use than the cache holds (plus the one being loaded).
 */
export function assertSlotsGivenBack(pool: SegmentPool, cachedSegments: number, minReused: number): void {
  const st = pool.snapshot();
  assert.equal(st.kept, 0, `no slot kept for good (${JSON.stringify(st)})`);
  assert.ok(st.reused > minReused, `evicted slots were reused (${JSON.stringify(st)})`);
  assert.ok(st.inUse <= cachedSegments + 1, `only what the cache holds stays in use (${JSON.stringify(st)})`);
}
