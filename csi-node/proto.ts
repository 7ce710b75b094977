/**
 * Loads csi-node/proto/csi.proto (CSI v1 wire protocol) at runtime. Like gateway/proto.ts, the
 * .proto is found from the package root because tsc does not copy it into dist/.
 *
 * Loader options are shared by the Identity/Controller services here and the Node service in
 * csi-node/node-service.ts: snake_case fields exactly as on the wire, int64 as decimal strings
 * (CSI sizes may exceed 2^53 in principle, and kubelet sends them as int64), enums by name,
 * and `oneofs` so the set member of a oneof (access_type, content source type) is named.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { packageRoot } from '../gateway/proto.js';

export const CSI_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const CSI_PACKAGE = 'csi.v1';

export function csiProtoPath(): string {
  return join(packageRoot(), 'csi-node', 'proto', 'csi.proto');
}

export interface CsiProto {
  Identity: grpc.ServiceDefinition;
  Controller: grpc.ServiceDefinition;
  Node: grpc.ServiceDefinition;
}

export interface CsiClients {
  Identity: grpc.ServiceClientConstructor;
  Controller: grpc.ServiceClientConstructor;
  Node: grpc.ServiceClientConstructor;
}

let cached: { services: CsiProto; clients: CsiClients } | undefined;

function load(): { services: CsiProto; clients: CsiClients } {
  if (cached) return cached;
  const definition = protoLoader.loadSync(csiProtoPath(), CSI_LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    csi: { v1: CsiClients };
  };
  const clients = pkg.csi.v1;
  cached = {
    clients,
    services: {
      Identity: clients.Identity.service,
      Controller: clients.Controller.service,
      Node: clients.Node.service,
    },
  };
  return cached;
}

/** Parse the proto once per process and return the three service definitions. */
export function loadCsiProto(): CsiProto {
  return load().services;
}

/** Client constructors for the same services (tests, tooling). */
export function loadCsiClients(): CsiClients {
  return load().clients;
}

// ---- shared handler helpers (Identity, Controller and Node services all use them) ----------

/** A failure with the gRPC status CSI prescribes for it (the spec's error tables). */
export class CsiError extends Error {
  constructor(readonly code: grpc.status, message: string) {
    super(message);
    this.name = 'CsiError';
  }
}

export const csiError = (code: grpc.status, message: string) => new CsiError(code, message);

const SPACE_CODES: Record<string, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  DATA_LOSS: grpc.status.DATA_LOSS,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  INTERNAL: grpc.status.INTERNAL,
};

/**
 * Map any thrown value to a gRPC status: CsiError as is, SpaceError (capsule store, gateway
 * client) by its code name, anything else INTERNAL.
 */
export function toGrpcStatus(err: unknown): { code: grpc.status; details: string } {
  if (err instanceof CsiError) return { code: err.code, details: err.message };
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' ? SPACE_CODES[e.code] : undefined;
  return { code: code ?? grpc.status.INTERNAL, details: typeof e?.message === 'string' ? e.message : String(err) };
}

/** An async function as a grpc-js unary handler; rejections become statuses via toGrpcStatus. */
export function unary<Req, Res>(fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err: unknown) => {
        const s = toGrpcStatus(err);
        callback({ code: s.code, details: s.details, name: 'CsiError', message: s.details, metadata: new grpc.Metadata() });
      },
    );
  };
}
