/**
 * A small pool of worker threads for segment crypto. AES-256-GCM and HMAC-SHA-256 over 1 MiB
 * segments are the bulk of put/get; on the event loop they serialise with everything else.
 * In workers they run on every core while the loop keeps doing file I/O and metadata.
 * Falls back to running inline when workers cannot start (the result is the same, only slower).
 */
import os from 'node:os';
import fsp from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import type { Compression } from './policy.js';
import { BufferRecycler } from './buffer-recycler.js';
import { decodeSegment, encodeSegment, segmentAddress } from './segment-codec.js';

/** Where and how a worker writes the segments it encodes (see SegmentFiles for the layout). */
export interface SegmentSink {
  root: string;
  tmp: string;
  fsync: boolean;
  /** Write segment bodies with O_DIRECT where the filesystem allows it (see direct-write.ts). */
  direct: boolean;
  /**
   * The caller syncs the file itself before anything refers to it (SegmentFiles.sync, started
   * as each file is written): the worker writes it and goes on to the next segment.
   */
  syncLater?: boolean;
  /**
   * A spare segment file to reuse for this segment (SegmentFiles.takeSpare), in tmp/. The job
   * owns it: reused, or deleted when the segment needs no file.
   */
  spare?: string;
}

export type CodecJob =
  | { op: 'encode'; seq: number; plain: ArrayBuffer | SharedArrayBuffer; offset: number; length: number; codec: Compression; hashKey: Uint8Array; dataKey?: Uint8Array; dataKeyId?: number; sink?: SegmentSink }
  | { op: 'decode'; seq: number; id: string; blob?: ArrayBuffer; file?: string; direct?: boolean; slot?: SlotRef; hashKey: Uint8Array; dataKey?: Uint8Array; dataKeyId?: number };

/**
 * A page-aligned slot of shared memory (segment-pool.ts) a decode job may read its file into.
 * When the plaintext is a view of it (unencrypted, uncompressed), the result says `inSlot` and
 * carries no bytes.
 */
export interface SlotRef {
  memory: SharedArrayBuffer;
  offset: number;
  bytes: number;
}

export type CodecResult =
  | { seq: number; ok: true; id?: string | null; blob?: ArrayBuffer; plain?: ArrayBuffer; plainOffset?: number; plainLength?: number; inSlot?: boolean; clen?: number; written?: boolean; missing?: boolean; needKey?: number; spent?: ArrayBuffer }
  | { seq: number; ok: false; error: string; spent?: ArrayBuffer };

/** Spare copy buffers kept per size (see CodecPool.copyIn): enough for the writers in flight. */
const SPARES_PER_SIZE = 16;

export interface EncodeKeys {
  hashKey: Buffer;
  dataKey?: { id: number; key: Buffer };
}

interface Pending {
  resolve: (r: CodecResult) => void;
}

class WorkerSlot {
  busy = 0;
  constructor(readonly worker: Worker) {}
}

export class CodecPool {
  private readonly slots: WorkerSlot[] = [];
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private broken = false;

  constructor(size = defaultPoolSize(), nice = defaultWorkerNice()) {
    try {
      for (let i = 0; i < size; i++) {
        const w = new Worker(new URL('./codec-worker.js', import.meta.url), { workerData: { nice } });
        const slot = new WorkerSlot(w);
        w.on('message', (r: CodecResult) => {
          if (--slot.busy === 0) w.unref();
          // A failed job's bytes go to its caller, which may retry with them (encodeAndWrite).
          if (r.spent && r.ok) this.spares.give(r.spent);
          const p = this.pending.get(r.seq);
          this.pending.delete(r.seq);
          p?.resolve(r);
        });
        w.on('error', () => this.fail());
        // After the listeners: adding a 'message' listener refs the port again.
        w.unref(); // an idle pool never keeps the process alive
        this.slots.push(slot);
      }
    } catch {
      this.fail();
    }
  }

  /**
   * The segment bytes a worker encodes travel in a buffer of their own (transferred, not
   * cloned). Those buffers come back with the result and are reused for the next segment of the
   * same size: in this VM first touches of fresh memory cost more than the copy itself.
   */
  private readonly spares = new BufferRecycler({ maxPerSize: SPARES_PER_SIZE });

  private copyIn(plain: Buffer): Buffer {
    const out = this.segmentBuffer(plain.byteLength);
    out.set(plain);
    return out;
  }

  /**
   * A buffer of `size` bytes (contents undefined) that owns its memory, for filling and then
   * handing to `encode*` with `transfer`: a recycled one when a worker has given one back.
   */
  segmentBuffer(size: number): Buffer {
    return this.spares.take(size);
  }

  get inline(): boolean {
    return this.broken || this.slots.length === 0;
  }

  private fail(): void {
    this.broken = true;
    for (const [seq, p] of this.pending) p.resolve({ seq, ok: false, error: 'codec worker failed' });
    this.pending.clear();
  }

