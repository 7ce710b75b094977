import assert from 'node:assert/strict';
import { LeaderElector, microTime } from '../operator/runtime/leader-election.js';
import { Manager } from '../operator/runtime/manager.js';
import { RuntimeMetrics } from '../operator/runtime/metrics.js';
import { CAPSULES, LEASES, type KubeObject } from '../operator/runtime/object-api.js';
import { silentLogger } from '../capsule/log.js';
import { FakeApi, sleep, waitFor } from './helpers/fake-api.js';

const LEASE = { namespace: 'space-system', name: 'space-operator' };
/** Short but well separated: lease 400 ms > renew deadline 200 ms > retry 20 ms. */
const FAST = { leaseDurationMs: 400, renewDeadlineMs: 200, retryPeriodMs: 20 };

/**
 * Candidates that share a timeline and check the one invariant that matters: at no moment do two
 * of them believe they lead.
 */
class Cluster {
  readonly electors: LeaderElector[] = [];
  readonly leading = new Set<string>();
  readonly timeline: string[] = [];
  violations = 0;

  add(api: FakeApi, identity: string, opts: Partial<typeof FAST> = {}): LeaderElector {
    const e = new LeaderElector(api, { ...LEASE, identity, ...FAST, ...opts }, {
      onStartedLeading: () => {
        if (this.leading.size > 0) this.violations++;
        this.leading.add(identity);
        this.timeline.push(`start ${identity}`);
      },
      onStoppedLeading: () => {
        this.leading.delete(identity);
        this.timeline.push(`stop ${identity}`);
      },
    });
    this.electors.push(e);
    return e;
  }

  leader(): string | undefined {
    return [...this.leading][0];
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.electors.map((e) => e.stop()));
  }
}

async function holder(api: FakeApi): Promise<string | undefined> {
  const l = await api.client().get(LEASES, LEASE.name, LEASE.namespace);
  return (l.spec as { holderIdentity?: string }).holderIdentity;
}

