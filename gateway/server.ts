/**
 * The gateway process core: opens the store, serves the Capsule API over gRPC on TCP (TLS or
 * mTLS when configured) and on a local unix socket, and probes/metrics over HTTP.
 * Signals are not handled here (see run.ts) so tests and embedders control the lifecycle.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { CapsuleApi } from '../capsule/api.js';
import { createLogger, type Logger } from '../capsule/log.js';
import { Store } from '../capsule/store.js';
import { serverCacheBytes } from '../capsule/cache-size.js';
import type { ExportManager, ViewManager } from './views-api.js';
import { joinHostPort, parseHostPort } from './address.js';
import { createCapsuleService } from './grpc-service.js';
import { startHttp, type HttpEndpoint } from './http.js';
import { GatewayMetrics } from './metrics.js';
import { loadCapsuleProto, MAX_MESSAGE_BYTES } from './proto.js';

/** What the gateway needs from a store beyond the CapsuleApi. */
export type GatewayStore = CapsuleApi & {
  close(): Promise<void>;
  /** Record the unix-socket endpoint in the owner lock so spacectl can route to us. */
  setOwnerEndpoint?(endpoint: string): void;
  /** The store emits 'integrity' on every failed segment check (counted in the metrics). */
  events?: EventEmitter;
};

export interface GatewayOptions {
  /** Data dir of the store to open (ignored for the store when `store` is given). */
  dataDir?: string;
  /** An already open store; the gateway takes it over and closes it on close(). */
  store?: GatewayStore;
  /** TCP host:port for gRPC (default 127.0.0.1:7420; port 0 picks one; '' disables TCP). */
  listen?: string;
  /** Unix socket path (default <dataDir>/gateway.sock; none without dataDir). Always insecure: local only. */
  socket?: string;
  /** host:port for /metrics, /healthz, /readyz (default 127.0.0.1:7421; '' disables). */
  httpListen?: string;
  /** PEM file paths. With requireClientCert, clients must present a cert signed by `ca` (mTLS). */
  tls?: { cert: string; key: string; ca?: string; requireClientCert?: boolean };
  views?: ViewManager;
  /** NVMe/TCP and NFS exports; closed (every export withdrawn) on close(). */
  exports?: ExportManager;
  logger?: Logger;
  /** How long close() lets in-flight calls finish before cutting them (default 5 s). */
  shutdownTimeoutMs?: number;
}

export interface Gateway {
  /** Bound TCP port (0 when TCP is disabled). */
  grpcPort: number;
  /** Bound HTTP port (0 when disabled). */
  httpPort: number;
  /** Unix socket path, or undefined when none. */
  socketPath: string | undefined;
  metrics: GatewayMetrics;
  close(): Promise<void>;
}

export const DEFAULT_LISTEN = '127.0.0.1:7420';
export const DEFAULT_HTTP_LISTEN = '127.0.0.1:7421';

