import assert from 'node:assert/strict';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import type { ChangeEvent } from '../capsule/types.js';
import { tmpDir, rmrf, prand, chunks, segmentFiles } from './helpers/tmp.js';
import { rejectsWith } from './helpers/assert.js';

const SEG = 4096;

/** `data` with [from, to) zeroed (a copy). */
function zeroed(data: Buffer, ...ranges: [number, number][]): Buffer {
  const out = Buffer.from(data);
  for (const [from, to] of ranges) out.fill(0, from, Math.min(to, out.length));
  return out;
}

describe('capsule store: punchHole', function () {
  let dir: string;
  let store: Store;
  beforeEach(() => {
    dir = tmpDir();
    // These tests look at what `gc` frees; prompt reclamation has its own suite.
    store = Store.open(dir, { reclaim: false });
  });
  afterEach(async () => {
    await store.close();
    rmrf(dir);
  });

  async function fileWith(id: string, data: Buffer, policy: Record<string, unknown> = {}): Promise<void> {
    await store.create({ id, policy: validatePolicy({ segmentSize: SEG, ...policy }) });
    await store.put(id, 'f', chunks(data, 3000));
  }

  async function whole(id: string, file = 'f', version?: number): Promise<Buffer> {
    return store.read(id, file, 0, 1 << 30, version);
  }

  it('drops whole segments: zeros read back, space is freed, the rest is intact', async () => {
    const data = prand(10 * SEG, 1);
    await fileWith('w', data);
    assert.equal((await store.getattr('w', 'f')).allocated, 10 * SEG);
    assert.equal((await store.stat('w')).segments, 10);
    const events: ChangeEvent[] = [];
    store.events.on('change', (ev: ChangeEvent) => events.push(ev));
    await store.punchHole('w', 'f', 2 * SEG, 3 * SEG);
    assert.deepEqual(events.map((e) => `${e.kind}:${e.path}`), ['written:f']);
    const a = await store.getattr('w', 'f');
    assert.equal(a.size, data.length, 'size unchanged');
    assert.equal(a.allocated, 7 * SEG);
    assert.equal((await store.stat('w')).segments, 7);
    assert.deepEqual(await whole('w'), zeroed(data, [2 * SEG, 5 * SEG]));
    assert.deepEqual(await store.read('w', 'f', 2 * SEG, 3 * SEG), Buffer.alloc(3 * SEG));
    // the freed segments are garbage now
    const storedBefore = (await store.stat('w')).storedSize;
    assert.equal(segmentFiles(dir).length, 10);
    const r = await store.gc();
    assert.equal(r.segmentsRemoved, 3);
    assert.ok(r.bytesFreed >= 3 * SEG);
    assert.equal(segmentFiles(dir).length, 7);
    assert.equal((await store.stat('w')).storedSize, storedBefore, 'stored size counts only referenced segments');
    assert.deepEqual(await whole('w'), zeroed(data, [2 * SEG, 5 * SEG]));
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('stored size drops after gc', async () => {
    const data = prand(8 * SEG, 2);
    await fileWith('s', data, { compression: 'none' });
    const before = (await store.stat('s')).storedSize;
    await store.punchHole('s', 'f', 0, 4 * SEG);
    await store.gc();
    const after = (await store.stat('s')).storedSize;
    assert.ok(after < before, `stored ${after} < ${before}`);
    assert.ok(before - after >= 4 * SEG, `freed ${before - after}`);
    assert.equal((await store.storeStat()).segments, 4);
  });

  for (const policy of [{}, { encryption: true, compression: 'zstd' }]) {
    it(`zeroes partly covered head and tail segments and keeps them after reopen (${JSON.stringify(policy)})`, async () => {
      const data = prand(10 * SEG, 3);
      await fileWith('p', data, policy);
      // head edge: seg 0 from 1000 to its end; seg 1 whole; tail edge: seg 2 up to 500
      await store.punchHole('p', 'f', 1000, 2 * SEG + 500 - 1000);
      // inside one segment only
      await store.punchHole('p', 'f', 5 * SEG + 100, 100);
      const expect = zeroed(data, [1000, 2 * SEG + 500], [5 * SEG + 100, 5 * SEG + 200]);
      assert.deepEqual(await whole('p'), expect);
      assert.deepEqual(await store.read('p', 'f', 900, 200), Buffer.concat([data.subarray(900, 1000), Buffer.alloc(100)]));
      assert.deepEqual(await store.read('p', 'f', 2 * SEG + 400, 200), Buffer.concat([Buffer.alloc(100), data.subarray(2 * SEG + 500, 2 * SEG + 600)]));
      const a = await store.getattr('p', 'f');
      assert.equal(a.size, data.length);
      // seg 0 keeps 1000 bytes, seg 1 is gone, segs 2 and 5 are rewritten at full length
      assert.equal(a.allocated, 10 * SEG - (SEG - 1000) - SEG);
      await store.flush('p');
      assert.deepEqual(await whole('p'), expect);
      await store.close();
      store = Store.open(dir);
      assert.deepEqual(await whole('p'), expect);
      assert.equal((await store.getattr('p', 'f')).size, data.length);
      assert.equal((await store.fsck()).problems.length, 0);
    });
  }

  it('punches a range spanning buffered (unflushed) and committed data', async () => {
    const data = prand(8 * SEG, 4);
    await fileWith('d', data);
    const expect = Buffer.from(data);
    // buffered: part of seg 2, all of seg 4, part of seg 6, and growth past the committed end
    const w1 = Buffer.alloc(300, 0x11);
    const w2 = Buffer.alloc(SEG, 0x22);
    const w3 = Buffer.alloc(700, 0x33);
    const w4 = Buffer.alloc(1000, 0x44);
    await store.writeBuffered('d', 'f', 2 * SEG + 50, w1);
    await store.writeBuffered('d', 'f', 4 * SEG, w2);
    await store.writeBuffered('d', 'f', 6 * SEG + 200, w3);
    w1.copy(expect, 2 * SEG + 50);
    w2.copy(expect, 4 * SEG);
    w3.copy(expect, 6 * SEG + 200);
    assert.equal(segmentFiles(dir).length, 8, 'the writes are still buffered');
    // from inside seg 2 (after the buffered piece starts) to inside seg 6 (inside the buffered piece)
    await store.punchHole('d', 'f', 2 * SEG + 100, 4 * SEG + 500 - 100);
    assert.deepEqual(await whole('d'), zeroed(expect, [2 * SEG + 100, 6 * SEG + 500]), 'zeros at once');
    // growth past the committed end, still buffered, then a punch inside it
    await store.writeBuffered('d', 'f', 8 * SEG, w4);
    const grown = Buffer.concat([expect, w4]);
    assert.equal((await store.getattr('d', 'f')).size, 8 * SEG + 1000);
    await store.punchHole('d', 'f', 8 * SEG + 10, 20);
    assert.equal(segmentFiles(dir).length, 9, 'nothing flushed: only the rewritten tail edge (seg 6) was stored');
    const want = zeroed(grown, [2 * SEG + 100, 6 * SEG + 500], [8 * SEG + 10, 8 * SEG + 30]);
    assert.equal((await store.getattr('d', 'f')).size, 8 * SEG + 1000, 'size unchanged');
    assert.deepEqual(await whole('d'), want, 'zeros at once, before any flush');
    await store.flush('d', 'f');
    assert.deepEqual(await whole('d'), want, 'after flush');
    // segs 3, 4, 5 were dropped whole; seg 8 holds 1000 bytes
    assert.equal((await store.getattr('d', 'f')).allocated, 8 * SEG - 3 * SEG + 1000);
    await store.close();
    store = Store.open(dir);
    assert.deepEqual(await whole('d'), want, 'after reopen');
  });

  it('clips the range at end-of-file and never changes the size', async () => {
    const data = prand(2 * SEG + 1000, 5);
    await fileWith('e', data);
    // entirely past EOF: nothing happens
    const events: string[] = [];
    store.events.on('change', (ev: ChangeEvent) => events.push(ev.kind));
    await store.punchHole('e', 'f', 10 * SEG, 5 * SEG);
    assert.deepEqual(events, [], 'no change, no event');
    assert.deepEqual(await whole('e'), data);
    assert.equal((await store.getattr('e', 'f')).size, data.length);
    // reaching past EOF from inside the last (partial) segment: its extent goes entirely
    await store.punchHole('e', 'f', 2 * SEG, 1 << 30);
    assert.equal((await store.getattr('e', 'f')).size, data.length);
    assert.equal((await store.getattr('e', 'f')).allocated, 2 * SEG);
    assert.deepEqual(await whole('e'), zeroed(data, [2 * SEG, data.length]));
    // and from the middle of a full segment to far past EOF
    await store.punchHole('e', 'f', SEG + 10, 2 ** 49);
    assert.equal((await store.getattr('e', 'f')).size, data.length);
    assert.equal((await store.getattr('e', 'f')).allocated, SEG + 10);
    assert.deepEqual(await whole('e'), zeroed(data, [SEG + 10, data.length]));
    // growing the file afterwards shows zeros, not the old bytes
    await store.truncate('e', 'f', 3 * SEG);
    assert.deepEqual(await whole('e'), Buffer.concat([data.subarray(0, SEG + 10), Buffer.alloc(3 * SEG - SEG - 10)]));
    // length 0 is a no-op, even inside the file
    events.length = 0;
    await store.punchHole('e', 'f', 5, 0);
    assert.deepEqual(events, []);
    assert.deepEqual(await store.read('e', 'f', 0, 20), data.subarray(0, 20));
  });

  it('a snapshot taken before the punch keeps the old bytes (and its segments)', async () => {
    const data = prand(6 * SEG, 6);
    await fileWith('snap', data);
    const v = await store.snapshot('snap');
    await store.punchHole('snap', 'f', SEG + 5, 3 * SEG);
    assert.deepEqual(await whole('snap'), zeroed(data, [SEG + 5, 4 * SEG + 5]));
    assert.deepEqual(await whole('snap', 'f', v), data);
    assert.equal((await store.getattr('snap', 'f', v)).allocated, 6 * SEG);
    // the snapshot still references the dropped segments: nothing to collect
    assert.equal((await store.gc()).segmentsRemoved, 0);
    assert.deepEqual(await whole('snap', 'f', v), data);
    // buffered data punched before a snapshot is not in it
    await store.writeBuffered('snap', 'f', 0, Buffer.alloc(100, 0x55));
    await store.punchHole('snap', 'f', 0, 50);
    const v2 = await store.snapshot('snap');
    const want = zeroed(data, [SEG + 5, 4 * SEG + 5]);
    want.fill(0x55, 50, 100);
    want.fill(0, 0, 50);
    assert.deepEqual(await whole('snap', 'f', v2), want);
    assert.deepEqual(await whole('snap', 'f', v), data);
  });

  it('clones sharing segments are not affected, either way round', async () => {
    const data = prand(6 * SEG, 7);
    await fileWith('src', data);
    await store.clone('src', { id: 'dst' });
    await store.punchHole('src', 'f', 0, 3 * SEG + 7);
    assert.deepEqual(await whole('src'), zeroed(data, [0, 3 * SEG + 7]));
    assert.deepEqual(await whole('dst'), data);
    assert.equal((await store.gc()).segmentsRemoved, 0, 'the clone still references them');
    await store.punchHole('dst', 'f', 5 * SEG, SEG);
    assert.deepEqual(await whole('dst'), zeroed(data, [5 * SEG, 6 * SEG]));
    assert.deepEqual(await whole('src'), zeroed(data, [0, 3 * SEG + 7]));
    // segs 0..2 only src dropped, seg 5 only dst dropped; seg 3 was rewritten in src
    await store.delete('dst');
    await store.gc();
    assert.deepEqual(await whole('src'), zeroed(data, [0, 3 * SEG + 7]));
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('rejects bad arguments like the other file operations', async () => {
    const data = prand(2 * SEG, 8);
    await fileWith('bad', data);
    await store.mkdir('bad', 'dir');
    await rejectsWith(store.punchHole('bad', 'f', -1, 10), 'INVALID_ARGUMENT', /offset -1/);
    await rejectsWith(store.punchHole('bad', 'f', 0, -10), 'INVALID_ARGUMENT', /length -10/);
    await rejectsWith(store.punchHole('bad', 'f', 1.5, 10), 'INVALID_ARGUMENT', /offset 1.5/);
    await rejectsWith(store.punchHole('bad', 'f', 0, 2.5), 'INVALID_ARGUMENT', /length 2.5/);
    await rejectsWith(store.punchHole('bad', 'f', Number.NaN, 1), 'INVALID_ARGUMENT');
    await rejectsWith(store.punchHole('bad', 'f', 0, Infinity), 'INVALID_ARGUMENT');
    const big = await rejectsWith(store.punchHole('bad', 'f', 2 ** 50 - 1, 2), 'INVALID_ARGUMENT', /maximum file size/);
    assert.equal(big.errno, 'EFBIG');
    await rejectsWith(store.punchHole('bad', 'missing', 0, 1), 'NOT_FOUND', /missing not found/);
    await rejectsWith(store.punchHole('nope', 'f', 0, 1), 'NOT_FOUND', /capsule nope not found/);
    const isDir = await rejectsWith(store.punchHole('bad', 'dir', 0, 1), 'INVALID_ARGUMENT', /is a directory/);
    assert.equal(isDir.errno, 'EISDIR');
    await rejectsWith(store.punchHole('bad', 'f/x', 0, 1), 'NOT_FOUND');
    // nothing changed
    assert.deepEqual(await whole('bad'), data);
    await store.close();
    await rejectsWith(store.punchHole('bad', 'f', 0, 1), 'UNAVAILABLE', /closed/);
    store = Store.open(dir);
  });

  it('invalidates memoized reads (tryReadSync) of a sequential reader', async () => {
    const data = prand(4 * SEG, 9);
    await fileWith('m', data);
    // become a sequential reader with the segments cached
    await store.read('m', 'f', 0, SEG);
    await store.read('m', 'f', SEG, SEG);
    await store.read('m', 'f', 2 * SEG, SEG);
    const hit = store.tryReadSync('m', 'f', 2 * SEG, SEG);
    assert.ok(hit, 'served from memory');
    assert.deepEqual(hit, data.subarray(2 * SEG, 3 * SEG));
    await store.punchHole('m', 'f', 2 * SEG, SEG);
    // a hole needs no segment: served from memory, and must not come from the stale memo
    assert.deepEqual(store.tryReadSync('m', 'f', 2 * SEG, SEG), Buffer.alloc(SEG));
    await store.punchHole('m', 'f', 3 * SEG + 10, 10);
    const part = store.tryReadSync('m', 'f', 3 * SEG, SEG) ?? (await store.read('m', 'f', 3 * SEG, SEG));
    assert.deepEqual(part, zeroed(data.subarray(3 * SEG), [10, 20]));
  });

  it('concurrent buffered writes and punches on different ranges of one file both take effect', async () => {
    const data = prand(12 * SEG, 10);
    await fileWith('c', data);
    const expect = Buffer.from(data);
    for (let round = 0; round < 24; round++) {
      const piece = prand(200 + round, 100 + round);
      // the write and the punch share segments (different bytes), so they race on the same bases
      const wOff = (round % 6) * SEG + 37 + round;
      const pOff = wOff + piece.length + 13;
      const pLen = SEG + 50 * round;
      const tail = 11 * SEG + round * 10;
      const jobs: Promise<unknown>[] = [
        store.writeBuffered('c', 'f', wOff, piece),
        store.punchHole('c', 'f', pOff, pLen),
        store.writeBuffered('c', 'f', tail, Buffer.alloc(5, 0x60 + round)),
      ];
      if (round % 3 === 0) jobs.push(store.flush('c', 'f'));
      if (round % 3 === 1) jobs.reverse(); // the punch first: writes load bases it is replacing
      await Promise.all(jobs);
      piece.copy(expect, wOff);
      expect.fill(0, pOff, pOff + pLen);
      expect.fill(0x60 + round, tail, tail + 5);
      // at most two segments are buffered here, so no write-behind commit runs during the read
      const got = await whole('c');
      assert.equal(got.length, data.length, `round ${round}: size unchanged`);
      assert.ok(got.equals(expect), `round ${round}: both the writes and the punch are visible`);
      await store.flush('c', 'f');
      assert.ok((await whole('c')).equals(expect), `round ${round}: after flush`);
    }
    await store.close();
    store = Store.open(dir);
    assert.ok((await whole('c')).equals(expect), 'after reopen');
  });

  it('a buffered write whose base load straddles a punch does not bring punched bytes back', async () => {
    // no segment cache: every base load of writeBuffered goes to the codec worker and takes a
    // while, and the punch (trim or whole delete: no loads of its own) commits meanwhile
    await store.close();
    store = Store.open(dir, { cacheBytes: 0 });
    const data = prand(8 * SEG, 13);
    await fileWith('inv', data);
    const expect = Buffer.from(data);
    for (let seg = 0; seg < 8; seg++) {
      const piece = Buffer.alloc(10, 0xe0 + seg);
      const w = store.writeBuffered('inv', 'f', seg * SEG + 5, piece);
      const p = seg % 2 === 0
        ? store.punchHole('inv', 'f', seg * SEG + 100, SEG - 100) // trims the extent to 100 bytes
        : store.punchHole('inv', 'f', seg * SEG, 5); // rewrite with its first 5 bytes zeroed
      await Promise.all([w, p]);
      if (seg % 2 === 0) expect.fill(0, seg * SEG + 100, seg * SEG + SEG);
      else expect.fill(0, seg * SEG, seg * SEG + 5);
      piece.copy(expect, seg * SEG + 5);
      assert.ok((await whole('inv')).equals(expect), `segment ${seg}: punched bytes stay zero`);
      // commit now: fewer than four buffered segments, so no write-behind runs during a read
      await store.flush('inv', 'f');
      assert.ok((await whole('inv')).equals(expect), `segment ${seg}: after flush`);
    }
  });

  it('many concurrent punches and writes on disjoint ranges all land', async () => {
    const data = prand(32 * SEG, 12);
    await fileWith('m2', data);
    const expect = Buffer.from(data);
    const jobs: Promise<unknown>[] = [];
    // even slots get a write, odd slots a punch; slots are 1.5 segments wide so edges share segments
    const slot = SEG + SEG / 2;
    for (let i = 0; i * slot + slot <= data.length; i++) {
      const off = i * slot;
      if (i % 2 === 0) {
        const piece = Buffer.alloc(slot - 3, 0xa0 + i);
        jobs.push(store.writeBuffered('m2', 'f', off + 1, piece));
        piece.copy(expect, off + 1);
      } else {
        jobs.push(store.punchHole('m2', 'f', off + 2, slot - 4));
        expect.fill(0, off + 2, off + slot - 2);
      }
    }
    await Promise.all(jobs);
    await store.flush('m2', 'f');
    assert.ok((await whole('m2')).equals(expect));
    await store.close();
    store = Store.open(dir);
    assert.ok((await whole('m2')).equals(expect), 'after reopen');
  });

  it('a punch racing a flush of the same file keeps both', async () => {
    await store.create({ id: 'r', policy: validatePolicy({ segmentSize: SEG }) });
    await store.createFile('r', 'f');
    const data = prand(16 * SEG, 11);
    await store.writeBuffered('r', 'f', 0, data);
    const f = store.flush('r', 'f');
    const p = store.punchHole('r', 'f', 3 * SEG + 1, 5 * SEG);
    await Promise.all([f, p]);
    await store.flush('r', 'f');
    const want = zeroed(data, [3 * SEG + 1, 8 * SEG + 1]);
    assert.deepEqual(await whole('r'), want);
    await store.close();
    store = Store.open(dir);
    assert.deepEqual(await whole('r'), want);
    assert.equal((await store.getattr('r', 'f')).allocated, 16 * SEG - 4 * SEG - (SEG - 1));
  });
});
