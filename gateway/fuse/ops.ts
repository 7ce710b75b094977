/**
 * The FUSE operations table for one capsule. fuse-native calls these from the JS thread with a
 * path (always with a leading "/", which the store accepts) and a callback into the native
 * binding. Every operation goes through `serve`, which turns any throw or rejection into a
 * negative errno and replies exactly once: an exception escaping into the binding would leave
 * the kernel request unanswered (the calling process hangs) or crash the gateway.
 */
import path from 'node:path';
import type { CapsuleApi } from '../../capsule/api.js';
import type { Logger } from '../../capsule/log.js';
import type { SetAttr } from '../../capsule/types.js';
import type { HeldBytes } from '../../capsule/segment-pool.js';
import { statfsOf, toStat } from './attrs.js';
import { errno, mapError } from './errno.js';
import type { FuseOperations } from './native.js';

/** What a filesystem view needs from the store: the CapsuleApi tree calls plus write-back. */
export type FuseStore = Pick<CapsuleApi, 'getattr' | 'readdir' | 'truncate' | 'mkdir' | 'createFile' | 'unlink' | 'rmdir' | 'rename' | 'setattr'> & {
  /** Write into the store's dirty-segment buffer; durable only after flush. */
  writeBuffered(ref: string, path: string, offset: number, data: Uint8Array): Promise<number>;
  flush(ref: string, path?: string): Promise<void>;
  /**
   * Reads, borrowed and released once copied into the kernel's buffer, so the store can reuse
   * the memory under them (capsule/segment-pool.ts).
   */
  readHeld(ref: string, path: string, offset: number, length: number): Promise<HeldBytes>;
  /** Optional: the same for bytes already in memory, without a promise (undefined: use readHeld). */
  tryReadSyncHeld?(ref: string, path: string, offset: number, length: number): HeldBytes | undefined;
};

export interface FuseOpsOptions {
  store: FuseStore;
  capsuleId: string;
  readOnly: boolean;
  logger: Logger;
  /** Directory whose free space statfs reports (the store's data dir); large constants if unset. */
  statfsDir?: string;
}

/** Counters for tests and metrics (cheap: a few integer increments per call). */
export interface FuseStats {
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  maxWriteBytes: number;
  errors: number;
}

const O_ACCMODE = 3;

/**
 * FUSE paths are absolute ("/a/b", "/" for the root); the store accepts that too, but its
 * messages, logs and change events then differ from every other front end's ("a/b").
 */
const rel = (p: string) => p.replace(/^\/+/, '');
const NO_ID = 0xffffffff; // chown(2) passes (uid_t)-1 for "leave unchanged"

