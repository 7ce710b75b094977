import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { SegmentFileReader } from '../capsule/direct-read.js';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand, chunks } from './helpers/tmp.js';
import { enforcesAlignment } from './helpers/direct-io.js';

/** A filesystem that refuses O_DIRECT at open, as tmpfs and some FUSE filesystems do. */
class RefusingOpen extends SegmentFileReader {
  opens = 0;
  protected override openDirect(): number {
    this.opens++;
    throw Object.assign(new Error('EINVAL: invalid argument, open'), { code: 'EINVAL' });
  }
}

/** A buffer off the alignment: the kernel refuses the direct read with EINVAL. */
class MisalignedBuffer extends SegmentFileReader {
  private raw = Buffer.from(new WebAssembly.Memory({ initial: 64 }).buffer);
  protected override alignedFor(bytes: number): Buffer {
    return this.raw.subarray(1, 1 + bytes);
  }
}

const SIZES = [0, 1, 4095, 4096, 4097, 65536 + 44, (1 << 20) + 44, 3 * (1 << 20) + 7];

describe('segment files read with O_DIRECT', function () {
  let dir: string;
  beforeEach(() => {
    dir = tmpDir();
  });
  afterEach(() => rmrf(dir));

  it('reads every size exactly, direct and buffered, into one reused buffer', () => {
    for (const direct of [true, false]) {
      const r = new SegmentFileReader(direct);
      const files: { f: string; data: Buffer }[] = [];
      for (const [i, size] of SIZES.entries()) {
        const data = prand(size, 100 + i);
        const f = path.join(dir, `f-${direct}-${i}`);
        fs.writeFileSync(f, data);
        assert.deepEqual(r.readAll(f), data, `${size} bytes, direct ${direct}`);
        files.push({ f, data });
      }
      // Once grown to the largest file, every read lands in the same buffer (and stays exact).
      const buffer = r.readAll(files.at(-1)!.f).buffer;
      for (const { f, data } of files) {
        const got = r.readAll(f);
        assert.deepEqual(got, data);
        assert.equal(got.buffer, buffer, 'the buffer is reused');
      }
      assert.equal(r.usesDirectIo, direct, 'ext4 takes O_DIRECT: still direct after every size');
    }
  });

  it('reads into a caller\'s aligned buffer (a pool slot) when the file fits, and says null when not', () => {
    const slot = Buffer.from(new WebAssembly.Memory({ initial: 17 }).buffer).subarray(4096, 4096 + (1 << 20) + 4096);
    for (const direct of [true, false]) {
      const r = new SegmentFileReader(direct);
      for (const [i, size] of SIZES.entries()) {
        const data = prand(size, 200 + i);
        const f = path.join(dir, `s-${direct}-${i}`);
        fs.writeFileSync(f, data);
        const got = r.readInto(f, slot);
        const span = direct ? Math.ceil(size / 4096) * 4096 : size;
        if (span > slot.length) {
          assert.equal(got, null, `${size} bytes do not fit, direct ${direct}`);
          continue;
        }
        assert.deepEqual(got, data, `${size} bytes, direct ${direct}`);
        assert.equal(got!.buffer, slot.buffer, 'read where it was asked to');
        assert.equal(got!.byteOffset, slot.byteOffset);
      }
      assert.equal(r.usesDirectIo, direct);
    }
  });

  it('a missing file is ENOENT, direct or not', () => {
    for (const direct of [true, false]) {
      assert.throws(() => new SegmentFileReader(direct).readAll(path.join(dir, 'missing')), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
    }
  });

  it('falls back to ordinary reads for good when the filesystem refuses O_DIRECT at open', () => {
    const r = new RefusingOpen(true);
    for (let i = 0; i < 3; i++) {
      const data = prand(70_000 + i, 200 + i);
      const f = path.join(dir, `r${i}`);
      fs.writeFileSync(f, data);
      assert.deepEqual(r.readAll(f), data);
    }
    assert.equal(r.opens, 1, 'asked once, then remembered');
    assert.equal(r.usesDirectIo, false);
  });

  it('falls back when the direct read itself is refused', function () {
    if (!enforcesAlignment(dir)) {
      console.log('      (skipped: this filesystem does not enforce O_DIRECT alignment)');
      this.skip();
    }
    const r = new MisalignedBuffer(true);
    const data = prand((1 << 20) + 44, 300);
    const f = path.join(dir, 'm');
    fs.writeFileSync(f, data);
    assert.deepEqual(r.readAll(f), data);
    assert.equal(r.usesDirectIo, false);
  });

  it('an encrypted capsule reads back verified from a cold store with direct reads on and off, and damage is caught', async () => {
    for (const directIo of [true, false]) {
      const d = path.join(dir, `store-${directIo}`);
      const data = prand(5 * 65536 + 777, directIo ? 1 : 2);
      let store = Store.open(d, { directIo });
      try {
        await store.create({ id: 'enc', policy: validatePolicy({ segmentSize: '64KiB', encryption: true }) });
        await store.put('enc', 'f', chunks(data, 40_000));
      } finally {
        await store.close();
      }
      // Reopened: nothing cached, every segment comes from its file (a stream reads them past
      // the page cache when direct I/O is on; a random read through it).
      store = Store.open(d, { directIo });
      try {
        const streamed: Buffer[] = [];
        for await (const b of store.readStream('enc', 'f')) streamed.push(b);
        assert.deepEqual(Buffer.concat(streamed), data);
      } finally {
        await store.close();
      }
      store = Store.open(d, { directIo });
      try {
        assert.deepEqual(await store.read('enc', 'f', 0, data.length), data);
        assert.deepEqual(await store.read('enc', 'f', 65536 * 2 + 5, 70_000), data.subarray(65536 * 2 + 5, 65536 * 2 + 5 + 70_000));
      } finally {
        await store.close();
      }
      // One flipped bit in every segment file: a read names the capsule, file and offset.
      const segDir = path.join(d, 'segments');
      for (const sub of fs.readdirSync(segDir)) {
        for (const name of fs.readdirSync(path.join(segDir, sub))) {
          const f = path.join(segDir, sub, name);
          const b = fs.readFileSync(f);
          b[b.length >> 1]! ^= 0x04;
          fs.writeFileSync(f, b);
        }
      }
      store = Store.open(d, { directIo });
      try {
        await assert.rejects(store.read('enc', 'f', 65536 * 3 + 1, 10), (e: Error & { code?: string }) => e.code === 'DATA_LOSS' && /capsule enc, file f at offset 196608/.test(e.message));
        await assert.rejects(
          (async () => {
            for await (const b of store.readStream('enc', 'f')) void b;
          })(),
          (e: Error & { code?: string }) => e.code === 'DATA_LOSS' && /capsule enc, file f at offset 0/.test(e.message),
          'a stream (direct reads) catches it too',
        );
      } finally {
        await store.close();
      }
    }
  });
});
