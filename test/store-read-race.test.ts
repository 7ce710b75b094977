import assert from 'node:assert/strict';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand } from './helpers/tmp.js';

const SEG = 4096;

/**
 * A read spanning several segments must not lose buffered data that a concurrent flush commits
 * while the read waits for segment loads (it used to crash, or return zeros for a former hole).
 */
describe('capsule store: reads racing a flush', function () {
  let dir: string;
  let store: Store;
  beforeEach(() => {
    dir = tmpDir();
    // A tiny cache forces every committed segment through a real (asynchronous) load.
    store = Store.open(dir, { cacheBytes: 1, fsync: false });
  });
  afterEach(async () => {
    await store.close();
    rmrf(dir);
  });

  it('returns the buffered bytes whether or not the flush has committed them', async () => {
    await store.create({ name: 'r', policy: validatePolicy({ segmentSize: SEG }) });
    await store.createFile('r', 'f');
    const size = 16 * SEG;
    for (let round = 0; round < 60; round++) {
      const base = prand(size, round);
      await store.write('r', 'f', 0, base);
      // Buffer every other segment (the rest stay committed, or holes after a truncate).
      const expected = Buffer.from(base);
      for (let i = 0; i < 16; i += 2) {
        const piece = prand(SEG, 1000 + round * 16 + i);
        await store.writeBuffered('r', 'f', i * SEG, piece);
        piece.copy(expected, i * SEG);
      }
      const [, got] = await Promise.all([store.flush('r', 'f'), store.read('r', 'f', 0, size)]);
      assert.ok(got.equals(expected), `round ${round}: read differs from what was written`);
    }
  });
});
