/**
 * What direct-write.ts and direct-read.ts share: the alignment O_DIRECT wants, page-aligned
 * buffers, and telling "this filesystem refuses O_DIRECT" (EINVAL) from real errors.
 */
import fs from 'node:fs';

/** Covers 512- and 4096-byte logical blocks and the page size. */
export const ALIGN = 4096;
const WASM_PAGE = 64 << 10;
export const O_DIRECT = fs.constants.O_DIRECT as number | undefined;

/** Whether direct I/O is asked for and the platform has O_DIRECT at all. */
export function directIoWanted(direct: boolean): boolean {
  return direct && typeof O_DIRECT === 'number' && O_DIRECT !== 0;
}

/** Whether an error is the kernel refusing O_DIRECT here (at open, or an alignment at I/O). */
export function refusesDirect(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'EINVAL';
}

/**
 * The descriptor `open` returns, or null when the filesystem refuses O_DIRECT; other errors throw.
 */
export function openOrRefused(open: () => number): number | null {
  try {
    return open();
  } catch (e) {
    if (!refusesDirect(e)) throw e;
    return null;
  }
}

/**
 * `current` when it holds `bytes`, else a new page-aligned buffer that does: WebAssembly memory,
 * the one kind of ArrayBuffer whose start is page-aligned by construction.
 */
export function alignedBuffer(current: Buffer | null, bytes: number): Buffer {
  if (current && current.length >= bytes) return current;
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE));
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer);
}