export function createFuseOps(o: FuseOpsOptions): { ops: FuseOperations; stats: FuseStats } {
  const { store, capsuleId: id } = o;
  const log = o.logger.child({ capsule: id });
  const stats: FuseStats = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, maxWriteBytes: 0, errors: 0 };
  const EROFS = errno('EROFS');
  const ENOENT = errno('ENOENT');
  const EIO = errno('EIO');

  // File handles carry no state: every operation is addressed by path, and the store keeps the
  // write-back buffer per file. A counter keeps handles distinct for debugging.
  let lastHandle = 0;
  const handle = () => (lastHandle = lastHandle >= 0x7fffffff ? 1 : lastHandle + 1);

  const failed = (op: string, p: string, err: unknown): number => {
    stats.errors++;
    const m = mapError(err);
    if (m.unexpected) log.error('fuse.op.failed', { op, path: p, err, msg: 'unexpected error answered with EIO' });
    else if (m.code === EIO) log.error('fuse.io-error', { op, path: p, err: (err as Error).message });
    return m.code;
  };

  /** Call into fuse-native without letting its exceptions reach our promise chain unhandled. */
  const answer = (op: string, p: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      log.error('fuse.reply.failed', { op, path: p, err: e });
    }
  };

  function serve<R>(op: string, p: string, fail: (code: number) => void, body: () => Promise<R>, ok: (r: R) => void): void {
    let run: Promise<R>;
    try {
      run = body();
    } catch (e) {
      run = Promise.reject(e);
    }
    run.then(
      (r) => answer(op, p, () => ok(r)),
      (e) => answer(op, p, () => fail(failed(op, p, e))),
    );
  }

  /** Mutations on a read-only view end here, before reaching the store. */
  const denied = (cb: (code: number) => void): boolean => {
    if (!o.readOnly) return false;
    cb(EROFS);
    return true;
  };

  /** Commit buffered writes of a file; one removed meanwhile has nothing left to commit. */
  const flushFile = async (p: string) => {
    try {
      await store.flush(id, rel(p));
    } catch (e) {
      if (mapError(e).code !== ENOENT) throw e;
    }
  };

  const ops: FuseOperations = {
    getattr(p, cb) {
      serve('getattr', p, cb, () => store.getattr(id, rel(p)), (a) => cb(0, toStat(a)));
    },

    readdir(p, cb) {
      serve('readdir', p, cb, async () => {
        const entries = await store.readdir(id, rel(p));
        const self = await store.getattr(id, rel(p));
        const parent = p === '/' ? self : await store.getattr(id, rel(path.posix.dirname(p)));
        return {
          names: ['.', '..', ...entries.map((e) => e.name)],
          stats: [toStat(self), toStat(parent), ...entries.map((e) => toStat(e.attr))],
        };
      }, (r) => cb(0, r.names, r.stats));
    },

    open(p, flags, cb) {
      if ((flags & O_ACCMODE) !== 0 && denied(cb)) return;
      cb(0, handle());
    },

    opendir(_p, _flags, cb) {
      cb(0, handle());
    },

    create(p, mode, cb) {
      if (denied(cb)) return;
      serve('create', p, cb, () => store.createFile(id, rel(p), mode & 0o7777), () => cb(0, handle()));
    },

    read(p, _fd, buf, len, pos, cb) {
      // Fast path: bytes already in memory are copied and answered without a promise.
      let hit: HeldBytes | undefined;
      try {
        hit = store.tryReadSyncHeld?.(id, rel(p), pos, len);
      } catch {
        hit = undefined; // the async path below reports the error properly
      }
      if (hit) {
        const n = copyOut(hit, buf, len);
        stats.reads++;
        stats.readBytes += n;
        return cb(n);
      }
      serve('read', p, cb, async () => {
        const data = await store.readHeld(id, rel(p), pos, len);
        // Copy before replying: fuse-native detaches `buf` once the reply is sent.
        const n = copyOut(data, buf, len);
        stats.reads++;
        stats.readBytes += n;
        return n;
      }, (n) => cb(n));
    },

    write(p, _fd, buf, len, pos, cb) {
      if (denied(cb)) return;
      serve('write', p, cb, async () => {
        // `buf` is libfuse's request buffer, valid until we reply; the store copies it into its
        // dirty segment before resolving.
        const n = await store.writeBuffered(id, rel(p), pos, buf.subarray(0, len));
        stats.writes++;
        stats.writeBytes += n;
        if (len > stats.maxWriteBytes) stats.maxWriteBytes = len;
        return n;
      }, (n) => cb(n));
    },

    // close(2) on every descriptor: commit so data is durable once close returns.
    flush(p, _fd, cb) {
      if (o.readOnly) return cb(0);
      serve('flush', p, cb, () => flushFile(p), () => cb(0));
    },

    fsync(p, _datasync, _fd, cb) {
      if (o.readOnly) return cb(0);
      serve('fsync', p, cb, () => flushFile(p), () => cb(0));
    },

    // Metadata changes are committed transactionally as they happen: nothing to sync.
    fsyncdir(_p, _datasync, _fd, cb) {
      cb(0);
    },

    release(p, _fd, cb) {
      if (o.readOnly) return cb(0);
      serve('release', p, cb, () => flushFile(p), () => cb(0));
    },

    releasedir(_p, _fd, cb) {
      cb(0);
    },

    truncate(p, size, cb) {
      if (denied(cb)) return;
      serve('truncate', p, cb, () => store.truncate(id, rel(p), size), () => cb(0));
    },

    ftruncate(p, _fd, size, cb) {
      if (denied(cb)) return;
      serve('ftruncate', p, cb, () => store.truncate(id, rel(p), size), () => cb(0));
    },

    chmod(p, mode, cb) {
      if (denied(cb)) return;
      serve('chmod', p, cb, () => store.setattr(id, rel(p), { mode: mode & 0o7777 }), () => cb(0));
    },

    chown(p, uid, gid, cb) {
      if (denied(cb)) return;
      const a: SetAttr = {};
      if (uid !== NO_ID && uid !== -1) a.uid = uid;
      if (gid !== NO_ID && gid !== -1) a.gid = gid;
      serve('chown', p, cb, () => store.setattr(id, rel(p), a), () => cb(0));
    },

    // libfuse 2.9 calls this only when both times are set (it resolves UTIME_NOW itself and
    // drops atime-only or mtime-only changes), and fuse-native 2.2.6 then passes the atime in
    // both arguments (its C glue copies l->atime twice). So `touch` and `touch -d` work, but an
    // mtime that differs from the atime (cp -p, tar, rsync -t) is stored as that atime.
    utimens(p, atime, mtime, cb) {
      if (denied(cb)) return;
      serve('utimens', p, cb, () => store.setattr(id, rel(p), { atimeMs: atime, mtimeMs: mtime }), () => cb(0));
    },

    mkdir(p, mode, cb) {
      if (denied(cb)) return;
      serve('mkdir', p, cb, () => store.mkdir(id, rel(p), mode & 0o7777), () => cb(0));
    },

    unlink(p, cb) {
      if (denied(cb)) return;
      serve('unlink', p, cb, () => store.unlink(id, rel(p)), () => cb(0));
    },

    rmdir(p, cb) {
      if (denied(cb)) return;
      serve('rmdir', p, cb, () => store.rmdir(id, rel(p)), () => cb(0));
    },

    rename(src, dest, cb) {
      if (denied(cb)) return;
      serve('rename', src, cb, () => store.rename(id, rel(src), rel(dest)), () => cb(0));
    },

    statfs(p, cb) {
      serve('statfs', p, cb, () => statfsOf(o.statfsDir), (s) => cb(0, s));
    },
  };
  return { ops: guarded(ops, log, EIO), stats };
}

/**
 * Last line of defence for the synchronous part of each handler (argument handling, a throwing
 * callback): the error is logged and, if possible, the request answered with EIO.
 */
function guarded(ops: FuseOperations, log: Logger, eio: number): FuseOperations {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(ops) as [string, (...a: unknown[]) => void][]) {
    out[name] = (...args: unknown[]) => {
      try {
        fn(...args);
      } catch (e) {
        log.error('fuse.op.threw', { op: name, path: typeof args[0] === 'string' ? args[0] : undefined, err: e });
        const cb = args[args.length - 1];
        try {
          if (typeof cb === 'function') (cb as (code: number) => void)(eio);
        } catch {
          // the binding refused the reply too; nothing more can be done for this request
        }
      }
    };
  }
  return out as FuseOperations;
}

/** Copy up to `len` bytes of a read into the kernel's buffer, then release them. */
function copyOut(data: HeldBytes, buf: Buffer, len: number): number {
  try {
    return data.data.copy(buf, 0, 0, Math.min(data.data.length, len));
  } finally {
    data.release();
  }
}
