import assert from 'node:assert/strict';
import { BufferRecycler } from '../capsule/buffer-recycler.js';

describe('buffer recycler', function () {
  it('keeps given memory up to its budget, by exact size, and makes room for the size in use', () => {
    const pool = new BufferRecycler({ maxBytes: 3 * 1000 });
    const a = pool.take(1000);
    assert.equal(a.length, 1000);
    pool.give(a.buffer as ArrayBuffer);
    assert.equal(pool.take(1000).buffer, a.buffer, 'same size: reused');
    pool.give(a.buffer as ArrayBuffer);
    assert.notEqual(pool.take(999).buffer, a.buffer, 'another size: new memory');
    for (let i = 0; i < 4; i++) pool.give(new ArrayBuffer(1000));
    assert.equal(pool.keptBytes, 3000, 'the budget holds');
    pool.give(new ArrayBuffer(1500));
    assert.equal(pool.keptBytes, 1500, 'memory of the old size made room for the new one');
    assert.equal(pool.take(1500).byteLength, 1500);
    assert.equal(pool.keptBytes, 0);
  });

  it('keeps at most maxPerSize buffers of a size', () => {
    const pool = new BufferRecycler({ maxPerSize: 2 });
    const given = [new ArrayBuffer(100), new ArrayBuffer(100), new ArrayBuffer(100)];
    for (const ab of given) pool.give(ab);
    assert.equal(pool.keptBytes, 200);
    const taken = [pool.take(100).buffer, pool.take(100).buffer, pool.take(100).buffer];
    assert.deepEqual(taken.map((ab) => given.indexOf(ab as ArrayBuffer)), [1, 0, -1], 'the two kept ones, newest first, then new memory');
  });

  it('gives shared memory when asked, and takes it back like any other', () => {
    const pool = new BufferRecycler({ maxBytes: 4096, shared: true });
    const a = pool.take(1024);
    assert.ok(a.buffer instanceof SharedArrayBuffer);
    pool.give(a.buffer);
    assert.equal(pool.take(1024).buffer, a.buffer);
  });

  it('lets go of kept memory once nothing was taken for idleMs, and not while it is in use', async () => {
    const pool = new BufferRecycler({ maxBytes: 1 << 20, idleMs: 100 });
    pool.give(new ArrayBuffer(1000));
    pool.give(new ArrayBuffer(1000));
    // In use: a take every few ms, for three idle periods, keeps the (given back) memory.
    for (let i = 0; i < 60; i++) {
      await new Promise((r) => setTimeout(r, 5));
      pool.give(pool.take(1000).buffer as ArrayBuffer);
    }
    assert.equal(pool.keptBytes, 2000, 'kept while taken from');
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(pool.keptBytes, 0, 'idle: let go');
    assert.notEqual(pool.take(1000).byteLength, 0, 'and it still serves');
  });
});
