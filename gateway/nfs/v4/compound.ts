/**
 * COMPOUND (RFC 8881 sections 2.10.6, 15.2, 16.2): decode the header, run the operations in
 * order against one request context (current and saved file handle, current stateid, session),
 * stop at the first one that fails, and encode every result up to and including that one.
 *
 * Rules kept here rather than in the operations:
 *  - minor versions above 2 get MINOR_VERS_MISMATCH with no results;
 *  - an operation number a minor version does not define is OP_ILLEGAL (result tagged
 *    OP_ILLEGAL), a 4.0-only one in 4.1+ is NOTSUPP;
 *  - in 4.1+ SEQUENCE must come first (else SEQUENCE_POS), and only the session-less operations
 *    may appear without it (else OP_NOT_IN_SESSION), alone (else NOT_ONLY_OP);
 *  - SEQUENCE's slot decides between running the request and replaying the cached reply: the
 *    whole COMPOUND4res of every request that fits the cache limit is kept for its slot;
 *  - an operation's arguments that do not decode give BADXDR for that operation, never a crash:
 *    malformed input only ever produces a status.
 *
 * Results are encoded into a writer of their own (the header needs the final status first) and
 * appended to the RPC reply by reference, READ data included, so nothing large is copied.
 */
import type { Logger } from '../../../capsule/log.js';
import { ROOT_INO } from '../../../capsule/schema.js';
import type { FileAttr } from '../../../capsule/types.js';
import type { NfsContext, Target } from '../context.js';
import type { RpcCall } from '../rpc.js';
import { statusOf, NfsError } from '../status.js';
import { XdrError, XdrReader, XdrWriter } from '../xdr.js';
import type { AttrEnv, AttrSubject } from './attrs4.js';
import { MAX_MINOR, MAX_OP_BY_MINOR, MIN_OP, NFS4_OPAQUE_LIMIT, NFS4_OTHER_SIZE, Op, OP_NAMES, ShareAccess, Status4 } from './constants.js';
import { isPseudoHandle, PSEUDO_FSID, pseudoFileid, pseudoHandle, type PseudoFs } from './pseudo.js';
import { specialKind, type Client, type Session, type Slot, type StateManager, type Stateid } from './state.js';

/** What the current (or saved) file handle denotes. */
export type CurFh =
  | { kind: 'pseudo'; path: string; fh: Buffer }
  | { kind: 'fs'; t: Target; fh: Buffer; epoch: number };

export interface OpResult {
  status: number;
  /** Writes the result body after the status (success, or the few error bodies the RFC has). */
  body?: (w: XdrWriter) => void;
}

export type OpHandler = (c: Compound, args: XdrReader) => OpResult | Promise<OpResult>;

export interface OpDef {
  handler: OpHandler;
}

export interface V4Limits {
  /** Largest request / reply a session may negotiate (bytes). */
  maxRequest: number;
  maxResponse: number;
  /** Operations per COMPOUND. */
  maxOps: number;
  /** Replies up to this size are kept for SEQUENCE replays. */
  replyCacheBytes: number;
  /** Largest READ / WRITE (maxread, maxwrite). */
  maxIo: number;
}

/** The server-wide pieces every request sees. */
export interface V4Env {
  readonly ctx: NfsContext;
  readonly state: StateManager;
  readonly pseudo: PseudoFs;
  readonly log: Logger;
  readonly limits: V4Limits;
  readonly ops: ReadonlyMap<number, OpDef>;
  attrEnv(minor: number, withFsStats: boolean): Promise<AttrEnv>;
}

/** Operations 4.1 allows outside a session (as the only or first operation). */
const SESSIONLESS = new Set<number>([Op.EXCHANGE_ID, Op.CREATE_SESSION, Op.DESTROY_SESSION, Op.DESTROY_CLIENTID, Op.BIND_CONN_TO_SESSION]);
/** Operations 4.1 removed: NOTSUPP there. */
const V40_ONLY = new Set<number>([Op.OPEN_CONFIRM, Op.RENEW, Op.SETCLIENTID, Op.SETCLIENTID_CONFIRM, Op.RELEASE_LOCKOWNER]);

