/**
 * Which bytes of a buffered segment the writes have set, for a segment whose committed bytes
 * (its "base") were not loaded when the first write came.
 *
 * Why: a write of part of a committed segment used to load and verify the whole segment before
 * patching it. A sequential writer that goes on to overwrite the rest of the segment (an NVMe
 * host writing 128 KiB at a time, a FUSE or NFS client rewriting a file) paid a full segment
 * read for nothing. Now the base is merged in only when something needs the bytes the writes
 * did not set: a read of them, or the commit of a segment that stayed partly written.
 *
 * Ranges are half-open [from, to), sorted, disjoint and not adjacent. Bytes at or past
 * `baseLen` never come from the base (the committed extent is shorter than that), so a
 * segment whose ranges cover [0, baseLen) needs no merge.
 */
export class Coverage {
  private ranges: [number, number][] = [];

  constructor(readonly baseLen: number) {}

  /** Mark [from, to) as set by a write (or zeroed by a hole punch). */
  add(from: number, to: number): void {
    if (to <= from) return;
    const out: [number, number][] = [];
    let a = from;
    let b = to;
    let placed = false;
    for (const [x, y] of this.ranges) {
      if (y < a) out.push([x, y]);
      else if (x > b) {
        if (!placed) {
          out.push([a, b]);
          placed = true;
        }
        out.push([x, y]);
      } else {
        a = Math.min(a, x);
        b = Math.max(b, y);
      }
    }
    if (!placed) out.push([a, b]);
    this.ranges = out;
  }

  /** Whether every byte of [from, to) below baseLen was set by a write. */
  covers(from: number, to: number): boolean {
    const end = Math.min(to, this.baseLen);
    if (end <= from) return true;
    for (const [x, y] of this.ranges) if (x <= from && y >= end) return true;
    return false;
  }

  get complete(): boolean {
    return this.covers(0, this.baseLen);
  }

  /** The ranges below baseLen no write has set: where the base's bytes belong. */
  gaps(): [number, number][] {
    const out: [number, number][] = [];
    let at = 0;
    for (const [x, y] of this.ranges) {
      if (x >= this.baseLen) break;
      if (x > at) out.push([at, x]);
      at = Math.max(at, y);
    }
    if (at < this.baseLen) out.push([at, this.baseLen]);
    return out;
  }

  /** The set ranges (for overlaying them on the base). */
  set(): readonly (readonly [number, number])[] {
    return this.ranges;
  }

  clone(): Coverage {
    const c = new Coverage(this.baseLen);
    c.ranges = this.ranges.map(([x, y]) => [x, y]);
    return c;
  }
}
