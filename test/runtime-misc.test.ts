import assert from 'node:assert/strict';
import { Gauge } from 'prom-client';
import { findCondition, isFalse, isTrue, removeCondition, setCondition, type Condition } from '../operator/runtime/conditions.js';
import { EventRecorder } from '../operator/runtime/events.js';
import { Manager } from '../operator/runtime/manager.js';
import { RuntimeMetrics } from '../operator/runtime/metrics.js';
import { CAPSULES, type KubeObject } from '../operator/runtime/object-api.js';
import { createLogger, silentLogger } from '../capsule/log.js';
import { FakeApi, networkError, waitFor } from './helpers/fake-api.js';

const capsule: KubeObject = { apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'c', namespace: 'ns', uid: 'u1' }, spec: {} };

describe('runtime: conditions', () => {
  it('keeps lastTransitionTime unless the status changes', () => {
    const conds: Condition[] = [];
    const t0 = new Date('2025-01-01T00:00:00.123Z');
    assert.equal(setCondition(conds, { type: 'Ready', status: 'False', reason: 'Creating', message: 'writing segments' }, 1, t0), true);
    assert.equal(conds[0].lastTransitionTime, '2025-01-01T00:00:00Z');
    assert.equal(conds[0].observedGeneration, 1);

    const t1 = new Date('2025-01-01T00:01:00Z');
    assert.equal(setCondition(conds, { type: 'Ready', status: 'False', reason: 'Creating', message: 'writing segments' }, 1, t1), false, 'no change');
    assert.equal(setCondition(conds, { type: 'Ready', status: 'False', reason: 'Replicating', message: 'zone b' }, 2, t1), true);
    assert.equal(conds[0].lastTransitionTime, '2025-01-01T00:00:00Z', 'same status: time kept');
    assert.equal(conds[0].observedGeneration, 2);

    const t2 = new Date('2025-01-01T00:02:00Z');
    assert.equal(setCondition(conds, { type: 'Ready', status: 'True', reason: 'Ready' }, 2, t2), true);
    assert.equal(conds[0].lastTransitionTime, '2025-01-01T00:02:00Z');
    assert.equal(conds[0].message, '');
    assert.equal(isTrue(conds, 'Ready'), true);
    assert.equal(isFalse(conds, 'Ready'), false);
    assert.equal(isTrue(conds, 'Degraded'), false);
    assert.equal(isTrue(undefined, 'Ready'), false);

    setCondition(conds, { type: 'Degraded', status: 'False', reason: 'AllHealthy' }, 2, t2);
    assert.equal(conds.length, 2);
    assert.equal(findCondition(conds, 'Degraded')?.reason, 'AllHealthy');
    assert.equal(removeCondition(conds, 'Degraded'), true);
    assert.equal(removeCondition(conds, 'Degraded'), false);
    assert.equal(findCondition(conds, 'Degraded'), undefined);
  });
});

describe('runtime: events', () => {
  it('records events with the component as source', async () => {
    const api = new FakeApi();
    const rec = new EventRecorder(api, 'space-operator');
    rec.normal(capsule, 'Created', 'capsule created');
    rec.warning(capsule, 'ReplicationFailed', 'zone b unreachable');
    await rec.flush();
    assert.deepEqual(api.store.events.map((e) => [e.type, e.reason, e.source, e.involved.metadata.name]), [
      ['Normal', 'Created', 'space-operator', 'c'],
      ['Warning', 'ReplicationFailed', 'space-operator', 'c'],
    ]);
  });

  it('never throws into the reconciler: failures are logged and dropped', async () => {
    const lines: string[] = [];
    const api = new FakeApi();
    api.failNext('recordEvent', 1).failNext('recordEvent', 1, networkError);
    const rec = new EventRecorder(api, 'space-operator', { logger: createLogger({ component: 't', write: (l) => lines.push(l) }) });
    assert.doesNotThrow(() => rec.normal(capsule, 'A', 'a'));
    assert.doesNotThrow(() => rec.normal(capsule, 'B', 'b'));
    rec.normal(capsule, 'C', 'c');
    await rec.flush();
    assert.deepEqual(rec.stats, { recorded: 1, failed: 2, dropped: 0 });
    assert.equal(lines.filter((l) => JSON.parse(l).event === 'event.record_failed').length, 2);

    // An API that throws synchronously, and one that hangs: still no throw, and a bounded backlog.
    const throwing = { recordEvent: () => { throw new Error('sync'); } } as unknown as FakeApi;
    const r2 = new EventRecorder(throwing, 'x');
    assert.doesNotThrow(() => r2.warning(capsule, 'X', 'x'));
    await r2.flush();
    assert.equal(r2.stats.failed, 1);
    const hanging = new FakeApi().partition('hang');
    const r3 = new EventRecorder(hanging, 'x', { maxPending: 3 });
    for (let i = 0; i < 5; i++) r3.normal(capsule, 'R', `${i}`);
    assert.equal(r3.stats.dropped, 2);
  });
});

