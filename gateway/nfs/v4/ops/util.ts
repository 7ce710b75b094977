/**
 * Helpers the operation modules share: component names, write checks, the caller's ids,
 * change_info4.
 */
import { MAX_NAME_BYTES } from '../../../../capsule/paths.js';
import type { FileAttr } from '../../../../capsule/types.js';
import type { Target } from '../../context.js';
import type { RpcCall } from '../../rpc.js';
import { NfsError, statusOf } from '../../status.js';
import type { XdrReader, XdrWriter } from '../../xdr.js';
import { changeOf } from '../attrs4.js';
import { NFS4_OPAQUE_LIMIT, Status4 } from '../constants.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const NOBODY = 65534;

/** component4 as raw bytes: checked later, so a bad name is a status rather than BADXDR. */
export const readComponent = (r: XdrReader): Buffer => r.opaque(NFS4_OPAQUE_LIMIT * 4);

/**
 * A name for the store (RFC 8881 section 14.2): non-empty, valid UTF-8 (INVAL otherwise), at
 * most 255 bytes (NAMETOOLONG), and neither "." nor ".." nor containing "/" or NUL (BADNAME).
 */
export function checkName(raw: Buffer): string {
  if (raw.length === 0) throw new NfsError(Status4.INVAL, 'empty component name');
  if (raw.length > MAX_NAME_BYTES) throw new NfsError(Status4.NAMETOOLONG, 'component longer than 255 bytes');
  let name: string;
  try {
    name = utf8.decode(raw);
  } catch {
    throw new NfsError(Status4.INVAL, 'component is not valid UTF-8');
  }
  if (name === '.' || name === '..' || name.includes('/') || name.includes('\0')) throw new NfsError(Status4.BADNAME, `component ${JSON.stringify(name)} is not a file name`);
  return name;
}

export function writable(t: Target): void {
  if (t.exp.readOnly) throw new NfsError(Status4.ROFS, `export ${t.exp.path} is read-only`);
}

export const parentPath = (p: string): string => {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
};

export function caller(call: RpcCall): { uid: number; gid: number; gids: number[] } {
  const a = call.authSys;
  return a ? { uid: a.uid, gid: a.gid, gids: a.gids } : { uid: NOBODY, gid: NOBODY, gids: [] };
}

/** change_info4: not atomic (the two reads bracket the change but others may slip between). */
export function writeChangeInfo(w: XdrWriter, before: FileAttr, after: FileAttr): void {
  w.bool(false).uint64(changeOf(before)).uint64(changeOf(after));
}

export const isNotFound = (e: unknown): boolean => statusOf(e).status === Status4.NOENT;
