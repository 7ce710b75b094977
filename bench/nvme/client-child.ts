/**
 * The client side of the NVMe/TCP benchmark, in a process of its own (forked by bench/nvme.ts,
 * which runs the servers): the raw TCP baseline client and the NVMe/TCP initiator
 * (bench/nvme/initiator.ts). Jobs arrive as IPC messages and are run one at a time; each reply
 * carries the time the job's I/O took, measured here from the first submission to the last
 * completion (connection setup excluded). The process lives across jobs, so its JIT stays warm.
 */
import net from 'node:net';
import { IoOpcode } from '../../gateway/nvme/constants.js';
import { buildSqe } from '../../gateway/nvme/command.js';
import { rng } from '../common.js';
import { check, connectController, readSqe, writeSqe, type ControllerSession, type HostQueue } from './initiator.js';
import {
  FrameReader, OP_READ, OP_RESP, OP_WRITE, WritePattern, header,
  type Job, type RandJob, type RandResult, type Reply, type SeqJob, type SeqResult,
} from './workload.js';

const MiB = 1 << 20;
const pattern = new WritePattern();

/**
 * Both clients send what they submit in one event-loop turn with one write (cork now, uncork on
 * the next tick), as the targets batch their replies; the Linux initiator batches likewise. The
 * baseline client and the NVMe initiator are treated the same.
 */
function batchWrites(socket: net.Socket): () => void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return () => {
    if (corked) return;
    corked = true;
    socket.cork();
    process.nextTick(uncork);
  };
}

/** The baseline client: one TCP connection, many requests in flight, matched by id. */
class TcpClient {
  private readonly reader = new FrameReader((op) => op === (OP_RESP | OP_READ));
  private readonly pending = new Map<number, { resolve: (d: Buffer | undefined) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private readonly batch: () => void;

  private constructor(private readonly socket: net.Socket) {
    this.batch = batchWrites(socket);
    socket.prependListener('data', this.batch);
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.reader.push(c, (_op, id, _len, data) => {
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      p.resolve(data);
    }));
    const fail = (e: Error) => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('baseline connection closed')));
  }

  static async open(host: string, port: number): Promise<TcpClient> {
    const s = net.connect(port, host);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    return new TcpClient(s);
  }

  request(op: number, length: number, data?: Buffer): Promise<Buffer | undefined> {
    const id = this.nextId++ >>> 0;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.batch();
      this.socket.write(header(op, id, length));
      if (data) this.socket.write(data);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

async function openNvme(job: { host: string; port: number; subnqn?: string }): Promise<ControllerSession> {
  if (!job.subnqn) throw new Error('nvme job without subnqn');
  // KATO 5 s: the Linux host's default, so the target's per-command keep-alive bookkeeping is in the figures.
  return connectController({ host: job.host, port: job.port, subnqn: job.subnqn, ioQueues: 1, queueSize: 256, katoMs: 5000 });
}

/** The I/O queue, with writes batched per tick: submissions, and what the initiator sends in reply to an R2T. */
function batchedQueue(s: ControllerSession): { q: HostQueue; batch: () => void } {
  const q = s.io[0]!;
  const batch = batchWrites(q.socket);
  q.socket.prependListener('data', batch);
  return { q, batch };
}

/** `qd` workers take the next I/O index until all `count` are done. */
async function runSeq(count: number, qd: number, io: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const worker = async () => {
    while (next < count) await io(next++);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(qd, count) }, worker));
  return (performance.now() - t0) / 1000;
}

function writeData(job: SeqJob, i: number): Buffer {
  const off = i * job.ioBytes;
  const j = Math.floor(off / MiB);
  const within = off - j * MiB;
  return pattern.block(j, job.stampBase + j).subarray(within, within + job.ioBytes);
}

