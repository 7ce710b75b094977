/**
 * NFS file handles. A handle names a file for as long as the file exists, across gateway
 * restarts, so it is derived only from persistent facts:
 *
 *   byte  0      magic 0x53 ('S')
 *   byte  1      layout version (1)
 *   bytes 2..3   zero (reserved)
 *   bytes 4..11  export key: sha256(export path, capsule id), first 8 bytes
 *   bytes 12..19 inode number (uint64)
 *   bytes 20..23 generation: sha256(capsule id, capsule creation time), first 4 bytes
 *
 * Inode numbers are never reused inside a capsule (the store allocates them from a counter), so
 * the inode number alone tells a deleted file from a new one; the generation covers the one way
 * numbers do repeat: a capsule deleted and created again under the same id. The export key makes
 * a handle belong to one export, so a handle obtained through a read-only export stays read-only
 * and is checked against that export's client list.
 *
 * 24 bytes fits NFSv3 (at most 64) and NFSv4 (at most 128) alike.
 */
import crypto from 'node:crypto';
import { Nfs3Status, NfsError } from './status.js';

export const FH_MAGIC = 0x53;
export const FH_VERSION = 1;
export const FH_SIZE = 24;
/** NFS3_FHSIZE: the largest handle NFSv3 carries. */
export const NFS3_FHSIZE = 64;

export interface HandleParts {
  /** 16 hex digits (see exportKeyOf). */
  exportKey: string;
  ino: number;
  generation: number;
}

export function exportKeyOf(exportPath: string, capsuleId: string): string {
  return crypto.createHash('sha256').update(`export\0${exportPath}\0${capsuleId}`).digest().subarray(0, 8).toString('hex');
}

export function generationOf(capsuleId: string, createdAt: string): number {
  return crypto.createHash('sha256').update(`generation\0${capsuleId}\0${createdAt}`).digest().readUInt32BE(0);
}

export function encodeHandle(p: HandleParts): Buffer {
  const b = Buffer.alloc(FH_SIZE);
  b[0] = FH_MAGIC;
  b[1] = FH_VERSION;
  b.write(p.exportKey, 4, 8, 'hex');
  b.writeBigUInt64BE(BigInt(p.ino), 12);
  b.writeUInt32BE(p.generation >>> 0, 20);
  return b;
}

/**
 * Parse a handle a client sent. Anything this server could not have issued (wrong size, magic,
 * version, reserved bits, inode 0) is BADHANDLE; whether the file still exists is for the
 * caller to find out (STALE).
 */
export function decodeHandle(fh: Buffer): HandleParts {
  if (fh.length !== FH_SIZE || fh[0] !== FH_MAGIC || fh[1] !== FH_VERSION || fh[2] !== 0 || fh[3] !== 0) {
    throw new NfsError(Nfs3Status.BADHANDLE, 'not a file handle of this server');
  }
  const ino = fh.readBigUInt64BE(12);
  if (ino === 0n || ino > BigInt(Number.MAX_SAFE_INTEGER)) throw new NfsError(Nfs3Status.BADHANDLE, 'file handle has an impossible inode number');
  return { exportKey: fh.toString('hex', 4, 12), ino: Number(ino), generation: fh.readUInt32BE(20) };
}
