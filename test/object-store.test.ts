import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import YAML from 'yaml';
import {
  ApiError,
  CAPSULES,
  CAPSULE_VIEWS,
  CONFIGMAPS,
  EVENTS,
  FEDERATION_ZONES,
  LEASES,
  SECRETS,
  isConflict,
  isGone,
} from '../operator/runtime/object-api.js';
import type { KubeObject, ResourceType, WatchEventType, WatchHandle } from '../operator/runtime/object-api.js';
import { InvalidError, ObjectStore, type Admission, type ObjectStoreOptions } from '../operator/standalone/object-store.js';
import { KINDS, age, resolveKinds } from '../operator/standalone/kinds.js';
import { parseManifests } from '../operator/standalone/manifests.js';
import { Flags, parseArgs } from '../cli/args.js';
import type { Command } from '../cli/command.js';
import { SpaceError } from '../capsule/errors.js';
import { apply, del, get, objectCommands } from '../cli/commands/objects.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const helpers = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers');

const capsule = (name: string, spec: unknown = { source: { empty: { size: '1Gi' } } }, extra: Partial<KubeObject['metadata']> = {}): KubeObject => ({
  apiVersion: 'space.io/v1alpha1',
  kind: 'Capsule',
  metadata: { name, ...extra },
  spec,
});
const configMap = (name: string, data: Record<string, string> = {}, namespace?: string): KubeObject => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name, ...(namespace ? { namespace } : {}) },
  data,
});

async function rejects(p: Promise<unknown>, code: number, message?: RegExp | string): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ApiError, `expected an ApiError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (typeof message === 'string') assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ApiError ${code}`);
}

/**
 * Poll until `cond` holds. No timing is asserted: the mocha timeout is the only bound, and
 * `what` names the wait in the failure message.
 */
async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const stack = new Error(`still waiting for: ${what}`);
  const timer = setTimeout(() => process.stderr.write(`${stack.message}\n`), 30_000);
  try {
    while (!(await cond())) await new Promise((r) => setTimeout(r, 5));
  } finally {
    clearTimeout(timer);
  }
}

interface Seen {
  type: WatchEventType;
  obj: KubeObject;
}
async function record(store: ObjectStore, type: ResourceType, opts: Parameters<ObjectStore['watch']>[1]): Promise<{ seen: Seen[]; w: WatchHandle }> {
  const seen: Seen[] = [];
  const w = await store.watch(type, opts, (t, obj) => seen.push({ type: t, obj }));
  return { seen, w };
}

