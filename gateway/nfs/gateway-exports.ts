/**
 * NFS exports of a gateway: one NfsServer per listen address, started on first use (a gateway
 * that exports nothing never binds 2049), each serving its export paths. The default listener
 * also answers MOUNT on the conventional port 20048; other listeners answer MOUNT on their NFS
 * port (every program is served on both ports) plus an ephemeral one.
 */
import { SpaceError } from '../../capsule/errors.js';
import type { Logger } from '../../capsule/log.js';
import type { Store } from '../../capsule/store.js';
import { LazyListeners } from '../listeners.js';
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
  private readonly servers: LazyListeners<NfsServer>;
  private readonly entries = new Map<string, Entry>();
  private readonly defaultListen: string;

  constructor(store: Store, logger: Logger, defaultListen = DEFAULT_NFS_LISTEN, mountPort = DEFAULT_MOUNT_PORT) {
    this.servers = new LazyListeners('NFS', (host, port, listen) => NfsServer.listen({
      store, host, port, logger: logger.child({ listen }),
      mountPort: listen === this.defaultListen && port !== 0 ? mountPort : 0,
    }));
    this.defaultListen = this.servers.normalize(defaultListen);
  }

  async export(spec: ExportSpec): Promise<ExportInfo> {
    const listen = this.servers.normalize(spec.listen ?? this.defaultListen);
    const server = await this.servers.get(listen);
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
    if (![...this.entries.values()].some((x) => x.listen === e.listen)) await this.servers.release(e.listen, e.server);
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
    this.entries.clear();
    await this.servers.closeAll();
  }
}
