import assert from 'node:assert/strict';
import type { Request, Result, ReconcileContext } from '../operator/runtime/controller.js';
import { Manager } from '../operator/runtime/manager.js';
import { RuntimeMetrics } from '../operator/runtime/metrics.js';
import { ApiError, CAPSULE_VIEWS, CAPSULES, objectKey, type KubeObject } from '../operator/runtime/object-api.js';
import { silentLogger } from '../capsule/log.js';
import { FakeApi, sleep, waitFor } from './helpers/fake-api.js';

const capsule = (name: string, namespace = 'ns'): KubeObject => ({
  apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name, namespace }, spec: {},
});
const view = (name: string, capsuleRef: string, namespace = 'ns'): KubeObject => ({
  apiVersion: 'space.io/v1alpha1', kind: 'CapsuleView', metadata: { name, namespace }, spec: { capsuleRef: { name: capsuleRef }, protocol: 'nfs' },
});

/** A reconciler whose behaviour each test scripts. */
class Scripted {
  readonly calls: string[] = [];
  readonly ctxs: ReconcileContext[] = [];
  constructor(private readonly fn: (req: Request, n: number) => Promise<Result | void> | Result | void = () => {}) {}
  count(key: string): number {
    return this.calls.filter((k) => k === key).length;
  }
  async reconcile(req: Request, ctx: ReconcileContext): Promise<Result | void> {
    const key = req.namespace ? `${req.namespace}/${req.name}` : req.name;
    this.calls.push(key);
    this.ctxs.push(ctx);
    return this.fn(req, this.count(key));
  }
}

async function counter(m: RuntimeMetrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await m.registry.getSingleMetric(name)?.get()) as { values: Array<{ labels: Record<string, unknown>; value: number }> } | undefined;
  const v = metric?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}

