/**
 * NFSv4 state (RFC 8881 sections 2.10, 8, 9, 18.35-18.36, 18.46): client records, sessions with
 * their slot tables and per-slot reply cache, open stateids with share reservations, leases.
 *
 * All of it lives in memory: a restarted server knows no clients, so they get STALE_CLIENTID /
 * BADSESSION, establish themselves again and re-open their files (reclaims are answered
 * NO_GRACE: nothing was kept that a grace period could protect). File handles, which are
 * persistent, are what make that recovery transparent to applications.
 *
 * Leases are checked lazily: a sweep runs at most once a second from incoming calls and drops
 * clients whose lease ran out (with some slack), so no timer has to be stopped on shutdown.
 */
import crypto from 'node:crypto';
import { NfsError } from '../status.js';
import { NFS4_OTHER_SIZE, ShareAccess, Status4 } from './constants.js';

export interface Stateid {
  seqid: number;
  other: Buffer;
}

export const ANON_STATEID: Stateid = { seqid: 0, other: Buffer.alloc(NFS4_OTHER_SIZE) };
/** The special stateid 4.1 answers CLOSE with (and a client may never use). */
export const INVALID_STATEID: Stateid = { seqid: 0xffffffff, other: Buffer.alloc(NFS4_OTHER_SIZE) };

const ZERO_OTHER = Buffer.alloc(NFS4_OTHER_SIZE);
const ONES_OTHER = Buffer.alloc(NFS4_OTHER_SIZE, 0xff);

export type SpecialKind = 'anonymous' | 'bypass' | 'current' | 'invalid';

/** Which special stateid this is (RFC 8881 section 8.2.3), if any. */
export function specialKind(s: Stateid): SpecialKind | undefined {
  if (s.other.equals(ZERO_OTHER)) {
    if (s.seqid === 0) return 'anonymous';
    if (s.seqid === 1) return 'current';
    return 'invalid';
  }
  if (s.other.equals(ONES_OTHER)) return s.seqid === 0xffffffff ? 'bypass' : 'invalid';
  return undefined;
}

export interface ChannelAttrs {
  headerPadSize: number;
  maxRequestSize: number;
  maxResponseSize: number;
  maxResponseSizeCached: number;
  maxOperations: number;
  maxRequests: number;
  rdmaIrd: number[];
}

export interface Slot {
  /** Sequence id of the last request seen on this slot (0: none yet). */
  seq: number;
  /** A request with `seq` is being executed. */
  busy: boolean;
  /** Encoded COMPOUND4res of that request, or undefined when it was not kept. */
  reply?: Buffer[];
}

export class Session {
  readonly key: string;
  readonly slots: Slot[];
  constructor(readonly id: Buffer, readonly client: Client, readonly fore: ChannelAttrs, readonly back: ChannelAttrs, readonly flags: number) {
    this.key = id.toString('hex');
    this.slots = Array.from({ length: fore.maxRequests }, () => ({ seq: 0, busy: false }));
  }
}

export interface OpenOwner {
  key: string;
  owner: Buffer;
  client: Client;
  /** 4.0: last seqid used by this owner (checked loosely: see the OPEN handler). */
  seqid: number;
  opens: Set<OpenState>;
}

export interface OpenState {
  kind: 'open';
  other: Buffer;
  key: string;
  seqid: number;
  client: Client;
  owner: OpenOwner;
  /** capsule id + ":" + inode number. */
  fileKey: string;
  access: number;
  deny: number;
  /** Access and deny values opens of this state used (bit 1 << value): OPEN_DOWNGRADE may only go back to one. */
  accessSeen: number;
  denySeen: number;
  /** Lock states derived from this open (one per lock owner). */
  locks: Set<LockState>;
}

export interface LockOwner {
  key: string;
  owner: Buffer;
  client: Client;
  states: Set<LockState>;
}

/** A byte range [start, end) held by a lock owner; end is 2^64 for "to the end of the file". */
export interface LockRange {
  start: bigint;
  end: bigint;
  write: boolean;
}

export interface LockState {
  kind: 'lock';
  other: Buffer;
  key: string;
  seqid: number;
  client: Client;
  owner: LockOwner;
  open: OpenState;
  fileKey: string;
  ranges: LockRange[];
}