export const fileKeyOf = (t: Target): string => `${t.exp.capsuleId}:${t.ino}`;

export function readStateid(r: XdrReader): Stateid {
  const seqid = r.uint32();
  const other = r.fixedOpaque(NFS4_OTHER_SIZE);
  return { seqid, other };
}

export function writeStateid(w: XdrWriter, s: Stateid): void {
  w.uint32(s.seqid).fixedOpaque(s.other);
}

/** One COMPOUND's context: file handles, stateid, session, caller. */
export class Compound {
  cur: CurFh | undefined;
  saved: CurFh | undefined;
  curStateid: Stateid | undefined;
  savedStateid: Stateid | undefined;
  session: Session | undefined;
  slot: Slot | undefined;
  /** The client this request acts for (from the session, or a 4.0 operation's client id). */
  client: Client | undefined;

  constructor(readonly env: V4Env, readonly call: RpcCall, readonly minor: number) {}

  /**
   * Reuse of the request's record memory (RpcCall.recycleRecord) for a WRITE that hands its data
   * to the store. Another operation of the same compound might keep a view of the record (an
   * owner name, a second WRITE's data), so the record is given back only if every operation that
   * ran is one known to keep none (RECORD_SAFE_OPS) and one WRITE alone took it; otherwise it is
   * left to the garbage collector. Decided when the compound ends, which can be before or after
   * the store lets go of the data.
   */
  private recordRelease: (() => void) | undefined;
  private recordTaken = false;
  private recordUnsafe = false;
  private recordStoreDone = false;
  private ended = false;

  /** Called for each operation before it runs. */
  noteOp(opnum: number): void {
    if (!RECORD_SAFE_OPS.has(opnum)) this.recordUnsafe = true;
  }

  /** The release a WRITE passes to the store (undefined: the record is not reused). */
  takeRecordRelease(): (() => void) | undefined {
    if (this.recordTaken) {
      this.recordUnsafe = true; // a second holder: neither may give the memory back
      return undefined;
    }
    this.recordTaken = true;
    this.recordRelease = this.call.recycleRecord?.();
    if (!this.recordRelease) return undefined;
    return () => {
      this.recordStoreDone = true;
      this.releaseRecordIfSafe();
    };
  }

  /** The compound is over: no more operations can take views of the record. */
  settleRecord(): void {
    this.ended = true;
    this.releaseRecordIfSafe();
  }

  private releaseRecordIfSafe(): void {
    if (this.ended && this.recordStoreDone && !this.recordUnsafe) this.recordRelease?.();
  }

  get address(): string {
    return this.call.conn.remoteAddress;
  }

  get ctx(): NfsContext {
    return this.env.ctx;
  }

  get state(): StateManager {
    return this.env.state;
  }

  requireFh(): CurFh {
    if (!this.cur) throw new NfsError(Status4.NOFILEHANDLE, 'no current file handle');
    return this.cur;
  }

  /**
   * The current file handle as a store target with a path that is still right. A pseudo
   * directory answers `pseudoStatus` (what the operation says for a directory it cannot use).
   */
  async target(pseudoStatus: number = Status4.INVAL): Promise<Target> {
    const cur = this.requireFh();
    if (cur.kind === 'pseudo') throw new NfsError(pseudoStatus, 'operation not possible in the pseudo file system');
    return this.fresh(cur);
  }

  /** Refresh a handle's path when the capsule's metadata changed since it was resolved. */
  async fresh(cur: Extract<CurFh, { kind: 'fs' }>): Promise<Target> {
    const v = cur.t.view;
    if (v.epoch !== cur.epoch) {
      const epoch = v.epoch;
      cur.t.path = v.pathOfSync(cur.t.ino) ?? (await v.pathOf(cur.t.ino));
      cur.epoch = epoch;
    }
    return cur.t;
  }

