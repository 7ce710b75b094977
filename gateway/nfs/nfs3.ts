/**
 * NFS version 3 (RFC 1813), program 100003 version 3, on top of the capsule store.
 *
 * Every procedure first decodes all of its arguments (a decoding failure is GARBAGE_ARGS, by
 * way of XdrError), then does its work, and only then writes the result, so a failure half way
 * never leaves a half-written reply. Failures become nfsstat3 values with the "resfail" body
 * the RFC prescribes for the procedure (attributes or wcc data where known).
 *
 * Data path: READ answers from the store's in-memory segments without a promise when it can
 * (tryReadSyncHeld) and hands the bytes to the socket by reference; WRITE passes the request's
 * payload (a view of the received record) to the store's write-back buffer. UNSTABLE writes are
 * durable after COMMIT; DATA_SYNC and FILE_SYNC flush before replying.
 */
import fsp from 'node:fs/promises';
import { ROOT_INO } from '../../capsule/schema.js';
import type { FileAttr, SetAttr } from '../../capsule/types.js';
import { MAX_NAME_BYTES } from '../../capsule/paths.js';
import {
  FATTR3_SIZE, isEmptySetAttr, readNfsTime, readSattr3, toNfsTime, toSetAttr, writeFattr3, writePostOpAttr, writeWcc, type Sattr3,
} from './attrs.js';
import type { NfsContext, Target } from './context.js';
import { FH_SIZE, NFS3_FHSIZE } from './handles.js';
import { CHILD_COOKIE_BASE, childPath, resumeIndex } from './inodes.js';
import type { RpcCall, RpcProcedure, RpcProgram } from './rpc.js';
import { Nfs3Status, NfsError, statusOf } from './status.js';
import { pad4, type XdrReader, type XdrWriter } from './xdr.js';

export const NFS_PROGRAM = 100003;
export const NFS_V3 = 3;

export const Proc3 = {
  NULL: 0, GETATTR: 1, SETATTR: 2, LOOKUP: 3, ACCESS: 4, READLINK: 5, READ: 6, WRITE: 7, CREATE: 8, MKDIR: 9,
  SYMLINK: 10, MKNOD: 11, REMOVE: 12, RMDIR: 13, RENAME: 14, LINK: 15, READDIR: 16, READDIRPLUS: 17,
  FSSTAT: 18, FSINFO: 19, PATHCONF: 20, COMMIT: 21,
} as const;

export const StableHow = { UNSTABLE: 0, DATA_SYNC: 1, FILE_SYNC: 2 } as const;
export const CreateMode = { UNCHECKED: 0, GUARDED: 1, EXCLUSIVE: 2 } as const;
export const Access3 = { READ: 0x1, LOOKUP: 0x2, MODIFY: 0x4, EXTEND: 0x8, DELETE: 0x10, EXECUTE: 0x20 } as const;

/** Largest READ and WRITE: one default segment, the store's unit of I/O. */
export const NFS3_MAX_IO = 1 << 20;
/** Preferred READDIR size. */
const DTPREF = 64 << 10;
/** Largest file the store accepts (capsule/store.ts MAX_FILE_SIZE). */
const MAX_FILE_SIZE = 2 ** 50;
/** Largest READDIR reply built, whatever the client asks for. */
const MAX_DIR_REPLY = 1 << 20;
const FSF3_HOMOGENEOUS = 0x8;
const FSF3_CANSETTIME = 0x10;
const NOBODY = 65534;
const OK = Nfs3Status.OK;

// ---------------------------------------------------------------- argument helpers

