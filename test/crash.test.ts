import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Store } from '../capsule/store.js';
import { tmpDir, rmrf } from './helpers/tmp.js';

const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'crash-worker.js');

/** Run the worker until it is ready, let it work for `ms`, then kill -9 it. */
function runAndKill(dir: string, journal: string, seed: number, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker, dir, journal, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.stdout.once('data', () => setTimeout(() => child.kill('SIGKILL'), ms));
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve();
      else reject(new Error(`worker exited on its own (${code}): ${err}`));
    });
  });
}

describe('crash safety (kill -9)', function () {
  this.timeout(240_000);
  let dir: string;
  before(() => (dir = tmpDir('space-crash-')));
  after(() => rmrf(dir));

  it('never damages a committed version and cleans up on restart', async () => {
    const data = path.join(dir, 'data');
    const journal = path.join(dir, 'journal');
    fs.writeFileSync(journal, '');
    let cleaned = 0;
    let staleLocks = 0;
    const rounds = 10;
    for (let round = 0; round < rounds; round++) {
      await runAndKill(data, journal, round + 1, 600 + ((round * 337) % 1500));
      const store = Store.open(data);
      try {
        cleaned += store.recovery.tempFilesRemoved + store.recovery.orphanSegmentsRemoved;
        if (store.recovery.staleLockRemoved) staleLocks++;
        const entries = fs.readFileSync(journal, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: string; v: number; digest: string });
        for (const e of entries) {
          const h = crypto.createHash('sha256');
          for await (const c of store.readStream(e.id, 'content', { version: e.v })) h.update(c);
          assert.equal(h.digest('hex'), e.digest, `capsule ${e.id} version ${e.v} changed after crash round ${round}`);
        }
        // the live head must be readable too (it is some committed state)
        for (const id of ['k-plain', 'k-enc', 'k-zstd']) {
          for await (const c of store.readStream(id, 'content')) void c;
        }
        const report = await store.fsck();
        assert.deepEqual(report.problems, [], `fsck after crash round ${round}`);
        assert.equal(report.orphanSegments, 0);
      } finally {
        await store.close();
      }
    }
    const versions = fs.readFileSync(journal, 'utf8').trim().split('\n').filter(Boolean).length;
    assert.ok(versions > 0, 'the worker committed at least one snapshot');
    assert.equal(staleLocks, rounds, 'every restart took over the dead owner lock');
    // Writes were in flight at most kills: recovery must have had something to clean at least once.
    assert.ok(cleaned > 0, 'recovery removed temp or orphan segments at least once');
  });
});
