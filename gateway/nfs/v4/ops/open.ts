/**
 * Open state operations: OPEN, OPEN_CONFIRM (4.0), CLOSE, OPEN_DOWNGRADE, DELEGRETURN,
 * DELEGPURGE, TEST_STATEID, FREE_STATEID (byte-range locks are in lock.ts).
 *
 * OPEN is where files are created (CLAIM_NULL with UNCHECKED4, GUARDED4, EXCLUSIVE4 or
 * EXCLUSIVE4_1) and where share reservations are taken: an open whose access collides with
 * another owner's deny (or whose deny collides with another's access) is SHARE_DENIED.
 * No delegations are ever granted, and nothing survives a restart to reclaim, so reclaim claims
 * answer NO_GRACE and the client re-opens normally.
 */
import type { FileAttr, SetAttr } from '../../../../capsule/types.js';
import type { Target } from '../../context.js';
import { childPath } from '../../inodes.js';
import { Access3, accessFor } from '../../nfs3.js';
import { NfsError } from '../../status.js';
import type { XdrReader } from '../../xdr.js';
import { bitmapOf, bitsOf, decodeSetAttrs, EXCLCREAT_ATTRS, hasBit, readFattr4, writeBitmap, type Bitmap, type Fattr4, type SetAttrs4 } from '../attrs4.js';
import { fileKeyOf, readStateid, writeStateid, type Compound, type OpDef, type OpResult } from '../compound.js';
import {
  Attr, Claim, CreateMode4, Deleg, NFS4_OPAQUE_LIMIT, Op, OpenResult, OpenType, SHARE_ACCESS_MASK, ShareAccess, Status4,
} from '../constants.js';
import { accessBitsValid, INVALID_STATEID, type Client, type Stateid } from '../state.js';
import { toSetAttr } from '../../attrs.js';
import { caller, checkName, isNotFound, readComponent, writable, writeChangeInfo } from './util.js';

const WANT_DELEG_MASK = 0xff00;
const WANT_NO_DELEG = 0x0400;
const WND4_NOT_WANTED = 0;
const WND4_RESOURCE = 2;

interface OpenArgs {
  seqid: number;
  shareAccess: number;
  shareDeny: number;
  clientid: bigint;
  owner: Buffer;
  create: boolean;
  createMode?: number;
  attrs?: Fattr4;
  verifier?: Buffer;
  claim: number;
  name?: Buffer;
}

function readOpenArgs(r: XdrReader): OpenArgs {
  const a: OpenArgs = {
    seqid: r.uint32(),
    shareAccess: r.uint32(),
    shareDeny: r.uint32(),
    clientid: r.uint64n(),
    owner: r.opaque(NFS4_OPAQUE_LIMIT),
    create: false,
    claim: 0,
  };
  a.create = r.enum([OpenType.NOCREATE, OpenType.CREATE]) === OpenType.CREATE;
  if (a.create) {
    a.createMode = r.enum([CreateMode4.UNCHECKED, CreateMode4.GUARDED, CreateMode4.EXCLUSIVE, CreateMode4.EXCLUSIVE4_1]);
    if (a.createMode === CreateMode4.UNCHECKED || a.createMode === CreateMode4.GUARDED) a.attrs = readFattr4(r);
    else {
      a.verifier = Buffer.from(r.fixedOpaque(8));
      if (a.createMode === CreateMode4.EXCLUSIVE4_1) a.attrs = readFattr4(r);
    }
  }
  a.claim = r.enum([Claim.NULL, Claim.PREVIOUS, Claim.DELEGATE_CUR, Claim.DELEGATE_PREV, Claim.FH, Claim.DELEG_CUR_FH, Claim.DELEG_PREV_FH]);
  switch (a.claim) {
    case Claim.NULL: a.name = readComponent(r); break;
    case Claim.PREVIOUS: r.uint32(); break;
    case Claim.DELEGATE_CUR: readStateid(r); a.name = readComponent(r); break;
    case Claim.DELEGATE_PREV: a.name = readComponent(r); break;
    case Claim.DELEG_CUR_FH: readStateid(r); break;
    default: break;
  }
  return a;
}