describe('runtime: metrics and probes', () => {
  const managers: Manager[] = [];
  after(async () => {
    await Promise.all(managers.map((m) => m.stop()));
  });

  it('serves controller-runtime metric names, /healthz and /readyz', async () => {
    const api = new FakeApi();
    api.slow('list', 50);
    await api.create(CAPSULES, capsule);
    const m = new Manager({ api, logger: silentLogger, metricsAddress: '127.0.0.1:0', informerBackoff: { initialMs: 2, maxMs: 20 } });
    managers.push(m);
    let n = 0;
    m.addController({ name: 'capsule', for: CAPSULES, workers: 2, reconciler: { reconcile: async () => { if (n++ === 0) throw new Error('first fails'); } }, rateLimiter: { baseDelayMs: 1 } });
    // Space's own gauges go on the same registry.
    new Gauge({ name: 'space_capsules', help: 'Capsules by phase.', labelNames: ['phase'], registers: [m.metrics.registry] }).set({ phase: 'Ready' }, 1);
    await m.start();
    const base = `http://127.0.0.1:${m.port}`;
    assert.ok(m.port && m.port > 0);
    const early = await fetch(`${base}/readyz`);
    assert.equal(early.status, 503, 'not ready before the informers sync');
    assert.match(await early.text(), /\[-\]informers failed: not synced: space.io\/v1alpha1\/capsules/);
    await waitFor(() => n >= 2, 'reconciled after one failure');
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    assert.match(await ready.text(), /\[\+\]informers ok/);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/nope`)).status, 404);

    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const text = await res.text();
    for (const name of [
      'controller_runtime_reconcile_total', 'controller_runtime_reconcile_errors_total', 'controller_runtime_reconcile_time_seconds_bucket',
      'controller_runtime_max_concurrent_reconciles', 'controller_runtime_active_workers', 'workqueue_depth', 'workqueue_adds_total',
      'workqueue_queue_duration_seconds_bucket', 'workqueue_work_duration_seconds_bucket', 'workqueue_retries_total',
      'workqueue_unfinished_work_seconds', 'workqueue_longest_running_processor_seconds', 'process_cpu_seconds_total',
      'nodejs_eventloop_lag_seconds', 'space_capsules',
    ]) assert.match(text, new RegExp(`^${name}`, 'm'), `${name} exported`);
    assert.match(text, /controller_runtime_reconcile_total\{controller="capsule",result="success"\} [1-9]/);
    assert.match(text, /controller_runtime_reconcile_total\{controller="capsule",result="error"\} 1/);
    assert.match(text, /controller_runtime_reconcile_total\{controller="capsule",result="requeue_after"\} 0/);
    assert.match(text, /controller_runtime_max_concurrent_reconciles\{controller="capsule"\} 2/);
    assert.match(text, /workqueue_adds_total\{name="capsule"\} [1-9]/);
    assert.match(text, /workqueue_unfinished_work_seconds\{name="capsule"\} 0/);
  });

  it('several managers in one process each have their own registry', async () => {
    const a = new RuntimeMetrics();
    const b = new RuntimeMetrics();
    a.initController('x', 1);
    a.observeReconcile('x', 'success', 0.01);
    assert.match(await a.text(), /controller_runtime_reconcile_total\{controller="x",result="success"\} 1/);
    assert.doesNotMatch(await b.text(), /controller="x"/);
  });

  it('a leader-elected manager that is a standby still reports ready', async () => {
    const api = new FakeApi();
    const lease = { namespace: 'space-system', name: 'op', leaseDurationMs: 600_000, renewDeadlineMs: 400_000, retryPeriodMs: 20 };
    const leader = new Manager({ api: api.client(), logger: silentLogger, metrics: new RuntimeMetrics({ defaultMetrics: false }), leaderElection: { ...lease, identity: 'l' } });
    managers.push(leader);
    await leader.start();
    await waitFor(() => leader.isLeader(), 'leader');
    const standby = new Manager({ api: api.client(), logger: silentLogger, metricsAddress: '127.0.0.1:0', metrics: new RuntimeMetrics({ defaultMetrics: false }), leaderElection: { ...lease, identity: 's' } });
    managers.push(standby);
    standby.addController({ name: 'c', for: CAPSULES, reconciler: { reconcile: async () => {} } });
    await standby.start();
    await waitFor(() => standby.notReady() === null, 'standby ready');
    assert.equal(standby.isLeader(), false);
    assert.equal((await fetch(`http://127.0.0.1:${standby.port}/readyz`)).status, 200);
    assert.match(await (await fetch(`http://127.0.0.1:${standby.port}/metrics`)).text(), /leader_election_master_status\{name="op"\} 0/);
  });
});
