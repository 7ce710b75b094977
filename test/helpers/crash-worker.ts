/**
 * Child process for the kill -9 tests: mutates a store forever (put, write, snapshot, clone,
 * gc, delete) and appends each committed snapshot's digest to a journal *after* the commit.
 * The parent kills it at a random moment and checks that every journaled version is intact.
 */
import fs from 'node:fs';
import crypto from 'node:crypto';
import { Store } from '../../capsule/store.js';
import { validatePolicy } from '../../capsule/policy.js';

const [dir, journal, seedArg] = process.argv.slice(2) as [string, string, string];
let seed = Number(seedArg) >>> 0 || 1;
const rnd = (n: number) => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return (seed >>> 8) % n;
};

async function* gen(size: number): AsyncIterable<Buffer> {
  for (let off = 0; off < size; off += 256 << 10) yield crypto.randomBytes(Math.min(256 << 10, size - off));
}

async function sha(store: Store, id: string, version?: number): Promise<string> {
  const h = crypto.createHash('sha256');
  for await (const c of store.readStream(id, 'content', { version })) h.update(c);
  return h.digest('hex');
}

const store = Store.open(dir);
const capsules = ['k-plain', 'k-enc', 'k-zstd'];
const policies = [{}, { encryption: true }, { compression: 'zstd', encryption: true }];
for (let i = 0; i < capsules.length; i++) {
  try {
    await store.get(capsules[i]!);
  } catch {
    await store.create({ id: capsules[i]!, policy: validatePolicy({ ...policies[i], segmentSize: '256KiB' }) });
    await store.put(capsules[i]!, 'content', gen(1 << 20));
  }
}
process.stdout.write('ready\n');
for (let n = 0; ; n++) {
  const id = capsules[rnd(capsules.length)]!;
  switch (rnd(6)) {
    case 0:
      await store.put(id, 'content', gen(rnd(3 << 20) + 1));
      break;
    case 1:
    case 2: {
      const size = (await store.getattr(id, 'content')).size;
      await store.write(id, 'content', rnd(size + 1000), crypto.randomBytes(rnd(600_000) + 1));
      break;
    }
    case 3: {
      const v = await store.snapshot(id);
      const digest = await sha(store, id, v);
      fs.appendFileSync(journal, JSON.stringify({ id, v, digest }) + '\n');
      break;
    }
    case 4: {
      const c = await store.clone(id, { id: `tmp-${process.pid}-${n}` });
      await store.write(c.id, 'content', 0, crypto.randomBytes(300_000));
      await store.delete(c.id);
      break;
    }
    case 5:
      await store.gc();
      break;
  }
}
