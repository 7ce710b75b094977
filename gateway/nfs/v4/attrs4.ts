/**
 * fattr4 (RFC 8881 section 5): attribute bitmaps, encoding the attributes a client asks for from
 * the store's FileAttr (or a pseudo-filesystem directory), and decoding the settable ones that
 * SETATTR, OPEN and CREATE carry.
 *
 * GETATTR answers only what is supported and leaves the rest out of the result bitmap (that is
 * how the protocol says "not supported"); SETATTR and VERIFY refuse an unsupported attribute
 * with ATTRNOTSUPP and a read-only one with INVAL, as the RFC prescribes.
 */
import type { FileAttr } from '../../../capsule/types.js';
import { MAX_NAME_BYTES } from '../../../capsule/paths.js';
import { toNfsTime } from '../attrs.js';
import { NfsError } from '../status.js';
import { XdrError, XdrReader, XdrWriter } from '../xdr.js';
import { Attr, Ftype4, Status4, TimeHow4 } from './constants.js';

export type Bitmap = number[];

/** Largest bitmap4 accepted from a client (words): attribute numbers stay below 32 * 8. */
const MAX_BITMAP_WORDS = 8;

export function readBitmap(r: XdrReader): Bitmap {
  return r.array((x) => x.uint32(), MAX_BITMAP_WORDS);
}

export function writeBitmap(w: XdrWriter, b: Bitmap): void {
  // Trailing zero words carry nothing: leave them out.
  let n = b.length;
  while (n > 0 && b[n - 1] === 0) n--;
  w.uint32(n);
  for (let i = 0; i < n; i++) w.uint32(b[i]!);
}

export const hasBit = (b: Bitmap, n: number): boolean => (((b[n >>> 5] ?? 0) >>> (n & 31)) & 1) === 1;

export function setBit(b: Bitmap, n: number): void {
  while (b.length <= n >>> 5) b.push(0);
  b[n >>> 5] = (b[n >>> 5]! | (1 << (n & 31))) >>> 0;
}

export function bitmapOf(attrs: readonly number[]): Bitmap {
  const b: Bitmap = [];
  for (const a of attrs) setBit(b, a);
  return b;
}

/** Attribute numbers set in a bitmap, ascending (the order their values go on the wire). */
export function bitsOf(b: Bitmap): number[] {
  const out: number[] = [];
  for (let w = 0; w < b.length; w++) {
    let word = b[w]!;
    while (word !== 0) {
      const bit = 31 - Math.clz32(word & -word);
      out.push(w * 32 + bit);
      word = (word & ~(1 << bit)) >>> 0;
    }
  }
  return out;
}

// ---------------------------------------------------------------- what is supported

/** Attributes every minor version answers. time_*_set are write-only: settable, never returned. */
const BASE_ATTRS = [
  Attr.SUPPORTED_ATTRS, Attr.TYPE, Attr.FH_EXPIRE_TYPE, Attr.CHANGE, Attr.SIZE, Attr.LINK_SUPPORT,
  Attr.SYMLINK_SUPPORT, Attr.NAMED_ATTR, Attr.FSID, Attr.UNIQUE_HANDLES, Attr.LEASE_TIME, Attr.RDATTR_ERROR,
  Attr.ACLSUPPORT, Attr.CANSETTIME, Attr.CASE_INSENSITIVE, Attr.CASE_PRESERVING, Attr.CHOWN_RESTRICTED,
  Attr.FILEHANDLE, Attr.FILEID, Attr.FILES_AVAIL, Attr.FILES_FREE, Attr.FILES_TOTAL, Attr.HOMOGENEOUS,
  Attr.MAXFILESIZE, Attr.MAXLINK, Attr.MAXNAME, Attr.MAXREAD, Attr.MAXWRITE, Attr.MODE, Attr.NO_TRUNC,
  Attr.NUMLINKS, Attr.OWNER, Attr.OWNER_GROUP, Attr.RAWDEV, Attr.SPACE_AVAIL, Attr.SPACE_FREE, Attr.SPACE_TOTAL,
  Attr.SPACE_USED, Attr.TIME_ACCESS, Attr.TIME_ACCESS_SET, Attr.TIME_DELTA, Attr.TIME_METADATA, Attr.TIME_MODIFY,
  Attr.TIME_MODIFY_SET, Attr.MOUNTED_ON_FILEID,
];

