/**
 * XDR (RFC 4506): the big-endian, 4-byte aligned encoding every ONC RPC message uses.
 *
 * The reader never touches a byte outside its buffer: every read checks what is left first and
 * throws an XdrError (which the RPC layer answers with GARBAGE_ARGS) instead. Lengths that come
 * off the wire are checked against the caller's maximum before anything is allocated, so a
 * 4-byte length of 0xffffffff costs nothing.
 *
 * The writer builds a reply as a list of buffers: small fields go into a growing scratch buffer,
 * while large opaque data (READ payloads, which may be views of the store's segment cache) is
 * appended by reference and reaches the socket without a copy (see `opaqueRef`).
 */

export type XdrErrorKind = 'truncated' | 'too-long' | 'bad-value';

export class XdrError extends Error {
  constructor(readonly kind: XdrErrorKind, message: string) {
    super(message);
    this.name = 'XdrError';
  }
}

/** Bytes of padding after `n` bytes of opaque data. */
export const pad4 = (n: number): number => (4 - (n & 3)) & 3;

const TWO32 = 0x1_0000_0000;
const ZEROS = Buffer.alloc(4);
/** Decodes UTF-8 and refuses malformed input (names that would not round-trip). */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export class XdrReader {
  private pos: number;
  private readonly end: number;

  constructor(readonly buf: Buffer, start = 0, end = buf.length) {
    if (start < 0 || end > buf.length || start > end) throw new RangeError('XdrReader window outside its buffer');
    this.pos = start;
    this.end = end;
  }

  get offset(): number {
    return this.pos;
  }

  remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number, what: string): void {
    if (n > this.end - this.pos) throw new XdrError('truncated', `truncated XDR: ${what} needs ${n} bytes, ${this.end - this.pos} left`);
  }

  uint32(): number {
    this.need(4, 'uint32');
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  int32(): number {
    this.need(4, 'int32');
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** An enum: a signed 32-bit value, optionally checked against the allowed set. */
  enum(allowed?: ReadonlySet<number> | readonly number[]): number {
    const v = this.int32();
    if (allowed) {
      const ok = Array.isArray(allowed) ? allowed.includes(v) : (allowed as ReadonlySet<number>).has(v);
      if (!ok) throw new XdrError('bad-value', `enum value ${v} is not one of the allowed values`);
    }
    return v;
  }

  bool(): boolean {
    const v = this.int32();
    if (v !== 0 && v !== 1) throw new XdrError('bad-value', `bool must be 0 or 1, got ${v}`);
    return v === 1;
  }

  /** unsigned hyper as a bigint (exact). */
  uint64n(): bigint {
    this.need(8, 'uint64');
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /** hyper (signed) as a bigint. */
  hypern(): bigint {
    this.need(8, 'hyper');
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /**
   * unsigned hyper as a number: exact up to 2^53; above that the result is rounded but still
   * greater than Number.MAX_SAFE_INTEGER, so a caller's range check rejects it. File offsets and
   * sizes use this: no store file gets anywhere near 2^53 bytes.
   */
  uint64(): number {
    this.need(8, 'uint64');
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    return hi * TWO32 + lo;
  }

  /** hyper (signed) as a number (same rounding rule as uint64). */
  hyper(): number {
    this.need(8, 'hyper');
    const hi = this.buf.readInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    return hi * TWO32 + lo;
  }

  /** Fixed-length opaque: a view into the message (no copy); the padding is skipped. */
  fixedOpaque(len: number): Buffer {
    const padded = len + pad4(len);
    this.need(padded, `opaque[${len}]`);
    const v = this.buf.subarray(this.pos, this.pos + len);
    this.pos += padded;
    return v;
  }

  /**
   * Variable-length opaque of at most `max` bytes: a view into the message (no copy). WRITE
   * payloads come through here and go to the store without being copied first.
   */
  opaque(max = 0xffffffff): Buffer {
    const len = this.uint32();
    if (len > max) throw new XdrError('too-long', `opaque of ${len} bytes exceeds its maximum of ${max}`);
    return this.fixedOpaque(len);
  }

  /** A string of at most `max` bytes; malformed UTF-8 is rejected rather than mangled. */
  string(max = 0xffffffff): string {
    const raw = this.opaque(max);
    try {
      return strictUtf8.decode(raw);
    } catch {
      throw new XdrError('bad-value', 'string is not valid UTF-8');
    }
  }

  /** `T *x` (optional data): a bool, then the value when it is TRUE. */
  optional<T>(item: (r: XdrReader) => T): T | undefined {
    return this.bool() ? item(this) : undefined;
  }

  /** Variable-length array `T x<max>`. Each element needs at least 4 bytes, so count is bounded first. */
  array<T>(item: (r: XdrReader) => T, max = 0xffffffff): T[] {
    const n = this.uint32();
    if (n > max) throw new XdrError('too-long', `array of ${n} elements exceeds its maximum of ${max}`);
    if (n > this.remaining() / 4) throw new XdrError('truncated', `array of ${n} elements cannot fit in ${this.remaining()} bytes`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(item(this));
    return out;
  }

  /** Fixed-length array `T x[n]`. */
  fixedArray<T>(item: (r: XdrReader) => T, n: number): T[] {
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(item(this));
    return out;
  }

  skip(n: number): void {
    this.need(n, 'skip');
    this.pos += n;
  }
}

/**
 * Builds XDR into a list of buffers. Scalars go into a scratch buffer that grows by doubling;
 * `opaqueRef` closes the current scratch piece and appends the caller's buffer itself.
 */
export class XdrWriter {
  private buf: Buffer;
  private pos = 0;
  /** Where the not-yet-emitted part of `buf` starts. */
  private mark = 0;
  private readonly parts: Buffer[] = [];
  private total = 0;

  constructor(initial = 512) {
    this.buf = Buffer.allocUnsafe(Math.max(16, initial));
  }

  /** Bytes written so far (scratch and referenced buffers). */
  get length(): number {
    return this.total + (this.pos - this.mark);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    // Emitted pieces are views of the old buffer and stay valid; only the unemitted tail moves.
    const pending = this.pos - this.mark;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, pending + n + 64));
    this.buf.copy(next, 0, this.mark, this.pos);
    this.buf = next;
    this.mark = 0;
    this.pos = pending;
  }

  uint32(v: number): this {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  int32(v: number): this {
    this.room(4);
    this.buf.writeInt32BE(v | 0, this.pos);
    this.pos += 4;
    return this;
  }

  enum(v: number): this {
    return this.int32(v);
  }

  bool(v: boolean): this {
    return this.uint32(v ? 1 : 0);
  }

  /** unsigned hyper from a non-negative safe integer or a bigint. */
  uint64(v: number | bigint): this {
    this.room(8);
    if (typeof v === 'bigint') {
      this.buf.writeBigUInt64BE(BigInt.asUintN(64, v), this.pos);
    } else {
      if (!(v >= 0)) v = 0; // negative or NaN never goes on the wire as garbage
      const hi = Math.floor(v / TWO32);
      this.buf.writeUInt32BE(hi >>> 0, this.pos);
      this.buf.writeUInt32BE((v - hi * TWO32) >>> 0, this.pos + 4);
    }
    this.pos += 8;
    return this;
  }

  hyper(v: number | bigint): this {
    this.room(8);
    if (typeof v === 'bigint') {
      this.buf.writeBigInt64BE(BigInt.asIntN(64, v), this.pos);
    } else {
      const hi = Math.floor(v / TWO32);
      this.buf.writeInt32BE(hi | 0, this.pos);
      this.buf.writeUInt32BE((v - hi * TWO32) >>> 0, this.pos + 4);
    }
    this.pos += 8;
    return this;
  }

  /** Fixed-length opaque: the data (copied) and its padding. */
  fixedOpaque(data: Uint8Array, len = data.length): this {
    if (data.length !== len) throw new XdrError('bad-value', `fixed opaque needs ${len} bytes, got ${data.length}`);
    const p = pad4(len);
    this.room(len + p);
    this.buf.set(data, this.pos);
    this.pos += len;
    if (p) {
      ZEROS.copy(this.buf, this.pos, 0, p);
      this.pos += p;
    }
    return this;
  }

  /** Variable-length opaque (copied), checked against `max`. */
  opaque(data: Uint8Array, max = 0xffffffff): this {
    if (data.length > max) throw new XdrError('too-long', `opaque of ${data.length} bytes exceeds its maximum of ${max}`);
    this.uint32(data.length);
    return this.fixedOpaque(data);
  }

  /**
   * Variable-length opaque appended by reference: `data` must not change until the message has
   * been written out. Small buffers are copied anyway (a separate write piece costs more).
   */
  opaqueRef(data: Buffer, max = 0xffffffff): this {
    if (data.length < 1024) return this.opaque(data, max);
    if (data.length > max) throw new XdrError('too-long', `opaque of ${data.length} bytes exceeds its maximum of ${max}`);
    this.uint32(data.length);
    this.cut();
    this.parts.push(data);
    this.total += data.length;
    const p = pad4(data.length);
    if (p) {
      this.room(p);
      ZEROS.copy(this.buf, this.pos, 0, p);
      this.pos += p;
    }
    return this;
  }

  /**
   * Already-encoded XDR (a length that is a multiple of 4), appended by reference like
   * `opaqueRef`: NFSv4 builds a COMPOUND reply apart from its header and keeps it for replays.
   */
  raw(data: Buffer): this {
    if (data.length < 1024) {
      this.room(data.length);
      data.copy(this.buf, this.pos);
      this.pos += data.length;
      return this;
    }
    this.cut();
    this.parts.push(data);
    this.total += data.length;
    return this;
  }

  string(s: string, max = 0xffffffff): this {
    return this.opaque(Buffer.from(s, 'utf8'), max);
  }

  optional<T>(v: T | undefined | null, item: (w: XdrWriter, v: T) => void): this {
    if (v === undefined || v === null) return this.bool(false);
    this.bool(true);
    item(this, v);
    return this;
  }

  array<T>(items: readonly T[], item: (w: XdrWriter, v: T) => void, max = 0xffffffff): this {
    if (items.length > max) throw new XdrError('too-long', `array of ${items.length} elements exceeds its maximum of ${max}`);
    this.uint32(items.length);
    for (const v of items) item(this, v);
    return this;
  }

  private cut(): void {
    if (this.pos > this.mark) {
      const piece = this.buf.subarray(this.mark, this.pos);
      this.parts.push(piece);
      this.total += piece.length;
      this.mark = this.pos;
    }
  }

  /** The message as buffers, in order (the writer must not be used afterwards). */
  finish(): Buffer[] {
    this.cut();
    return this.parts;
  }

  /** The message as one buffer (tests, small messages). */
  toBuffer(): Buffer {
    const parts = this.finish();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}
