import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import type { SegmentFiles } from '../capsule/segment-files.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand, chunks, segmentFiles } from './helpers/tmp.js';

const SEG = 64 * 1024;
const policy = validatePolicy({ segmentSize: '64KiB' });

/** Wait (bounded) until `cond` holds: reclamation runs on its own, a turn or a retry later. */
async function eventually(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), what);
}

describe('capsule store: prompt reclamation of unreferenced segments', function () {
  let dir: string;
  let store: Store;
  beforeEach(() => {
    dir = tmpDir();
    // Freed files are deleted, not kept as spares (store-spares.test.ts covers those).
    store = Store.open(dir, { spareSegmentFiles: 0 });
  });
  /** Gates a test left shut (it failed half way): opened before closing, so close() can finish. */
  const gates: (() => void)[] = [];
  afterEach(async () => {
    for (const open of gates.splice(0)) open();
    await store.close();
    rmrf(dir);
  });

  it('an overwritten file gives its old segments back without gc, and the new data reads back', async () => {
    await store.create({ id: 'o', policy });
    await store.put('o', 'f', chunks(prand(8 * SEG, 1)));
    assert.equal(segmentFiles(dir).length, 8);
    const next = prand(8 * SEG, 2);
    await store.put('o', 'f', chunks(next));
    await eventually(() => segmentFiles(dir).length === 8, 'the first version\'s 8 segments are gone by themselves');
    assert.deepEqual(await store.read('o', 'f', 0, next.length), next);
    assert.equal((await store.storeStat()).segments, 8);
    assert.deepEqual(await store.gc(), { segmentsRemoved: 0, bytesFreed: 0 }, 'nothing left for gc');
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('truncate, unlink and capsule delete free what only they referenced', async () => {
    await store.create({ id: 't', policy });
    await store.put('t', 'a', chunks(prand(4 * SEG, 3)));
    await store.put('t', 'b', chunks(prand(4 * SEG, 4)));
    await store.truncate('t', 'a', SEG);
    assert.equal(store.reclaim().segmentsRemoved, 3);
    await store.unlink('t', 'b');
    assert.equal(store.reclaim().segmentsRemoved, 4);
    await store.delete('t');
    assert.equal(store.reclaim().segmentsRemoved, 1);
    assert.equal(segmentFiles(dir).length, 0);
  });

  it('keeps segments a snapshot, a clone or another file still references', async () => {
    const shared = prand(2 * SEG, 5);
    await store.create({ id: 's', policy });
    await store.put('s', 'f', chunks(Buffer.concat([shared, prand(2 * SEG, 6)])));
    await store.put('s', 'copy', chunks(shared)); // dedups against f's first two segments
    await store.snapshot('s');
    await store.clone('s', { id: 's-clone' });
    await store.unlink('s', 'f');
    await store.unlink('s', 'copy');
    assert.equal(store.reclaim().segmentsRemoved, 0, 'the snapshot and the clone hold all four');
    await store.delete('s');
    assert.equal(store.reclaim().segmentsRemoved, 0, 'the clone still holds them');
    assert.deepEqual(await store.read('s-clone', 'copy', 0, shared.length), shared);
    await store.unlink('s-clone', 'copy');
    assert.equal(store.reclaim().segmentsRemoved, 0, 'f in the clone shares those two');
    await store.unlink('s-clone', 'f');
    assert.equal(store.reclaim().segmentsRemoved, 4);
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('frees while buffered writes are pending elsewhere, and those writes still land', async () => {
    await store.create({ id: 'b', policy });
    await store.put('b', 'old', chunks(prand(4 * SEG, 7)));
    await store.createFile('b', 'new');
    const half = prand(SEG / 2, 8);
    await store.writeBuffered('b', 'new', 0, half); // stays buffered (half a segment)
    await store.unlink('b', 'old');
    assert.equal(store.reclaim().segmentsRemoved, 4, 'the buffered write does not hold the old file\'s segments');
    await store.flush('b', 'new');
    assert.deepEqual(await store.read('b', 'new', 0, SEG), half);
    assert.equal(segmentFiles(dir).length, 1);
  });

  it('a buffered write that merges with a segment freed under it still reads it (the load is registered)', async () => {
    await store.create({ id: 'm', policy });
    const base = prand(2 * SEG, 13);
    for (let round = 0; round < 20; round++) {
      await store.put('m', 'f', chunks(base));
      // a partial write loads its base segment while a put replaces (and frees) that segment
      const patch = Buffer.from(`round ${round}`);
      const w = store.writeBuffered('m', 'f', 100, patch);
      const p = store.put('m', 'f', chunks(base));
      await Promise.all([w, p]);
      await store.flush('m', 'f');
      const got = await store.read('m', 'f', 0, base.length);
      assert.equal(got.length, base.length);
      assert.ok(got.subarray(0, 100).equals(base.subarray(0, 100)), `round ${round}`);
    }
    assert.deepEqual((await store.fsck()).problems, []);
  });

  it('rewriting just-freed content (dedup) races reclamation without losing a segment', async () => {
    await store.create({ id: 'r', policy });
    const data = prand(6 * SEG, 9);
    for (let round = 0; round < 20; round++) {
      await store.put('r', 'f', chunks(data));
      // the old copy's segments are noted as freed while the same content is stored again
      await Promise.all([store.truncate('r', 'f', 0), store.put('r', `g${round % 3}`, chunks(data))]);
      await store.put('r', 'f', chunks(data));
      store.reclaim();
      assert.deepEqual(await store.read('r', 'f', 0, data.length), data, `round ${round}`);
    }
    await store.close();
    store = Store.open(dir); // nothing cached: every segment comes from its file
    for (const f of ['f', 'g0', 'g1', 'g2']) assert.deepEqual(await store.read('r', f, 0, data.length), data);
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('fsck running while overwrites free segments reports no false "missing" segment', async () => {
    await store.create({ id: 'k', policy });
    for (let i = 0; i < 8; i++) await store.put('k', `f${i}`, chunks(prand(4 * SEG, 100 + i)));
    let stop = false;
    const churn = (async () => {
      for (let round = 0; !stop; round++) {
        await store.put('k', `f${round % 8}`, chunks(prand(4 * SEG, 200 + round)));
        await new Promise((r) => setImmediate(r)); // let reclamation run between puts
      }
    })();
    try {
      for (let i = 0; i < 5; i++) assert.deepEqual((await store.fsck()).problems, []);
    } finally {
      stop = true;
      await churn;
    }
  });

  it('frees a large delete in batches (the event loop is not held for all of it at once)', async () => {
    await store.create({ id: 'big', policy: validatePolicy({ segmentSize: '4KiB' }) });
    await store.put('big', 'f', chunks(prand(600 * 4096, 11)));
    assert.equal(segmentFiles(dir).length, 600);
    await store.delete('big');
    await eventually(() => segmentFiles(dir).length === 0, 'all 600 freed, over three batches');
    await store.create({ id: 'big2', policy: validatePolicy({ segmentSize: '4KiB' }) });
    await store.put('big2', 'f', chunks(prand(600 * 4096, 12)));
    await store.unlink('big2', 'f');
    const r = store.reclaim(); // every remaining batch, at once (a first one may have run by itself)
    assert.ok(r.segmentsRemoved > 0, 'reclaim() did the rest');
    assert.equal(segmentFiles(dir).length, 0);
  });

  /**
   * Hold the store's background deletes until `open()`: the files of a reclaimed batch wait in
   * tmp/ (renamed out of segments/ with their rows), their space not yet freed.
   */
  function gateDeletes(s: Store): { open: () => void; started: () => number } {
    const files = (s as unknown as { files: SegmentFiles }).files;
    const removeDetached = files.removeDetached.bind(files);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    gates.push(release);
    files.removeDetached = async (file: string) => {
      started++;
      await gate;
      return removeDetached(file);
    };
    return { open: release, started: () => started };
  }

  /** `pending` does not settle while the gate is shut, and does once it opens. */
  async function waitsForGate(gate: { open: () => void }, pending: Promise<unknown>, what: string): Promise<void> {
    let done = false;
    const watched = pending.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(done, false, what);
    gate.open();
    await watched;
  }

  const tmpFiles = () => fs.readdirSync(path.join(dir, 'tmp')).length;
  const turns = async (n: number) => {
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  };

  it('a background batch takes the files out with the rows and deletes them off the event loop', async () => {
    await store.create({ id: 'u', policy });
    await store.put('u', 'f', chunks(prand(8 * SEG, 21)));
    const gate = gateDeletes(store);
    await store.unlink('u', 'f');
    await turns(3); // the batch ran
    assert.equal(gate.started(), 8, 'every victim handed over in the batch\'s tick');
    assert.equal((await store.storeStat()).segments, 0, 'rows gone');
    assert.equal(segmentFiles(dir).length, 0, 'names gone with the rows');
    assert.equal(tmpFiles(), 8, 'the files wait in tmp/ for the thread pool');
    await waitsForGate(gate, store.reclaimSettled(), 'reclaimSettled() waits for the deletes in flight');
    assert.equal(tmpFiles(), 0, 'deleted once the gate opens');
    assert.deepEqual((await store.fsck()).problems, []);
  });

  it('a writer of content freed a moment ago writes a new file that the pending delete leaves alone', async () => {
    await store.create({ id: 'w', policy });
    const data = prand(6 * SEG, 22);
    await store.put('w', 'f', chunks(data));
    const gate = gateDeletes(store);
    await store.unlink('w', 'f');
    await turns(3);
    assert.equal(gate.started(), 6);
    await store.put('w', 'g', chunks(data)); // same content: its six segments again
    assert.equal(segmentFiles(dir).length, 6, 'written afresh under the freed names');
    gate.open();
    await eventually(() => tmpFiles() === 0, 'the old files deleted');
    assert.equal(segmentFiles(dir).length, 6, 'the new files survive the old ones\' delete');
    await store.close();
    store = Store.open(dir); // nothing cached: every segment comes from its file
    assert.deepEqual(await store.read('w', 'g', 0, data.length), data);
    assert.deepEqual((await store.fsck()).problems, []);
  });

  it('close() waits for the deletes of a batch in flight; files a killed process left in tmp/ go at the next open', async () => {
    await store.create({ id: 'c', policy });
    await store.put('c', 'a', chunks(prand(4 * SEG, 23)));
    const gate = gateDeletes(store);
    await store.unlink('c', 'a');
    await turns(3);
    assert.equal(tmpFiles(), 4);
    await waitsForGate(gate, store.close(), 'close() waits for the batch in flight');
    assert.equal(tmpFiles(), 0);
    // A process killed before its background deletes leaves the files in tmp/: the next open removes them.
    fs.writeFileSync(path.join(dir, 'tmp', `${'0'.repeat(64)}.freed-1-1`), Buffer.alloc(SEG));
    store = Store.open(dir);
    assert.equal(tmpFiles(), 0);
    assert.deepEqual((await store.fsck()).problems, []);
  });

  it('a file that cannot be taken out is left to recovery, and the store goes on', async () => {
    await store.create({ id: 'e', policy });
    await store.put('e', 'f', chunks(prand(3 * SEG, 25)));
    const files = (store as unknown as { files: SegmentFiles }).files;
    const detach = files.detachSync.bind(files);
    files.detachSync = () => {
      throw Object.assign(new Error('EIO: i/o error, rename'), { code: 'EIO' });
    };
    await store.unlink('e', 'f');
    await turns(3); // the batch ran: no uncaught error
    files.detachSync = detach;
    assert.equal((await store.storeStat()).segments, 0, 'rows gone');
    assert.equal(segmentFiles(dir).length, 3, 'the files stay, orphaned');
    await store.put('e', 'g', chunks(prand(2 * SEG, 26)));
    await store.close();
    store = Store.open(dir); // recovery removes the orphans
    assert.equal(segmentFiles(dir).length, 2);
    assert.deepEqual((await store.fsck()).problems, []);
  });

  it('is off with { reclaim: false }: segments wait for gc', async () => {
    await store.close();
    store = Store.open(dir, { reclaim: false });
    await store.create({ id: 'n', policy });
    await store.put('n', 'f', chunks(prand(3 * SEG, 10)));
    await store.unlink('n', 'f');
    assert.equal(store.reclaim().segmentsRemoved, 0);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(segmentFiles(dir).length, 3);
    assert.equal((await store.gc()).segmentsRemoved, 3);
  });
});
