/** Shared fixtures of the gateway tests: a real gateway on a temp data dir, raw gRPC clients. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../capsule/log.js';
import { startGateway, type Gateway, type GatewayOptions } from '../gateway/server.js';
import { loadCapsuleProto } from '../gateway/proto.js';

export const MiB = 1024 * 1024;

export function tempDir(prefix = 'space-gw-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TestGateway extends Gateway {
  dataDir: string;
  logs: Record<string, unknown>[];
}

/** A real gateway (real Store) on ephemeral ports; its JSON log lines are kept for assertions. */
export async function startTestGateway(dataDir: string, extra: Partial<GatewayOptions> = {}): Promise<TestGateway> {
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ component: 'gateway', level: 'debug', write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const gw = await startGateway({ dataDir, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0', logger, ...extra });
  return Object.assign(gw, { dataDir, logs });
}

export const sha256 = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

/** Yield `data` in pieces of `size` bytes (an odd size exercises re-chunking on both sides). */
export async function* pieces(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

export async function collect(it: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of it) out.push(b);
  return out;
}

/** Every segment file under <dataDir>/segments (found by walking, not by knowing the layout). */
export function segmentFiles(dataDir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  walk(path.join(dataDir, 'segments'));
  return out.sort();
}

export type RawClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/** A plain grpc-js client built from the .proto, for assertions on raw statuses. */
export function rawClient(address: string, creds = grpc.credentials.createInsecure()): RawClient {
  const { Client } = loadCapsuleProto();
  return new Client(address, creds) as unknown as RawClient;
}

export function rawUnary(c: RawClient, method: string, req: object): Promise<{ err: grpc.ServiceError | null; res: unknown }> {
  return new Promise((resolve) => {
    c[method]!.call(c, req, (err: grpc.ServiceError | null, res: unknown) => resolve({ err, res }));
  });
}

export async function httpGet(port: number, p: string): Promise<{ status: number; body: string; type: string | null }> {
  const r = await fetch(`http://127.0.0.1:${port}${p}`);
  return { status: r.status, body: await r.text(), type: r.headers.get('content-type') };
}

/** Value of one sample in Prometheus text format, e.g. metric('x_total{op="Put",code="OK"}'). */
export function metricValue(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    if (sp > 0 && line.slice(0, sp) === sample) return Number(line.slice(sp + 1));
  }
  return undefined;
}