export type AnyState = OpenState | LockState;

/** LOCK4denied: the conflicting lock. */
export interface LockConflict {
  offset: bigint;
  length: bigint;
  write: boolean;
  clientid: bigint;
  owner: Buffer;
}

export const LOCK_EOF = 1n << 64n;

export class Client {
  confirmed = false;
  /** Sequence id of the last CREATE_SESSION processed (4.1). */
  csSeq: number;
  /** Encoded result of that CREATE_SESSION, for its replay. */
  csReply?: Buffer;
  lastRenew: number;
  readonly sessions = new Map<string, Session>();
  readonly owners = new Map<string, OpenOwner>();
  readonly lockOwners = new Map<string, LockOwner>();
  readonly opens = new Set<OpenState>();
  reclaimComplete = false;
  /** 4.0: the verifier SETCLIENTID_CONFIRM must present. */
  confirmVerifier?: Buffer;
  /** The record a confirmation of this one replaces (same owner, the client restarted). */
  replaces?: Client;

  constructor(readonly clientid: bigint, readonly ownerId: Buffer, readonly verifier: Buffer, readonly minor: number, now: number) {
    this.csSeq = 0;
    this.lastRenew = now;
  }

  get ownerKey(): string {
    return this.ownerId.toString('hex');
  }
}

export interface StateOptions {
  /** Lease in seconds (lease_time attribute). */
  leaseSeconds?: number;
  /** Clock in milliseconds (tests). */
  now?: () => number;
  /** Slots per session at most. */
  maxSlots?: number;
}

export const DEFAULT_LEASE_SECONDS = 90;
/** A lease counts as expired only this much after its nominal end (network delays, busy clients). */
const LEASE_SLACK = 1.5;

const fileAccessBits = (a: number) => 1 << a;

export class StateManager {
  readonly leaseSeconds: number;
  readonly now: () => number;
  readonly maxSlots: number;
  /** Random per incarnation: the high half of client ids and the first word of stateids. */
  readonly boot: number;
  /** server_owner major id and scope: the same for every incarnation of this server. */
  readonly serverOwner = Buffer.from('space-nfs');
  private readonly clients = new Map<bigint, Client>();
  private readonly confirmedByOwner = new Map<string, Client>();
  private readonly unconfirmedByOwner = new Map<string, Client>();
  private readonly sessions = new Map<string, Session>();
  private readonly states = new Map<string, AnyState>();
  private readonly byFile = new Map<string, Set<OpenState>>();
  private readonly locksByFile = new Map<string, Set<LockState>>();
  private nextClient = 1;
  private nextState = 1;
  private nextSession = 1;
  private lastSweep = 0;

  constructor(opts: StateOptions = {}) {
    this.leaseSeconds = opts.leaseSeconds ?? DEFAULT_LEASE_SECONDS;
    this.now = opts.now ?? Date.now;
    this.maxSlots = opts.maxSlots ?? 64;
    this.boot = crypto.randomBytes(4).readUInt32BE(0) || 1;
  }

  // ---------------------------------------------------------------- leases

  renew(c: Client): void {
    c.lastRenew = this.now();
  }

  expired(c: Client, now = this.now()): boolean {
    return now - c.lastRenew > this.leaseSeconds * 1000 * LEASE_SLACK;
  }

  /** Drop clients whose lease ran out (at most once a second unless forced). */
  sweep(force = false): void {
    const now = this.now();
    if (!force && now - this.lastSweep < 1000) return;
    this.lastSweep = now;
    for (const c of [...this.clients.values()]) {
      if (!this.expired(c, now)) continue;
      // A request in progress on one of its slots is a client that is alive.
      let busy = false;
      for (const s of c.sessions.values()) if (s.slots.some((sl) => sl.busy)) busy = true;
      if (!busy) this.destroyClient(c);
    }
  }

  get clientCount(): number {
    return this.clients.size;
  }

  // ---------------------------------------------------------------- clients

  private newClient(ownerId: Buffer, verifier: Buffer, minor: number): Client {
    const id = (BigInt(this.boot) << 32n) | BigInt(this.nextClient++ >>> 0);
    const c = new Client(id, Buffer.from(ownerId), Buffer.from(verifier), minor, this.now());
    this.clients.set(id, c);
    return c;
  }

