/**
 * Loads gateway/proto/capsule.proto at runtime. tsc does not copy .proto files into dist/, so
 * the file is found from the package root (the nearest directory above this module holding
 * package.json) — the same path works from the sources and from dist/gateway/.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const SERVICE_NAME = 'space.capsule.v1.CapsuleService';

/**
 * The loader options every peer must share: snake_case field names as in the .proto, 64-bit
 * integers as JS numbers (sizes stay below 2^53), enums as their names, and `oneofs` so an
 * unset `optional` field stays undefined instead of being filled with its default.
 */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export function packageRoot(from: string = fileURLToPath(import.meta.url)): string {
  let dir = dirname(from);
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${from}`);
    dir = up;
  }
}

export function protoPath(): string {
  return join(packageRoot(), 'gateway', 'proto', 'capsule.proto');
}

interface Loaded {
  definition: protoLoader.PackageDefinition;
  service: grpc.ServiceDefinition;
  Client: grpc.ServiceClientConstructor;
}

let cached: Loaded | undefined;

/** Parse the proto once per process; server and clients share the result. */
export function loadCapsuleProto(): Loaded {
  if (cached) return cached;
  const definition = protoLoader.loadSync(protoPath(), LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    space: { capsule: { v1: { CapsuleService: grpc.ServiceClientConstructor } } };
  };
  const Client = pkg.space.capsule.v1.CapsuleService;
  cached = { definition, service: Client.service, Client };
  return cached;
}

/**
 * Message-size ceiling for both directions. Put and Read move 1 MiB chunks and the client
 * splits large writes into WRITE_PIECE pieces, so this only needs headroom for the framing.
 * Keeping it small bounds what one call can buffer: grpc-js queues up to 16 messages per
 * stream before it stops reading from the connection, i.e. about 16 MiB for a Put.
 */
export const CHUNK = 1024 * 1024;
export const WRITE_PIECE = CHUNK;
export const MAX_MESSAGE_BYTES = CHUNK + 64 * 1024;
