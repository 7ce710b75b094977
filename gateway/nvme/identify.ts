/**
 * The data structures a controller returns: Identify pages and log pages. Pure functions of the
 * controller's and namespace's state, so they are tested byte by byte.
 */
import { DISCOVERY_NQN } from './constants.js';
import type { BlockNamespace } from './namespace.js';

export const PAGE = 4096;
/** Largest transfer: 2^MDTS minimum pages (CAP.MPSMIN = 4 KiB). 2^8 * 4 KiB = 1 MiB. */
export const MDTS = 8;
export const MAX_TRANSFER = (1 << MDTS) * 4096;
/** In-capsule data accepted on I/O queues (IOCCSZ counts 16-byte units including the 64-byte SQE). */
export const IN_CAPSULE_DATA = 16384;
/** Maximum queue entries supported, 0's based (CAP.MQES). */
export const MQES = 1023;
/** Outstanding Asynchronous Event Requests, 0's based (AERL). */
export const AERL = 3;
export const NVME_VERSION = 0x00010400; // 1.4
export const ELPE = 0; // one error log entry

export interface ControllerIdentity {
  cntlid: number;
  subnqn: string;
  serial: string;
  model: string;
  firmware: string;
  discovery: boolean;
  namespaces: number;
  /** I/O queue entries the host may have outstanding (MAXCMD). */
  maxCmd: number;
  /** Keep-alive granularity in 100 ms units (KAS). */
  kas: number;
}

function ascii(b: Buffer, off: number, len: number, s: string, pad = ' '): void {
  b.fill(pad, off, off + len);
  b.write(s.slice(0, len), off, 'ascii');
}

/** Identify Controller (CNS 01h). */
export function identifyController(c: ControllerIdentity): Buffer {
  const b = Buffer.alloc(PAGE);
  // VID/SSVID stay 0: there is no PCI vendor behind a software target.
  ascii(b, 4, 20, c.serial);
  ascii(b, 24, 40, c.model);
  ascii(b, 64, 8, c.firmware);
  b[72] = 6; // RAB: recommended arbitration burst
  b[77] = c.discovery ? 0 : MDTS;
  b.writeUInt16LE(c.cntlid, 78);
  b.writeUInt32LE(NVME_VERSION, 80);
  // OAES bit 8: namespace attribute notices (sent when a namespace is resized).
  b.writeUInt32LE(c.discovery ? 0 : 1 << 8, 92);
  b[111] = c.discovery ? 2 : 1; // CNTRLTYPE: 1 I/O controller, 2 discovery controller
  b.writeUInt16LE(0, 256); // OACS: no optional admin commands
  b[258] = 3; // ACL: abort command limit (0's based)
  b[259] = AERL;
  b[260] = 0x03; // FRMW: slot 1 read-only, one slot
  b[261] = 0x04; // LPA bit 2: extended data (NUMDU/offsets) for Get Log Page
  b[262] = ELPE;
  b.writeUInt16LE(c.kas, 320); // KAS
  if (!c.discovery) {
    b[512] = 0x66; // SQES: 64-byte entries
    b[513] = 0x44; // CQES: 16-byte entries
  }
  b.writeUInt16LE(c.maxCmd, 514);
  b.writeUInt32LE(c.namespaces, 516); // NN
  // ONCS bit 2: Dataset Management, bit 3: Write Zeroes.
  b.writeUInt16LE(c.discovery ? 0 : (1 << 2) | (1 << 3), 520);
  b[525] = c.discovery ? 0 : 1; // VWC: a volatile write cache is present (writes are buffered; Flush commits)
  // SGLS: bit 0 SGLs supported (no alignment), bit 20 offset-based in-capsule data.
  b.writeUInt32LE((1 << 0) | (1 << 20), 536);
  b.write(c.subnqn, 768, 'utf8'); // SUBNQN, NUL padded
  // Fabrics fields.
  b.writeUInt32LE(c.discovery ? 4 : (64 + IN_CAPSULE_DATA) / 16, 1792); // IOCCSZ
  b.writeUInt32LE(1, 1796); // IORCSZ: 16-byte responses
  b.writeUInt16LE(0, 1800); // ICDOFF: in-capsule data right after the SQE
  b[1802] = 0; // FCATT: dynamic controller model
  b[1803] = 1; // MSDBD: one SGL data block descriptor
  b.writeUInt16LE(1, 1804); // OFCS bit 0: Disconnect supported
  return b;
}

/** Identify Namespace (CNS 00h). */
export function identifyNamespace(ns: BlockNamespace): Buffer {
  const b = Buffer.alloc(PAGE);
  const blocks = BigInt(ns.blocks);
  b.writeBigUInt64LE(blocks, 0); // NSZE
  b.writeBigUInt64LE(blocks, 8); // NCAP
  b.writeBigUInt64LE(blocks, 16); // NUSE (thin: the capsule allocates lazily; report the size)
  b[24] = 0x01; // NSFEAT bit 0: thin provisioning
  b[25] = 0; // NLBAF: one format
  b[26] = 0; // FLBAS: format 0
  b[33] = 0x09; // DLFEAT: deallocated blocks read as zeros (001b); Write Zeroes may deallocate (bit 3)
  b[99] = ns.readOnly ? 1 : 0; // NSATTR bit 0: write protected
  ns.nguid.copy(b, 104);
  ns.eui64.copy(b, 120);
  // LBA format 0: no metadata, LBADS, relative performance 0 (best).
  b.writeUInt16LE(0, 128);
  b[130] = ns.lbaShift;
  return b;
}

