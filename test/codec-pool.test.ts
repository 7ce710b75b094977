import assert from 'node:assert/strict';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { CodecPool } from '../capsule/codec-pool.js';

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
