/**
 * Segment files under <dir>/segments/<aa>/<id>. A segment is written to <dir>/tmp first and
 * renamed into place, so a reader never sees a half-written segment and a crash leaves only
 * temp files or unreferenced (orphan) segments, both removed by recovery.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { fromFsError } from './errors.js';
import type { SegmentSink } from './codec-pool.js';

/** Background deletes in flight at once (see removeDetached()). */
const REMOVE_LANES = 2;
/** Segment files synced at once by sync() (the thread pool has four threads by default). */
const SYNC_LANES = 4;
/** Spare segment files kept at most (of the segment size: 1 GiB of 1 MiB segments). */
export const DEFAULT_MAX_SPARES = 1024;

export class SegmentFiles {
  readonly root: string;
  readonly tmp: string;

  /**
   * Freed segment files kept in tmp/ for new segments to reuse (see takeSpare), newest last.
   *
   * Why: on ext4 without a journal (as here), creating a file within 30 s of deleting others in
   * its block group makes the inode allocator step over each recently deleted inode, reading
   * its inode-table block: deleting a 1 GiB file of 1024 segments and writing a new one cost
   * twice the CPU of writing it alone (perf: __ext4_new_inode -> recently_deleted). A reused
   * file needs no new inode and keeps its blocks. Other filesystems gain the block reuse.
   */
  private readonly spares: string[] = [];

  constructor(dir: string, readonly fsync: boolean, readonly direct = true, readonly maxSpares = DEFAULT_MAX_SPARES) {
    this.root = path.join(dir, 'segments');
    this.tmp = path.join(dir, 'tmp');
    fs.mkdirSync(this.root, { recursive: true });
    fs.mkdirSync(this.tmp, { recursive: true });
    // All 256 fan-out directories up front: no mkdir on the write path.
    for (let i = 0; i < 256; i++) fs.mkdirSync(path.join(this.root, i.toString(16).padStart(2, '0')), { recursive: true });
  }

  /** Where codec workers write segments (same layout, same rules). */
  get sink(): SegmentSink {
    return { root: this.root, tmp: this.tmp, fsync: this.fsync, direct: this.direct };
  }

  /** A spare file for a codec worker to write a new segment into (the caller owns it now). */
  takeSpare(): string | undefined {
    return this.spares.pop();
  }

  /**
   * Delete every spare file (at close, and to make room when the disk is full). Synchronous:
   * about 0.3 ms per megabyte file. Returns how many went.
   */
  dropSpares(): number {
    let n = 0;
    for (const f of this.spares.splice(0)) {
      try {
        fs.unlinkSync(f);
        n++;
      } catch {
        // gone already, or left for the next open's temp cleanup
      }
    }
    this.sparesDropped += n;
    return n;
  }

  /**
   * Spare files deleted by dropSpares so far. A write that found the disk full retries when
   * this moved since it started: the space may have come back through another write's drop.
   */
  sparesDropped = 0;

  pathOf(id: string): string {
    return path.join(this.root, id.slice(0, 2), id);
  }

