/**
 * The NFS view of a store: an RPC server listening on the NFS port (default 2049) and the MOUNT
 * port (default 20048), with NFSv3 and MOUNT v3 registered, serving the capsules added with
 * addExport.
 *
 * Both programs answer on both ports: a client configured with only one port (or talking MOUNT
 * to the NFS port, as some do) still works. `rpc` stays open for more programs: an NFSv4 module
 * registers program 100003 version 4 on it and is served on the same ports.
 */
import type { AddressInfo, Server } from 'node:net';
import type { Store } from '../../capsule/store.js';
import { silentLogger, type Logger } from '../../capsule/log.js';
import type { ChangeEvent } from '../../capsule/types.js';
import type { NfsStore } from './backend.js';
import { NfsContext } from './context.js';
import { ExportTable, normalizeExportPath, type ExportSpec } from './exports.js';
import { mount3Program, MountList } from './mount3.js';
import { nfs3Program } from './nfs3.js';
import { RpcServer } from './rpc.js';
import { nfs4Program, type Nfs4Options } from './v4/program.js';
import { notFound } from '../../capsule/errors.js';

/** Compile-time check that the real store provides everything the view uses. */
const storeFits = (s: Store): NfsStore => s;
void storeFits;

export interface NfsServerOptions {
  store: Store | NfsStore;
  host?: string;
  /** NFS port; default 2049, 0 = any free port. */
  port?: number;
  /** MOUNT port; default 20048, 0 = any free port. */
  mountPort?: number;
  logger?: Logger;
  /** Largest RPC record accepted (default: a 1 MiB WRITE plus headers). */
  maxRecordSize?: number;
  /** NFSv4 tuning (lease time); v4 is served on the NFS port next to v3. */
  nfs4?: Nfs4Options;
}

export interface ExportInfo {
  path: string;
  capsuleId: string;
  readOnly: boolean;
}

export interface ExportListing extends ExportInfo {
  capsuleName: string;
  allowedClients: string[];
}

export class NfsServer {
  readonly rpc: RpcServer;
  readonly context: NfsContext;
  private readonly exports = new ExportTable();
  private readonly mounts = new MountList();
  private readonly log: Logger;
  private readonly store: NfsStore;
  private nfsListener: Server | undefined;
  private mountListener: Server | undefined;
  private readonly onChange = (ev: ChangeEvent) => this.changed(ev);
  private closed = false;

  private constructor(opts: NfsServerOptions) {
    this.store = opts.store as NfsStore;
    this.log = (opts.logger ?? silentLogger).child({ view: 'nfs' });
    this.context = new NfsContext(this.store, this.exports, this.log);
    this.rpc = new RpcServer({ logger: this.log, maxRecordSize: opts.maxRecordSize });
    this.rpc.register(nfs3Program(this.context));
    this.rpc.register(mount3Program(this.context, this.mounts));
    this.rpc.register(nfs4Program(this.context, { maxRecordSize: opts.maxRecordSize, ...opts.nfs4 }));
    this.store.events?.on('change', this.onChange);
  }

  static async listen(opts: NfsServerOptions): Promise<NfsServer> {
    const s = new NfsServer(opts);
    const host = opts.host ?? '0.0.0.0';
    try {
      s.nfsListener = await s.rpc.listen(opts.port ?? 2049, host);
      s.mountListener = await s.rpc.listen(opts.mountPort ?? 20048, host);
    } catch (e) {
      await s.close();
      throw e;
    }
    const a = s.address();
    s.log.info('nfs.listening', { host: a.host, port: a.port, mountPort: a.mountPort });
    return s;
  }

  /** Serve a capsule; the path defaults to "/<capsule name>". */
  async addExport(spec: ExportSpec): Promise<ExportInfo> {
    const info = await this.store.get(spec.ref);
    const exp = this.exports.add(spec, info);
    this.context.view(exp.capsuleId);
    this.log.info('nfs.export.added', { path: exp.path, capsule: exp.capsuleId, readOnly: exp.readOnly, allowedClients: exp.allowedClients });
    return { path: exp.path, capsuleId: exp.capsuleId, readOnly: exp.readOnly };
  }

  /** Stop serving an export: its handles become STALE, new mounts of it fail. */
  async removeExport(path: string): Promise<void> {
    const exp = this.exports.remove(path);
    if (!exp) throw notFound(`NFS export ${normalizeExportPath(path)} does not exist`);
    this.mounts.removePath(exp.path);
    if (this.exports.forCapsule(exp.capsuleId).length === 0) this.context.dropView(exp.capsuleId);
    this.log.info('nfs.export.removed', { path: exp.path, capsule: exp.capsuleId });
  }

  listExports(): ExportListing[] {
    return this.exports.list().map((e) => ({
      path: e.path, capsuleId: e.capsuleId, capsuleName: e.capsuleName, readOnly: e.readOnly, allowedClients: [...e.allowedClients],
    }));
  }

  address(): { host: string; port: number; mountPort: number } {
    const n = this.nfsListener?.address() as AddressInfo | null | undefined;
    const m = this.mountListener?.address() as AddressInfo | null | undefined;
    return { host: n?.address ?? '', port: n?.port ?? 0, mountPort: m?.port ?? 0 };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.store.events?.off('change', this.onChange);
    await this.rpc.close();
    this.log.info('nfs.closed');
  }

  /** Store change feed: keeps inode views fresh and marks exports of deleted capsules gone. */
  private changed(ev: ChangeEvent): void {
    this.context.peekView(ev.capsule)?.changed(ev.kind);
    if (ev.kind === 'deleted') {
      for (const exp of this.exports.forCapsule(ev.capsule)) {
        exp.gone = true;
        this.log.warn('nfs.export.capsule_deleted', { path: exp.path, capsule: exp.capsuleId });
      }
    }
  }
}
