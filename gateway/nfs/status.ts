/**
 * nfsstat3 (RFC 1813 section 2.6) and the mapping from store errors onto it. NFSv4's nfsstat4
 * uses the same numbers for every status listed here, so a later v4 module can reuse the mapping.
 */
import { SpaceError } from '../../capsule/errors.js';

export const Nfs3Status = {
  OK: 0,
  PERM: 1,
  NOENT: 2,
  IO: 5,
  NXIO: 6,
  ACCES: 13,
  EXIST: 17,
  XDEV: 18,
  NODEV: 19,
  NOTDIR: 20,
  ISDIR: 21,
  INVAL: 22,
  FBIG: 27,
  NOSPC: 28,
  ROFS: 30,
  MLINK: 31,
  NAMETOOLONG: 63,
  NOTEMPTY: 66,
  DQUOT: 69,
  STALE: 70,
  REMOTE: 71,
  BADHANDLE: 10001,
  NOT_SYNC: 10002,
  BAD_COOKIE: 10003,
  NOTSUPP: 10004,
  TOOSMALL: 10005,
  SERVERFAULT: 10006,
  BADTYPE: 10007,
  JUKEBOX: 10008,
} as const;

/** An NFS-level failure with its status (thrown inside procedures, answered as that status). */
export class NfsError extends Error {
  constructor(readonly status: number, message = `nfs status ${status}`) {
    super(message);
    this.name = 'NfsError';
  }
}

const BY_ERRNO: Record<string, number> = {
  ENOENT: Nfs3Status.NOENT,
  EEXIST: Nfs3Status.EXIST,
  ENOTDIR: Nfs3Status.NOTDIR,
  EISDIR: Nfs3Status.ISDIR,
  ENOTEMPTY: Nfs3Status.NOTEMPTY,
  ENOSPC: Nfs3Status.NOSPC,
  EIO: Nfs3Status.IO,
  EROFS: Nfs3Status.ROFS,
  EINVAL: Nfs3Status.INVAL,
  EACCES: Nfs3Status.ACCES,
  EFBIG: Nfs3Status.FBIG,
  // The store answers EBUSY for "changing under you, retry" and for a store being closed:
  // JUKEBOX tells the client to retry later instead of failing the application's call.
  EBUSY: Nfs3Status.JUKEBOX,
};

export interface MappedStatus {
  status: number;
  /** Not an error the store or this view raised on purpose: worth an error log line. */
  unexpected: boolean;
}

/** Store errors by their POSIX name; NfsError by its status; anything else SERVERFAULT. */
export function statusOf(err: unknown): MappedStatus {
  if (err instanceof NfsError) return { status: err.status, unexpected: false };
  let errno: unknown;
  if (err instanceof SpaceError) errno = err.errno;
  else {
    // an error rebuilt from another copy of the module or a remote store has the same shape
    const e = err as { name?: unknown; errno?: unknown } | null;
    if (e && (e.name === 'SpaceError' || e.name === 'IntegrityError')) errno = e.errno;
  }
  const status = typeof errno === 'string' ? BY_ERRNO[errno] : undefined;
  if (status === undefined) return { status: Nfs3Status.SERVERFAULT, unexpected: true };
  return { status, unexpected: false };
}
