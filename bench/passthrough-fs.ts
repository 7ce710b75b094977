/**
 * A minimal pass-through FUSE filesystem: mirrors BACKING at MOUNTPOINT using plain fs file
 * descriptors. It is the baseline for bench/fuse.ts: same binding (fuse-native), same mount
 * options as the capsule mount (gateway/fuse/mount.ts, rw), same process model (own process,
 * JS thread serving the kernel), so the difference to a capsule mount is the store's work.
 *
 *   node dist/bench/passthrough-fs.js BACKING MOUNTPOINT
 *
 * Prints "ready" once mounted; on SIGUSR2 prints one JSON line {"cpu": {user, system} (µs), "ops"}
 * (cumulative); unmounts and exits on SIGTERM or SIGINT.
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

type Cb = (code: number) => void;

interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
  _fuseOptions(): string;
}
interface FuseClass {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): FuseInstance;
  prototype: FuseInstance;
}

/**
 * The options a rw capsule mount uses (gateway/fuse/mount.ts, FuseMount.mount): fuse-native
 * options plus options fuse-native does not know, appended to its -o string. Kept in sync by
 * hand; bench/fuse.ts prints both mounts' kernel options side by side.
 */
const CAPSULE_RW_FUSE_OPTIONS = {
  timeout: 60_000,
  force: false,
  mkdir: false,
  debug: false,
  allowOther: false,
  defaultPermissions: true,
  maxRead: 1 << 20,
  autoCache: false,
};
const CAPSULE_RW_EXTRA_OPTIONS = ['use_ino', 'big_writes', `max_write=${1 << 20}`];

/** Negative errno for a Node fs error (Node's err.errno is already negative on Linux). */
function code(err: NodeJS.ErrnoException | null): number {
  if (!err) return 0;
  return typeof err.errno === 'number' && err.errno < 0 ? err.errno : -5; // EIO
}

function main(): void {
  const [backingArg, mntArg] = process.argv.slice(2);
  if (!backingArg || !mntArg) {
    console.error('usage: passthrough-fs.js BACKING MOUNTPOINT');
    process.exit(2);
  }
  const backing = path.resolve(backingArg);
  const mnt = path.resolve(mntArg);
  const real = (p: string) => path.join(backing, p);
  const Fuse = createRequire(import.meta.url)('fuse-native') as FuseClass;

  const counts = { reads: 0, writes: 0, maxWriteBytes: 0 };
  const ops = {
    getattr(p: string, cb: (c: number, st?: fs.Stats) => void) {
      fs.lstat(real(p), (err, st) => (err ? cb(code(err)) : cb(0, st)));
    },
    readdir(p: string, cb: (c: number, names?: string[]) => void) {
      fs.readdir(real(p), (err, names) => (err ? cb(code(err)) : cb(0, ['.', '..', ...names])));
    },
    open(p: string, flags: number, cb: (c: number, fd?: number) => void) {
      fs.open(real(p), flags, (err, fd) => (err ? cb(code(err)) : cb(0, fd)));
    },
    create(p: string, mode: number, cb: (c: number, fd?: number) => void) {
      fs.open(real(p), fs.constants.O_CREAT | fs.constants.O_RDWR, mode & 0o7777, (err, fd) => (err ? cb(code(err)) : cb(0, fd)));
    },
    read(_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) {
      counts.reads++;
      fs.read(fd, buf, 0, len, pos, (err, n) => cb(err ? code(err) : n));
    },
    write(_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) {
      counts.writes++;
      if (len > counts.maxWriteBytes) counts.maxWriteBytes = len;
      fs.write(fd, buf, 0, len, pos, (err, n) => cb(err ? code(err) : n));
    },
    flush(_p: string, _fd: number, cb: Cb) {
      cb(0);
    },
    fsync(_p: string, datasync: number, fd: number, cb: Cb) {
      (datasync ? fs.fdatasync : fs.fsync)(fd, (err) => cb(code(err)));
    },
    release(_p: string, fd: number, cb: Cb) {
      fs.close(fd, (err) => cb(code(err)));
    },
    truncate(p: string, size: number, cb: Cb) {
      fs.truncate(real(p), size, (err) => cb(code(err)));
    },
    ftruncate(_p: string, fd: number, size: number, cb: Cb) {
      fs.ftruncate(fd, size, (err) => cb(code(err)));
    },
    unlink(p: string, cb: Cb) {
      fs.unlink(real(p), (err) => cb(code(err)));
    },
    mkdir(p: string, mode: number, cb: Cb) {
      fs.mkdir(real(p), { mode }, (err) => cb(code(err)));
    },
    rmdir(p: string, cb: Cb) {
      fs.rmdir(real(p), (err) => cb(code(err)));
    },
    rename(src: string, dest: string, cb: Cb) {
      fs.rename(real(src), real(dest), (err) => cb(code(err)));
    },
    chmod(p: string, mode: number, cb: Cb) {
      fs.chmod(real(p), mode, (err) => cb(code(err)));
    },
    utimens(p: string, atime: number, mtime: number, cb: Cb) {
      fs.utimes(real(p), new Date(atime), new Date(mtime), (err) => cb(code(err)));
    },
  };

  const fuse = new Fuse(mnt, ops, { ...CAPSULE_RW_FUSE_OPTIONS, fsname: `passthrough:${backing}`, subtype: 'passthrough' });
  const base = Fuse.prototype._fuseOptions;
  fuse._fuseOptions = function (this: FuseInstance): string {
    const built = base.call(this);
    return built ? `${built},${CAPSULE_RW_EXTRA_OPTIONS.join(',')}` : `-o${CAPSULE_RW_EXTRA_OPTIONS.join(',')}`;
  };

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    fuse.unmount((err) => {
      if (err) console.error(`passthrough: unmount failed: ${err.message}`);
      process.exit(err ? 1 : 0);
    });
  };
  process.on('SIGUSR2', () => process.stdout.write(JSON.stringify({ cpu: process.cpuUsage(), ops: counts }) + '\n'));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  fuse.mount((err) => {
    if (err) {
      console.error(`passthrough: mount failed: ${err.message}`);
      process.exit(1);
    }
    process.stdout.write('ready\n');
  });
}

main();
