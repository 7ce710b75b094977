/**
 * Byte-range locks: LOCK, LOCKT, LOCKU, and the lock side of RELEASE_LOCKOWNER and FREE_STATEID
 * (RFC 8881 sections 9 and 18.10-18.12). Advisory POSIX locks, kept in memory with the rest of
 * the state: a lock owner's ranges on a file are one lock stateid derived from an open; a new
 * lock replaces what the same owner held in its range (splitting ranges as POSIX does), and a
 * conflict with another owner is DENIED with the conflicting lock described. Blocking lock
 * types are answered like the non-blocking ones (the client polls). Locks go with their
 * client's lease; I/O is not checked against them (they are advisory).
 */
import { NfsError } from '../../status.js';
import type { XdrReader, XdrWriter } from '../../xdr.js';
import { fileKeyOf, readStateid, writeStateid, type Compound, type OpDef, type OpResult } from '../compound.js';
import { LockType, NFS4_OPAQUE_LIMIT, Op, ShareAccess, Status4 } from '../constants.js';
import { LOCK_EOF, type Client, type LockConflict, type LockState, type Stateid } from '../state.js';

const ALL_ONES = (1n << 64n) - 1n;

/** [start, end) of an offset/length pair (length all ones: to the end of any file). */
function range(offset: bigint, length: bigint): { start: bigint; end: bigint } {
  if (length === 0n) throw new NfsError(Status4.INVAL, 'lock length 0');
  if (length === ALL_ONES) return { start: offset, end: LOCK_EOF };
  if (offset + length > LOCK_EOF) throw new NfsError(Status4.INVAL, 'lock range past 2^64');
  return { start: offset, end: offset + length };
}

const isWrite = (t: number) => t === LockType.WRITE || t === LockType.WRITEW;

function denied(c: LockConflict): OpResult {
  return {
    status: Status4.DENIED,
    body: (w: XdrWriter) => {
      w.uint64(c.offset).uint64(c.length).uint32(c.write ? LockType.WRITE : LockType.READ);
      w.uint64(c.clientid).opaque(c.owner);
    },
  };
}

const readLockType = (r: XdrReader) => r.enum([LockType.READ, LockType.WRITE, LockType.READW, LockType.WRITEW]);

/** The client a lock operation acts for: the session's, or (4.0) the one it names. */
function lockClient(c: Compound, clientid: bigint): Client {
  if (c.minor >= 1) {
    if (!c.client) throw new NfsError(Status4.OP_NOT_IN_SESSION, 'no session');
    return c.client;
  }
  const client = c.state.client(clientid);
  c.state.renew(client);
  return client;
}

export function lockOps(): Map<number, OpDef> {
  const ops = new Map<number, OpDef>();

  ops.set(Op.LOCK, {
    handler: async (c, r) => {
      const type = readLockType(r);
      const reclaim = r.bool();
      const offset = r.uint64n();
      const length = r.uint64n();
      const newOwner = r.bool();
      let openSid: Stateid | undefined;
      let lockSid: Stateid | undefined;
      let clientid = 0n;
      let owner: Buffer | undefined;
      if (newOwner) {
        r.uint32(); // open seqid (4.0 sequencing is not enforced)
        openSid = readStateid(r);
        r.uint32(); // lock seqid
        clientid = r.uint64n();
        owner = r.opaque(NFS4_OPAQUE_LIMIT);
      } else {
        lockSid = readStateid(r);
        r.uint32();
      }
      const t = await c.target(Status4.ISDIR);
      const { start, end } = range(offset, length);
      if (reclaim) return { status: Status4.NO_GRACE };
      let l: LockState;
      if (newOwner) {
        const open = c.state.findOpen(c.effectiveStateid(openSid!), c.minor);
        if (open.fileKey !== fileKeyOf(t)) return { status: Status4.BAD_STATEID };
        const client = lockClient(c, clientid);
        if (open.client !== client) return { status: Status4.BAD_STATEID };
        l = c.state.lockState(c.state.lockOwner(client, owner!), open);
      } else {
        const st = c.state.findState(c.effectiveStateid(lockSid!), c.minor);
        if (st.kind !== 'lock' || st.fileKey !== fileKeyOf(t)) return { status: Status4.BAD_STATEID };
        if (c.session && st.client !== c.session.client) return { status: Status4.BAD_STATEID };
        l = st;
      }
      const write = isWrite(type);
      // A lock needs the matching open mode: no write lock through a read-only open.
      if ((l.open.access & (write ? ShareAccess.WRITE : ShareAccess.READ)) === 0) return { status: Status4.OPENMODE };
      const conflict = c.state.lockConflict(l.fileKey, l.owner, start, end, write);
      if (conflict) return denied(conflict);
      c.state.setRange(l, start, end, write);
      c.state.renew(l.client);
      const sid: Stateid = { seqid: l.seqid, other: l.other };
      c.curStateid = sid;
      return { status: Status4.OK, body: (w) => writeStateid(w, sid) };
    },
  });

  ops.set(Op.LOCKT, {
    handler: async (c, r) => {
      const type = readLockType(r);
      const offset = r.uint64n();
      const length = r.uint64n();
      const clientid = r.uint64n();
      const owner = r.opaque(NFS4_OPAQUE_LIMIT);
      const t = await c.target(Status4.ISDIR);
      const { start, end } = range(offset, length);
      const client = lockClient(c, clientid);
      const conflict = c.state.lockConflict(fileKeyOf(t), { client, owner }, start, end, isWrite(type));
      return conflict ? denied(conflict) : { status: Status4.OK };
    },
  });

  ops.set(Op.LOCKU, {
    handler: async (c, r) => {
      readLockType(r);
      r.uint32(); // seqid
      const sid = readStateid(r);
      const offset = r.uint64n();
      const length = r.uint64n();
      const t = await c.target(Status4.ISDIR);
      const { start, end } = range(offset, length);
      const st = c.state.findState(c.effectiveStateid(sid), c.minor);
      if (st.kind !== 'lock' || st.fileKey !== fileKeyOf(t)) return { status: Status4.BAD_STATEID };
      if (c.session && st.client !== c.session.client) return { status: Status4.BAD_STATEID };
      c.state.setRange(st, start, end, undefined);
      c.state.renew(st.client);
      const out: Stateid = { seqid: st.seqid, other: st.other };
      c.curStateid = out;
      return { status: Status4.OK, body: (w) => writeStateid(w, out) };
    },
  });

  return ops;
}
