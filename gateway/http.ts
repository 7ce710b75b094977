/**
 * The gateway's plain HTTP endpoint for Kubernetes probes and Prometheus:
 *   /metrics  Prometheus text format
 *   /healthz  200 while the process serves HTTP at all (liveness)
 *   /readyz   200 only when the store is open and gRPC is listening (readiness), else 503
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../capsule/log.js';
import type { GatewayMetrics } from './metrics.js';
import { parseHostPort } from './address.js';

export interface HttpEndpoint {
  port: number;
  close(): Promise<void>;
}

export async function startHttp(opts: {
  listen: string;
  metrics: GatewayMetrics;
  /** Why the gateway is not ready, or null when it is. */
  notReady: () => string | null;
  logger: Logger;
}): Promise<HttpEndpoint> {
  const { host, port } = parseHostPort(opts.listen, 'httpListen');
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, 'method not allowed\n');
    switch (path) {
      case '/healthz':
        return reply(200, 'ok\n');
      case '/readyz': {
        const why = opts.notReady();
        return why === null ? reply(200, 'ready\n') : reply(503, `not ready: ${why}\n`);
      }
      case '/metrics':
        opts.metrics.text().then(
          (text) => reply(200, text, opts.metrics.contentType),
          (err: unknown) => {
            opts.logger.error('gateway.metrics_failed', { err });
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
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Probes and scrapers keep connections alive; do not let them hold up shutdown.
      server.closeAllConnections();
    }),
  };
}