export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const logger = opts.logger ?? createLogger({ component: 'gateway' });
  if (!opts.store && !opts.dataDir) throw new Error('startGateway: dataDir or store is required');
  const listen = opts.listen ?? DEFAULT_LISTEN;
  const httpListen = opts.httpListen ?? DEFAULT_HTTP_LISTEN;
  const socketPath = opts.socket ?? (opts.dataDir ? path.join(path.resolve(opts.dataDir), 'gateway.sock') : undefined);
  // Validate the configuration before taking the store's owner lock.
  if (listen) parseHostPort(listen, 'listen');
  if (httpListen) parseHostPort(httpListen, 'httpListen');
  const tcpCreds = listen ? serverCredentials(opts.tls) : undefined;

  const store: GatewayStore = opts.store ?? Store.open(opts.dataDir!, { logger: logger.child({ component: 'store' }), cacheBytes: serverCacheBytes() });
  let storeOpen = true;
  let grpcListening = false;
  let closing = false;

  // The store's own 'integrity' events count failures seen by any front end (FUSE too);
  // without them, fall back to counting DATA_LOSS replies.
  const integrityEvents = store.events instanceof EventEmitter ? store.events : undefined;
  const metrics = new GatewayMetrics({
    storeStat: () => store.storeStat(),
    logger,
    countDataLossReplies: !integrityEvents,
  });
  const onIntegrity = () => metrics.integrityFailures.inc();
  integrityEvents?.on('integrity', onIntegrity);

  const service = createCapsuleService({ store, views: opts.views, exports: opts.exports, metrics, logger });
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  server.addService(loadCapsuleProto().service, service.implementation);

  let http: HttpEndpoint | undefined;
  let grpcPort = 0;
  const bind = (addr: string, creds: grpc.ServerCredentials) => new Promise<number>((resolve, reject) =>
    server.bindAsync(addr, creds, (err, port) => (err ? reject(err) : resolve(port))));

  const cleanup = async () => {
    integrityEvents?.off('integrity', onIntegrity);
    server.forceShutdown();
    await http?.close().catch(() => {});
    if (socketPath) fs.rmSync(socketPath, { force: true });
    if (storeOpen) {
      storeOpen = false;
      await store.close().catch((err: unknown) => logger.error('gateway.store_close_failed', { err }));
    }
  };

  try {
    if (listen) grpcPort = await bind(listen, tcpCreds!);
    if (socketPath) {
      // We hold the store's owner lock, so a socket file left here is from a dead gateway.
      fs.rmSync(socketPath, { force: true });
      await bind(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure());
      // Only the owner and its group: anyone who can connect can read and write capsules.
      fs.chmodSync(socketPath, 0o660);
      store.setOwnerEndpoint?.(`unix://${socketPath}`);
    }
    grpcListening = true;
    if (httpListen) {
      http = await startHttp({
        listen: httpListen,
        metrics,
        logger,
        notReady: () => (closing ? 'shutting down' : !storeOpen ? 'store is closed' : !grpcListening ? 'gRPC is not listening' : null),
      });
    }
  } catch (err) {
    logger.error('gateway.start_failed', { err });
    await cleanup();
    throw err;
  }

  logger.info('gateway.listening', {
    grpc: listen ? joinHostPort(parseHostPort(listen, 'listen').host, grpcPort) : null,
    tls: !!opts.tls, mtls: !!opts.tls?.requireClientCert,
    socket: socketPath ?? null,
    http: http ? joinHostPort(parseHostPort(httpListen, 'httpListen').host, http.port) : null,
    dataDir: opts.dataDir ?? null,
  });

  let closed: Promise<void> | undefined;
  const close = () => (closed ??= (async () => {
    closing = true;
    logger.info('gateway.closing', {});
    service.endStreams();
    await shutdown(server, opts.shutdownTimeoutMs ?? 5000, logger);
    grpcListening = false;
    await opts.views?.closeAll().catch((err: unknown) => logger.error('gateway.views_close_failed', { err }));
    await opts.exports?.closeAll().catch((err: unknown) => logger.error('gateway.exports_close_failed', { err }));
    await cleanup();
    logger.info('gateway.closed', {});
  })());

  return { grpcPort, httpPort: http?.port ?? 0, socketPath, metrics, close };
}

function serverCredentials(tls: GatewayOptions['tls']): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  if (tls.requireClientCert && !tls.ca) throw new Error('tls.requireClientCert needs tls.ca to verify client certificates');
  const read = (f: string, what: string) => {
    try {
      return fs.readFileSync(f);
    } catch (err) {
      throw new Error(`cannot read TLS ${what} ${f}: ${(err as Error).message}`);
    }
  };
  return grpc.ServerCredentials.createSsl(
    tls.ca ? read(tls.ca, 'CA') : null,
    [{ cert_chain: read(tls.cert, 'certificate'), private_key: read(tls.key, 'key') }],
    !!tls.requireClientCert,
  );
}

/** Let in-flight calls finish, but not forever: a stuck client must not block a restart. */
function shutdown(server: grpc.Server, timeoutMs: number, logger: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      logger.warn('gateway.shutdown_forced', { timeoutMs });
      server.forceShutdown();
      resolve();
    }, timeoutMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
