/**
 * Submission queue entries (64 bytes) as received in a command capsule, and the 16-byte
 * completion queue entries sent back. Fields are read on demand from the capsule bytes.
 */
import { statusField, type Status } from './constants.js';

export class Command {
  constructor(readonly sqe: Buffer) {}
  get opcode(): number { return this.sqe[0]!; }
  get cid(): number { return this.sqe.readUInt16LE(2); }
  get nsid(): number { return this.sqe.readUInt32LE(4); }
  /** Fabrics command type (opcode 0x7f only): byte 4, where other commands keep NSID. */
  get fctype(): number { return this.sqe[4]!; }
  /** PSDT (bits 7:6 of byte 1): fabrics commands always use SGLs. */
  get psdt(): number { return this.sqe[1]! >> 6; }
  get sglAddress(): bigint { return this.sqe.readBigUInt64LE(24); }
  get sglLength(): number { return this.sqe.readUInt32LE(32); }
  get sglId(): number { return this.sqe[39]!; }
  cdw(n: 10 | 11 | 12 | 13 | 14 | 15): number { return this.sqe.readUInt32LE(n * 4); }
  /** Starting LBA of read/write-class commands (CDW10-11). */
  get slba(): bigint { return this.sqe.readBigUInt64LE(40); }
  /**
   * Data direction from the opcode (or, for fabrics commands, the fctype): bits 1:0 are
   * 01 host-to-controller, 10 controller-to-host, 00 none.
   */
  get direction(): 'none' | 'h2c' | 'c2h' | 'both' {
    const code = (this.opcode === 0x7f ? this.fctype : this.opcode) & 3;
    return code === 1 ? 'h2c' : code === 2 ? 'c2h' : code === 3 ? 'both' : 'none';
  }
}

export interface Completion {
  status: Status;
  dw0?: number;
  dw1?: number;
}

export function encodeCqe(cid: number, sqid: number, sqhd: number, c: Completion): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeUInt32LE((c.dw0 ?? 0) >>> 0, 0);
  b.writeUInt32LE((c.dw1 ?? 0) >>> 0, 4);
  b.writeUInt16LE(sqhd & 0xffff, 8);
  b.writeUInt16LE(sqid, 10);
  b.writeUInt16LE(cid, 12);
  // Phase tag (bit 0) is meaningless on fabrics: status occupies bits 15:1.
  b.writeUInt16LE((statusField(c.status) << 1) & 0xffff, 14);
  return b;
}

export function decodeCqe(b: Buffer): { dw0: number; dw1: number; sqhd: number; sqid: number; cid: number; sct: number; sc: number; dnr: boolean } {
  const st = b.readUInt16LE(14) >> 1;
  return { dw0: b.readUInt32LE(0), dw1: b.readUInt32LE(4), sqhd: b.readUInt16LE(8), sqid: b.readUInt16LE(10), cid: b.readUInt16LE(12), sct: (st >> 8) & 7, sc: st & 0xff, dnr: (st & 0x4000) !== 0 };
}

/** Build a 64-byte SQE (host side: benchmark initiator and tests). */
export function buildSqe(f: { opcode: number; cid: number; nsid?: number; fctype?: number; sglId?: number; sglLength?: number; cdw?: Partial<Record<10 | 11 | 12 | 13 | 14 | 15, number>> }): Buffer {
  const b = Buffer.alloc(64);
  b[0] = f.opcode;
  b[1] = 0x40; // PSDT = 01: SGLs for data
  b.writeUInt16LE(f.cid, 2);
  if (f.opcode === 0x7f) b[4] = f.fctype ?? 0;
  else b.writeUInt32LE(f.nsid ?? 0, 4);
  b.writeUInt32LE(f.sglLength ?? 0, 32);
  b[39] = f.sglId ?? 0;
  for (const [k, v] of Object.entries(f.cdw ?? {})) b.writeUInt32LE(v! >>> 0, Number(k) * 4);
  return b;
}
