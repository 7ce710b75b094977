import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { decodeSegment, encodeSegment, readHeader, segmentAddress, HEADER_BYTES } from '../capsule/segment-codec.js';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { tmpDir, rmrf, prand, chunks, segmentFiles } from './helpers/tmp.js';
import { rejectsWith } from './helpers/assert.js';

const hashKey = crypto.randomBytes(32);
const noKey = (): Buffer => {
  throw new Error('no data key expected');
};

function unencrypted(plain: Buffer, codec: 'none' | 'gzip' = 'none'): { id: string; blob: Buffer } {
  const id = segmentAddress(hashKey, plain);
  return { id, blob: encodeSegment(id, plain, codec, { hashKey }) };
}

/** A format-1 unencrypted segment, as stores wrote them before the GMAC tag: header + bytes. */
function legacySegment(plain: Buffer): { id: string; blob: Buffer } {
  const id = segmentAddress(hashKey, plain);
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(0x53505347, 0);
  header.writeUInt8(1, 4);
  header.writeUInt32BE(plain.length, 8);
  return { id, blob: Buffer.concat([header, plain]) };
}

describe('segment codec', function () {
  it('unencrypted segments carry a GMAC tag (format 2) and round-trip, compressed or not', () => {
    for (const codec of ['none', 'gzip'] as const) {
      const plain = codec === 'gzip' ? Buffer.alloc(100_000, 'abc') : prand(100_000, 1);
      const { id, blob } = unencrypted(plain, codec);
      assert.equal(readHeader(blob).format, 2);
      assert.equal(readHeader(blob).encrypted, false);
      assert.deepEqual(decodeSegment(id, blob, hashKey, noKey), plain);
      assert.deepEqual(decodeSegment(id, blob, hashKey, noKey, true), plain);
    }
  });

  it('a flipped bit anywhere in a format-2 segment is caught', () => {
    const plain = prand(4096, 2);
    const { id, blob } = unencrypted(plain);
    // every byte after the magic and format (which fail as "not a segment" / "unknown format")
    for (let at = 5; at < blob.length; at += 7) {
      const bad = Buffer.from(blob);
      bad[at]! ^= 0x01;
      assert.throws(() => decodeSegment(id, bad, hashKey, noKey), /tag mismatch|truncated|inconsistent|unknown|decompress|length/, `byte ${at}`);
    }
  });

  it('the tag binds the address: a valid segment stored under another id is refused', () => {
    const a = unencrypted(prand(4096, 3));
    const b = unencrypted(prand(4096, 4));
    assert.throws(() => decodeSegment(a.id, b.blob, hashKey, noKey), /tag mismatch/);
  });

  it('the tag is keyed: a segment re-tagged without the domain key does not verify', () => {
    const { id, blob } = unencrypted(prand(4096, 5));
    const otherKey = crypto.randomBytes(32);
    assert.throws(() => decodeSegment(id, blob, otherKey, noKey), /tag mismatch/);
    // an attacker who rewrites the bytes cannot produce a matching tag without the key
    const forged = Buffer.from(blob);
    forged.fill(0x41, HEADER_BYTES + 12, HEADER_BYTES + 12 + 64);
    assert.throws(() => decodeSegment(id, forged, hashKey, noKey), /tag mismatch/);
  });

  it('truncated segments and an encrypted flag on a format-2 header are errors, not data', () => {
    const { id, blob } = unencrypted(prand(4096, 6));
    assert.throws(() => decodeSegment(id, blob.subarray(0, HEADER_BYTES + 10), hashKey, noKey), /truncated/);
    const bad = Buffer.from(blob);
    bad.writeUInt8(1, 6);
    assert.throws(() => decodeSegment(id, bad, hashKey, noKey), /inconsistent/);
  });

  it('older format-1 unencrypted segments still read, checked by their address', () => {
    const plain = prand(4096, 7);
    const { id, blob } = legacySegment(plain);
    assert.deepEqual(decodeSegment(id, blob, hashKey, noKey), plain);
    const bad = Buffer.from(blob);
    bad[HEADER_BYTES + 100]! ^= 0x80;
    assert.throws(() => decodeSegment(id, bad, hashKey, noKey), /content hash mismatch/);
  });

  it('a store reads format-1 segments left by an older version and fsck checks them', async () => {
    const dir = tmpDir();
    let store = Store.open(dir);
    try {
      await store.create({ id: 'old', policy: validatePolicy({ segmentSize: '64KiB' }) });
      const data = prand(150_000, 8);
      await store.put('old', 'f', chunks(data));
      await store.close();
      // rewrite every segment file in the old layout (same address, no nonce and no tag)
      for (const f of segmentFiles(dir)) {
        const blob = fs.readFileSync(f);
        assert.equal(readHeader(blob).codec, 'none');
        const plain = blob.subarray(HEADER_BYTES + 12, blob.length - 16); // between nonce and tag
        const legacy = Buffer.concat([blob.subarray(0, HEADER_BYTES), plain]);
        legacy.writeUInt8(1, 4);
        fs.writeFileSync(f, legacy);
      }
      store = Store.open(dir);
      assert.deepEqual(await store.read('old', 'f', 0, data.length), data);
      assert.equal((await store.fsck()).problems.length, 0);
      await store.close(); // and with it the segment cache
      const f0 = segmentFiles(dir)[0]!;
      const b = fs.readFileSync(f0);
      b[b.length - 1]! ^= 0x01;
      fs.writeFileSync(f0, b);
      store = Store.open(dir);
      const report = await store.fsck();
      assert.equal(report.problems.length, 1);
      assert.match(report.problems[0]!.problem, /content hash mismatch/);
      await rejectsWith(store.read('old', 'f', 0, data.length), 'DATA_LOSS');
    } finally {
      await store.close();
      rmrf(dir);
    }
  });
});

