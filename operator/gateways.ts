/**
 * Which gateway owns a capsule, and a gRPC client for it.
 *
 * Gateways are found either from a fixed list (`--gateway a:7420,b:7420`, and standalone mode)
 * or from the Endpoints of the gateway Service (in a cluster). A capsule maps to a gateway by
 * rendezvous hashing of the capsule id over the gateways' stable names (StatefulSet pod names),
 * so adding a replica moves only the capsules the new replica wins, and every operator replica
 * computes the same owner without talking to the others.
 */
import crypto from 'node:crypto';
import { GatewayClient, type GatewayClientOptions } from '../gateway/client.js';
import type { ObjectApi, ResourceType } from './runtime/object-api.js';

export interface GatewayHandle {
  /** Stable identity used for placement (pod name, or the address for a static list). */
  name: string;
  address: string;
  client: GatewayClient;
}

export interface GatewayDirectory {
  /** The gateway that owns `capsuleId`; throws when no gateway is known. */
  forCapsule(capsuleId: string): Promise<GatewayHandle>;
  all(): Promise<GatewayHandle[]>;
  close(): void;
}

/** Highest-random-weight choice: the gateway whose hash with the capsule id is largest. */
export function rendezvousOwner<T extends { name: string }>(capsuleId: string, gateways: T[]): T | undefined {
  let best: T | undefined;
  let bestScore = '';
  for (const g of gateways) {
    const score = crypto.createHash('sha256').update(`${capsuleId}\0${g.name}`).digest('hex');
    if (best === undefined || score > bestScore) {
      best = g;
      bestScore = score;
    }
  }
  return best;
}

class ClientCache {
  private readonly clients = new Map<string, GatewayClient>();
  constructor(private readonly opts: GatewayClientOptions) {}
  get(address: string): GatewayClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new GatewayClient(address, this.opts);
      this.clients.set(address, c);
    }
    return c;
  }
  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

export class StaticGateways implements GatewayDirectory {
  private readonly cache: ClientCache;
  constructor(private readonly addresses: string[], opts: GatewayClientOptions = {}) {
    if (addresses.length === 0) throw new Error('no gateway address given');
    this.cache = new ClientCache(opts);
  }
  async all(): Promise<GatewayHandle[]> {
    return this.addresses.map((address) => ({ name: address, address, client: this.cache.get(address) }));
  }
  async forCapsule(capsuleId: string): Promise<GatewayHandle> {
    return rendezvousOwner(capsuleId, await this.all())!;
  }
  close(): void {
    this.cache.close();
  }
}

export const ENDPOINTS: ResourceType = { group: '', version: 'v1', plural: 'endpoints', kind: 'Endpoints', namespaced: true };

interface EndpointsObject {
  subsets?: { addresses?: { ip: string; hostname?: string; targetRef?: { name?: string } }[]; ports?: { name?: string; port: number }[] }[];
}

/** Gateways behind a (headless) Service, re-read at most every `ttlMs`. */
export class ServiceGateways implements GatewayDirectory {
  private readonly cache: ClientCache;
  private known: { at: number; list: GatewayHandle[] } | undefined;
  constructor(
    private readonly api: ObjectApi,
    private readonly namespace: string,
    private readonly service: string,
    private readonly portName = 'grpc',
    opts: GatewayClientOptions = {},
    private readonly ttlMs = 10_000,
  ) {
    this.cache = new ClientCache(opts);
  }

  async all(): Promise<GatewayHandle[]> {
    if (this.known && Date.now() - this.known.at < this.ttlMs) return this.known.list;
    const ep = (await this.api.get(ENDPOINTS, this.service, this.namespace)) as unknown as EndpointsObject;
    const list: GatewayHandle[] = [];
    for (const s of ep.subsets ?? []) {
      const port = (s.ports ?? []).find((p) => p.name === this.portName) ?? s.ports?.[0];
      if (!port) continue;
      for (const a of s.addresses ?? []) {
        const address = `${a.ip.includes(':') ? `[${a.ip}]` : a.ip}:${port.port}`;
        list.push({ name: a.hostname ?? a.targetRef?.name ?? a.ip, address, client: this.cache.get(address) });
      }
    }
    this.known = { at: Date.now(), list };
    return list;
  }

  async forCapsule(capsuleId: string): Promise<GatewayHandle> {
    const owner = rendezvousOwner(capsuleId, await this.all());
    if (!owner) throw new Error(`no ready gateway behind service ${this.namespace}/${this.service}`);
    return owner;
  }

  close(): void {
    this.cache.close();
  }
}
