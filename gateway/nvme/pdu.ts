/**
 * NVMe/TCP PDU framing: a byte stream in, whole validated PDUs out; and the encoders for the PDUs
 * a controller sends (plus the host-side ones, used by the benchmark initiator and the tests).
 *
 * Every PDU starts with the 8-byte common header: type, flags, HLEN, PDO, PLEN (little endian).
 * Optional header digest (CRC32C of the HLEN header bytes) follows the header; data starts at PDO;
 * optional data digest (CRC32C of the data) ends the PDU.
 */
import { ByteQueue } from '../byte-queue.js';
import { crc32c } from './crc32c.js';
import { COMMON_HEADER, DIGEST_BYTES, Fes, HLEN, PduFlag, PduType } from './constants.js';

export interface Pdu {
  type: number;
  flags: number;
  /** The header, HLEN bytes, common header included. */
  header: Buffer;
  /** The PDU data (digest removed), if the PDU carries any. */
  data?: Buffer;
  /** False when a data digest was present and did not match (the command fails; the connection lives). */
  dataDigestOk: boolean;
}

/** A fatal transport error: the connection is terminated with a TermReq naming the field. */
export class PduError extends Error {
  constructor(readonly fes: number, readonly fei: number, message: string, readonly header?: Buffer) {
    super(message);
    this.name = 'PduError';
  }
}

const EXPECTED_HLEN: Record<number, number> = {
  [PduType.ICReq]: HLEN.ICReq,
  [PduType.ICResp]: HLEN.ICResp,
  [PduType.H2CTermReq]: HLEN.TermReq,
  [PduType.C2HTermReq]: HLEN.TermReq,
  [PduType.CapsuleCmd]: HLEN.CapsuleCmd,
  [PduType.CapsuleResp]: HLEN.CapsuleResp,
  [PduType.H2CData]: HLEN.H2CData,
  [PduType.C2HData]: HLEN.C2HData,
  [PduType.R2T]: HLEN.R2T,
};

/** PDU types that may carry a header digest once digests are negotiated. */
const DIGESTIBLE = new Set<number>([PduType.CapsuleCmd, PduType.CapsuleResp, PduType.H2CData, PduType.C2HData, PduType.R2T]);
const HAS_DATA = new Set<number>([PduType.CapsuleCmd, PduType.H2CData, PduType.C2HData, PduType.H2CTermReq, PduType.C2HTermReq]);

export interface ReaderOptions {
  /** PDU types this side accepts (a controller accepts host-to-controller types only). */
  accept: ReadonlySet<number>;
  /** Largest PLEN accepted. */
  maxPduBytes: number;
}

/**
 * Incremental framer. `push` may be given any slicing of the stream; it returns the PDUs that
 * are complete and keeps the rest. Data buffers are views of the received chunks when a PDU
 * arrived in one chunk (no copy), else one concatenation.
 */
export class PduReader {
  private readonly queue = new ByteQueue();
  headerDigest = false;
  dataDigest = false;

  constructor(private readonly opts: ReaderOptions) {}

  push(chunk: Buffer): Pdu[] {
    this.queue.push(chunk);
    const out: Pdu[] = [];
    while (this.queue.length >= COMMON_HEADER) {
      const ch = this.queue.peek(COMMON_HEADER);
      const type = ch[0]!;
      const flags = ch[1]!;
      const hlen = ch[2]!;
      const pdo = ch[3]!;
      const plen = ch.readUInt32LE(4);
      this.checkCommon(ch, type, flags, hlen, pdo, plen);
      if (this.queue.length < plen) break;
      const whole = this.queue.take(plen);
      out.push(this.parse(whole, type, flags, hlen, pdo, plen));
    }
    return out;
  }

  /** Bytes received but not yet framed (a peer that stops mid-PDU leaves some). */
  get pending(): number {
    return this.queue.length;
  }