/** Active Namespace ID list (CNS 02h): ids greater than `after`. */
export function activeNamespaceList(ids: number[], after: number): Buffer {
  const b = Buffer.alloc(PAGE);
  let off = 0;
  for (const id of ids.filter((x) => x > after).sort((x, y) => x - y)) {
    if (off >= PAGE) break;
    b.writeUInt32LE(id, off);
    off += 4;
  }
  return b;
}

/** Namespace Identification Descriptor list (CNS 03h): EUI-64, NGUID, UUID. */
export function namespaceDescriptors(ns: BlockNamespace): Buffer {
  const b = Buffer.alloc(PAGE);
  let off = 0;
  const put = (type: number, id: Buffer) => {
    b[off] = type;
    b[off + 1] = id.length;
    id.copy(b, off + 4);
    off += 4 + id.length;
  };
  put(1, ns.eui64);
  put(2, ns.nguid);
  put(3, ns.uuid);
  return b;
}

// ---------------------------------------------------------------- log pages

/** Error Information (01h): ELPE + 1 entries of 64 bytes; no errors are recorded (error count 0 = empty). */
export function errorLog(): Buffer {
  return Buffer.alloc(64 * (ELPE + 1));
}

/** SMART / Health Information (02h) with real I/O counters (data units are 1000 * 512 bytes, rounded up). */
export function smartLog(c: { bytesRead: bigint; bytesWritten: bigint; reads: bigint; writes: bigint; powerOnHours: number }): Buffer {
  const b = Buffer.alloc(512);
  b[0] = 0; // critical warning
  b.writeUInt16LE(293, 1); // composite temperature in kelvin: a virtual device reports a nominal 20 C
  b[3] = 100; // available spare %
  b[4] = 10; // spare threshold %
  b[5] = 0; // percentage used
  const units = (bytes: bigint) => (bytes + 511_999n) / 512_000n;
  const u128 = (v: bigint, off: number) => {
    b.writeBigUInt64LE(v & 0xffffffffffffffffn, off);
    b.writeBigUInt64LE(v >> 64n, off + 8);
  };
  u128(units(c.bytesRead), 32);
  u128(units(c.bytesWritten), 48);
  u128(c.reads, 64);
  u128(c.writes, 80);
  u128(BigInt(c.powerOnHours), 128);
  return b;
}

export function firmwareSlotLog(firmware: string): Buffer {
  const b = Buffer.alloc(512);
  b[0] = 1; // AFI: slot 1 active
  ascii(b, 8, 8, firmware);
  return b;
}

/** Changed Namespace List (04h): up to 1024 ids, zero terminated. */
export function changedNamespaceLog(ids: number[]): Buffer {
  const b = Buffer.alloc(PAGE);
  if (ids.length > 1024) b.writeUInt32LE(0xffffffff, 0);
  else ids.forEach((id, i) => b.writeUInt32LE(id, i * 4));
  return b;
}

export interface DiscoveryEntry {
  subnqn: string;
  traddr: string;
  trsvcid: string;
  family: 4 | 6;
  portId: number;
  /** Subtype: 2 = NVM subsystem, 3 = this discovery subsystem. */
  subtype: 2 | 3;
}

/** Discovery log page (70h): a 1024-byte header then 1024-byte entries. */
export function discoveryLog(genctr: bigint, entries: DiscoveryEntry[]): Buffer {
  const b = Buffer.alloc(1024 * (1 + entries.length));
  b.writeBigUInt64LE(genctr, 0);
  b.writeBigUInt64LE(BigInt(entries.length), 8);
  b.writeUInt16LE(0, 16); // RECFMT
  entries.forEach((e, i) => {
    const o = 1024 * (i + 1);
    b[o] = 3; // TRTYPE: TCP
    b[o + 1] = e.family === 6 ? 2 : 1; // ADRFAM
    b[o + 2] = e.subtype;
    b[o + 3] = 0x02; // TREQ: secure channel not required
    b.writeUInt16LE(e.portId, o + 4);
    b.writeUInt16LE(0xffff, o + 6); // CNTLID: dynamic
    b.writeUInt16LE(32, o + 8); // ASQSZ: admin submission queue size
    ascii(b, o + 32, 32, e.trsvcid);
    b.write(e.subnqn, o + 256, 'utf8');
    ascii(b, o + 512, 256, e.traddr);
    b[o + 768] = 0; // TSAS for TCP: SECTYPE none
  });
  return b;
}

export const isDiscoveryNqn = (nqn: string) => nqn === DISCOVERY_NQN;