const SUPPORTED_BY_MINOR: readonly Bitmap[] = [
  bitmapOf(BASE_ATTRS),
  bitmapOf([...BASE_ATTRS, Attr.SUPPATTR_EXCLCREAT]),
  bitmapOf([...BASE_ATTRS, Attr.SUPPATTR_EXCLCREAT]),
];

export const supportedAttrs = (minor: number): Bitmap => SUPPORTED_BY_MINOR[Math.min(minor, 2)]!;

export const isSupported = (minor: number, a: number): boolean => hasBit(supportedAttrs(minor), a);

/** What a client may set. */
const SETTABLE = new Set<number>([Attr.SIZE, Attr.MODE, Attr.OWNER, Attr.OWNER_GROUP, Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET]);

/**
 * EXCLUSIVE4_1 creates keep the verifier in atime/mtime (as the v3 EXCLUSIVE create does), so
 * the times cannot be set in the same create; the client sets them afterwards.
 */
export const EXCLCREAT_ATTRS = bitmapOf([Attr.SIZE, Attr.MODE, Attr.OWNER, Attr.OWNER_GROUP]);

/** Attributes that need file system statistics (one statfs). */
const FS_STAT_ATTRS = [Attr.FILES_AVAIL, Attr.FILES_FREE, Attr.FILES_TOTAL, Attr.SPACE_AVAIL, Attr.SPACE_FREE, Attr.SPACE_TOTAL];
export const needsFsStats = (b: Bitmap): boolean => FS_STAT_ATTRS.some((a) => hasBit(b, a));

// ---------------------------------------------------------------- encoding

export interface Fsid4 {
  major: bigint;
  minor: bigint;
}

/** One object's attributes as the encoder needs them. */
export interface AttrSubject {
  attr: FileAttr;
  fsid: Fsid4;
  fh: Buffer;
  /** fileid of the directory this object is mounted on (itself unless it is an export root). */
  mountedOnFileid: number;
  readOnly: boolean;
}

export interface FsStats {
  spaceTotal: number;
  spaceFree: number;
  spaceAvail: number;
  filesTotal: number;
  filesFree: number;
  filesAvail: number;
}

export interface AttrEnv {
  minor: number;
  leaseTime: number;
  maxRead: number;
  maxWrite: number;
  maxFileSize: number;
  fsStats?: FsStats;
}

export function writeNfsTime4(w: XdrWriter, ms: number): void {
  const t = toNfsTime(ms);
  w.hyper(t.seconds).uint32(t.nseconds);
}

/**
 * The change attribute: the newest of mtime and ctime in microseconds. Every data write moves
 * mtime and every metadata change ctime, and both are kept to the microsecond at least.
 */
export function changeOf(a: FileAttr): bigint {
  const ms = Math.max(a.mtimeMs, a.ctimeMs);
  return BigInt(Math.max(0, Math.round(ms * 1000)));
}

