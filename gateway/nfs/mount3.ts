/**
 * MOUNT version 3 (RFC 1813 appendix I), program 100005: how an NFSv3 client turns an export
 * path into its first file handle. Served on a fixed port (and on the NFS port too), so clients
 * can be pointed at it directly and no portmapper is needed.
 *
 * A client may mount an export or any directory below it ("/capsule/sub/dir"); the handle it
 * gets is an ordinary file handle of that export.
 */
import { ROOT_INO } from '../../capsule/schema.js';
import type { NfsContext } from './context.js';
import { NFS3_FHSIZE } from './handles.js';
import { childPath } from './inodes.js';
import { AuthFlavor, type RpcCall, type RpcProcedure, type RpcProgram } from './rpc.js';
import { Nfs3Status, NfsError, statusOf } from './status.js';
import { plainAddress } from './exports.js';

export const MOUNT_PROGRAM = 100005;
export const MOUNT_V3 = 3;
export const MNTPATHLEN = 1024;
export const MNTNAMLEN = 255;

export const MountProc = { NULL: 0, MNT: 1, DUMP: 2, UMNT: 3, UMNTALL: 4, EXPORT: 5 } as const;

export const MountStat = {
  OK: 0,
  PERM: 1,
  NOENT: 2,
  IO: 5,
  ACCES: 13,
  NOTDIR: 20,
  INVAL: 22,
  NAMETOOLONG: 63,
  NOTSUPP: 10004,
  SERVERFAULT: 10006,
} as const;

/** The mount statuses share their numbers with nfsstat3; everything else is a server fault. */
const MOUNTABLE = new Set<number>([MountStat.PERM, MountStat.NOENT, MountStat.IO, MountStat.ACCES, MountStat.NOTDIR, MountStat.INVAL, MountStat.NAMETOOLONG, MountStat.NOTSUPP]);

export interface MountEntry {
  host: string;
  path: string;
}

/** Who mounted what (DUMP): informational only, as in every MOUNT server. */
export class MountList {
  private readonly entries = new Map<string, MountEntry>();

  add(host: string, path: string): void {
    if (this.entries.size >= 10_000) return; // never grow without bound on a flood of MNTs
    this.entries.set(`${host}\0${path}`, { host, path });
  }

  remove(host: string, path: string): void {
    this.entries.delete(`${host}\0${path}`);
  }

  removeHost(host: string): void {
    for (const [k, e] of this.entries) if (e.host === host) this.entries.delete(k);
  }

  removePath(path: string): void {
    for (const [k, e] of this.entries) if (e.path === path || e.path.startsWith(path + '/')) this.entries.delete(k);
  }

  list(): MountEntry[] {
    return [...this.entries.values()];
  }
}

const hostOf = (call: RpcCall) => plainAddress(call.conn.remoteAddress);

export function mount3Program(ctx: NfsContext, mounts: MountList): RpcProgram {
  const procs = new Map<number, RpcProcedure>();
  const log = ctx.log;

  procs.set(MountProc.NULL, () => {});

  procs.set(MountProc.MNT, async (call, res) => {
    const dirpath = call.args.string(MNTPATHLEN);
    let status: number;
    try {
      const m = ctx.exports.match(dirpath);
      if (!m) throw new NfsError(Nfs3Status.NOENT, `${dirpath} is not exported`);
      const { exp, rest } = m;
      if (!exp.allows(call.conn.remoteAddress)) throw new NfsError(Nfs3Status.ACCES, `client may not mount ${exp.path}`);
      if (exp.gone) throw new NfsError(Nfs3Status.NOENT, `the capsule of ${exp.path} was deleted`);
      const view = ctx.view(exp.capsuleId);
      // Walk down to the mounted directory, teaching the view each step's inode.
      let ino = ROOT_INO;
      let p = '';
      let attr = await ctx.store.getattr(exp.capsuleId, '');
      for (const name of rest ? rest.split('/') : []) {
        if (attr.type !== 'dir') throw new NfsError(Nfs3Status.NOTDIR, `${p} is not a directory`);
        p = childPath(p, name);
        attr = await ctx.store.getattr(exp.capsuleId, p);
        view.remember(attr.ino, ino, name);
        ino = attr.ino;
      }
      if (attr.type !== 'dir') throw new NfsError(Nfs3Status.NOTDIR, `${dirpath} is not a directory`);
      mounts.add(hostOf(call), dirpath);
      log.info('nfs.mount', { client: call.conn.remoteAddress, path: dirpath, export: exp.path, capsule: exp.capsuleId });
      res.uint32(MountStat.OK);
      res.opaque(ctx.handleOf(exp, ino), NFS3_FHSIZE);
      res.array([AuthFlavor.AUTH_SYS], (w, f) => w.uint32(f));
      return;
    } catch (e) {
      const s = statusOf(e);
      if (s.unexpected) log.error('nfs.mount.failed', { path: dirpath, err: e });
      status = MOUNTABLE.has(s.status) ? s.status : s.status === Nfs3Status.STALE ? MountStat.NOENT : MountStat.SERVERFAULT;
      log.info('nfs.mount.refused', { client: call.conn.remoteAddress, path: dirpath, status });
    }
    res.uint32(status);
  });

  procs.set(MountProc.DUMP, (_call, res) => {
    for (const m of mounts.list()) {
      res.bool(true);
      res.string(m.host.slice(0, MNTNAMLEN), MNTNAMLEN);
      res.string(m.path, MNTPATHLEN);
    }
    res.bool(false);
  });

  procs.set(MountProc.UMNT, (call) => {
    mounts.remove(hostOf(call), call.args.string(MNTPATHLEN));
  });

  procs.set(MountProc.UMNTALL, (call) => {
    mounts.removeHost(hostOf(call));
  });

  procs.set(MountProc.EXPORT, (call, res) => {
    for (const exp of ctx.exports.list()) {
      // Only what this client could mount: the list would otherwise leak other tenants' names.
      if (exp.gone || !exp.allows(call.conn.remoteAddress)) continue;
      res.bool(true);
      res.string(exp.path, MNTPATHLEN);
      for (const g of exp.allowedClients) {
        res.bool(true);
        res.string(g, MNTNAMLEN);
      }
      res.bool(false);
    }
    res.bool(false);
  });

  return { prog: MOUNT_PROGRAM, vers: MOUNT_V3, name: 'mount3', procedures: procs };
}
