/**
 * One error type for the whole data plane. `code` follows gRPC status names so the
 * gateway maps errors 1:1; `errno` is the POSIX errno a filesystem view (FUSE, NFS) returns.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'RESOURCE_EXHAUSTED'
  | 'DATA_LOSS'
  | 'FAILED_PRECONDITION'
  | 'PERMISSION_DENIED'
  | 'UNAVAILABLE'
  | 'INTERNAL';

export type Errno =
  | 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'ENOSPC'
  | 'EIO' | 'EROFS' | 'EINVAL' | 'EACCES' | 'EBUSY' | 'EFBIG';

const DEFAULT_ERRNO: Record<ErrorCode, Errno> = {
  INVALID_ARGUMENT: 'EINVAL',
  NOT_FOUND: 'ENOENT',
  ALREADY_EXISTS: 'EEXIST',
  RESOURCE_EXHAUSTED: 'ENOSPC',
  DATA_LOSS: 'EIO',
  FAILED_PRECONDITION: 'EINVAL',
  PERMISSION_DENIED: 'EACCES',
  UNAVAILABLE: 'EBUSY',
  INTERNAL: 'EIO',
};

export class SpaceError extends Error {
  readonly code: ErrorCode;
  readonly errno: Errno;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, opts: { errno?: Errno; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'SpaceError';
    this.code = code;
    this.errno = opts.errno ?? DEFAULT_ERRNO[code];
    this.details = opts.details ?? {};
  }
}

export const invalid = (msg: string, details?: Record<string, unknown>) =>
  new SpaceError('INVALID_ARGUMENT', msg, { details });
export const notFound = (msg: string, errno: Errno = 'ENOENT') => new SpaceError('NOT_FOUND', msg, { errno });
export const exists = (msg: string) => new SpaceError('ALREADY_EXISTS', msg);

/** An integrity failure: always names where the damage is, never returns wrong bytes. */
export class IntegrityError extends SpaceError {
  constructor(readonly capsule: string, readonly file: string, readonly offset: number, reason: string, readonly segment?: string) {
    super('DATA_LOSS', `integrity failure in capsule ${capsule}, file ${file} at offset ${offset}: ${reason}`, {
      errno: 'EIO',
      details: { capsule, file, offset, segment, reason },
    });
    this.name = 'IntegrityError';
  }
}

/** Map a Node.js filesystem error from the segment directory to a SpaceError (full disk first). */
export function fromFsError(err: unknown, what: string): SpaceError {
  if (err instanceof SpaceError) return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new SpaceError('RESOURCE_EXHAUSTED', `no space left on device while ${what}`, { errno: 'ENOSPC', cause: err });
  }
  if (code === 'SQLITE_FULL') {
    return new SpaceError('RESOURCE_EXHAUSTED', `metadata store is full while ${what}`, { errno: 'ENOSPC', cause: err });
  }
  if (code === 'EROFS') return new SpaceError('FAILED_PRECONDITION', `read-only file system while ${what}`, { errno: 'EROFS', cause: err });
  return new SpaceError('INTERNAL', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
