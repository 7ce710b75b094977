/**
 * A block namespace backed by one file of a capsule (by default `content`): LBAs map straight
 * onto the file's bytes, so reads and writes land on the capsule's segments (copy-on-write after
 * a snapshot). Blocks past the end of a shorter file read as zeros.
 */
import crypto from 'node:crypto';
import type { Store } from '../../capsule/store.js';
import { HeldBytes } from '../../capsule/segment-pool.js';
import type { ChangeEvent } from '../../capsule/types.js';

export interface NamespaceSpec {
  ref: string;
  file?: string;
  readOnly?: boolean;
  /** log2 of the logical block size: 9 (512 B, default) or 12 (4 KiB). */
  lbaShift?: number;
}

export class BlockNamespace {
  readonly capsuleId: string;
  readonly file: string;
  readonly readOnly: boolean;
  readonly lbaShift: number;
  readonly nguid: Buffer;
  readonly uuid: Buffer;
  readonly eui64: Buffer;
  private sizeBytes = 0;
  private closed = false;
  private readonly onChange: (ev: ChangeEvent) => void;
  /** Data units (512 000 bytes each in the SMART log) and commands, for the health log. */
  readonly counters = { bytesRead: 0n, bytesWritten: 0n, reads: 0n, writes: 0n };
  /** The capsule's segment size (its policy), and the last write queued on each segment (see write). */
  private segmentSize = 0;
  private readonly segmentWrites = new Map<number, Promise<void>>();
  /**
   * Commands that change the file (write, flush, deallocate) still running. A queue whose host
   * went away keeps its commands running to the end, as a kernel target does: whoever takes the
   * namespace away, or a host that needs to know the old queue's writes have landed, waits for
   * this to drain (see idle).
   */
  private changing = 0;
  private idleWaiters: (() => void)[] = [];

  private constructor(readonly store: Store, spec: NamespaceSpec, private readonly resized: () => void) {
    this.capsuleId = store.resolveId(spec.ref);
    this.file = spec.file ?? 'content';
    this.readOnly = spec.readOnly ?? false;
    this.lbaShift = spec.lbaShift ?? 9;
    // Stable identifiers per (capsule, file): the same namespace after any restart.
    const h = crypto.createHash('sha256').update(`space-nvme:${this.capsuleId}:${this.file}`).digest();
    this.nguid = h.subarray(0, 16);
    this.eui64 = h.subarray(16, 24);
    this.uuid = this.file === 'content' && /^[0-9a-f-]{36}$/i.test(this.capsuleId)
      ? Buffer.from(this.capsuleId.replace(/-/g, ''), 'hex')
      : Buffer.from(h.subarray(8, 24));
    this.onChange = (ev) => {
      if (ev.capsule === this.capsuleId && (ev.kind === 'written' || ev.kind === 'meta')) void this.refreshSize();
    };
    // One listener per exported namespace: a gateway exporting many is not a leak.
    const max = store.events.getMaxListeners();
    if (max > 0) store.events.setMaxListeners(max + 1);
    store.events.on('change', this.onChange);
  }

  static async open(store: Store, spec: NamespaceSpec, resized: () => void = () => {}): Promise<BlockNamespace> {
    if (spec.lbaShift !== undefined && spec.lbaShift !== 9 && spec.lbaShift !== 12) throw new Error(`block size must be 512 or 4096 bytes`);
    const ns = new BlockNamespace(store, spec, resized);
    try {
      const attr = await store.getattr(ns.capsuleId, ns.file);
      if (attr.type !== 'file') throw new Error(`${ns.file} in capsule ${ns.capsuleId} is not a file`);
      ns.sizeBytes = attr.size;
      ns.segmentSize = (await store.get(ns.capsuleId)).policy.segmentSize;
    } catch (e) {
      ns.close();
      throw e;
    }
    return ns;
  }

  get blockSize(): number {
    return 1 << this.lbaShift;
  }

