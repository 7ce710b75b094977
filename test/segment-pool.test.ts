import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { HeldBytes, SLOT_ALIGN, SegmentPool } from '../capsule/segment-pool.js';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { IntegrityError } from '../capsule/errors.js';
import { tmpDir, rmrf, prand, segmentFiles } from './helpers/tmp.js';

const MiB = 1 << 20;

describe('segment pool: slots', () => {
  const SLOT = SegmentPool.slotBytesFor(MiB, 44);

  it('sizes slots to whole pages that hold a segment and its framing', () => {
    assert.equal(SLOT, MiB + SLOT_ALIGN);
    assert.equal(SegmentPool.slotBytesFor(64 << 10, 44), (64 << 10) + SLOT_ALIGN);
    assert.throws(() => new SegmentPool(1 << 30).take(1000), /multiple of 4096/);
  });

  it('hands out page-aligned slots of shared memory and reuses one once its last holder lets go', () => {
    const pool = new SegmentPool(256 * MiB);
    const a = pool.take(SLOT)!;
    const b = pool.take(SLOT)!;
    assert.ok(a.memory instanceof SharedArrayBuffer);
    assert.equal(a.offset % SLOT_ALIGN, 0);
    assert.equal(b.offset % SLOT_ALIGN, 0);
    assert.notEqual(a.offset, b.offset);
    const buf = Buffer.from(a.memory, a.offset + 28, MiB);
    pool.register(buf, a);
    const held = pool.hold(buf); // a second holder
    pool.release(a); // the first goes
    assert.equal(pool.snapshot().inUse, 2);
    held.release();
    held.release(); // twice is once
    assert.equal(pool.snapshot().inUse, 1);
    const c = pool.take(SLOT)!;
    assert.equal(c, a, 'the freed slot is taken again');
    assert.equal(pool.snapshot().reused, 1);
    assert.throws(() => {
      pool.release(b);
      pool.release(b);
    }, /released more often than held/);
  });

  it('never reuses a kept slot, and forgets a slab once nothing in it is in use', () => {
    const pool = new SegmentPool(64 * MiB);
    const first = pool.take(SLOT)!;
    const buf = Buffer.from(first.memory, first.offset, 16);
    pool.register(buf, first);
    const h = pool.hold(buf);
    const kept = h.keep();
    assert.equal(kept, buf);
    pool.release(first); // the kept slot retires: its slab has nothing else in use, so it goes
    const s = pool.snapshot();
    assert.equal(s.kept, 1);
    assert.equal(s.inUse, 0);
    assert.equal(s.bytes, 0, 'the slab no longer counts');
    assert.equal(s.freeSlots, 0);
    const next = pool.take(SLOT)!;
    assert.notEqual(next.memory, first.memory, 'a new slab, not the kept slot');
    kept[0] = 7; // still valid memory for whoever kept it
    assert.equal(kept[0], 7);
  });

  it('refuses slots past its cap (callers then use buffers of their own)', () => {
    const pool = new SegmentPool(64 * MiB); // exactly one slab of 63 slots
    const taken = [];
    for (let i = 0; i < 63; i++) taken.push(pool.take(SLOT));
    assert.ok(taken.every((t) => t !== null));
    assert.equal(pool.take(SLOT), null);
    assert.equal(pool.snapshot().refused, 1);
    pool.release(taken[5]!);
    assert.equal(pool.take(SLOT), taken[5], 'a freed slot is still handed out at the cap');
  });

  it('moves a hold to a part of the bytes', () => {
    const pool = new SegmentPool(64 * MiB);
    const slot = pool.take(SLOT)!;
    const buf = Buffer.from(slot.memory, slot.offset, 100);
    pool.register(buf, slot);
    const part = pool.hold(buf).subarray(10, 20);
    assert.equal(part.data.length, 10);
    pool.release(slot);
    assert.equal(pool.snapshot().inUse, 1, 'the part still holds the slot');
    part.release();
    assert.equal(pool.snapshot().inUse, 0);
    assert.equal(new HeldBytes(Buffer.alloc(3)).keep().length, 3, 'plain bytes need no pool');
  });
});

