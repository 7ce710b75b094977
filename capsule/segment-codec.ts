/**
 * On-disk form of one segment:
 *   magic "SPSG" | format u8 | codec u8 | encrypted u8 | reserved u8 | plainLen u32 | keyId u32
 *   format 1, encrypted:   nonce(12) | ciphertext | tag(16)       (AES-256-GCM, data key)
 *   format 2, unencrypted: nonce(12) | (compressed) bytes | tag(16) (AES-256-GMAC, MAC key)
 *   format 1, unencrypted: the (compressed) bytes                  (older stores; still read)
 * The header and the segment's address are always authenticated, so a segment cannot be swapped
 * for another one, and every read checks a keyed 128-bit tag before it returns a byte.
 * Encrypted segments get that from GCM itself. Unencrypted ones carry a GMAC (GCM over no
 * plaintext, the bytes as associated data) under a key derived from the domain's hash key: it is
 * as keyed as re-deriving the HMAC address, which format 1 did on every read, but runs at memory
 * speed (GHASH with carry-less multiply) instead of SHA-256 speed, and reads of unencrypted
 * capsules are where that pass was the largest cost. The address is still the HMAC of the
 * plaintext, computed once when the segment is written; `fsck` re-derives it as a deep check.
 */
import crypto from 'node:crypto';
import { compress, decompress, codecName, CODEC_ID } from './compression.js';
import type { Compression } from './policy.js';

export const HEADER_BYTES = 16;
const MAGIC = 0x53505347; // "SPSG"
/** Encrypted segments, and unencrypted ones written before format 2. */
const FORMAT_GCM = 1;
/** Unencrypted segments with a GMAC tag. */
const FORMAT_GMAC = 2;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** Bytes a stored segment adds to its (compressed) body: header, nonce and tag. */
export const SEGMENT_FRAMING_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES;

export interface SegmentKeys {
  /** HMAC key of the encryption domain: addresses = HMAC-SHA-256(hashKey, plaintext). */
  hashKey: Buffer;
  /** Data key (AES-256-GCM) and its id, when the capsule is encrypted. */
  dataKey?: { id: number; key: Buffer };
}

export function segmentAddress(hashKey: Buffer, plain: Uint8Array): string {
  return crypto.createHmac('sha256', hashKey).update(plain).digest('hex');
}

/**
 * The GMAC key of a domain, derived from its hash key (a different purpose gets a different key).
 * Cached: workers are handed the hash key with every job.
 */
let lastMacKey: { hashKey: Buffer; macKey: Buffer } | undefined;
function macKeyOf(hashKey: Buffer): Buffer {
  if (lastMacKey && lastMacKey.hashKey.equals(hashKey)) return lastMacKey.macKey;
  const macKey = crypto.createHmac('sha256', hashKey).update('space segment gmac v2').digest();
  lastMacKey = { hashKey: Buffer.from(hashKey), macKey };
  return macKey;
}

function gmacTag(macKey: Buffer, nonce: Buffer, header: Buffer, id: string, body: Uint8Array): Buffer {
  const g = crypto.createCipheriv('aes-256-gcm', macKey, nonce);
  g.setAAD(header);
  g.setAAD(Buffer.from(id, 'hex'));
  g.setAAD(body);
  g.final();
  return g.getAuthTag();
}

export function encodeSegment(id: string, plain: Buffer, codec: Compression, keys: SegmentKeys): Buffer {
  return Buffer.concat(encodeSegmentParts(id, plain, codec, keys));
}

/**
 * The encoded segment as the pieces it is made of (header, nonce, ciphertext, tag), so a writer
 * can hand them to writev instead of first joining a second megabyte-sized copy.
 */
export function encodeSegmentParts(id: string, plain: Buffer, codec: Compression, keys: SegmentKeys): Buffer[] {
  let body = compress(codec, plain);
  let usedCodec = codec;
  if (codec !== 'none' && body.length >= plain.length) {
    // incompressible data: store it raw rather than pay decompression on every read
    body = plain;
    usedCodec = 'none';
  }
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(MAGIC, 0);
  header.writeUInt8(keys.dataKey ? FORMAT_GCM : FORMAT_GMAC, 4);
  header.writeUInt8(CODEC_ID[usedCodec], 5);
  header.writeUInt8(keys.dataKey ? 1 : 0, 6);
  header.writeUInt32BE(plain.length, 8);
  header.writeUInt32BE(keys.dataKey?.id ?? 0, 12);
  const nonce = crypto.randomBytes(NONCE_BYTES);
  if (!keys.dataKey) return [header, nonce, body, gmacTag(macKeyOf(keys.hashKey), nonce, header, id, body)];
  const c = crypto.createCipheriv('aes-256-gcm', keys.dataKey.key, nonce);
  c.setAAD(Buffer.concat([header, Buffer.from(id, 'hex')]));
  const ct1 = c.update(body);
  const ct2 = c.final();
  return ct2.length ? [header, nonce, ct1, ct2, c.getAuthTag()] : [header, nonce, ct1, c.getAuthTag()];
}

