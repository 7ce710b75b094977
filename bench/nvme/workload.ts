/**
 * Shared by the NVMe/TCP benchmark's parent (bench/nvme.ts, which runs the servers) and its
 * client process (bench/nvme/client-child.ts, which drives them): the job messages, the raw TCP
 * baseline's framing, and the write data pattern.
 *
 * Baseline framing (raw TCP, no NVMe): every message is a 16-byte header, optionally followed by
 * `length` bytes of data.
 *   byte 0      op: 1 = read request, 2 = write request (data follows), 0x81 / 0x82 = responses
 *   bytes 4..7  request id (u32 LE; plays the role of the NVMe command id)
 *   bytes 8..11 length (u32 LE): bytes asked for (read) or carried (write)
 * A read response carries `length` bytes; a write response carries none. So per transfer the
 * baseline moves one header plus one data buffer each way, like a read command + C2HData or a
 * write command + H2CData, minus NVMe's R2T round trip and completion capsule.
 */
import crypto from 'node:crypto';
import { ByteQueue } from '../../gateway/byte-queue.js';

export const HDR = 16;
export const OP_READ = 1;
export const OP_WRITE = 2;
export const OP_RESP = 0x80;

export interface SeqJob {
  kind: 'tcp-seq' | 'nvme-seq';
  op: 'read' | 'write';
  host: string;
  port: number;
  /** nvme only */
  subnqn?: string;
  qd: number;
  ioBytes: number;
  totalBytes: number;
  /** Write data stamp base: MiB block j of this pass carries stamp `stampBase + j`. */
  stampBase: number;
  /**
   * Wrap offsets at this many bytes (default: no wrap): I/O i goes to (i x ioBytes) mod rangeBytes,
   * i.e. repeated sequential passes over the first rangeBytes of the namespace.
   */
  rangeBytes?: number;
  /** nvme write: end with a Flush, timed. */
  flush?: boolean;
  /** nvme read: after the timed pass, compare this many random reads with the expected data (stamps from `stampBase`). */
  verify?: number;
}

export interface RandJob {
  kind: 'tcp-rand' | 'nvme-rand';
  host: string;
  port: number;
  subnqn?: string;
  qd: number;
  ioBytes: number;
  rangeBytes: number;
  seconds: number;
  seed: number;
}

export type Job = SeqJob | RandJob;

export interface SeqResult {
  bytes: number;
  secs: number;
  /** Of which the final Flush (nvme writes with flush). */
  flushSecs?: number;
  verified?: number;
  /** CPU seconds the client process spent on the job (user + system, all threads). */
  clientCpuSecs?: number;
  /** CPU seconds the server (bench) process spent meanwhile; filled in by the parent. */
  serverCpuSecs?: number;
}

export interface RandResult {
  ios: number;
  secs: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export type Reply = { ok: true; result: SeqResult | RandResult } | { ok: false; error: string };

/**
 * Write data: 64 distinct pseudo-random MiB bases; MiB block j is base j % 64 with the 8-byte
 * stamp `stampBase + j` at offsets 0 and 4096. A ring of 64 one-MiB slots holds them, so making
 * block j costs 16 bytes of stamping, not a 1 MiB copy (slot j % 64 already holds base j % 64).
 * Every 1 MiB (= one capsule segment) is unique, so the store's dedup never kicks in, and any
 * block can be recomputed to check reads.
 */
export class WritePattern {
  static readonly SLOTS = 64;
  private readonly slots: Buffer[] = [];
  private readonly stampOf: number[] = [];

  constructor(seed = 1) {
    const key = crypto.createHash('sha256').update(`space-bench-nvme:${seed}`).digest();
    const c = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
    const zero = Buffer.alloc(1 << 20);
    for (let i = 0; i < WritePattern.SLOTS; i++) {
      this.slots.push(Buffer.from(c.update(zero)));
      this.stampOf.push(-1);
    }
  }

  /**
   * MiB block `j` with stamp `stamp`. The slot is shared with blocks j +- 64: callers keep
   * fewer than 64 MiB in flight (the benchmark keeps at most QD x 128 KiB).
   */
  block(j: number, stamp: number): Buffer {
    const k = j % WritePattern.SLOTS;
    const b = this.slots[k]!;
    if (this.stampOf[k] !== stamp) {
      const v = BigInt(stamp) ^ 0x5a5a_0000_0000_0000n;
      b.writeBigUInt64LE(v, 0);
      b.writeBigUInt64LE(v, 4096);
      this.stampOf[k] = stamp;
    }
    return b;
  }

  /** The expected bytes at `offset`..`offset + length` (within one MiB) after a pass with `stampBase`. */
  expected(offset: number, length: number, stampBase: number): Buffer {
    const j = Math.floor(offset / (1 << 20));
    const within = offset - j * (1 << 20);
    return Buffer.from(this.block(j, stampBase + j).subarray(within, within + length));
  }
}

/**
 * Incremental framer for the baseline protocol: whole messages out of any slicing of the stream.
 * Like the NVMe PduReader, a message that arrived in one chunk is a view (no copy); one that
 * spans chunks is copied into one buffer.
 */
export class FrameReader {
  private readonly queue = new ByteQueue();

  /** `hasData(op)`: whether a message with this op carries `length` bytes after the header. */
  constructor(private readonly hasData: (op: number) => boolean) {}

  push(chunk: Buffer, onFrame: (op: number, id: number, length: number, data: Buffer | undefined) => void): void {
    this.queue.push(chunk);
    while (this.queue.length >= HDR) {
      const h = this.queue.peek(HDR);
      const op = h[0]!;
      const id = h.readUInt32LE(4);
      const length = h.readUInt32LE(8);
      const total = HDR + (this.hasData(op) ? length : 0);
      if (this.queue.length < total) return;
      const whole = this.queue.take(total);
      onFrame(op, id, length, total > HDR ? whole.subarray(HDR) : undefined);
    }
  }
}

export function header(op: number, id: number, length: number): Buffer {
  const h = Buffer.alloc(HDR);
  h[0] = op;
  h.writeUInt32LE(id >>> 0, 4);
  h.writeUInt32LE(length >>> 0, 8);
  return h;
}
