/**
 * On-disk form of one segment:
 *   magic "SPSG" | format u8 (1) | codec u8 | encrypted u8 | reserved u8 | plainLen u32 | keyId u32
 *   then, if encrypted: nonce(12) | ciphertext | tag(16); else the (compressed) bytes.
 * The header and the segment's address are authenticated as AAD, so a segment cannot be swapped
 * for another one. For encrypted segments that tag is the whole check: it authenticates the
 * ciphertext, the header and the address together, so recomputing the HMAC on every read would
 * only spend a second pass over the data. Unencrypted segments are checked by re-deriving the
 * address from the plaintext (keyed HMAC), which catches bit flips and swapped files.
 */
import crypto from 'node:crypto';
import { compress, decompress, codecName, CODEC_ID } from './compression.js';
import type { Compression } from './policy.js';

export const HEADER_BYTES = 16;
const MAGIC = 0x53505347; // "SPSG"
const FORMAT = 1;

export interface SegmentKeys {
  /** HMAC key of the encryption domain: addresses = HMAC-SHA-256(hashKey, plaintext). */
  hashKey: Buffer;
  /** Data key (AES-256-GCM) and its id, when the capsule is encrypted. */
  dataKey?: { id: number; key: Buffer };
}

export function segmentAddress(hashKey: Buffer, plain: Uint8Array): string {
  return crypto.createHmac('sha256', hashKey).update(plain).digest('hex');
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
  header.writeUInt8(FORMAT, 4);
  header.writeUInt8(CODEC_ID[usedCodec], 5);
  header.writeUInt8(keys.dataKey ? 1 : 0, 6);
  header.writeUInt32BE(plain.length, 8);
  header.writeUInt32BE(keys.dataKey?.id ?? 0, 12);
  if (!keys.dataKey) return [header, body];
  const nonce = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', keys.dataKey.key, nonce);
  c.setAAD(Buffer.concat([header, Buffer.from(id, 'hex')]));
  const ct1 = c.update(body);
  const ct2 = c.final();
  return ct2.length ? [header, nonce, ct1, ct2, c.getAuthTag()] : [header, nonce, ct1, c.getAuthTag()];
}

export interface SegmentHeader {
  codec: Compression;
  encrypted: boolean;
  plainLen: number;
  keyId: number;
}

export function readHeader(blob: Buffer): SegmentHeader {
  if (blob.length < HEADER_BYTES || blob.readUInt32BE(0) !== MAGIC) throw new Error('not a segment (bad magic)');
  if (blob.readUInt8(4) !== FORMAT) throw new Error(`unknown segment format ${blob.readUInt8(4)}`);
  return {
    codec: codecName(blob.readUInt8(5)),
    encrypted: blob.readUInt8(6) === 1,
    plainLen: blob.readUInt32BE(8),
    keyId: blob.readUInt32BE(12),
  };
}

/**
 * Decode and verify. Throws a plain Error with the reason; the store turns it into an
 * IntegrityError that names capsule, file and offset.
 */
export function decodeSegment(id: string, blob: Buffer, hashKey: Buffer, dataKeyById: (id: number) => Buffer): Buffer {
  const h = readHeader(blob);
  let body: Buffer;
  if (h.encrypted) {
    if (blob.length < HEADER_BYTES + 28) throw new Error('segment is truncated');
    const key = dataKeyById(h.keyId);
    const nonce = blob.subarray(HEADER_BYTES, HEADER_BYTES + 12);
    const d = crypto.createDecipheriv('aes-256-gcm', key, nonce);
    d.setAAD(Buffer.concat([blob.subarray(0, HEADER_BYTES), Buffer.from(id, 'hex')]));
    d.setAuthTag(blob.subarray(blob.length - 16));
    try {
      const p1 = d.update(blob.subarray(HEADER_BYTES + 12, blob.length - 16));
      const p2 = d.final();
      body = p2.length ? Buffer.concat([p1, p2]) : p1;
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
  if (!h.encrypted && segmentAddress(hashKey, plain) !== id) throw new Error('content hash mismatch (segment damaged)');
  return plain;
}