  private checkCommon(ch: Buffer, type: number, flags: number, hlen: number, pdo: number, plen: number): void {
    if (!this.opts.accept.has(type)) throw new PduError(Fes.InvalidHeaderField, 0, `unexpected PDU type 0x${type.toString(16)}`, ch);
    if (hlen !== EXPECTED_HLEN[type]) throw new PduError(Fes.InvalidHeaderField, 2, `PDU type 0x${type.toString(16)} with HLEN ${hlen}, expected ${EXPECTED_HLEN[type]}`, ch);
    const hdgst = DIGESTIBLE.has(type) && (flags & PduFlag.HDGSTF) !== 0;
    if (DIGESTIBLE.has(type) && hdgst !== this.headerDigest) {
      throw new PduError(Fes.InvalidHeaderField, 1, this.headerDigest ? 'header digest negotiated but HDGSTF is clear' : 'HDGSTF set but header digests were not negotiated', ch);
    }
    const ddgst = (flags & PduFlag.DDGSTF) !== 0;
    if (DIGESTIBLE.has(type) && ddgst && !this.dataDigest) throw new PduError(Fes.InvalidHeaderField, 1, 'DDGSTF set but data digests were not negotiated', ch);
    const headerEnd = hlen + (hdgst ? DIGEST_BYTES : 0);
    if (plen < headerEnd) throw new PduError(Fes.InvalidHeaderField, 4, `PLEN ${plen} is shorter than the header (${headerEnd})`, ch);
    if (plen > this.opts.maxPduBytes) throw new PduError(Fes.DataLimitExceeded, 4, `PLEN ${plen} exceeds the limit of ${this.opts.maxPduBytes}`, ch);
    if (type === PduType.H2CTermReq || type === PduType.C2HTermReq) return; // data follows the header, PDO unused
    if (plen === headerEnd) {
      if (pdo !== 0 && pdo !== plen) throw new PduError(Fes.InvalidHeaderField, 3, `PDO ${pdo} set on a PDU without data`, ch);
      return;
    }
    if (!HAS_DATA.has(type)) throw new PduError(Fes.InvalidHeaderField, 4, `PLEN ${plen} leaves data on a PDU type that carries none`, ch);
    if (pdo < headerEnd || pdo > plen) throw new PduError(Fes.InvalidHeaderField, 3, `PDO ${pdo} outside ${headerEnd}..${plen}`, ch);
    const dataEnd = plen - (ddgst ? DIGEST_BYTES : 0);
    if (dataEnd < pdo) throw new PduError(Fes.InvalidHeaderField, 4, `PLEN ${plen} too short for data at ${pdo} and its digest`, ch);
    if (this.dataDigest && DIGESTIBLE.has(type) && !ddgst && dataEnd > pdo) {
      throw new PduError(Fes.InvalidHeaderField, 1, 'data digest negotiated but DDGSTF is clear on a PDU with data', ch);
    }
  }

  private parse(whole: Buffer, type: number, flags: number, hlen: number, pdo: number, plen: number): Pdu {
    const header = whole.subarray(0, hlen);
    const hdgst = DIGESTIBLE.has(type) && (flags & PduFlag.HDGSTF) !== 0;
    if (hdgst && crc32c(header) !== whole.readUInt32LE(hlen)) {
      throw new PduError(Fes.HeaderDigestError, 0, `header digest mismatch on PDU type 0x${type.toString(16)}`, header);
    }
    if (type === PduType.H2CTermReq || type === PduType.C2HTermReq) {
      return { type, flags, header, data: whole.subarray(hlen), dataDigestOk: true };
    }
    const headerEnd = hlen + (hdgst ? DIGEST_BYTES : 0);
    if (plen === headerEnd) return { type, flags, header, dataDigestOk: true };
    const ddgst = (flags & PduFlag.DDGSTF) !== 0;
    const dataEnd = plen - (ddgst ? DIGEST_BYTES : 0);
    const data = whole.subarray(pdo, dataEnd);
    const dataDigestOk = !ddgst || crc32c(data) === whole.readUInt32LE(dataEnd);
    return { type, flags, header, data, dataDigestOk };
  }
}

