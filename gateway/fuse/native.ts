/**
 * Typed access to fuse-native 2.2.6 (CommonJS, no type declarations), plus the two places where
 * its defaults do not fit a storage gateway:
 *
 *  - mount options: fuse-native only forwards a fixed list of `-o` options and has no
 *    big_writes / max_write / use_ino / ro; without big_writes the kernel sends 4 KiB writes.
 *    `SpaceFuse` appends our own options to the `-o` string it builds.
 *  - unmount: fuse-native always unmounts lazily (`fusermount -uz`), which hides a busy mount.
 *    `SpaceFuse` runs a caller-supplied kernel-unmount strategy instead and then releases the
 *    native loop handle exactly as fuse-native does.
 *
 * Both hooks override underscore methods of the pinned 2.2.6 release (see its index.js); the
 * version is checked at load time so an upgrade fails loudly instead of silently mis-mounting.
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

type Cb = (code: number) => void;

export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino?: number;
  dev?: number;
  rdev?: number;
  blksize?: number;
  /** 512-byte blocks actually allocated. */
  blocks?: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
}

/** All fields are written to uint32 slots by fuse-native: callers must keep them below 2^32. */
export interface FuseStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

/**
 * The operations fuse-native calls. Callbacks take a 0 / negative errno first; read and write
 * take the byte count (or a negative errno) as their only argument.
 */
export interface FuseOperations {
  init?(cb: Cb): void;
  statfs?(path: string, cb: (code: number, st?: FuseStatfs) => void): void;
  getattr?(path: string, cb: (code: number, st?: FuseStat) => void): void;
  readdir?(path: string, cb: (code: number, names?: string[], stats?: FuseStat[]) => void): void;
  open?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
  opendir?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
  create?(path: string, mode: number, cb: (code: number, fd?: number) => void): void;
  read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void): void;
  write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void): void;
  flush?(path: string, fd: number, cb: Cb): void;
  fsync?(path: string, datasync: number, fd: number, cb: Cb): void;
  fsyncdir?(path: string, datasync: number, fd: number, cb: Cb): void;
  release?(path: string, fd: number, cb: Cb): void;
  releasedir?(path: string, fd: number, cb: Cb): void;
  truncate?(path: string, size: number, cb: Cb): void;
  ftruncate?(path: string, fd: number, size: number, cb: Cb): void;
  utimens?(path: string, atime: number, mtime: number, cb: Cb): void;
  chmod?(path: string, mode: number, cb: Cb): void;
  chown?(path: string, uid: number, gid: number, cb: Cb): void;
  unlink?(path: string, cb: Cb): void;
  rename?(src: string, dest: string, cb: Cb): void;
  mkdir?(path: string, mode: number, cb: Cb): void;
  rmdir?(path: string, cb: Cb): void;
}

/** The subset of fuse-native's constructor options we use (see _fuseOptions in its index.js). */
export interface FuseNativeOptions {
  /** Per-operation timeout in ms (fuse-native answers ETIMEDOUT); false disables it. */
  timeout?: number | false;
  force?: boolean;
  mkdir?: boolean;
  debug?: boolean;
  allowOther?: boolean;
  defaultPermissions?: boolean;
  maxRead?: number;
  fsname?: string;
  subtype?: string;
  kernelCache?: boolean;
  autoCache?: boolean;
}

interface FuseInstance {
  readonly mnt: string;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

interface FuseClass {
  new (mnt: string, ops: FuseOperations, opts: FuseNativeOptions): FuseInstance;
  readonly prototype: FuseInstance;
  [errno: string]: unknown;
}

/** What the native addon exports that we call directly. */
interface FuseBinding {
  fuse_native_unmount(mnt: string, thread: Buffer): void;
}

const SUPPORTED_VERSION = '2.2.6';

interface Loaded {
  Fuse: FuseClass;
  binding: FuseBinding;
}

let loaded: Loaded | Error | undefined;

function load(): Loaded {
  if (loaded instanceof Error) throw loaded;
  if (loaded) return loaded;
  try {
    const require = createRequire(import.meta.url);
    const main = require.resolve('fuse-native');
    const dir = path.dirname(main);
    const version = (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
    if (version !== SUPPORTED_VERSION) {
      throw new Error(`fuse-native ${version} is installed; gateway/fuse overrides internals of ${SUPPORTED_VERSION} only`);
    }
    const Fuse = require('fuse-native') as FuseClass;
    // node-gyp-build resolves the same prebuilt .node file fuse-native loaded; require caches
    // addons by file name, so this is the very same module instance.
    const binding = createRequire(main)('node-gyp-build')(dir) as FuseBinding;
    loaded = { Fuse, binding };
    return loaded;
  } catch (e) {
    loaded = e instanceof Error ? e : new Error(String(e));
    throw loaded;
  }
}

/** The negative errno fuse-native uses for a POSIX error name (Fuse.ENOENT = -2, ...). */
export function fuseErrnoOf(name: string): number | undefined {
  const v = load().Fuse[name];
  return typeof v === 'number' ? v : undefined;
}

/** Kernel unmount strategy run by SpaceFuse on close (see unmount.ts). */
export type KernelUnmount = (target: string) => Promise<void>;

export interface SpaceFuse {
  readonly mnt: string;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

/**
 * Create a fuse-native instance with extra `-o` options and our unmount strategy. Throws when the
 * binding cannot be loaded (callers check fuseAvailability() first).
 */
export function createSpaceFuse(target: string, ops: FuseOperations, opts: FuseNativeOptions, extraOptions: string[], kernelUnmount: KernelUnmount): SpaceFuse {
  const { Fuse, binding } = load();
  type Internals = FuseInstance & { _fuseOptions(): string; _thread: Buffer };
  const base = Fuse.prototype as unknown as Internals;

  const instance = new Fuse(target, ops, opts) as Internals & { _close(cb: (err: Error | null) => void): void };
  instance._fuseOptions = function (this: Internals): string {
    const built = base._fuseOptions.call(this);
    if (extraOptions.length === 0) return built;
    return built ? `${built},${extraOptions.join(',')}` : `-o${extraOptions.join(',')}`;
  };
  // nanoresource calls _close from unmount(); same contract as fuse-native's own _close.
  instance._close = function (this: Internals, cb: (err: Error | null) => void): void {
    kernelUnmount(this.mnt).then(
      () => {
        try {
          binding.fuse_native_unmount(this.mnt, this._thread);
        } catch (e) {
          cb(e as Error);
          return;
        }
        cb(null);
      },
      (err: Error) => cb(err),
    );
  };
  return instance;
}

export type Availability = { ok: true } | { ok: false; reason: string };

let availability: Availability | undefined;

/**
 * Can this process serve kernel FUSE mounts? Needs read/write access to /dev/fuse, the native
 * binding, and fusermount (used to unmount). Cached: this does not change while we run.
 */
export function fuseAvailability(): Availability {
  if (availability) return availability;
  availability = probe();
  return availability;
}

function probe(): Availability {
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch (e) {
    return { ok: false, reason: `/dev/fuse is not usable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  try {
    load();
  } catch (e) {
    return { ok: false, reason: `the fuse-native binding cannot be loaded: ${(e as Error).message}` };
  }
  const dirs = (process.env.PATH ?? '/usr/bin:/bin').split(':');
  if (!dirs.some((d) => d && fs.existsSync(path.join(d, 'fusermount')))) {
    return { ok: false, reason: 'fusermount is not on PATH (apt install fuse)' };
  }
  return { ok: true };
}
