/**
 * A small read-only HTTP server for probes and Prometheus, shared by the gateway
 * (gateway/http.ts) and the operator (operator/runtime/http.ts): GET/HEAD only, one handler per
 * path, no caching, and a close() that does not wait for keep-alive connections of scrapers.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../capsule/log.js';
import { parseHostPort } from './address.js';

export interface Reply {
  status: number;
  body: string;
  type?: string;
}

export type Route = () => Reply | Promise<Reply>;

export interface PlainHttpServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

/** Prometheus text of a registry-like source; a failed collection is a 500, logged as `event`. */
export function metricsRoute(metrics: { text(): Promise<string>; readonly contentType: string }, logger: Logger, event: string): Route {
  return () => metrics.text().then(
    (text) => ({ status: 200, body: text, type: metrics.contentType }),
    (err: unknown) => {
      logger.error(event, { err });
      return { status: 500, body: 'metrics collection failed\n' };
    },
  );
}

/** `field` names the listen option in error messages (e.g. "httpListen"). */
export async function startPlainHttp(opts: { listen: string; field: string; routes: Record<string, Route> }): Promise<PlainHttpServer> {
  const { host, port } = parseHostPort(opts.listen, opts.field);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const reply = ({ status, body, type = 'text/plain; charset=utf-8' }: Reply) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply({ status: 405, body: 'method not allowed\n' });
    const route = Object.hasOwn(opts.routes, path) ? opts.routes[path] : undefined;
    if (!route) return reply({ status: 404, body: 'not found\n' });
    Promise.resolve()
      .then(route)
      .then(reply, (err: unknown) => reply({ status: 500, body: `${err instanceof Error ? err.message : String(err)}\n` }));
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
      // Probes and scrapers keep connections alive; they must not hold up shutdown.
      server.closeAllConnections();
    }),
  };
}