// ---------------------------------------------------------------- encoders

export interface Digests {
  header: boolean;
  data: boolean;
  /** Required alignment of PDO for PDUs with data (the peer's PDA: (xPDA + 1) * 4 bytes). */
  dataAlign?: number;
}

function commonHeader(h: Buffer, type: number, flags: number, hlen: number, pdo: number, plen: number): void {
  h[0] = type;
  h[1] = flags;
  h[2] = hlen;
  h[3] = pdo;
  h.writeUInt32LE(plen, 4);
}

/**
 * Assemble a PDU as a list of buffers to write (data is never copied): header [+ header digest]
 * [+ padding to PDO] [+ data] [+ data digest].
 */
export function assemble(type: number, flags: number, header: Buffer, data: Buffer | undefined, dg: Digests): Buffer[] {
  const hlen = header.length;
  const digestible = DIGESTIBLE.has(type);
  const hd = digestible && dg.header;
  const dd = digestible && dg.data && !!data && data.length > 0;
  const headerEnd = hlen + (hd ? DIGEST_BYTES : 0);
  let pdo = 0;
  let pad = 0;
  if (data && data.length > 0) {
    const align = dg.dataAlign && dg.dataAlign > 4 ? dg.dataAlign : 0;
    pdo = align ? Math.ceil(headerEnd / align) * align : headerEnd;
    pad = pdo - headerEnd;
  }
  const plen = headerEnd + pad + (data?.length ?? 0) + (dd ? DIGEST_BYTES : 0);
  commonHeader(header, type, flags | (hd ? PduFlag.HDGSTF : 0) | (dd ? PduFlag.DDGSTF : 0), hlen, pdo, plen);
  const head = Buffer.allocUnsafe(headerEnd + pad);
  header.copy(head, 0);
  if (hd) head.writeUInt32LE(crc32c(header), hlen);
  if (pad) head.fill(0, headerEnd);
  const parts: Buffer[] = [head];
  if (data && data.length > 0) {
    parts.push(data);
    if (dd) {
      const d = Buffer.allocUnsafe(4);
      d.writeUInt32LE(crc32c(data), 0);
      parts.push(d);
    }
  }
  return parts;
}

export function encodeICResp(opts: { pfv?: number; cpda?: number; headerDigest: boolean; dataDigest: boolean; maxH2CData: number }): Buffer {
  const h = Buffer.alloc(HLEN.ICResp);
  commonHeader(h, PduType.ICResp, 0, HLEN.ICResp, 0, HLEN.ICResp);
  h.writeUInt16LE(opts.pfv ?? 0, 8);
  h[10] = opts.cpda ?? 0;
  h[11] = (opts.headerDigest ? 1 : 0) | (opts.dataDigest ? 2 : 0);
  h.writeUInt32LE(opts.maxH2CData, 12);
  return h;
}

export function encodeICReq(opts: { pfv?: number; hpda?: number; headerDigest: boolean; dataDigest: boolean; maxR2T?: number }): Buffer {
  const h = Buffer.alloc(HLEN.ICReq);
  commonHeader(h, PduType.ICReq, 0, HLEN.ICReq, 0, HLEN.ICReq);
  h.writeUInt16LE(opts.pfv ?? 0, 8);
  h[10] = opts.hpda ?? 0;
  h[11] = (opts.headerDigest ? 1 : 0) | (opts.dataDigest ? 2 : 0);
  h.writeUInt32LE(opts.maxR2T ?? 0, 12);
  return h;
}

export function encodeCapsuleResp(cqe: Buffer, dg: Digests): Buffer[] {
  const h = Buffer.allocUnsafe(HLEN.CapsuleResp);
  cqe.copy(h, 8);
  return assemble(PduType.CapsuleResp, 0, h, undefined, dg);
}