  /** Current handle becomes a file or directory of an export. */
  setFs(t: Target): void {
    this.cur = { kind: 'fs', t, fh: this.ctx.handleOf(t.exp, t.ino), epoch: t.view.epoch };
  }

  setPseudo(path: string): void {
    this.cur = { kind: 'pseudo', path, fh: pseudoHandle(path) };
  }

  /** Resolve a handle a client sent (PUTFH, and the 4.0 reclaim paths). */
  async resolveHandle(fh: Buffer): Promise<CurFh> {
    if (fh.length === 0) throw new NfsError(Status4.BADHANDLE, 'empty file handle');
    if (isPseudoHandle(fh)) return { kind: 'pseudo', path: this.env.pseudo.pathOfHandle(fh, this.address), fh: Buffer.from(fh) };
    const t = await this.ctx.target(this.call, fh);
    return { kind: 'fs', t, fh: Buffer.from(fh), epoch: t.view.epoch };
  }

  /** Attributes of what a handle denotes. */
  async attrOf(cur: CurFh): Promise<FileAttr> {
    if (cur.kind === 'pseudo') return this.env.pseudo.attr(cur.path, this.address);
    const t = await this.fresh(cur);
    return this.ctx.store.getattr(t.exp.capsuleId, t.path);
  }

  subject(cur: CurFh, attr: FileAttr): AttrSubject {
    if (cur.kind === 'pseudo') return { attr, fsid: PSEUDO_FSID, fh: cur.fh, mountedOnFileid: attr.ino, readOnly: true };
    return this.subjectOf(cur.t, attr, cur.fh);
  }

  subjectOf(t: Target, attr: FileAttr, fh = this.ctx.handleOf(t.exp, attr.ino)): AttrSubject {
    // An export root sits on a pseudo directory (or a directory of the enclosing export): the
    // fileid of that directory is what a client shows for the mount point.
    const mountedOn = attr.ino === ROOT_INO ? mountedOnOf(t) : attr.ino;
    return { attr, fsid: { major: t.exp.fsid, minor: 0n }, fh, mountedOnFileid: mountedOn, readOnly: t.exp.readOnly };
  }

  /**
   * Check a READ/WRITE/SETATTR(size) stateid against the file (RFC 8881 section 8.2): the
   * special stateids pass (subject to deny reservations), an open stateid must be current, of
   * this file and this client, and allow writing for a write.
   */
  checkIo(sid: Stateid, t: Target, write: boolean): void {
    let s = sid;
    let kind = specialKind(s);
    if (kind === 'current' && this.minor >= 1) {
      if (!this.curStateid) throw new NfsError(Status4.BAD_STATEID, 'no current stateid');
      s = this.curStateid;
      kind = specialKind(s);
    }
    const fileKey = fileKeyOf(t);
    if (kind === 'anonymous' || kind === 'bypass') {
      const wanted = write ? ShareAccess.WRITE : ShareAccess.READ;
      // The READ bypass stateid ignores deny reservations for reads; anything else respects them.
      if (kind === 'bypass' && !write) return;
      for (const o of this.state.opensOf(fileKey)) {
        if ((o.deny & wanted) !== 0 && !this.state.expired(o.client)) throw new NfsError(Status4.LOCKED, 'a share reservation denies this access');
      }
      return;
    }
    if (kind) throw new NfsError(Status4.BAD_STATEID, 'invalid special stateid');
    // An open stateid or a lock stateid (which carries the access of the open it came from).
    const st = this.state.findState(s, this.minor);
    const open = st.kind === 'open' ? st : st.open;
    if (st.fileKey !== fileKey) throw new NfsError(Status4.BAD_STATEID, 'stateid is for another file');
    if (this.session && st.client !== this.session.client) throw new NfsError(Status4.BAD_STATEID, 'stateid of another client');
    if (write && (open.access & ShareAccess.WRITE) === 0) throw new NfsError(Status4.OPENMODE, 'file not open for writing');
    this.state.renew(st.client);
  }