describe('embedded object store', function () {
  this.timeout(120_000);
  let dir: string;
  let store: ObjectStore;
  const open = (opts: ObjectStoreOptions = {}) => ObjectStore.open(dir, opts);
  beforeEach(() => {
    dir = tmpDir('space-objects-');
    store = open();
  });
  afterEach(async () => {
    await store.close();
    rmrf(dir);
  });

  describe('create / get / list', () => {
    it('sets uid, creationTimestamp, resourceVersion, generation and the default namespace; drops status', async () => {
      const before = Number((await store.list(CAPSULES)).resourceVersion);
      const c = await store.create(CAPSULES, { ...capsule('hello'), status: { phase: 'Ready' } });
      assert.match(c.metadata.uid!, /^[0-9a-f-]{36}$/);
      assert.match(c.metadata.creationTimestamp!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.equal(c.metadata.generation, 1);
      assert.equal(c.metadata.namespace, 'default');
      assert.equal(Number(c.metadata.resourceVersion), before + 1);
      assert.equal(c.status, undefined);
      const again = await store.get(CAPSULES, 'hello');
      assert.deepEqual(again, c);
      const c2 = await store.create(CAPSULES, capsule('second'));
      assert.ok(Number(c2.metadata.resourceVersion) > Number(c.metadata.resourceVersion), 'resourceVersion is global and increasing');
      assert.notEqual(c2.metadata.uid, c.metadata.uid);
    });

    it('returns copies: mutating a result or an input never changes the store', async () => {
      const input = capsule('iso');
      const c = await store.create(CAPSULES, input);
      (c.spec as Record<string, unknown>).x = 1;
      (input.spec as Record<string, unknown>).y = 2;
      assert.equal(input.metadata.uid, undefined, 'the input is not filled in');
      assert.deepEqual((await store.get(CAPSULES, 'iso')).spec, { source: { empty: { size: '1Gi' } } });
    });

    it('409 AlreadyExists, 404 NotFound, 422 for missing or bad names', async () => {
      await store.create(CAPSULES, capsule('dup'));
      const e = await rejects(store.create(CAPSULES, capsule('dup')), 409, 'capsules.space.io "dup" already exists');
      assert.equal(e.reason, 'AlreadyExists');
      await rejects(store.get(CAPSULES, 'nope'), 404, 'capsules.space.io "nope" not found');
      await rejects(store.get(CONFIGMAPS, 'nope'), 404, 'configmaps "nope" not found');
      await rejects(store.replace(CAPSULES, { ...capsule('nope'), metadata: { name: 'nope', resourceVersion: '1' } }), 404);
      await rejects(store.delete(CAPSULES, 'nope'), 404);
      await rejects(store.create(CAPSULES, capsule('')), 422, /metadata\.name: Required value/);
      const bad = await rejects(store.create(CAPSULES, capsule('Hello_World')), 422, /^Capsule\.space\.io "Hello_World" is invalid: metadata\.name: Invalid value: "Hello_World": a lowercase RFC 1123 subdomain/);
      assert.ok(bad instanceof InvalidError && bad.issues[0]!.path === 'metadata.name');
      await rejects(store.create(CAPSULES, capsule('x'.repeat(254))), 422, /no more than 253/);
      await rejects(store.create(CAPSULES, capsule('ok', {}, { namespace: 'Bad_NS' })), 422, /metadata\.namespace/);
      await rejects(store.create(CAPSULES, capsule('ok', {}, { labels: { 'bad key!': 'v' } })), 422, /metadata\.labels/);
      await rejects(store.create(CAPSULES, capsule('ok', {}, { finalizers: ['not valid!'] })), 422, /metadata\.finalizers\[0\]/);
    });

    it('answers malformed input with 400, never a crash', async () => {
      await rejects(store.create(CAPSULES, null as unknown as KubeObject), 400);
      await rejects(store.create(CAPSULES, [] as unknown as KubeObject), 400);
      await rejects(store.create(CAPSULES, 'capsule' as unknown as KubeObject), 400);
      const cyclic = capsule('cyc') as KubeObject & { self?: unknown };
      cyclic.self = cyclic;
      await rejects(store.create(CAPSULES, cyclic), 400, /cannot be encoded as JSON/);
      await rejects(store.create(CAPSULES, { ...capsule('big'), spec: { n: 1n } }), 400);
      await rejects(store.create(CAPSULES, { ...capsule('m'), metadata: 'x' } as unknown as KubeObject), 400);
      await rejects(store.create(CAPSULES, { ...capsule('m'), metadata: { name: 5 } } as unknown as KubeObject), 400);
      await rejects(store.create(CAPSULES, capsule('l', {}, { labels: { a: 1 } as unknown as Record<string, string> })), 400);
      await rejects(store.create(CAPSULES, capsule('f', {}, { finalizers: 'x' as unknown as string[] })), 400);
      await rejects(store.create(CAPSULES, { ...capsule('v'), apiVersion: 'space.io/v9' }), 400, /API version/);
      await rejects(store.create(CAPSULES, { ...capsule('k'), kind: 'CapsuleView' }), 400, /kind/);
      await rejects(store.create(CAPSULES, capsule('rv', {}, { resourceVersion: '5' })), 400, /resourceVersion should not be set/);
      await rejects(store.create(CAPSULES, { ...capsule('huge'), spec: { blob: 'x'.repeat(4 << 20) } }), 413);
      await rejects(store.watch(CAPSULES, { resourceVersion: 'abc' }, () => undefined), 400);
      // apiVersion and kind may be left to the type
      const c = await store.create(CAPSULES, { metadata: { name: 'bare' } } as KubeObject);
      assert.equal(c.apiVersion, 'space.io/v1alpha1');
      assert.equal(c.kind, 'Capsule');
      assert.equal((await store.list(CAPSULES)).items.length, 1);
    });

    it('namespaces: default on create, list one or all; cluster-scoped types have none', async () => {
      await store.create(CONFIGMAPS, configMap('a'));
      await store.create(CONFIGMAPS, configMap('a', {}, 'team-x'));
      await store.create(CONFIGMAPS, configMap('b', {}, 'team-x'));
      assert.deepEqual((await store.list(CONFIGMAPS)).items.map((o) => `${o.metadata.namespace}/${o.metadata.name}`), ['default/a', 'team-x/a', 'team-x/b']);
      assert.deepEqual((await store.list(CONFIGMAPS, 'team-x')).items.map((o) => o.metadata.name), ['a', 'b']);
      assert.equal((await store.get(CONFIGMAPS, 'a')).metadata.namespace, 'default');
      assert.equal((await store.get(CONFIGMAPS, 'a', 'team-x')).metadata.namespace, 'team-x');
      const fz = await store.create(FEDERATION_ZONES, { apiVersion: 'space.io/v1alpha1', kind: 'FederationZone', metadata: { name: 'zone-b' }, spec: { zone: 'zone-b' } });
      assert.equal(fz.metadata.namespace, undefined);
      await rejects(store.create(FEDERATION_ZONES, { apiVersion: 'space.io/v1alpha1', kind: 'FederationZone', metadata: { name: 'z2', namespace: 'default' } }), 400, /cluster-scoped/);
      assert.equal((await store.get(FEDERATION_ZONES, 'zone-b')).metadata.name, 'zone-b');
      const l = await store.list(FEDERATION_ZONES);
      assert.equal(l.items.length, 1);
      const list = await store.list(CONFIGMAPS);
      assert.equal(list.resourceVersion, store.resourceVersion());
    });

    it('generateName picks a free name', async () => {
      const a = await store.create(CONFIGMAPS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { generateName: 'job-' } as unknown as KubeObject['metadata'] });
      const b = await store.create(CONFIGMAPS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { generateName: 'job-' } as unknown as KubeObject['metadata'] });
      assert.match(a.metadata.name, /^job-[a-z0-9]{5}$/);
      assert.notEqual(a.metadata.name, b.metadata.name);
    });

    it('any resource type works, including ones it has never heard of', async () => {
      const WIDGETS: ResourceType = { group: 'example.com', version: 'v1', plural: 'widgets', kind: 'Widget', namespaced: true };
      const w = await store.create(WIDGETS, { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' }, spec: { n: 1 } });
      assert.equal((await store.get(WIDGETS, 'w')).metadata.uid, w.metadata.uid);
      const lease = await store.create(LEASES, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'space-operator' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15 } });
      // leader election: get, change holder, replace with the read resourceVersion
      const next = await store.replace(LEASES, { ...lease, spec: { holderIdentity: 'b', leaseDurationSeconds: 15 } });
      await rejects(store.replace(LEASES, { ...lease, spec: { holderIdentity: 'c' } }), 409);
      assert.equal((next.spec as { holderIdentity: string }).holderIdentity, 'b');
      const s = await store.create(SECRETS, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'kek' }, stringData: { key: 'hunter2' } });
      assert.deepEqual(s.data, { key: Buffer.from('hunter2').toString('base64') });
      assert.equal(s.stringData, undefined);
    });
  });

  describe('replace / replaceStatus', () => {
    it('bumps generation on spec changes only; metadata changes still get a new resourceVersion', async () => {
      const c = await store.create(CAPSULES, capsule('g', { size: 1 }));
      const labelled = await store.replace(CAPSULES, { ...c, metadata: { ...c.metadata, labels: { team: 'a' } } });
      assert.equal(labelled.metadata.generation, 1);
      assert.ok(Number(labelled.metadata.resourceVersion) > Number(c.metadata.resourceVersion));
      const changed = await store.replace(CAPSULES, { ...labelled, spec: { size: 2 } });
      assert.equal(changed.metadata.generation, 2);
      const otherField = await store.replace(CAPSULES, { ...changed, extra: { x: 1 } });
      assert.equal(otherField.metadata.generation, 3, 'any non-metadata, non-status field counts as spec');
      // key order does not matter, and an identical update writes nothing
      const same = await store.replace(CAPSULES, { extra: { x: 1 }, spec: { size: 2 }, metadata: { ...otherField.metadata }, kind: 'Capsule', apiVersion: 'space.io/v1alpha1' });
      assert.equal(same.metadata.resourceVersion, otherField.metadata.resourceVersion);
      assert.equal(same.metadata.generation, 3);
    });

    it('replace ignores .status and server-owned metadata; replaceStatus takes only .status', async () => {
      const c = await store.create(CAPSULES, capsule('s', { size: 1 }));
      const withStatus = await store.replaceStatus(CAPSULES, { ...c, spec: { size: 99 }, metadata: { ...c.metadata, labels: { sneaky: 'yes' } }, status: { phase: 'Ready' } });
      assert.deepEqual(withStatus.status, { phase: 'Ready' });
      assert.deepEqual(withStatus.spec, { size: 1 }, 'spec from a status write is ignored');
      assert.equal(withStatus.metadata.labels, undefined, 'metadata from a status write is ignored');
      assert.equal(withStatus.metadata.generation, 1, 'status writes never bump generation');
      const replaced = await store.replace(CAPSULES, {
        ...withStatus,
        status: { phase: 'Failed' },
        metadata: { ...withStatus.metadata, creationTimestamp: '2000-01-01T00:00:00Z', generation: 42, deletionTimestamp: '2000-01-01T00:00:00Z' },
        spec: { size: 2 },
      });
      assert.deepEqual(replaced.status, { phase: 'Ready' });
      assert.equal(replaced.metadata.creationTimestamp, c.metadata.creationTimestamp);
      assert.equal(replaced.metadata.generation, 2);
      assert.equal(replaced.metadata.deletionTimestamp, undefined);
      // status without resourceVersion: allowed (the check applies only when one is given)
      const { resourceVersion: _rv, ...noRv } = replaced.metadata;
      const st = await store.replaceStatus(CAPSULES, { ...replaced, metadata: noRv, status: { phase: 'Degraded' } });
      assert.deepEqual(st.status, { phase: 'Degraded' });
      // an unchanged status writes nothing
      const again = await store.replaceStatus(CAPSULES, st);
      assert.equal(again.metadata.resourceVersion, st.metadata.resourceVersion);
    });

    it('optimistic concurrency: a stale resourceVersion is 409 Conflict for replace and replaceStatus', async () => {
      const c = await store.create(CAPSULES, capsule('occ', { size: 1 }));
      await store.replace(CAPSULES, { ...c, spec: { size: 2 } });
      const msg = 'Operation cannot be fulfilled on capsules.space.io "occ": the object has been modified; please apply your changes to the latest version and try again';
      const e = await rejects(store.replace(CAPSULES, { ...c, spec: { size: 3 } }), 409, msg);
      assert.ok(isConflict(e));
      await rejects(store.replaceStatus(CAPSULES, { ...c, status: { phase: 'x' } }), 409, msg);
      // custom resources need a resourceVersion on replace; built-in types allow unconditional updates
      const { resourceVersion: _rv, ...noRv } = c.metadata;
      await rejects(store.replace(CAPSULES, { ...c, metadata: noRv }), 422, /metadata\.resourceVersion: Invalid value: 0x0: must be specified for an update/);
      await store.create(CONFIGMAPS, configMap('cm', { a: '1' }));
      const cm = await store.replace(CONFIGMAPS, configMap('cm', { a: '2' }));
      assert.deepEqual(cm.data, { a: '2' });
      // a recreated object (new uid) is a conflict for writers holding the old one
      const cur = await store.get(CAPSULES, 'occ');
      await store.delete(CAPSULES, 'occ');
      await store.create(CAPSULES, capsule('occ'));
      const fresh = await store.get(CAPSULES, 'occ');
      await rejects(store.replace(CAPSULES, { ...cur, metadata: { ...cur.metadata, resourceVersion: fresh.metadata.resourceVersion } }), 409, /UID in precondition/);
    });
  });

  describe('deletion and finalizers', () => {
    it('delete without finalizers removes at once; with finalizers sets deletionTimestamp until the last one is removed', async () => {
      const { seen, w } = await record(store, CAPSULES, { resourceVersion: store.resourceVersion() });
      await store.create(CAPSULES, capsule('plain'));
      await store.delete(CAPSULES, 'plain');
      await rejects(store.get(CAPSULES, 'plain'), 404);

      const c = await store.create(CAPSULES, capsule('fin', { size: 1 }, { finalizers: ['space.io/segments', 'space.io/views'] }));
      await store.delete(CAPSULES, 'fin');
      const deleting = await store.get(CAPSULES, 'fin');
      assert.ok(deleting.metadata.deletionTimestamp);
      assert.equal(deleting.metadata.generation, 2, 'deletion bumps generation, as the API server does');
      await store.delete(CAPSULES, 'fin'); // again: nothing changes
      assert.equal((await store.get(CAPSULES, 'fin')).metadata.resourceVersion, deleting.metadata.resourceVersion);
      const e = await rejects(store.replace(CAPSULES, { ...deleting, metadata: { ...deleting.metadata, finalizers: ['space.io/segments', 'space.io/views', 'example.com/new'] } }), 422);
      assert.match(e.message, /^Capsule\.space\.io "fin" is invalid: metadata\.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers \[\]string\{"example\.com\/new"\}$/);
      // the spec can still change while finalizers run
      const one = await store.replace(CAPSULES, { ...deleting, spec: { size: 2 }, metadata: { ...deleting.metadata, finalizers: ['space.io/views'] } });
      assert.ok(one.metadata.deletionTimestamp);
      await store.replaceStatus(CAPSULES, { ...one, status: { phase: 'Deleting' } });
      const last = await store.get(CAPSULES, 'fin');
      const gone = await store.replace(CAPSULES, { ...last, metadata: { ...last.metadata, finalizers: [] } });
      assert.ok(Number(gone.metadata.resourceVersion) > Number(last.metadata.resourceVersion));
      await rejects(store.get(CAPSULES, 'fin'), 404);

      await until(() => seen.filter((s) => s.type === 'DELETED').length === 2, 'two DELETED');
      w.stop();
      await w.done;
      assert.deepEqual(
        seen.map((s) => `${s.type} ${s.obj.metadata.name}`),
        ['ADDED plain', 'DELETED plain', 'ADDED fin', 'MODIFIED fin', 'MODIFIED fin', 'MODIFIED fin', 'DELETED fin'],
      );
      assert.equal(seen[3]!.obj.metadata.deletionTimestamp, deleting.metadata.deletionTimestamp);
      assert.equal(seen[6]!.obj.metadata.uid, c.metadata.uid);
      assert.equal(seen[6]!.obj.metadata.resourceVersion, gone.metadata.resourceVersion);
    });

    it('garbage-collects dependents whose owners are all gone (respecting their finalizers)', async () => {
      const owner = await store.create(CAPSULES, capsule('owner'));
      const other = await store.create(CAPSULES, capsule('other'));
      const ref = (o: KubeObject) => ({ apiVersion: o.apiVersion, kind: o.kind, name: o.metadata.name, uid: o.metadata.uid! });
      await store.create(CAPSULE_VIEWS, { apiVersion: 'space.io/v1alpha1', kind: 'CapsuleView', metadata: { name: 'only', ownerReferences: [ref(owner)] }, spec: {} });
      await store.create(CAPSULE_VIEWS, { apiVersion: 'space.io/v1alpha1', kind: 'CapsuleView', metadata: { name: 'shared', ownerReferences: [ref(owner), ref(other)] }, spec: {} });
      await store.create(CAPSULE_VIEWS, { apiVersion: 'space.io/v1alpha1', kind: 'CapsuleView', metadata: { name: 'held', finalizers: ['space.io/unmount'], ownerReferences: [ref(owner)] }, spec: {} });
      await store.create(CONFIGMAPS, { ...configMap('grandchild'), metadata: { name: 'grandchild', ownerReferences: [ref(await store.get(CAPSULE_VIEWS, 'only'))] } });
      await store.delete(CAPSULES, 'owner');
      await rejects(store.get(CAPSULE_VIEWS, 'only'), 404);
      await rejects(store.get(CONFIGMAPS, 'grandchild'), 404);
      const shared = await store.get(CAPSULE_VIEWS, 'shared');
      assert.deepEqual(shared.metadata.ownerReferences!.map((r) => r.name), ['other']);
      assert.ok((await store.get(CAPSULE_VIEWS, 'held')).metadata.deletionTimestamp);
    });
  });

  describe('watch', () => {
    it('delivers every change after a resourceVersion, in order, filtered by type and namespace', async () => {
      const start = store.resourceVersion();
      await store.create(CONFIGMAPS, configMap('before'));
      const all = await record(store, CONFIGMAPS, { resourceVersion: start });
      const ns = await record(store, CONFIGMAPS, { resourceVersion: start, namespace: 'team-x' });
      const now = await record(store, CONFIGMAPS, { resourceVersion: '0' });
      const caps = await record(store, CAPSULES, { resourceVersion: start });
      for (let i = 0; i < 30; i++) await store.create(CONFIGMAPS, configMap(`cm-${i}`, {}, i % 2 ? 'team-x' : undefined));
      await store.create(CAPSULES, capsule('c'));
      const last = await store.replace(CONFIGMAPS, configMap('cm-1', { v: '2' }, 'team-x'));
      await until(() => all.seen.length === 32 && ns.seen.length === 16 && now.seen.length === 31 && caps.seen.length === 1, 'events');
      const rvs = all.seen.map((s) => Number(s.obj.metadata.resourceVersion));
      assert.deepEqual(rvs, [...rvs].sort((a, b) => a - b));
      assert.equal(new Set(rvs).size, rvs.length);
      assert.equal(all.seen[0]!.obj.metadata.name, 'before');
      assert.equal(now.seen[0]!.obj.metadata.name, 'cm-0', 'resourceVersion "0" starts from now (no synthetic ADDED)');
      assert.ok(ns.seen.every((s) => s.obj.metadata.namespace === 'team-x'));
      assert.deepEqual(all.seen.at(-1), { type: 'MODIFIED', obj: last });
      // a watch resumed from the middle sees exactly the rest
      const mid = all.seen[10]!.obj.metadata.resourceVersion!;
      const resumed = await record(store, CONFIGMAPS, { resourceVersion: mid });
      await until(() => resumed.seen.length === 21, 'resumed');
      assert.deepEqual(resumed.seen, all.seen.slice(11));
      for (const r of [all, ns, now, caps, resumed]) r.w.stop();
      await Promise.all([all, ns, now, caps, resumed].map((r) => r.w.done));
    });

    it('handlers that write do not re-enter; stop() and close() end watches; a throwing handler ends its watch', async () => {
      const seen: string[] = [];
      const w = await store.watch(CONFIGMAPS, { resourceVersion: store.resourceVersion() }, (t, o) => {
        seen.push(`${t} ${o.metadata.name}`);
        if (o.metadata.name === 'a') void store.create(CONFIGMAPS, configMap('b'));
      });
      await store.create(CONFIGMAPS, configMap('a'));
      await until(() => seen.length === 2, 'a and b');
      assert.deepEqual(seen, ['ADDED a', 'ADDED b']);
      const bad = await store.watch(CONFIGMAPS, { resourceVersion: store.resourceVersion() }, () => {
        throw new Error('handler bug');
      });
      await store.create(CONFIGMAPS, configMap('c'));
      await assert.rejects(bad.done, /handler bug/);
      const other = await store.watch(CAPSULES, { resourceVersion: '' }, () => undefined);
      w.stop();
      await w.done;
      await store.close();
      await other.done; // resolves: closing the store ends its watches
      await rejects(store.get(CONFIGMAPS, 'a'), 503);
      store = open();
    });

    it('sends BOOKMARK events carrying the current resourceVersion when asked', async () => {
      await store.close();
      store = open({ bookmarkIntervalMs: 20 });
      const { seen, w } = await record(store, CAPSULES, { resourceVersion: store.resourceVersion(), allowBookmarks: true });
      const quiet = await record(store, CAPSULES, { resourceVersion: store.resourceVersion() });
      await store.create(CONFIGMAPS, configMap('other-type')); // moves the resourceVersion, not this watch's type
      const head = store.resourceVersion();
      await until(() => seen.some((s) => s.type === 'BOOKMARK' && s.obj.metadata.resourceVersion === head), 'bookmark at head');
      const b = seen.find((s) => s.type === 'BOOKMARK')!;
      assert.equal(b.obj.kind, 'Capsule');
      assert.equal(b.obj.apiVersion, 'space.io/v1alpha1');
      assert.equal(quiet.seen.length, 0, 'no bookmarks unless allowed');
      w.stop();
      quiet.w.stop();
    });

    it('a watch from a compacted resourceVersion ends with 410 Gone; from the list resourceVersion it works', async () => {
      await store.close();
      store = open({ maxChanges: 5 });
      const first = await store.create(CONFIGMAPS, configMap('first'));
      for (let i = 0; i < 20; i++) await store.create(CONFIGMAPS, configMap(`n-${i}`));
      const point = store.compact();
      assert.ok(point > Number(first.metadata.resourceVersion));
      const old = await store.watch(CONFIGMAPS, { resourceVersion: first.metadata.resourceVersion! }, () => assert.fail('no events from an expired watch'));
      const e = await old.done.then(
        () => assert.fail('expected 410'),
        (err: unknown) => err,
      );
      assert.ok(isGone(e), String(e));
      assert.match((e as ApiError).message, /too old resource version/);
      // the caller relists and watches from the list's resourceVersion
      const l = await store.list(CONFIGMAPS);
      assert.equal(l.items.length, 21);
      const { seen, w } = await record(store, CONFIGMAPS, { resourceVersion: l.resourceVersion });
      await store.create(CONFIGMAPS, configMap('after'));
      await until(() => seen.length === 1, 'after');
      w.stop();
      // a resourceVersion this store never issued (it was recreated) also asks for a relist
      const future = await store.watch(CONFIGMAPS, { resourceVersion: String(Number(l.resourceVersion) + 1000) }, () => undefined);
      await assert.rejects(future.done, (x: unknown) => isGone(x));
    });

    it('a slow watcher overtaken by compaction gets 410 instead of a gap', async () => {
      await store.close();
      store = open({ maxChanges: 3 });
      const start = store.resourceVersion();
      const seen: string[] = [];
      const w = await store.watch(CONFIGMAPS, { resourceVersion: start }, (_t, o) => seen.push(o.metadata.name));
      // writes and compaction happen before the watcher gets a turn (delivery is asynchronous)
      for (let i = 0; i < 10; i++) await store.create(CONFIGMAPS, configMap(`x-${i}`));
      store.compact();
      await assert.rejects(w.done, (x: unknown) => isGone(x));
      assert.deepEqual(seen, []);
    });

    it('sees changes committed by another process', async () => {
      const start = store.resourceVersion();
      const { seen, w } = await record(store, CONFIGMAPS, { resourceVersion: start });
      const child = spawn(process.execPath, [path.join(helpers, 'object-store-child.js'), 'write', dir, '50', 'remote'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      assert.equal(code, 0, stderr);
      await until(() => seen.length === 50, '50 remote events');
      assert.deepEqual(
        seen.map((s) => `${s.type} ${s.obj.metadata.name}`),
        Array.from({ length: 50 }, (_, i) => `ADDED remote-${i}`),
      );
      // and a second store instance in this process (another connection) is seen the same way
      const other = open();
      await other.create(CONFIGMAPS, configMap('via-other'));
      await until(() => seen.length === 51, 'other connection');
      await other.close();
      w.stop();
    });
  });

  describe('admission', () => {
    const protocols = ['fuse', 'nfs', 'nvme', 'csi'];
    const admitViews: Admission = (obj, old) => {
      const spec = (obj.spec ?? {}) as Record<string, unknown>;
      const issues: { path: string; message: string }[] = [];
      if (!protocols.includes(String(spec.protocol))) {
        issues.push({ path: 'spec.protocol', message: `Unsupported value: ${JSON.stringify(spec.protocol)}: supported values: ${protocols.map((p) => `"${p}"`).join(', ')}` });
      }
      if (old && (old.spec as Record<string, unknown>).capsuleRef !== spec.capsuleRef) issues.push({ path: 'spec.capsuleRef', message: 'Invalid value: field is immutable' });
      const status = obj.status as { endpoint?: unknown } | undefined;
      if (status && typeof status.endpoint === 'number') issues.push({ path: 'status.endpoint', message: 'Invalid value: must be an object' });
      // defaulting, and an attempt to touch server-owned fields, which must not stick
      return { object: { ...obj, spec: { readOnly: false, ...spec }, metadata: { ...obj.metadata, uid: 'forged', generation: 99 } }, issues };
    };

    it('rejects with 422 listing the issues like the API server, applies defaults, cannot forge metadata', async () => {
      await store.close();
      store = open({ admission: { 'space.io/capsuleviews': admitViews } });
      const view = (protocol: string, capsuleRef = 'hello'): KubeObject => ({ apiVersion: 'space.io/v1alpha1', kind: 'CapsuleView', metadata: { name: 'hello' }, spec: { capsuleRef, protocol } });
      const e = await rejects(store.create(CAPSULE_VIEWS, view('smb')), 422);
      assert.equal(e.message, 'CapsuleView.space.io "hello" is invalid: spec.protocol: Unsupported value: "smb": supported values: "fuse", "nfs", "nvme", "csi"');
      assert.deepEqual((e as InvalidError).issues.map((i) => i.path), ['spec.protocol']);
      const v = await store.create(CAPSULE_VIEWS, view('nfs'));
      assert.deepEqual(v.spec, { readOnly: false, capsuleRef: 'hello', protocol: 'nfs' });
      assert.notEqual(v.metadata.uid, 'forged');
      assert.equal(v.metadata.generation, 1);
      const two = await rejects(store.replace(CAPSULE_VIEWS, { ...v, spec: { capsuleRef: 'other', protocol: 'ftp' } }), 422);
      assert.match(two.message, /^CapsuleView\.space\.io "hello" is invalid: \[spec\.protocol: Unsupported value: "ftp": .*, spec\.capsuleRef: Invalid value: field is immutable\]$/);
      await rejects(store.replaceStatus(CAPSULE_VIEWS, { ...v, status: { endpoint: 5 } }), 422, /status\.endpoint/);
      const ok = await store.replaceStatus(CAPSULE_VIEWS, { ...v, status: { endpoint: { address: '127.0.0.1', port: 2049 } } });
      assert.equal(ok.metadata.generation, 1);
      // other types are not affected
      await store.create(CAPSULES, capsule('free'));
    });

    it('a throwing admission function is a 500, not a crash', async () => {
      await store.close();
      store = open({
        admission: new Map<string, Admission>([['/configmaps', () => {
          throw new Error('validator bug');
        }]]),
      });
      await rejects(store.create(CONFIGMAPS, configMap('x')), 500, /validator bug/);
    });
  });

  describe('events', () => {
    it('records core/v1 Events with involvedObject, aggregating repeats by count and lastTimestamp', async () => {
      let clock = Date.parse('2025-01-01T00:00:00Z');
      await store.close();
      store = open({ now: () => new Date(clock) });
      const c = await store.create(CAPSULES, capsule('hello'));
      const { seen, w } = await record(store, EVENTS, { resourceVersion: store.resourceVersion() });
      await store.recordEvent({ involved: c, type: 'Normal', reason: 'Created', message: 'capsule created', source: 'space-operator' });
      clock += 5000;
      await store.recordEvent({ involved: c, type: 'Normal', reason: 'Created', message: 'capsule created', source: 'space-operator' });
      await store.recordEvent({ involved: c, type: 'Warning', reason: 'SyncFailed', message: 'zone-b unreachable', source: 'space-operator' });
      const l = await store.list(EVENTS);
      assert.equal(l.items.length, 2);
      const created = l.items.find((e) => e.reason === 'Created')!;
      assert.equal(created.count, 2);
      assert.equal(created.firstTimestamp, '2025-01-01T00:00:00Z');
      assert.equal(created.lastTimestamp, '2025-01-01T00:00:05Z');
      assert.deepEqual(created.involvedObject, { apiVersion: 'space.io/v1alpha1', kind: 'Capsule', name: 'hello', namespace: 'default', uid: c.metadata.uid, resourceVersion: c.metadata.resourceVersion });
      assert.equal(created.type, 'Normal');
      assert.deepEqual(created.source, { component: 'space-operator' });
      assert.equal(created.metadata.namespace, 'default');
      assert.match(created.metadata.name, /^hello\.[0-9a-f]{16}$/);
      await until(() => seen.length === 3, 'event watch');
      assert.deepEqual(seen.map((s) => s.type), ['ADDED', 'MODIFIED', 'ADDED']);
      w.stop();
      // cluster-scoped objects' events go to "default"
      const fz = await store.create(FEDERATION_ZONES, { apiVersion: 'space.io/v1alpha1', kind: 'FederationZone', metadata: { name: 'zone-b' }, spec: {} });
      await store.recordEvent({ involved: fz, type: 'Normal', reason: 'Connected', message: 'ok', source: 'space-operator' });
      assert.equal((await store.list(EVENTS, 'default')).items.length, 3);
      await rejects(store.recordEvent({ involved: fz, type: 'Bogus' as 'Normal', reason: 'x', message: 'y', source: 'z' }), 422);
      await rejects(store.recordEvent({ involved: {} as KubeObject, type: 'Normal', reason: 'x', message: 'y', source: 'z' }), 400);
    });

    it('keeps events bounded by count and age', async () => {
      let clock = Date.parse('2025-01-01T00:00:00Z');
      await store.close();
      store = open({ maxEvents: 10, eventTtlMs: 60_000, now: () => new Date(clock) });
      const c = await store.create(CAPSULES, capsule('noisy'));
      for (let i = 0; i < 25; i++) await store.recordEvent({ involved: c, type: 'Normal', reason: 'Tick', message: `tick ${i}`, source: 'test' });
      const l = await store.list(EVENTS);
      assert.equal(l.items.length, 10);
      assert.deepEqual(l.items.map((e) => e.message).sort(), Array.from({ length: 10 }, (_, i) => `tick ${i + 15}`).sort(), 'the oldest are dropped');
      clock += 120_000;
      await store.recordEvent({ involved: c, type: 'Normal', reason: 'Tick', message: 'late', source: 'test' });
      assert.deepEqual((await store.list(EVENTS)).items.map((e) => e.message), ['late'], 'expired events are dropped');
    });
  });

  describe('robustness', () => {
    it('a corrupted row is reported by get, skipped by list, removable by delete; other objects are intact', async () => {
      await store.create(CAPSULES, capsule('good'));
      await store.create(CAPSULES, capsule('bad'));
      const raw = new Database(path.join(dir, 'objects.db'));
      raw.prepare(`UPDATE objects SET body = '{"truncated' WHERE name = 'bad'`).run();
      raw.close();
      await rejects(store.get(CAPSULES, 'bad'), 500, /corrupt/);
      assert.deepEqual((await store.list(CAPSULES)).items.map((o) => o.metadata.name), ['good']);
      const { seen, w } = await record(store, CAPSULES, { resourceVersion: store.resourceVersion() });
      await store.delete(CAPSULES, 'bad');
      await until(() => seen.length === 1, 'DELETED of the corrupt row');
      assert.equal(seen[0]!.type, 'DELETED');
      assert.equal(seen[0]!.obj.metadata.name, 'bad');
      w.stop();
      await rejects(store.get(CAPSULES, 'bad'), 404);
      assert.equal((await store.get(CAPSULES, 'good')).metadata.name, 'good');
    });

    it('a corrupted change-log entry ends the watch with an error (the caller relists) instead of skipping it', async () => {
      const start = store.resourceVersion();
      const a = await store.create(CAPSULES, capsule('a'));
      const raw = new Database(path.join(dir, 'objects.db'));
      raw.prepare('UPDATE changes SET body = ? WHERE rv = ?').run('not json', Number(a.metadata.resourceVersion));
      raw.close();
      const w = await store.watch(CAPSULES, { resourceVersion: start }, () => undefined);
      await assert.rejects(w.done, (e: unknown) => e instanceof ApiError && e.code === 500);
    });

    it('survives kill -9 of a writer mid-stream: committed objects stay, the store stays consistent and writable', async () => {
      const journalSeen: { op: string; name: string; counter?: number; rv?: string }[] = [];
      const watchSeen: number[] = [];
      const w = await store.watch(CAPSULES, { resourceVersion: store.resourceVersion() }, (_t, o) => watchSeen.push(Number(o.metadata.resourceVersion)));
      for (let round = 0; round < 4; round++) {
        const lines = await runAndKill(dir, 150 + round * 97);
        journalSeen.push(...lines);
        const reopened = open();
        try {
          // every write the child reported as committed is there (or superseded by a later one)
          const last = new Map<string, { counter: number; rv: number }>();
          for (const l of journalSeen) if (l.op === 'replace' || l.op === 'status') last.set(l.name, { counter: l.counter!, rv: Number(l.rv) });
          for (const [name, want] of last) {
            const o = await reopened.get(CAPSULES, name);
            assert.ok((o.spec as { counter: number }).counter >= want.counter, `${name}: counter ${JSON.stringify(o.spec)} < ${want.counter} after round ${round}`);
            assert.ok(Number(o.metadata.resourceVersion) >= want.rv);
          }
          const deleted = new Set(journalSeen.filter((l) => l.op === 'delete').map((l) => l.name));
          for (const cm of (await reopened.list(CONFIGMAPS)).items) assert.ok(!deleted.has(cm.metadata.name), `${cm.metadata.name} was deleted`);
          // state and change log agree
          const head = Number(reopened.resourceVersion());
          const raw = new Database(path.join(dir, 'objects.db'), { readonly: true });
          try {
            assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
            const maxChange = (raw.prepare('SELECT MAX(rv) AS m FROM changes').get() as { m: number }).m;
            assert.equal(maxChange, head, 'the last change is the head resourceVersion');
            const rows = raw.prepare('SELECT o.rv, c.body FROM objects o LEFT JOIN changes c ON c.rv = o.rv').all() as { rv: number; body: string | null }[];
            for (const r of rows) assert.ok(r.body !== null, `object at rv ${r.rv} has its change`);
          } finally {
            raw.close();
          }
          await reopened.create(CONFIGMAPS, configMap(`after-${round}`));
        } finally {
          await reopened.close();
        }
      }
      // the watch in this process saw the other process's writes in order, across the kills
      await until(() => watchSeen.length > 0, 'events from the killed writers');
      w.stop();
      assert.deepEqual(watchSeen, [...watchSeen].sort((a, b) => a - b));
      assert.equal(new Set(watchSeen).size, watchSeen.length);
    });
  });
});

