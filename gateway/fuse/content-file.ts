/**
 * The fallback view where kernel FUSE is unavailable (no /dev/fuse in an unprivileged container,
 * no binding): the capsule's files are copied into the target as plain read-only files. It is a
 * copy taken at mount time, not a projection: later changes to the capsule do not appear, and
 * nothing written there reaches the capsule (files and directories are made read-only to say so).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { CapsuleApi } from '../../capsule/api.js';

export type CopyStore = Pick<CapsuleApi, 'readdir' | 'readStream'>;

export interface CopyReport {
  files: number;
  dirs: number;
  bytes: number;
}

/** Copy every file of the capsule's live head into `target` (an existing empty directory). */
export async function placeContentCopy(store: CopyStore, capsuleId: string, target: string): Promise<CopyReport> {
  const report: CopyReport = { files: 0, dirs: 0, bytes: 0 };
  try {
    await copyDir(store, capsuleId, '', target, report);
    await fsp.chmod(target, 0o555);
  } catch (e) {
    await removeContentCopy(target).catch(() => {});
    throw e;
  }
  return report;
}

async function copyDir(store: CopyStore, id: string, rel: string, dir: string, report: CopyReport): Promise<void> {
  for (const e of await store.readdir(id, rel)) {
    const childRel = rel ? `${rel}/${e.name}` : e.name;
    const dest = path.join(dir, e.name);
    if (e.attr.type === 'dir') {
      await fsp.mkdir(dest, { mode: 0o755 });
      await copyDir(store, id, childRel, dest, report);
      await fsp.chmod(dest, 0o555);
      report.dirs++;
    } else {
      await copyFile(store, id, childRel, dest);
      await fsp.chmod(dest, (e.attr.mode & 0o555) | 0o444);
      report.files++;
      report.bytes += e.attr.size;
    }
    await fsp.utimes(dest, e.attr.atimeMs / 1000, e.attr.mtimeMs / 1000);
  }
}

/**
 * Copy one file, keeping holes: all-zero pieces (at most one segment each) are skipped and the
 * size is set at the end, so a sparse block-volume capsule stays sparse on the local disk.
 */
async function copyFile(store: CopyStore, id: string, rel: string, dest: string): Promise<void> {
  // 'wx': the target was checked empty; never follow or overwrite anything placed meanwhile.
  const fh = await fsp.open(dest, 'wx', 0o600);
  try {
    let pos = 0;
    for await (const piece of store.readStream(id, rel)) {
      if (!isZero(piece)) await fh.write(piece, 0, piece.length, pos);
      pos += piece.length;
    }
    await fh.truncate(pos);
  } finally {
    await fh.close();
  }
}

const zeros = Buffer.alloc(1 << 20);

function isZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += zeros.length) {
    const n = Math.min(zeros.length, b.length - off);
    if (!b.subarray(off, off + n).equals(zeros.subarray(0, n))) return false;
  }
  return true;
}

/** Remove a copy placed by placeContentCopy; `target` itself stays (as a mount point would). */
export async function removeContentCopy(target: string): Promise<void> {
  await makeWritable(target);
  for (const name of await fsp.readdir(target)) await fsp.rm(path.join(target, name), { recursive: true, force: true });
}

/** Read-only directories cannot lose their entries (for non-root users): open them up first. */
async function makeWritable(dir: string): Promise<void> {
  await fsp.chmod(dir, 0o755);
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) await makeWritable(path.join(dir, e.name));
  }
}
