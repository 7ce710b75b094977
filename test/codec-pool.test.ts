import assert from 'node:assert/strict';
import fs from 'node:fs';
import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { CodecPool } from '../capsule/codec-pool.js';
import { decodeSegment, segmentAddress } from '../capsule/segment-codec.js';

/** thread id -> nice value, from /proc (Linux). */
function threadNice(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      out.set(tid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

describe('codec pool: worker thread priority', function () {
  before(function () {
    if (process.platform !== 'linux' || !fs.existsSync('/proc/self/task')) this.skip();
  });

  for (const nice of [7, 0]) {
    it(`runs its workers at nice ${nice} and leaves every other thread alone`, async () => {
      const before = threadNice();
      const pool = new CodecPool(2, nice);
      try {
        // One job per worker: both have started (and set their priority) once these answer.
        const keys = { hashKey: crypto.randomBytes(32) };
        const blocks = [crypto.randomBytes(4096), crypto.randomBytes(4096)];
        const encoded = await Promise.all(blocks.map((b) => pool.encode(b, 'none', keys)));
        assert.ok(encoded.every((e) => e && e.id.length === 64));
        const after = threadNice();
        const added = [...after].filter(([tid]) => !before.has(tid));
        const atNice = added.filter(([, n]) => n === nice);
        assert.ok(atNice.length >= 2, `two new threads at nice ${nice}: ${JSON.stringify(added)}`);
        for (const [tid, n] of before) if (after.has(tid)) assert.equal(after.get(tid), n, `thread ${tid} kept its priority`);
      } finally {
        await pool.close();
      }
    });
  }
});

describe('codec pool: shared-memory segments', function () {
  let dir: string;
  let pool: CodecPool;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'space-codec-shared-'));
    fs.mkdirSync(path.join(dir, 'tmp'));
    for (let i = 0; i < 256; i++) fs.mkdirSync(path.join(dir, 'segments', i.toString(16).padStart(2, '0')), { recursive: true });
    pool = new CodecPool(2, 0);
  });
  after(async () => {
    await pool.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('encodes and writes a segment that is a view of shared memory where it is: no copy, no transfer, caller keeps it', async () => {
    const keys = { hashKey: crypto.randomBytes(32) };
    const sink = { root: path.join(dir, 'segments'), tmp: path.join(dir, 'tmp'), fsync: true, direct: true };
    // A record: header bytes, then the segment's data (as an NFS WRITE record holds it).
    const record = Buffer.from(new SharedArrayBuffer(100 + (1 << 20)));
    crypto.randomFillSync(record);
    const plain = record.subarray(100);
    const before = Buffer.from(plain);
    const inner = pool as unknown as { copyIn: (b: Buffer) => Buffer };
    const copyIn = inner.copyIn.bind(pool);
    let copies = 0;
    inner.copyIn = (b) => {
      copies++;
      return copyIn(b);
    };
    const r = await pool.encodeAndWrite(plain, 'none', keys, sink, true);
    assert.equal(copies, 0, 'not copied for the worker');
    assert.ok(r && r.written);
    assert.equal(r.id, segmentAddress(keys.hashKey, before), 'addressed by its bytes');
    assert.equal(plain.length, 1 << 20, 'not detached');
    assert.ok(plain.equals(before), 'not changed');
    const stored = fs.readFileSync(path.join(sink.root, r.id.slice(0, 2), r.id));
    assert.ok(decodeSegment(r.id, stored, keys.hashKey, () => Buffer.alloc(0)).equals(before), 'the file holds those bytes');
    // An ordinary buffer of the same bytes gives the same segment (and finds it there).
    const again = await pool.encodeAndWrite(Buffer.from(before), 'none', keys, sink);
    assert.equal(again?.id, r.id);
    assert.equal(again?.written, false);
    assert.equal(copies, 1, 'an ordinary buffer is copied');
    inner.copyIn = copyIn;
  });

  it('gives a shared segment back with the error when the write fails, for a retry', async () => {
    const keys = { hashKey: crypto.randomBytes(32) };
    const sink = { root: path.join(dir, 'segments'), tmp: path.join(dir, 'no-such-dir'), fsync: true, direct: true };
    const plain = Buffer.from(new SharedArrayBuffer(1 << 16));
    crypto.randomFillSync(plain);
    await assert.rejects(pool.encodeAndWrite(plain, 'none', keys, sink, true), (e: Error & { code?: string; plain?: Buffer }) => {
      assert.equal(e.code, 'ENOENT');
      assert.equal(e.plain, plain, 'the caller\'s own bytes, still whole');
      assert.equal(plain.length, 1 << 16);
      return true;
    });
  });
});