export function encodeCapsuleCmd(sqe: Buffer, data: Buffer | undefined, dg: Digests): Buffer[] {
  const h = Buffer.allocUnsafe(HLEN.CapsuleCmd);
  sqe.copy(h, 8);
  return assemble(PduType.CapsuleCmd, 0, h, data, dg);
}

export function encodeC2HData(cccid: number, datao: number, data: Buffer, last: boolean, success: boolean, dg: Digests): Buffer[] {
  const h = Buffer.alloc(HLEN.C2HData);
  h.writeUInt16LE(cccid, 8);
  h.writeUInt32LE(datao, 12);
  h.writeUInt32LE(data.length, 16);
  const flags = (last ? PduFlag.LAST_PDU : 0) | (success ? PduFlag.SUCCESS : 0);
  return assemble(PduType.C2HData, flags, h, data, dg);
}

export function encodeH2CData(cccid: number, ttag: number, datao: number, data: Buffer, last: boolean, dg: Digests): Buffer[] {
  const h = Buffer.alloc(HLEN.H2CData);
  h.writeUInt16LE(cccid, 8);
  h.writeUInt16LE(ttag, 10);
  h.writeUInt32LE(datao, 12);
  h.writeUInt32LE(data.length, 16);
  return assemble(PduType.H2CData, last ? PduFlag.LAST_PDU : 0, h, data, dg);
}

export function encodeR2T(cccid: number, ttag: number, r2to: number, r2tl: number, dg: Digests): Buffer[] {
  const h = Buffer.alloc(HLEN.R2T);
  h.writeUInt16LE(cccid, 8);
  h.writeUInt16LE(ttag, 10);
  h.writeUInt32LE(r2to, 12);
  h.writeUInt32LE(r2tl, 16);
  return assemble(PduType.R2T, 0, h, undefined, dg);
}

/** Terminate the connection: fatal error status, the offending field's offset, and the offending header. */
export function encodeTermReq(type: typeof PduType.C2HTermReq | typeof PduType.H2CTermReq, fes: number, fei: number, offending?: Buffer): Buffer {
  const copied = offending ? offending.subarray(0, 152 - HLEN.TermReq) : Buffer.alloc(0);
  const h = Buffer.alloc(HLEN.TermReq + copied.length);
  commonHeader(h, type, 0, HLEN.TermReq, 0, h.length);
  h.writeUInt16LE(fes, 8);
  h.writeUInt32LE(fei >>> 0, 10);
  copied.copy(h, HLEN.TermReq);
  return h;
}

// ---------------------------------------------------------------- PDU field readers

export const icReqFields = (h: Buffer) => ({ pfv: h.readUInt16LE(8), hpda: h[10]!, dgst: h[11]!, maxR2T: h.readUInt32LE(12) });
export const icRespFields = (h: Buffer) => ({ pfv: h.readUInt16LE(8), cpda: h[10]!, dgst: h[11]!, maxH2CData: h.readUInt32LE(12) });
export const dataFields = (h: Buffer) => ({ cccid: h.readUInt16LE(8), ttag: h.readUInt16LE(10), datao: h.readUInt32LE(12), datal: h.readUInt32LE(16) });
export const r2tFields = (h: Buffer) => ({ cccid: h.readUInt16LE(8), ttag: h.readUInt16LE(10), r2to: h.readUInt32LE(12), r2tl: h.readUInt32LE(16) });
export const termReqFields = (h: Buffer) => ({ fes: h.readUInt16LE(8), fei: h.readUInt32LE(10) });
export const CONTROLLER_ACCEPTS: ReadonlySet<number> = new Set([PduType.ICReq, PduType.CapsuleCmd, PduType.H2CData, PduType.H2CTermReq]);
export const HOST_ACCEPTS: ReadonlySet<number> = new Set([PduType.ICResp, PduType.CapsuleResp, PduType.C2HData, PduType.R2T, PduType.C2HTermReq]);
