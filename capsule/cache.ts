/**
 * A byte-budgeted LRU of verified plaintext segments (Map keeps insertion order). `onEvict` hears
 * of every buffer the cache lets go (evicted, replaced, deleted, cleared): the store returns
 * pooled memory that way (segment-pool.ts).
 */
export class SegmentCache {
  private readonly map = new Map<string, Buffer>();
  private bytes = 0;
  constructor(private readonly budget: number, private readonly onEvict: (data: Buffer) => void = () => {}) {}

  /** The byte budget. */
  get capacity(): number {
    return this.budget;
  }

  get(id: string): Buffer | undefined {
    const v = this.map.get(id);
    if (v) {
      this.map.delete(id);
      this.map.set(id, v);
    }
    return v;
  }

  /** False when the buffer is larger than the whole budget (then it is not kept). */
  set(id: string, data: Buffer): boolean {
    if (data.length > this.budget) return false;
    const old = this.map.get(id);
    if (old) {
      this.bytes -= old.length;
      this.map.delete(id);
      if (old !== data) this.onEvict(old);
    }
    this.map.set(id, data);
    this.bytes += data.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.budget) break;
      this.map.delete(k);
      this.bytes -= v.length;
      this.onEvict(v);
    }
    return true;
  }

  delete(id: string): void {
    const v = this.map.get(id);
    if (v) {
      this.bytes -= v.length;
      this.map.delete(id);
      this.onEvict(v);
    }
  }

  clear(): void {
    const all = [...this.map.values()];
    this.map.clear();
    this.bytes = 0;
    for (const v of all) this.onEvict(v);
  }
}