/**
 * The store's side: cached plaintext of unencrypted capsules lives in pooled slots, and no read
 * ever sees a slot reused under it. A small cache forces evictions and reuse on every pass.
 */
// The store's disk (O_DIRECT for sequential loads) and tmpfs, which may refuse O_DIRECT.
const where = [undefined, ...(fs.existsSync('/dev/shm') ? ['/dev/shm'] : [])];
for (const base of where) describe(`segment pool: the store reads into pooled memory and reuses it safely (${base ?? 'temp dir'})`, function () {
  this.timeout(120_000);
  const SEGMENTS = 24;
  let dir: string;
  let pool: SegmentPool;
  let store: Store;
  let data: Buffer;
  beforeEach(async () => {
    dir = base ? fs.mkdtempSync(path.join(base, 'space-pool-')) : tmpDir();
    pool = new SegmentPool();
    store = Store.open(dir, { cacheBytes: 4 * MiB, fsync: false, segmentPool: pool });
    await store.create({ name: 'p', policy: validatePolicy({ segmentSize: MiB }) });
    data = prand(SEGMENTS * MiB, 11);
    await store.createFile('p', 'f');
    await store.write('p', 'f', 0, data);
  });
  afterEach(async () => {
    await store.close();
    rmrf(dir);
  });

  const pass = async (from = 0) => {
    for (let i = from; i < SEGMENTS; i++) {
      const h = await store.readHeld('p', 'f', i * MiB, MiB);
      assert.ok(h.data.equals(data.subarray(i * MiB, (i + 1) * MiB)), `segment ${i} reads back`);
      h.release();
    }
  };

  it('a held read keeps its bytes while the cache evicts its segment and other loads reuse slots', async () => {
    const held = await store.readHeld('p', 'f', 0, MiB);
    assert.ok(held.data.buffer instanceof SharedArrayBuffer, 'served from pooled memory');
    const sync = store.tryReadSyncHeld('p', 'f', 4096, 8192)!; // a cache hit, held without a promise
    await pass(1);
    await pass(1); // every segment evicted and reloaded: slots are reused
    const s = pool.snapshot();
    assert.ok(s.reused > SEGMENTS, `slots were reused (${JSON.stringify(s)})`);
    assert.ok(held.data.equals(data.subarray(0, MiB)), 'the held bytes were not overwritten');
    assert.ok(sync.data.equals(data.subarray(4096, 4096 + 8192)));
    held.release();
    sync.release();
    await pass();
  });

  it('bytes from read() are kept for good: their slot is never reused', async () => {
    const kept = await store.read('p', 'f', 2 * MiB, MiB);
    const keptSync = store.tryReadSync('p', 'f', 2 * MiB + 100, 100)!;
    await pass(3);
    await pass(3);
    assert.ok(kept.equals(data.subarray(2 * MiB, 3 * MiB)));
    assert.ok(keptSync.equals(data.subarray(2 * MiB + 100, 2 * MiB + 200)));
    assert.ok(pool.snapshot().kept >= 1);
  });

  it('reads over several segments and streams return the right bytes and hold nothing afterwards', async () => {
    const span = await store.readHeld('p', 'f', MiB / 2, 3 * MiB);
    assert.ok(span.data.equals(data.subarray(MiB / 2, MiB / 2 + 3 * MiB)));
    span.release();
    const parts: Buffer[] = [];
    for await (const chunk of store.readStream('p', 'f')) parts.push(chunk);
    assert.ok(Buffer.concat(parts).equals(data));
    await new Promise((r) => setImmediate(r)); // loads' own holds end at the next macrotask
    const cachedSlots = pool.snapshot().inUse;
    assert.ok(cachedSlots <= 4, `only what the 4 MiB cache keeps is in use (${cachedSlots})`);
  });

  it('a damaged segment is an IntegrityError and its slot goes back; close gives every slot back', async () => {
    await pass(); // all loaded once; the last four cached
    const segFiles: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(path.join(d, e.name));
        else if (/^[0-9a-f]{64}$/.test(e.name)) segFiles.push(path.join(d, e.name));
      }
    };
    walk(dir);
    assert.equal(segFiles.length, SEGMENTS);
    for (const f of segFiles) {
      const b = fs.readFileSync(f);
      b[b.length >> 1] ^= 0x40;
      fs.writeFileSync(f, b);
    }
    // Segment 0 is no longer cached (the 4 MiB cache holds the last ones): it loads and fails.
    await assert.rejects(store.readHeld('p', 'f', 0, MiB), (e: unknown) => e instanceof IntegrityError);
    await new Promise((r) => setImmediate(r));
    assert.ok(pool.snapshot().inUse <= 4, 'the failed load gave its slot back');
    await store.close();
    assert.equal(pool.snapshot().inUse, 0, 'closing the store gives the cache\'s slots back');
    store = Store.open(dir, { cacheBytes: 4 * MiB, fsync: false, segmentPool: pool }); // for afterEach
  });

  it('compressed capsules keep plaintext of their own: slots used for a read go straight back', async () => {
    await store.create({ name: 'z', policy: validatePolicy({ segmentSize: MiB, compression: 'zstd', encryption: false }) });
    await store.createFile('z', 'f');
    const text = Buffer.alloc(3 * MiB, 'compressible z ');
    await store.write('z', 'f', 0, text);
    const before = pool.snapshot();
    for (let i = 0; i < 3; i++) {
      const h = await store.readHeld('z', 'f', i * MiB, MiB);
      assert.ok(h.data.equals(text.subarray(i * MiB, (i + 1) * MiB)));
      assert.ok(!(h.data.buffer instanceof SharedArrayBuffer), 'not in a slot');
      h.release();
    }
    await new Promise((r) => setImmediate(r));
    assert.equal(pool.snapshot().inUse, before.inUse, 'no slot stays in use');
  });

  it('encrypted capsules are decrypted into pooled memory, reused as safely as plaintext read in place', async () => {
    await store.create({ name: 'e', policy: validatePolicy({ segmentSize: MiB, compression: 'none', encryption: true }) });
    await store.createFile('e', 'f');
    const N = 12; // three times the cache
    const secret = prand(N * MiB, 12);
    await store.write('e', 'f', 0, secret);
    const passE = async () => {
      for (let i = 1; i < N; i++) {
        const h = await store.readHeld('e', 'f', i * MiB, MiB);
        assert.ok(h.data.equals(secret.subarray(i * MiB, (i + 1) * MiB)), `segment ${i} decrypts`);
        assert.ok(h.data.buffer instanceof SharedArrayBuffer, 'decrypted into a slot');
        h.release();
      }
    };
    const before = pool.snapshot();
    const held = await store.readHeld('e', 'f', 0, MiB);
    await passE();
    await passE(); // evicted and decrypted again: into reused slots
    assert.ok(pool.snapshot().reused > before.reused, 'slots were reused');
    assert.ok(held.data.equals(secret.subarray(0, MiB)), 'a held segment is not overwritten meanwhile');
    held.release();
    // A damaged ciphertext fails its tag: IntegrityError, and the slot it was decrypted into goes back.
    for (const f of segmentFiles(dir)) {
      const b = fs.readFileSync(f);
      if (b.readUInt8(6) !== 1) continue; // encrypted segments only
      b[b.length >> 1] ^= 0xff;
      fs.writeFileSync(f, b);
    }
    await store.close();
    store = Store.open(dir, { cacheBytes: 4 * MiB, fsync: false, segmentPool: pool });
    await assert.rejects(store.readHeld('e', 'f', 5 * MiB, MiB), IntegrityError);
    await new Promise((r) => setImmediate(r));
    assert.equal(pool.snapshot().inUse, 0, 'the failed load holds no slot');
  });
});
