import assert from 'node:assert/strict';
import { ExponentialBackoff, WorkQueue, type QueueMetrics } from '../operator/runtime/workqueue.js';
import { sleep, waitFor } from './helpers/fake-api.js';

describe('runtime: work queue', () => {
  it('does not duplicate a key that is already queued', async () => {
    const q = new WorkQueue({ name: 't' });
    q.add('a');
    q.add('b');
    q.add('a');
    assert.equal(q.len(), 2);
    assert.equal(await q.get(), 'a');
    assert.equal(await q.get(), 'b');
    assert.equal(q.len(), 0);
  });

  it('parks a key added while it is processed and queues it again after done()', async () => {
    const q = new WorkQueue({ name: 't' });
    q.add('a');
    const k = await q.get();
    assert.equal(k, 'a');
    q.add('a');
    q.add('a');
    assert.equal(q.len(), 0, 'not handed to a second worker while processing');
    let second: string | undefined;
    void q.get().then((v) => (second = v));
    await sleep(5);
    assert.equal(second, undefined);
    q.done('a');
    await waitFor(() => second === 'a', 'parked key delivered after done');
    q.done('a');
    assert.equal(q.len(), 0, 'the two adds during processing collapsed into one');
  });

  it('never gives one key to two workers at once', async () => {
    const q = new WorkQueue({ name: 't' });
    const active = new Set<string>();
    let maxConcurrent = 0;
    let overlap = false;
    const processed = new Map<string, number>();
    const worker = async () => {
      for (;;) {
        const key = await q.get();
        if (key === undefined) return;
        if (active.has(key)) overlap = true;
        active.add(key);
        maxConcurrent = Math.max(maxConcurrent, active.size);
        await sleep(Math.random() * 3);
        processed.set(key, (processed.get(key) ?? 0) + 1);
        active.delete(key);
        q.done(key);
      }
    };
    const workers = Array.from({ length: 4 }, worker);
    for (let round = 0; round < 30; round++) {
      for (const k of ['a', 'b', 'c', 'd', 'e']) q.add(k);
      await sleep(1);
    }
    await waitFor(() => q.len() === 0 && q.inFlight().length === 0, 'queue drained');
    assert.equal(overlap, false);
    assert.ok(maxConcurrent > 1, 'different keys ran in parallel');
    assert.deepEqual([...processed.keys()].sort(), ['a', 'b', 'c', 'd', 'e']);
    await q.shutDown();
    await Promise.all(workers);
  });

  it('backs off exponentially per key up to the cap, and forget() resets', () => {
    const b = new ExponentialBackoff();
    assert.deepEqual([b.when('x'), b.when('x'), b.when('x'), b.when('x')], [5, 10, 20, 40]);
    assert.equal(b.when('y'), 5, 'per key');
    assert.equal(b.retries('x'), 4);
    for (let i = 0; i < 100; i++) b.when('x');
    assert.equal(b.when('x'), 1_000_000, 'capped at 1000 s');
    b.forget('x');
    assert.equal(b.when('x'), 5);
    const custom = new ExponentialBackoff({ baseDelayMs: 100, maxDelayMs: 300 });
    assert.deepEqual([custom.when('k'), custom.when('k'), custom.when('k')], [100, 200, 300]);
  });

  it('addRateLimited delivers the key after its backoff and counts retries', async () => {
    const q = new WorkQueue({ name: 't', baseDelayMs: 1, maxDelayMs: 20 });
    for (let i = 0; i < 4; i++) {
      q.addRateLimited('k');
      assert.equal(q.numRequeues('k'), i + 1);
      assert.equal(await q.get(), 'k');
      q.done('k');
    }
    q.forget('k');
    assert.equal(q.numRequeues('k'), 0);
  });

  it('addAfter delays a key, and the earliest pending deadline wins', async () => {
    const q = new WorkQueue({ name: 't' });
    q.addAfter('late', 20);
    assert.equal(q.len(), 0);
    assert.equal(await q.get(), 'late');
    q.done('late');
    q.addAfter('k', 600_000);
    q.addAfter('k', 1);
    q.addAfter('k', 300_000);
    assert.equal(await q.get(), 'k');
    q.done('k');
    await q.shutDown();
  });

  it('shuts down gracefully: no new work, in-flight items finish', async () => {
    const q = new WorkQueue({ name: 't' });
    q.add('a');
    q.add('b');
    q.addAfter('c', 5);
    const held = await q.get();
    assert.equal(held, 'a');
    let drained: boolean | undefined;
    void q.shutDown(60_000).then((v) => (drained = v));
    assert.equal(await q.get(), undefined, 'no more work after shutDown');
    q.add('d');
    assert.equal(q.len(), 0, 'adds are ignored');
    await sleep(10);
    assert.equal(drained, undefined, 'waits for the in-flight item');
    q.done('a');
    await waitFor(() => drained === true, 'drained after done');
  });

  it('shutDown gives up after its timeout when an item never finishes', async () => {
    const q = new WorkQueue({ name: 't' });
    q.add('stuck');
    await q.get();
    assert.equal(await q.shutDown(10), false);
  });

  it('reports adds, depth, durations and retries to its metrics hooks', async () => {
    const seen = { added: 0, depth: [] as number[], queued: 0, worked: 0, retried: 0 };
    const m: QueueMetrics = {
      added: () => seen.added++,
      depth: (n) => seen.depth.push(n),
      queued: () => seen.queued++,
      worked: () => seen.worked++,
      retried: () => seen.retried++,
    };
    const q = new WorkQueue({ name: 't', metrics: m, baseDelayMs: 1 });
    q.add('a');
    q.add('a');
    q.add('b');
    assert.equal(seen.added, 2);
    assert.equal(seen.depth.at(-1), 2);
    assert.equal(await q.get(), 'a');
    q.done('a');
    assert.equal(await q.get(), 'b');
    q.done('b');
    q.addRateLimited('a');
    assert.equal(await q.get(), 'a');
    q.done('a');
    assert.equal(seen.retried, 1);
    assert.equal(seen.queued, 3);
    assert.equal(seen.worked, 3);
    const unfinished = q.unfinishedWork();
    assert.equal(unfinished.totalSeconds, 0);
  });
});