/** Start the looping writer, let it report `lines` commits, then kill -9 it; returns what it reported. */
function runAndKill(dir: string, lines: number): Promise<{ op: string; name: string; counter?: number; rv?: string }[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(helpers, 'object-store-child.js'), 'loop', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let err = '';
    const got: { op: string; name: string; counter?: number; rv?: string }[] = [];
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(buf.slice(0, nl)) as { op?: string; name?: string };
        buf = buf.slice(nl + 1);
        if (line.op) got.push(line as { op: string; name: string });
        if (got.length === lines) child.kill('SIGKILL');
      }
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(got);
      else reject(new Error(`writer exited on its own (${code}): ${err}`));
    });
  });
}

// ---------------------------------------------------------------------------------------- CLI

async function runCmd(cmd: Command, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  // These tests are about the store and the verbs: no background server (the standalone path
  // that apply starts is covered by test/cli-standalone.test.ts).
  if (cmd.name === 'apply') args = [...args, '--no-start'];
  const flags = new Flags(parseArgs(args, new Set(['help', ...(cmd.booleans ?? [])])));
  let stdout = '';
  let stderr = '';
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string | Uint8Array) => ((stdout += String(s)), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array) => ((stderr += String(s)), true)) as typeof process.stderr.write;
  let code: number;
  try {
    const r = await cmd.run(flags);
    code = typeof r === 'number' ? r : 0;
  } catch (e) {
    stderr += `spacectl: ${(e as Error).message}\n`;
    code = e instanceof SpaceError && e.code === 'INVALID_ARGUMENT' ? 2 : 1;
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
  return { code, stdout, stderr };
}

