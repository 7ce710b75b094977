/**
 * The NFSv3 benchmark client for small-file metadata, in a process of its own (forked by
 * bench/nfs.ts, so it never shares an event loop with the server it measures). The same code
 * talks to our server and to nfs-ganesha. It also starts the big-file client (nfs-cp) for every
 * timed copy: a fork copies the forking process's page tables and leaves its pages
 * copy-on-write until the child execs, and forked from the benchmark's process, which hosts our
 * server and its gigabyte of cached segments, each nfs-cp start cost ~40 ms plus page faults
 * afterwards, charged to our server's figures only. Forked from here, it costs both the same.
 *
 * Built on the project's ONC RPC client (gateway/nfs/rpc-client.ts) and XDR codec: MOUNT v3 MNT
 * for the export's root handle, then NFSv3 over one TCP connection, AUTH_SYS as root, with a
 * fixed number of files in flight (calls pipelined on the connection, replies matched by xid).
 *
 * Jobs arrive as IPC messages, one at a time; the process lives across jobs, so its JIT is warm
 * for every measured run after the first warm-up.
 *   meta    `files` x (CREATE UNCHECKED + GETATTR of the new handle + REMOVE), `concurrency`
 *           files in flight; timed from the first CREATE to the last REMOVE reply (mount and
 *           connection setup excluded)
 *   fsinfo  FSINFO of the export root (rtmax/wtmax, what the big-file clients negotiate)
 *   remove  REMOVE of a name in the export root (NOENT is fine): clears the way for a new copy
 *   spawn   run a command to its end; its wall time (from spawn to exit) and output come back;
 *           a non-zero exit or a timeout is an error
 */
import { MOUNT_PROGRAM, MOUNT_V3, MountProc } from '../../gateway/nfs/mount3.js';
import { NFS_PROGRAM, NFS_V3, Proc3, CreateMode } from '../../gateway/nfs/nfs3.js';
import { AcceptStat, type AuthSys } from '../../gateway/nfs/rpc.js';
import { RpcClient, type RpcReply } from '../../gateway/nfs/rpc-client.js';
import { XdrReader, XdrWriter } from '../../gateway/nfs/xdr.js';
import { runCommand } from '../common.js';

export interface Endpoint {
  host: string;
  port: number;
  mountPort: number;
  /** The export path as MOUNT takes it ("/export"). */
  exportPath: string;
}

export type Job =
  | ({ op: 'meta'; id: number; files: number; concurrency: number; prefix: string } & Endpoint)
  | ({ op: 'fsinfo'; id: number } & Endpoint)
  | ({ op: 'remove'; id: number; name: string } & Endpoint)
  | { op: 'spawn'; id: number; cmd: string; args: string[]; timeoutS: number };

export interface FsInfo {
  rtmax: number;
  rtpref: number;
  wtmax: number;
  wtpref: number;
}

export type Reply =
  | { id: number; ok: true; secs?: number; files?: number; rpcs?: number; fsinfo?: FsInfo; status?: number; out?: string }
  | { id: number; ok: false; error: string };

const AUTH: AuthSys = { stamp: 0, machineName: 'space-bench', uid: 0, gid: 0, gids: [0] };
const NFS3_FHSIZE = 64;
const NFS3ERR_NOENT = 2;

class NfsError extends Error {
  constructor(readonly proc: string, readonly status: number) {
    super(`${proc} failed: nfsstat3 ${status}`);
  }
}

function accepted(r: RpcReply, what: string): XdrReader {
  if (r.acceptStat !== AcceptStat.SUCCESS) throw new Error(`${what}: RPC not accepted (reply ${r.replyStat}, accept ${r.acceptStat}, auth ${r.authStat})`);
  return r.body;
}

/** post_op_attr: a bool, then a fattr3 (84 bytes) when set. */
function skipPostOpAttr(r: XdrReader): void {
  if (r.bool()) r.skip(84);
}

/** wcc_data: pre_op_attr (bool + 24 bytes) then post_op_attr. */
function skipWcc(r: XdrReader): void {
  if (r.bool()) r.skip(24);
  skipPostOpAttr(r);
}

/** A mounted export: the root handle and an NFS connection. */
class Mounted {
  private constructor(readonly nfs: RpcClient, readonly root: Buffer, private readonly ep: Endpoint) {}

