/**
 * NVMe/TCP exports of a gateway: one target per listen address, started on first use (so a
 * gateway that never exports a namespace never binds port 4420), each serving its subsystems.
 */
import { SpaceError } from '../../capsule/errors.js';
import type { Logger } from '../../capsule/log.js';
import type { Store } from '../../capsule/store.js';
import { LazyListeners } from '../listeners.js';
import type { ExportBackend, ExportInfo, ExportSpec } from '../views-api.js';
import { NvmeTarget } from './target.js';

export const DEFAULT_NVME_LISTEN = '127.0.0.1:4420';

interface Entry {
  listen: string;
  target: NvmeTarget;
  since: string;
}

export class NvmeExports implements ExportBackend {
  readonly protocol = 'nvme' as const;
  private readonly targets: LazyListeners<NvmeTarget>;
  /** Subsystem NQN → where it is served. */
  private readonly entries = new Map<string, Entry>();
  private readonly defaultListen: string;

  constructor(store: Store, logger: Logger, defaultListen = DEFAULT_NVME_LISTEN) {
    this.targets = new LazyListeners('NVMe/TCP', (host, port, listen) => NvmeTarget.listen({ store, host, port, logger: logger.child({ listen }) }));
    this.defaultListen = this.targets.normalize(defaultListen);
  }

  async export(spec: ExportSpec): Promise<ExportInfo> {
    const listen = this.targets.normalize(spec.listen ?? this.defaultListen);
    const target = await this.targets.get(listen);
    const sub = await target.addSubsystem({
      ref: spec.ref, nqn: spec.name, readOnly: spec.readOnly, allowedHosts: spec.allowed, blockSize: spec.blockSize, file: spec.file,
    });
    const entry = { listen, target, since: new Date().toISOString() };
    this.entries.set(sub.nqn, entry);
    return this.info(sub.nqn, entry)!;
  }

  async unexport(name: string): Promise<void> {
    const e = this.entries.get(name);
    if (!e) throw new SpaceError('NOT_FOUND', `no NVMe/TCP subsystem ${name} is exported`);
    const target = e.target;
    this.entries.delete(name);
    await target.removeSubsystem(name);
    if (![...this.entries.values()].some((x) => x.listen === e.listen)) await this.targets.release(e.listen, target);
  }

  list(): ExportInfo[] {
    const out: ExportInfo[] = [];
    for (const [nqn, e] of this.entries) {
      const info = this.info(nqn, e);
      if (info) out.push(info);
    }
    return out;
  }

  private info(nqn: string, e: Entry): ExportInfo | undefined {
    const t = e.target;
    const s = t.list().find((x) => x.nqn === nqn);
    if (!s) return undefined;
    const a = t.address();
    return { protocol: 'nvme', name: nqn, capsuleId: s.capsuleId, readOnly: s.readOnly, address: a.host, port: a.port, allowed: s.allowedHosts, file: s.file, since: e.since };
  }

  async closeAll(): Promise<void> {
    this.entries.clear();
    await this.targets.closeAll();
  }
}
