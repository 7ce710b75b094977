/**
 * A minimal NFSv4.1 client for tests and probes: COMPOUND building, EXCHANGE_ID +
 * CREATE_SESSION, SEQUENCE bookkeeping for one slot, and decoders for the results tests read.
 * It is not a general client (no recovery, one slot unless told otherwise).
 */
import { RpcClient, type RpcReply } from '../rpc-client.js';
import type { AuthSys } from '../rpc.js';
import { XdrReader, XdrWriter } from '../xdr.js';
import { readBitmap, writeBitmap, type Bitmap } from './attrs4.js';
import { NFS4_PROGRAM, NFS_V4, Op, Proc4, Status4 } from './constants.js';
import type { Stateid } from './state.js';

export class CompoundBuilder {
  readonly w = new XdrWriter(256);
  count = 0;

  op(opnum: number, args?: (w: XdrWriter) => void): this {
    this.w.uint32(opnum);
    args?.(this.w);
    this.count++;
    return this;
  }

  sequence(sessionId: Buffer, seqid: number, slot = 0, highest = 0, cacheThis = false): this {
    return this.op(Op.SEQUENCE, (w) => w.fixedOpaque(sessionId).uint32(seqid).uint32(slot).uint32(highest).bool(cacheThis));
  }

  putrootfh(): this {
    return this.op(Op.PUTROOTFH);
  }

  putfh(fh: Buffer): this {
    return this.op(Op.PUTFH, (w) => w.opaque(fh));
  }

  lookup(name: string): this {
    return this.op(Op.LOOKUP, (w) => w.string(name));
  }

  getfh(): this {
    return this.op(Op.GETFH);
  }

  getattr(bits: Bitmap): this {
    return this.op(Op.GETATTR, (w) => writeBitmap(w, bits));
  }

  /** OPEN CLAIM_NULL, UNCHECKED4 create (or no create) with no attributes. */
  open(name: string, opts: { access?: number; deny?: number; owner?: string; clientid?: bigint; create?: boolean; guarded?: boolean } = {}): this {
    return this.op(Op.OPEN, (w) => {
      w.uint32(0).uint32(opts.access ?? 3).uint32(opts.deny ?? 0);
      w.uint64(opts.clientid ?? 0n).opaque(Buffer.from(opts.owner ?? 'owner-1'));
      if (opts.create) {
        w.uint32(1).uint32(opts.guarded ? 1 : 0);
        writeBitmap(w, []);
        w.uint32(0);
      } else w.uint32(0);
      w.uint32(0).string(name); // CLAIM_NULL
    });
  }

  close(sid: Stateid): this {
    return this.op(Op.CLOSE, (w) => w.uint32(0).uint32(sid.seqid).fixedOpaque(sid.other));
  }

  read(sid: Stateid, offset: number, count: number): this {
    return this.op(Op.READ, (w) => w.uint32(sid.seqid).fixedOpaque(sid.other).uint64(offset).uint32(count));
  }

  write(sid: Stateid, offset: number, data: Buffer, stable = 2): this {
    return this.op(Op.WRITE, (w) => w.uint32(sid.seqid).fixedOpaque(sid.other).uint64(offset).uint32(stable).opaque(data));
  }
}

export interface OpReply {
  op: number;
  status: number;
}

/** A COMPOUND reply read op by op: `next()` gives the next result header, the body is read from `r`. */
export class CompoundReply {
  readonly status: number;
  readonly tag: Buffer;
  readonly count: number;
  private seen = 0;
  /** The encoded COMPOUND4res (to compare replies byte for byte). */
  readonly bytes: Buffer;

  constructor(readonly raw: RpcReply, readonly r: XdrReader) {
    this.bytes = r.buf.subarray(r.offset);
    this.status = r.uint32();
    this.tag = Buffer.from(r.opaque());
    this.count = r.uint32();
  }

  next(expectOp?: number): OpReply {
    if (this.seen >= this.count) throw new Error('no more results');
    this.seen++;
    const op = this.r.uint32();
    const status = this.r.uint32();
    if (expectOp !== undefined && op !== expectOp) throw new Error(`result ${this.seen} is op ${op}, expected ${expectOp}`);
    return { op, status };
  }

  /** Status of every result, skipping bodies with the given decoders (ops without body need none). */
  get remaining(): number {
    return this.count - this.seen;
  }

  stateid(): Stateid {
    return { seqid: this.r.uint32(), other: Buffer.from(this.r.fixedOpaque(12)) };
  }

  skipSequence(): void {
    this.r.fixedOpaque(16);
    this.r.skip(20);
  }

  fh(): Buffer {
    return Buffer.from(this.r.opaque(128));
  }

  /** OPEN4resok: the stateid (the rest is skipped). */
  openResult(): Stateid {
    const sid = this.stateid();
    this.r.skip(4 + 16); // change_info4
    this.r.uint32(); // rflags
    readBitmap(this.r);
    const deleg = this.r.uint32();
    if (deleg === 3) {
      const why = this.r.uint32();
      if (why === 1 || why === 2) this.r.uint32();
    } else if (deleg !== 0) throw new Error('delegations are not expected');
    return sid;
  }

