/**
 * Write-back buffer for filesystem views. FUSE and NFS write in pieces of 4 KiB to 1 MiB; turning
 * each piece into a new 1 MiB segment would rewrite every segment many times. Pieces are patched
 * into an in-memory copy of the segment instead and committed together on flush (fsync, close,
 * memory pressure) — the same contract as a kernel page cache: durable after fsync.
 */
import { Coverage } from './coverage.js';

export class DirtyFile {
  /** segment index -> plaintext of the segment being edited (whole, unless in `unmerged`) */
  segs = new Map<number, Buffer>();
  /**
   * Buffered segments (in `segs` or `flushing`) whose committed base is not merged in yet:
   * only the covered bytes are theirs, the rest belongs to the committed extent (coverage.ts).
   * Keyed by the buffer, so the status moves with it between `segs` and `flushing`.
   */
  readonly unmerged = new WeakMap<Buffer, Coverage>();
  /** segments taken by a flush in progress; still visible to readers until committed */
  flushing = new Map<number, Buffer>();
  /**
   * Adopted segments whose memory goes back to their giver once committed (writeBuffered's
   * `release`). A reader that takes a view of a buffered segment removes it here (expose):
   * that memory is then left to the garbage collector, since the view may outlive the commit.
   */
  readonly releases = new WeakMap<Buffer, () => void>();
  /** The write-behind commit running for this file, if any; it settles when it ends (however). */
  writingBehind: Promise<void> | undefined;
  constructor(readonly capsule: string, readonly ino: number, readonly segSize: number, public size: number, public mtimeMs: number) {}

  bytes(): number {
    return (this.segs.size + this.flushing.size) * this.segSize;
  }

  lookup(idx: number): Buffer | undefined {
    return this.segs.get(idx) ?? this.flushing.get(idx);
  }

  /** A reader holds a view of `seg` that may outlive this file's use of it (see releases). */
  expose(seg: Buffer): Buffer {
    this.releases.delete(seg);
    return seg;
  }

  /** Bytes [from, to) of `seg` are its own now (written, or zeroed by a punch). */
  markSet(seg: Buffer, from: number, to: number): void {
    const cov = this.unmerged.get(seg);
    if (!cov) return;
    cov.add(from, to);
    if (cov.complete) this.unmerged.delete(seg);
  }

  /** Whether reading [from, to) of `seg` needs committed bytes that were never merged in. */
  lacks(seg: Buffer, from: number, to: number): boolean {
    const cov = this.unmerged.get(seg);
    return cov !== undefined && !cov.covers(from, to);
  }
}

export function dirtyKey(capsule: string, ino: number): string {
  return `${capsule}:${ino}`;
}
