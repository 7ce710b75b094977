/** A byte-budgeted LRU of verified plaintext segments (Map keeps insertion order). */
export class SegmentCache {
  private readonly map = new Map<string, Buffer>();
  private bytes = 0;
  constructor(private readonly budget: number) {}

  get(id: string): Buffer | undefined {
    const v = this.map.get(id);
    if (v) {
      this.map.delete(id);
      this.map.set(id, v);
    }
    return v;
  }

  set(id: string, data: Buffer): void {
    if (data.length > this.budget) return;
    const old = this.map.get(id);
    if (old) {
      this.bytes -= old.length;
      this.map.delete(id);
    }
    this.map.set(id, data);
    this.bytes += data.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.budget) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }

  delete(id: string): void {
    const v = this.map.get(id);
    if (v) {
      this.bytes -= v.length;
      this.map.delete(id);
    }
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }
}
