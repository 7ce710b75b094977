/**
 * Record marking (gateway/nfs/record-marking.ts) fed both ways: chunks pushed (Node's 'data'
 * path) and reads into the memory the assembler gives (the server's own sockets). A simulated
 * socket cuts one byte stream of many records at random points; every record must come out
 * whole and unchanged, large ones in their own (pooled) memory, filled in place.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { BufferRecycler } from '../capsule/buffer-recycler.js';
import { POOLED_RECORD_MIN, RecordAssembler, STAGING_BYTES } from '../gateway/nfs/record-marking.js';

const LAST = 0x80000000;

/** One record as fragments on the wire (`cuts`: fragment lengths before the last one). */
function frame(body: Buffer, cuts: number[] = []): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (const n of cuts) {
    out.push(header(n, false), body.subarray(at, at + n));
    at += n;
  }
  out.push(header(body.length - at, true), body.subarray(at));
  return Buffer.concat(out);
}

function header(len: number, last: boolean): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(((last ? LAST : 0) | len) >>> 0);
  return h;
}

/** A deterministic stream: small, medium and large records, some in several fragments. */
function workload(seed: number): { bodies: Buffer[]; wire: Buffer } {
  let x = seed;
  const rand = (n: number) => {
    x = (x * 1103515245 + 12345) >>> 0;
    return x % n;
  };
  const sizes = [0, 1, 3, 4, 100, 4096, STAGING_BYTES - 4, STAGING_BYTES, STAGING_BYTES + 1, POOLED_RECORD_MIN - 1, POOLED_RECORD_MIN, (1 << 20) + 140];
  const bodies: Buffer[] = [];
  const frames: Buffer[] = [];
  for (let i = 0; i < 60; i++) {
    const size = i < sizes.length ? sizes[i]! : rand(3) === 0 ? rand(300_000) : rand(600);
    const body = crypto.randomBytes(size);
    const cuts = i >= sizes.length && size > 8 && rand(5) === 0 ? [rand(size >> 1), 0, rand(size >> 2)] : [];
    bodies.push(body);
    frames.push(frame(body, cuts));
  }
  return { bodies, wire: Buffer.concat(frames) };
}

interface Got {
  record: Buffer;
  pooled: boolean;
}

function assembler(max = 2 << 20) {
  const got: Got[] = [];
  const tooLarge: number[] = [];
  const pool = new BufferRecycler({ maxBytes: 8 << 20, shared: true });
  const a = new RecordAssembler(max, pool, {
    record: (record, pooled) => got.push({ record, pooled }),
    tooLarge: (bytes) => tooLarge.push(bytes),
  });
  return { a, got, tooLarge, pool };
}

/** Feed `wire` as a socket with user-buffer reads would: each read fills at most what it was given. */
function readInPlace(a: RecordAssembler, wire: Buffer, seed: number): { inPlace: Buffer[] } {
  let x = seed;
  const inPlace: Buffer[] = [];
  const staging = a.nextBuffer(); // nothing is pending at first: the staging buffer
  assert.equal(staging.length, STAGING_BYTES);
  for (let at = 0; at < wire.length;) {
    x = (x * 1103515245 + 12345) >>> 0;
    const buf = a.nextBuffer();
    if (buf !== staging) inPlace.push(buf);
    // The kernel hands over what has arrived: sometimes a dribble, sometimes all it may.
    const avail = x % 4 === 0 ? 1 + (x % 7) : 1 + (x % 300_000);
    const n = Math.min(buf.length, avail, wire.length - at);
    wire.copy(buf, 0, at, at + n);
    // The staging buffer is reused: scribble over what a careless reader could still be viewing.
    a.filled(n);
    if (buf === staging) buf.fill(0xee, 0, n);
    at += n;
  }
  return { inPlace };
}

describe('rpc record marking', function () {
  for (const seed of [1, 2, 3]) {
    it(`reads records in place, seed ${seed}: every record whole, large ones in their own pooled memory`, () => {
      const { bodies, wire } = workload(seed);
      const { a, got, tooLarge } = assembler();
      const { inPlace } = readInPlace(a, wire, seed);
      assert.deepEqual(tooLarge, []);
      assert.equal(got.length, bodies.length);
      got.forEach((g, i) => assert.ok(g.record.equals(bodies[i]!), `record ${i} (${bodies[i]!.length} bytes) differs`));
      const big = got.filter((g) => g.record.length >= POOLED_RECORD_MIN);
      assert.ok(big.length > 0);
      for (const g of got) {
        if (g.pooled) assert.ok(g.record.buffer instanceof SharedArrayBuffer, 'pooled records are shared memory');
      }
      // The 1 MiB record in one fragment was read into itself: the reads were views of it.
      const mib = got.find((g) => g.record.length === (1 << 20) + 140)!;
      assert.equal(mib.pooled, true);
      assert.ok(inPlace.some((b) => b.buffer === mib.record.buffer), 'reads went straight into the record');
    });

    it(`takes pushed chunks the same way, seed ${seed}`, () => {
      const { bodies, wire } = workload(seed);
      const { a, got } = assembler();
      let x = seed;
      for (let at = 0; at < wire.length;) {
        x = (x * 1103515245 + 12345) >>> 0;
        const n = Math.min(1 + (x % 70_000), wire.length - at);
        a.push(Buffer.from(wire.subarray(at, at + n)));
        at += n;
      }
      assert.equal(got.length, bodies.length);
      got.forEach((g, i) => assert.ok(g.record.equals(bodies[i]!), `record ${i} differs`));
      assert.ok(got.some((g) => g.pooled));
    });
  }

  it('refuses a record past the limit on its header, reads nothing of it, and delivers nothing after', () => {
    const { a, got, tooLarge, pool } = assembler(100_000);
    const ok = crypto.randomBytes(50);
    const wire = Buffer.concat([frame(ok), header(200_000, true), Buffer.alloc(1000), frame(ok)]);
    const buf = a.nextBuffer();
    wire.copy(buf, 0, 0, Math.min(buf.length, wire.length));
    a.filled(Math.min(buf.length, wire.length));
    assert.equal(got.length, 1);
    assert.deepEqual(tooLarge, [200_000]);
    assert.equal(pool.keptBytes, 0);
    a.push(frame(ok));
    assert.equal(got.length, 1, 'stopped');
  });

  it('counts every fragment of a record towards the limit', () => {
    const { a, got, tooLarge } = assembler(1000);
    a.push(Buffer.concat([header(600, false), Buffer.alloc(600), header(600, true), Buffer.alloc(600)]));
    assert.equal(got.length, 0);
    assert.deepEqual(tooLarge, [1200]);
  });

  it('delivers an empty record (the server then closes the connection) and goes on', () => {
    const { a, got } = assembler();
    a.push(Buffer.concat([header(0, true), frame(Buffer.from('abcd'))]));
    assert.deepEqual(got.map((g) => g.record.toString()), ['', 'abcd']);
  });
});
