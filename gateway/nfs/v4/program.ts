/**
 * NFS version 4 (program 100003 version 4; minor versions 0, 1 and 2) on the capsule store: the
 * RPC program NfsServer registers next to NFSv3 and MOUNT, on the same port. Version 4 needs no
 * MOUNT and no portmapper: a client connects to the NFS port and starts at the pseudo root.
 *
 * This module wires the pieces together: the operation table (ops/*.ts), client/session state
 * (state.ts), the pseudo file system (pseudo.ts), and the COMPOUND loop (compound.ts).
 */
import fsp from 'node:fs/promises';
import type { NfsContext } from '../context.js';
import { NFS3_MAX_IO } from '../nfs3.js';
import { DEFAULT_MAX_RECORD, type RpcProcedure, type RpcProgram } from '../rpc.js';
import type { AttrEnv, FsStats } from './attrs4.js';
import { runCompound, type OpDef, type V4Env, type V4Limits } from './compound.js';
import { NFS4_PROGRAM, NFS_V4, Proc4 } from './constants.js';
import { attrOps } from './ops/attr.js';
import { dirOps } from './ops/dir.js';
import { fhOps } from './ops/fh.js';
import { ioOps, MAX_FILE_SIZE } from './ops/io.js';
import { lockOps } from './ops/lock.js';
import { openOps } from './ops/open.js';
import { sessionOps } from './ops/session.js';
import { PseudoFs } from './pseudo.js';
import { StateManager, type StateOptions } from './state.js';

export interface Nfs4Options extends StateOptions {
  /** The RPC server's record limit: sessions never negotiate more. */
  maxRecordSize?: number;
}

/** Statistics are read at most this often (every GETATTR of df-like attributes would statfs). */
const FS_STATS_TTL_MS = 2000;

export class Nfs4Service implements V4Env {
  readonly state: StateManager;
  readonly pseudo: PseudoFs;
  readonly limits: V4Limits;
  readonly ops: ReadonlyMap<number, OpDef>;
  private stats: { at: number; value: FsStats } | undefined;

  constructor(readonly ctx: NfsContext, opts: Nfs4Options = {}) {
    this.state = new StateManager(opts);
    this.pseudo = new PseudoFs(ctx.exports);
    const record = opts.maxRecordSize ?? DEFAULT_MAX_RECORD;
    // READ/WRITE payloads up to 1 MiB, as v3; a session never promises more than a record holds.
    const maxIo = Math.min(NFS3_MAX_IO, Math.max(4096, record - 4096));
    this.limits = { maxRequest: record, maxResponse: record, maxOps: 64, replyCacheBytes: 64 << 10, maxIo };
    const ops = new Map<number, OpDef>();
    for (const group of [sessionOps(), fhOps(), attrOps(), openOps(), lockOps(), ioOps(), dirOps()]) {
      for (const [k, v] of group) ops.set(k, v);
    }
    this.ops = ops;
  }

  get log() {
    return this.ctx.log;
  }

  async attrEnv(minor: number, withFsStats: boolean): Promise<AttrEnv> {
    const env: AttrEnv = {
      minor, leaseTime: this.state.leaseSeconds, maxRead: this.limits.maxIo, maxWrite: this.limits.maxIo, maxFileSize: MAX_FILE_SIZE,
    };
    if (withFsStats) env.fsStats = await this.fsStats();
    return env;
  }

  private async fsStats(): Promise<FsStats> {
    const now = Date.now();
    if (this.stats && now - this.stats.at < FS_STATS_TTL_MS) return this.stats.value;
    let value: FsStats = { spaceTotal: 2 ** 50, spaceFree: 2 ** 50, spaceAvail: 2 ** 50, filesTotal: 2 ** 32, filesFree: 2 ** 32, filesAvail: 2 ** 32 };
    const dir = this.ctx.store.dir;
    if (dir) {
      // The data dir is where segments land, so its free space is what writes can use.
      const st = await fsp.statfs(dir);
      value = {
        spaceTotal: st.blocks * st.bsize, spaceFree: st.bfree * st.bsize, spaceAvail: st.bavail * st.bsize,
        filesTotal: st.files, filesFree: st.ffree, filesAvail: st.ffree,
      };
    }
    this.stats = { at: now, value };
    return value;
  }
}

export function nfs4Program(ctx: NfsContext, opts: Nfs4Options = {}): RpcProgram & { service: Nfs4Service } {
  const service = new Nfs4Service(ctx, opts);
  const procs = new Map<number, RpcProcedure>();
  procs.set(Proc4.NULL, () => {});
  procs.set(Proc4.COMPOUND, (call, res) => runCompound(service, call, res));
  return { prog: NFS4_PROGRAM, vers: NFS_V4, name: 'nfs4', procedures: procs, service };
}
