import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand, chunks } from './helpers/tmp.js';

const SEG = 4096;

/**
 * writeBuffered(..., { adopt: true }): a piece covering a whole segment becomes the buffered
 * segment without a copy (the NFS WRITE path); anything else is copied as before. The tests
 * tell the two apart by changing the caller's memory after the call, which an adopting caller
 * promises not to do: here it shows whose memory the store kept.
 */
describe('capsule store: adopted buffered writes', function () {
  let dir: string;
  let store: Store;
  beforeEach(async () => {
    dir = tmpDir();
    store = Store.open(dir, { cacheBytes: 0 });
    await store.create({ id: 'c', policy: validatePolicy({ segmentSize: SEG, encryption: false }) });
  });
  afterEach(async () => {
    await store.close();
    rmrf(dir);
  });

  describe('whole-segment pieces', function () {
    it('keeps a whole aligned segment as it is, and commits and reads it back', async () => {
      await store.createFile('c', 'f');
      const record = Buffer.concat([Buffer.alloc(100, 7), prand(2 * SEG, 1)]); // a header, then the data
      const data = record.subarray(100);
      const expected = Buffer.from(data);
      await store.writeBuffered('c', 'f', 0, data, { adopt: true });
      data[5] ^= 0xff; // not done by real callers: shows the store holds this memory
      const seen = await store.read('c', 'f', 0, 2 * SEG);
      assert.equal(seen[5], data[5], 'the buffered segment is the caller\'s memory');
      data[5] ^= 0xff;
      await store.flush('c', 'f');
      assert.deepEqual(await store.read('c', 'f', 0, 2 * SEG), expected);
      await store.close();
      store = Store.open(dir, { cacheBytes: 0 });
      assert.deepEqual(await store.read('c', 'f', 0, 2 * SEG), expected, 'after reopening, from the segment files');
    });

    it('copies partial segments, unadopted writes and pieces of a much larger buffer', async () => {
      await store.put('c', 'f', chunks(prand(4 * SEG, 2)));
      const model = await store.read('c', 'f', 0, 4 * SEG);
      const cases: [string, number, Buffer, boolean][] = [
        ['unaligned piece', 100, prand(SEG, 3), true],
        ['partial segment', 2 * SEG, prand(SEG / 2, 4), true],
        ['not adopted', SEG, prand(SEG, 5), false],
        ['view of a much larger buffer', 3 * SEG, prand(8 * SEG, 6).subarray(SEG, 2 * SEG), true],
      ];
      for (const [what, offset, piece, adopt] of cases) {
        await store.writeBuffered('c', 'f', offset, piece, { adopt });
        piece.copy(model, offset);
        piece.fill(0xee); // the store must have taken a copy
        assert.deepEqual(await store.read('c', 'f', 0, 4 * SEG), model, what);
      }
      await store.flush('c', 'f');
      assert.deepEqual(await store.read('c', 'f', 0, 4 * SEG), model);
    });

    it('an adopted segment replaces a partly written buffered one, and later writes patch it', async () => {
      await store.put('c', 'f', chunks(prand(2 * SEG, 7)));
      // A partial write leaves segment 0 buffered and not merged with its committed bytes.
      await store.writeBuffered('c', 'f', 10, prand(20, 8));
      const whole = prand(SEG, 9);
      const model = Buffer.concat([Buffer.from(whole), await store.read('c', 'f', SEG, SEG)]);
      await store.writeBuffered('c', 'f', 0, Buffer.from(whole), { adopt: true });
      const patch = prand(300, 10);
      await store.writeBuffered('c', 'f', 1000, patch);
      patch.copy(model, 1000);
      assert.deepEqual(await store.read('c', 'f', 0, 2 * SEG), model);
      await store.flush('c', 'f');
      await store.close();
      store = Store.open(dir, { cacheBytes: 0 });
      assert.deepEqual(await store.read('c', 'f', 0, 2 * SEG), model);
    });
  });

  describe('memory given back through release', function () {
    beforeEach(() => store.createFile('c', 'f'));

    it('runs once the adopting segment is committed, and only then', async () => {
      let released = 0;
      const data = prand(SEG, 11);
      await store.writeBuffered('c', 'f', 0, data, { adopt: true, release: () => released++ });
      assert.equal(released, 0, 'the store still holds the memory');
      await store.flush('c', 'f');
      assert.equal(released, 1);
      await store.flush('c', 'f');
      assert.equal(released, 1, 'once');
      data.fill(0); // the caller's to reuse now
      assert.deepEqual(await store.read('c', 'f', 0, SEG), prand(SEG, 11));
    });

    it('runs at once when the bytes were copied', async () => {
      let released = 0;
      await store.writeBuffered('c', 'f', 10, prand(100, 12), { adopt: true, release: () => released++ });
      assert.equal(released, 1);
      await store.writeBuffered('c', 'f', SEG, prand(SEG, 13), { release: () => released++ });
      assert.equal(released, 2, 'not adopted: copied');
    });

    it('never runs when a reader took a view of the segment, or the data spans several segments', async () => {
      let released = 0;
      const data = prand(SEG, 14);
      await store.writeBuffered('c', 'f', 0, data, { adopt: true, release: () => released++ });
      const seen = await store.read('c', 'f', 0, SEG); // a reader of the buffered segment
      assert.deepEqual(seen, data);
      await store.writeBuffered('c', 'f', SEG, prand(2 * SEG, 15), { adopt: true, release: () => released++ });
      await store.flush('c', 'f');
      assert.equal(released, 0);
      assert.deepEqual(await store.read('c', 'f', 0, 3 * SEG), Buffer.concat([data, prand(2 * SEG, 15)]));
    });

    it('a failed commit keeps the segment buffered and does not run it', async () => {
      let released = 0;
      await store.writeBuffered('c', 'f', 0, prand(SEG, 16), { adopt: true, release: () => released++ });
      // The codec worker writes segment files aside in tmp/ first: a file in its place fails that.
      const tmp = path.join(dir, 'tmp');
      fs.renameSync(tmp, `${tmp}.away`);
      fs.writeFileSync(tmp, '');
      await assert.rejects(store.flush('c', 'f'), /ENOTDIR|not a directory/);
      assert.equal(released, 0);
      fs.rmSync(tmp);
      fs.renameSync(`${tmp}.away`, tmp);
      await store.flush('c', 'f');
      assert.equal(released, 1);
      assert.deepEqual(await store.read('c', 'f', 0, SEG), prand(SEG, 16));
    });
  });
});