const readFh = (r: XdrReader): Buffer => r.opaque(NFS3_FHSIZE);
/** A filename as raw bytes: length and encoding are checked later, so they become statuses. */
const readName = (r: XdrReader): Buffer => r.opaque(4096);
const readDirop = (r: XdrReader) => ({ dir: readFh(r), name: readName(r) });

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A name for the store: one component, valid UTF-8 (it must round-trip through READDIR). */
function checkName(raw: Buffer): string {
  if (raw.length === 0) throw new NfsError(Nfs3Status.INVAL, 'empty file name');
  if (raw.length > MAX_NAME_BYTES) throw new NfsError(Nfs3Status.NAMETOOLONG, 'file name longer than 255 bytes');
  let name: string;
  try {
    name = utf8.decode(raw);
  } catch {
    throw new NfsError(Nfs3Status.INVAL, 'file name is not valid UTF-8');
  }
  if (name.includes('/') || name.includes('\0')) throw new NfsError(Nfs3Status.INVAL, 'file name contains "/" or NUL');
  return name;
}

const isDot = (n: string) => n === '.' || n === '..';

/** The capsule's notion of "the caller": AUTH_SYS ids, or nobody. */
function caller(call: RpcCall): { uid: number; gid: number; gids: number[] } {
  const a = call.authSys;
  return a ? { uid: a.uid, gid: a.gid, gids: a.gids } : { uid: NOBODY, gid: NOBODY, gids: [] };
}

/** ACCESS: what the mode bits grant the caller (root gets everything but needless execute). */
export function accessFor(a: FileAttr, who: { uid: number; gid: number; gids: number[] }, readOnly: boolean): number {
  const dir = a.type === 'dir';
  let bits: number;
  if (who.uid === 0) {
    bits = 7;
    if (!dir && (a.mode & 0o111) === 0) bits &= ~1; // root may execute only what someone may
  } else if (who.uid === a.uid) bits = (a.mode >> 6) & 7;
  else if (who.gid === a.gid || who.gids.includes(a.gid)) bits = (a.mode >> 3) & 7;
  else bits = a.mode & 7;
  let out = 0;
  if (bits & 4) out |= Access3.READ;
  if (bits & 2) out |= dir ? Access3.MODIFY | Access3.EXTEND | Access3.DELETE : Access3.MODIFY | Access3.EXTEND;
  if (bits & 1) out |= dir ? Access3.LOOKUP : Access3.EXECUTE;
  if (readOnly) out &= ~(Access3.MODIFY | Access3.EXTEND | Access3.DELETE);
  return out;
}

const parentPath = (p: string): string => {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
};

// ---------------------------------------------------------------- the program

type WriteBody = (res: XdrWriter) => void;

