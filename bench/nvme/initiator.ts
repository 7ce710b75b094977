/**
 * A small NVMe/TCP initiator (host side), built on the target's own PDU codec: one TCP connection
 * per queue, many commands in flight, R2T/H2CData for writes, C2HData for reads. Used by the
 * benchmark and by tests that need byte-level control the kernel initiator does not give.
 */
import net from 'node:net';
import { AdminOpcode, DISCOVERY_NQN, FabricsType, IoOpcode, PduFlag, PduType, Sgl } from '../../gateway/nvme/constants.js';
import { buildSqe, decodeCqe } from '../../gateway/nvme/command.js';
import {
  HOST_ACCEPTS, PduReader, dataFields, encodeCapsuleCmd, encodeH2CData, encodeICReq, icRespFields, r2tFields, termReqFields, type Digests, type Pdu,
} from '../../gateway/nvme/pdu.js';

export type Cqe = ReturnType<typeof decodeCqe>;

export interface Response {
  cqe: Cqe;
  data?: Buffer;
}

interface Outstanding {
  resolve: (r: Response) => void;
  reject: (e: Error) => void;
  write?: Buffer;
  chunks: Buffer[];
}

export class NvmeError extends Error {
  constructor(readonly cqe: Cqe, what: string) {
    super(`${what} failed: status sct=${cqe.sct} sc=0x${cqe.sc.toString(16)}`);
  }
}

export interface QueueOptions {
  host: string;
  port: number;
  headerDigest?: boolean;
  dataDigest?: boolean;
  /** Send writes up to this size in the command capsule (0 = always R2T). */
  inCapsuleMax?: number;
  /** Host PDU data alignment asked for in ICReq (C2HData PDO multiple of (hpda + 1) * 4). */
  hpda?: number;
}

/** One queue = one TCP connection. */
export class HostQueue {
  private readonly reader = new PduReader({ accept: HOST_ACCEPTS, maxPduBytes: 64 << 20 });
  private readonly dg: Digests = { header: false, data: false };
  private readonly pending = new Map<number, Outstanding>();
  private nextCid = 0;
  maxH2CData = 0;
  private closedError?: Error;
  private icDone?: (e?: Error) => void;
  /** A C2HTermReq from the target (tests look at it). */
  termination?: { fes: number; fei: number };
  /** Settles when the TCP connection is closed (by either side). */
  readonly whenClosed: Promise<void>;

