/**
 * Segment files read with O_DIRECT into one reused, aligned buffer: for segments whose file bytes
 * are only an input (encrypted ones: the plaintext is the decipher's output), the read goes from
 * the device to that buffer without filling page-cache pages nobody will read again.
 *
 * Why: the store keeps verified plaintext in its own segment cache, and a view (FUSE, NFS,
 * NVMe) keeps what it serves in the kernel's cache of the view or in that segment cache; a
 * second copy of the ciphertext in the page cache is memory and CPU spent for nothing. Filling
 * it costs page allocation and LRU work per 4 KiB; measured on a cold 1 GiB read through a
 * capsule FUSE mount here, the serving process used 0.15-0.25 CPU s less per GiB with direct
 * reads and read 5-10 % faster. Storage engines that keep their own cache (BlueStore, Longhorn's
 * replicas) read their data files this way.
 *
 * Only sequential reads (streams and read-ahead) go this way. A random reader keeps the page
 * cache: it holds a working set larger than the store's segment cache (uniform 4 KiB reads over
 * 1 GiB through a 64 MiB segment cache ran at 60 % of their IOPS with every segment read direct).
 *
 * Unencrypted segments the store caches are read into a slot of its segment pool (readInto: the
 * slot is page-aligned, so O_DIRECT works there too) and their plaintext stays a view of it.
 *
 * The buffers are ordinary 4 KiB pages. On this project's test VM the virtual disk charges per
 * page: a 1 MiB O_DIRECT read took ~0.6 ms into 4 KiB pages and ~0.15-0.2 ms into huge pages.
 * Node cannot ask for huge pages (no madvise) except through glibc's `glibc.malloc.hugetlb`
 * tunable for malloc'd SharedArrayBuffers; cold NFS reads were not faster with it (their pace is
 * set elsewhere: bench/README.md), so the pool keeps WebAssembly memory.
 *
 * How: the whole file, its length rounded up to the alignment, is read through an O_DIRECT
 * descriptor into WebAssembly memory (page-aligned by construction); the kernel stops at the end
 * of the file. A filesystem that refuses O_DIRECT (EINVAL at open or at the first read: tmpfs,
 * some FUSE or overlay filesystems) makes the reader fall back to ordinary reads for good.
 */
import fs from 'node:fs';
import { ALIGN, O_DIRECT, alignedBuffer, directIoWanted, openOrRefused, refusesDirect } from './direct-io.js';

export class SegmentFileReader {
  private aligned: Buffer | null = null;
  private buffered = Buffer.alloc(0);
  /** False once this filesystem refused O_DIRECT (or the platform has none). */
  private direct: boolean;

  constructor(direct: boolean) {
    this.direct = directIoWanted(direct);
  }

  get usesDirectIo(): boolean {
    return this.direct;
  }

  /**
   * The whole of `file`, in a buffer this reader reuses: valid until its next read. A file that
   * shrank underneath comes back short (decoding reports the damage); ENOENT and other errors
   * throw.
   */
  readAll(file: string): Buffer {
    return this.read(file, (bytes, direct) => {
      if (direct) return this.alignedFor(bytes);
      if (this.buffered.length < bytes) this.buffered = Buffer.allocUnsafeSlow(Math.max(bytes, 2 * this.buffered.length));
      return this.buffered;
    })!;
  }

  /**
   * The whole of `file`, read into `into` (page-aligned: a segment pool slot), or null when it
   * does not fit there. Otherwise as readAll.
   */
  readInto(file: string, into: Buffer): Buffer | null {
    return this.read(file, (bytes) => (bytes <= into.length ? into : null));
  }

  /** `bufferFor(bytes, direct)`: where to read (null: nowhere, the file does not fit). */
  private read(file: string, bufferFor: (bytes: number, direct: boolean) => Buffer | null): Buffer | null {
    if (this.direct) {
      const got = this.tryDirect(file, bufferFor);
      if (got !== undefined) return got;
    }
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = bufferFor(size, false);
      return buf && readUntilEnd(fd, buf, size, size);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Undefined when O_DIRECT is refused here; other errors throw. */
  private tryDirect(file: string, bufferFor: (bytes: number, direct: boolean) => Buffer | null): Buffer | null | undefined {
    const fd = openOrRefused(() => this.openDirect(file));
    if (fd === null) {
      this.direct = false;
      return undefined;
    }
    try {
      const size = fs.fstatSync(fd).size;
      const span = Math.ceil(size / ALIGN) * ALIGN;
      const buf = bufferFor(span, true);
      return buf && readUntilEnd(fd, buf, size, span);
    } catch (e) {
      if (!refusesDirect(e)) throw e;
      this.direct = false; // refused at the read (an alignment this filesystem wants)
      return undefined;
    } finally {
      fs.closeSync(fd);
    }
  }

  /** O_DIRECT open for reading (a seam for tests: a filesystem that refuses it). */
  protected openDirect(file: string): number {
    return fs.openSync(file, fs.constants.O_RDONLY | O_DIRECT!);
  }

  /** The aligned buffer (a seam for tests: a misaligned one). */
  protected alignedFor(bytes: number): Buffer {
    return (this.aligned = alignedBuffer(this.aligned, bytes));
  }
}

/** Read from offset 0 until `size` bytes or end of file, asking for up to `span` (≥ size) at a time. */
export function readUntilEnd(fd: number, buf: Buffer, size: number, span: number): Buffer {
  let off = 0;
  while (off < size) {
    const n = fs.readSync(fd, buf, off, span - off, off);
    if (n === 0) break; // truncated underneath us
    off += n;
  }
  return buf.subarray(0, Math.min(off, size));
}
