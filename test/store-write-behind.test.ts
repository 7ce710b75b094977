/**
 * Buffered writes are committed behind the writer (write-behind): the segment files a commit
 * references are synced before it (by the store, not the codec workers), and a writer past the
 * dirty limit waits for the running commit instead of forcing everything out.
 */
import assert from 'node:assert/strict';
import { Store } from '../capsule/store.js';
import { CodecPool } from '../capsule/codec-pool.js';
import { SegmentFiles } from '../capsule/segment-files.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand } from './helpers/tmp.js';
import { storeDb } from './helpers/store-db.js';

const SEG = 64 * 1024;
const policy = validatePolicy({ segmentSize: '64KiB', encryption: false });

/** Extent rows committed for the live head (through the store's own connection: helpers/store-db.ts). */
function committedExtents(store: Store): number {
  return (storeDb(store).prepare('SELECT COUNT(*) AS n FROM extents WHERE version = 0').get() as { n: number }).n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('capsule store: write-behind', function () {
  let dir: string;
  let store: Store | undefined;
  let pool: CodecPool;
  const realSync = SegmentFiles.prototype.sync;
  const realEncode = CodecPool.prototype.encodeAndWrite;
  beforeEach(() => {
    dir = tmpDir();
    pool = new CodecPool(2, 0);
  });
  let held: { id: string; release: () => void }[] = [];
  afterEach(async () => {
    for (const h of held.splice(0)) h.release(); // a failed test must not leave a flush waiting
    SegmentFiles.prototype.sync = realSync;
    CodecPool.prototype.encodeAndWrite = realEncode;
    await store?.close();
    store = undefined;
    await pool.close();
    rmrf(dir);
  });

  it('syncs every segment file of a commit before the commit, and the workers sync none', async () => {
    store = Store.open(dir, { cacheBytes: 0, codecPool: pool });
    await store.create({ id: 'c', policy });
    await store.createFile('c', 'f');
    held = [];
    SegmentFiles.prototype.sync = function (this: SegmentFiles, id: string) {
      return new Promise<void>((resolve) => held.push({ id, release: () => void realSync.call(this, id).then(resolve) }));
    };
    const sinks: { fsync: boolean; syncLater?: boolean }[] = [];
    CodecPool.prototype.encodeAndWrite = function (this: CodecPool, ...args: Parameters<CodecPool['encodeAndWrite']>) {
      sinks.push(args[3]);
      return realEncode.apply(this, args);
    };
    const data = prand(6 * SEG, 1);
    await store.writeBuffered('c', 'f', 0, data);
    let flushed = false;
    const flush = store.flush('c', 'f').then(() => (flushed = true));
    // Every segment is written and waits for its sync; nothing is committed meanwhile.
    for (let i = 0; i < 500 && held.length < 6; i++) await sleep(10);
    await sleep(100);
    assert.equal(held.length, 6, `one sync per segment file: ${held.length}`);
    assert.equal(flushed, false, 'the flush waits for the syncs');
    assert.equal(committedExtents(store!), 0, 'nothing references an unsynced segment');
    assert.ok(sinks.length === 6 && sinks.every((s) => s.fsync && s.syncLater), 'the workers were told not to sync');
    for (const h of held.splice(0, 5)) h.release();
    await sleep(100);
    assert.equal(flushed, false, 'one sync still pending');
    assert.equal(committedExtents(store!), 0);
    held.pop()!.release();
    await flush;
    assert.equal(committedExtents(store!), 6);
    assert.deepEqual(await store.read('c', 'f', 0, data.length), data);
  });

  it('a failed sync fails the flush, keeps the data buffered, and a later flush lands it', async () => {
    store = Store.open(dir, { cacheBytes: 0, codecPool: pool });
    await store.create({ id: 'c', policy });
    await store.createFile('c', 'f');
    let failures = 1;
    SegmentFiles.prototype.sync = function (this: SegmentFiles, id: string) {
      if (failures > 0) {
        failures--;
        return Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
      }
      return realSync.call(this, id);
    };
    const data = prand(3 * SEG, 2);
    await store.writeBuffered('c', 'f', 0, data);
    await assert.rejects(store.flush('c', 'f'));
    assert.equal(committedExtents(store!), 0);
    assert.deepEqual(await store.read('c', 'f', 0, data.length), data, 'still readable from the buffer');
    await store.flush('c', 'f');
    assert.equal(committedExtents(store!), 3);
    await store.close();
    store = Store.open(dir, { cacheBytes: 0, codecPool: pool });
    assert.deepEqual(await store.read('c', 'f', 0, data.length), data);
    assert.deepEqual((await store.fsck()).problems, []);
  });

  it('a writer past the dirty limit waits for the running commit: the segment it is filling is stored once', async () => {
    store = Store.open(dir, { cacheBytes: 0, codecPool: pool, maxDirtyBytes: 8 * SEG });
    await store.create({ id: 'c', policy });
    await store.createFile('c', 'f');
    let encoded = 0;
    CodecPool.prototype.encodeAndWrite = function (this: CodecPool, ...args: Parameters<CodecPool['encodeAndWrite']>) {
      encoded++;
      return realEncode.apply(this, args);
    };
    // Writes of 5/8 of a segment: most of them leave the segment holding end-of-file half full.
    const piece = (SEG * 5) / 8;
    const total = 64 * SEG;
    const data = prand(total, 3);
    for (let at = 0; at < total; at += piece) await store.writeBuffered('c', 'f', at, data.subarray(at, Math.min(total, at + piece)));
    await store.flush('c', 'f');
    assert.equal(encoded, 64, 'each segment encoded once: no partial segment committed and rewritten');
    assert.deepEqual(await store.read('c', 'f', 0, total), data);
  });
});