  /**
   * Write a segment. It is written straight to its final name: nothing references it until the
   * metadata commit that follows, and a crash before that leaves an orphan that recovery removes,
   * so a rename adds nothing but a syscall. If the name exists already (two writers of the same
   * content), the blob is written aside and renamed over it, which is atomic for readers.
   */
  async write(id: string, blob: Buffer): Promise<void> {
    const dest = this.pathOf(id);
    try {
      await this.writeNew(dest, blob);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        await fsp.rm(dest, { force: true }).catch(() => {});
        throw fromFsError(e, `writing segment ${id.slice(0, 16)}`);
      }
      const tmp = path.join(this.tmp, `${id}.${crypto.randomBytes(6).toString('hex')}`);
      try {
        await this.writeNew(tmp, blob);
        await fsp.rename(tmp, dest);
      } catch (e2) {
        await fsp.rm(tmp, { force: true }).catch(() => {});
        throw fromFsError(e2, `writing segment ${id.slice(0, 16)}`);
      }
    }
  }

  private async writeNew(file: string, blob: Buffer): Promise<void> {
    const fh = await fsp.open(file, 'wx', 0o600);
    try {
      await fh.writeFile(blob);
      if (this.fsync) await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  /**
   * Make a segment file's data durable (no-op without fsync): queued, SYNC_LANES files at a time
   * on the thread pool. For segments a codec worker wrote with `syncLater`: each is synced here
   * as soon as it is written, while the workers go on encoding the next ones, and the commit
   * that references them waits for these promises. The device flushes are the same as with a
   * sync in the worker, but no worker waits for one.
   */
  sync(id: string): Promise<void> {
    if (!this.fsync) return Promise.resolve();
    const file = this.pathOf(id);
    return this.syncLanes.run(async () => {
      try {
        const fh = await fsp.open(file, 'r');
        try {
          await fh.datasync();
        } finally {
          await fh.close();
        }
      } catch (e) {
        throw fromFsError(e, `syncing segment file ${id.slice(0, 16)}`);
      }
    });
  }

  private readonly syncLanes = new Lanes(SYNC_LANES);

  /** The stored blob, or null when the file is missing. */
  async read(id: string): Promise<Buffer | null> {
    try {
      return await fsp.readFile(this.pathOf(id));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw fromFsError(e, `reading segment ${id.slice(0, 16)}`);
    }
  }

  exists(id: string): boolean {
    return fs.existsSync(this.pathOf(id));
  }

  /**
   * Take a segment file out of the store at once, for `removeDetached` to delete later: renamed
   * into tmp/ (same filesystem, so ~20 us where an unlink of a 1 MiB file takes ~300 us: the
   * freeing is the cost). Its name is free from then on: a writer of the same content writes a
   * new file, which the later delete never touches. A crash before that delete leaves a temp
   * file, removed at the next open. Returns the temp path, or null when there was no file.
   */
  detachSync(id: string): string | null {
    const detached = path.join(this.tmp, `${id}.freed-${process.pid}-${++this.detachedCount}`);
    try {
      fs.renameSync(this.pathOf(id), detached);
      return detached;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /**
   * Delete a detached file off the event loop: queued, and unlinked by the thread pool
   * REMOVE_LANES at a time (a large delete does not occupy every thread-pool thread); or, while
   * fewer than `maxSpares` are kept, kept as a spare for a new segment (takeSpare). The bytes
   * freed for the store; 0 when it could not be deleted (the next open's temp cleanup removes
   * it then).
   */
  removeDetached(file: string): Promise<number> {
    return this.removeLanes.run(() =>
      fsp.stat(file)
        .then(({ size }) => {
          if (this.spares.length < this.maxSpares) {
            this.spares.push(file);
            return size;
          }
          return fsp.unlink(file).then(() => size);
        })
        .catch(() => 0));
  }

  private detachedCount = 0;
  private readonly removeLanes = new Lanes(REMOVE_LANES);

  /**
   * Synchronous: GC unlinks in the same tick it drops the rows (no race with puts); or, while
   * fewer than `maxSpares` are kept, detaches the file as a spare (takeSpare).
   */
  removeSync(id: string): number {
    try {
      const p = this.pathOf(id);
      const size = fs.statSync(p).size;
      if (this.spares.length < this.maxSpares) {
        const spare = this.detachSync(id);
        if (spare) this.spares.push(spare);
        return spare ? size : 0;
      }
      fs.unlinkSync(p);
      return size;
    } catch {
      return 0;
    }
  }

  /** Every segment id on disk (recovery and fsck). */
  *listIds(): Generator<string> {
    for (const sub of fs.readdirSync(this.root)) {
      const d = path.join(this.root, sub);
      let names: string[];
      try {
        names = fs.readdirSync(d);
      } catch {
        continue;
      }
      for (const n of names) yield n;
    }
  }

  clearTmp(): number {
    this.spares.length = 0;
    let n = 0;
    for (const f of fs.readdirSync(this.tmp)) {
      fs.rmSync(path.join(this.tmp, f), { force: true });
      n++;
    }
    return n;
  }
}

/** Runs queued tasks, at most `width` at a time, in the order they came. */
class Lanes {
  private readonly queue: (() => void)[] = [];
  private running = 0;

  constructor(private readonly width: number) {}

  run<T>(task: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push(() => {
        this.running++;
        task().then(resolve, reject).finally(() => {
          this.running--;
          this.pump();
        });
      });
      this.pump();
    });
  }

  private pump(): void {
    while (this.running < this.width && this.queue.length) this.queue.shift()!();
  }
}