  private run(job: CodecJob, transfer: ArrayBuffer[]): Promise<CodecResult> {
    job.hashKey = compactKey(job.hashKey);
    if (job.dataKey) job.dataKey = compactKey(job.dataKey);
    // Least busy, starting the scan at a rotating index so ties spread over every worker.
    const start = this.seq % this.slots.length;
    let slot = this.slots[start]!;
    for (let i = 1; i < this.slots.length; i++) {
      const cand = this.slots[(start + i) % this.slots.length]!;
      if (cand.busy < slot.busy) slot = cand;
    }
    // Ref'd only while it has work: pending jobs keep the process alive, an idle pool does not.
    if (slot.busy++ === 0) slot.worker.ref();
    return new Promise((resolve) => {
      this.pending.set(job.seq, { resolve });
      slot.worker.postMessage(job, transfer);
    });
  }

  /**
   * Address and encode one segment. With `transfer`, a `plain` that owns its whole ArrayBuffer
   * moves to the worker without a copy (the caller must not touch it afterwards); otherwise the
   * bytes are copied. Returns null for an all-zero segment (a hole).
   */
  async encode(plain: Buffer, codec: Compression, keys: EncodeKeys, transfer = false): Promise<{ id: string; blob: Buffer } | null> {
    if (this.inline) return encodeInline(plain, codec, keys);
    const own = transfer && ownsBuffer(plain) ? plain : this.copyIn(plain);
    const seq = ++this.seq;
    const r = await this.run({ op: 'encode', seq, plain: own.buffer as ArrayBuffer, offset: 0, length: own.length, codec, hashKey: keys.hashKey, dataKey: keys.dataKey?.key, dataKeyId: keys.dataKey?.id }, [own.buffer as ArrayBuffer]);
    if (!r.ok) {
      if (r.spent) this.spares.give(r.spent);
      throw new Error(r.error);
    }
    if (!r.id) return null;
    return { id: r.id, blob: Buffer.from(r.blob!) };
  }

  /**
   * Address, encode and write one segment into `sink` (in the worker: the event loop does no
   * file I/O for it). A segment whose file exists already is not rewritten; its blob comes back
   * instead, so the caller can still write it if the file vanishes before it is referenced.
   */
  async encodeAndWrite(plain: Buffer, codec: Compression, keys: EncodeKeys, sink: SegmentSink, transfer = false): Promise<{ id: string; clen: number; written: boolean; blob?: Buffer } | null> {
    if (this.inline) {
      const enc = encodeInline(plain, codec, keys);
      return enc && { id: enc.id, clen: enc.blob.length, written: false, blob: enc.blob };
    }
    // Shared memory (NFS WRITE records, rpc.ts) goes to the worker by reference: it reads the
    // bytes where they are, and the caller keeps them unchanged until this resolves. Other
    // bytes go in a buffer of their own, moved (transferred), not cloned.
    const shared = plain.buffer instanceof SharedArrayBuffer;
    const own = shared ? plain : transfer && ownsBuffer(plain) ? plain : this.copyIn(plain);
    const length = own.length; // own is detached (length 0) once transferred
    const seq = ++this.seq;
    const r = await this.run(
      { op: 'encode', seq, plain: own.buffer, offset: own.byteOffset, length, codec, hashKey: keys.hashKey, dataKey: keys.dataKey?.key, dataKeyId: keys.dataKey?.id, sink },
      shared ? [] : [own.buffer as ArrayBuffer],
    );
    if (!r.ok) {
      // Keep the errno (ENOSPC, EDQUOT, EROFS, ...) so callers map a full disk like any other,
      // and give the segment's bytes back: with `transfer` the caller no longer has them, and
      // a write that failed on a full disk can be tried again once space is freed.
      const code = /^(E[A-Z]+): /.exec(r.error)?.[1];
      const back = shared ? plain : r.spent && r.spent.byteLength >= length ? Buffer.from(r.spent, 0, length) : undefined;
      throw Object.assign(new Error(r.error), code ? { code } : {}, back ? { plain: back } : {});
    }
    if (!r.id) return null;
    return { id: r.id, clen: r.clen!, written: !!r.written, blob: r.blob ? Buffer.from(r.blob) : undefined };
  }

  /** Verify and decode a stored segment (throws with the reason on any damage). */
  async decode(id: string, blob: Buffer, hashKey: Buffer, dataKey: Buffer | undefined): Promise<Buffer> {
    if (this.inline) return decodeSegment(id, blob, hashKey, () => dataKey ?? missingKey());
    const own = ownsBuffer(blob) ? blob : ownedCopy(blob);
    const seq = ++this.seq;
    const r = await this.run({ op: 'decode', seq, id, blob: own.buffer as ArrayBuffer, hashKey, dataKey }, [own.buffer as ArrayBuffer]);
    if (!r.ok) throw new Error(r.error);
    return Buffer.from(r.plain!);
  }

