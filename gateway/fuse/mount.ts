/**
 * One kernel FUSE mount of one capsule at one directory.
 *
 * Mount options, and why:
 *  - big_writes, max_write=1048576: without big_writes the kernel splits every write into 4 KiB
 *    requests. With libfuse 2.9 the request size is capped at 128 KiB anyway (libfuse2 cannot
 *    negotiate the kernel's max_pages, and its receive buffer is 128 KiB + header), so 1 MiB
 *    application writes arrive as 128 KiB requests; max_write asks for more should the stack
 *    ever allow it. max_read=1048576 likewise lifts the read-side cap to the same ceiling.
 *  - use_ino: the store's inode numbers reach stat(2), so they are stable across remounts (git,
 *    rsync and backup tools key on st_ino).
 *  - default_permissions: the kernel enforces mode/uid/gid from getattr, as on a local disk.
 *  - ro mounts add the kernel `ro` flag (EROFS before any request reaches us) and auto_cache:
 *    pages stay cached across opens and are dropped when mtime/size change. kernel_cache is not
 *    used even read-only: the live head this view shows can be written through another view of
 *    the same gateway (NFS, NVMe/TCP, gRPC), and kernel_cache would keep serving the old pages.
 *  - rw mounts use neither: the page cache is dropped on every open, so data written behind the
 *    kernel's back is never served stale.
 *  - fsname=space:<capsule id>, subtype=space: the mount shows as "fuse.space" in mount tables.
 */
import path from 'node:path';
import { SpaceError } from '../../capsule/errors.js';
import { silentLogger, type Logger } from '../../capsule/log.js';
import { mountAt, unmountKernel, type UnmountOptions, type UnmountResult } from './kernel.js';
import { createSpaceFuse, fuseAvailability, type SpaceFuse } from './native.js';
import { createFuseOps, type FuseStats, type FuseStore } from './ops.js';
import { prepareTarget } from './target.js';

export type MountableStore = FuseStore & {
  resolveId(ref: string): string;
  /** The store's data dir: statfs reports its free space. */
  readonly dir?: string;
};

export interface FuseMountOptions {
  store: MountableStore;
  ref: string;
  target: string;
  readOnly: boolean;
  logger?: Logger;
  /** Let users other than the mounting one in (CSI: pods run as other uids). Default false. */
  allowOther?: boolean;
  /** A store call running longer than this is answered ETIMEDOUT (default 60 s). */
  opTimeoutMs?: number;
  /** Give up when the kernel has not completed FUSE_INIT within this time (default 15 s). */
  mountTimeoutMs?: number;
  unmount?: Omit<UnmountOptions, 'logger'>;
  /** libfuse debug output on stderr. */
  debug?: boolean;
}

const IO_SIZE = 1 << 20;

export class FuseMount {
  readonly since = new Date().toISOString();
  private closing: Promise<UnmountResult> | undefined;
  private lastKernelResult: UnmountResult = 'gone';

  private constructor(
    readonly capsuleId: string,
    readonly target: string,
    readonly readOnly: boolean,
    readonly stats: FuseStats,
    readonly mountOptions: string[],
    private readonly store: MountableStore,
    private readonly log: Logger,
    private fuse: SpaceFuse | undefined,
  ) {}

  /**
   * Mount `ref` at `target` (created if missing). Errors: UNAVAILABLE when FUSE cannot be used
   * here, NOT_FOUND for an unknown capsule, EBUSY (FAILED_PRECONDITION) when the target is a live
   * mount or a non-empty directory. A dead FUSE mount left by a crashed process is cleaned first.
   */
  static async mount(o: FuseMountOptions): Promise<FuseMount> {
    const avail = fuseAvailability();
    if (!avail.ok) throw new SpaceError('UNAVAILABLE', `FUSE is unavailable on this host: ${avail.reason}`, { details: { reason: avail.reason } });
    const capsuleId = o.store.resolveId(o.ref);
    const target = path.resolve(o.target);
    const log = (o.logger ?? silentLogger).child({ capsule: capsuleId, target });
    const unmountOpts: UnmountOptions = { ...o.unmount, logger: log };
    await prepareTarget(target, log);

    const { ops, stats } = createFuseOps({ store: o.store, capsuleId, readOnly: o.readOnly, logger: log, statfsDir: o.store.dir });
    const extra = ['use_ino', 'big_writes', `max_write=${IO_SIZE}`, ...(o.readOnly ? ['ro'] : [])];
    const m = new FuseMount(capsuleId, target, o.readOnly, stats, extra, o.store, log, undefined);
    const fuse = createSpaceFuse(target, ops, {
      timeout: o.opTimeoutMs ?? 60_000,
      force: false, // prepareTarget already cleaned a stale mount, with a probe that cannot hang
      mkdir: false,
      debug: o.debug ?? false,
      allowOther: o.allowOther ?? false,
      defaultPermissions: true,
      maxRead: IO_SIZE,
      fsname: `space:${capsuleId}`,
      subtype: 'space',
      autoCache: o.readOnly,
    }, extra, async (t) => {
      m.lastKernelResult = await unmountKernel(t, unmountOpts);
    });
    try {
      await withTimeout(new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve()))), o.mountTimeoutMs ?? 15_000, 'the kernel did not start the FUSE session');
    } catch (e) {
      if (mountAt(target)) await unmountKernel(target, { retries: 1, logger: log }).catch(() => {});
      throw new SpaceError('UNAVAILABLE', `mounting capsule ${capsuleId} at ${target} failed: ${(e as Error).message}`, { errno: 'EIO', cause: e, details: { target } });
    }
    m.fuse = fuse;
    log.info('fuse.mounted', { readOnly: o.readOnly, options: extra });
    return m;
  }

  /**
   * Commit buffered writes, then unmount (plain first; lazily if the target stays busy). A failed
   * commit keeps the mount (the data is still buffered and the user can retry) unless `force`,
   * used at shutdown, where unmounting matters more and the store retries the flush on close.
   */
  unmount(opts: { force?: boolean } = {}): Promise<UnmountResult> {
    this.closing ??= this.doUnmount(opts.force ?? false).finally(() => {
      if (this.fuse) this.closing = undefined; // failed: allow another attempt
    });
    return this.closing;
  }

  private async doUnmount(force: boolean): Promise<UnmountResult> {
    const fuse = this.fuse;
    if (!fuse) return 'gone';
    if (!this.readOnly) {
      try {
        await this.store.flush(this.capsuleId);
      } catch (e) {
        this.log.error('fuse.unmount.flush-failed', { err: e, force });
        if (!force) throw e;
      }
    }
    await new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve()))).catch((e: Error) => {
      throw new SpaceError('INTERNAL', `unmounting ${this.target} failed: ${e.message}`, { errno: 'EBUSY', cause: e, details: { target: this.target } });
    });
    this.fuse = undefined;
    // Writes that raced with the unmount (or arrive later through a lazily detached mount's
    // open handles) are committed by this flush or by the store's own flush on close.
    if (!this.readOnly) await this.store.flush(this.capsuleId).catch((e) => this.log.error('fuse.unmount.flush-failed', { err: e }));
    this.log.info('fuse.unmounted', { how: this.lastKernelResult, stats: this.stats });
    return this.lastKernelResult;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