describe('runtime: controller and manager', () => {
  let managers: Manager[] = [];
  const manager = (api: FakeApi, extra: Partial<ConstructorParameters<typeof Manager>[0]> = {}) => {
    const m = new Manager({
      api, logger: silentLogger, metrics: new RuntimeMetrics({ defaultMetrics: false }),
      informerBackoff: { initialMs: 2, maxMs: 20 }, ...extra,
    });
    managers.push(m);
    return m;
  };
  afterEach(async () => {
    await Promise.all(managers.map((m) => m.stop()));
    managers = [];
  });

  it('reconciles existing and new objects, passing the key and a logger', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('a'));
    const m = manager(api);
    const r = new Scripted();
    m.addController({ name: 'capsule', for: CAPSULES, reconciler: r });
    await m.start();
    await waitFor(() => r.count('ns/a') >= 1, 'initial reconcile of a');
    await api.create(CAPSULES, capsule('b'));
    await waitFor(() => r.count('ns/b') >= 1, 'b reconciled on add');
    const ctx = r.ctxs[0];
    assert.equal(ctx.key, 'ns/a');
    assert.equal(ctx.controller, 'capsule');
    assert.equal(typeof ctx.logger.info, 'function');
    assert.equal(m.cache(CAPSULES).get('ns/b')?.metadata.name, 'b', 'the cache is readable by reconcilers');
  });

  it('an error retries with backoff until success, then forgets the backoff', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('flaky'));
    const m = manager(api);
    const r = new Scripted((_req, n) => {
      if (n <= 3) throw new Error(`attempt ${n} fails`);
    });
    const c = m.addController({ name: 'flaky', for: CAPSULES, reconciler: r, rateLimiter: { baseDelayMs: 1, maxDelayMs: 10 } });
    await m.start();
    await waitFor(() => r.count('ns/flaky') === 4, 'three failures and a success');
    assert.deepEqual(r.ctxs.map((x) => x.retries), [0, 1, 2, 3]);
    assert.equal(c.workQueue()?.numRequeues('ns/flaky'), 0, 'forgotten after success');
    assert.equal(await counter(m.metrics, 'controller_runtime_reconcile_total', { controller: 'flaky', result: 'error' }), 3);
    assert.equal(await counter(m.metrics, 'controller_runtime_reconcile_total', { controller: 'flaky', result: 'success' }), 1);
    assert.equal(await counter(m.metrics, 'controller_runtime_reconcile_errors_total', { controller: 'flaky' }), 3);
    assert.equal(await counter(m.metrics, 'workqueue_retries_total', { name: 'flaky' }), 3);
    await sleep(30);
    assert.equal(r.count('ns/flaky'), 4, 'no reconcile after success without a change');
  });

  it('requeueAfterMs and requeue schedule another reconcile', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('poll'));
    await api.create(CAPSULES, capsule('again'));
    const m = manager(api);
    const r = new Scripted((req, n) => {
      if (req.name === 'poll' && n < 3) return { requeueAfterMs: 5 };
      if (req.name === 'again' && n < 2) return { requeue: true };
    });
    m.addController({ name: 'requeue', for: CAPSULES, reconciler: r, rateLimiter: { baseDelayMs: 1 } });
    await m.start();
    await waitFor(() => r.count('ns/poll') === 3 && r.count('ns/again') === 2, 'requeued');
    assert.equal(await counter(m.metrics, 'controller_runtime_reconcile_total', { controller: 'requeue', result: 'requeue_after' }), 2);
    assert.equal(await counter(m.metrics, 'controller_runtime_reconcile_total', { controller: 'requeue', result: 'requeue' }), 1);
  });

  it('a 409 Conflict from the reconciler retries as a requeue, not as an error', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('stale'));
    const m = manager(api);
    const r = new Scripted((_req, n) => {
      if (n < 3) throw new ApiError(409, 'Conflict', 'the object has been modified');
    });
    m.addController({ name: 'conflict', for: CAPSULES, reconciler: r, rateLimiter: { baseDelayMs: 1 } });
    await m.start();
    await waitFor(() => r.count('ns/stale') === 3, 'retried after conflicts');
    await waitFor(async () => (await counter(m.metrics, 'controller_runtime_reconcile_total', { controller: 'conflict', result: 'success' })) === 1, 'succeeded');
    assert.equal(await counter(m.metrics, 'controller_runtime_reconcile_total', { controller: 'conflict', result: 'requeue' }), 2);
    assert.equal(await counter(m.metrics, 'controller_runtime_reconcile_errors_total', { controller: 'conflict' }), 0);
  });

  it('periodic resync re-enqueues every cached key', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('a'));
    await api.create(CAPSULES, capsule('b'));
    const m = manager(api);
    const r = new Scripted();
    m.addController({ name: 'resync', for: CAPSULES, reconciler: r, resyncPeriodMs: 10 });
    await m.start();
    await waitFor(() => r.count('ns/a') >= 3 && r.count('ns/b') >= 3, 'resynced without any change');
  });

  it('maps secondary objects to primary keys (a Capsule change reconciles the views that use it)', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('data'));
    await api.create(CAPSULES, capsule('logs'));
    await api.create(CAPSULE_VIEWS, view('v1', 'data'));
    await api.create(CAPSULE_VIEWS, view('v2', 'data'));
    await api.create(CAPSULE_VIEWS, view('v3', 'logs'));
    const m = manager(api);
    const views = m.cache(CAPSULE_VIEWS);
    const r = new Scripted();
    m.addController({
      name: 'capsuleview', for: CAPSULE_VIEWS, reconciler: r,
      watches: [{
        type: CAPSULES,
        map: (c) => views.list(c.metadata.namespace)
          .filter((v) => (v.spec as { capsuleRef: { name: string } }).capsuleRef.name === c.metadata.name)
          .map((v) => objectKey(v)),
      }],
    });
    await m.start();
    await waitFor(() => ['ns/v1', 'ns/v2', 'ns/v3'].every((k) => r.count(k) >= 1), 'initial reconciles');
    await sleep(20);
    const before = { v1: r.count('ns/v1'), v2: r.count('ns/v2'), v3: r.count('ns/v3') };
    const data = await api.get(CAPSULES, 'data', 'ns');
    await api.replaceStatus(CAPSULES, { ...data, status: { phase: 'Ready' } });
    await waitFor(() => r.count('ns/v1') > before.v1 && r.count('ns/v2') > before.v2, 'views of the changed capsule reconciled');
    await sleep(20);
    assert.equal(r.count('ns/v3'), before.v3, 'the view of another capsule is left alone');
    assert.ok(!r.calls.includes('ns/data'), 'capsule keys are never reconciled as views');
  });

  it('runs several workers but never one key twice at once', async () => {
    const api = new FakeApi();
    for (const n of ['a', 'b', 'c', 'd']) await api.create(CAPSULES, capsule(n));
    const m = manager(api);
    const active = new Set<string>();
    let overlap = false;
    let maxActive = 0;
    const lastSeen = new Map<string, unknown>();
    const r = new Scripted(async (req) => {
      lastSeen.set(req.name, (m.cache(CAPSULES).get(`ns/${req.name}`)?.spec as { i?: number }).i);
      if (active.has(req.name)) overlap = true;
      active.add(req.name);
      maxActive = Math.max(maxActive, active.size);
      await sleep(2);
      active.delete(req.name);
    });
    m.addController({ name: 'parallel', for: CAPSULES, reconciler: r, workers: 3 });
    await m.start();
    for (let i = 0; i < 10; i++) {
      for (const n of ['a', 'b', 'c', 'd']) {
        const o = await api.get(CAPSULES, n, 'ns');
        await api.replace(CAPSULES, { ...o, spec: { i } });
      }
    }
    // Level-triggered: however the updates coalesce, each key's last reconcile saw its last spec.
    await waitFor(() => ['a', 'b', 'c', 'd'].every((n) => lastSeen.get(n) === 9) && active.size === 0, 'every key reconciled at its latest spec');
    assert.equal(overlap, false);
    assert.ok(maxActive <= 3);
    assert.equal(await counter(m.metrics, 'controller_runtime_max_concurrent_reconciles', { controller: 'parallel' }), 3);
  });

  it('graceful shutdown stops taking work and lets the in-flight reconcile finish', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('slow'));
    const m = manager(api);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let finished = false;
    const r = new Scripted(async (req) => {
      if (req.name === 'slow') {
        await gate;
        finished = true;
      }
    });
    m.addController({ name: 'drain', for: CAPSULES, reconciler: r });
    await m.start();
    await waitFor(() => r.count('ns/slow') === 1, 'reconcile in flight');
    let stopped = false;
    const stopping = m.stop().then(() => (stopped = true));
    await sleep(20);
    assert.equal(stopped, false, 'waits for the in-flight reconcile');
    assert.ok(m.notReady()?.includes('shutting down'));
    await api.create(CAPSULES, capsule('late'));
    release();
    await stopping;
    assert.equal(finished, true);
    assert.ok(!r.calls.includes('ns/late'), 'no new work after shutdown began');
  });

  it('is ready once its informers have synced, and recovers from a slow API', async () => {
    const api = new FakeApi();
    api.failNext('list', 2).slow('list', 20);
    const m = manager(api);
    m.addController({ name: 'ready', for: CAPSULES, reconciler: new Scripted() });
    assert.ok(m.notReady()?.startsWith('informers'));
    await m.start();
    await waitFor(() => m.notReady() === null, 'ready after sync');
  });
});