  /**
   * Read a segment file and verify/decode it in a worker. `dataKeyFor` gives the key for the
   * key id in the segment's header; the capsule's own key is sent along and the rare segment
   * written under another key (a clone's origin) costs one more round trip.
   * Resolves null when the file does not exist. `direct`: encrypted segment files may be read
   * with O_DIRECT (see direct-read.ts). `slot`: shared memory the file may be read into; the
   * plaintext comes back as a view of it when it can (its `buffer` is then `slot.memory`).
   */
  async readAndDecode(id: string, file: string, hashKey: Buffer, own: { id: number; key: Buffer } | undefined, dataKeyFor: (keyId: number) => Buffer, direct = false, slot?: SlotRef): Promise<Buffer | null> {
    if (this.inline) {
      let blob: Buffer;
      try {
        blob = await fsp.readFile(file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
      return decodeSegment(id, blob, hashKey, dataKeyFor);
    }
    let key = own;
    for (let attempt = 0; attempt < 2; attempt++) {
      const seq = ++this.seq;
      const r = await this.run({ op: 'decode', seq, id, file, direct, slot, hashKey, dataKey: key?.key, dataKeyId: key?.id }, []);
      if (!r.ok) throw new Error(r.error);
      if (r.missing) return null;
      if (r.needKey !== undefined) {
        key = { id: r.needKey, key: dataKeyFor(r.needKey) };
        continue;
      }
      if (r.inSlot) return Buffer.from(slot!.memory, r.plainOffset!, r.plainLength!);
      return Buffer.from(r.plain!, r.plainOffset ?? 0, r.plainLength);
    }
    throw new Error('segment names a data key that cannot be resolved');
  }

  async close(): Promise<void> {
    const slots = this.slots.splice(0);
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}

const compactKeys = new WeakMap<Uint8Array, Uint8Array>();

/**
 * A key as a Uint8Array that owns its (32-byte) buffer. Keys often live in Node's shared 8 KiB
 * allocation pool, and the structured clone of a view copies its whole ArrayBuffer: every job
 * would carry 8 KiB or more per key to the worker instead of 32 bytes.
 */
function compactKey(key: Uint8Array): Uint8Array {
  if (key.byteOffset === 0 && key.byteLength === key.buffer.byteLength) return key;
  let c = compactKeys.get(key);
  if (!c) compactKeys.set(key, (c = new Uint8Array(key)));
  return c;
}

/** True when `b` is the whole of its ArrayBuffer, so transferring that buffer moves only `b`. */
export function ownsBuffer(b: Buffer): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && !(b.buffer instanceof SharedArrayBuffer);
}

/**
 * A copy in an ArrayBuffer of its own. Never Buffer.from(): small buffers come from Node's shared
 * allocation pool, and transferring the pool would detach it under every other small Buffer.
 */
export function ownedCopy(b: Uint8Array): Buffer {
  const out = Buffer.allocUnsafeSlow(b.byteLength);
  out.set(b);
  return out;
}

function missingKey(): never {
  throw new Error('segment is encrypted but no data key was given');
}

const zeroBuffers = new Map<number, Buffer>();

/** memcmp against a shared zero buffer: far faster than a byte loop on 1 MiB segments. */
export function isZero(b: Buffer): boolean {
  let z = zeroBuffers.get(b.length);
  if (!z) {
    z = Buffer.alloc(b.length);
    if (zeroBuffers.size < 16) zeroBuffers.set(b.length, z);
  }
  return b.equals(z);
}

function encodeInline(plain: Buffer, codec: Compression, keys: EncodeKeys): { id: string; blob: Buffer } | null {
  if (isZero(plain)) return null;
  const id = segmentAddress(keys.hashKey, plain);
  return { id, blob: encodeSegment(id, plain, codec, keys) };
}

function defaultPoolSize(): number {
  const env = Number(process.env.SPACE_CODEC_WORKERS);
  if (Number.isInteger(env) && env >= 0) return env;
  return Math.max(1, Math.min(4, os.availableParallelism()));
}

/**
 * Scheduling niceness of the codec worker threads (SPACE_CODEC_NICE, default 10; 0 keeps the
 * process's own). The workers do bulk crypto and segment file I/O; the event loop and the
 * protocol threads (FUSE, sockets) answer requests. At a lower priority the bulk work takes
 * every idle cycle but never holds a core a request turn is waiting for: on two cores, capsule
 * FUSE reads went from 540-630 to 600-650 MiB/s and writes from 250-300 to 305-345 (same run,
 * alternating). Only these threads change: on Linux, setpriority(PRIO_PROCESS, 0) is per thread.
 */
function defaultWorkerNice(): number {
  const env = Number(process.env.SPACE_CODEC_NICE);
  if (process.env.SPACE_CODEC_NICE !== undefined && Number.isInteger(env) && env >= 0 && env <= 19) return env;
  return 10;
}

let shared: CodecPool | undefined;

/** One pool per process, shared by every open store (workers are unref'd). */
export function sharedCodecPool(): CodecPool {
  return (shared ??= new CodecPool());
}