const EXAMPLES: Record<string, string> = {
  '10-capsule.yaml': `# a capsule and its view, as in deployment/examples/
apiVersion: space.io/v1alpha1
kind: Capsule
metadata:
  name: hello
  labels:
    app: demo
spec:
  source:
    inline:
      data: "hello space"
  policy:
    compression: zstd
---
apiVersion: space.io/v1alpha1
kind: CapsuleView
metadata:
  name: hello-nfs
spec:
  capsuleRef:
    name: hello
  protocol: nfs
  readOnly: true
`,
  '20-zone.yml': `apiVersion: space.io/v1alpha1
kind: FederationZone
metadata:
  name: zone-b
  namespace: ignored-for-cluster-scoped
spec:
  zone: zone-b
  region: eu-central-1
  endpoint: zone-b.example.com:7443
`,
  '30-config.json': JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings' }, data: { a: '1', b: '2' } }] }),
  'README.md': 'not a manifest',
  'policy.yaml': '# a capsule policy, not a manifest\ncompression: zstd\n',
};

describe('spacectl apply / get / delete on the embedded store', function () {
  this.timeout(120_000);
  let home: string;
  let dataDir: string;
  let examples: string;
  const D = () => ['--data-dir', dataDir];
  beforeEach(() => {
    home = tmpDir('space-objects-cli-');
    dataDir = path.join(home, 'data');
    examples = path.join(home, 'examples');
    fs.mkdirSync(examples);
    for (const [f, text] of Object.entries(EXAMPLES)) fs.writeFileSync(path.join(examples, f), text);
    fs.mkdirSync(path.join(examples, 'nested'));
    fs.writeFileSync(path.join(examples, 'nested', 'skip.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nested\n');
  });
  afterEach(() => rmrf(home));

  it('kinds resolve by plural, singular, short name, Kind, group-qualified name and category', () => {
    assert.deepEqual(resolveKinds('cap').map((k) => k.type.plural), ['capsules']);
    assert.deepEqual(resolveKinds('CapsuleView').map((k) => k.type.plural), ['capsuleviews']);
    assert.deepEqual(resolveKinds('fz').map((k) => k.type.plural), ['federationzones']);
    assert.deepEqual(resolveKinds('capsules.space.io').map((k) => k.type.plural), ['capsules']);
    assert.deepEqual(resolveKinds('cm').map((k) => k.type.plural), ['configmaps']);
    assert.deepEqual(resolveKinds('space').map((k) => k.type.plural), ['capsules', 'capsuleviews', 'federationzones']);
    assert.deepEqual(resolveKinds('pods'), []);
    assert.equal(KINDS.length, 7);
    const now = new Date('2025-01-01T12:00:00Z');
    assert.equal(age('2025-01-01T11:59:15Z', now), '45s');
    assert.equal(age('2025-01-01T11:54:30Z', now), '5m30s');
    assert.equal(age('2024-12-30T07:00:00Z', now), '2d5h');
  });

  it('apply creates, re-apply is unchanged, an edit is configured; get prints tables, yaml, json, names', async () => {
    let r = await runCmd(apply, ['-f', examples, ...D()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, ['capsule.space.io/hello created', 'capsuleview.space.io/hello-nfs created', 'federationzone.space.io/zone-b created', 'configmap/settings created', ''].join('\n'));
    assert.match(r.stderr, /^spacectl: skipping .*policy\.yaml: not a Kubernetes manifest/);
    r = await runCmd(apply, ['-f', path.join(examples, 'policy.yaml'), ...D()]);
    assert.equal(r.code, 2, 'named explicitly, a non-manifest is an error');
    assert.match(r.stderr, /policy\.yaml:2: apiVersion not set/);
    r = await runCmd(apply, ['-f', examples, ...D()]);
    assert.equal(r.stdout, ['capsule.space.io/hello unchanged', 'capsuleview.space.io/hello-nfs unchanged', 'federationzone.space.io/zone-b unchanged', 'configmap/settings unchanged', ''].join('\n'));

    // a controller writes status and adds a finalizer; a later apply keeps both
    const store = ObjectStore.open(path.join(dataDir, 'objects'));
    try {
      const c = await store.get(CAPSULES, 'hello');
      const withFin = await store.replace(CAPSULES, { ...c, metadata: { ...c.metadata, finalizers: ['space.io/segments'], labels: { ...c.metadata.labels, owner: 'operator' } } });
      await store.replaceStatus(CAPSULES, { ...withFin, status: { phase: 'Ready', version: 1, size: 11 * 1024 * 1024, conditions: [{ type: 'Ready', status: 'True', reason: 'Ready', message: '', lastTransitionTime: '2025-01-01T00:00:00Z' }] } });
    } finally {
      await store.close();
    }
    fs.writeFileSync(path.join(examples, '10-capsule.yaml'), EXAMPLES['10-capsule.yaml']!.replace('compression: zstd', 'compression: gzip'));
    r = await runCmd(apply, ['-f', path.join(examples, '10-capsule.yaml'), ...D()]);
    assert.equal(r.stdout, 'capsule.space.io/hello configured\ncapsuleview.space.io/hello-nfs unchanged\n');

    r = await runCmd(get, ['capsules', ...D()]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^NAME\s+PHASE\s+VERSION\s+SIZE\s+READY\s+AGE$/);
    assert.match(lines[1]!, /^hello\s+Ready\s+1\s+11Mi\s+True\s+\d+s$/);

    r = await runCmd(get, ['cap', 'hello', '-o', 'yaml', ...D()]);
    const y = YAML.parse(r.stdout) as KubeObject;
    assert.equal(y.metadata.name, 'hello');
    assert.deepEqual(y.metadata.finalizers, ['space.io/segments']);
    assert.deepEqual(y.metadata.labels, { app: 'demo', owner: 'operator' });
    assert.equal((y.spec as { policy: { compression: string } }).policy.compression, 'gzip');
    assert.equal(y.metadata.generation, 2);
    assert.equal((y.status as { phase: string }).phase, 'Ready');

    r = await runCmd(get, ['space', ...D()]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+PHASE.*\ncapsule\.space\.io\/hello\s+Ready/);
    assert.match(r.stdout, /\n\nNAME\s+CAPSULE\s+PROTOCOL\s+READY\s+ENDPOINT\s+AGE\ncapsuleview\.space\.io\/hello-nfs\s+hello\s+nfs\s+<none>/);
    assert.match(r.stdout, /\n\nNAME\s+ZONE\s+REGION\s+CONNECTED\s+RTT\s+AGE\nfederationzone\.space\.io\/zone-b\s+zone-b\s+eu-central-1/);

    r = await runCmd(get, ['cv', '-o', 'wide', ...D()]);
    assert.match(r.stdout, /READONLY/);
    assert.match(r.stdout, /hello-nfs\s+hello\s+nfs\s+<none>\s+<none>\s+true/);

    r = await runCmd(get, ['configmaps', '-o', 'json', ...D()]);
    const list = JSON.parse(r.stdout) as { kind: string; items: KubeObject[] };
    assert.equal(list.kind, 'List');
    assert.deepEqual(list.items.map((i) => i.metadata.name), ['settings']);
    r = await runCmd(get, ['cm', ...D()]);
    assert.match(r.stdout, /^NAME\s+DATA\s+AGE\nsettings\s+2\s+/);

    r = await runCmd(get, ['fz,cap', '-o', 'name', ...D()]);
    assert.equal(r.stdout, 'federationzone.space.io/zone-b\ncapsule.space.io/hello\n');

    r = await runCmd(get, ['cap', '-l', 'app=demo', '-o', 'name', ...D()]);
    assert.equal(r.stdout, 'capsule.space.io/hello\n');
    r = await runCmd(get, ['cap', '-l', 'app!=demo', ...D()]);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /No resources found in default namespace\./);
  });

  it('namespaces: -n places and filters, -A lists all, a mismatch is an error', async () => {
    let r = await runCmd(apply, ['-f', path.join(examples, '30-config.json'), '-n', 'team-x', ...D()]);
    assert.equal(r.code, 0, r.stderr);
    r = await runCmd(apply, ['-f', path.join(examples, '30-config.json'), ...D()]);
    assert.equal(r.stdout, 'configmap/settings created\n');
    r = await runCmd(get, ['cm', '-A', ...D()]);
    assert.match(r.stdout, /^NAMESPACE\s+NAME\s+DATA\s+AGE\ndefault\s+settings\s+2\s+\S+\nteam-x\s+settings\s+2/);
    r = await runCmd(get, ['cm', '-n', 'team-x', '-o', 'name', ...D()]);
    assert.equal(r.stdout, 'configmap/settings\n');
    const ns = path.join(home, 'ns.yaml');
    fs.writeFileSync(ns, 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: a\n');
    r = await runCmd(apply, ['-f', ns, '-n', 'b', ...D()]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /ns\.yaml:1: the namespace from the provided object "a" does not match the namespace "b"/);
  });

  it('errors are clear one-liners: bad YAML with file:line, unknown kind, 422 issues, not found', async () => {
    const bad = path.join(home, 'bad.yaml');
    fs.writeFileSync(bad, 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n');
    let r = await runCmd(apply, ['-f', bad, ...D()]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^spacectl: .*bad\.yaml:(9|10): invalid YAML: /);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    r = await runCmd(get, ['cm', ...D()]);
    assert.match(r.stderr, /No resources found/, 'nothing was applied from a file with an error');

    const unknown = path.join(home, 'pod.yaml');
    fs.writeFileSync(unknown, '# leading comment\n\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n');
    r = await runCmd(apply, ['-f', unknown, ...D()]);
    assert.match(r.stderr, /pod\.yaml:3: unknown kind "Pod" in version "v1"/);
    r = await runCmd(get, ['pods', ...D()]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown kind "pods"; known: capsules \(cap\)/);
    r = await runCmd(get, ['cap', 'missing', ...D()]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'spacectl: capsules.space.io "missing" not found\n');
    r = await runCmd(apply, [...D()]);
    assert.equal(r.code, 2);
    r = await runCmd(get, ['cap', '--bogus', 'x', ...D()]);
    assert.match(r.stderr, /unknown option --bogus/);

    const { apply: strictApply } = objectCommands({
      storeOptions: () => ({
        admission: {
          'space.io/capsuleviews': (obj) => ({ object: obj, issues: (obj.spec as { protocol: string }).protocol === 'nfs' ? [] : [{ path: 'spec.protocol', message: `Unsupported value: "${(obj.spec as { protocol: string }).protocol}": supported values: "fuse", "nfs", "nvme", "csi"` }] }),
        },
      }),
    });
    fs.writeFileSync(path.join(examples, '10-capsule.yaml'), EXAMPLES['10-capsule.yaml']!.replace('protocol: nfs', 'protocol: smb'));
    r = await runCmd(strictApply, ['-f', path.join(examples, '10-capsule.yaml'), ...D()]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, 'capsule.space.io/hello created\n', 'the valid object is still applied');
    assert.match(r.stderr, /^spacectl: .*10-capsule\.yaml:15: CapsuleView\.space\.io "hello-nfs" is invalid: spec\.protocol: Unsupported value: "smb": supported values: "fuse", "nfs", "nvme", "csi"\n$/);
  });

  it('delete by name and by file; finalizers are reported, --ignore-not-found', async () => {
    await runCmd(apply, ['-f', examples, ...D()]);
    let r = await runCmd(del, ['cv', 'hello-nfs', ...D()]);
    assert.equal(r.stdout, 'capsuleview.space.io "hello-nfs" deleted\n');
    r = await runCmd(del, ['cv', 'hello-nfs', ...D()]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /capsuleviews\.space\.io "hello-nfs" not found/);
    r = await runCmd(del, ['cv', 'hello-nfs', '--ignore-not-found', ...D()]);
    assert.equal(r.code, 0);
    r = await runCmd(del, ['-f', path.join(examples, '20-zone.yml'), ...D()]);
    assert.equal(r.stdout, 'federationzone.space.io "zone-b" deleted\n');
    const store = ObjectStore.open(path.join(dataDir, 'objects'));
    try {
      const c = await store.get(CAPSULES, 'hello');
      await store.replace(CAPSULES, { ...c, metadata: { ...c.metadata, finalizers: ['space.io/segments'] } });
    } finally {
      await store.close();
    }
    r = await runCmd(del, ['capsule', 'hello', ...D()]);
    assert.equal(r.stdout, 'capsule.space.io "hello" marked for deletion; waiting for finalizers: space.io/segments\n');
    r = await runCmd(get, ['space', ...D()]);
    assert.match(r.stdout, /capsule\.space\.io\/hello/);
  });

  it('delete --wait in a separate process returns once a controller (this process) removes the finalizer', async () => {
    await runCmd(apply, ['-f', examples, ...D()]);
    const store = ObjectStore.open(path.join(dataDir, 'objects'));
    try {
      const c = await store.get(CAPSULES, 'hello');
      await store.replace(CAPSULES, { ...c, metadata: { ...c.metadata, finalizers: ['space.io/segments'] } });
      // the "controller": when it sees the deletionTimestamp, it cleans up and removes its finalizer
      const w = await store.watch(CAPSULES, { resourceVersion: store.resourceVersion() }, (t, o) => {
        if (t === 'MODIFIED' && o.metadata.deletionTimestamp && o.metadata.finalizers?.length) {
          void store.replace(CAPSULES, { ...o, metadata: { ...o.metadata, finalizers: [] } });
        }
      });
      const child = spawn(process.execPath, [path.join(helpers, 'object-store-cli.js'), 'delete', 'cap', 'hello', '--wait', '--timeout', '100', ...D()], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const code = await new Promise<number | null>((res) => child.on('exit', res));
      assert.equal(code, 0, stderr);
      assert.equal(stdout, 'capsule.space.io "hello" deleted\n');
      await rejects(store.get(CAPSULES, 'hello'), 404);
      w.stop();
    } finally {
      await store.close();
    }
  });

  it('manifest parsing: multi-document, empty documents, Lists, line numbers', () => {
    const ms = parseManifests('---\n# nothing\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n', 'm.yaml');
    assert.deepEqual(ms.map((m) => [m.object.metadata.name, m.line]), [['a', 4], ['b', 10]]);
    assert.throws(() => parseManifests('apiVersion: v1\nkind: ConfigMap\n', 'x.yaml'), /x\.yaml:1: ConfigMap: metadata not set/);
    assert.throws(() => parseManifests('- a\n- b\n', 'x.yaml'), /a manifest must be a mapping/);
    assert.throws(() => parseManifests('a: 1\na: 2\n', 'x.yaml'), /x\.yaml:2: invalid YAML/);
  });
});
