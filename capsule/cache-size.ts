/**
 * How much verified plaintext a serving process keeps in the store's segment cache.
 *
 * A library user or a one-shot command gets the store's small default (64 MiB). A process that
 * serves views to other hosts (the gateway, `spacectl project nfs|nvme`) gets a share of the
 * memory it may use, the way storage daemons size their own caches (ZFS's ARC, BlueStore's
 * cache): an eighth of the cgroup limit (or of RAM when there is none), between 64 MiB and
 * 4 GiB. Without it every read of a file larger than 64 MiB reads, verifies and hands over each
 * segment again, at three to four times the CPU of serving it from memory; nfs-ganesha and the
 * kernel's nfsd serve the same warm reads from the page cache.
 *
 * SPACE_CACHE_BYTES ("512MiB", "2GiB", bytes) overrides the computed size.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseSize } from './policy.js';
import { SpaceError } from './errors.js';

const MiB = 1 << 20;
export const MIN_SERVER_CACHE = 64 * MiB;
export const MAX_SERVER_CACHE = 4096 * MiB;
const SHARE = 8;

/** The memory this process may use: its cgroup's limit (v2, then v1) or else all of RAM. */
export function memoryLimitBytes(read: (file: string) => string = (f) => fs.readFileSync(f, 'utf8'), total = os.totalmem()): number {
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    let text: string;
    try {
      text = read(file).trim();
    } catch {
      continue;
    }
    const n = Number(text);
    if (text !== 'max' && Number.isSafeInteger(n) && n > 0) return Math.min(n, total);
    if (text === 'max' || Number.isFinite(n)) return total; // no limit (v1 says so with a huge number)
  }
  return total;
}

/** The segment cache for a serving process (see above). Throws on a malformed override. */
export function serverCacheBytes(env: NodeJS.ProcessEnv = process.env, limit: () => number = () => memoryLimitBytes()): number {
  const override = env.SPACE_CACHE_BYTES;
  if (override !== undefined && override !== '') {
    const n = parseSize(override);
    if (n === null) throw new SpaceError('INVALID_ARGUMENT', `SPACE_CACHE_BYTES must be a size such as 512MiB or 2GiB (got ${JSON.stringify(override)})`);
    return n;
  }
  return Math.min(MAX_SERVER_CACHE, Math.max(MIN_SERVER_CACHE, Math.floor(limit() / SHARE / MiB) * MiB));
}