/** The verifier of an exclusive create, kept in atime/mtime seconds until the client sets them. */
const verifierTimes = (v: Buffer) => ({ atimeMs: v.readUInt32BE(0) * 1000, mtimeMs: v.readUInt32BE(4) * 1000 });
const verifierMatches = (a: FileAttr, v: Buffer) => a.type === 'file' && Math.floor(a.atimeMs / 1000) === v.readUInt32BE(0) && Math.floor(a.mtimeMs / 1000) === v.readUInt32BE(4);

/** Whether the caller's permissions allow the access an OPEN asks for (root may do anything). */
function permits(c: Compound, a: FileAttr, access: number, readOnly: boolean): void {
  if ((access & ShareAccess.WRITE) !== 0 && readOnly) throw new NfsError(Status4.ROFS, 'read-only export');
  const bits = accessFor(a, caller(c.call), readOnly);
  if ((access & ShareAccess.READ) !== 0 && (bits & Access3.READ) === 0) throw new NfsError(Status4.ACCESS, 'no read permission');
  if ((access & ShareAccess.WRITE) !== 0 && (bits & Access3.MODIFY) === 0) throw new NfsError(Status4.ACCESS, 'no write permission');
}

/** The client an OPEN acts for: the session's (4.1), or the confirmed one it names (4.0). */
function openClient(c: Compound, clientid: bigint): Client {
  if (c.minor >= 1) {
    if (!c.client) throw new NfsError(Status4.OP_NOT_IN_SESSION, 'OPEN outside a session');
    return c.client;
  }
  const client = c.state.client(clientid);
  if (!client.confirmed) throw new NfsError(Status4.STALE_CLIENTID, 'client id not confirmed');
  if (c.state.expired(client)) {
    c.state.destroyClient(client);
    throw new NfsError(Status4.EXPIRED, 'lease expired');
  }
  c.state.renew(client);
  c.client = client;
  return client;
}

