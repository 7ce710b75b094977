/**
 * One NVMe/TCP connection = one queue (admin or I/O) of one controller. It owns the transport:
 * the ICReq/ICResp exchange, framing and digests, in-capsule data and the R2T/H2CData dance for
 * writes, C2HData for reads, and termination with a TermReq when the host breaks the protocol.
 * Commands themselves are executed by the controller (admin) or io.ts (NVM command set).
 */
import type net from 'node:net';
import type { Logger } from '../../capsule/log.js';
import { AdminOpcode, FabricsType, Fes, HLEN, PduFlag, PduType, Sc, Sgl, type Status } from './constants.js';
import { Command, encodeCqe } from './command.js';
import { fail, ok, type Controller, type QueueLink, type Result } from './controller.js';
import { IN_CAPSULE_DATA, MAX_TRANSFER } from './identify.js';
import { hostDataLength, ioCommand } from './io.js';
import {
  CONTROLLER_ACCEPTS, PduError, PduReader, dataFields, encodeC2HData, encodeCapsuleResp, encodeICResp, encodeR2T, encodeTermReq,
  icReqFields, termReqFields, type Digests, type Pdu,
} from './pdu.js';

/**
 * Largest data in one H2CData PDU we accept (announced in ICResp). An R2T asks for a whole write
 * (up to MDTS), and Linux hosts before 5.17 answer each R2T with one H2CData PDU of R2TL bytes
 * whatever MAXH2CDATA says, so R2TL must never exceed it: MAXH2CDATA is the largest transfer.
 */
export const MAX_H2C_DATA = MAX_TRANSFER;
/** Admin queues carry up to 8 KiB in capsule (the Linux host's fixed admin capsule size). */
const ADMIN_IN_CAPSULE = 8192;

export interface ConnectRequest {
  qid: number;
  sqsize: number;
  cattr: number;
  kato: number;
  hostId: Buffer;
  cntlid: number;
  subnqn: string;
  hostnqn: string;
}

export type ConnectOutcome = { controller: Controller } | { result: Result };

/** What a connection needs from the target: finding or creating controllers. */
export interface ControllerRegistry {
  connect(req: ConnectRequest, link: QueueLink, local: { address: string; port: number; family: 4 | 6 }): ConnectOutcome;
  /** The admin queue went away: the controller is gone. */
  released(controller: Controller): void;
}

interface PendingWrite {
  cmd: Command;
  length: number;
  received: number;
  chunks: Buffer[];
  digestError: boolean;
}

export class Connection implements QueueLink {
  private readonly reader = new PduReader({ accept: CONTROLLER_ACCEPTS, maxPduBytes: MAX_H2C_DATA + ADMIN_IN_CAPSULE + 256 });
  private readonly dg: Digests = { header: false, data: false };
  private initialized = false;
  private closed = false;
  private controller?: Controller;
  private qid = -1;
  private sqsize = 0;
  private sqhd = 0;
  /** Connect's CATTR bit 2: SQ flow control disabled, so reads may complete with C2HData SUCCESS. */
  private sqFlowDisabled = false;
  private readonly inflight = new Set<number>();
  private readonly transfers = new Map<number, PendingWrite>();
  private nextTtag = 0;
  private corked = false;
  private readonly log: Logger;