  fattr(): { mask: Bitmap; vals: XdrReader } {
    const mask = readBitmap(this.r);
    return { mask, vals: new XdrReader(Buffer.from(this.r.opaque())) };
  }
}

export class Nfs4TestClient {
  sessionId = Buffer.alloc(16);
  clientid = 0n;
  seqid = 0;
  private constructor(readonly rpc: RpcClient, readonly minor: number) {}

  static async connect(port: number, opts: { minor?: number; auth?: AuthSys; host?: string } = {}): Promise<Nfs4TestClient> {
    const auth = opts.auth ?? { stamp: 1, machineName: 'test', uid: 0, gid: 0, gids: [] };
    const rpc = await RpcClient.connect(port, opts.host ?? '127.0.0.1', auth);
    return new Nfs4TestClient(rpc, opts.minor ?? 1);
  }

  /** Send raw COMPOUND arguments (after the header) as `numOps` operations. */
  async raw(body: Buffer, numOps: number, minor = this.minor, tag = 'test'): Promise<CompoundReply> {
    const w = new XdrWriter(64 + body.length);
    w.string(tag).uint32(minor).uint32(numOps).raw(body);
    return this.send(w.toBuffer());
  }

  /** Send bytes as the whole COMPOUND argument (fuzzing). */
  async send(args: Buffer): Promise<CompoundReply> {
    const reply = await this.rpc.call(NFS4_PROGRAM, NFS_V4, Proc4.COMPOUND, args);
    if (reply.acceptStat !== 0) throw Object.assign(new Error(`rpc accept_stat ${reply.acceptStat}`), { acceptStat: reply.acceptStat });
    return new CompoundReply(reply, reply.body);
  }

  async compound(b: CompoundBuilder, minor = this.minor): Promise<CompoundReply> {
    return this.raw(b.w.toBuffer(), b.count, minor);
  }

  /** A builder that starts with SEQUENCE on slot 0 with the next sequence id. */
  seq(cacheThis = false): CompoundBuilder {
    this.seqid = (this.seqid + 1) >>> 0;
    return new CompoundBuilder().sequence(this.sessionId, this.seqid, 0, 0, cacheThis);
  }

  /** EXCHANGE_ID + CREATE_SESSION (+ RECLAIM_COMPLETE). */
  async establish(owner = `test-owner-${process.pid}-${Math.random()}`, slots = 8): Promise<void> {
    const ex = await this.compound(new CompoundBuilder().op(Op.EXCHANGE_ID, (w) => {
      w.fixedOpaque(Buffer.alloc(8, 1)).opaque(Buffer.from(owner));
      w.uint32(0).uint32(0); // flags, SP4_NONE
      w.uint32(0); // no implementation id
    }));
    const e = ex.next(Op.EXCHANGE_ID);
    if (e.status !== Status4.OK) throw new Error(`EXCHANGE_ID failed: ${e.status}`);
    this.clientid = ex.r.uint64n();
    const csSeq = ex.r.uint32();
    const cs = await this.compound(new CompoundBuilder().op(Op.CREATE_SESSION, (w) => {
      w.uint64(this.clientid).uint32(csSeq).uint32(0);
      for (const max of [slots, 1]) w.uint32(0).uint32((1 << 20) + (64 << 10)).uint32((1 << 20) + (64 << 10)).uint32(8192).uint32(16).uint32(max).uint32(0);
      w.uint32(0x40000000).uint32(1).uint32(0); // cb_program, one AUTH_NONE sec parm
    }));
    const c = cs.next(Op.CREATE_SESSION);
    if (c.status !== Status4.OK) throw new Error(`CREATE_SESSION failed: ${c.status}`);
    this.sessionId = Buffer.from(cs.r.fixedOpaque(16));
    this.seqid = 0;
    const rc = await this.compound(this.seq().op(Op.RECLAIM_COMPLETE, (w) => w.bool(false)));
    if (rc.status !== Status4.OK) throw new Error(`RECLAIM_COMPLETE failed: ${rc.status}`);
  }

  /** Handle of a path from the pseudo root ("/photos/album"). */
  async lookupPath(path: string): Promise<Buffer> {
    const b = this.seq().putrootfh();
    for (const n of path.split('/').filter(Boolean)) b.lookup(n);
    b.getfh();
    const r = await this.compound(b);
    if (r.status !== Status4.OK) throw Object.assign(new Error(`lookup of ${path} failed: ${r.status}`), { status: r.status });
    r.next(Op.SEQUENCE);
    r.skipSequence();
    for (let i = 0; i < b.count - 2; i++) r.next();
    r.next(Op.GETFH);
    return r.fh();
  }

  close(): void {
    this.rpc.close();
  }
}