export function nfs3Program(ctx: NfsContext): RpcProgram {
  const store = ctx.store;
  const procs = new Map<number, RpcProcedure>();
  const attrs = (t: Target, p = t.path) => store.getattr(t.exp.capsuleId, p);
  /** Attributes for a resfail body: best effort, never a second error. */
  const attrsOrNone = async (t: Target | undefined, p?: string): Promise<FileAttr | undefined> => {
    if (!t) return undefined;
    try {
      return await attrs(t, p);
    } catch {
      return undefined;
    }
  };
  const writable = (t: Target) => {
    if (t.exp.readOnly) throw new NfsError(Nfs3Status.ROFS, `export ${t.exp.path} is read-only`);
  };
  const dirAttrs = async (t: Target): Promise<FileAttr> => {
    const a = await attrs(t);
    if (a.type !== 'dir') throw new NfsError(Nfs3Status.NOTDIR, `${t.path || '/'} is not a directory`);
    return a;
  };
  /** Make new files and directories belong to the caller, as a local create would. */
  const own = async (t: Target, p: string, a: FileAttr, call: RpcCall, s: Sattr3): Promise<FileAttr> => {
    const set: SetAttr = {};
    if (call.authSys) {
      if (s.uid === undefined && a.uid !== call.authSys.uid) set.uid = call.authSys.uid;
      if (s.gid === undefined && a.gid !== call.authSys.gid) set.gid = call.authSys.gid;
    }
    // mode went into the create itself; size 0 on a new file changes nothing
    Object.assign(set, toSetAttr({ ...s, mode: undefined, size: s.size ? s.size : undefined }));
    if (isEmptySetAttr(set)) return a;
    return store.setattr(t.exp.capsuleId, p, set);
  };

  procs.set(Proc3.NULL, () => {});

  procs.set(Proc3.GETATTR, async (call, res) => {
    const fh = readFh(call.args);
    let status: number;
    try {
      const t = await ctx.target(call, fh);
      const a = await attrs(t);
      res.uint32(OK);
      writeFattr3(res, a, t.exp.fsid);
      return;
    } catch (e) {
      status = ctx.fail(e, 'GETATTR');
    }
    res.uint32(status);
  });

  procs.set(Proc3.SETATTR, async (call, res) => {
    const r = call.args;
    const fh = readFh(r);
    const s = readSattr3(r);
    const guard = r.bool() ? readNfsTime(r) : undefined;
    let t: Target | undefined;
    let before: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, fh);
      writable(t);
      before = await attrs(t);
      if (guard) {
        const c = toNfsTime(before.ctimeMs);
        if (c.seconds !== guard.seconds || c.nseconds !== guard.nseconds) throw new NfsError(Nfs3Status.NOT_SYNC, 'ctime guard does not match');
      }
      const set = toSetAttr(s);
      if (set.size !== undefined && before.type === 'dir') throw new NfsError(Nfs3Status.INVAL, 'cannot set the size of a directory');
      const after = isEmptySetAttr(set) ? before : await store.setattr(t.exp.capsuleId, t.path, set);
      res.uint32(OK);
      writeWcc(res, before, after, t.exp.fsid);
      return;
    } catch (e) {
      status = ctx.fail(e, 'SETATTR', { path: t?.path });
    }
    res.uint32(status);
    writeWcc(res, before, await attrsOrNone(t), t?.exp.fsid ?? 0n);
  });

  procs.set(Proc3.LOOKUP, async (call, res) => {
    const { dir, name: rawName } = readDirop(call.args);
    let t: Target | undefined;
    let dirA: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, dir);
      dirA = await dirAttrs(t);
      const name = checkName(rawName);
      let ino: number;
      let a: FileAttr;
      if (name === '.') {
        ino = t.ino;
        a = dirA;
      } else if (name === '..') {
        // The capsule root is the top: ".." of the root is the root (no escape from the export).
        const p = t.ino === ROOT_INO ? '' : parentPath(t.path);
        a = p === t.path ? dirA : await attrs(t, p);
        ino = a.ino;
      } else {
        a = await attrs(t, childPath(t.path, name));
        ino = a.ino;
        t.view.remember(ino, t.ino, name);
      }
      res.uint32(OK);
      res.opaque(ctx.handleOf(t.exp, ino), NFS3_FHSIZE);
      writePostOpAttr(res, a, t.exp.fsid);
      writePostOpAttr(res, dirA, t.exp.fsid);
      return;
    } catch (e) {
      status = ctx.fail(e, 'LOOKUP', { path: t?.path });
    }
    res.uint32(status);
    writePostOpAttr(res, dirA, t?.exp.fsid ?? 0n);
  });

  procs.set(Proc3.ACCESS, async (call, res) => {
    const fh = readFh(call.args);
    const want = call.args.uint32();
    let t: Target | undefined;
    let status: number;
    try {
      t = await ctx.target(call, fh);
      const a = await attrs(t);
      res.uint32(OK);
      writePostOpAttr(res, a, t.exp.fsid);
      res.uint32(want & accessFor(a, caller(call), t.exp.readOnly));
      return;
    } catch (e) {
      status = ctx.fail(e, 'ACCESS');
    }
    res.uint32(status);
    writePostOpAttr(res, undefined, 0n);
  });

  procs.set(Proc3.READ, async (call, res) => {
    const r = call.args;
    const fh = readFh(r);
    const offset = r.uint64();
    const count = Math.min(r.uint32(), NFS3_MAX_IO);
    let t: Target | undefined;
    let a: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, fh);
      a = await attrs(t);
      if (a.type === 'dir') throw new NfsError(Nfs3Status.ISDIR, 'READ of a directory');
      const data = offset >= a.size ? Buffer.alloc(0) : await ctx.readBytes(t, offset, Math.min(count, a.size - offset), call);
      res.uint32(OK);
      writePostOpAttr(res, a, t.exp.fsid);
      res.uint32(data.length);
      res.bool(offset + data.length >= a.size);
      // By reference: the bytes (often a view of a cached segment) go to the socket uncopied.
      res.opaqueRef(data);
      return;
    } catch (e) {
      status = ctx.fail(e, 'READ', { path: t?.path, offset });
    }
    res.uint32(status);
    writePostOpAttr(res, a, t?.exp.fsid ?? 0n);
  });

  procs.set(Proc3.WRITE, async (call, res) => {
    const r = call.args;
    const fh = readFh(r);
    const offset = r.uint64();
    const count = r.uint32();
    const stable = r.enum([StableHow.UNSTABLE, StableHow.DATA_SYNC, StableHow.FILE_SYNC]);
    const payload = r.opaque();
    let t: Target | undefined;
    let before: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, fh);
      writable(t);
      if (count > payload.length) throw new NfsError(Nfs3Status.INVAL, `WRITE count ${count} exceeds its ${payload.length} bytes of data`);
      if (offset + count > MAX_FILE_SIZE) throw new NfsError(Nfs3Status.FBIG, 'write beyond the maximum file size');
      before = await attrs(t);
      if (before.type === 'dir') throw new NfsError(Nfs3Status.ISDIR, 'WRITE to a directory');
      const id = t.exp.capsuleId;
      const n = count === 0 ? 0 : await store.writeBuffered(id, t.path, offset, payload.subarray(0, count), { adopt: true, release: call.recycleRecord?.() });
      let committed: number = StableHow.UNSTABLE;
      if (stable !== StableHow.UNSTABLE) {
        await store.flush(id, t.path);
        committed = StableHow.FILE_SYNC; // a flush commits data and metadata together
      }
      const after = await attrs(t);
      res.uint32(OK);
      writeWcc(res, before, after, t.exp.fsid);
      res.uint32(n);
      res.enum(committed);
      res.fixedOpaque(ctx.writeVerifier);
      return;
    } catch (e) {
      status = ctx.fail(e, 'WRITE', { path: t?.path, offset });
    }
    res.uint32(status);
    writeWcc(res, before, await attrsOrNone(t), t?.exp.fsid ?? 0n);
  });

  /** The success reply of CREATE and MKDIR (diropres3): the new handle, its attributes, wcc. */
  const created = async (res: XdrWriter, t: Target, name: string, a: FileAttr, before: FileAttr | undefined): Promise<void> => {
    t.view.remember(a.ino, t.ino, name);
    const after = await attrs(t);
    res.uint32(OK);
    res.bool(true).opaque(ctx.handleOf(t.exp, a.ino), NFS3_FHSIZE);
    writePostOpAttr(res, a, t.exp.fsid);
    writeWcc(res, before, after, t.exp.fsid);
  };

  procs.set(Proc3.CREATE, async (call, res) => {
    const r = call.args;
    const { dir, name: rawName } = readDirop(r);
    const mode = r.enum([CreateMode.UNCHECKED, CreateMode.GUARDED, CreateMode.EXCLUSIVE]);
    const s: Sattr3 = mode === CreateMode.EXCLUSIVE ? {} : readSattr3(r);
    const verf = mode === CreateMode.EXCLUSIVE ? r.fixedOpaque(8) : undefined;
    let t: Target | undefined;
    let before: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, dir);
      writable(t);
      before = await dirAttrs(t);
      const name = checkName(rawName);
      if (isDot(name)) throw new NfsError(Nfs3Status.EXIST, `${name} exists`);
      const id = t.exp.capsuleId;
      const p = childPath(t.path, name);
      // EXCLUSIVE: the verifier is kept in atime/mtime (seconds) until the client's SETATTR
      // replaces it, so a retransmitted CREATE finds its own file and succeeds.
      const vHi = verf ? verf.readUInt32BE(0) : 0;
      const vLo = verf ? verf.readUInt32BE(4) : 0;
      const existing = store.getattrIfExists
        ? await store.getattrIfExists(id, p)
        : await attrs(t, p).catch((e: unknown) => {
            if (statusOf(e).status === Nfs3Status.NOENT) return undefined;
            throw e;
          });
      let a: FileAttr;
      if (existing) {
        if (mode === CreateMode.GUARDED) throw new NfsError(Nfs3Status.EXIST, `${p} exists`);
        if (mode === CreateMode.EXCLUSIVE) {
          const mine = existing.type === 'file' && Math.floor(existing.atimeMs / 1000) === vHi && Math.floor(existing.mtimeMs / 1000) === vLo;
          if (!mine) throw new NfsError(Nfs3Status.EXIST, `${p} exists`);
          a = existing;
        } else {
          if (existing.type === 'dir') throw new NfsError(Nfs3Status.EXIST, `${p} is a directory`);
          // UNCHECKED on an existing file is open(O_CREAT) on it: only a size (O_TRUNC) applies;
          // the mode and owner are for new files and must not change an existing one.
          const set = toSetAttr({ size: s.size });
          a = isEmptySetAttr(set) ? existing : await store.setattr(id, p, set);
        }
      } else {
        a = await store.createFile(id, p, s.mode ?? 0o644);
        if (verf) a = await store.setattr(id, p, { atimeMs: vHi * 1000, mtimeMs: vLo * 1000, ...(call.authSys ? { uid: call.authSys.uid, gid: call.authSys.gid } : {}) });
        else a = await own(t, p, a, call, s);
      }
      await created(res, t, name, a, before);
      return;
    } catch (e) {
      status = ctx.fail(e, 'CREATE', { path: t?.path });
    }
    res.uint32(status);
    writeWcc(res, before, await attrsOrNone(t), t?.exp.fsid ?? 0n);
  });

  procs.set(Proc3.MKDIR, async (call, res) => {
    const r = call.args;
    const { dir, name: rawName } = readDirop(r);
    const s = readSattr3(r);
    let t: Target | undefined;
    let before: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, dir);
      writable(t);
      before = await dirAttrs(t);
      const name = checkName(rawName);
      if (isDot(name)) throw new NfsError(Nfs3Status.EXIST, `${name} exists`);
      const p = childPath(t.path, name);
      let a = await store.mkdir(t.exp.capsuleId, p, s.mode ?? 0o755);
      a = await own(t, p, a, call, s);
      await created(res, t, name, a, before);
      return;
    } catch (e) {
      status = ctx.fail(e, 'MKDIR', { path: t?.path });
    }
    res.uint32(status);
    writeWcc(res, before, await attrsOrNone(t), t?.exp.fsid ?? 0n);
  });

  const remove = (op: 'REMOVE' | 'RMDIR'): RpcProcedure => async (call, res) => {
    const { dir, name: rawName } = readDirop(call.args);
    let t: Target | undefined;
    let before: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, dir);
      writable(t);
      before = await dirAttrs(t);
      const name = checkName(rawName);
      if (name === '.') throw new NfsError(Nfs3Status.INVAL, 'cannot remove "."');
      if (name === '..') throw new NfsError(op === 'RMDIR' ? Nfs3Status.NOTEMPTY : Nfs3Status.INVAL, 'cannot remove ".."');
      const p = childPath(t.path, name);
      const victim = await attrs(t, p);
      if (op === 'RMDIR') await store.rmdir(t.exp.capsuleId, p);
      else await store.unlink(t.exp.capsuleId, p);
      t.view.forget(victim.ino);
      res.uint32(OK);
      writeWcc(res, before, await attrs(t), t.exp.fsid);
      return;
    } catch (e) {
      status = ctx.fail(e, op, { path: t?.path });
    }
    res.uint32(status);
    writeWcc(res, before, await attrsOrNone(t), t?.exp.fsid ?? 0n);
  };
  procs.set(Proc3.REMOVE, remove('REMOVE'));
  procs.set(Proc3.RMDIR, remove('RMDIR'));

  procs.set(Proc3.RENAME, async (call, res) => {
    const r = call.args;
    const from = readDirop(r);
    const to = readDirop(r);
    let ft: Target | undefined;
    let tt: Target | undefined;
    let fBefore: FileAttr | undefined;
    let tBefore: FileAttr | undefined;
    let status: number;
    try {
      ft = await ctx.target(call, from.dir);
      tt = await ctx.target(call, to.dir);
      writable(ft);
      if (ft.exp !== tt.exp) throw new NfsError(Nfs3Status.XDEV, 'RENAME across exports');
      fBefore = await dirAttrs(ft);
      tBefore = await dirAttrs(tt);
      const fromName = checkName(from.name);
      const toName = checkName(to.name);
      if (isDot(fromName) || isDot(toName)) throw new NfsError(Nfs3Status.INVAL, 'cannot rename "." or ".."');
      const fromPath = childPath(ft.path, fromName);
      const toPath = childPath(tt.path, toName);
      const moving = await attrs(ft, fromPath);
      const replaced = await attrs(tt, toPath).catch(() => undefined);
      await store.rename(ft.exp.capsuleId, fromPath, toPath);
      if (replaced && replaced.ino !== moving.ino) ft.view.forget(replaced.ino);
      ft.view.remember(moving.ino, tt.ino, toName);
      const fAfter = await attrs(ft);
      const tAfter = ft.ino === tt.ino ? fAfter : await attrs(tt);
      res.uint32(OK);
      writeWcc(res, fBefore, fAfter, ft.exp.fsid);
      writeWcc(res, tBefore, tAfter, tt.exp.fsid);
      return;
    } catch (e) {
      status = ctx.fail(e, 'RENAME', { from: ft?.path, to: tt?.path });
    }
    res.uint32(status);
    writeWcc(res, fBefore, await attrsOrNone(ft), ft?.exp.fsid ?? 0n);
    writeWcc(res, tBefore, await attrsOrNone(tt), tt?.exp.fsid ?? 0n);
  });

  procs.set(Proc3.READDIR, (call, res) => readdir(ctx, call, res, false));
  procs.set(Proc3.READDIRPLUS, (call, res) => readdir(ctx, call, res, true));

  /**
   * FSSTAT, FSINFO, PATHCONF: about the object a handle names. `body` does the work and returns
   * what to write after the post-op attributes, so a failure never leaves half a reply.
   */
  const aboutObject = (op: string, body: (t: Target, a: FileAttr) => WriteBody | Promise<WriteBody>): RpcProcedure => async (call, res) => {
    const fh = readFh(call.args);
    let status: number;
    try {
      const t = await ctx.target(call, fh);
      const a = await attrs(t);
      const write = await body(t, a);
      res.uint32(OK);
      writePostOpAttr(res, a, t.exp.fsid);
      write(res);
      return;
    } catch (e) {
      status = ctx.fail(e, op);
    }
    res.uint32(status);
    writePostOpAttr(res, undefined, 0n);
  };

  procs.set(Proc3.FSSTAT, aboutObject('FSSTAT', async (t) => {
    let tbytes = 2 ** 50;
    let fbytes = tbytes;
    let abytes = tbytes;
    let tfiles = 2 ** 32;
    let ffiles = tfiles;
    if (store.dir) {
      // The data dir is where segments land, so its free space is what writes can use.
      const st = await fsp.statfs(store.dir);
      tbytes = st.blocks * st.bsize;
      fbytes = st.bfree * st.bsize;
      abytes = st.bavail * st.bsize;
      tfiles = st.files;
      ffiles = st.ffree;
    }
    return (res) => {
      res.uint64(tbytes).uint64(t.exp.readOnly ? 0 : fbytes).uint64(t.exp.readOnly ? 0 : abytes);
      res.uint64(tfiles).uint64(ffiles).uint64(ffiles);
      res.uint32(0); // invarsec: may change at any time
    };
  }));

  procs.set(Proc3.FSINFO, aboutObject('FSINFO', () => (res) => {
    res.uint32(NFS3_MAX_IO).uint32(NFS3_MAX_IO).uint32(4096); // rtmax, rtpref, rtmult
    res.uint32(NFS3_MAX_IO).uint32(NFS3_MAX_IO).uint32(4096); // wtmax, wtpref, wtmult
    res.uint32(DTPREF);
    res.uint64(MAX_FILE_SIZE);
    res.uint32(0).uint32(1000); // time_delta: times are kept to the microsecond (see toNfsTime)
    res.uint32(FSF3_HOMOGENEOUS | FSF3_CANSETTIME); // no hard links, no symlinks
  }));

  procs.set(Proc3.PATHCONF, aboutObject('PATHCONF', () => (res) => {
    res.uint32(1); // linkmax
    res.uint32(MAX_NAME_BYTES);
    res.bool(true); // no_trunc: long names are refused, not cut
    res.bool(true); // chown_restricted
    res.bool(false); // case_insensitive
    res.bool(true); // case_preserving
  }));

  procs.set(Proc3.COMMIT, async (call, res) => {
    const r = call.args;
    const fh = readFh(r);
    r.uint64(); // offset and count: a flush commits the whole file, which covers any range
    r.uint32();
    let t: Target | undefined;
    let before: FileAttr | undefined;
    let status: number;
    try {
      t = await ctx.target(call, fh);
      before = await attrs(t);
      if (!t.exp.readOnly && before.type === 'file') await store.flush(t.exp.capsuleId, t.path);
      const after = await attrs(t);
      res.uint32(OK);
      writeWcc(res, before, after, t.exp.fsid);
      res.fixedOpaque(ctx.writeVerifier);
      return;
    } catch (e) {
      status = ctx.fail(e, 'COMMIT', { path: t?.path });
    }
    res.uint32(status);
    writeWcc(res, before, await attrsOrNone(t), t?.exp.fsid ?? 0n);
  });

  // Not offered by the store: answered NOTSUPP with the procedure's resfail body.
  procs.set(Proc3.READLINK, (_call, res) => {
    res.uint32(Nfs3Status.NOTSUPP);
    writePostOpAttr(res, undefined, 0n);
  });
  const noWcc = (_call: RpcCall, res: XdrWriter) => {
    res.uint32(Nfs3Status.NOTSUPP);
    writeWcc(res, undefined, undefined, 0n);
  };
  procs.set(Proc3.SYMLINK, noWcc);
  procs.set(Proc3.MKNOD, noWcc);
  procs.set(Proc3.LINK, (_call, res) => {
    res.uint32(Nfs3Status.NOTSUPP);
    writePostOpAttr(res, undefined, 0n);
    writeWcc(res, undefined, undefined, 0n);
  });

  return { prog: NFS_PROGRAM, vers: NFS_V3, name: 'nfs3', procedures: procs };
}

