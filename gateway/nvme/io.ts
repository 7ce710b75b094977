/**
 * The NVM command set on a namespace: Read, Write, Flush, Write Zeroes, Dataset Management.
 * Each command checks its LBA range against the namespace size before touching data; store
 * errors map onto NVMe status codes the Linux host turns into the right errno.
 */
import { SpaceError } from '../../capsule/errors.js';
import { IoOpcode, Sc, type Status } from './constants.js';
import type { Command } from './command.js';
import { fail, ok, type Result } from './controller.js';
import { MAX_TRANSFER } from './identify.js';
import type { BlockNamespace } from './namespace.js';
import type { HeldBytes } from '../../capsule/segment-pool.js';

const NSID_ALL = 0xffffffff;

/** Bytes of host-to-controller data an I/O queue command needs, or an error status. */
export function hostDataLength(cmd: Command, ns: BlockNamespace | undefined): number | Status {
  if (cmd.opcode === IoOpcode.Fabrics) return cmd.sglLength;
  switch (cmd.opcode) {
    case IoOpcode.Write: {
      if (!ns) return Sc.InvalidNamespace;
      return ((cmd.cdw(12) & 0xffff) + 1) << ns.lbaShift;
    }
    case IoOpcode.DatasetManagement:
      return ((cmd.cdw(10) & 0xff) + 1) * 16;
    default:
      return cmd.sglLength;
  }
}

/** Translate a store failure into a completion status. */
export function storeStatus(e: unknown): Status {
  if (e instanceof SpaceError) {
    if (e.errno === 'ENOSPC') return Sc.CapacityExceeded;
    if (e.code === 'DATA_LOSS') return Sc.UnrecoveredReadError;
    if (e.errno === 'EROFS') return Sc.NamespaceWriteProtected;
  }
  return Sc.InternalError;
}

export interface IoContext {
  ns: BlockNamespace;
  /** Writes are durable before completion (volatile write cache disabled). */
  writeThrough: boolean;
}

/**
 * Execute one I/O command. `data` is the host's data for writes and DSM. Returns synchronously
 * when it can (cached reads), so a queue answers them without a trip through the event loop.
 */
export function ioCommand(cmd: Command, data: Buffer | undefined, ctx: IoContext): Result | Promise<Result> {
  const { ns } = ctx;
  const nsid = cmd.nsid;
  if (cmd.opcode === IoOpcode.Flush) {
    if (nsid !== 1 && nsid !== NSID_ALL) return fail(Sc.InvalidNamespace);
    return ns.flush().then(() => ok(), (e: unknown) => fail(storeStatus(e)));
  }
  if (nsid !== 1) return fail(Sc.InvalidNamespace);
  switch (cmd.opcode) {
    case IoOpcode.Read: return read(cmd, ns);
    case IoOpcode.Write: return write(cmd, data!, ctx);
    case IoOpcode.WriteZeroes: return writeZeroes(cmd, ns);
    case IoOpcode.DatasetManagement: return datasetManagement(cmd, data!, ns);
    default: return fail(Sc.InvalidOpcode);
  }
}

/** Byte range of a read/write-class command, or an error when it leaves the namespace. */
function range(cmd: Command, ns: BlockNamespace): { offset: number; length: number } | Status {
  const slba = cmd.slba;
  const nlb = (cmd.cdw(12) & 0xffff) + 1;
  if (slba + BigInt(nlb) > BigInt(ns.blocks)) return Sc.LbaOutOfRange;
  return { offset: Number(slba) * ns.blockSize, length: nlb * ns.blockSize };
}

function read(cmd: Command, ns: BlockNamespace): Result | Promise<Result> {
  const r = range(cmd, ns);
  if ('sct' in r) return fail(r);
  if (r.length > MAX_TRANSFER) return fail(Sc.InvalidField);
  if (cmd.sglLength < r.length) return fail(Sc.SglLengthInvalid);
  ns.counters.reads++;
  ns.counters.bytesRead += BigInt(r.length);
  try {
    const got = ns.read(r.offset, r.length);
    if (!(got instanceof Promise)) return borrowed(got);
    return got.then(borrowed, (e: unknown) => fail(storeStatus(e)));
  } catch (e) {
    return fail(storeStatus(e));
  }
}

/** A read's result that releases its bytes once the connection has sent them. */
function borrowed(b: HeldBytes): Result {
  return { ...ok(0, b.data), release: () => b.release() };
}

async function write(cmd: Command, data: Buffer, ctx: IoContext): Promise<Result> {
  const { ns } = ctx;
  if (ns.readOnly) return fail(Sc.NamespaceWriteProtected);
  const r = range(cmd, ns);
  if ('sct' in r) return fail(r);
  if (data.length !== r.length) return fail(Sc.SglLengthInvalid);
  const fua = (cmd.cdw(12) >>> 30) & 1;
  ns.counters.writes++;
  ns.counters.bytesWritten += BigInt(r.length);
  try {
    await ns.write(r.offset, data, fua === 1 || ctx.writeThrough);
    return ok();
  } catch (e) {
    return fail(storeStatus(e));
  }
}

async function writeZeroes(cmd: Command, ns: BlockNamespace): Promise<Result> {
  if (ns.readOnly) return fail(Sc.NamespaceWriteProtected);
  const r = range(cmd, ns);
  if ('sct' in r) return fail(r);
  try {
    // Zeroed blocks read as zeros once deallocated (DLFEAT), so both forms punch a hole.
    await ns.deallocate(r.offset, r.length);
    if ((cmd.cdw(12) >>> 30) & 1) await ns.flush();
    return ok();
  } catch (e) {
    return fail(storeStatus(e));
  }
}

async function datasetManagement(cmd: Command, data: Buffer, ns: BlockNamespace): Promise<Result> {
  const ranges = (cmd.cdw(10) & 0xff) + 1;
  if (data.length < ranges * 16) return fail(Sc.SglLengthInvalid);
  const deallocate = (cmd.cdw(11) >> 2) & 1;
  if (!deallocate) return ok(); // integral read/write hints: advisory, nothing to do
  if (ns.readOnly) return fail(Sc.NamespaceWriteProtected);
  const todo: { offset: number; length: number }[] = [];
  for (let i = 0; i < ranges; i++) {
    const count = data.readUInt32LE(i * 16 + 4);
    const slba = data.readBigUInt64LE(i * 16 + 8);
    if (count === 0) continue;
    if (slba + BigInt(count) > BigInt(ns.blocks)) return fail(Sc.LbaOutOfRange);
    todo.push({ offset: Number(slba) * ns.blockSize, length: count * ns.blockSize });
  }
  try {
    for (const t of todo) await ns.deallocate(t.offset, t.length);
    return ok();
  } catch (e) {
    return fail(storeStatus(e));
  }
}