  /** A stateid argument with the "current stateid" special value replaced (4.1). */
  effectiveStateid(sid: Stateid): Stateid {
    if (this.minor >= 1 && specialKind(sid) === 'current') {
      if (!this.curStateid) throw new NfsError(Status4.BAD_STATEID, 'no current stateid');
      return this.curStateid;
    }
    return sid;
  }
}

const mountedOnCache = new Map<string, number>();

/** The root of an export sits on a pseudo directory: that one's fileid (from the export path). */
function mountedOnOf(t: Target): number {
  let v = mountedOnCache.get(t.exp.path);
  if (v === undefined) {
    if (mountedOnCache.size > 4096) mountedOnCache.clear();
    v = pseudoFileid(t.exp.path);
    mountedOnCache.set(t.exp.path, v);
  }
  return v;
}

/** Map anything thrown by an operation to its nfsstat4, logging what nobody raised on purpose. */
export function statusFor(env: V4Env, e: unknown, op: number): number {
  if (e instanceof XdrError) return Status4.BADXDR;
  const m = statusOf(e);
  if (m.unexpected) env.log.error('nfs4.op.failed', { op: OP_NAMES.get(op) ?? op, err: e });
  else if (m.status === Status4.IO || m.status === Status4.SERVERFAULT) env.log.error('nfs4.io_error', { op: OP_NAMES.get(op) ?? op, err: (e as Error).message });
  return m.status;
}

/**
 * Operations that keep no view of the request's bytes once the compound is over (they decode
 * numbers, or copy what they keep: PUTFH copies the handle, SEQUENCE looks its session up by
 * value), so a WRITE among them may let the store give the record back (Compound.takeRecordRelease).
 * The Linux client's WRITE is SEQUENCE, PUTFH, WRITE, GETATTR.
 */
const RECORD_SAFE_OPS: ReadonlySet<number> = new Set([
  Op.SEQUENCE, Op.PUTFH, Op.PUTROOTFH, Op.GETFH, Op.SAVEFH, Op.RESTOREFH, Op.WRITE, Op.COMMIT, Op.GETATTR, Op.ACCESS,
]);

