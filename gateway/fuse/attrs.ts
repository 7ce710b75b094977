/** Store attributes -> the stat / statvfs records fuse-native hands to the kernel. */
import fsp from 'node:fs/promises';
import type { FileAttr } from '../../capsule/types.js';
import type { FuseStat, FuseStatfs } from './native.js';

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;

/**
 * Preferred I/O size reported in st_blksize: tools such as cp size their buffers from it, and
 * a segment (1 MiB by default) is the unit the store reads and writes.
 */
export const PREFERRED_IO = 1 << 20;

export function toStat(a: FileAttr): FuseStat {
  return {
    mode: (a.type === 'dir' ? S_IFDIR : S_IFREG) | (a.mode & 0o7777),
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    nlink: a.nlink,
    ino: a.ino,
    blksize: PREFERRED_IO,
    // st_blocks counts 512-byte units of *allocated* data, so `du` and `stat %b` show holes.
    blocks: Math.ceil(a.allocated / 512),
    atime: new Date(a.atimeMs),
    mtime: new Date(a.mtimeMs),
    ctime: new Date(a.ctimeMs),
  };
}

const U32 = 0xffffffff;

/**
 * statvfs of the data dir (where segments live, so that is the space that can run out).
 * fuse-native stores every field as uint32: grow the block size until the counts fit, so a
 * multi-TiB volume still reports correct byte totals.
 */
export async function statfsOf(dir: string | undefined): Promise<FuseStatfs> {
  let bsize = 1 << 20;
  let blocks = 1 << 30; // 1 PiB when there is no local data dir to measure
  let bfree = blocks;
  let bavail = blocks;
  let files = 1 << 30;
  let ffree = files;
  if (dir) {
    const st = await fsp.statfs(dir);
    bsize = st.bsize;
    blocks = st.blocks;
    bfree = st.bfree;
    bavail = st.bavail;
    files = st.files;
    ffree = st.ffree;
  }
  while (blocks > U32 && bsize < 2 ** 30) {
    bsize *= 2;
    blocks = Math.floor(blocks / 2);
    bfree = Math.floor(bfree / 2);
    bavail = Math.floor(bavail / 2);
  }
  const clamp = (n: number) => Math.max(0, Math.min(U32, Math.floor(n)));
  return {
    bsize,
    frsize: bsize,
    blocks: clamp(blocks),
    bfree: clamp(bfree),
    bavail: clamp(bavail),
    files: clamp(files),
    ffree: clamp(ffree),
    favail: clamp(ffree),
    fsid: 0,
    flag: 0,
    namemax: 255,
  };
}
