import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { SegmentFileWriter } from '../capsule/direct-write.js';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand, chunks } from './helpers/tmp.js';
import { enforcesAlignment } from './helpers/direct-io.js';

/** Split `b` into parts at pseudo-random points (parts cross the 4 KiB alignment anywhere). */
function split(b: Buffer, seed: number): Buffer[] {
  const parts: Buffer[] = [];
  let at = 0;
  let x = seed;
  while (at < b.length) {
    x = (x * 1103515245 + 12345) >>> 0;
    const n = Math.min(b.length - at, 1 + (x % 70000));
    parts.push(b.subarray(at, at + n));
    at += n;
  }
  return parts;
}

/** A filesystem that refuses O_DIRECT at open, as some FUSE and overlay filesystems do. */
class RefusingOpen extends SegmentFileWriter {
  opens = 0;
  protected override openDirect(): number {
    this.opens++;
    throw Object.assign(new Error('EINVAL: invalid argument, open'), { code: 'EINVAL' });
  }
}

/** A staging buffer off the alignment: the kernel refuses the first direct write with EINVAL. */
class MisalignedStaging extends SegmentFileWriter {
  private raw = Buffer.from(new WebAssembly.Memory({ initial: 64 }).buffer);
  protected override stagingFor(bytes: number): Buffer {
    return this.raw.subarray(1, 1 + bytes);
  }
}

describe('segment files written with O_DIRECT', function () {
  let dir: string;
  beforeEach(() => {
    dir = tmpDir();
  });
  afterEach(() => rmrf(dir));

  it('writes every size exactly, the aligned body directly and the tail through the page cache', () => {
    const w = new SegmentFileWriter(true);
    const sizes = [0, 1, 4095, 4096, 4097, 8192 + 13, (1 << 20) + 44, 3 * (1 << 20) + 7, 1 << 20];
    for (const [i, size] of sizes.entries()) {
      const data = prand(size, i + 1);
      for (const fsync of [false, true]) {
        const f = path.join(dir, `s${i}-${fsync}`);
        w.writeNew(f, split(data, i * 7 + 1), fsync);
        assert.deepEqual(fs.readFileSync(f), data, `size ${size}, fsync ${fsync}`);
        assert.equal(fs.statSync(f).mode & 0o777, 0o600);
      }
    }
    assert.equal(w.usesDirectIo, true, 'this filesystem takes O_DIRECT and the writer kept using it');
  });

  it('refuses to overwrite an existing file, direct or not, and leaves it as it was', () => {
    for (const direct of [true, false]) {
      const f = path.join(dir, `exists-${direct}`);
      fs.writeFileSync(f, 'keep me');
      assert.throws(() => new SegmentFileWriter(direct).writeNew(f, [prand(64 << 10, 3)], false), /EEXIST/);
      assert.equal(fs.readFileSync(f, 'utf8'), 'keep me');
    }
  });

  it('a missing directory is an error that leaves nothing behind', () => {
    const f = path.join(dir, 'no-such-dir', 'seg');
    assert.throws(() => new SegmentFileWriter(true).writeNew(f, [prand(64 << 10, 4)], true), /ENOENT/);
    assert.equal(fs.existsSync(path.dirname(f)), false);
  });

  it('falls back to buffered writes for good when the filesystem refuses O_DIRECT at open', () => {
    const w = new RefusingOpen(true);
    for (let i = 0; i < 3; i++) {
      const data = prand(200_000 + i, 10 + i);
      const f = path.join(dir, `r${i}`);
      w.writeNew(f, split(data, i), true);
      assert.deepEqual(fs.readFileSync(f), data);
    }
    assert.equal(w.opens, 1, 'asked once, then remembered');
    assert.equal(w.usesDirectIo, false);
  });

  it('falls back when the first direct write is refused, leaving no partial file', function () {
    if (!enforcesAlignment(dir)) {
      console.log('      (skipped: this filesystem does not enforce O_DIRECT alignment)');
      this.skip();
    }
    const w = new MisalignedStaging(true);
    const data = prand((1 << 20) + 44, 20);
    const f = path.join(dir, 'm');
    w.writeNew(f, split(data, 5), false);
    assert.deepEqual(fs.readFileSync(f), data);
    assert.equal(w.usesDirectIo, false);
    assert.deepEqual(fs.readdirSync(dir), ['m']);
  });

  it('a store writing direct or buffered stores the same bytes and reads them back verified', async () => {
    const policies = [validatePolicy({ segmentSize: '64KiB' }), validatePolicy({ segmentSize: '64KiB', encryption: true })];
    for (const directIo of [true, false]) {
      const d = path.join(dir, `store-${directIo}`);
      const store = Store.open(d, { directIo });
      try {
        for (const [i, policy] of policies.entries()) {
          await store.create({ id: `c${i}`, policy });
          const data = prand(10 * 65536 + 999, 30 + i);
          await store.put(`c${i}`, 'f', chunks(data, 50_000));
          await store.write(`c${i}`, 'f', 70_000, prand(100_000, 40 + i));
          data.set(prand(100_000, 40 + i), 70_000);
          assert.deepEqual(await store.read(`c${i}`, 'f', 0, data.length), data);
        }
        assert.equal((await store.fsck()).problems.length, 0);
      } finally {
        await store.close();
      }
      const again = Store.open(d, { directIo });
      try {
        assert.equal((await again.fsck()).problems.length, 0, 'and after a reopen');
      } finally {
        await again.close();
      }
    }
  });
});