  static async open(ep: Endpoint): Promise<Mounted> {
    const m = await RpcClient.connect(ep.mountPort, ep.host, AUTH);
    let root: Buffer;
    try {
      const r = accepted(await m.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, new XdrWriter().string(ep.exportPath)), 'MNT');
      const status = r.uint32();
      if (status !== 0) throw new Error(`MNT ${ep.exportPath} failed: mountstat3 ${status}`);
      root = r.opaque(NFS3_FHSIZE);
    } finally {
      m.close();
    }
    const nfs = await RpcClient.connect(ep.port, ep.host, AUTH);
    return new Mounted(nfs, root, ep);
  }

  async close(): Promise<void> {
    this.nfs.close();
    // UMNT is advisory (the mount list only); best effort, like most clients.
    try {
      const m = await RpcClient.connect(this.ep.mountPort, this.ep.host, AUTH);
      await m.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.UMNT, new XdrWriter().string(this.ep.exportPath)).finally(() => m.close());
    } catch {
      // ignore
    }
  }

  private async nfsCall(proc: number, name: string, args: XdrWriter): Promise<XdrReader> {
    const r = accepted(await this.nfs.call(NFS_PROGRAM, NFS_V3, proc, args), name);
    const status = r.uint32();
    if (status !== 0) throw new NfsError(name, status);
    return r;
  }

  /** CREATE UNCHECKED (mode 0644); returns the new file's handle. */
  async create(name: string): Promise<Buffer> {
    const w = new XdrWriter(128).opaque(this.root).string(name).enum(CreateMode.UNCHECKED);
    // sattr3: set mode; leave uid, gid, size alone; atime and mtime DONT_CHANGE
    w.bool(true).uint32(0o644).bool(false).bool(false).bool(false).enum(0).enum(0);
    const r = await this.nfsCall(Proc3.CREATE, 'CREATE', w);
    if (r.bool()) return r.opaque(NFS3_FHSIZE);
    // No handle in the reply (allowed by RFC 1813): look it up, as clients do.
    return this.lookup(name);
  }

  async lookup(name: string): Promise<Buffer> {
    const r = await this.nfsCall(Proc3.LOOKUP, 'LOOKUP', new XdrWriter(128).opaque(this.root).string(name));
    return r.opaque(NFS3_FHSIZE);
  }

  /** GETATTR; returns the size (checks the fattr3 decodes). */
  async getattr(fh: Buffer): Promise<number> {
    const r = await this.nfsCall(Proc3.GETATTR, 'GETATTR', new XdrWriter(96).opaque(fh));
    r.skip(20); // type, mode, nlink, uid, gid
    return r.uint64();
  }

  async remove(name: string): Promise<void> {
    const r = await this.nfsCall(Proc3.REMOVE, 'REMOVE', new XdrWriter(128).opaque(this.root).string(name));
    skipWcc(r);
  }

  async fsinfo(): Promise<FsInfo> {
    const r = await this.nfsCall(Proc3.FSINFO, 'FSINFO', new XdrWriter(96).opaque(this.root));
    skipPostOpAttr(r);
    const rtmax = r.uint32();
    const rtpref = r.uint32();
    r.uint32(); // rtmult
    const wtmax = r.uint32();
    const wtpref = r.uint32();
    return { rtmax, rtpref, wtmax, wtpref };
  }
}

async function meta(job: Extract<Job, { op: 'meta' }>): Promise<Reply> {
  const m = await Mounted.open(job);
  try {
    let next = 0;
    const worker = async () => {
      while (next < job.files) {
        const name = `${job.prefix}${next++}`;
        const fh = await m.create(name);
        await m.getattr(fh);
        await m.remove(name);
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: Math.max(1, Math.min(job.concurrency, job.files)) }, worker));
    const secs = (performance.now() - t0) / 1000;
    return { id: job.id, ok: true, secs, files: job.files, rpcs: 3 * job.files };
  } finally {
    await m.close();
  }
}

async function spawnTimed(job: Extract<Job, { op: 'spawn' }>): Promise<Reply> {
  const { secs, out } = await runCommand(job.cmd, job.args, { timeoutS: job.timeoutS });
  return { id: job.id, ok: true, secs, out };
}

async function run(job: Job): Promise<Reply> {
  switch (job.op) {
    case 'spawn':
      return spawnTimed(job);
    case 'meta':
      return meta(job);
    case 'fsinfo': {
      const m = await Mounted.open(job);
      try {
        return { id: job.id, ok: true, fsinfo: await m.fsinfo() };
      } finally {
        await m.close();
      }
    }
    case 'remove': {
      const m = await Mounted.open(job);
      try {
        await m.remove(job.name);
        return { id: job.id, ok: true, status: 0 };
      } catch (e) {
        if (e instanceof NfsError && e.status === NFS3ERR_NOENT) return { id: job.id, ok: true, status: e.status };
        throw e;
      } finally {
        await m.close();
      }
    }
  }
}

process.on('message', (job: Job) => {
  run(job).then(
    (reply) => process.send!(reply),
    (e: unknown) => process.send!({ id: job.id, ok: false, error: (e as Error).stack ?? String(e) } satisfies Reply),
  );
});
process.on('disconnect', () => process.exit(0));