async function seq(job: SeqJob): Promise<SeqResult> {
  if (MiB % job.ioBytes !== 0 || job.totalBytes % job.ioBytes !== 0) throw new Error('ioBytes must divide 1 MiB and the total');
  if (job.qd * job.ioBytes >= (WritePattern.SLOTS / 2) * MiB) throw new Error('too much data in flight for the write pattern ring');
  const count = job.totalBytes / job.ioBytes;
  if (job.kind === 'tcp-seq') {
    const c = await TcpClient.open(job.host, job.port);
    try {
      const secs = await runSeq(count, job.qd, async (i) => {
        if (job.op === 'write') {
          await c.request(OP_WRITE, job.ioBytes, writeData(job, i));
        } else {
          const d = await c.request(OP_READ, job.ioBytes);
          if (d?.length !== job.ioBytes) throw new Error(`baseline read returned ${d?.length} bytes`);
        }
      });
      return { bytes: job.totalBytes, secs };
    } finally {
      c.close();
    }
  }
  const s = await openNvme(job);
  try {
    const { q, batch } = batchedQueue(s);
    const bs = s.blockSize;
    const nlb = job.ioBytes / bs;
    const span = Math.min(job.totalBytes, job.rangeBytes ?? Infinity);
    if (span > s.blocks * bs) throw new Error(`namespace has ${s.blocks * bs} bytes, job wants ${span}`);
    let flushSecs: number | undefined;
    const t0 = performance.now();
    const wrap = job.rangeBytes ?? Infinity;
    if (job.op === 'write' && job.rangeBytes !== undefined) throw new Error('rangeBytes is for reads');
    await runSeq(count, job.qd, async (i) => {
      const lba = ((i * job.ioBytes) % wrap) / bs;
      batch();
      if (job.op === 'write') {
        check(await q.submit(writeSqe(lba, nlb), writeData(job, i)), 'write');
      } else {
        const r = check(await q.submit(readSqe(lba, nlb, bs)), 'read');
        if (r.data?.length !== job.ioBytes) throw new Error(`read returned ${r.data?.length} bytes`);
      }
    });
    if (job.flush) {
      const f0 = performance.now();
      check(await q.submit(buildSqe({ opcode: IoOpcode.Flush, cid: 0, nsid: 1 })), 'flush');
      flushSecs = (performance.now() - f0) / 1000;
    }
    const secs = (performance.now() - t0) / 1000;
    let verified: number | undefined;
    if (job.verify) {
      const rand = rng(777);
      for (verified = 0; verified < job.verify; verified++) {
        const i = Math.floor(rand() * (span / job.ioBytes));
        const off = i * job.ioBytes;
        const r = check(await q.submit(readSqe(off / bs, nlb, bs)), 'verify read');
        if (!r.data?.equals(pattern.expected(off, job.ioBytes, job.stampBase))) throw new Error(`verify: read at ${off} differs from what was written`);
      }
    }
    return { bytes: job.totalBytes, secs, flushSecs, verified };
  } finally {
    s.close();
  }
}

async function rand(job: RandJob): Promise<RandResult> {
  const units = Math.floor(job.rangeBytes / job.ioBytes);
  const lat: number[] = [];
  let ios = 0;
  let submit: (off: number) => Promise<void>;
  let close: () => void;
  if (job.kind === 'tcp-rand') {
    const c = await TcpClient.open(job.host, job.port);
    submit = async () => {
      const d = await c.request(OP_READ, job.ioBytes);
      if (d?.length !== job.ioBytes) throw new Error(`baseline read returned ${d?.length} bytes`);
    };
    close = () => c.close();
  } else {
    const s = await openNvme(job);
    const { q, batch } = batchedQueue(s);
    const bs = s.blockSize;
    submit = async (off) => {
      batch();
      const r = check(await q.submit(readSqe(off / bs, job.ioBytes / bs, bs)), 'read');
      if (r.data?.length !== job.ioBytes) throw new Error(`read returned ${r.data?.length} bytes`);
    };
    close = () => s.close();
  }
  try {
    const deadline = performance.now() + job.seconds * 1000;
    const worker = async (w: number) => {
      const r = rng(job.seed * 1000 + w + 1);
      while (performance.now() < deadline) {
        const off = Math.floor(r() * units) * job.ioBytes;
        const t = performance.now();
        await submit(off);
        lat.push(performance.now() - t);
        ios++;
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: job.qd }, (_, w) => worker(w)));
    const secs = (performance.now() - t0) / 1000;
    const sorted = Float64Array.from(lat).sort();
    const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 1000;
    return { ios, secs, p50Us: q(0.5), p99Us: q(0.99), maxUs: sorted[sorted.length - 1]! * 1000 };
  } finally {
    close();
  }
}

async function run(job: Job): Promise<Reply> {
  try {
    const c0 = process.cpuUsage();
    const result = job.kind === 'tcp-seq' || job.kind === 'nvme-seq' ? await seq(job as SeqJob) : await rand(job as RandJob);
    const cpu = process.cpuUsage(c0);
    if ('bytes' in result) result.clientCpuSecs = (cpu.user + cpu.system) / 1e6;
    return { ok: true, result };
  } catch (e) {
    return { ok: false, error: (e as Error).stack ?? String(e) };
  }
}

if (!process.send) {
  console.error('client-child.js is forked by bench/nvme.js (it needs an IPC channel)');
  process.exit(2);
}
// One job at a time: the parent waits for each reply before sending the next.
process.on('message', (job: Job) => {
  void run(job).then((reply) => process.send!(reply));
});
process.on('disconnect', () => process.exit(0));