describe('segment codec: decrypting into given memory', function () {
  const dataKey = { id: 7, key: crypto.randomBytes(32) };
  const keyOf = (id: number) => {
    assert.equal(id, 7);
    return dataKey.key;
  };
  const encrypted = (plain: Buffer, codec: 'none' | 'gzip' = 'none') => {
    const id = segmentAddress(hashKey, plain);
    return { id, blob: encodeSegment(id, plain, codec, { hashKey, dataKey }) };
  };

  it('decrypts an uncompressed segment into `into` (a view of it comes back), in pieces that fit no boundary', () => {
    for (const size of [1, 65_535, 65_536, 65_537, 300_001, 1 << 20]) {
      const plain = prand(size, size);
      const { id, blob } = encrypted(plain);
      const into = Buffer.alloc(size + 100, 0xaa);
      const out = decodeSegment(id, blob, hashKey, keyOf, false, into);
      assert.equal(out.buffer, into.buffer, `${size}: a view of the given memory`);
      assert.equal(out.byteOffset, into.byteOffset);
      assert.ok(out.equals(plain), `${size}: the plaintext`);
      assert.equal(into[size], 0xaa, 'nothing written past it');
    }
  });

  it('refuses a damaged segment decrypted into `into` as it refuses any other', () => {
    const plain = prand(200_000, 3);
    const { id, blob } = encrypted(plain);
    for (const at of [HEADER_BYTES + 12 + 5, HEADER_BYTES + 12 + 150_000, blob.length - 3]) {
      const bad = Buffer.from(blob);
      bad[at] ^= 1;
      assert.throws(() => decodeSegment(id, bad, hashKey, keyOf, false, Buffer.alloc(300_000)), /tag mismatch/, `byte ${at}`);
    }
  });

  it('leaves `into` alone when it is too small or the segment is compressed', () => {
    const plain = Buffer.alloc(100_000, 'compressible ');
    for (const [codec, room] of [['none', 99_999], ['gzip', 200_000]] as const) {
      const { id, blob } = encrypted(plain, codec);
      const into = Buffer.alloc(room);
      const out = decodeSegment(id, blob, hashKey, keyOf, false, into);
      assert.notEqual(out.buffer, into.buffer, `${codec}: a buffer of its own`);
      assert.ok(out.equals(plain));
    }
  });
});
