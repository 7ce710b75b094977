/**
 * SpaceError <-> gRPC status. The status code carries SpaceError.code by the same name; the
 * errno and the structured details travel in trailing metadata so a client can rebuild the
 * exact error (a FUSE view over a remote gateway needs the errno, `spacectl` the details).
 */
import * as grpc from '@grpc/grpc-js';
import { IntegrityError, SpaceError, type Errno, type ErrorCode } from '../capsule/errors.js';

export const ERRNO_KEY = 'space-errno';
// Binary (-bin) because details may hold non-ASCII file names.
export const DETAILS_KEY = 'space-error-details-bin';
const MAX_DETAILS_BYTES = 8 * 1024;

const ERROR_CODES: readonly ErrorCode[] = [
  'INVALID_ARGUMENT', 'NOT_FOUND', 'ALREADY_EXISTS', 'RESOURCE_EXHAUSTED', 'DATA_LOSS',
  'FAILED_PRECONDITION', 'PERMISSION_DENIED', 'UNAVAILABLE', 'INTERNAL',
];
const ERRNOS: readonly Errno[] = [
  'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ENOTEMPTY', 'ENOSPC', 'EIO', 'EROFS', 'EINVAL', 'EACCES', 'EBUSY', 'EFBIG',
];

/** The error object grpc-js turns into a status: `{ code, details, metadata }`. */
export interface StatusError {
  code: grpc.status;
  details: string;
  metadata: grpc.Metadata;
}

/** SpaceError -> status. Anything else is INTERNAL (the caller logs it; we never leak stacks). */
export function toStatus(err: unknown): StatusError {
  const metadata = new grpc.Metadata();
  if (!(err instanceof SpaceError)) {
    metadata.set(ERRNO_KEY, 'EIO');
    return { code: grpc.status.INTERNAL, details: `internal error: ${(err as Error)?.message ?? String(err)}`, metadata };
  }
  metadata.set(ERRNO_KEY, err.errno);
  const json = safeJson(err.details);
  if (json !== undefined && Buffer.byteLength(json) <= MAX_DETAILS_BYTES) metadata.set(DETAILS_KEY, Buffer.from(json));
  return { code: grpc.status[err.code], details: err.message, metadata };
}

function safeJson(v: Record<string, unknown>): string | undefined {
  if (!v || Object.keys(v).length === 0) return undefined;
  try {
    return JSON.stringify(v);
  } catch {
    return undefined; // details with cycles or BigInts: the message still says what happened
  }
}

/** Status codes with no SpaceError of the same name, mapped to the nearest meaning. */
function codeFromStatus(code: grpc.status): ErrorCode {
  const name = grpc.status[code] as string | undefined;
  if (name && (ERROR_CODES as readonly string[]).includes(name)) return name as ErrorCode;
  switch (code) {
    case grpc.status.UNIMPLEMENTED: return 'FAILED_PRECONDITION';
    case grpc.status.UNAUTHENTICATED: return 'PERMISSION_DENIED';
    case grpc.status.CANCELLED:
    case grpc.status.DEADLINE_EXCEEDED: return 'UNAVAILABLE';
    case grpc.status.OUT_OF_RANGE: return 'INVALID_ARGUMENT';
    default: return 'INTERNAL';
  }
}

/** A grpc-js client error -> SpaceError (an IntegrityError when the details allow it). */
export function fromStatus(err: unknown): SpaceError {
  if (err instanceof SpaceError) return err;
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e?.code !== 'number') {
    return new SpaceError('INTERNAL', (err as Error)?.message ?? String(err), { cause: err });
  }
  const code = codeFromStatus(e.code);
  const md = e.metadata;
  const errnoRaw = md?.get(ERRNO_KEY)[0];
  const errno = typeof errnoRaw === 'string' && (ERRNOS as readonly string[]).includes(errnoRaw) ? (errnoRaw as Errno) : undefined;
  let details: Record<string, unknown> = {};
  const raw = md?.get(DETAILS_KEY)[0];
  if (Buffer.isBuffer(raw)) {
    try {
      details = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
    } catch { /* keep the message; details are a bonus */ }
  }
  const message = e.details || e.message || grpc.status[e.code] || 'error';
  if (code === 'DATA_LOSS' && typeof details.capsule === 'string' && typeof details.file === 'string' &&
      typeof details.offset === 'number' && typeof details.reason === 'string') {
    const ie = new IntegrityError(details.capsule, details.file, details.offset, details.reason,
      typeof details.segment === 'string' ? details.segment : undefined);
    // Only when it says exactly what the server said: never reword an error.
    if (ie.message === message) return ie;
  }
  return new SpaceError(code, message, { errno, details, cause: err });
}