export interface SegmentHeader {
  format: number;
  codec: Compression;
  encrypted: boolean;
  plainLen: number;
  keyId: number;
}

export function readHeader(blob: Buffer): SegmentHeader {
  if (blob.length < HEADER_BYTES || blob.readUInt32BE(0) !== MAGIC) throw new Error('not a segment (bad magic)');
  const format = blob.readUInt8(4);
  const encrypted = blob.readUInt8(6) === 1;
  if (format !== FORMAT_GCM && format !== FORMAT_GMAC) throw new Error(`unknown segment format ${format}`);
  if (format === FORMAT_GMAC && encrypted) throw new Error('segment header is inconsistent (format 2 is never encrypted)');
  return {
    format,
    codec: codecName(blob.readUInt8(5)),
    encrypted,
    plainLen: blob.readUInt32BE(8),
    keyId: blob.readUInt32BE(12),
  };
}

/** Decrypted in pieces of this size (see decodeSegment's `into`). */
const DECRYPT_STEP = 64 << 10;

/**
 * Decode and verify. Throws a plain Error with the reason; the store turns it into an
 * IntegrityError that names capsule, file and offset. `deep` also re-derives the address from
 * the plaintext of unencrypted segments (fsck), on top of the tag every read checks.
 *
 * `into`: memory for the plaintext of an encrypted, uncompressed segment (a pooled cache slot),
 * used when it is large enough; the result is then a view of it. The decipher's output for a
 * whole segment would be a fresh megabyte, and in VMs whose freed memory goes back to the host
 * its first touch costs more than the decryption (measured: 1 GiB cold NFS read of an
 * encrypted capsule, 2.5 CPU s/GiB per codec worker). Decrypted a piece at a time, each
 * piece's output is small, reused by the allocator, and copied into `into`. On a tag mismatch
 * `into` holds unverified bytes: the caller must not use it.
 */
export function decodeSegment(id: string, blob: Buffer, hashKey: Buffer, dataKeyById: (id: number) => Buffer, deep = false, into?: Buffer): Buffer {
  const h = readHeader(blob);
  let body: Buffer;
  if (h.format === FORMAT_GMAC) {
    if (blob.length < HEADER_BYTES + NONCE_BYTES + TAG_BYTES) throw new Error('segment is truncated');
    const nonce = blob.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES);
    body = blob.subarray(HEADER_BYTES + NONCE_BYTES, blob.length - TAG_BYTES);
    const tag = gmacTag(macKeyOf(hashKey), nonce, blob.subarray(0, HEADER_BYTES), id, body);
    if (!crypto.timingSafeEqual(tag, blob.subarray(blob.length - TAG_BYTES))) throw new Error('authentication tag mismatch (segment damaged or tampered)');
  } else if (h.encrypted) {
    if (blob.length < HEADER_BYTES + NONCE_BYTES + TAG_BYTES) throw new Error('segment is truncated');
    const key = dataKeyById(h.keyId);
    const nonce = blob.subarray(HEADER_BYTES, HEADER_BYTES + 12);
    const d = crypto.createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(Buffer.concat([blob.subarray(0, HEADER_BYTES), Buffer.from(id, 'hex')]));
    d.setAuthTag(blob.subarray(blob.length - 16));
    const ct = blob.subarray(HEADER_BYTES + 12, blob.length - 16);
    try {
      if (into && h.codec === 'none' && into.length >= ct.length) {
        let at = 0;
        for (let from = 0; from < ct.length; from += DECRYPT_STEP) at += d.update(ct.subarray(from, from + DECRYPT_STEP)).copy(into, at);
        at += d.final().copy(into, at);
        body = into.subarray(0, at);
      } else {
        const p1 = d.update(ct);
        const p2 = d.final();
        body = p2.length ? Buffer.concat([p1, p2]) : p1;
      }
    } catch {
      throw new Error('authentication tag mismatch (segment damaged or tampered)');
    }
  } else {
    body = blob.subarray(HEADER_BYTES);
  }
  let plain: Buffer;
  try {
    plain = decompress(h.codec, body, h.plainLen);
  } catch (e) {
    throw new Error(`cannot decompress (${(e as Error).message})`);
  }
  if (plain.length !== h.plainLen) throw new Error(`length ${plain.length} differs from recorded ${h.plainLen}`);
  // Format 1 unencrypted segments have no tag: the address is their only check.
  const checkAddress = !h.encrypted && (h.format === FORMAT_GCM || deep);
  if (checkAddress && segmentAddress(hashKey, plain) !== id) throw new Error('content hash mismatch (segment damaged)');
  return plain;
}