function encodeOne(w: XdrWriter, n: number, s: AttrSubject, env: AttrEnv): boolean {
  const a = s.attr;
  const st = env.fsStats;
  switch (n) {
    case Attr.SUPPORTED_ATTRS: writeBitmap(w, supportedAttrs(env.minor)); return true;
    case Attr.TYPE: w.uint32(a.type === 'dir' ? Ftype4.DIR : Ftype4.REG); return true;
    case Attr.FH_EXPIRE_TYPE: w.uint32(0); return true; // FH4_PERSISTENT
    case Attr.CHANGE: w.uint64(changeOf(a)); return true;
    case Attr.SIZE: w.uint64(a.type === 'dir' ? 4096 : a.size); return true;
    case Attr.LINK_SUPPORT: w.bool(false); return true;
    case Attr.SYMLINK_SUPPORT: w.bool(false); return true;
    case Attr.NAMED_ATTR: w.bool(false); return true;
    case Attr.FSID: w.uint64(s.fsid.major).uint64(s.fsid.minor); return true;
    case Attr.UNIQUE_HANDLES: w.bool(true); return true;
    case Attr.LEASE_TIME: w.uint32(env.leaseTime); return true;
    case Attr.RDATTR_ERROR: w.uint32(Status4.OK); return true;
    case Attr.ACLSUPPORT: w.uint32(0); return true;
    case Attr.CANSETTIME: w.bool(true); return true;
    case Attr.CASE_INSENSITIVE: w.bool(false); return true;
    case Attr.CASE_PRESERVING: w.bool(true); return true;
    case Attr.CHOWN_RESTRICTED: w.bool(true); return true;
    case Attr.FILEHANDLE: w.opaque(s.fh, 128); return true;
    case Attr.FILEID: w.uint64(a.ino); return true;
    case Attr.FILES_AVAIL: if (!st) return false; w.uint64(s.readOnly ? 0 : st.filesAvail); return true;
    case Attr.FILES_FREE: if (!st) return false; w.uint64(s.readOnly ? 0 : st.filesFree); return true;
    case Attr.FILES_TOTAL: if (!st) return false; w.uint64(st.filesTotal); return true;
    case Attr.HOMOGENEOUS: w.bool(true); return true;
    case Attr.MAXFILESIZE: w.uint64(env.maxFileSize); return true;
    case Attr.MAXLINK: w.uint32(1); return true;
    case Attr.MAXNAME: w.uint32(MAX_NAME_BYTES); return true;
    case Attr.MAXREAD: w.uint64(env.maxRead); return true;
    case Attr.MAXWRITE: w.uint64(env.maxWrite); return true;
    case Attr.MODE: w.uint32(a.mode & 0o7777); return true;
    case Attr.NO_TRUNC: w.bool(true); return true;
    case Attr.NUMLINKS: w.uint32(a.nlink); return true;
    case Attr.OWNER: w.string(String(a.uid)); return true;
    case Attr.OWNER_GROUP: w.string(String(a.gid)); return true;
    case Attr.RAWDEV: w.uint32(0).uint32(0); return true;
    case Attr.SPACE_AVAIL: if (!st) return false; w.uint64(s.readOnly ? 0 : st.spaceAvail); return true;
    case Attr.SPACE_FREE: if (!st) return false; w.uint64(s.readOnly ? 0 : st.spaceFree); return true;
    case Attr.SPACE_TOTAL: if (!st) return false; w.uint64(st.spaceTotal); return true;
    case Attr.SPACE_USED: w.uint64(a.type === 'dir' ? 4096 : a.allocated); return true;
    case Attr.TIME_ACCESS: writeNfsTime4(w, a.atimeMs); return true;
    case Attr.TIME_DELTA: w.hyper(0).uint32(1000); return true; // microseconds, as toNfsTime keeps them
    case Attr.TIME_METADATA: writeNfsTime4(w, a.ctimeMs); return true;
    case Attr.TIME_MODIFY: writeNfsTime4(w, a.mtimeMs); return true;
    case Attr.MOUNTED_ON_FILEID: w.uint64(s.mountedOnFileid); return true;
    case Attr.SUPPATTR_EXCLCREAT: writeBitmap(w, EXCLCREAT_ATTRS); return true;
    default: return false;
  }
}

/** Encode fattr4 (bitmap, then the values as one opaque) for the requested attributes. */
export function writeFattr4(w: XdrWriter, s: AttrSubject, env: AttrEnv, request: Bitmap): void {
  const supported = supportedAttrs(env.minor);
  const vals = new XdrWriter(256);
  const got: Bitmap = [];
  for (const n of bitsOf(request)) {
    if (!hasBit(supported, n) || n === Attr.TIME_ACCESS_SET || n === Attr.TIME_MODIFY_SET) continue;
    if (encodeOne(vals, n, s, env)) setBit(got, n);
  }
  writeBitmap(w, got);
  w.opaque(vals.toBuffer());
}

/** fattr4 for an entry that could not be read: only rdattr_error (when asked for). */
export function writeFattr4Error(w: XdrWriter, status: number, request: Bitmap): void {
  if (!hasBit(request, Attr.RDATTR_ERROR)) {
    writeBitmap(w, []);
    w.uint32(0);
    return;
  }
  writeBitmap(w, bitmapOf([Attr.RDATTR_ERROR]));
  w.uint32(4).uint32(status);
}

