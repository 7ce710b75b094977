/**
 * Worker side of the codec pool: hashes, compresses and encrypts (or verifies and decrypts)
 * one segment per message, so the store's event loop only moves bytes and metadata.
 */
import { parentPort } from 'node:worker_threads';
import { decodeSegment, encodeSegment, segmentAddress } from './segment-codec.js';
import { ownedCopy, ownsBuffer, type CodecJob, type CodecResult } from './codec-pool.js';

const zero = new Map<number, Buffer>();
function isZero(b: Buffer): boolean {
  let z = zero.get(b.length);
  if (!z) zero.set(b.length, (z = Buffer.alloc(b.length)));
  return b.equals(z);
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
        const blob = encodeSegment(id, plain, job.codec, { hashKey: Buffer.from(job.hashKey), dataKey });
        const out = ownsBuffer(blob) ? blob : ownedCopy(blob);
        res = { seq: job.seq, ok: true, id, blob: out.buffer as ArrayBuffer };
      }
    } else {
      const blob = Buffer.from(job.blob);
      const plain = decodeSegment(job.id, blob, Buffer.from(job.hashKey), () => {
        if (!job.dataKey) throw new Error('segment is encrypted but no data key was given');
        return Buffer.from(job.dataKey);
      });
      const out = ownsBuffer(plain) ? plain : ownedCopy(plain);
      res = { seq: job.seq, ok: true, plain: out.buffer as ArrayBuffer };
    }
  } catch (e) {
    res = { seq: job.seq, ok: false, error: (e as Error).message };
  }
  const transfer: ArrayBuffer[] = [];
  if (res.ok && res.blob) transfer.push(res.blob);
  if (res.ok && res.plain) transfer.push(res.plain);
  parentPort!.postMessage(res, transfer);
});
