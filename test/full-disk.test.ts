import assert from 'node:assert/strict';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Store } from '../capsule/store.js';
import { SpaceError } from '../capsule/errors.js';
import { tmpDir, rmrf, chunks, sha256 } from './helpers/tmp.js';

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
});