// ---------------------------------------------------------------- READDIR / READDIRPLUS

/*
 * Cookies: "." is 1, ".." is 2, a child is its inode number + 2. Children are listed in inode
 * order, so "continue after cookie c" means "children whose inode number + 2 > c": that stays
 * right whatever is created or removed between two calls (new inodes have higher numbers and
 * come last), so no cookie ever goes bad and the verifier only names the capsule incarnation.
 */
const COOKIE_DOT = 1;
const COOKIE_DOTDOT = 2;
const COOKIE_BASE = CHILD_COOKIE_BASE;

/** Fixed part of READDIR3resok: status, post_op_attr, verifier, end of list, eof. */
const DIR_OVERHEAD = 4 + 4 + FATTR3_SIZE + 8 + 4 + 4;
/** entry3 without its name: value_follows, fileid, name length, cookie. */
const ENTRY_FIXED = 4 + 8 + 4 + 8;
/** What entryplus3 adds: post_op_attr and post_op_fh3 with one of our handles. */
const PLUS_EXTRA = 4 + FATTR3_SIZE + 4 + 4 + FH_SIZE;

interface DirItem {
  name: string;
  cookie: number;
  attr: FileAttr;
}

function cookieVerifier(generation: number): Buffer {
  const v = Buffer.alloc(8);
  v.writeUInt32BE(generation >>> 0, 0);
  v.writeUInt32BE(1, 4);
  return v;
}

