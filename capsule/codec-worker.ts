/**
 * Worker side of the codec pool: hashes, compresses and encrypts (or verifies and decrypts)
 * one segment per message, so the store's event loop only moves bytes and metadata.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import os from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { decodeSegment, encodeSegmentParts, segmentAddress } from './segment-codec.js';
import { ownedCopy, ownsBuffer, type CodecJob, type CodecResult, type SegmentSink } from './codec-pool.js';
import { SegmentFileWriter } from './direct-write.js';
import { SegmentFileReader, readUntilEnd } from './direct-read.js';

// This thread only (Linux: setpriority on the calling thread); see defaultWorkerNice.
const nice = (workerData as { nice?: number } | null)?.nice ?? 0;
if (nice > 0) {
  try {
    os.setPriority(0, Math.min(19, os.getPriority(0) + nice));
  } catch {
    // not permitted or not supported: run at the process's priority
  }
}

/** Thrown from the key lookup when the segment was encrypted under a key this job lacks. */
class NeedKey extends Error {
  constructor(readonly keyId: number) {
    super(`needs data key ${keyId}`);
  }
}

const zero = new Map<number, Buffer>();
function isZero(b: Buffer): boolean {
  let z = zero.get(b.length);
  if (!z) zero.set(b.length, (z = Buffer.alloc(b.length)));
  return b.equals(z);
}

/** One writer per store directory: each learns on its own whether its filesystem takes O_DIRECT. */
const writers = new Map<string, SegmentFileWriter>();

/**
 * Write aside and rename into place, so an existing segment file is always complete (another
 * writer may skip rewriting it on sight). Returns false when the segment exists already.
 */