  destroyClient(c: Client): void {
    for (const s of c.sessions.values()) this.sessions.delete(s.key);
    c.sessions.clear();
    for (const o of [...c.opens]) this.dropOpen(o);
    c.owners.clear();
    c.lockOwners.clear();
    this.clients.delete(c.clientid);
    if (this.confirmedByOwner.get(c.ownerKey) === c) this.confirmedByOwner.delete(c.ownerKey);
    if (this.unconfirmedByOwner.get(c.ownerKey) === c) this.unconfirmedByOwner.delete(c.ownerKey);
  }

  /**
   * A client id the client sent: STALE_CLIENTID when it is not one of ours (an earlier
   * incarnation's, or dropped after its lease expired).
   */
  client(id: bigint): Client {
    const c = this.clients.get(id);
    if (!c) throw new NfsError(Status4.STALE_CLIENTID, `client id ${id.toString(16)} is not known`);
    return c;
  }

  /** EXCHANGE_ID (RFC 8881 section 18.35.5, the cases that matter without principals). */
  exchangeId(ownerId: Buffer, verifier: Buffer, update: boolean, minor: number): Client {
    const key = ownerId.toString('hex');
    const confirmed = this.confirmedByOwner.get(key);
    if (update) {
      if (!confirmed) throw new NfsError(Status4.NOENT, 'no confirmed client record to update');
      if (!confirmed.verifier.equals(verifier)) throw new NfsError(Status4.NOT_SAME, 'verifier differs from the confirmed record');
      this.renew(confirmed);
      return confirmed;
    }
    if (confirmed && confirmed.verifier.equals(verifier)) {
      // The same client incarnation asking again (after a reconnect, or a lost reply).
      this.renew(confirmed);
      return confirmed;
    }
    const old = this.unconfirmedByOwner.get(key);
    if (old) this.destroyClient(old);
    const c = this.newClient(ownerId, verifier, minor);
    // A client that restarted: its old state goes once the new record is confirmed.
    if (confirmed) c.replaces = confirmed;
    this.unconfirmedByOwner.set(key, c);
    return c;
  }

  /** The client record becomes confirmed (CREATE_SESSION or SETCLIENTID_CONFIRM). */
  confirm(c: Client): void {
    if (c.confirmed) return;
    c.confirmed = true;
    if (this.unconfirmedByOwner.get(c.ownerKey) === c) this.unconfirmedByOwner.delete(c.ownerKey);
    const old = this.confirmedByOwner.get(c.ownerKey);
    if (old && old !== c) this.destroyClient(old);
    if (c.replaces && c.replaces !== old && this.clients.get(c.replaces.clientid) === c.replaces) this.destroyClient(c.replaces);
    c.replaces = undefined;
    this.confirmedByOwner.set(c.ownerKey, c);
    this.renew(c);
  }

  // ---------------------------------------------------------------- 4.0 client setup

  setClientId(ownerId: Buffer, verifier: Buffer): Client {
    const key = ownerId.toString('hex');
    const confirmed = this.confirmedByOwner.get(key);
    const old = this.unconfirmedByOwner.get(key);
    if (old) this.destroyClient(old);
    let c: Client;
    if (confirmed && confirmed.verifier.equals(verifier)) {
      // Same incarnation (a callback update): confirming keeps the client id and its state.
      c = confirmed;
    } else {
      c = this.newClient(ownerId, verifier, 0);
      if (confirmed) c.replaces = confirmed;
      this.unconfirmedByOwner.set(key, c);
    }
    c.confirmVerifier = crypto.randomBytes(8);
    return c;
  }

  setClientIdConfirm(id: bigint, verf: Buffer): Client {
    const c = this.client(id);
    if (!c.confirmVerifier || !c.confirmVerifier.equals(verf)) {
      throw new NfsError(c.confirmed ? Status4.CLID_INUSE : Status4.STALE_CLIENTID, 'SETCLIENTID_CONFIRM with a verifier that was not issued');
    }
    c.confirmVerifier = undefined;
    this.confirm(c);
    return c;
  }