// ---------------------------------------------------------------- decoding (SETATTR, OPEN, CREATE)

export interface Fattr4 {
  mask: Bitmap;
  vals: Buffer;
}

export function readFattr4(r: XdrReader): Fattr4 {
  const mask = readBitmap(r);
  const vals = r.opaque(64 << 10);
  return { mask, vals };
}

/** Settable attributes as the store understands them ("server" = now). */
export interface SetAttrs4 {
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  atime?: 'server' | number;
  mtime?: 'server' | number;
  /** The attributes present, for OPEN/CREATE's attrset and SETATTR's attrsset. */
  mask: Bitmap;
}

function parseId(s: string): number {
  // Numeric ids are what clients send without an idmapper (AUTH_SYS, nfs4_disable_idmapping).
  if (!/^\d{1,10}$/.test(s)) throw new NfsError(Status4.BADOWNER, `owner ${JSON.stringify(s.slice(0, 64))} is not a numeric id`);
  const n = Number(s);
  if (n > 0xffffffff) throw new NfsError(Status4.BADOWNER, `owner ${s} is out of range`);
  return n;
}

function readSetTime4(r: XdrReader): 'server' | number {
  const how = r.enum([TimeHow4.SERVER, TimeHow4.CLIENT]);
  if (how === TimeHow4.SERVER) return 'server';
  const seconds = r.hyper();
  const nseconds = r.uint32();
  if (nseconds >= 1e9) throw new NfsError(Status4.INVAL, 'nseconds out of range');
  if (seconds < 0) throw new NfsError(Status4.INVAL, 'times before 1970 are not kept');
  return seconds * 1000 + nseconds / 1e6;
}

/**
 * Decode the values of a settable fattr4. Unsupported attributes: ATTRNOTSUPP; supported but
 * read-only ones: INVAL; values that do not decode (or bytes left over): BADXDR.
 */
export function decodeSetAttrs(f: Fattr4, minor: number): SetAttrs4 {
  const bits = bitsOf(f.mask);
  for (const n of bits) {
    if (!isSupported(minor, n)) throw new NfsError(Status4.ATTRNOTSUPP, `attribute ${n} is not supported`);
    if (!SETTABLE.has(n)) throw new NfsError(Status4.INVAL, `attribute ${n} is read-only`);
  }
  const r = new XdrReader(f.vals);
  const out: SetAttrs4 = { mask: bitmapOf(bits) };
  try {
    for (const n of bits) {
      switch (n) {
        case Attr.SIZE: out.size = r.uint64(); break;
        case Attr.MODE: out.mode = r.uint32() & 0o7777; break;
        case Attr.OWNER: out.uid = parseId(r.string(1024)); break;
        case Attr.OWNER_GROUP: out.gid = parseId(r.string(1024)); break;
        case Attr.TIME_ACCESS_SET: out.atime = readSetTime4(r); break;
        case Attr.TIME_MODIFY_SET: out.mtime = readSetTime4(r); break;
      }
    }
  } catch (e) {
    if (e instanceof XdrError) throw new NfsError(Status4.BADXDR, `fattr4 values do not decode: ${e.message}`);
    throw e;
  }
  if (r.remaining() !== 0) throw new NfsError(Status4.BADXDR, 'fattr4 has bytes past its values');
  return out;
}

/** The values of a fattr4 as they are encoded for `s` (VERIFY / NVERIFY compare bytes). */
export function encodeValuesFor(s: AttrSubject, env: AttrEnv, mask: Bitmap): Buffer {
  const w = new XdrWriter(256);
  for (const n of bitsOf(mask)) {
    if (!isSupported(env.minor, n)) throw new NfsError(Status4.ATTRNOTSUPP, `attribute ${n} is not supported`);
    if (n === Attr.RDATTR_ERROR || n === Attr.TIME_ACCESS_SET || n === Attr.TIME_MODIFY_SET) throw new NfsError(Status4.INVAL, `attribute ${n} cannot be verified`);
    if (!encodeOne(w, n, s, env)) throw new NfsError(Status4.ATTRNOTSUPP, `attribute ${n} is not available`);
  }
  return w.toBuffer();
}
