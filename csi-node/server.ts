/**
 * The CSI gRPC server: Identity always, Controller and/or Node by mode, on a unix socket (the
 * only transport kubelet and the sidecars use). Every call is logged with its method, the
 * volume it concerns and the status it ended with.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createLogger, type Logger } from '../capsule/log.js';
import { createControllerService } from './controller-service.js';
import { createIdentityService } from './identity-service.js';
import { loadCsiProto } from './proto.js';
import type { VolumeBackend } from './volumes.js';
import { startAuthorityProxy, type AuthorityProxy } from './h2/authority-proxy.js';

export type CsiMode = 'controller' | 'node' | 'all';
export const CSI_MODES: readonly CsiMode[] = ['controller', 'node', 'all'];

export interface CsiServerOptions {
  /** unix:///absolute/path/csi.sock (a bare absolute path is accepted too). */
  endpoint: string;
  mode: CsiMode;
  nodeId: string;
  zone?: string;
  /** Required for controller/all; a node plugin may run without one. */
  backend?: VolumeBackend;
  /**
   * The Node service implementation (csi-node/node-service.ts createNodeService(opts) returns
   * it). Registered for node/all; without it the Node methods answer UNIMPLEMENTED.
   */
  nodeService?: grpc.UntypedServiceImplementation;
  logger?: Logger;
  /**
   * Serve the socket through the authority-repairing proxy (csi-node/h2/authority-proxy.ts) so
   * Go clients that send the socket path as :authority get in; grpc-js then listens on
   * `<socket>.grpc`. Default true.
   */
  authorityProxy?: boolean;
}

export interface CsiServer {
  socketPath: string;
  close(): Promise<void>;
}

export function socketPathOf(endpoint: string): string {
  let p = endpoint;
  if (p.startsWith('unix://')) p = p.slice('unix://'.length);
  else if (p.startsWith('unix:')) p = p.slice('unix:'.length);
  if (!path.isAbsolute(p)) throw new Error(`CSI endpoint must be unix:///absolute/path (got ${endpoint})`);
  return p;
}

/** The ids a request names, for the log line. */
function idsOf(req: unknown): Record<string, string> {
  const r = (req ?? {}) as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const k of ['volume_id', 'source_volume_id', 'snapshot_id', 'name'] as const) {
    if (typeof r[k] === 'string' && r[k]) out[k === 'volume_id' ? 'volume' : k] = r[k] as string;
  }
  return out;
}

/** Wrap every unary handler so its outcome is logged once. */
function logged(service: string, impl: grpc.UntypedServiceImplementation, log: Logger): grpc.UntypedServiceImplementation {
  const out: grpc.UntypedServiceImplementation = {};
  for (const [method, handler] of Object.entries(impl)) {
    const h = handler as grpc.handleUnaryCall<unknown, unknown>;
    out[method] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const started = Date.now();
      h(call, (err, value, ...rest) => {
        const code = err ? grpc.status[(err.code ?? grpc.status.UNKNOWN) as grpc.status] : 'OK';
        const fields = { method: `${service}/${method}`, ...idsOf(call.request), code, ms: Date.now() - started, ...(err ? { error: err.details ?? (err as { message?: string }).message } : {}) };
        // Probe runs every few seconds from liveness checks: keep it out of the info log.
        if (method === 'Probe' && !err) log.debug('csi.call', fields);
        else if (err && !['NOT_FOUND', 'ALREADY_EXISTS', 'ABORTED', 'INVALID_ARGUMENT', 'OUT_OF_RANGE', 'UNIMPLEMENTED'].includes(code)) log.error('csi.call', fields);
        else log.info('csi.call', fields);
        callback(err, value, ...(rest as []));
      });
    }) as grpc.UntypedHandleCall;
  }
  return out;
}

export async function startCsiServer(opts: CsiServerOptions): Promise<CsiServer> {
  const log = opts.logger ?? createLogger({ component: 'csi', base: { node: opts.nodeId, mode: opts.mode } });
  if (!CSI_MODES.includes(opts.mode)) throw new Error(`mode must be one of ${CSI_MODES.join(', ')}`);
  const withController = opts.mode === 'controller' || opts.mode === 'all';
  const withNode = opts.mode === 'node' || opts.mode === 'all';
  if (withController && !opts.backend) throw new Error('the controller service needs a volume backend');
  const socketPath = socketPathOf(opts.endpoint);
  const proto = loadCsiProto();

  const server = new grpc.Server();
  server.addService(proto.Identity, logged('Identity', createIdentityService({
    controller: withController,
    zone: opts.zone,
    ready: opts.backend ? () => opts.backend!.ready() : undefined,
  }), log));
  if (withController) {
    server.addService(proto.Controller, logged('Controller', createControllerService({ backend: opts.backend!, zone: opts.zone, logger: log }), log));
  }
  if (withNode) {
    // cli/commands/csi.ts passes createNodeService(...).implementation (csi-node/node-service.ts).
    if (opts.nodeService) server.addService(proto.Node, logged('Node', opts.nodeService, log));
    else log.warn('csi.node_service_missing', { volume: null });
  }

  fs.mkdirSync(path.dirname(socketPath), { recursive: true });
  // A socket file left by a previous run refuses binds; nothing else can be listening on it
  // because the CSI socket belongs to this plugin's pod alone.
  fs.rmSync(socketPath, { force: true });
  const useProxy = opts.authorityProxy ?? true;
  const grpcPath = useProxy ? `${socketPath}.grpc` : socketPath;
  fs.rmSync(grpcPath, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${grpcPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  let proxy: AuthorityProxy | undefined;
  if (useProxy) {
    fs.chmodSync(grpcPath, 0o600);
    try {
      proxy = await startAuthorityProxy(socketPath, grpcPath, log);
    } catch (e) {
      server.forceShutdown();
      throw e;
    }
  }
  log.info('csi.listening', { socket: socketPath, controller: withController, nodeService: withNode && !!opts.nodeService, zone: opts.zone ?? null, authorityProxy: useProxy });

  let closed = false;
  return {
    socketPath,
    async close() {
      if (closed) return;
      closed = true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, 5000);
        server.tryShutdown(() => { clearTimeout(timer); resolve(); });
      });
      await proxy?.close();
      fs.rmSync(socketPath, { force: true });
      if (grpcPath !== socketPath) fs.rmSync(grpcPath, { force: true });
      log.info('csi.stopped', { socket: socketPath });
    },
  };
}
