/**
 * NFS exports of a gateway: one NfsServer per listen address, started on first use (a gateway
 * that exports nothing never binds 2049), each serving its export paths. The default listener
 * also answers MOUNT on the conventional port 20048; other listeners answer MOUNT on their NFS
 * port (every program is served on both ports) plus an ephemeral one.
 */
import { SpaceError } from '../../capsule/errors.js';
import type { Logger } from '../../capsule/log.js';
import type { Store } from '../../capsule/store.js';
import { joinHostPort, parseHostPort } from '../address.js';
import type { ExportBackend, ExportInfo, ExportSpec } from '../views-api.js';
import { NfsServer } from './server.js';

export const DEFAULT_NFS_LISTEN = '127.0.0.1:2049';
export const DEFAULT_MOUNT_PORT = 20048;

interface Entry {
  listen: string;
  server: NfsServer;
  since: string;
}

export class NfsExports implements ExportBackend {
  readonly protocol = 'nfs' as const;
  private readonly servers = new Map<string, Promise<NfsServer>>();
  private readonly entries = new Map<string, Entry>();
  private readonly defaultListen: string;

  constructor(private readonly store: Store, private readonly logger: Logger, defaultListen = DEFAULT_NFS_LISTEN, private readonly mountPort = DEFAULT_MOUNT_PORT) {
    this.defaultListen = normalizeListen(defaultListen);
  }

  private server(listen: string): Promise<NfsServer> {
    let s = this.servers.get(listen);
    if (!s) {
      const { host, port } = parseHostPort(listen, 'nfs listen');
      const mountPort = listen === this.defaultListen && port !== 0 ? this.mountPort : 0;
      s = NfsServer.listen({ store: this.store, host, port, mountPort, logger: this.logger.child({ listen }) });
      this.servers.set(listen, s);
      s.catch(() => this.servers.delete(listen));
    }
    return s;
  }

  async export(spec: ExportSpec): Promise<ExportInfo> {
    const listen = normalizeListen(spec.listen ?? this.defaultListen);
    let server: NfsServer;
    try {
      server = await this.server(listen);
    } catch (e) {
      throw new SpaceError('UNAVAILABLE', `cannot listen for NFS on ${listen}: ${(e as Error).message}`, { cause: e });
    }
    const added = await server.addExport({ ref: spec.ref, readOnly: spec.readOnly, allowedClients: spec.allowed ?? [], ...(spec.name ? { path: spec.name } : {}) });
    const entry = { listen, server, since: new Date().toISOString() };
    this.entries.set(added.path, entry);
    return this.info(added.path, entry)!;
  }

  async unexport(name: string): Promise<void> {
    const e = this.entries.get(name);
    if (!e) throw new SpaceError('NOT_FOUND', `no NFS export ${name}`);
    this.entries.delete(name);
    await e.server.removeExport(name);
    if (![...this.entries.values()].some((x) => x.listen === e.listen)) {
      this.servers.delete(e.listen);
      await e.server.close();
    }
  }

  list(): ExportInfo[] {
    const out: ExportInfo[] = [];
    for (const [p, e] of this.entries) {
      const info = this.info(p, e);
      if (info) out.push(info);
    }
    return out;
  }

  private info(exportPath: string, e: Entry): ExportInfo | undefined {
    const x = e.server.listExports().find((l) => l.path === exportPath);
    if (!x) return undefined;
    const a = e.server.address();
    return { protocol: 'nfs', name: x.path, capsuleId: x.capsuleId, readOnly: x.readOnly, address: a.host, port: a.port, mountPort: a.mountPort, allowed: x.allowedClients, since: e.since };
  }

  async closeAll(): Promise<void> {
    const servers = [...this.servers.values()];
    this.servers.clear();
    this.entries.clear();
    for (const s of servers) await (await s.catch(() => undefined))?.close();
  }
}

function normalizeListen(listen: string): string {
  const { host, port } = parseHostPort(listen, 'nfs listen');
  return joinHostPort(host, port);
}
