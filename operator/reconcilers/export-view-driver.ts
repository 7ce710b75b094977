/**
 * NVMe/TCP and NFS views: the owning gateway exports the capsule (a subsystem NQN or an export
 * path) through its Export API, and the view's endpoint says where clients connect. Ready once
 * the listener accepts TCP connections.
 */
import net from 'node:net';
import { SpaceError } from '../../capsule/errors.js';
import type { ExportInfo, ExportProtocol, ExportSpec } from '../../gateway/views-api.js';
import { endpointUrl, type CapsuleView } from '../api/types.js';
import type { GatewayHandle } from '../gateways.js';
import type { Endpoint, ServeResult, ViewDriver } from './capsule-view.js';

const PROBE_TIMEOUT_MS = 2000;
/** A port held by something else may be freed: try again at this pace. */
const LISTEN_RETRY_MS = 30_000;

/** Default names are per view, so two views of one capsule (say rw and ro) never collide. */
export function defaultExportName(protocol: ExportProtocol, view: CapsuleView): string {
  const ns = view.metadata.namespace ?? 'default';
  return protocol === 'nvme' ? `nqn.2024-11.io.space:view:${ns}:${view.metadata.name}` : `/${ns}/${view.metadata.name}`;
}

export class ExportViewDriver implements ViewDriver {
  constructor(readonly protocol: ExportProtocol) {}

  private spec(view: CapsuleView, capsuleId: string): ExportSpec {
    const o = view.spec.options ?? {};
    return {
      protocol: this.protocol,
      ref: capsuleId,
      readOnly: !!view.spec.readOnly,
      name: (this.protocol === 'nvme' ? o.nqn : undefined) ?? defaultExportName(this.protocol, view),
      ...(o.listen ? { listen: o.listen } : {}),
      allowed: this.protocol === 'nfs' ? o.allowedClients ?? [] : [],
    };
  }

  async serve(view: CapsuleView, capsuleId: string, gw: GatewayHandle): Promise<ServeResult> {
    const want = this.spec(view, capsuleId);
    let current: ExportInfo | undefined;
    try {
      current = (await gw.client.listExports()).find((e) => e.protocol === this.protocol && e.name === want.name);
      const same = current && current.capsuleId === capsuleId && current.readOnly === want.readOnly && sameSet(current.allowed, want.allowed ?? []);
      if (current && !same) {
        await gw.client.unexport(this.protocol, current.name);
        current = undefined;
      }
      current ??= await gw.client.export(want);
    } catch (e) {
      // A gateway without this protocol's server says so: a condition, not a retry loop.
      if (e instanceof SpaceError && e.code === 'FAILED_PRECONDITION') return { ok: false, reason: 'ProtocolUnavailable', message: e.message };
      // The listen address is taken (say, by a kernel nfsd on 2049): say so, and retry slowly.
      if (e instanceof SpaceError && e.code === 'UNAVAILABLE' && /^cannot listen/.test(e.message)) {
        return { ok: false, reason: 'ListenFailed', message: e.message, retryAfterMs: LISTEN_RETRY_MS };
      }
      throw e;
    }
    return { ok: true, endpoint: this.endpoint(current, gw) };
  }

  private endpoint(e: ExportInfo, gw: GatewayHandle): Endpoint {
    // A wildcard listener is reached at the gateway's own address.
    const address = e.address === '0.0.0.0' || e.address === '::' ? gatewayHost(gw.address) : e.address;
    const base = { protocol: this.protocol, address, port: e.port, ...(this.protocol === 'nvme' ? { nqn: e.name } : { exportPath: e.name }) };
    return { ...base, url: endpointUrl(base) };
  }

  async probe(view: CapsuleView, endpoint: Endpoint, gw: GatewayHandle): Promise<boolean> {
    const name = endpoint.nqn ?? endpoint.exportPath;
    if (!(await gw.client.listExports()).some((e) => e.protocol === this.protocol && e.name === name)) return false;
    return tcpAnswers(endpoint.address!, endpoint.port!);
  }

  async stop(view: CapsuleView, gw: GatewayHandle): Promise<void> {
    const name = view.status?.endpoint?.nqn ?? view.status?.endpoint?.exportPath ?? this.spec(view, '').name!;
    if ((await gw.client.listExports()).some((e) => e.protocol === this.protocol && e.name === name)) await gw.client.unexport(this.protocol, name);
  }
}

function sameSet(a: string[], b: string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}

/** The host part of a gateway address: "10.0.0.5:7420", "[fd00::1]:7420", or a unix socket (this host). */
export function gatewayHost(address: string): string {
  if (address.startsWith('unix:')) return '127.0.0.1';
  const m = /^(?:dns:\/\/\/)?(?:\[([^\]]+)\]|([^:/]+))(?::\d+)?$/.exec(address);
  return m ? (m[1] ?? m[2]!) : address;
}

function tcpAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(PROBE_TIMEOUT_MS, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
