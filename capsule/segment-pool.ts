/**
 * The memory the segment cache keeps plaintext in: page-aligned slots carved from a few large
 * shared WebAssembly memories, reused once nothing refers to them any more.
 *
 * Why: in this kind of VM the first touch of fresh memory is the largest cost of a cold read. A
 * 1 GiB sequential read that allocated a new megabyte per segment paid ~1.1 CPU s/GiB in its
 * codec workers (page-cache fill, copy, first-touch faults); reading the same files with
 * O_DIRECT into memory that had been used before cost ~0.15 (measured, see bench/README.md).
 * Storage daemons that keep their own cache (BlueStore, ZFS's ARC) keep its memory for the same
 * reason. Shared memory lets a codec worker read a segment file straight into its slot and
 * verify it there: the event loop only learns that the bytes are ready.
 *
 * Safety: a slot is reused only when every holder has let go. Holders are counted: the load
 * that fills it, the cache that keeps it, and every reader that borrowed it (`hold`, released
 * once the bytes are on the wire or copied). A buffer handed to code that cannot say when it is
 * done with it is "kept": its slot is never reused, and the slab it lives in is forgotten once
 * none of its slots is in use, so the garbage collector frees it when the last view goes. A
 * missing release therefore costs capacity, never correctness.
 */

import type { SlotRef } from './codec-pool.js';

/** Covers 512- and 4096-byte logical blocks (O_DIRECT) and the page size. */
export const SLOT_ALIGN = 4096;
const WASM_PAGE = 64 << 10;
/** Slabs are this large (or one slot, when a slot is larger). */
const SLAB_BYTES = 64 << 20;

class Slab {
  free = 0;
  retired = 0;
  dropped = false;
  constructor(readonly memory: SharedArrayBuffer, readonly slotBytes: number, readonly count: number) {}
}

export class PoolSlot {
  /** Holders: the load filling it, the cache, borrowers. */
  refs = 1;
  /** Handed to code that never says when it is done: never reused. */
  kept = false;
  /** Has held a segment before (a take of it is a reuse). */
  used = false;
  constructor(readonly slab: Slab, readonly offset: number) {}

  get memory(): SharedArrayBuffer {
    return this.slab.memory;
  }

  /** What a codec worker needs to read into this slot. */
  ref(): SlotRef {
    return { memory: this.slab.memory, offset: this.offset, bytes: this.slab.slotBytes };
  }
}

export interface PoolStats {
  /** Bytes of all slabs the pool holds. */
  bytes: number;
  cap: number;
  freeSlots: number;
  /** Slots taken and not yet given back (held by a load, the cache or a reader). */
  inUse: number;
  /** Slots taken since the start, and how many of those had held a segment before. */
  taken: number;
  reused: number;
  /** take() found no free slot and the cap was reached. */
  refused: number;
  kept: number;
}

/**
 * Bytes borrowed from the pool (or plain bytes that need no release). `release` when done;
 * `keep` when the bytes go to code that cannot say when it is done (the slot is never reused).
 */
export class HeldBytes {
  private done = false;
  constructor(readonly data: Buffer, private readonly slot?: PoolSlot, private readonly pool?: SegmentPool) {}

  release(): void {
    if (this.done) return;
    this.done = true;
    if (this.slot) this.pool!.release(this.slot);
  }

  /** The bytes, for good: the slot is never reused. */
  keep(): Buffer {
    if (this.slot && !this.done) this.slot.kept = true;
    this.release();
    return this.data;
  }

  /** The same hold over a part of the bytes. */
  subarray(from: number, to: number): HeldBytes {
    if (this.done) throw new Error('subarray of released bytes');
    this.done = true; // the hold moves to the part
    return new HeldBytes(this.data.subarray(from, to), this.slot, this.pool);
  }
}

export class SegmentPool {
  private readonly freeBySize = new Map<number, PoolSlot[]>();
  /** Which slot a cached plaintext Buffer lives in (the cache hands out that same object). */
  private readonly slotOfBuffer = new WeakMap<Buffer, PoolSlot>();
  private stats = { bytes: 0, inUse: 0, taken: 0, reused: 0, refused: 0, kept: 0 };

  constructor(private cap = 0) {}

