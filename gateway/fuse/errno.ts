/**
 * Error -> negative errno for the FUSE reply. A SpaceError carries the POSIX name the store chose
 * (ENOENT, ENOTEMPTY, ENOSPC, EIO for integrity failures, ...); anything else is a bug or an
 * unexpected environment failure and becomes EIO, flagged so the caller logs it with context.
 */
import { SpaceError } from '../../capsule/errors.js';
import { fuseErrnoOf } from './native.js';

/** Linux values, used when the binding is not loaded (unit tests of the table, fallback). */
const LINUX: Record<string, number> = {
  EPERM: -1, ENOENT: -2, EIO: -5, EBADF: -9, EACCES: -13, EBUSY: -16, EEXIST: -17, EXDEV: -18, ENOTDIR: -20,
  EISDIR: -21, EINVAL: -22, EFBIG: -27, ENOSPC: -28, EROFS: -30, ENAMETOOLONG: -36, ENOSYS: -38, ENOTEMPTY: -39,
  ETIMEDOUT: -110,
};

export function errno(name: string): number {
  let v: number | undefined;
  try {
    v = fuseErrnoOf(name);
  } catch {
    v = undefined;
  }
  return v ?? LINUX[name] ?? LINUX.EIO!;
}

export interface MappedError {
  code: number;
  /** True when the error was not a SpaceError: log it, it explains an EIO the user will see. */
  unexpected: boolean;
}

/** A SpaceError, or one rebuilt by a remote client (same shape, possibly another module copy). */
function spaceErrno(err: unknown): string | undefined {
  if (err instanceof SpaceError) return err.errno;
  const e = err as { name?: unknown; errno?: unknown; code?: unknown } | null;
  if (e && (e.name === 'SpaceError' || e.name === 'IntegrityError') && typeof e.errno === 'string') return e.errno;
  return undefined;
}

export function mapError(err: unknown): MappedError {
  const name = spaceErrno(err);
  if (name === undefined) return { code: errno('EIO'), unexpected: true };
  return { code: errno(name), unexpected: false };
}
