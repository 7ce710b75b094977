/** XDR codec (RFC 4506): round trips, padding, and malformed input that must never read out of bounds. */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { XdrError, XdrReader, XdrWriter, pad4 } from '../gateway/nfs/xdr.js';

const enc = (f: (w: XdrWriter) => void): Buffer => {
  const w = new XdrWriter(16);
  f(w);
  return w.toBuffer();
};

function throwsXdr(f: () => unknown, kind?: string): void {
  assert.throws(f, (e: unknown) => e instanceof XdrError && (kind === undefined || e.kind === kind));
}

describe('nfs xdr codec', function () {
  it('encodes scalars big-endian on 4-byte units', () => {
    assert.deepEqual(enc((w) => w.uint32(0x01020304)), Buffer.from([1, 2, 3, 4]));
    assert.deepEqual(enc((w) => w.int32(-2)), Buffer.from([0xff, 0xff, 0xff, 0xfe]));
    assert.deepEqual(enc((w) => w.bool(true).bool(false)), Buffer.from([0, 0, 0, 1, 0, 0, 0, 0]));
    assert.deepEqual(enc((w) => w.uint64(2 ** 40 + 5)), Buffer.from([0, 0, 1, 0, 0, 0, 0, 5]));
    assert.deepEqual(enc((w) => w.hyper(-1)), Buffer.alloc(8, 0xff));
    assert.deepEqual(enc((w) => w.uint64(0xffffffffffffffffn)), Buffer.alloc(8, 0xff));
  });

  it('round-trips every type', () => {
    const buf = enc((w) => {
      w.uint32(0xffffffff).int32(-123456).enum(7).bool(true);
      w.uint64(Number.MAX_SAFE_INTEGER).uint64(12345678901234567890n).hyper(-5).hyper(-(2n ** 63n));
      w.fixedOpaque(Buffer.from('abc'), 3).opaque(Buffer.from('hello')).string('héllo wörld');
      w.optional(42, (x, v) => x.uint32(v)).optional<number>(undefined, (x, v) => x.uint32(v));
      w.array([1, 2, 3], (x, v) => x.uint32(v));
      w.opaque(Buffer.alloc(0));
    });
    assert.equal(buf.length % 4, 0);
    const r = new XdrReader(buf);
    assert.equal(r.uint32(), 0xffffffff);
    assert.equal(r.int32(), -123456);
    assert.equal(r.enum([1, 7]), 7);
    assert.equal(r.bool(), true);
    assert.equal(r.uint64(), Number.MAX_SAFE_INTEGER);
    assert.equal(r.uint64n(), 12345678901234567890n);
    assert.equal(r.hyper(), -5);
    assert.equal(r.hypern(), -(2n ** 63n));
    assert.deepEqual(r.fixedOpaque(3), Buffer.from('abc'));
    assert.deepEqual(r.opaque(16), Buffer.from('hello'));
    assert.equal(r.string(64), 'héllo wörld');
    assert.equal(r.optional((x) => x.uint32()), 42);
    assert.equal(r.optional((x) => x.uint32()), undefined);
    assert.deepEqual(r.array((x) => x.uint32(), 3), [1, 2, 3]);
    assert.equal(r.opaque().length, 0);
    assert.equal(r.remaining(), 0);
  });

  it('pads opaque data with zeros to a multiple of four', () => {
    for (let n = 0; n < 9; n++) {
      const b = enc((w) => w.opaque(Buffer.alloc(n, 0xaa)));
      assert.equal(b.length, 4 + n + pad4(n));
      assert.ok(b.subarray(4 + n).every((x) => x === 0));
      assert.equal(new XdrReader(b).opaque().length, n);
    }
  });

  it('appends large opaques by reference and small ones by copy', () => {
    const big = crypto.randomBytes(5001);
    const w = new XdrWriter(8);
    w.uint32(1).opaqueRef(big).uint32(2);
    const parts = w.finish();
    assert.ok(parts.includes(big), 'the large buffer is one of the pieces, uncopied');
    const all = Buffer.concat(parts);
    assert.equal(all.length, 4 + 4 + 5001 + 3 + 4);
    const r = new XdrReader(all);
    assert.equal(r.uint32(), 1);
    assert.deepEqual(r.opaque(), big);
    assert.equal(r.uint32(), 2);
    const small = new XdrWriter().opaqueRef(Buffer.from('xy')).finish();
    assert.equal(small.length, 1);
  });

  it('keeps earlier pieces valid when the scratch buffer grows', () => {
    const w = new XdrWriter(16);
    const big = crypto.randomBytes(2048);
    w.uint32(7).opaqueRef(big);
    for (let i = 0; i < 1000; i++) w.uint32(i);
    const r = new XdrReader(w.toBuffer());
    assert.equal(r.uint32(), 7);
    assert.deepEqual(r.opaque(), big);
    for (let i = 0; i < 1000; i++) assert.equal(r.uint32(), i);
  });

  it('decodes opaque data as a view (no copy)', () => {
    const b = enc((w) => w.opaque(Buffer.from('payload')));
    const v = new XdrReader(b).opaque();
    assert.equal(v.buffer, b.buffer);
  });

  it('throws truncated on short input at every cut point', () => {
    const full = enc((w) => w.uint32(1).uint64(2).string('abcdef').array([1, 2], (x, v) => x.uint32(v)));
    for (let cut = 0; cut < full.length; cut++) {
      const r = new XdrReader(full.subarray(0, cut));
      throwsXdr(() => {
        r.uint32();
        r.uint64();
        r.string();
        r.array((x) => x.uint32());
      }, 'truncated');
    }
  });

  it('refuses lengths over the maximum before allocating', () => {
    const huge = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    throwsXdr(() => new XdrReader(huge).opaque(1024), 'too-long');
    throwsXdr(() => new XdrReader(huge).opaque(), 'truncated');
    throwsXdr(() => new XdrReader(huge).array((x) => x.uint32(), 16), 'too-long');
    throwsXdr(() => new XdrReader(huge).array((x) => x.uint32()), 'truncated');
    throwsXdr(() => new XdrReader(enc((w) => w.string('toolong'))).string(3), 'too-long');
    throwsXdr(() => new XdrWriter().opaque(Buffer.alloc(10), 5), 'too-long');
  });

  it('refuses bad bools, enums and UTF-8', () => {
    throwsXdr(() => new XdrReader(enc((w) => w.uint32(2))).bool(), 'bad-value');
    throwsXdr(() => new XdrReader(enc((w) => w.uint32(9))).enum([0, 1, 2]), 'bad-value');
    throwsXdr(() => new XdrReader(enc((w) => w.opaque(Buffer.from([0xc3, 0x28])))).string(), 'bad-value');
  });

  it('reads only inside its window of a larger buffer', () => {
    const b = Buffer.from([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
    const r = new XdrReader(b, 4, 8);
    assert.equal(r.uint32(), 2);
    throwsXdr(() => r.uint32(), 'truncated');
  });

  it('never throws anything but XdrError on random input', () => {
    for (let i = 0; i < 3000; i++) {
      const b = crypto.randomBytes(Math.floor(Math.random() * 64));
      const r = new XdrReader(b);
      try {
        r.uint32();
        r.string(255);
        r.array((x) => x.opaque(64), 16);
        r.optional((x) => x.uint64());
        r.bool();
      } catch (e) {
        assert.ok(e instanceof XdrError, String(e));
      }
    }
  });
});
