import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

export function tmpDir(prefix = 'space-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function rmrf(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}

export function sha256(b: Uint8Array): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

/** Deterministic pseudo-random bytes (fast; seeded so failures reproduce). */
export function prand(len: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(len);
  let block = crypto.createHash('sha256').update(`seed:${seed}`).digest();
  const key = block.subarray(0, 32);
  const c = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  c.update(Buffer.alloc(0));
  const z = Buffer.alloc(Math.min(len, 1 << 20));
  let off = 0;
  while (off < len) {
    const n = Math.min(z.length, len - off);
    c.update(z.subarray(0, n)).copy(out, off);
    off += n;
  }
  block = Buffer.alloc(0);
  return out;
}

export async function* chunks(buf: Buffer, size = 64 << 10): AsyncIterable<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

/** Every segment file of a data dir (for corruption tests). */
export function segmentFiles(dataDir: string): string[] {
  const root = path.join(dataDir, 'segments');
  const out: string[] = [];
  for (const sub of fs.existsSync(root) ? fs.readdirSync(root) : []) {
    for (const f of fs.readdirSync(path.join(root, sub))) out.push(path.join(root, sub, f));
  }
  return out;
}
