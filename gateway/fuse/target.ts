/** The directory a view is placed on: it must be an empty directory with nothing mounted on it. */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { SpaceError } from '../../capsule/errors.js';
import type { Logger } from '../../capsule/log.js';
import { isStaleFuseMount, mountAt, unmountKernel } from './kernel.js';

function busy(message: string, details: Record<string, unknown>): SpaceError {
  return new SpaceError('FAILED_PRECONDITION', message, { errno: 'EBUSY', details });
}

/**
 * Make `target` (absolute) an empty directory with nothing mounted on it, creating it if missing,
 * or explain why it cannot be. A dead FUSE mount (its server process is gone, every access
 * fails with ENOTCONN) is removed first: that is what a crashed gateway leaves behind.
 */
export async function prepareTarget(target: string, log: Logger): Promise<void> {
  const existing = mountAt(target);
  if (existing) {
    if (!existing.fstype.startsWith('fuse') || !(await isStaleFuseMount(target))) {
      throw busy(`target ${target} is busy: a ${existing.fstype} filesystem (${existing.source}) is already mounted there`, { target, fstype: existing.fstype });
    }
    log.warn('fuse.stale-mount', { target, fstype: existing.fstype, source: existing.source, msg: 'removing a dead FUSE mount left by a stopped process' });
    await unmountKernel(target, { retries: 1, logger: log });
    if (mountAt(target)) throw busy(`target ${target} is busy: a dead FUSE mount there could not be removed`, { target });
  }
  let st: fs.Stats;
  try {
    st = await fsp.stat(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new SpaceError('FAILED_PRECONDITION', `target ${target}: ${(e as Error).message}`, { errno: 'EINVAL', cause: e, details: { target } });
    }
    await fsp.mkdir(target, { recursive: true, mode: 0o755 });
    return;
  }
  if (!st.isDirectory()) throw new SpaceError('FAILED_PRECONDITION', `target ${target} is not a directory`, { errno: 'ENOTDIR', details: { target } });
  const entries = await fsp.readdir(target);
  if (entries.length > 0) throw busy(`target ${target} is busy: the directory is not empty (${entries.length} entries)`, { target });
}
