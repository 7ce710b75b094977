/**
 * Memory of big buffers kept for reuse, by exact size. In this VM first touches of fresh memory
 * cost more than a copy, and every dead megabyte of ArrayBuffer counts towards the
 * external-memory limit at which V8 starts a full collection (about one per 64 MB): the
 * buffers that carry data through the write path go round instead of being allocated anew.
 *
 * Users: the codec pool (segment bytes transferred to a worker and back, codec-pool.ts) and the
 * NFS RPC layer (large request records, whose WRITE data the store keeps until it commits the
 * segment, rpc.ts RpcCall.recycleRecord). Only memory nothing refers to any more may be given.
 */
export interface BufferRecyclerLimits {
  /** Buffers kept per size. */
  maxPerSize?: number;
  /** Bytes kept in all; memory kept for other sizes goes first to make room for the given one. */
  maxBytes?: number;
  /**
   * New buffers in SharedArrayBuffer memory: a codec worker reads such a buffer where it is,
   * where an ordinary one is copied for it (codec-pool.ts).
   */
  shared?: boolean;
  /** Kept memory is let go once nothing was taken for this long (a burst's pool does not stay). */
  idleMs?: number;
}

export class BufferRecycler {
  private readonly free = new Map<number, (ArrayBuffer | SharedArrayBuffer)[]>();
  private bytes = 0;
  private takes = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(readonly limits: BufferRecyclerLimits = {}) {}

  /** A buffer of exactly `size` bytes (contents undefined) that owns its memory. */
  take(size: number): Buffer {
    this.takes++;
    const ab = this.free.get(size)?.pop();
    if (!ab) return this.limits.shared ? Buffer.from(new SharedArrayBuffer(size)) : Buffer.allocUnsafeSlow(size);
    this.bytes -= size;
    return Buffer.from(ab);
  }

  /** Give back memory from take() (or any owned ArrayBuffer): nothing may refer to it any more. */
  give(ab: ArrayBuffer | SharedArrayBuffer): void {
    const size = ab.byteLength;
    const maxBytes = this.limits.maxBytes ?? Infinity;
    // Room for the size in use now: memory kept for sizes no longer seen goes first.
    for (const [other, list] of this.free) {
      if (this.bytes + size <= maxBytes) break;
      if (other === size) continue;
      this.bytes -= other * list.length;
      this.free.delete(other);
    }
    if (this.bytes + size > maxBytes) return;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    if (list.length >= (this.limits.maxPerSize ?? Infinity)) return;
    list.push(ab);
    this.bytes += size;
    this.watchIdle();
  }

  /** Let go of all kept memory. */
  clear(): void {
    this.free.clear();
    this.bytes = 0;
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
  }

  /** While memory is kept: every idleMs, clear it if nothing was taken meanwhile. */
  private watchIdle(): void {
    const ms = this.limits.idleMs;
    if (!ms || this.idleTimer) return;
    let seen = this.takes;
    this.idleTimer = setInterval(() => {
      if (this.takes === seen) this.clear();
      seen = this.takes;
    }, ms);
    this.idleTimer.unref();
  }

  /** Bytes kept for reuse (for tests and stats). */
  get keptBytes(): number {
    return this.bytes;
  }
}