  // ---------------------------------------------------------------- sessions

  createSession(c: Client, fore: ChannelAttrs, back: ChannelAttrs, flags: number): Session {
    const id = Buffer.alloc(16);
    id.writeUInt32BE(this.boot, 0);
    id.writeUInt32BE(Number(c.clientid & 0xffffffffn), 4);
    id.writeUInt32BE(this.nextSession++ >>> 0, 8);
    crypto.randomBytes(4).copy(id, 12);
    const s = new Session(id, c, fore, back, flags);
    c.sessions.set(s.key, s);
    this.sessions.set(s.key, s);
    return s;
  }

  session(id: Buffer): Session {
    const s = this.sessions.get(id.toString('hex'));
    if (!s) throw new NfsError(Status4.BADSESSION, 'session is not known');
    return s;
  }

  destroySession(s: Session): void {
    this.sessions.delete(s.key);
    s.client.sessions.delete(s.key);
  }

  /**
   * SEQUENCE's slot check (RFC 8881 section 2.10.6.1): a new request, a retry of the last one
   * (answered from the cache), or an error.
   */
  sequence(s: Session, slotId: number, seq: number): { kind: 'new'; slot: Slot } | { kind: 'replay'; reply: Buffer[] } {
    if (slotId >= s.slots.length) throw new NfsError(Status4.BADSLOT, `slot ${slotId} is past the ${s.slots.length} slots of the session`);
    const slot = s.slots[slotId]!;
    if (seq === slot.seq && slot.seq !== 0) {
      if (slot.busy) throw new NfsError(Status4.DELAY, 'the original request is still running');
      if (!slot.reply) throw new NfsError(Status4.RETRY_UNCACHED_REP, 'the reply to this retry was not kept');
      return { kind: 'replay', reply: slot.reply };
    }
    if (seq !== ((slot.seq + 1) >>> 0)) throw new NfsError(Status4.SEQ_MISORDERED, `slot ${slotId} expects sequence id ${(slot.seq + 1) >>> 0}, got ${seq}`);
    if (slot.busy) throw new NfsError(Status4.DELAY, 'slot busy');
    slot.seq = seq;
    slot.busy = true;
    slot.reply = undefined;
    this.renew(s.client);
    return { kind: 'new', slot };
  }

  /** The request on `slot` finished; keep its reply (when small enough) for retries. */
  finishSlot(slot: Slot, reply: Buffer[] | undefined): void {
    slot.busy = false;
    slot.reply = reply;
  }

  // ---------------------------------------------------------------- stateids

  private newOther(): Buffer {
    const b = Buffer.alloc(NFS4_OTHER_SIZE);
    b.writeUInt32BE(this.boot, 0);
    b.writeUInt32BE(0, 4);
    b.writeUInt32BE(this.nextState++ >>> 0, 8);
    if (this.nextState > 0xffffffff) this.nextState = 1;
    return b;
  }

  /** Whether `other` was issued by this incarnation (else it is stale). */
  ours(other: Buffer): boolean {
    return other.length === NFS4_OTHER_SIZE && other.readUInt32BE(0) === this.boot;
  }

  openOwner(c: Client, owner: Buffer): OpenOwner {
    const key = owner.toString('hex');
    let o = c.owners.get(key);
    if (!o) c.owners.set(key, (o = { key, owner: Buffer.from(owner), client: c, seqid: 0, opens: new Set() }));
    return o;
  }

  /**
   * Share reservation check for `owner` opening `fileKey` with access/deny (RFC 8881 section
   * 9.7): conflicts with another owner's open are SHARE_DENIED. Opens of clients whose lease
   * expired do not count (they are dropped first).
   */
  checkShare(fileKey: string, owner: OpenOwner, access: number, deny: number): void {
    const set = this.byFile.get(fileKey);
    if (!set) return;
    for (const o of [...set]) {
      if (o.owner === owner) continue;
      if ((o.deny & access) === 0 && (deny & o.access) === 0) continue;
      if (this.expired(o.client)) {
        this.destroyClient(o.client);
        continue;
      }
      throw new NfsError(Status4.SHARE_DENIED, 'share reservation conflict');
    }
  }