async function readdir(ctx: NfsContext, call: RpcCall, res: XdrWriter, plus: boolean): Promise<void> {
  const r = call.args;
  const fh = readFh(r);
  const cookie = r.uint64();
  const verf = r.fixedOpaque(8);
  const dircount = r.uint32();
  const maxcount = plus ? r.uint32() : dircount;
  const store = ctx.store;
  let t: Target | undefined;
  let dirA: FileAttr | undefined;
  let status: number;
  try {
    t = await ctx.target(call, fh);
    const id = t.exp.capsuleId;
    dirA = await store.getattr(id, t.path);
    if (dirA.type !== 'dir') throw new NfsError(Nfs3Status.NOTDIR, `${t.path || '/'} is not a directory`);
    const ours = cookieVerifier(t.exp.generation);
    if (cookie !== 0 && !verf.equals(Buffer.alloc(8)) && !verf.equals(ours)) {
      throw new NfsError(Nfs3Status.BAD_COOKIE, 'cookie verifier of another capsule incarnation');
    }
    const listing = await t.view.listing(t.ino, t.path);
    const children = listing.entries;
    // Where to resume: the first child whose cookie is past the one given.
    const childFrom = cookie > COOKIE_DOTDOT ? resumeIndex(children, cookie) : 0;
    const items: DirItem[] = [];
    if (cookie < COOKIE_DOT) items.push({ name: '.', cookie: COOKIE_DOT, attr: dirA });
    if (cookie < COOKIE_DOTDOT) {
      const up = t.ino === ROOT_INO ? dirA : await store.getattr(id, parentPath(t.path));
      items.push({ name: '..', cookie: COOKIE_DOTDOT, attr: up });
    }
    const maxBytes = Math.min(maxcount, MAX_DIR_REPLY);
    const maxDir = plus ? Math.min(dircount, MAX_DIR_REPLY) : maxBytes;
    let used = DIR_OVERHEAD;
    let dirUsed = DIR_OVERHEAD;
    const out: DirItem[] = [];
    const nameBytes = (n: string) => {
      const b = Buffer.byteLength(n);
      return b + pad4(b);
    };
    let i = 0;
    let next: DirItem | undefined;
    let eof = true;
    const take = (): DirItem | undefined => {
      if (i < items.length) return items[i++];
      const c = children[childFrom + i - items.length];
      if (!c) return undefined;
      i++;
      return { name: c.name, cookie: c.attr.ino + COOKIE_BASE, attr: c.attr };
    };
    while ((next = take())) {
      const base = ENTRY_FIXED + nameBytes(next.name);
      const size = base + (plus ? PLUS_EXTRA : 0);
      if (used + size > maxBytes || dirUsed + base > maxDir) {
        eof = false;
        break;
      }
      used += size;
      dirUsed += base;
      out.push(next);
    }
    if (out.length === 0 && !eof) throw new NfsError(Nfs3Status.TOOSMALL, 'READDIR buffer too small for one entry');
    res.uint32(OK);
    writePostOpAttr(res, dirA, t.exp.fsid);
    res.fixedOpaque(ours);
    for (const e of out) {
      res.bool(true);
      res.uint64(e.attr.ino);
      res.string(e.name);
      res.uint64(e.cookie);
      if (plus) {
        writePostOpAttr(res, e.attr, t.exp.fsid);
        res.bool(true).opaque(ctx.handleOf(t.exp, e.attr.ino), NFS3_FHSIZE);
      }
    }
    res.bool(false);
    res.bool(eof);
    return;
  } catch (e) {
    status = ctx.fail(e, plus ? 'READDIRPLUS' : 'READDIR', { path: t?.path });
  }
  res.uint32(status);
  writePostOpAttr(res, dirA, t?.exp.fsid ?? 0n);
}

