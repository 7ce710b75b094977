/**
 * NFSv3 attribute structures (RFC 1813 section 2.5-2.6): fattr3, wcc_data, sattr3, nfstime3,
 * converted from and to the store's FileAttr / SetAttr.
 */
import type { FileAttr, SetAttr } from '../../capsule/types.js';
import { XdrError, type XdrReader, type XdrWriter } from './xdr.js';

export const Ftype3 = { REG: 1, DIR: 2, BLK: 3, CHR: 4, LNK: 5, SOCK: 6, FIFO: 7 } as const;
export const TimeHow = { DONT_CHANGE: 0, SET_TO_SERVER_TIME: 1, SET_TO_CLIENT_TIME: 2 } as const;

/** Bytes of an encoded fattr3. */
export const FATTR3_SIZE = 84;

export interface NfsTime {
  seconds: number;
  nseconds: number;
}

/** Milliseconds (possibly fractional) -> nfstime3, clamped to what uint32 seconds can hold. */
export function toNfsTime(ms: number): NfsTime {
  if (!(ms > 0)) return { seconds: 0, nseconds: 0 };
  const seconds = Math.min(Math.floor(ms / 1000), 0xffffffff);
  // Microseconds: a double holding epoch milliseconds keeps about a quarter microsecond, so
  // finer digits would be rounding noise (a client setting 5000 ns would read back 4883).
  const nseconds = Math.min(Math.round((ms - seconds * 1000) * 1000) * 1000, 999_999_000);
  return { seconds, nseconds };
}

export function fromNfsTime(t: NfsTime): number {
  return t.seconds * 1000 + t.nseconds / 1e6;
}

export function readNfsTime(r: XdrReader): NfsTime {
  const seconds = r.uint32();
  const nseconds = r.uint32();
  if (nseconds >= 1e9) throw new XdrError('bad-value', `nfstime3 nseconds ${nseconds} is out of range`);
  return { seconds, nseconds };
}

function writeTime(w: XdrWriter, ms: number): void {
  const t = toNfsTime(ms);
  w.uint32(t.seconds).uint32(t.nseconds);
}

export function writeFattr3(w: XdrWriter, a: FileAttr, fsid: bigint): void {
  w.enum(a.type === 'dir' ? Ftype3.DIR : Ftype3.REG);
  w.uint32(a.mode & 0o7777);
  w.uint32(a.nlink);
  w.uint32(a.uid);
  w.uint32(a.gid);
  w.uint64(a.size);
  w.uint64(a.allocated); // used: allocated bytes, so du shows holes
  w.uint32(0).uint32(0); // rdev
  w.uint64(fsid);
  w.uint64(a.ino); // fileid
  writeTime(w, a.atimeMs);
  writeTime(w, a.mtimeMs);
  writeTime(w, a.ctimeMs);
}

/** post_op_attr: attributes when known. */
export function writePostOpAttr(w: XdrWriter, a: FileAttr | undefined, fsid: bigint): void {
  if (!a) {
    w.bool(false);
    return;
  }
  w.bool(true);
  writeFattr3(w, a, fsid);
}

/** pre_op_attr: the wcc_attr subset (size, mtime, ctime) before an operation. */
export function writePreOpAttr(w: XdrWriter, a: FileAttr | undefined): void {
  if (!a) {
    w.bool(false);
    return;
  }
  w.bool(true);
  w.uint64(a.size);
  writeTime(w, a.mtimeMs);
  writeTime(w, a.ctimeMs);
}

export function writeWcc(w: XdrWriter, before: FileAttr | undefined, after: FileAttr | undefined, fsid: bigint): void {
  writePreOpAttr(w, before);
  writePostOpAttr(w, after, fsid);
}

export interface Sattr3 {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: 'server' | number;
  mtime?: 'server' | number;
}

function readSetTime(r: XdrReader): 'server' | number | undefined {
  const how = r.enum([TimeHow.DONT_CHANGE, TimeHow.SET_TO_SERVER_TIME, TimeHow.SET_TO_CLIENT_TIME]);
  if (how === TimeHow.SET_TO_CLIENT_TIME) return fromNfsTime(readNfsTime(r));
  return how === TimeHow.SET_TO_SERVER_TIME ? 'server' : undefined;
}

export function readSattr3(r: XdrReader): Sattr3 {
  const s: Sattr3 = {};
  if (r.bool()) s.mode = r.uint32();
  if (r.bool()) s.uid = r.uint32();
  if (r.bool()) s.gid = r.uint32();
  if (r.bool()) s.size = r.uint64();
  const atime = readSetTime(r);
  if (atime !== undefined) s.atime = atime;
  const mtime = readSetTime(r);
  if (mtime !== undefined) s.mtime = mtime;
  return s;
}

/**
 * Settable attributes (NFSv3 sattr3, or the NFSv4 ones decodeSetAttrs finds) -> the store's
 * SetAttr ("server time" resolved now).
 */
export function toSetAttr(s: Sattr3, now = Date.now()): SetAttr {
  const a: SetAttr = {};
  if (s.mode !== undefined) a.mode = s.mode & 0o7777;
  if (s.uid !== undefined) a.uid = s.uid;
  if (s.gid !== undefined) a.gid = s.gid;
  if (s.size !== undefined) a.size = s.size;
  if (s.atime !== undefined) a.atimeMs = s.atime === 'server' ? now : s.atime;
  if (s.mtime !== undefined) a.mtimeMs = s.mtime === 'server' ? now : s.mtime;
  return a;
}

export const isEmptySetAttr = (a: SetAttr): boolean => Object.keys(a).length === 0;
