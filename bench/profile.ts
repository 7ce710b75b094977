/**
 * CPU profiling of this process's main thread for one phase of a benchmark (NFS, NVMe/TCP) (the inspector's
 * sampling profiler, the same data `node --cpu-prof` writes), and a summary of where the time went:
 * self time per function, and per category (crypto, socket writes, file I/O, GC, idle, ...).
 *
 * Only the main thread is sampled: the store's codec workers (segment encode/decode, HMAC and
 * AES-GCM) are separate isolates and show up here only as the time spent waiting for them.
 */
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Wall time covered by the profile, ms. */
  totalMs: number;
  /** Sampled time that was not idle, ms. */
  busyMs: number;
  top: { fn: string; ms: number; pct: number }[];
  categories: { category: string; ms: number; pct: number }[];
}

export class Profiler {
  private readonly session = new Session();

  async start(): Promise<void> {
    this.session.connect();
    await this.session.post('Profiler.enable');
    await this.session.post('Profiler.setSamplingInterval', { interval: 200 });
    await this.session.post('Profiler.start');
  }

  async stop(file?: string): Promise<CpuProfile> {
    const { profile } = (await this.session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
    await this.session.post('Profiler.disable');
    this.session.disconnect();
    if (file) fs.writeFileSync(file, JSON.stringify(profile));
    return profile;
  }
}

function shortUrl(url: string): string {
  if (!url) return '';
  const i = url.lastIndexOf('/dist/');
  if (i >= 0) return url.slice(i + 6);
  return url.replace(/^node:/, '').replace(/^file:\/\//, '');
}

function label(cf: CallFrame): string {
  const fn = cf.functionName || '(anonymous)';
  const where = shortUrl(cf.url);
  return where ? `${fn} ${where}:${cf.lineNumber + 1}` : fn;
}

/** A coarse bucket for a sampled frame (its own function, not its callers). */
function category(cf: CallFrame): string {
  const fn = cf.functionName;
  const url = cf.url;
  if (fn === '(idle)') return 'idle (waiting for I/O or workers)';
  if (fn === '(garbage collector)') return 'garbage collector';
  if (fn === '(program)') return 'native / runtime (program)';
  if (/createHmac|Hmac|Hash|digest|update|Cipher|Decipher|final/.test(fn) && /crypto/.test(url)) return 'crypto on the main thread';
  if (/writev|writeGeneric|writeBuffer|_writeGeneric|doWrite|handleWriteReq|Socket\._write|onWriteComplete|afterWriteDispatched|cork|uncork/.test(fn)) return 'socket writes';
  if (/onStreamRead|readableAddChunk|onread|emit|addChunk/.test(fn) && /stream|net|events/.test(url)) return 'socket reads / events';
  if (/fs\b|fs\/promises|node:fs|internal\/fs/.test(url)) return 'file I/O (JS side)';
  if (/better-sqlite3|sqlite/.test(url) || /^(all|get|run|prepare)$/.test(fn)) return 'sqlite';
  if (/copy|concat|alloc|subarray|from/.test(fn) && /buffer/.test(url)) return 'buffer copies / allocation';
  if (/gateway\/nfs\/(xdr|rpc)/.test(url)) return 'RPC framing + XDR';
  if (/gateway\/nfs\//.test(url)) return 'NFS procedures';
  if (/gateway\/nvme\//.test(url)) return 'NVMe/TCP transport + commands';
  if (/capsule\//.test(url)) return 'store (JS)';
  if (/^node:|internal\//.test(url) || url === '') return 'node internals / other native';
  return 'other JS';
}

export function summarize(p: CpuProfile, topN = 12): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  const byFn = new Map<string, number>();
  const byCat = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const cf = byId.get(id)!.callFrame;
    total += us;
    if (cf.functionName === '(idle)') idle += us;
    const l = label(cf);
    byFn.set(l, (byFn.get(l) ?? 0) + us);
    const c = category(cf);
    byCat.set(c, (byCat.get(c) ?? 0) + us);
  }
  const pct = (us: number) => Math.round((1000 * us) / Math.max(1, total)) / 10;
  const ms = (us: number) => Math.round(us / 100) / 10;
  return {
    totalMs: ms(total),
    busyMs: ms(total - idle),
    top: [...byFn].sort((a, b) => b[1] - a[1]).slice(0, topN).map(([fn, us]) => ({ fn, ms: ms(us), pct: pct(us) })),
    categories: [...byCat].sort((a, b) => b[1] - a[1]).map(([c, us]) => ({ category: c, ms: ms(us), pct: pct(us) })),
  };
}
