/**
 * ONC RPC record marking over TCP (RFC 5531 section 11): splits a byte stream into records.
 * Each fragment is a 4-byte header (last-fragment bit, 31-bit length) and that many bytes; a
 * record is its fragments joined.
 *
 * Two ways to be fed:
 *  - `push(chunk)`: chunks the socket allocated for us (Node's ordinary 'data' path). A record
 *    wholly inside one chunk is handed on as a view of it.
 *  - `nextBuffer()` / `filled(n)`: the socket reads into memory we give it (net.Socket's
 *    `onread`). Small reads land in a reused staging buffer, and whatever must outlive the read
 *    is copied out of it. Once a header announces a record that does not fit in what has been
 *    read, the record's own memory is allocated and the following reads go straight into it:
 *    a 1 MiB WRITE reaches its buffer with the kernel's copy alone, where the 'data' path costs
 *    sixteen 64 KiB allocations and a second copy to join them.
 *
 * Records from POOLED_RECORD_MIN bytes up are taken from `pool`, when there is one (a server's
 * bulk WRITEs); the receiver learns which with `pooled` and decides when their memory may go
 * back (rpc.ts).
 */
import type { BufferRecycler } from '../../capsule/buffer-recycler.js';

/** The last-fragment bit of a fragment header. */
export const LAST_FRAGMENT = 0x80000000;

/** Records from this size up are assembled in reusable memory (the pool): bulk WRITEs. */
export const POOLED_RECORD_MIN = 64 << 10;

/** Size of the staging buffer small reads land in (as Node's own read buffer). */
export const STAGING_BYTES = 64 << 10;

export interface RecordHandler {
  /** A complete record. `pooled`: its memory is a whole buffer taken from the pool. */
  record(record: Buffer, pooled: boolean): void;
  /** A header announced a record past the limit; nothing more is read. */
  tooLarge(bytes: number, max: number): void;
}

export class RecordAssembler {
  /** Partial fragment header. */
  private readonly hdr = Buffer.alloc(4);
  private hdrFill = 0;
  /** Bytes of the current fragment still to come; -1 while reading a header. */
  private fragLeft = -1;
  private fragLast = false;
  /** The single-fragment record being filled, and how much of it is. */
  private cur: Buffer | null = null;
  private curFill = 0;
  private curPooled = false;
  /** Fragments of a multi-fragment record so far (rare: clients send one fragment). */
  private pieces: Buffer[] = [];
  private piecesSize = 0;
  private staging: Buffer | null = null;
  /** The last nextBuffer() was the current record's own memory. */
  private direct = false;
  private stopped = false;

  constructor(private readonly maxRecordSize: number, private readonly pool: BufferRecycler | undefined, private readonly handler: RecordHandler) {}

  /** Memory for the next socket read: the rest of the record being filled, or the staging buffer. */
  nextBuffer(): Buffer {
    if (this.cur && this.fragLeft > 0) {
      this.direct = true;
      return this.cur.subarray(this.curFill, this.curFill + this.fragLeft);
    }
    this.direct = false;
    return (this.staging ??= Buffer.allocUnsafeSlow(STAGING_BYTES));
  }

  /** `n` bytes were read into the memory the last nextBuffer() gave. */
  filled(n: number): void {
    if (this.stopped || n <= 0) return;
    if (this.direct) {
      this.curFill += n;
      this.fragLeft -= n;
      if (this.fragLeft === 0) this.curDone();
      return;
    }
    this.consume(this.staging!.subarray(0, n), false);
  }

  /** A chunk the caller gives up (views of it may be kept). */
  push(chunk: Buffer): void {
    this.consume(chunk, true);
  }

  /** Drop everything buffered; nothing more is delivered. */
  stop(): void {
    this.stopped = true;
    this.cur = null;
    this.pieces = [];
  }

  /** `owned`: views of `chunk` may outlive this call (otherwise it is reused: copy out of it). */
  private consume(chunk: Buffer, owned: boolean): void {
    let off = 0;
    while (off < chunk.length && !this.stopped) {
      if (this.fragLeft < 0) {
        const n = Math.min(4 - this.hdrFill, chunk.length - off);
        chunk.copy(this.hdr, this.hdrFill, off, off + n);
        this.hdrFill += n;
        off += n;
        if (this.hdrFill < 4) return;
        this.hdrFill = 0;
        const h = this.hdr.readUInt32BE(0);
        const len = h & 0x7fffffff;
        this.fragLast = (h & LAST_FRAGMENT) !== 0;
        // Checked on the header, before any of the data is buffered.
        if (this.piecesSize + len > this.maxRecordSize) {
          this.stop();
          this.handler.tooLarge(this.piecesSize + len, this.maxRecordSize);
          return;
        }
        this.fragLeft = len;
        if (this.fragLast && this.pieces.length === 0) {
          const avail = chunk.length - off;
          if (len <= avail) {
            // The whole record is here: a view when the chunk is ours to keep, else a copy.
            const view = chunk.subarray(off, off + len);
            off += len;
            this.fragLeft = -1;
            this.deliver(owned ? view : Buffer.from(view), false);
            continue;
          }
          // It is not: its own memory now, and the rest is read (or copied) into it.
          this.curPooled = this.pool !== undefined && len >= POOLED_RECORD_MIN;
          this.cur = this.curPooled ? this.pool!.take(len) : Buffer.allocUnsafe(len);
          this.curFill = 0;
          continue;
        }
        if (len === 0) this.fragmentDone();
        continue;
      }
      const take = Math.min(this.fragLeft, chunk.length - off);
      if (this.cur) {
        chunk.copy(this.cur, this.curFill, off, off + take);
        this.curFill += take;
      } else {
        const piece = chunk.subarray(off, off + take);
        this.pieces.push(owned ? piece : Buffer.from(piece));
        this.piecesSize += take;
      }
      this.fragLeft -= take;
      off += take;
      if (this.fragLeft === 0) {
        if (this.cur) this.curDone();
        else this.fragmentDone();
      }
    }
  }

  private curDone(): void {
    const record = this.cur!;
    const pooled = this.curPooled;
    this.cur = null;
    this.curFill = 0;
    this.fragLeft = -1;
    this.deliver(record, pooled);
  }

  /** A fragment of a multi-fragment record ended; the record is delivered after its last one. */
  private fragmentDone(): void {
    this.fragLeft = -1;
    if (!this.fragLast) return;
    const size = this.piecesSize;
    let record: Buffer;
    let pooled = false;
    if (this.pieces.length === 1) record = this.pieces[0]!;
    else if (this.pool && size >= POOLED_RECORD_MIN) {
      record = this.pool.take(size);
      pooled = true;
      let at = 0;
      for (const piece of this.pieces) at += piece.copy(record, at);
    } else record = Buffer.concat(this.pieces, size);
    this.pieces = [];
    this.piecesSize = 0;
    this.deliver(record, pooled);
  }

  private deliver(record: Buffer, pooled: boolean): void {
    if (!this.stopped) this.handler.record(record, pooled);
  }
}
