/**
 * The gateway's plain HTTP endpoint for Kubernetes probes and Prometheus:
 *   /metrics  Prometheus text format
 *   /healthz  200 while the process serves HTTP at all (liveness)
 *   /readyz   200 only when the store is open and gRPC is listening (readiness), else 503
 */
import type { Logger } from '../capsule/log.js';
import type { GatewayMetrics } from './metrics.js';
import { metricsRoute, startPlainHttp } from './plain-http.js';

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
  return startPlainHttp({
    listen: opts.listen,
    field: 'httpListen',
    routes: {
      '/healthz': () => ({ status: 200, body: 'ok\n' }),
      '/readyz': () => {
        const why = opts.notReady();
        return why === null ? { status: 200, body: 'ready\n' } : { status: 503, body: `not ready: ${why}\n` };
      },
      '/metrics': metricsRoute(opts.metrics, opts.logger, 'gateway.metrics_failed'),
    },
  });
}
