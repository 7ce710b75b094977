import assert from 'node:assert/strict';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Store } from '../capsule/store.js';
import { SpaceError } from '../capsule/errors.js';
import path from 'node:path';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, chunks, sha256, prand } from './helpers/tmp.js';

function tryMountTmpfs(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('full disk', function () {
  this.timeout(60_000);
  let dir: string;
  let mounted = false;
  before(function () {
    dir = tmpDir('space-full-');
    mounted = tryMountTmpfs(dir, '6m');
    if (!mounted) {
      console.log('    (skipped: needs root to mount a small tmpfs)');
      this.skip();
    }
  });
  after(() => {
    if (mounted) execFileSync('umount', ['-l', dir]);
    rmrf(dir);
  });

  it('fails writes with RESOURCE_EXHAUSTED and loses nothing committed', async () => {
    const store = Store.open(`${dir}/data`);
    const first = crypto.randomBytes(1 << 20);
    await store.create({ id: 'keep' });
    await store.put('keep', 'content', chunks(first));
    await store.create({ id: 'fill' });
    let failure: unknown;
    try {
      await store.put('fill', 'content', chunks(crypto.randomBytes(16 << 20)));
    } catch (e) {
      failure = e;
    }
    assert.ok(failure instanceof SpaceError, `expected SpaceError, got ${failure}`);
    assert.equal(failure.code, 'RESOURCE_EXHAUSTED');
    assert.equal(failure.errno, 'ENOSPC');
    assert.match(failure.message, /no space left/);
    // the failed put committed nothing and the earlier capsule is intact
    await assert.rejects(store.getattr('fill', 'content'), /not found/);
    assert.equal(sha256(await store.read('keep', 'content', 0, 2 << 20)), sha256(first));
    // buffered writes that cannot flush fail the same way and stay retryable
    await store.createFile('keep', 'more');
    await store.writeBuffered('keep', 'more', 0, crypto.randomBytes(8 << 20)).catch(() => {});
    await assert.rejects(store.flush('keep', 'more'), (e: unknown) => e instanceof SpaceError && e.code === 'RESOURCE_EXHAUSTED');
    await store.unlink('keep', 'more');
    await store.close();
    // after a restart: orphans from the failed put are cleaned, space comes back, writes work again
    const again = Store.open(`${dir}/data`);
    assert.deepEqual((await again.fsck()).problems, []);
    await again.put('fill', 'content', chunks(crypto.randomBytes(1 << 20)));
    assert.equal(sha256(await again.read('keep', 'content', 0, 2 << 20)), sha256(first));
    await again.close();
    assert.ok(fs.existsSync(`${dir}/data/meta.db`));
  });

  // Spares (capsule/segment-files.ts) hold the space of freed segments for reuse. Small spares
  // from a 64 KiB-segment capsule cannot hold 1 MiB segments: each write takes one and grows it
  // while the rest still hold their space, so the disk fills up before the data does. Both ways
  // of writing: buffered writes (the segment is copied to the codec worker) and put (moved).
  const writers: [string, (store: Store, data: Buffer) => Promise<void>][] = [
    ['buffered writes and flush', async (store, data) => {
      await store.createFile('big', 'new');
      await store.writeBuffered('big', 'new', 0, data);
      await store.flush('big', 'new');
    }],
    ['put', (store, data) => store.put('big', 'new', chunks(data)).then(() => {})],
  ];
  for (const [how, write] of writers) {
    it(`gives the spare segment files back when a write finds the disk full (${how}), then writes`, async () => {
      // A disk of its own: the first test's capsules stay on the other one.
      const data = tmpDir('space-full-spares-');
      assert.ok(tryMountTmpfs(data, '6m'));
      const store = Store.open(data, { spareSegmentFiles: 1024 });
      try {
        await store.create({ id: 'small', policy: validatePolicy({ segmentSize: '64KiB', encryption: false, compression: 'none' }) });
        await store.create({ id: 'big', policy: validatePolicy({ encryption: false, compression: 'none' }) });
        await store.put('small', 'old', chunks(prand(4 << 20, 7)));
        await store.unlink('small', 'old');
        await store.reclaimSettled();
        const spares = () => fs.readdirSync(path.join(data, 'tmp')).length;
        assert.equal(spares(), 64, 'the freed segments are spares, their space still taken');
        const next = prand(3 << 20, 8);
        await write(store, next); // ENOSPC without giving the spares back
        assert.equal(spares(), 0, 'the spares were dropped to make room');
        assert.equal(sha256(await store.read('big', 'new', 0, next.length)), sha256(next));
        assert.deepEqual((await store.fsck()).problems, []);
      } finally {
        await store.close();
        execFileSync('umount', ['-l', data]);
        rmrf(data);
      }
    });
  }
});