function writeSegment(sink: SegmentSink, id: string, parts: Buffer[]): boolean {
  const dest = path.join(sink.root, id.slice(0, 2), id);
  if (fs.existsSync(dest)) return false;
  let writer = writers.get(sink.root);
  if (!writer) writers.set(sink.root, (writer = new SegmentFileWriter(sink.direct)));
  const tmp = path.join(sink.tmp, `${id}.${crypto.randomBytes(6).toString('hex')}`);
  // A spare file becomes the temp file by rename (gone meanwhile: a new file is created).
  let reuse = false;
  if (sink.spare) {
    try {
      fs.renameSync(sink.spare, tmp);
      reuse = true;
    } catch {
      // not there any more
    }
    sink.spare = undefined;
  }
  try {
    writer.writeNew(tmp, parts, sink.fsync && !sink.syncLater, reuse);
    fs.renameSync(tmp, dest);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return true;
}

/**
 * A whole segment file, read into one of three kinds of buffer:
 * - encrypted capsules: the buffer of a SegmentFileReader, reused (with O_DIRECT where the store
 *   and its filesystem allow). Decoding never hands the file bytes out (the plaintext is the
 *   decipher's output), and a fresh megabyte per segment costs first-touch page faults that
 *   dominate in some VMs.
 * - unencrypted segments the store will cache: the store's pooled slot (SegmentFileReader.readInto),
 *   where the plaintext stays as a view.
 * - other unencrypted ones: a buffer of its own. The plaintext of an uncompressed segment is then a
 *   view of it and goes to the store as it is (transferred); reading into a reused buffer would
 *   cost one more copy of every segment.
 */
function readOwnBuffer(file: string): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    // A file truncated underneath us comes back short: decoding reports the damage.
    return readUntilEnd(fd, Buffer.allocUnsafeSlow(size), size, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** One reader per store directory and setting: each learns on its own whether O_DIRECT works there. */
const readers = new Map<string, SegmentFileReader>();
function readerFor(file: string, direct: boolean): SegmentFileReader {
  const key = `${direct ? 'direct' : 'buffered'}:${path.dirname(path.dirname(file))}`;
  let r = readers.get(key);
  if (!r) readers.set(key, (r = new SegmentFileReader(direct)));
  return r;
}

parentPort!.on('message', (job: CodecJob) => {
  let res: CodecResult;
  try {
    if (job.op === 'encode') {
      const plain = Buffer.from(job.plain, job.offset, job.length);
      if (isZero(plain)) res = { seq: job.seq, ok: true, id: null };
      else {
        const id = segmentAddress(Buffer.from(job.hashKey), plain);
        const dataKey = job.dataKey ? { id: job.dataKeyId!, key: Buffer.from(job.dataKey) } : undefined;
        const parts = encodeSegmentParts(id, plain, job.codec, { hashKey: Buffer.from(job.hashKey), dataKey });
        const clen = parts.reduce((n, p) => n + p.length, 0);
        if (job.sink) {
          // Written as parts: joining them first would touch another fresh megabyte per segment.
          const written = writeSegment(job.sink, id, parts);
          const joined = written ? undefined : Buffer.concat(parts, clen);
          const out = joined && (ownsBuffer(joined) ? joined : ownedCopy(joined));
          res = { seq: job.seq, ok: true, id, clen, written, blob: out?.buffer as ArrayBuffer | undefined };
        } else {
          const blob = Buffer.concat(parts, clen);
          const out = ownsBuffer(blob) ? blob : ownedCopy(blob);
          res = { seq: job.seq, ok: true, id, clen, blob: out.buffer as ArrayBuffer };
        }
      }
    } else {
      let blob: Buffer | null;
      // Whether the blob's buffer is this job's alone (then a plaintext view of it can be sent).
      let ownsBlob = true;
      if (job.file) {
        try {
          if (job.dataKey) {
            blob = readerFor(job.file, job.direct ?? false).readAll(job.file);
            ownsBlob = false;
          } else {
            // Into the store's pooled slot (null: the file does not fit there).
            blob = job.slot ? readerFor(job.file, job.direct ?? false).readInto(job.file, Buffer.from(job.slot.memory, job.slot.offset, job.slot.bytes)) : null;
            if (blob) ownsBlob = false;
            else blob = readOwnBuffer(job.file);
          }
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
          blob = null;
        }
      } else blob = Buffer.from(job.blob!);
      if (!blob) res = { seq: job.seq, ok: true, missing: true };
      else {
        // Encrypted: the plaintext is decrypted into the store's slot when it is given one.
        const into = job.dataKey && job.slot ? Buffer.from(job.slot.memory, job.slot.offset, job.slot.bytes) : undefined;
        const plain = decodeSegment(job.id, blob, Buffer.from(job.hashKey), (keyId) => {
          if (job.dataKey && job.dataKeyId === keyId) return Buffer.from(job.dataKey);
          throw new NeedKey(keyId);
        }, false, into);
        if (job.slot && plain.buffer === job.slot.memory) {
          // verified where it was read: the store's slot already holds the plaintext
          res = { seq: job.seq, ok: true, inSlot: true, plainOffset: plain.byteOffset, plainLength: plain.length };
        } else if (ownsBlob && plain.buffer === blob.buffer) {
          // a view of the buffer read for it alone: send that buffer, say where the bytes are
          res = { seq: job.seq, ok: true, plain: plain.buffer as ArrayBuffer, plainOffset: plain.byteOffset, plainLength: plain.length };
        } else {
          const out = ownsBuffer(plain) ? plain : ownedCopy(plain);
          res = { seq: job.seq, ok: true, plain: out.buffer as ArrayBuffer };
        }
      }
    }
  } catch (e) {
    if (e instanceof NeedKey) {
      parentPort!.postMessage({ seq: job.seq, ok: true, needKey: e.keyId });
      return;
    }
    const code = (e as NodeJS.ErrnoException).code;
    res = { seq: job.seq, ok: false, error: code ? `${code}: ${(e as Error).message}` : (e as Error).message };
  }
  // A spare file this job did not use (a hole, a segment already stored, an error) goes.
  if (job.op === 'encode' && job.sink?.spare) {
    try {
      fs.rmSync(job.sink.spare, { force: true });
    } catch {
      // left in tmp/ for the next open's cleanup
    }
  }
  const transfer: ArrayBuffer[] = [];
  if (res.ok && res.blob) transfer.push(res.blob);
  if (res.ok && res.plain) transfer.push(res.plain);
  // The segment bytes we were given go back for reuse (nothing here refers to them any more).
  // Shared memory stays where it is: it was never ours (codec-pool.ts, encodeAndWrite).
  if (job.op === 'encode' && job.plain instanceof ArrayBuffer && job.plain.byteLength > 0 && !transfer.includes(job.plain)) {
    res.spent = job.plain;
    transfer.push(job.plain);
  }
  parentPort!.postMessage(res, transfer);
});
