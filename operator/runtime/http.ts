/**
 * The operator's probe and metrics endpoint (same shape as the gateway's, gateway/http.ts):
 *   /metrics  Prometheus text format from the manager's registry
 *   /healthz  200 while the process serves HTTP and no health check fails (liveness)
 *   /readyz   200 when every readiness check passes (informers synced), else 503 with reasons.
 *             A standby replica (not leader) is ready too, as with controller-runtime: it must
 *             be able to take over, and a Service in front of it should keep routing to it.
 * Listen addresses: ":8080" (all interfaces), "127.0.0.1:0" (ephemeral port, see `port`).
 */
import type { Logger } from '../../capsule/log.js';
import { metricsRoute, startPlainHttp } from '../../gateway/plain-http.js';

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
  const checks = (which: () => Map<string, Check>, failStatus: number) => () => {
    const r = runChecks(which());
    return { status: r.ok ? 200 : failStatus, body: r.body };
  };
  return startPlainHttp({
    listen: opts.listen,
    field: 'metricsAddress',
    routes: {
      '/healthz': checks(opts.healthChecks, 500),
      '/livez': checks(opts.healthChecks, 500),
      '/readyz': checks(opts.readyChecks, 503),
      '/metrics': metricsRoute(opts.metrics, opts.logger, 'operator.metrics_failed'),
    },
  });
}
