import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand, chunks, segmentFiles } from './helpers/tmp.js';

const SEG = 64 * 1024;
const policy = validatePolicy({ segmentSize: '64KiB', encryption: false });

const inodes = (files: string[]) => new Set(files.map((f) => fs.statSync(f).ino));
const tmpFiles = (dir: string) => fs.readdirSync(path.join(dir, 'tmp'));

/**
 * Freed segment files are kept as spares and reused for new segments (segment-files.ts says
 * why): same inodes, none of the old bytes, nothing left behind at close.
 */
describe('capsule store: spare segment files', function () {
  let dir: string;
  let store: Store | undefined;
  beforeEach(() => {
    store = undefined;
    dir = tmpDir();
  });
  afterEach(async () => {
    await store?.close();
    rmrf(dir);
  });

  it('a deleted file\'s segments become spares, and the next file\'s segments reuse them', async () => {
    store = Store.open(dir, { cacheBytes: 0 });
    await store.create({ id: 'c', policy });
    await store.put('c', 'old', chunks(prand(8 * SEG, 1)));
    const oldInodes = inodes(segmentFiles(dir));
    await store.unlink('c', 'old');
    await store.reclaimSettled();
    assert.equal(segmentFiles(dir).length, 0);
    assert.equal(tmpFiles(dir).length, 8, 'kept in tmp/ as spares');
    // Shorter segments than the spares held: the files are cut to their new length.
    const next = prand(6 * SEG - 1000, 2);
    await store.createFile('c', 'new');
    await store.writeBuffered('c', 'new', 0, next);
    await store.flush('c', 'new');
    const files = segmentFiles(dir);
    assert.equal(files.length, 6);
    assert.ok([...inodes(files)].every((ino) => oldInodes.has(ino)), 'every new segment file is a reused inode');
    assert.equal(tmpFiles(dir).length, 2, 'the unused spares stay');
    assert.deepEqual(await store.read('c', 'new', 0, next.length), next);
    await store.close();
    assert.equal(tmpFiles(dir).length, 0, 'close deletes the spares');
    store = Store.open(dir, { cacheBytes: 0 });
    assert.deepEqual(await store.read('c', 'new', 0, next.length), next, 'read back from the files after reopening');
    const report = await store.fsck();
    assert.deepEqual(report.problems, []);
  });

  it('a spare a job does not need is deleted: holes and segments stored already', async () => {
    store = Store.open(dir, { cacheBytes: 0 });
    await store.create({ id: 'c', policy });
    const data = prand(4 * SEG, 3);
    await store.put('c', 'a', chunks(data));
    await store.put('c', 'b', chunks(prand(4 * SEG, 4)));
    await store.unlink('c', 'b');
    await store.reclaimSettled();
    assert.equal(tmpFiles(dir).length, 4);
    // The same content again (deduplicated: no file to write) and a hole: both take a spare.
    await store.createFile('c', 'same');
    await store.writeBuffered('c', 'same', 0, data.subarray(0, SEG));
    await store.writeBuffered('c', 'same', SEG, Buffer.alloc(SEG));
    await store.flush('c', 'same');
    assert.equal(tmpFiles(dir).length, 2, 'the two spares the jobs took are gone, not leaked');
    assert.equal(segmentFiles(dir).length, 4);
    assert.deepEqual(await store.read('c', 'same', 0, 2 * SEG), Buffer.concat([data.subarray(0, SEG), Buffer.alloc(SEG)]));
  });

  it('keeps at most spareSegmentFiles of them; 0 deletes every freed file', async () => {
    for (const [max, kept] of [[3, 3], [0, 0]] as const) {
      await store?.close();
      rmrf(dir);
      dir = tmpDir();
      store = Store.open(dir, { cacheBytes: 0, spareSegmentFiles: max });
      await store.create({ id: 'c', policy });
      await store.put('c', 'f', chunks(prand(8 * SEG, 5)));
      await store.unlink('c', 'f');
      await store.reclaimSettled();
      assert.equal(tmpFiles(dir).length, kept, `spareSegmentFiles ${max}`);
      assert.equal(segmentFiles(dir).length, 0);
    }
  });

  it('the environment setting is checked', () => {
    process.env.SPACE_SPARE_SEGMENT_FILES = 'lots';
    try {
      assert.throws(() => Store.open(dir), /SPACE_SPARE_SEGMENT_FILES must be an integer from 0 to \d+, got "lots"/);
    } finally {
      delete process.env.SPACE_SPARE_SEGMENT_FILES;
    }
    store = Store.open(dir);
  });
});