describe('runtime: leader election', () => {
  let cluster: Cluster;
  beforeEach(() => {
    cluster = new Cluster();
  });
  afterEach(async () => {
    await cluster.stopAll();
  });

  it('writes MicroTime with six fractional digits', () => {
    assert.equal(microTime(new Date('2025-01-02T03:04:05.678Z')), '2025-01-02T03:04:05.678000Z');
  });

  it('elects exactly one of several candidates, with conflicts on the lease being normal', async () => {
    const api = new FakeApi();
    const clients = ['a', 'b', 'c'].map((id) => {
      const c = api.client();
      c.conflictNext('replace', 3).conflictNext('create', 1);
      return cluster.add(c, id);
    });
    for (const e of clients) e.start();
    await waitFor(() => cluster.leading.size === 1, 'one leader');
    const first = cluster.leader()!;
    assert.equal(await holder(api), first);
    // Several renew periods later: still the same single leader.
    await sleep(FAST.leaseDurationMs * 2);
    assert.equal(cluster.violations, 0);
    assert.deepEqual([...cluster.leading], [first]);
    assert.equal(clients.filter((e) => e.isLeader()).length, 1);
  });

  it('fails over when the leader stops renewing: it steps down before the other takes over', async () => {
    const api = new FakeApi();
    const ca = api.client();
    const a = cluster.add(ca, 'a');
    a.start();
    await waitFor(() => cluster.leader() === 'a', 'a leads');
    const b = cluster.add(api.client(), 'b');
    b.start();
    await sleep(FAST.leaseDurationMs * 1.5);
    assert.equal(cluster.leader(), 'a', 'a keeps renewing; b waits');

    ca.partition('hang'); // a's renewals never return
    await waitFor(() => cluster.leader() === 'b', 'b takes over after the lease expires');
    assert.deepEqual(cluster.timeline, ['start a', 'stop a', 'start b']);
    assert.equal(cluster.violations, 0);
    assert.equal(b.isLeader(), true);
    assert.equal(a.isLeader(), false);
    assert.equal(await holder(api), 'b');
    const lease = await api.get(LEASES, LEASE.name, LEASE.namespace);
    assert.equal((lease.spec as { leaseTransitions: number }).leaseTransitions, 1);
  });

  it('a leader whose API calls fail steps down and later rejoins as a candidate', async () => {
    const api = new FakeApi();
    const ca = api.client();
    const a = cluster.add(ca, 'a');
    a.start();
    await waitFor(() => a.isLeader(), 'a leads');
    ca.partition('fail');
    await waitFor(() => !a.isLeader(), 'a steps down after the renew deadline');
    ca.partition(undefined);
    // Nobody else took the lease: a re-acquires its own lease.
    await waitFor(() => a.isLeader(), 'a leads again');
    assert.deepEqual(cluster.timeline, ['start a', 'stop a', 'start a']);
  });

  it('a graceful release hands over at once, long before the lease would expire', async () => {
    const api = new FakeApi();
    const long = { leaseDurationMs: 600_000, renewDeadlineMs: 400_000, retryPeriodMs: 20 };
    const a = cluster.add(api.client(), 'a', long);
    a.start();
    await waitFor(() => a.isLeader(), 'a leads');
    const b = cluster.add(api.client(), 'b', long);
    b.start();
    await sleep(50);
    assert.equal(b.isLeader(), false);
    await a.stop({ release: true });
    assert.equal(await holder(api), '', 'released: empty holder');
    // With a 10-minute lease, only the release explains a takeover within this deadline.
    await waitFor(() => b.isLeader(), 'b takes over immediately', 5000);
    assert.deepEqual(cluster.timeline, ['start a', 'stop a', 'start b']);
  });

  it('only the leading manager reconciles; after it shuts down the standby takes over', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, { apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'c', namespace: 'ns' }, spec: {} });
    const seen: Record<string, number> = { one: 0, two: 0 };
    const managers = ['one', 'two'].map((id) => {
      const m = new Manager({
        api: api.client(), logger: silentLogger, metrics: new RuntimeMetrics({ defaultMetrics: false }),
        leaderElection: { ...LEASE, identity: id, leaseDurationMs: 600_000, renewDeadlineMs: 400_000, retryPeriodMs: 20 },
        informerBackoff: { initialMs: 2, maxMs: 20 },
      });
      m.addController({ name: 'c', for: CAPSULES, reconciler: { reconcile: async () => { seen[id]++; } }, resyncPeriodMs: 10 });
      return m;
    });
    await managers[0].start();
    await waitFor(() => managers[0].isLeader() && seen.one > 0, 'one leads and reconciles');
    await managers[1].start();
    await waitFor(() => managers[1].notReady() === null, 'standby is ready (caches synced)');
    await sleep(50);
    assert.equal(seen.two, 0, 'the standby does not reconcile');
    assert.equal(managers[1].isLeader(), false);
    const metric = await managers[1].metrics.registry.getSingleMetricAsString('leader_election_master_status');
    assert.match(metric, /leader_election_master_status\{name="space-operator"\} 0/);

    await managers[0].stop();
    await waitFor(() => managers[1].isLeader() && seen.two > 0, 'two takes over and reconciles');
    const count = seen.one;
    await sleep(30);
    assert.equal(seen.one, count, 'the stopped manager does no more work');
    assert.match(await managers[1].metrics.registry.getSingleMetricAsString('leader_election_master_status'), /space-operator"\} 1/);
    await managers[1].stop();
  });

  it('never has two leaders under slow calls, partitions and conflicts', async () => {
    const api = new FakeApi();
    const clients = ['a', 'b', 'c'].map(() => api.client());
    const electors = clients.map((c, i) => cluster.add(c, 'abc'[i]));
    for (const e of electors) e.start();
    const until = Date.now() + 2500;
    while (Date.now() < until) {
      for (const c of clients) {
        const r = Math.random();
        c.partition(r < 0.15 ? 'hang' : r < 0.3 ? 'fail' : undefined);
        c.slow('get', Math.floor(Math.random() * 30)).slow('replace', Math.floor(Math.random() * 30));
        if (Math.random() < 0.3) c.conflictNext('replace');
      }
      await sleep(150 + Math.random() * 300);
    }
    for (const c of clients) c.partition(undefined).slow('get', 0).slow('replace', 0);
    await waitFor(() => cluster.leading.size === 1, 'a single leader once healed', 10_000);
    assert.equal(cluster.violations, 0, `timeline: ${cluster.timeline.join(', ')}`);
  });

  it('rejects inconsistent timings', () => {
    assert.throws(() => new LeaderElector(new FakeApi(), { ...LEASE, leaseDurationMs: 10, renewDeadlineMs: 10, retryPeriodMs: 1 }));
  });

  it('stop without leadership does not touch a lease held by someone else', async () => {
    const api = new FakeApi();
    const other: KubeObject = {
      apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: LEASE.name, namespace: LEASE.namespace },
      spec: { holderIdentity: 'someone', leaseDurationSeconds: 600, renewTime: microTime(new Date()) },
    };
    await api.create(LEASES, other);
    const e = cluster.add(api.client(), 'me');
    e.start();
    await sleep(50);
    assert.equal(e.isLeader(), false);
    assert.equal(e.observedLeader(), 'someone');
    await e.stop();
    assert.equal(await holder(api), 'someone');
  });
});
