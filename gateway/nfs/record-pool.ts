/**
 * Reused memory for large request records (a 1 MiB WRITE and its header).
 *
 * Why: the store keeps a WRITE's data as its buffered segment (writeBuffered's adopt) until the
 * segment is committed, a few milliseconds later. That is long enough for V8 to promote the
 * record's ArrayBuffer to the old generation, and every megabyte of old ArrayBuffers that dies
 * counts towards the external-memory limit that starts a full collection (about one per 64 MB):
 * a gigabyte written meant some twenty of them, with their marking threads competing for the
 * same cores as the codec workers. Records that come back are reused instead.
 *
 * Only memory whose last user said so comes back (RpcCall.recycleRecord): a record whose views
 * may be kept anywhere is never reused.
 */
export class RecordPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private bytes = 0;

  /** `maxBytes`: memory kept while unused (the rest goes to the garbage collector). */
  constructor(readonly maxBytes = 32 << 20) {}

  /** A buffer of exactly `size` bytes (contents undefined) that owns its memory. */
  take(size: number): Buffer {
    const ab = this.free.get(size)?.pop();
    if (!ab) return Buffer.allocUnsafeSlow(size);
    this.bytes -= size;
    return Buffer.from(ab);
  }

  /** Give back memory from take(): nothing may refer to it any more. */
  give(ab: ArrayBuffer): void {
    // Room for the size in use now: memory kept for sizes no longer seen goes first.
    for (const [size, list] of this.free) {
      if (this.bytes + ab.byteLength <= this.maxBytes) break;
      if (size === ab.byteLength) continue;
      this.bytes -= size * list.length;
      this.free.delete(size);
    }
    if (this.bytes + ab.byteLength > this.maxBytes) return;
    let list = this.free.get(ab.byteLength);
    if (!list) this.free.set(ab.byteLength, (list = []));
    list.push(ab);
    this.bytes += ab.byteLength;
  }

  /** Bytes kept for reuse (for tests and stats). */
  get keptBytes(): number {
    return this.bytes;
  }
}
