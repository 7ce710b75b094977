/**
 * The gateway's network exports: routes each request to the backend of its protocol (NVMe/TCP,
 * NFS). A protocol without a backend on this gateway is a clear FAILED_PRECONDITION.
 */
import { SpaceError } from '../capsule/errors.js';
import type { ExportBackend, ExportInfo, ExportManager, ExportProtocol, ExportSpec } from './views-api.js';

export class GatewayExports implements ExportManager {
  private readonly backends = new Map<ExportProtocol, ExportBackend>();

  constructor(backends: ExportBackend[]) {
    for (const b of backends) this.backends.set(b.protocol, b);
  }

  private backend(protocol: string): ExportBackend {
    const b = this.backends.get(protocol as ExportProtocol);
    if (!b) {
      const served = [...this.backends.keys()];
      throw new SpaceError('FAILED_PRECONDITION', `this gateway does not serve ${protocol} exports${served.length ? ` (it serves: ${served.join(', ')})` : ''}`);
    }
    return b;
  }

  export(spec: ExportSpec): Promise<ExportInfo> {
    return this.backend(spec.protocol).export(spec);
  }

  unexport(protocol: ExportProtocol, name: string): Promise<void> {
    return this.backend(protocol).unexport(name);
  }

  list(): ExportInfo[] {
    return [...this.backends.values()].flatMap((b) => b.list());
  }

  async closeAll(): Promise<void> {
    for (const b of this.backends.values()) await b.closeAll();
  }
}
