/**
 * Bytes received on a stream, queued as the chunks they arrived in, for framers that cut whole
 * messages out of any slicing of the stream. A message inside one chunk is handed out as a view
 * (no copy); one spanning chunks is copied once. Copies touch only the chunks a message needs,
 * so a peer trickling single bytes costs linear, not quadratic, time.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private total = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  get length(): number {
    return this.total;
  }

  /** The first `n` bytes (n <= length), without consuming them. */
  peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of this.chunks) {
      off += c.copy(out, off, 0, Math.min(c.length, n - off));
      if (off === n) break;
    }
    return out;
  }

  /** Consume and return the first `n` bytes (n <= length). */
  take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      let used = 0;
      while (off < n) {
        const c = this.chunks[used]!;
        const k = Math.min(c.length, n - off);
        c.copy(out, off, 0, k);
        off += k;
        if (k === c.length) used++;
        else this.chunks[used] = c.subarray(k);
      }
      this.chunks.splice(0, used);
    }
    this.total -= n;
    return out;
  }
}
