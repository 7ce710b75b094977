import assert from 'node:assert/strict';
import { Informer } from '../operator/runtime/informer.js';
import { ApiError, CAPSULES, CONFIGMAPS, type KubeObject } from '../operator/runtime/object-api.js';
import { FakeApi, networkError, sleep, waitFor } from './helpers/fake-api.js';

const capsule = (name: string, namespace = 'ns', spec: unknown = {}): KubeObject => ({
  apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name, namespace }, spec,
});

/** Record handler calls as "add ns/a", "update ns/a", "delete ns/a". */
function recorder(inf: Informer): string[] {
  const log: string[] = [];
  const k = (o: KubeObject) => `${o.metadata.namespace}/${o.metadata.name}`;
  inf.addHandler({
    onAdd: (o) => log.push(`add ${k(o)}`),
    onUpdate: (_old, o) => log.push(`update ${k(o)}`),
    onDelete: (o) => log.push(`delete ${k(o)}`),
  });
  return log;
}

const fastBackoff = { initialMs: 2, maxMs: 20 };

describe('runtime: informer', () => {
  let informers: Informer[] = [];
  const make = (api: FakeApi, opts = {}) => {
    const inf = new Informer(api, CAPSULES, { backoff: fastBackoff, minWatchMs: 0, ...opts });
    informers.push(inf);
    return inf;
  };
  afterEach(async () => {
    await Promise.all(informers.map((i) => i.stop()));
    informers = [];
  });

  it('lists, then watches from the list version, keeping the cache and telling handlers', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('a'));
    await api.create(CAPSULES, capsule('b', 'other'));
    await api.create(CONFIGMAPS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'cm', namespace: 'ns' } });
    const inf = make(api);
    const log = recorder(inf);
    assert.equal(inf.hasSynced(), false);
    inf.start();
    assert.equal(await inf.waitForSync(5000), true);
    assert.deepEqual(log.sort(), ['add ns/a', 'add other/b']);
    assert.equal(inf.get('ns/a')?.metadata.name, 'a');
    assert.equal(inf.list().length, 2);
    assert.equal(inf.list('other').length, 1);

    const a = await api.get(CAPSULES, 'a', 'ns');
    await api.replace(CAPSULES, { ...a, spec: { size: 1 } });
    await api.create(CAPSULES, capsule('c'));
    await api.delete(CAPSULES, 'b', 'other');
    await waitFor(() => log.length === 5, 'three more events');
    assert.deepEqual(log.slice(2), ['update ns/a', 'add ns/c', 'delete other/b']);
    assert.deepEqual(inf.get('ns/a')?.spec, { size: 1 });
    assert.equal(inf.get('other/b'), undefined);
    assert.equal(inf.stats.lists, 1, 'no relist needed');
    assert.equal(inf.lastResourceVersion(), String(api.store.rv));
  });

  it('a late handler first gets an add for every cached object', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('a'));
    const inf = make(api);
    inf.start();
    await inf.waitForSync();
    const log = recorder(inf);
    assert.deepEqual(log, ['add ns/a']);
  });

  it('re-watches from the last resourceVersion when a watch ends, without relisting', async () => {
    const api = new FakeApi();
    const inf = make(api);
    const log = recorder(inf);
    inf.start();
    await inf.waitForSync();
    await api.create(CAPSULES, capsule('a'));
    await waitFor(() => log.length === 1, 'add a');
    for (let i = 0; i < 3; i++) {
      const before = inf.stats.watches;
      api.dropWatches();
      await api.create(CAPSULES, capsule(`x${i}`)); // written while no watch is open
      await waitFor(() => inf.stats.watches > before && api.activeWatches() === 1, 're-watched');
    }
    await waitFor(() => log.length === 4, 'events written between watches are not lost');
    assert.deepEqual(log, ['add ns/a', 'add ns/x0', 'add ns/x1', 'add ns/x2']);
    assert.equal(inf.stats.lists, 1);
    assert.ok(inf.stats.watches >= 4);
  });

  it('relists on 410 Gone and diffs the cache, emitting deletes for vanished objects', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('stays'));
    await api.create(CAPSULES, capsule('goes'));
    await api.create(CAPSULES, capsule('changes'));
    const inf = make(api);
    const log = recorder(inf);
    inf.start();
    await inf.waitForSync();
    log.length = 0;

    // Cut the informer off, change things behind its back, and compact the history it needs.
    api.partition('fail');
    api.breakWatches();
    const other = api.client();
    await other.delete(CAPSULES, 'goes', 'ns');
    const ch = await other.get(CAPSULES, 'changes', 'ns');
    await other.replace(CAPSULES, { ...ch, spec: { v: 2 } });
    await other.create(CAPSULES, capsule('new'));
    api.expireWatches();
    api.partition(undefined);

    await waitFor(() => inf.get('ns/new') !== undefined && inf.get('ns/goes') === undefined, 'cache converged after relist');
    assert.ok(inf.stats.relistsOnGone >= 1, 'relisted because of 410');
    assert.deepEqual(log.sort(), ['add ns/new', 'delete ns/goes', 'update ns/changes']);
    assert.deepEqual(inf.get('ns/changes')?.spec, { v: 2 });
    assert.equal(inf.get('ns/stays')?.metadata.name, 'stays');
  });

  it('reconnects with backoff after list and watch errors and never gives up', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('a'));
    api.failNext('list', 3, networkError);
    api.failNext('list', 2, () => new ApiError(503, 'ServiceUnavailable', 'etcd down'));
    api.failNext('list', 1, () => 'not even an Error');
    api.failNext('watch', 4);
    const inf = make(api);
    const log = recorder(inf);
    inf.start();
    await inf.waitForSync(10_000);
    assert.equal(api.calls.list, 7);
    await waitFor(() => api.activeWatches() === 1, 'watching after the watch errors');
    assert.equal(api.calls.watch, 5);
    assert.ok(inf.stats.failures >= 10);

    // Mid-stream failures: broken connections, then a partition, then recovery.
    for (let i = 0; i < 3; i++) {
      api.breakWatches();
      await waitFor(() => api.activeWatches() === 1, 'rewatched');
    }
    api.partition('fail');
    api.breakWatches();
    await waitFor(() => inf.stats.failures >= 15, 'keeps retrying while partitioned');
    await api.client().create(CAPSULES, capsule('after'));
    api.partition(undefined);
    await waitFor(() => inf.get('ns/after') !== undefined, 'recovered and caught up');
    assert.deepEqual(log, ['add ns/a', 'add ns/after']);
  });

  it('survives handlers that throw', async () => {
    const api = new FakeApi();
    const inf = make(api);
    inf.addHandler({ onAdd: () => { throw new Error('boom'); } });
    const log = recorder(inf);
    inf.start();
    await inf.waitForSync();
    await api.create(CAPSULES, capsule('a'));
    await api.create(CAPSULES, capsule('b'));
    await waitFor(() => log.length === 2, 'other handler still called');
  });

  it('tracks bookmark resourceVersions so a re-watch starts after them', async () => {
    const api = new FakeApi();
    const inf = make(api);
    inf.start();
    await inf.waitForSync();
    // Writes to another type move the global resourceVersion but send this informer nothing.
    for (let i = 0; i < 3; i++) await api.create(CONFIGMAPS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `c${i}`, namespace: 'ns' } });
    assert.notEqual(inf.lastResourceVersion(), String(api.store.rv));
    api.bookmark();
    await waitFor(() => inf.lastResourceVersion() === String(api.store.rv), 'bookmark version taken');
    assert.equal(inf.stats.bookmarks, 1);
    // A compaction up to now no longer forces a relist: the bookmark kept the informer current.
    api.store.compactedRv = api.store.rv;
    api.dropWatches();
    await api.create(CAPSULES, capsule('z'));
    await waitFor(() => inf.get('ns/z') !== undefined, 'z seen');
    assert.equal(inf.stats.relistsOnGone, 0);
  });

  it('a namespaced informer sees only its namespace', async () => {
    const api = new FakeApi();
    await api.create(CAPSULES, capsule('a', 'one'));
    await api.create(CAPSULES, capsule('b', 'two'));
    const inf = make(api, { namespace: 'one' });
    inf.start();
    await inf.waitForSync();
    await api.create(CAPSULES, capsule('c', 'two'));
    await api.create(CAPSULES, capsule('d', 'one'));
    await waitFor(() => inf.get('one/d') !== undefined, 'd');
    assert.deepEqual(inf.keys().sort(), ['one/a', 'one/d']);
  });

  it('stop() ends the loop even while the API hangs', async () => {
    const api = new FakeApi();
    const inf = make(api);
    inf.start();
    await inf.waitForSync();
    api.partition('hang');
    api.breakWatches();
    await sleep(20);
    await inf.stop();
    assert.equal(await inf.waitForSync(), true, 'stays synced');
  });
});