/** The COMPOUND procedure: decode, run, encode (see the header comment). */
export async function runCompound(env: V4Env, call: RpcCall, res: XdrWriter): Promise<void> {
  const r = call.args;
  // A header that does not decode is GARBAGE_ARGS (thrown XdrError): there is no tag to echo.
  const tag = r.opaque(NFS4_OPAQUE_LIMIT);
  const minor = r.uint32();
  const numOps = r.uint32();
  if (minor > MAX_MINOR) {
    res.uint32(Status4.MINOR_VERS_MISMATCH).opaque(tag).uint32(0);
    return;
  }
  env.state.sweep();
  const c = new Compound(env, call, minor);
  const out = new XdrWriter(512);
  let count = 0;
  let status: number = Status4.OK;
  const emit = (opnum: number, result: OpResult) => {
    out.uint32(opnum).uint32(result.status);
    if (result.status === Status4.OK || result.body) result.body?.(out);
    count++;
    status = result.status;
    if (result.status !== Status4.OK) env.log.debug('nfs4.op.status', { op: OP_NAMES.get(opnum) ?? opnum, status: result.status, minor, peer: call.conn.remoteAddress });
  };
  const maxOps = env.limits.maxOps;
  let replayed = false;
  try {
    if (numOps > r.remaining() / 4) {
      // Every operation takes at least its number: the count is a lie, the request garbage.
      emit(Op.ILLEGAL, { status: Status4.BADXDR });
    } else if (minor === 0 && numOps > maxOps) {
      emit(Op.ILLEGAL, { status: Status4.RESOURCE });
    }
    for (let i = 0; i < numOps && status === Status4.OK; i++) {
      let opnum: number;
      try {
        opnum = r.uint32();
      } catch {
        emit(Op.ILLEGAL, { status: Status4.BADXDR });
        break;
      }
      if (opnum < MIN_OP || opnum > MAX_OP_BY_MINOR[minor]!) {
        emit(Op.ILLEGAL, { status: Status4.OP_ILLEGAL });
        break;
      }
      if (minor >= 1) {
        if (opnum === Op.SEQUENCE && i > 0) {
          emit(opnum, { status: Status4.SEQUENCE_POS });
          break;
        }
        if (i === 0 && opnum !== Op.SEQUENCE && !SESSIONLESS.has(opnum)) {
          emit(opnum, { status: Status4.OP_NOT_IN_SESSION });
          break;
        }
        if (i > 0 && !c.session) {
          // A session-less operation must be alone (RFC 8881 section 18.35.3 and its siblings).
          emit(opnum, { status: Status4.NOT_ONLY_OP });
          break;
        }
        if (V40_ONLY.has(opnum)) {
          emit(opnum, { status: Status4.NOTSUPP });
          break;
        }
        if (i === 0 && opnum === Op.SEQUENCE) {
          const seq = await sequence(c, r, numOps);
          if (seq.replay) {
            // The whole earlier reply, as it was: the retry must not run anything again.
            for (const b of seq.replay) res.raw(b);
            replayed = true;
            return;
          }
          emit(opnum, seq.result);
          continue;
        }
      }
      const def = env.ops.get(opnum);
      if (!def) {
        emit(opnum, { status: Status4.NOTSUPP });
        break;
      }
      c.noteOp(opnum);
      let result: OpResult;
      try {
        result = await def.handler(c, r);
      } catch (e) {
        result = { status: statusFor(env, e, opnum) };
      }
      emit(opnum, result);
    }
  } finally {
    c.settleRecord();
    if (!replayed) finishReply();
  }

  function finishReply(): void {
    const head = new XdrWriter(64);
    head.uint32(status).opaque(tag).uint32(count);
    const headBuf = head.toBuffer();
    const parts = out.finish();
    res.raw(headBuf);
    for (const p of parts) res.raw(p);
    if (c.slot) {
      let size = headBuf.length;
      for (const p of parts) size += p.length;
      // Kept as one compact copy: the parts may be views of large buffers (a READ's segment),
      // which a cached reference would pin in memory for as long as the slot is not reused.
      env.state.finishSlot(c.slot, size <= env.limits.replyCacheBytes ? [Buffer.concat([headBuf, ...parts], size)] : undefined);
    }
  }
}

/** SEQUENCE (RFC 8881 section 18.46), run before anything else of the request. */
async function sequence(c: Compound, r: XdrReader, numOps: number): Promise<{ replay?: Buffer[]; result: OpResult }> {
  let sessionId: Buffer;
  let seq: number;
  let slotId: number;
  try {
    sessionId = r.fixedOpaque(16);
    seq = r.uint32();
    slotId = r.uint32();
    r.uint32(); // highest slot the client uses: the table never shrinks, so nothing to do
    r.bool(); // cachethis: every reply that fits is cached anyway
  } catch {
    return { result: { status: Status4.BADXDR } };
  }
  try {
    const s = c.state.session(sessionId);
    if (numOps > s.fore.maxOperations) throw new NfsError(Status4.TOO_MANY_OPS, `${numOps} operations exceed the session's ${s.fore.maxOperations}`);
    const got = c.state.sequence(s, slotId, seq);
    if (got.kind === 'replay') return { replay: got.reply, result: { status: Status4.OK } };
    c.session = s;
    c.slot = got.slot;
    c.client = s.client;
    const high = s.slots.length - 1;
    return {
      result: {
        status: Status4.OK,
        body: (w) => {
          w.fixedOpaque(s.id).uint32(seq).uint32(slotId).uint32(high).uint32(high);
          w.uint32(0); // status flags: no callbacks, no revoked state to report
        },
      },
    };
  } catch (e) {
    return { result: { status: statusFor(c.env, e, Op.SEQUENCE) } };
  }
}