  /** OPEN: a new open state, or the owner's existing one for the file upgraded. */
  open(owner: OpenOwner, fileKey: string, access: number, deny: number): OpenState {
    for (const o of owner.opens) {
      if (o.fileKey !== fileKey) continue;
      this.checkShare(fileKey, owner, access | o.access, deny | o.deny);
      o.access |= access;
      o.deny |= deny;
      o.accessSeen |= fileAccessBits(access);
      o.denySeen |= fileAccessBits(deny);
      o.seqid = (o.seqid + 1) >>> 0 || 1;
      return o;
    }
    this.checkShare(fileKey, owner, access, deny);
    const other = this.newOther();
    const st: OpenState = {
      kind: 'open', other, key: other.toString('hex'), seqid: 1, client: owner.client, owner, fileKey, access, deny,
      accessSeen: fileAccessBits(access), denySeen: fileAccessBits(deny), locks: new Set(),
    };
    this.states.set(st.key, st);
    owner.opens.add(st);
    owner.client.opens.add(st);
    let set = this.byFile.get(fileKey);
    if (!set) this.byFile.set(fileKey, (set = new Set()));
    set.add(st);
    return st;
  }

  downgrade(st: OpenState, access: number, deny: number): void {
    if ((access & ~st.access) !== 0 || (deny & ~st.deny) !== 0) throw new NfsError(Status4.INVAL, 'OPEN_DOWNGRADE must not add access or deny bits');
    if ((st.accessSeen & fileAccessBits(access)) === 0 || (st.denySeen & fileAccessBits(deny)) === 0) {
      throw new NfsError(Status4.INVAL, 'OPEN_DOWNGRADE to modes the owner never opened with');
    }
    st.access = access;
    st.deny = deny;
    st.accessSeen = fileAccessBits(access);
    st.denySeen = fileAccessBits(deny);
    st.seqid = (st.seqid + 1) >>> 0 || 1;
  }

  dropOpen(st: OpenState): void {
    for (const l of [...st.locks]) this.dropLock(l);
    this.states.delete(st.key);
    st.owner.opens.delete(st);
    st.client.opens.delete(st);
    const set = this.byFile.get(st.fileKey);
    if (set) {
      set.delete(st);
      if (set.size === 0) this.byFile.delete(st.fileKey);
    }
    if (st.owner.opens.size === 0) st.client.owners.delete(st.owner.key);
  }

  /**
   * Find the open state a (non-special) stateid names, with the seqid rules of RFC 8881 section
   * 8.2.2: 0 means "the current one" in 4.1; newer than current is BAD_STATEID, older OLD_STATEID.
   */
  findOpen(sid: Stateid, minor: number): OpenState {
    const st = this.findState(sid, minor);
    if (st.kind !== 'open') throw new NfsError(Status4.BAD_STATEID, 'not an open stateid');
    return st;
  }

  /** Any stateid (open or lock), with the same rules as findOpen. */
  findState(sid: Stateid, minor: number): AnyState {
    const st = this.states.get(sid.other.toString('hex'));
    if (!st) {
      if (!this.ours(sid.other)) throw new NfsError(minor === 0 ? Status4.STALE_STATEID : Status4.BAD_STATEID, 'stateid of an earlier server incarnation');
      throw new NfsError(Status4.BAD_STATEID, 'stateid is not known');
    }
    if (this.expired(st.client)) {
      this.destroyClient(st.client);
      throw new NfsError(Status4.EXPIRED, 'the lease of this state expired');
    }
    if (!(minor >= 1 && sid.seqid === 0)) {
      if (seqNewer(sid.seqid, st.seqid)) throw new NfsError(Status4.BAD_STATEID, 'stateid seqid from the future');
      if (sid.seqid !== st.seqid) throw new NfsError(Status4.OLD_STATEID, 'stateid seqid was superseded');
    }
    return st;
  }