  private constructor(readonly socket: net.Socket, private readonly opts: QueueOptions) {
    this.whenClosed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.onData(c));
    socket.on('close', () => this.failAll(new Error('connection closed')));
    socket.on('error', (e) => this.failAll(e));
  }

  static async open(opts: QueueOptions): Promise<HostQueue> {
    const socket = net.connect(opts.port, opts.host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const q = new HostQueue(socket, opts);
    await new Promise<void>((resolve, reject) => {
      q.icDone = (e) => (e ? reject(e) : resolve());
      socket.write(encodeICReq({ headerDigest: !!opts.headerDigest, dataDigest: !!opts.dataDigest, hpda: opts.hpda }));
    });
    return q;
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  private failAll(e: Error): void {
    this.closedError ??= e;
    this.icDone?.(e);
    this.icDone = undefined;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private onData(chunk: Buffer): void {
    let pdus: Pdu[];
    try {
      pdus = this.reader.push(chunk);
    } catch (e) {
      this.failAll(e as Error);
      this.socket.destroy();
      return;
    }
    for (const p of pdus) this.onPdu(p);
  }

  private onPdu(p: Pdu): void {
    switch (p.type) {
      case PduType.ICResp: {
        const f = icRespFields(p.header);
        this.maxH2CData = f.maxH2CData;
        this.dg.header = (f.dgst & 1) !== 0;
        this.dg.data = (f.dgst & 2) !== 0;
        this.reader.headerDigest = this.dg.header;
        this.reader.dataDigest = this.dg.data;
        this.icDone?.();
        this.icDone = undefined;
        return;
      }
      case PduType.C2HData: {
        const f = dataFields(p.header);
        const o = this.pending.get(f.cccid);
        if (!o) return;
        if (!p.dataDigestOk) {
          o.reject(new Error('C2HData digest mismatch'));
          this.pending.delete(f.cccid);
          return;
        }
        o.chunks.push(p.data ?? Buffer.alloc(0));
        if (p.flags & PduFlag.SUCCESS) {
          this.pending.delete(f.cccid);
          o.resolve({ cqe: { dw0: 0, dw1: 0, sqhd: 0, sqid: 0, cid: f.cccid, sct: 0, sc: 0, dnr: false }, data: join(o.chunks) });
        }
        return;
      }
      case PduType.R2T: {
        const f = r2tFields(p.header);
        const o = this.pending.get(f.cccid);
        if (!o?.write) return;
        const max = this.maxH2CData || f.r2tl;
        for (let off = f.r2to; off < f.r2to + f.r2tl; off += max) {
          const n = Math.min(max, f.r2to + f.r2tl - off);
          for (const part of encodeH2CData(f.cccid, f.ttag, off, o.write.subarray(off, off + n), off + n >= f.r2to + f.r2tl, this.dg)) this.socket.write(part);
        }
        return;
      }
      case PduType.CapsuleResp: {
        const cqe = decodeCqe(p.header.subarray(8, 24));
        const o = this.pending.get(cqe.cid);
        if (!o) return;
        this.pending.delete(cqe.cid);
        o.resolve({ cqe, data: o.chunks.length ? join(o.chunks) : undefined });
        return;
      }
      case PduType.C2HTermReq:
        this.termination = termReqFields(p.header);
        this.failAll(new Error(`target terminated the connection (FES ${this.termination.fes}, FEI ${this.termination.fei})`));
        return;
    }
  }

  private allocCid(): number {
    for (;;) {
      const cid = this.nextCid;
      this.nextCid = (this.nextCid + 1) & 0xffff;
      if (!this.pending.has(cid)) return cid;
    }
  }

  /**
   * Submit a command. `sqe` is built with cid 0 and patched; `write` data goes in the capsule when
   * small enough, else after the target's R2T.
   */
  submit(sqe: Buffer, write?: Buffer): Promise<Response> {
    if (this.closedError) return Promise.reject(this.closedError);
    const cid = this.allocCid();
    sqe.writeUInt16LE(cid, 2);
    return new Promise<Response>((resolve, reject) => {
      const inCapsule = write && write.length > 0 && write.length <= (this.opts.inCapsuleMax ?? 0);
      this.pending.set(cid, { resolve, reject, write: inCapsule ? undefined : write, chunks: [] });
      if (write && write.length > 0) {
        sqe[39] = inCapsule ? Sgl.InCapsule : Sgl.Transport;
        sqe.writeUInt32LE(write.length, 32);
      }
      for (const part of encodeCapsuleCmd(sqe, inCapsule ? write : undefined, this.dg)) this.socket.write(part);
    });
  }

  /** Send raw bytes (malformed-PDU tests). */
  raw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  close(): void {
    this.socket.destroy();
  }
}

function join(chunks: Buffer[]): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

export function check(r: Response, what: string): Response {
  if (r.cqe.sct !== 0 || r.cqe.sc !== 0) throw new NvmeError(r.cqe, what);
  return r;
}

export function connectData(subnqn: string, hostnqn: string, cntlid: number, hostId: Buffer): Buffer {
  const d = Buffer.alloc(1024);
  hostId.copy(d, 0);
  d.writeUInt16LE(cntlid, 16);
  d.write(subnqn, 256, 'utf8');
  d.write(hostnqn, 512, 'utf8');
  return d;
}

export function connectSqe(qid: number, sqsize: number, katoMs: number): Buffer {
  const sqe = buildSqe({ opcode: AdminOpcode.Fabrics, cid: 0, fctype: FabricsType.Connect });
  sqe.writeUInt16LE(qid, 42);
  sqe.writeUInt16LE(sqsize, 44);
  sqe.writeUInt32LE(katoMs, 48);
  return sqe;
}

export function propertySqe(get: boolean, offset: number, size8: boolean, value = 0n): Buffer {
  const sqe = buildSqe({ opcode: AdminOpcode.Fabrics, cid: 0, fctype: get ? FabricsType.PropertyGet : FabricsType.PropertySet });
  sqe[40] = size8 ? 1 : 0;
  sqe.writeUInt32LE(offset, 44);
  if (!get) sqe.writeBigUInt64LE(value, 48);
  return sqe;
}

export interface ControllerSession {
  admin: HostQueue;
  io: HostQueue[];
  cntlid: number;
  /** Namespace 1: logical block size and number of blocks. */
  blockSize: number;
  blocks: number;
  close(): void;
}

/**
 * Connect like the Linux host does: admin queue, enable, identify, number of queues, I/O queues.
 * `ioQueues` connections for I/O; `hostnqn` identifies this host.
 */
export async function connectController(opts: QueueOptions & {
  subnqn: string;
  hostnqn?: string;
  hostId?: Buffer;
  ioQueues?: number;
  /** I/O queues asked for with Set Features (default ioQueues); more than ioQueues leaves qids free. */
  grantQueues?: number;
  queueSize?: number;
  katoMs?: number;
}): Promise<ControllerSession> {
  const hostnqn = opts.hostnqn ?? 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001';
  const hostId = opts.hostId ?? Buffer.alloc(16, 7);
  const admin = await HostQueue.open(opts);
  const opened: HostQueue[] = [admin];
  try {
    const c = check(await admin.submit(connectSqe(0, 31, opts.katoMs ?? 0), connectData(opts.subnqn, hostnqn, 0xffff, hostId)), 'connect');
    const cntlid = c.cqe.dw0 & 0xffff;
    check(await admin.submit(propertySqe(false, 0x14, false, BigInt(1 | (6 << 16) | (4 << 20)))), 'enable');
    const csts = check(await admin.submit(propertySqe(true, 0x1c, false)), 'csts');
    if (!(csts.cqe.dw0 & 1)) throw new Error('controller did not become ready');
    let blockSize = 0;
    let blocks = 0;
    const io: HostQueue[] = [];
    if (opts.subnqn !== DISCOVERY_NQN) {
      const want = opts.ioQueues ?? 1;
      const grant = Math.max(opts.grantQueues ?? want, 1);
      check(await admin.submit(buildSqe({ opcode: AdminOpcode.SetFeatures, cid: 0, cdw: { 10: 0x07, 11: ((grant - 1) << 16) | (grant - 1) } })), 'set number of queues');
      const idns = check(await admin.submit(buildSqe({ opcode: AdminOpcode.Identify, cid: 0, nsid: 1, sglId: Sgl.Transport, sglLength: 4096, cdw: { 10: 0 } })), 'identify namespace');
      blocks = Number(idns.data!.readBigUInt64LE(0));
      blockSize = 1 << idns.data![130]!;
      for (let qid = 1; qid <= want; qid++) {
        const q = await HostQueue.open(opts);
        opened.push(q);
        check(await q.submit(connectSqe(qid, (opts.queueSize ?? 128) - 1, 0), connectData(opts.subnqn, hostnqn, cntlid, hostId)), `connect I/O queue ${qid}`);
        io.push(q);
      }
    }
    return { admin, io, cntlid, blockSize, blocks, close: () => opened.forEach((q) => q.close()) };
  } catch (e) {
    opened.forEach((q) => q.close());
    throw e;
  }
}

export function readSqe(slba: number, blocks: number, blockSize: number): Buffer {
  return buildSqe({ opcode: IoOpcode.Read, cid: 0, nsid: 1, sglId: Sgl.Transport, sglLength: blocks * blockSize, cdw: { 10: slba >>> 0, 11: Math.floor(slba / 2 ** 32), 12: blocks - 1 } });
}

export function writeSqe(slba: number, blocks: number, opts: { fua?: boolean } = {}): Buffer {
  return buildSqe({ opcode: IoOpcode.Write, cid: 0, nsid: 1, cdw: { 10: slba >>> 0, 11: Math.floor(slba / 2 ** 32), 12: (blocks - 1) | (opts.fua ? 1 << 30 : 0) } });
}
