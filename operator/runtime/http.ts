/**
 * The operator's probe and metrics endpoint (same shape as the gateway's, gateway/http.ts):
 *   /metrics  Prometheus text format from the manager's registry
 *   /healthz  200 while the process serves HTTP and no health check fails (liveness)
 *   /readyz   200 when every readiness check passes (informers synced), else 503 with reasons.
 *             A standby replica (not leader) is ready too, as with controller-runtime: it must
 *             be able to take over, and a Service in front of it should keep routing to it.
 * Listen addresses: ":8080" (all interfaces), "127.0.0.1:0" (ephemeral port, see `port`).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../../capsule/log.js';
import { parseHostPort } from '../../gateway/address.js';

export interface MetricsSource {
  text(): Promise<string>;
  readonly contentType: string;
}

/** A named check: returns null when fine, or why not. */
export type Check = () => string | null;

export interface ProbeServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

export async function startProbeServer(opts: {
  listen: string;
  metrics: MetricsSource;
  healthChecks: () => Map<string, Check>;
  readyChecks: () => Map<string, Check>;
  logger: Logger;
}): Promise<ProbeServer> {
  const { host, port } = parseHostPort(opts.listen, 'metricsAddress');
  const runChecks = (checks: Map<string, Check>): { ok: boolean; body: string } => {
    const lines: string[] = [];
    let ok = true;
    for (const [name, check] of checks) {
      let why: string | null;
      try {
        why = check();
      } catch (err) {
        why = err instanceof Error ? err.message : String(err);
      }
      if (why === null) lines.push(`[+]${name} ok`);
      else {
        ok = false;
        lines.push(`[-]${name} failed: ${why}`);
      }
    }
    return { ok, body: `${lines.join('\n')}${lines.length ? '\n' : ''}${ok ? 'ok' : 'failed'}\n` };
  };
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    switch (path) {
      case '/healthz':
      case '/livez': {
        const r = runChecks(opts.healthChecks());
        return reply(r.ok ? 200 : 500, r.body);
      }
      case '/readyz': {
        const r = runChecks(opts.readyChecks());
        return reply(r.ok ? 200 : 503, r.body);
      }
      case '/metrics':
        opts.metrics.text().then(
          (text) => reply(200, text, opts.metrics.contentType),
          (err: unknown) => {
            opts.logger.error('operator.metrics_failed', { err });
            reply(500, 'metrics collection failed\n');
          },
        );
        return;
      default:
        return reply(404, 'not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    host: addr.address,
    port: addr.port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Scrapers keep connections alive; they must not hold up shutdown.
      server.closeAllConnections();
    }),
  };
}
