import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { validatePolicy, type Policy } from '../capsule/policy.js';
import { CodecPool } from '../capsule/codec-pool.js';
import { tmpDir, rmrf, sha256, prand, chunks, segmentFiles } from './helpers/tmp.js';
import { rejectsWith } from './helpers/assert.js';

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('capsule store', function () {
  let dir: string;
  let store: Store;
  beforeEach(() => {
    dir = tmpDir();
    store = Store.open(dir);
  });
  afterEach(async () => {
    await store.close();
    rmrf(dir);
  });

  describe('round trips every policy combination', function () {
    const compressions = ['none', 'gzip', 'brotli', 'zstd'] as const;
    for (const compression of compressions) {
      for (const encrypted of [false, true]) {
        it(`compression=${compression} encryption=${encrypted}`, async () => {
          const policy = validatePolicy({ compression, encryption: encrypted, segmentSize: '64KiB' });
          await store.create({ id: 'c1', policy });
          // compressible text plus random bytes plus an unaligned tail
          const data = Buffer.concat([Buffer.from('hello capsule '.repeat(20000)), prand(300_000, 3), Buffer.from('tail')]);
          const attr = await store.put('c1', 'content', chunks(data, 10_000));
          assert.equal(attr.size, data.length);
          assert.equal(sha256(await collect(store.readStream('c1', 'content'))), sha256(data));
          // random access at awkward offsets
          for (const [off, len] of [[0, 1], [65535, 2], [65536 * 3 + 7, 100_000], [data.length - 3, 10]] as const) {
            assert.deepEqual(await store.read('c1', 'content', off, len), data.subarray(off, off + len));
          }
          const st = await store.stat('c1');
          assert.equal(st.logicalSize, data.length);
          if (compression !== 'none') assert.ok(st.storedSize < data.length, `compressed stored ${st.storedSize} < ${data.length}`);
          if (encrypted) {
            // no segment on disk contains the plaintext
            for (const f of segmentFiles(dir)) assert.ok(!fs.readFileSync(f).includes(Buffer.from('hello capsule hello')), 'plaintext leaked');
          }
        });
      }
    }
  });

  it('gives the same bytes and addresses with the inline codec as with the worker pool', async () => {
    const data = Buffer.concat([prand(150_000, 31), Buffer.from('small tail')]);
    await store.create({ id: 'pool', policy: validatePolicy({ encryption: true, compression: 'gzip', segmentSize: '64KiB' }) });
    await store.put('pool', 'content', chunks(data, 7_000));
    const viaPool = await store.stat('pool');
    await store.close();
    const inline = new CodecPool(0);
    assert.equal(inline.inline, true);
    store = Store.open(dir, { codecPool: inline });
    assert.deepEqual(await store.read('pool', 'content', 0, data.length), data);
    await store.put('pool', 'copy', chunks(data, 7_000));
    // same keyed addresses from either codec: the copy deduplicates completely
    assert.equal((await store.stat('pool')).segments, viaPool.segments);
    // small buffers handed to the pool must not disturb Node's shared allocation pool
    assert.equal(Buffer.from('still fine').toString(), 'still fine');
  });

  it('stores identical segments once and reports the dedup ratio', async () => {
    await store.create({ id: 'd1', policy: validatePolicy({ segmentSize: '64KiB' }) });
    const block = prand(65536, 9);
    await store.put('d1', 'content', chunks(Buffer.concat([block, block, block, block])));
    const st = await store.stat('d1');
    assert.equal(st.segments, 1);
    assert.equal(st.dedupRatio, 4);
    assert.equal(segmentFiles(dir).length, 1);
  });

  it('keeps keyed addresses per encryption domain (equal data, different addresses)', async () => {
    await store.create({ id: 'p1' });
    await store.create({ id: 'e1', policy: validatePolicy({ encryption: { keyRef: 'tenant-a' } }) });
    const data = prand(100_000, 4);
    await store.put('p1', 'content', chunks(data));
    await store.put('e1', 'content', chunks(data));
    assert.equal(segmentFiles(dir).length, 2);
    assert.equal((fs.statSync(path.join(dir, 'keys', 'tenant-a.kek')).mode & 0o777), 0o600);
  });

  it('refuses a KEK file readable by others', async () => {
    fs.mkdirSync(path.join(dir, 'keys'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'keys', 'loose.kek'), Buffer.alloc(32, 1), { mode: 0o644 });
    fs.chmodSync(path.join(dir, 'keys', 'loose.kek'), 0o644);
    await rejectsWith(store.create({ id: 'x', policy: validatePolicy({ encryption: { keyRef: 'loose' } }) }), 'PERMISSION_DENIED', /must be 0600/);
  });

  it('sparse files: holes read as zeros and take no space', async () => {
    const info = await store.create({ id: 'vol', size: 1 << 30 });
    assert.equal(info.id, 'vol');
    const a = await store.getattr('vol', 'content');
    assert.equal(a.size, 1 << 30);
    assert.equal(a.allocated, 0);
    assert.deepEqual(await store.read('vol', 'content', 5 << 20, 4096), Buffer.alloc(4096));
    await store.write('vol', 'content', 512 << 20, Buffer.from('middle'));
    assert.equal((await store.read('vol', 'content', (512 << 20) - 2, 10)).toString('latin1'), '\0\0middle\0\0');
    assert.equal((await store.stat('vol')).segments, 1);
    assert.equal(segmentFiles(dir).length, 1);
    // all-zero writes of a whole segment do not allocate either
    await store.write('vol', 'content', 0, Buffer.alloc(1 << 20));
    assert.equal(segmentFiles(dir).length, 1);
  });

  it('copy-on-write after snapshot: old versions keep their bytes', async () => {
    await store.create({ id: 'cow', policy: validatePolicy({ segmentSize: '64KiB' }) });
    const v1data = prand(200_000, 5);
    await store.put('cow', 'content', chunks(v1data));
    const v1 = await store.snapshot('cow');
    assert.equal(v1, 1);
    await store.write('cow', 'content', 70_000, Buffer.from('CHANGED'));
    await store.write('cow', 'content', 250_000, Buffer.from('GROWN'));
    const head = await store.read('cow', 'content', 0, 300_000);
    assert.equal(head.subarray(70_000, 70_007).toString(), 'CHANGED');
    assert.equal(head.length, 250_005);
    assert.deepEqual(await store.read('cow', 'content', 0, 300_000, v1), v1data);
    const info = await store.get('cow');
    assert.deepEqual(info.versions.map((v) => v.version), [1]);
    await rejectsWith(store.read('cow', 'content', 0, 1, 7), 'NOT_FOUND', /no version 7/);
  });

  it('clone shares segments (zero copy) and diverges independently', async () => {
    await store.create({ id: 'src', policy: validatePolicy({ encryption: true }) });
    const data = prand(3 << 20, 6);
    await store.put('src', 'content', chunks(data));
    const before = segmentFiles(dir).length;
    const cl = await store.clone('src', { id: 'dst', name: 'dst-clone' });
    assert.equal(cl.origin?.capsule, 'src');
    assert.equal(segmentFiles(dir).length, before, 'clone wrote no segments');
    assert.equal(sha256(await collect(store.readStream('dst-clone', 'content'))), sha256(data));
    await store.write('dst', 'content', 0, Buffer.from('clone-only'));
    assert.equal((await store.read('src', 'content', 0, 10)).toString('latin1'), data.subarray(0, 10).toString('latin1'));
    assert.equal((await store.read('dst', 'content', 0, 10)).toString(), 'clone-only');
    // clone of a snapshot
    const v = await store.snapshot('src');
    await store.write('src', 'content', 0, Buffer.from('after-snap'));
    const c2 = await store.clone('src', { id: 'from-v1', version: v });
    assert.equal(c2.origin?.version, v);
    assert.deepEqual(await store.read('from-v1', 'content', 0, 10), data.subarray(0, 10));
  });

  it('garbage collection frees only unreferenced segments', async () => {
    await store.close();
    store = Store.open(dir, { reclaim: false }); // gc on its own (store-reclaim.test.ts has the rest)
    await store.create({ id: 'g1' });
    await store.create({ id: 'g2' });
    const shared = prand(1 << 20, 7);
    await store.put('g1', 'content', chunks(Buffer.concat([shared, prand(1 << 20, 8)])));
    await store.put('g2', 'content', chunks(shared));
    assert.equal(segmentFiles(dir).length, 2);
    assert.deepEqual(await store.gc(), { segmentsRemoved: 0, bytesFreed: 0 });
    await store.delete('g1');
    const r = await store.gc();
    assert.equal(r.segmentsRemoved, 1);
    assert.ok(r.bytesFreed >= 1 << 20);
    assert.deepEqual(await store.read('g2', 'content', 0, 1 << 20), shared);
    // a snapshot keeps overwritten segments alive
    await store.snapshot('g2');
    await store.write('g2', 'content', 0, Buffer.from('x'));
    assert.equal((await store.gc()).segmentsRemoved, 0);
    assert.equal((await store.fsck()).problems.length, 0);
  });

  it('detects a flipped bit and a missing segment, naming capsule, file and offset', async () => {
    for (const encryption of [false, true]) {
      const id = `bad-${encryption}`;
      await store.create({ id, policy: validatePolicy({ encryption, segmentSize: '64KiB' }) });
      await store.put(id, 'dir/data.bin', chunks(prand(200_000, encryption ? 10 : 11)));
    }
    await store.close();
    const files = segmentFiles(dir);
    // flip one bit in the middle of every segment
    for (const f of files) {
      const b = fs.readFileSync(f);
      b[b.length >> 1]! ^= 0x10;
      fs.writeFileSync(f, b);
    }
    store = Store.open(dir);
    for (const id of ['bad-false', 'bad-true']) {
      const e = await rejectsWith(store.read(id, 'dir/data.bin', 70_000, 10), 'DATA_LOSS');
      assert.match(e.message, new RegExp(`capsule ${id}, file dir/data.bin at offset 65536`));
    }
    const report = await store.fsck();
    assert.equal(report.problems.length, files.length);
    assert.ok(report.problems.every((p) => p.file === 'dir/data.bin' && p.offset !== undefined));
    fs.rmSync(files[0]!);
    const r2 = await store.fsck();
    assert.ok(r2.problems.some((p) => p.problem === 'segment is missing'));
  });

  it('tree operations: mkdir, readdir, rename, unlink, rmdir, setattr, truncate', async () => {
    await store.create({ id: 't' });
    await store.mkdir('t', 'a');
    await store.mkdir('t', 'a/b', 0o700);
    await store.put('t', 'a/b/f.txt', chunks(Buffer.from('hello')));
    await store.createFile('t', 'a/empty');
    assert.deepEqual((await store.readdir('t', 'a')).map((e) => e.name), ['b', 'empty']);
    await rejectsWith(store.mkdir('t', 'a/b'), 'ALREADY_EXISTS');
    await rejectsWith(store.rmdir('t', 'a'), 'FAILED_PRECONDITION', /not empty/);
    await store.rename('t', 'a/b/f.txt', 'g.txt');
    assert.equal((await store.read('t', 'g.txt', 0, 100)).toString(), 'hello');
    await rejectsWith(store.getattr('t', 'a/b/f.txt'), 'NOT_FOUND');
    await rejectsWith(store.rename('t', 'a', 'a/b/inside'), 'INVALID_ARGUMENT', /into itself/);
    const at = await store.setattr('t', 'g.txt', { mode: 0o600, mtimeMs: 1000 });
    assert.equal(at.mode, 0o600);
    assert.equal(at.mtimeMs, 1000);
    await store.truncate('t', 'g.txt', 2);
    assert.equal((await store.read('t', 'g.txt', 0, 100)).toString(), 'he');
    await store.truncate('t', 'g.txt', 4);
    assert.equal((await store.read('t', 'g.txt', 0, 100)).toString('latin1'), 'he\0\0');
    await store.unlink('t', 'g.txt');
    await store.rmdir('t', 'a/b');
    await rejectsWith(store.unlink('t', 'a'), 'FAILED_PRECONDITION', /is a directory/);
    await rejectsWith(store.read('t', 'a', 0, 1), 'INVALID_ARGUMENT', /is a directory/);
  });

  it('getattr stays exact across buffered writes, flushes, truncates, renames and removal', async () => {
    await store.create({ id: 'attr', policy: validatePolicy({ segmentSize: '64KiB' }) });
    await store.put('attr', 'f', chunks(prand(100_000, 31)));
    let a = await store.getattr('attr', 'f');
    assert.equal(a.size, 100_000);
    assert.equal((await store.getattr('attr', 'f')).allocated, a.allocated, 'asked twice, same answer');
    // buffered (not yet committed) bytes show in size, mtime and allocated at once
    await store.writeBuffered('attr', 'f', 200_000, Buffer.from('tail'));
    a = await store.getattr('attr', 'f');
    assert.equal(a.size, 200_004);
    await store.flush('attr', 'f');
    assert.equal((await store.getattr('attr', 'f')).size, 200_004);
    await store.truncate('attr', 'f', 10);
    a = await store.getattr('attr', 'f');
    assert.equal(a.size, 10);
    assert.ok(a.allocated <= 65536, `allocated ${a.allocated} after truncate`);
    await store.setattr('attr', 'f', { mode: 0o640 });
    assert.equal((await store.getattr('attr', 'f')).mode, 0o640);
    await store.rename('attr', 'f', 'g');
    await rejectsWith(store.getattr('attr', 'f'), 'NOT_FOUND');
    assert.equal((await store.getattr('attr', 'g')).size, 10);
    await store.put('attr', 'f', chunks(Buffer.from('new file under the old name')));
    assert.equal((await store.getattr('attr', 'f')).size, 27);
    await store.unlink('attr', 'g');
    await rejectsWith(store.getattr('attr', 'g'), 'NOT_FOUND');
  });

  it('buffered writes are visible at once and durable after flush', async () => {
    await store.create({ id: 'b', policy: validatePolicy({ segmentSize: '64KiB' }) });
    await store.createFile('b', 'f');
    const data = prand(500_000, 12);
    for (let off = 0; off < data.length; off += 4096) await store.writeBuffered('b', 'f', off, data.subarray(off, off + 4096));
    assert.equal((await store.getattr('b', 'f')).size, data.length);
    assert.deepEqual(await store.read('b', 'f', 0, data.length), data);
    // write-behind may commit full segments early; the end-of-file segment waits for flush
    assert.ok(segmentFiles(dir).length < 8, 'the tail is still only buffered before flush');
    await store.flush('b', 'f');
    assert.equal(segmentFiles(dir).length, 8);
    await store.close();
    store = Store.open(dir);
    assert.deepEqual(await store.read('b', 'f', 0, data.length), data);
  });

  it('a buffered write racing a put or truncate never resurrects old bytes', async () => {
    await store.create({ id: 'race', policy: validatePolicy({ segmentSize: '64KiB' }) });
    const oldData = prand(200_000, 21);
    const newData = prand(200_000, 22);
    // newData's segments already exist, so the racing put commits without any file I/O: it
    // lands while the write is still reading its (old) base segment from disk.
    await store.put('race', 'copy-of-new', chunks(newData));
    for (let round = 0; round < 10; round++) {
      await store.put('race', 'f', chunks(oldData));
      const w = store.writeBuffered('race', 'f', 70_000 + round, Buffer.from('XY'));
      const p = store.put('race', 'f', chunks(newData, 1 << 20));
      await Promise.all([w, p]);
      await store.flush('race', 'f');
      const got = await store.read('race', 'f', 0, 300_000);
      assert.equal(got.length, newData.length);
      newData.copy(got, 70_000 + round, 70_000 + round, 70_002 + round); // the write may land before or after the put
      assert.ok(got.equals(newData), `round ${round}: old bytes came back after the put`);
    }
    // truncate while a flush of buffered data is in flight
    await store.put('race', 'g', chunks(Buffer.alloc(0)));
    await store.writeBuffered('race', 'g', 0, Buffer.alloc(300_000, 0x33));
    const f = store.flush('race', 'g');
    const t = store.truncate('race', 'g', 1000);
    await Promise.all([f, t]);
    await store.writeBuffered('race', 'g', 5000, Buffer.from('Z'));
    await store.flush('race', 'g');
    const g = await store.read('race', 'g', 0, 1 << 20);
    assert.equal(g.length, 5001);
    assert.ok(g.subarray(0, 1000).equals(Buffer.alloc(1000, 0x33)));
    assert.ok(g.subarray(1000, 5000).equals(Buffer.alloc(4000)), 'bytes past the truncation read as zeros');
  });

  it('normalises paths in messages and events', async () => {
    await store.create({ id: 'np' });
    await store.put('np', '/dir//f.txt', chunks(Buffer.from('x')));
    assert.equal((await store.read('np', 'dir/f.txt', 0, 1)).toString(), 'x');
    await assert.rejects(store.read('np', '/dir//missing', 0, 1), /dir\/missing not found/);
  });

  it('write-behind commits full segments of a sequential writer before any flush', async () => {
    await store.create({ id: 'wb', policy: validatePolicy({ segmentSize: '64KiB' }) });
    await store.createFile('wb', 'f');
    const data = prand(10 * 65536 + 1234, 41);
    for (let off = 0; off < data.length; off += 32768) await store.writeBuffered('wb', 'f', off, data.subarray(off, off + 32768));
    for (let i = 0; i < 50 && segmentFiles(dir).length < 4; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(segmentFiles(dir).length >= 4, 'full segments were committed in the background');
    assert.deepEqual(await store.read('wb', 'f', 0, data.length), data);
    await store.flush('wb', 'f');
    assert.equal(segmentFiles(dir).length, 11);
    await store.close();
    store = Store.open(dir);
    assert.deepEqual(await store.read('wb', 'f', 0, data.length), data);
  });

  it('rejects bad input with clear errors', async () => {
    await rejectsWith(store.create({ id: 'Bad_ID' }), 'INVALID_ARGUMENT', /must be a UUID or DNS label/);
    await store.create({ id: '550e8400-e29b-41d4-a716-446655440000', name: 'named' });
    await rejectsWith(store.create({ id: '550e8400-e29b-41d4-a716-446655440000' }), 'ALREADY_EXISTS');
    await rejectsWith(store.create({ id: 'other', name: 'named' }), 'ALREADY_EXISTS');
    await rejectsWith(store.read('nope', 'content', 0, 1), 'NOT_FOUND', /capsule nope not found/);
    await rejectsWith(store.read('named', 'missing', 0, 1), 'NOT_FOUND', /missing not found/);
    await rejectsWith(store.read('named', '../etc/passwd', 0, 1), 'INVALID_ARGUMENT');
    await rejectsWith(store.read('named', 'x', -1, 1), 'INVALID_ARGUMENT');
    await rejectsWith(store.create({ id: 'pp', policy: { compression: 'lz4' } as unknown as Policy }), 'INVALID_ARGUMENT', /compression: must be one of/);
  });

  it('a second open of the same data dir is refused while the first holds it', () => {
    assert.throws(() => Store.open(dir), /already open/);
  });

  it('watch streams change events', async () => {
    const ac = new AbortController();
    const seen: string[] = [];
    const done = (async () => {
      for await (const ev of store.watch(ac.signal)) {
        seen.push(`${ev.kind}:${ev.name}`);
        if (seen.length === 3) ac.abort();
      }
    })();
    await store.create({ id: 'w' });
    await store.put('w', 'content', chunks(Buffer.from('x')));
    await store.snapshot('w');
    await done;
    assert.deepEqual(seen, ['created:w', 'written:w', 'snapshot:w']);
  });
});
