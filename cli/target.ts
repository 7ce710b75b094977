/**
 * Which capsule API a command talks to: a remote gateway (--gateway), the process that owns the
 * local data dir (spacectl serve / project mount record their socket in the owner lock), or the
 * data dir itself, opened in this process.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CapsuleApi } from '../capsule/api.js';
import { readOwner } from '../capsule/lock.js';
import { Store } from '../capsule/store.js';
import { SpaceError } from '../capsule/errors.js';
import { GatewayClient } from '../gateway/client.js';
import type { Flags } from './args.js';

export interface Target {
  api: CapsuleApi;
  /** The local Store when this process opened the data dir; undefined when talking gRPC. */
  store?: Store;
  client?: GatewayClient;
  dataDir: string;
  close(): Promise<void>;
}

export function dataDirOf(flags: Flags): string {
  return path.resolve(flags.str('data-dir') ?? process.env.SPACE_HOME ?? path.join(os.homedir(), '.space'));
}

export function clientTls(flags: Flags): ConstructorParameters<typeof GatewayClient>[1] {
  const ca = flags.str('tls-ca');
  const cert = flags.str('tls-cert');
  const key = flags.str('tls-key');
  if (!ca && !cert && !key) return {};
  if (!!cert !== !!key) throw new SpaceError('INVALID_ARGUMENT', '--tls-cert and --tls-key go together');
  const read = (f: string | undefined) => (f ? fs.readFileSync(f) : undefined);
  return { tls: { ca: read(ca), cert: read(cert), key: read(key), serverName: flags.str('tls-server-name') } };
}

async function waitForEndpoint(dir: string, ms: number): Promise<string | undefined> {
  const until = Date.now() + ms;
  for (;;) {
    const owner = readOwner(dir);
    if (!owner) return undefined;
    if (owner.endpoint) return owner.endpoint;
    if (Date.now() > until) throw new SpaceError('UNAVAILABLE', `data dir ${dir} is held by process ${owner.pid}, which serves no API; stop it or wait`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function openTarget(flags: Flags): Promise<Target> {
  const gateway = flags.str('gateway');
  const dataDir = dataDirOf(flags);
  const tls = clientTls(flags);
  // Commands read all their flags before opening a target: anything left over is a typo.
  flags.rejectUnknown();
  if (gateway) {
    const client = new GatewayClient(gateway, tls);
    return { api: client, client, dataDir, close: async () => client.close() };
  }
  const endpoint = await waitForEndpoint(dataDir, 5000);
  if (endpoint) {
    const client = new GatewayClient(endpoint);
    return { api: client, client, dataDir, close: async () => client.close() };
  }
  const store = Store.open(dataDir, {});
  return { api: store, store, dataDir, close: () => store.close() };
}

/** Open the target, run `fn` on its API, always close it. */
export async function withTarget<T>(flags: Flags, fn: (api: CapsuleApi, t: Target) => Promise<T>): Promise<T> {
  const t = await openTarget(flags);
  try {
    return await fn(t.api, t);
  } finally {
    await t.close();
  }
}