  /** Namespace size in logical blocks (a trailing partial block is not exposed). */
  get blocks(): number {
    return Math.floor(this.sizeBytes / this.blockSize);
  }

  /** The file size changed (grown by an expansion, or replaced by a put): tell controllers. */
  private async refreshSize(): Promise<void> {
    try {
      const attr = await this.store.getattr(this.capsuleId, this.file);
      if (attr.size !== this.sizeBytes) {
        const before = this.blocks;
        this.sizeBytes = Math.max(attr.size, 0);
        if (this.blocks !== before) this.resized();
      }
    } catch {
      // deleted or renamed: leave the size; I/O will report the error
    }
  }

  /**
   * Read `length` bytes at `offset`; zeros past end of file. Synchronous when the data is cached.
   * Borrowed: release() once the bytes are on the wire, so the store can reuse the memory under
   * them (capsule/segment-pool.ts).
   */
  read(offset: number, length: number): HeldBytes | Promise<HeldBytes> {
    const hit = this.store.tryReadSyncHeld(this.capsuleId, this.file, offset, length);
    if (hit) return this.pad(hit, length);
    return this.store.readHeld(this.capsuleId, this.file, offset, length).then((b) => this.pad(b, length));
  }

  /** Short (end of file): a zero-filled copy of the full length, and the borrowed bytes go back. */
  private pad(b: HeldBytes, length: number): HeldBytes {
    if (b.data.length === length) return b;
    const out = Buffer.alloc(length);
    b.data.copy(out);
    b.release();
    return new HeldBytes(out);
  }

  /**
   * Buffer a write (durable: and flush). Writes that touch the same segment run one after the
   * other: the first write into a segment that is not buffered yet loads its committed bytes, and
   * writes queued behind it find the segment buffered, instead of each loading (and allocating) a
   * copy of it; a host's sequential 128 KiB writes at queue depth 16 would otherwise load every
   * segment up to 8 times. NVMe gives no ordering between commands in flight, so any order is
   * correct; this one is submission order.
   */
  write(offset: number, data: Uint8Array, durable: boolean): Promise<void> {
    return this.tracked(this.queueWrite(offset, data, durable));
  }

  private async queueWrite(offset: number, data: Uint8Array, durable: boolean): Promise<void> {
    const seg = this.segmentSize;
    const first = Math.floor(offset / seg);
    const last = data.length > 0 ? Math.floor((offset + data.length - 1) / seg) : first;
    const before: Promise<void>[] = [];
    for (let idx = first; idx <= last; idx++) {
      const p = this.segmentWrites.get(idx);
      if (p) before.push(p);
    }
    const done = (before.length ? Promise.all(before) : Promise.resolve()).then(() => this.store.writeBuffered(this.capsuleId, this.file, offset, data));
    const settled = done.then(() => {}, () => {}); // what later writes wait for: never rejects
    for (let idx = first; idx <= last; idx++) this.segmentWrites.set(idx, settled);
    try {
      await done;
    } finally {
      for (let idx = first; idx <= last; idx++) if (this.segmentWrites.get(idx) === settled) this.segmentWrites.delete(idx);
    }
    if (durable) await this.store.flush(this.capsuleId, this.file);
  }

  flush(): Promise<void> {
    return this.tracked(this.store.flush(this.capsuleId, this.file));
  }

  deallocate(offset: number, length: number): Promise<void> {
    return this.tracked(this.store.punchHole(this.capsuleId, this.file, offset, length));
  }

  /** Write, flush and deallocate commands still running. */
  get changesInFlight(): number {
    return this.changing;
  }

  /** Resolves once no write, flush or deallocate is running. */
  idle(): Promise<void> {
    if (this.changing === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private tracked<T>(p: Promise<T>): Promise<T> {
    this.changing++;
    const settle = () => {
      if (--this.changing > 0) return;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    };
    p.then(settle, settle);
    return p;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.events.off('change', this.onChange);
    const max = this.store.events.getMaxListeners();
    if (max > 1) this.store.events.setMaxListeners(max - 1);
  }
}