  /** The slot size for segments of `segmentSize` plaintext bytes with `overhead` bytes of framing. */
  static slotBytesFor(segmentSize: number, overhead: number): number {
    return Math.ceil((segmentSize + overhead) / SLOT_ALIGN) * SLOT_ALIGN;
  }

  /** Let the pool grow to at least `bytes` (each store asks for its cache budget). */
  raiseCap(bytes: number): void {
    this.cap = Math.max(this.cap, bytes);
  }

  /** A slot of `slotBytes` (held once, by the caller), or null when the pool is at its cap. */
  take(slotBytes: number): PoolSlot | null {
    if (slotBytes % SLOT_ALIGN !== 0) throw new Error(`slot size ${slotBytes} is not a multiple of ${SLOT_ALIGN}`);
    const free = this.freeBySize.get(slotBytes);
    const reused = free?.pop();
    if (reused) {
      reused.refs = 1;
      reused.slab.free--;
      this.stats.inUse++;
      this.stats.taken++;
      if (reused.used) this.stats.reused++;
      return reused;
    }
    const count = Math.max(1, Math.floor(SLAB_BYTES / slotBytes));
    const pages = Math.ceil((count * slotBytes) / WASM_PAGE);
    if (this.stats.bytes + pages * WASM_PAGE > this.cap) {
      this.stats.refused++;
      return null;
    }
    let memory: SharedArrayBuffer;
    try {
      memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer as unknown as SharedArrayBuffer;
    } catch {
      this.stats.refused++; // no address space or no shared memory here: callers use their own buffers
      return null;
    }
    const slab = new Slab(memory, slotBytes, count);
    this.stats.bytes += pages * WASM_PAGE;
    const list = free ?? [];
    this.freeBySize.set(slotBytes, list);
    // Handed out from the start of the slab first (pop takes from the end).
    for (let i = count - 1; i >= 1; i--) list.push(new PoolSlot(slab, i * slotBytes));
    slab.free = count - 1;
    this.stats.inUse++;
    this.stats.taken++;
    return new PoolSlot(slab, 0);
  }

  /** Remember that `plain` (a view into `slot`) is the buffer callers will present. */
  register(plain: Buffer, slot: PoolSlot): void {
    this.slotOfBuffer.set(plain, slot);
  }

  slotOf(buf: Buffer): PoolSlot | undefined {
    return this.slotOfBuffer.get(buf);
  }

  /** One more holder of the slot behind `buf` (when it has one); release through the result. */
  hold(buf: Buffer): HeldBytes {
    const slot = this.slotOfBuffer.get(buf);
    if (!slot) return new HeldBytes(buf);
    slot.refs++;
    return new HeldBytes(buf, slot, this);
  }

  addRef(slot: PoolSlot): void {
    slot.refs++;
  }

  release(slot: PoolSlot): void {
    if (slot.refs <= 0) throw new Error('segment pool slot released more often than held');
    if (--slot.refs > 0) return;
    this.stats.inUse--;
    const slab = slot.slab;
    if (slot.kept) {
      this.stats.kept++;
      slab.retired++;
    } else if (!slab.dropped) {
      slot.used = true;
      slab.free++;
      this.freeBySize.get(slab.slotBytes)!.push(slot);
    }
    if (slab.retired > 0 && slab.free + slab.retired === slab.count) this.drop(slab);
  }

  /**
   * Forget a slab whose slots are all free or kept: its free slots leave the free list and its
   * bytes no longer count, so a new slab can replace it. Kept views still pin its memory until
   * the garbage collector sees the last of them go.
   */
  private drop(slab: Slab): void {
    if (slab.dropped) return;
    slab.dropped = true;
    this.stats.bytes -= Math.ceil((slab.count * slab.slotBytes) / WASM_PAGE) * WASM_PAGE;
    const list = this.freeBySize.get(slab.slotBytes)!;
    this.freeBySize.set(slab.slotBytes, list.filter((s) => s.slab !== slab));
  }

  snapshot(): PoolStats {
    let freeSlots = 0;
    for (const l of this.freeBySize.values()) freeSlots += l.length;
    return { ...this.stats, cap: this.cap, freeSlots };
  }
}

let shared: SegmentPool | undefined;

/** The process's pool: stores share it, as they share the codec workers. */
export function sharedSegmentPool(): SegmentPool {
  return (shared ??= new SegmentPool());
}