  constructor(private readonly socket: net.Socket, private readonly registry: ControllerRegistry, logger: Logger) {
    this.log = logger.child({ peer: `${socket.remoteAddress}:${socket.remotePort}` });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.log.debug('nvme.socket_error', { err: e }));
    socket.on('close', () => this.onClose());
  }

  get queueId(): number {
    return this.qid;
  }

  // ---------------------------------------------------------------- QueueLink

  completeLater(cid: number, r: Result): void {
    this.finish(new CommandStub(cid), r, 'none');
  }

  terminate(reason: string): void {
    if (this.closed) return;
    this.log.info('nvme.queue_terminated', { qid: this.qid, cntlid: this.controller?.cntlid, reason });
    this.closed = true;
    this.socket.destroy();
  }

  // ---------------------------------------------------------------- receive

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let pdus: Pdu[];
    try {
      pdus = this.reader.push(chunk);
    } catch (e) {
      this.fatal(e);
      return;
    }
    for (const pdu of pdus) {
      if (this.closed) return;
      try {
        this.onPdu(pdu);
      } catch (e) {
        this.fatal(e);
        return;
      }
    }
  }

  private onPdu(pdu: Pdu): void {
    if (pdu.type === PduType.ICReq) return this.onICReq(pdu);
    if (!this.initialized) throw new PduError(Fes.PduSequenceError, 0, 'PDU before ICReq', pdu.header);
    switch (pdu.type) {
      case PduType.CapsuleCmd: return this.onCapsule(pdu);
      case PduType.H2CData: return this.onH2CData(pdu);
      case PduType.H2CTermReq: {
        const t = termReqFields(pdu.header);
        this.log.warn('nvme.host_terminated', { qid: this.qid, fes: t.fes, fei: t.fei });
        this.closed = true;
        this.socket.destroy();
        return;
      }
    }
  }

  private onICReq(pdu: Pdu): void {
    if (this.initialized) throw new PduError(Fes.PduSequenceError, 0, 'second ICReq', pdu.header);
    const f = icReqFields(pdu.header);
    if (f.pfv !== 0) throw new PduError(Fes.UnsupportedParameter, 8, `PDU format version ${f.pfv} is not supported`, pdu.header);
    if (f.hpda > 31) throw new PduError(Fes.InvalidHeaderField, 10, `HPDA ${f.hpda} out of range`, pdu.header);
    this.dg.header = (f.dgst & 1) !== 0;
    this.dg.data = (f.dgst & 2) !== 0;
    this.dg.dataAlign = (f.hpda + 1) * 4;
    this.initialized = true;
    this.send([encodeICResp({ headerDigest: this.dg.header, dataDigest: this.dg.data, maxH2CData: MAX_H2C_DATA })]);
    // Digests apply to every PDU after the exchange.
    this.reader.headerDigest = this.dg.header;
    this.reader.dataDigest = this.dg.data;
  }

  private onCapsule(pdu: Pdu): void {
    const cmd = new Command(pdu.header.subarray(8, HLEN.CapsuleCmd));
    if (this.controller) this.controller.touch();
    if (this.inflight.has(cmd.cid)) return this.finish(cmd, fail(Sc.CommandIdConflict), 'none', false);
    this.inflight.add(cmd.cid);
    if (this.qid >= 0) this.sqhd = (this.sqhd + 1) % (this.sqsize + 1);
    if (!pdu.dataDigestOk) return this.finish(cmd, fail(Sc.TransientTransportError), 'none');
    const dir = cmd.direction;
    const inCapsule = pdu.data && pdu.data.length > 0 ? pdu.data : undefined;
    if (dir === 'both') return this.finish(cmd, fail(Sc.InvalidOpcode), 'none');
    // No data described (a null SGL of length 0, e.g. Set Features without a buffer).
    if (cmd.sglLength === 0 && !inCapsule && (dir !== 'h2c' || this.dataLength(cmd) === 0)) return this.execute(cmd, undefined);
    if (dir !== 'h2c') {
      if (inCapsule) return this.finish(cmd, fail(Sc.InvalidSglDescriptor), 'none');
      if (dir === 'c2h' && cmd.sglId !== Sgl.Transport) return this.finish(cmd, fail(Sc.SglTypeInvalid), 'none');
      return this.execute(cmd, undefined);
    }
    // Host-to-controller data: in the capsule, or fetched with an R2T.
    const need = this.dataLength(cmd);
    if (typeof need !== 'number') return this.finish(cmd, fail(need), 'none');
    if (cmd.sglId === Sgl.InCapsule) {
      const limit = this.qid > 0 ? IN_CAPSULE_DATA : ADMIN_IN_CAPSULE;
      const got = inCapsule?.length ?? 0;
      if (cmd.sglAddress !== 0n || got !== cmd.sglLength || got > limit) return this.finish(cmd, fail(Sc.InvalidSglDescriptor), 'none');
      if (got < need) return this.finish(cmd, fail(Sc.SglLengthInvalid), 'none');
      return this.execute(cmd, inCapsule!.subarray(0, need));
    }
    if (cmd.sglId !== Sgl.Transport) return this.finish(cmd, fail(Sc.SglTypeInvalid), 'none');
    if (inCapsule) return this.finish(cmd, fail(Sc.InvalidSglDescriptor), 'none');
    if (cmd.sglLength < need) return this.finish(cmd, fail(Sc.SglLengthInvalid), 'none');
    if (need > MAX_TRANSFER) return this.finish(cmd, fail(Sc.InvalidField), 'none');
    if (need === 0) return this.execute(cmd, Buffer.alloc(0));
    const ttag = this.allocTtag();
    this.transfers.set(ttag, { cmd, length: need, received: 0, chunks: [], digestError: false });
    this.send(encodeR2T(cmd.cid, ttag, 0, need, this.dg));
  }

  /** Host data a command needs: NVM commands derive it from their fields, others from the SGL. */
  private dataLength(cmd: Command): number | Status {
    return this.qid > 0 ? hostDataLength(cmd, this.namespace()) : cmd.sglLength;
  }

  private allocTtag(): number {
    for (let i = 0; i < 0xffff; i++) {
      const t = this.nextTtag;
      this.nextTtag = (this.nextTtag + 1) % 0xffff; // 0xffff is reserved
      if (!this.transfers.has(t)) return t;
    }
    throw new PduError(Fes.PduSequenceError, 0, 'no free transfer tags');
  }

  private onH2CData(pdu: Pdu): void {
    const f = dataFields(pdu.header);
    const t = this.transfers.get(f.ttag);
    if (!t || t.cmd.cid !== f.cccid) throw new PduError(Fes.InvalidHeaderField, t ? 8 : 10, `H2CData for unknown transfer (cid ${f.cccid}, ttag ${f.ttag})`, pdu.header);
    const data = pdu.data ?? Buffer.alloc(0);
    if (f.datal !== data.length) throw new PduError(Fes.InvalidHeaderField, 16, `DATAL ${f.datal} but ${data.length} bytes of data`, pdu.header);
    if (f.datal > MAX_H2C_DATA) throw new PduError(Fes.DataLimitExceeded, 16, `H2CData of ${f.datal} bytes exceeds MAXH2CDATA`, pdu.header);
    if (f.datao !== t.received) throw new PduError(Fes.DataOutOfRange, 12, `DATAO ${f.datao}, expected ${t.received}`, pdu.header);
    if (f.datao + f.datal > t.length) throw new PduError(Fes.DataOutOfRange, 16, `H2CData beyond the ${t.length} bytes requested`, pdu.header);
    const last = (pdu.flags & PduFlag.LAST_PDU) !== 0;
    t.received += f.datal;
    if (!pdu.dataDigestOk) t.digestError = true;
    t.chunks.push(data);
    if (t.received < t.length) {
      if (last) throw new PduError(Fes.PduSequenceError, 1, 'LAST_PDU before all requested data arrived', pdu.header);
      return;
    }
    if (!last) throw new PduError(Fes.PduSequenceError, 1, 'LAST_PDU missing on the final H2CData', pdu.header);
    this.transfers.delete(f.ttag);
    if (t.digestError) return this.finish(t.cmd, fail(Sc.TransientTransportError), 'none');
    this.execute(t.cmd, t.chunks.length === 1 ? t.chunks[0]! : Buffer.concat(t.chunks, t.length));
  }

  // ---------------------------------------------------------------- execute

  private namespace() {
    return this.controller?.host.namespace;
  }

  private execute(cmd: Command, data: Buffer | undefined): void {
    let r: Result | Promise<Result> | undefined;
    try {
      r = this.dispatch(cmd, data);
    } catch (e) {
      this.log.error('nvme.command_failed', { qid: this.qid, opcode: cmd.opcode, err: e });
      r = fail(Sc.InternalError);
    }
    if (r === undefined) return; // completes later (AER)
    const dir = cmd.direction;
    if (r instanceof Promise) {
      r.then(
        (res) => this.finish(cmd, res, dir),
        (e: unknown) => {
          this.log.error('nvme.command_failed', { qid: this.qid, opcode: cmd.opcode, err: e });
          this.finish(cmd, fail(Sc.InternalError), dir);
        },
      );
    } else {
      this.finish(cmd, r, dir);
    }
  }

  private dispatch(cmd: Command, data: Buffer | undefined): Result | Promise<Result> | undefined {
    if (cmd.opcode === AdminOpcode.Fabrics) return this.fabrics(cmd, data);
    const c = this.controller;
    if (!c) return fail(Sc.CommandSequenceError);
    if (this.qid === 0) return c.adminCommand(cmd);
    const ns = c.host.namespace;
    if (!ns) return fail(Sc.InvalidNamespace);
    if (!c.enabled) return fail(Sc.CommandSequenceError);
    return ioCommand(cmd, data, { ns, writeThrough: !c.writeCache });
  }

  private fabrics(cmd: Command, data: Buffer | undefined): Result | undefined {
    const s = cmd.sqe;
    switch (cmd.fctype) {
      case FabricsType.Connect: return this.connect(cmd, data);
      case FabricsType.PropertyGet:
      case FabricsType.PropertySet: {
        const c = this.controller;
        if (!c) return fail(Sc.CommandSequenceError);
        if (this.qid !== 0) return fail(Sc.InvalidOpcode);
        const size8 = (s[40]! & 7) === 1;
        const offset = s.readUInt32LE(44);
        return cmd.fctype === FabricsType.PropertyGet ? c.propertyGet(offset, size8) : c.propertySet(offset, size8, s.readBigUInt64LE(48));
      }
      case FabricsType.Disconnect:
        if (!this.controller) return fail(Sc.CommandSequenceError);
        // Complete, then close once the completion is on its way out.
        setImmediate(() => this.socket.end());
        return ok();
      default:
        return fail(Sc.InvalidOpcode);
    }
  }

  private connect(cmd: Command, data: Buffer | undefined): Result {
    if (this.controller) return fail(Sc.CommandSequenceError);
    const s = cmd.sqe;
    // A Connect without its 1024-byte data (e.g. a null SGL) is a length error, not a crash.
    if (!data || data.length < 1024) return fail(Sc.SglLengthInvalid);
    const recfmt = s.readUInt16LE(40);
    if (recfmt !== 0) return fail(Sc.ConnectIncompatibleFormat);
    const cstr = (b: Buffer) => {
      const z = b.indexOf(0);
      return b.subarray(0, z < 0 ? b.length : z).toString('utf8');
    };
    const req: ConnectRequest = {
      qid: s.readUInt16LE(42),
      sqsize: s.readUInt16LE(44),
      cattr: s[46]!,
      kato: s.readUInt32LE(48),
      hostId: Buffer.from(data.subarray(0, 16)),
      cntlid: data.readUInt16LE(16),
      subnqn: cstr(data.subarray(256, 512)),
      hostnqn: cstr(data.subarray(512, 768)),
    };
    const local = { address: this.socket.localAddress ?? '127.0.0.1', port: this.socket.localPort ?? 0, family: (this.socket.localFamily === 'IPv6' ? 6 : 4) as 4 | 6 };
    const out = this.registry.connect(req, this, local);
    if ('result' in out) return out.result;
    this.controller = out.controller;
    this.qid = req.qid;
    this.sqsize = req.sqsize;
    this.sqhd = 1 % (req.sqsize + 1);
    this.sqFlowDisabled = (req.cattr & 4) !== 0;
    this.log.debug('nvme.queue_connected', { qid: req.qid, cntlid: out.controller.cntlid, subnqn: req.subnqn, hostnqn: req.hostnqn });
    return ok(out.controller.cntlid);
  }

  // ---------------------------------------------------------------- send

  private finish(cmd: Command | CommandStub, r: Result, dir: 'none' | 'h2c' | 'c2h' | 'both', tracked = true): void {
    if (tracked) this.inflight.delete(cmd.cid);
    let release = r.release; // borrowed data: released once written, or now if it is not sent
    try {
      if (this.closed || this.socket.destroyed) return;
      const sqid = Math.max(this.qid, 0);
      if (dir === 'c2h' && r.data && r.status.sc === 0 && r.status.sct === 0) {
        const want = cmd instanceof Command ? Math.min(cmd.sglLength, r.data.length) : r.data.length;
        const data = want === r.data.length ? r.data : r.data.subarray(0, want);
        const success = this.sqFlowDisabled && !r.dw0 && !r.dw1;
        if (data.length > 0) {
          this.send(encodeC2HData(cmd.cid, 0, data, true, success, this.dg), release);
          release = undefined;
        }
        if (success && data.length > 0) return;
      }
      this.send(encodeCapsuleResp(encodeCqe(cmd.cid, sqid, this.sqhd, r), this.dg));
    } finally {
      release?.();
    }
  }

  /** `written`: called once the socket has written the last part (or failed to). */
  private send(parts: Buffer[], written?: () => void): void {
    if (this.closed || this.socket.destroyed) {
      written?.();
      return;
    }
    if (!this.corked) {
      // Completions produced in one turn of the event loop go out in one write.
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    for (let i = 0; i < parts.length; i++) this.socket.write(parts[i]!, i === parts.length - 1 ? written : undefined);
  }

  /** A protocol violation: send a C2HTermReq naming the field, then close. Nothing is executed. */
  private fatal(e: unknown): void {
    if (this.closed) return;
    if (e instanceof PduError) {
      this.log.warn('nvme.protocol_error', { qid: this.qid, fes: e.fes, fei: e.fei, msg: e.message });
      if (this.socket.writable) this.socket.end(encodeTermReq(PduType.C2HTermReq, e.fes, e.fei, e.header));
    } else {
      this.log.error('nvme.connection_failed', { qid: this.qid, err: e });
      this.socket.destroy();
    }
    this.closed = true;
    // A half-closed socket whose peer never closes must not linger.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private onClose(): void {
    this.closed = true;
    this.transfers.clear();
    const c = this.controller;
    if (!c) return;
    if (this.qid === 0) {
      c.shutdown('admin queue closed');
      this.registry.released(c);
    } else {
      c.ioLinks.delete(this.qid);
    }
  }
}

/** A completion for a command whose capsule is no longer at hand (deferred AER). */
class CommandStub {
  constructor(readonly cid: number) {}
}