async function open(c: Compound, a: OpenArgs): Promise<OpResult> {
  const access = a.shareAccess & SHARE_ACCESS_MASK;
  const want = a.shareAccess & ~SHARE_ACCESS_MASK;
  if (!accessBitsValid(access) || (a.shareDeny & ~3) !== 0) return { status: Status4.INVAL };
  const client = openClient(c, a.clientid);
  switch (a.claim) {
    case Claim.PREVIOUS:
    case Claim.DELEGATE_PREV:
    case Claim.DELEG_PREV_FH:
      // Nothing of an earlier incarnation is remembered: there is no grace period to reclaim in.
      return { status: client.reclaimComplete ? Status4.RECLAIM_BAD : Status4.NO_GRACE };
    case Claim.DELEGATE_CUR:
    case Claim.DELEG_CUR_FH:
      return { status: Status4.BAD_STATEID }; // no delegation was ever granted
  }
  const cur = c.requireFh();
  const store = c.ctx.store;
  let file: Target;
  let fileAttr: FileAttr;
  let dirBefore: FileAttr | undefined;
  let dirAfter: FileAttr | undefined;
  let attrset: Bitmap = [];
  let truncate = false;
  let set: SetAttrs4 | undefined;

  if (a.claim === Claim.FH) {
    if (a.create) return { status: Status4.INVAL };
    if (cur.kind === 'pseudo') return { status: Status4.ISDIR };
    file = await c.fresh(cur);
    fileAttr = await store.getattr(file.exp.capsuleId, file.path);
  } else {
    const name = checkName(a.name!);
    if (cur.kind === 'pseudo') {
      // Everything in the pseudo file system is a directory, and nothing can be created there.
      const exists = c.env.pseudo.children(cur.path, c.address).some((ch) => ch.name === name);
      if (exists) return { status: Status4.ISDIR };
      return { status: a.create ? Status4.ROFS : Status4.NOENT };
    }
    const dir = await c.fresh(cur);
    const id = dir.exp.capsuleId;
    dirBefore = await store.getattr(id, dir.path);
    if (dirBefore.type !== 'dir') return { status: Status4.NOTDIR };
    const p = childPath(dir.path, name);
    let existing: FileAttr | undefined;
    try {
      existing = await store.getattr(id, p);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    if (a.create) writable(dir);
    if (existing) {
      if (existing.type === 'dir') return { status: Status4.ISDIR };
      if (a.create) {
        if (a.createMode === CreateMode4.GUARDED) return { status: Status4.EXIST };
        if (a.createMode === CreateMode4.EXCLUSIVE || a.createMode === CreateMode4.EXCLUSIVE4_1) {
          if (!verifierMatches(existing, a.verifier!)) return { status: Status4.EXIST };
          // A retry of our own exclusive create: it succeeded the first time.
          if (a.attrs) attrset = decodeSetAttrs(a.attrs, c.minor).mask;
        } else {
          // UNCHECKED on an existing file is open(O_CREAT) on it: only size 0 (O_TRUNC) applies.
          set = decodeSetAttrs(a.attrs!, c.minor);
          if (set.size === 0) {
            truncate = true;
            attrset = bitmapOf([Attr.SIZE]);
          }
        }
      }
      fileAttr = existing;
      dir.view.remember(existing.ino, dir.ino, name);
      file = { exp: dir.exp, view: dir.view, ino: existing.ino, path: p };
      permits(c, fileAttr, access | (truncate ? ShareAccess.WRITE : 0), dir.exp.readOnly);
    } else {
      if (!a.create) return { status: Status4.NOENT };
      if (a.attrs) {
        set = decodeSetAttrs(a.attrs, c.minor);
        if (a.createMode === CreateMode4.EXCLUSIVE4_1 && bitsOf(set.mask).some((n) => !hasBit(EXCLCREAT_ATTRS, n))) {
          return { status: Status4.INVAL };
        }
      }
      fileAttr = await store.createFile(id, p, set?.mode ?? 0o644);
      const extra: SetAttr = set ? toSetAttr({ ...set, mode: undefined, size: set.size ? set.size : undefined }) : {};
      const who = c.call.authSys;
      if (who) {
        if (extra.uid === undefined && fileAttr.uid !== who.uid) extra.uid = who.uid;
        if (extra.gid === undefined && fileAttr.gid !== who.gid) extra.gid = who.gid;
      }
      if (a.verifier) Object.assign(extra, verifierTimes(a.verifier));
      if (Object.keys(extra).length > 0) fileAttr = await store.setattr(id, p, extra);
      attrset = set ? set.mask : [];
      dir.view.remember(fileAttr.ino, dir.ino, name);
      file = { exp: dir.exp, view: dir.view, ino: fileAttr.ino, path: p };
      dirAfter = await store.getattr(id, dir.path);
    }
  }
  if (fileAttr.type === 'dir') return { status: Status4.ISDIR };
  if (a.claim === Claim.FH) permits(c, fileAttr, access, file.exp.readOnly);
  const owner = c.state.openOwner(client, a.owner);
  if (c.minor === 0) owner.seqid = a.seqid;
  const fileKey = fileKeyOf(file);
  // Share reservations are checked before anything changes the file (O_TRUNC below).
  c.state.checkShare(fileKey, owner, access, a.shareDeny);
  if (truncate) {
    writable(file);
    await store.setattr(file.exp.capsuleId, file.path, { size: 0 });
  }
  const st = c.state.open(owner, fileKey, access, a.shareDeny);
  const sid: Stateid = { seqid: st.seqid, other: st.other };
  c.curStateid = sid;
  c.setFs(file);
  const before = dirBefore ?? fileAttr;
  const after = dirAfter ?? before;
  return {
    status: Status4.OK,
    body: (w) => {
      writeStateid(w, sid);
      writeChangeInfo(w, before, after);
      w.uint32(OpenResult.LOCKTYPE_POSIX); // POSIX byte-range locks; no OPEN_CONFIRM needed
      writeBitmap(w, attrset);
      if (c.minor >= 1 && want !== 0 && (want & WANT_DELEG_MASK) !== 0) {
        w.uint32(Deleg.NONE_EXT);
        if ((want & WANT_DELEG_MASK) === WANT_NO_DELEG) w.uint32(WND4_NOT_WANTED);
        else w.uint32(WND4_RESOURCE).bool(false);
      } else {
        w.uint32(Deleg.NONE);
      }
    },
  };
}

/** The open state a stateid argument names, checked against the current file. */
function openOfCurrent(c: Compound, sid: Stateid) {
  const cur = c.requireFh();
  const st = c.state.findOpen(c.effectiveStateid(sid), c.minor);
  if (cur.kind !== 'fs' || fileKeyOf(cur.t) !== st.fileKey) throw new NfsError(Status4.BAD_STATEID, 'stateid is not for the current file');
  if (c.session && st.client !== c.session.client) throw new NfsError(Status4.BAD_STATEID, 'stateid of another client');
  c.state.renew(st.client);
  return st;
}

export function openOps(): Map<number, OpDef> {
  const ops = new Map<number, OpDef>();

  ops.set(Op.OPEN, { handler: (c, r) => open(c, readOpenArgs(r)) });

  ops.set(Op.OPEN_CONFIRM, {
    handler: (c, r) => {
      const sid = readStateid(r);
      const seqid = r.uint32();
      const st = openOfCurrent(c, sid);
      st.owner.seqid = seqid;
      st.seqid = (st.seqid + 1) >>> 0 || 1;
      const out: Stateid = { seqid: st.seqid, other: st.other };
      c.curStateid = out;
      return { status: Status4.OK, body: (w) => writeStateid(w, out) };
    },
  });

  ops.set(Op.CLOSE, {
    handler: (c, r) => {
      const seqid = r.uint32();
      const sid = readStateid(r);
      const st = openOfCurrent(c, sid);
      if (c.minor === 0) st.owner.seqid = seqid;
      // Locks go first (LOCKU, RELEASE_LOCKOWNER): closing under them is LOCKS_HELD.
      for (const l of st.locks) if (l.ranges.length > 0) return { status: Status4.LOCKS_HELD };
      c.state.dropOpen(st);
      // 4.1 answers the invalid special stateid (RFC 8881 section 18.2.4); 4.0 the next seqid.
      const out: Stateid = c.minor >= 1 ? INVALID_STATEID : { seqid: (st.seqid + 1) >>> 0, other: st.other };
      c.curStateid = undefined;
      return { status: Status4.OK, body: (w) => writeStateid(w, out) };
    },
  });

  ops.set(Op.OPEN_DOWNGRADE, {
    handler: (c, r) => {
      const sid = readStateid(r);
      const seqid = r.uint32();
      const access = r.uint32() & SHARE_ACCESS_MASK;
      const deny = r.uint32();
      if (!accessBitsValid(access) || (deny & ~3) !== 0) return { status: Status4.INVAL };
      const st = openOfCurrent(c, sid);
      if (c.minor === 0) st.owner.seqid = seqid;
      c.state.downgrade(st, access, deny);
      const out: Stateid = { seqid: st.seqid, other: st.other };
      c.curStateid = out;
      return { status: Status4.OK, body: (w) => writeStateid(w, out) };
    },
  });

  // No delegations are granted, so none can be returned or purged.
  ops.set(Op.DELEGRETURN, {
    handler: (c, r) => {
      readStateid(r);
      c.requireFh();
      return { status: Status4.BAD_STATEID };
    },
  });
  ops.set(Op.DELEGPURGE, {
    handler: (_c, r) => {
      r.uint64n();
      return { status: Status4.NOTSUPP };
    },
  });

  ops.set(Op.TEST_STATEID, {
    handler: (c, r) => {
      const sids = r.array((x) => readStateid(x), 1024);
      const codes = sids.map((s) => c.state.testStateid(s, c.client));
      return { status: Status4.OK, body: (w) => w.array(codes, (x, v) => x.uint32(v)) };
    },
  });

  ops.set(Op.FREE_STATEID, {
    handler: (c, r) => {
      const sid = c.effectiveStateid(readStateid(r));
      const code = c.state.testStateid(sid, c.client);
      if (code !== Status4.OK && code !== Status4.OLD_STATEID) return { status: Status4.BAD_STATEID };
      const st = c.state.findState({ seqid: 0, other: sid.other }, 1);
      // An open stateid still holds its open (CLOSE frees it); a lock stateid goes once it holds
      // no ranges.
      if (st.kind === 'open' || st.ranges.length > 0) return { status: Status4.LOCKS_HELD };
      c.state.dropLock(st);
      return { status: Status4.OK };
    },
  });

  return ops;
}
