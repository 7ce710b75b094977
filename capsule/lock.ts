/**
 * Owner lock of a data dir: exactly one process opens a store at a time (the head has one
 * writer). The lock file also records where that process serves the Capsule API, so spacectl
 * can route a command to the running gateway instead of failing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SpaceError } from './errors.js';

export interface OwnerRecord {
  pid: number;
  startedAt: string;
  /** gRPC endpoint of the owning process, e.g. unix:///home/u/.space/gateway.sock */
  endpoint?: string;
}

const openInThisProcess = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function lockPath(dir: string): string {
  return path.join(dir, 'owner.json');
}

/** The live owner of `dir`, or null when nobody holds it (a stale record counts as nobody). */
export function readOwner(dir: string): OwnerRecord | null {
  try {
    const rec = JSON.parse(fs.readFileSync(lockPath(dir), 'utf8')) as OwnerRecord;
    if (rec.pid === process.pid) return openInThisProcess.has(path.resolve(dir)) ? rec : null;
    return alive(rec.pid) ? rec : null;
  } catch {
    return null;
  }
}

export class OwnerLock {
  private constructor(readonly dir: string, private record: OwnerRecord, readonly staleRemoved: boolean) {}

  static acquire(dir: string): OwnerLock {
    const abs = path.resolve(dir);
    if (openInThisProcess.has(abs)) {
      throw new SpaceError('UNAVAILABLE', `data dir ${abs} is already open in this process`, { errno: 'EBUSY' });
    }
    const file = lockPath(abs);
    const record: OwnerRecord = { pid: process.pid, startedAt: new Date().toISOString() };
    let staleRemoved = false;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        fs.writeFileSync(file, JSON.stringify(record), { flag: 'wx', mode: 0o644 });
        openInThisProcess.add(abs);
        return new OwnerLock(abs, record, staleRemoved);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const owner = readOwner(abs);
      if (owner && owner.pid !== process.pid) {
        const via = owner.endpoint ? ` serving ${owner.endpoint}` : '';
        throw new SpaceError('UNAVAILABLE', `data dir ${abs} is in use by process ${owner.pid}${via}; talk to it with --gateway, or stop it first`, {
          errno: 'EBUSY',
          details: { owner },
        });
      }
      // The previous owner died without releasing (kill -9): take the lock over.
      fs.rmSync(file, { force: true });
      staleRemoved = true;
    }
    throw new SpaceError('UNAVAILABLE', `could not lock data dir ${abs}`, { errno: 'EBUSY' });
  }

  setEndpoint(endpoint: string): void {
    this.record = { ...this.record, endpoint };
    const tmp = lockPath(this.dir) + '.tmp';
    fs.writeFileSync(tmp, JSON.stringify(this.record));
    fs.renameSync(tmp, lockPath(this.dir));
  }

  release(): void {
    openInThisProcess.delete(this.dir);
    try {
      const rec = JSON.parse(fs.readFileSync(lockPath(this.dir), 'utf8')) as OwnerRecord;
      if (rec.pid === process.pid) fs.rmSync(lockPath(this.dir), { force: true });
    } catch {
      /* already gone */
    }
  }
}