  /** TEST_STATEID's answer for one stateid. */
  testStateid(sid: Stateid, c: Client | undefined): number {
    if (specialKind(sid)) return Status4.BAD_STATEID;
    const st: AnyState | undefined = this.states.get(sid.other.toString('hex'));
    if (!st || (c && st.client !== c)) return Status4.BAD_STATEID;
    if (this.expired(st.client)) return Status4.EXPIRED;
    if (sid.seqid !== 0 && sid.seqid !== st.seqid) return seqNewer(sid.seqid, st.seqid) ? Status4.BAD_STATEID : Status4.OLD_STATEID;
    return Status4.OK;
  }

  // ---------------------------------------------------------------- byte-range locks

  lockOwner(c: Client, owner: Buffer): LockOwner {
    const key = owner.toString('hex');
    let o = c.lockOwners.get(key);
    if (!o) c.lockOwners.set(key, (o = { key, owner: Buffer.from(owner), client: c, states: new Set() }));
    return o;
  }

  /** The lock state of an owner for the file of `open` (created on first use). */
  lockState(owner: LockOwner, open: OpenState): LockState {
    for (const l of owner.states) if (l.open === open) return l;
    const other = this.newOther();
    const st: LockState = { kind: 'lock', other, key: other.toString('hex'), seqid: 0, client: owner.client, owner, open, fileKey: open.fileKey, ranges: [] };
    this.states.set(st.key, st);
    owner.states.add(st);
    open.locks.add(st);
    let set = this.locksByFile.get(st.fileKey);
    if (!set) this.locksByFile.set(st.fileKey, (set = new Set()));
    set.add(st);
    return st;
  }

  dropLock(l: LockState): void {
    this.states.delete(l.key);
    l.owner.states.delete(l);
    l.open.locks.delete(l);
    const set = this.locksByFile.get(l.fileKey);
    if (set) {
      set.delete(l);
      if (set.size === 0) this.locksByFile.delete(l.fileKey);
    }
    if (l.owner.states.size === 0) l.client.lockOwners.delete(l.owner.key);
  }

  /** A lock of another owner that conflicts with [start, end) (POSIX: any overlap where one side writes). */
  lockConflict(fileKey: string, owner: LockOwner | { client: Client; owner: Buffer }, start: bigint, end: bigint, write: boolean): LockConflict | undefined {
    const set = this.locksByFile.get(fileKey);
    if (!set) return undefined;
    for (const l of [...set]) {
      if (l.owner === owner || (l.owner.client === owner.client && l.owner.owner.equals(owner.owner))) continue;
      for (const r of l.ranges) {
        if (r.end <= start || r.start >= end || (!r.write && !write)) continue;
        if (this.expired(l.client)) {
          this.destroyClient(l.client);
          break;
        }
        return { offset: r.start, length: r.end >= LOCK_EOF ? LOCK_EOF - 1n : r.end - r.start, write: r.write, clientid: l.client.clientid, owner: l.owner.owner };
      }
    }
    return undefined;
  }

  /** Set [start, end) to `write` (lock) or remove it (unlock, write undefined) in an owner's ranges. */
  setRange(l: LockState, start: bigint, end: bigint, write: boolean | undefined): void {
    const out: LockRange[] = [];
    for (const r of l.ranges) {
      if (r.end <= start || r.start >= end) {
        out.push(r);
        continue;
      }
      if (r.start < start) out.push({ start: r.start, end: start, write: r.write });
      if (r.end > end) out.push({ start: end, end: r.end, write: r.write });
    }
    if (write !== undefined) out.push({ start, end, write });
    out.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    // Merge neighbours of the same kind, so a lock/unlock stream does not fragment forever.
    const merged: LockRange[] = [];
    for (const r of out) {
      const last = merged[merged.length - 1];
      if (last && last.end >= r.start && last.write === r.write) last.end = last.end > r.end ? last.end : r.end;
      else merged.push({ ...r });
    }
    l.ranges = merged;
    l.seqid = (l.seqid + 1) >>> 0 || 1;
  }

  /** Opens of a file (any client), for tests and diagnostics. */
  opensOf(fileKey: string): OpenState[] {
    return [...(this.byFile.get(fileKey) ?? [])];
  }
}

/** seqid a is newer than b (with wrap-around, as serial numbers). */
function seqNewer(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export const accessBitsValid = (a: number): boolean => a === ShareAccess.READ || a === ShareAccess.WRITE || a === ShareAccess.BOTH;
