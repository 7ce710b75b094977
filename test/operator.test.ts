/**
 * The reconcilers end to end in standalone mode: the embedded object store (with the CRD
 * admission), the Manager with its informers and work queues, and a real gateway (real Store,
 * gRPC on a loopback port, real FUSE mounts for fuse views). Objects are applied the way
 * `spacectl apply` does; the tests read back status, conditions, events and gateway state.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { createLogger, silentLogger } from '../capsule/log.js';
import { LocalViewManager } from '../gateway/fuse/views.js';
import { GatewayClient } from '../gateway/client.js';
import { startGateway, type Gateway } from '../gateway/server.js';
import { GatewayExports } from '../gateway/exports.js';
import { NvmeExports } from '../gateway/nvme/exports.js';
import { NfsExports } from '../gateway/nfs/gateway-exports.js';
import { sh } from './helpers/cli.js';
import { connectController, readSqe, check } from '../bench/nvme/initiator.js';
import { StaticGateways } from '../operator/gateways.js';
import { createOperator, type Operator } from '../operator/operator.js';
import { openObjectStore } from '../operator/standalone/run.js';
import { ObjectStore } from '../operator/standalone/object-store.js';
import { applyObject, readManifests } from '../operator/standalone/manifests.js';
import { kindOf } from '../operator/standalone/kinds.js';
import { CAPSULES, CAPSULE_VIEWS, EVENTS, FEDERATION_ZONES, type KubeObject } from '../operator/runtime/object-api.js';
import { tmpDir, rmrf } from './helpers/tmp.js';
import { KubeVolumeBackend, policyFromParameters } from '../csi-node/volumes.js';

const EXAMPLES = path.resolve('deployment', 'examples');

async function eventually<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

const cond = (o: KubeObject, type: string) => (o.status as { conditions?: { type: string; status: string; reason: string; message: string }[] } | undefined)?.conditions?.find((c) => c.type === type);
const status = (o: KubeObject) => (o.status ?? {}) as Record<string, unknown>;

describe('operator (standalone: embedded API, real gateway)', function () {
  this.timeout(120_000);
  let dir: string;
  let store: Store;
  let gw: Gateway;
  let objects: ObjectStore;
  let op: Operator | undefined;
  let client: GatewayClient;
  const fuseOk = fs.existsSync('/dev/fuse');

  function startOperator(): Operator {
    const o = createOperator({
      api: objects,
      gateways: new StaticGateways([`127.0.0.1:${gw.grpcPort}`]),
      logger: silentLogger,
      viewRoot: path.join(dir, 'views'),
      localGateway: true,
      zoneProbeIntervalMs: 200,
      metricsAddress: '127.0.0.1:0',
    });
    return o;
  }

  async function apply(obj: KubeObject): Promise<KubeObject> {
    const k = kindOf(obj.apiVersion, obj.kind)!;
    return (await applyObject(objects, k.type, obj)).object;
  }

  const getCapsule = (name: string) => objects.get(CAPSULES, name, 'default');
  const getView = (name: string) => objects.get(CAPSULE_VIEWS, name, 'default');
  const ready = (get: () => Promise<KubeObject>) => async () => {
    const o = await get();
    return cond(o, 'Ready')?.status === 'True' ? o : undefined;
  };

  before(async () => {
    dir = tmpDir('space-operator-');
    store = Store.open(path.join(dir, 'data'), { logger: silentLogger });
    const views = new LocalViewManager(store, silentLogger);
    // NVMe/TCP and NFS on ephemeral ports.
    const exports = new GatewayExports([new NvmeExports(store, silentLogger, '127.0.0.1:0'), new NfsExports(store, silentLogger, '127.0.0.1:0')]);
    gw = await startGateway({ dataDir: path.join(dir, 'data'), store, views, exports, listen: '127.0.0.1:0', httpListen: '127.0.0.1:0', logger: createLogger({ component: 'gw', level: 'error', write: () => {} }) });
    client = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    objects = openObjectStore(path.join(dir, 'standalone'));
    op = startOperator();
    await op.start();
  });

  after(async () => {
    await op?.stop();
    await objects?.close();
    client?.close();
    await gw?.close();
    rmrf(dir);
  });

  it('applies every example; capsules become Ready with size, digest, version, finalizer and events', async function () {
    const files = fs.readdirSync(EXAMPLES).filter((f) => /^(capsule-|view-|zones).*\.yaml$/.test(f)).map((f) => path.join(EXAMPLES, f));
    for (const m of readManifests(files)) {
      if (m.object.kind === 'CapsuleView' && (m.object.spec as { options?: { mountPath?: string } }).options?.mountPath) {
        // keep test mounts inside the temp dir
        (m.object.spec as { options: { mountPath: string } }).options.mountPath = path.join(dir, 'mnt', m.object.metadata.name);
      }
      await apply(m.object);
    }
    const hello = await eventually('hello Ready', ready(() => getCapsule('hello')));
    const s = status(hello);
    assert.equal(s.phase, 'Ready');
    assert.equal(s.version, 1);
    assert.equal(s.size, Buffer.byteLength('Hello from Space: one capsule, many views.\n'));
    assert.match(String(s.digest), /^sha256:[0-9a-f]{64}$/);
    assert.equal(s.observedGeneration, hello.metadata.generation);
    assert.deepEqual(hello.metadata.finalizers, ['space.io/finalizer']);
    assert.equal(s.capsuleId, hello.metadata.uid);
    const data = await client.read(hello.metadata.uid!, 'content', 0, 1000);
    assert.equal(data.toString(), 'Hello from Space: one capsule, many views.\n');
    const events = await eventually('an Ingested event', async () => (await objects.list(EVENTS, 'default')).items.find((e) => (e.involvedObject as { name: string }).name === 'hello' && e.reason === 'Ingested'));
    assert.equal(events.type, 'Normal');

    // the snapshot clone shares hello's version 1; the ConfigMap capsule holds one file per key; the volume is sparse
    const clone = await eventually('hello-v1 Ready', ready(() => getCapsule('hello-v1')));
    assert.equal(status(clone).digest === undefined, false);
    assert.equal((await client.read(clone.metadata.uid!, 'content', 0, 1000)).toString(), data.toString());
    const site = await eventually('site Ready', ready(() => getCapsule('site')));
    const cm = (await readManifests([path.join(EXAMPLES, 'capsule-configmap.yaml')])).find((m) => m.object.kind === 'ConfigMap')!.object;
    const keys = Object.keys(cm.data as Record<string, string>).sort();
    assert.deepEqual((await client.readdir(site.metadata.uid!, '')).map((e) => e.name).sort(), keys);
    assert.equal(status(site).files, keys.length);
    const vol = await eventually('scratch Ready', ready(() => getCapsule('scratch')));
    assert.equal(status(vol).size, 1024 ** 3);
    assert.ok(Number(status(vol).storedSize) < 1024 * 1024, 'an empty volume stores (almost) nothing');
  });

  it('serves views: fuse mounted and readable, csi published, nvme and nfs exported', async function () {
    const csi = await eventually('csi view Ready', ready(() => getView('hello-csi')));
    assert.match(String((status(csi).endpoint as { url: string }).url), /^csi:\/\/csi\.space\.io\//);
    // The NFS view is a live read-only export: a real NFS client (libnfs) reads the file.
    const nfs = await eventually('hello-nfs Ready', ready(() => getView('hello-nfs')));
    const nep = status(nfs).endpoint as { address: string; port: number; exportPath: string; url: string };
    assert.equal(nep.exportPath, '/default/hello-nfs');
    assert.equal(nep.url, `nfs://${nep.address}:${nep.port}/default/hello-nfs`);
    const cat = await sh('nfs-cat', [`nfs://${nep.address}${nep.exportPath}/content?version=3&nfsport=${nep.port}&mountport=${nep.port}`]);
    assert.equal(cat.code, 0, cat.stderr); // libnfs-utils comes with hack/install-deps.sh
    assert.equal(cat.stdout, 'Hello from Space: one capsule, many views.\n');
    // The NVMe/TCP view is a live namespace of the scratch volume: a host connects to the endpoint.
    const nvme = await eventually('scratch-nvme Ready', ready(() => getView('scratch-nvme')));
    const ep = status(nvme).endpoint as { address: string; port: number; nqn: string; url: string };
    assert.equal(ep.nqn, 'nqn.2024-11.io.space:default.scratch');
    assert.equal(ep.url, `nvme://${ep.address}:${ep.port}/${ep.nqn}`);
    const session = await connectController({ host: ep.address, port: ep.port, subnqn: ep.nqn });
    try {
      assert.equal(session.blocks * session.blockSize, 1024 ** 3);
      const r = check(await session.io[0]!.submit(readSqe(0, 8, session.blockSize)), 'read');
      assert.ok(r.data!.equals(Buffer.alloc(8 * session.blockSize)), 'an empty volume reads zeros');
    } finally {
      session.close();
    }
    if (!fuseOk) return this.skip();
    const fuse = await eventually('fuse view Ready', ready(() => getView('hello-fuse')));
    const mp = (status(fuse).endpoint as { mountPath: string }).mountPath;
    assert.equal(mp, path.join(dir, 'mnt', 'hello-fuse'));
    // async read: the FUSE server runs on this process's event loop (a sync read would deadlock)
    assert.equal(await fs.promises.readFile(path.join(mp, 'content'), 'utf8'), 'Hello from Space: one capsule, many views.\n');
  });

  it('a view whose listen port is taken says so (ListenFailed) instead of failing silently', async () => {
    const busy = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => busy.once('listening', r));
    try {
      const port = (busy.address() as net.AddressInfo).port;
      await apply({ apiVersion: 'space.io/v1alpha1', kind: 'CapsuleView', metadata: { name: 'busy-nvme', namespace: 'default' }, spec: { capsuleRef: { name: 'scratch' }, protocol: 'nvme', options: { listen: `127.0.0.1:${port}`, nqn: 'nqn.2024-11.io.space:test:busy' } } });
      const v = await eventually('ListenFailed', async () => {
        const o = await getView('busy-nvme');
        return cond(o, 'Ready')?.reason === 'ListenFailed' ? o : undefined;
      });
      assert.equal(status(v).phase, 'Pending');
      assert.match(String(cond(v, 'Ready')?.message), /cannot listen for NVMe\/TCP on 127\.0\.0\.1:\d+.*EADDRINUSE/);
    } finally {
      busy.close();
    }
  });

  it('a view of a missing capsule waits with a clear condition and recovers when the capsule appears', async () => {
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'CapsuleView', metadata: { name: 'late-view', namespace: 'default' }, spec: { capsuleRef: { name: 'late' }, protocol: 'csi' } });
    const waiting = await eventually('CapsuleNotFound', async () => {
      const o = await getView('late-view');
      return cond(o, 'Ready')?.reason === 'CapsuleNotFound' ? o : undefined;
    });
    assert.match(cond(waiting, 'Ready')!.message, /capsule late does not exist/);
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'late', namespace: 'default' }, spec: { source: { inline: { data: 'late' } } } });
    await eventually('late-view Ready after its capsule appeared', ready(() => getView('late-view')));
  });

  it('a sovereignty conflict or a bad policy is a Failed condition with an event, not a crash or a retry loop', async () => {
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'sovereign', namespace: 'default' }, spec: {
      source: { inline: { data: 'x' } },
      policy: { sovereignty: { allowedRegions: ['eu-west-1'] }, federation: { targets: [{ zone: 'zone-b', priority: 1 }] } },
    } });
    const bad = await eventually('SovereigntyConflict', async () => {
      const o = await getCapsule('sovereign');
      return cond(o, 'PolicyValid')?.reason === 'SovereigntyConflict' ? o : undefined;
    });
    assert.equal(status(bad).phase, 'Failed');
    assert.match(cond(bad, 'Ready')!.message, /zone-b is in region eu-central-1, outside/); // the region comes from zones.yaml
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'odd-segments', namespace: 'default' }, spec: { source: { inline: { data: 'x' } }, policy: { segmentSize: 3000 } } });
    const odd = await eventually('InvalidPolicy', async () => {
      const o = await getCapsule('odd-segments');
      return cond(o, 'PolicyValid')?.reason === 'InvalidPolicy' ? o : undefined;
    });
    assert.match(cond(odd, 'PolicyValid')!.message, /segmentSize/);
    const warnings = (await objects.list(EVENTS, 'default')).items.filter((e) => e.type === 'Warning' && ['sovereign', 'odd-segments'].includes((e.involvedObject as { name: string }).name));
    assert.equal(warnings.length, 2);
    // nothing was stored for either
    const names = (await client.list()).map((c) => c.name);
    assert.ok(!names.includes('default.sovereign') && !names.includes('default.odd-segments'));
  });

  it('refuses a changed spec.source with a condition when the API server lets it through (no CEL)', async () => {
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'pinned', namespace: 'default' }, spec: { source: { inline: { data: 'one' } } } });
    const first = await eventually('pinned Ready', ready(() => getCapsule('pinned')));
    assert.ok(first.metadata.annotations?.['space.io/immutable-spec']);
    // this store's admission enforces the CRD's immutability rule, as a CEL-capable API server does
    await assert.rejects(objects.replace(CAPSULES, { ...first, spec: { source: { inline: { data: 'two' } } } }), /immutable|cannot|Invalid value/i);
    // an older API server without CEL would accept the change: a second handle without admission
    const lax = ObjectStore.open(path.join(dir, 'standalone', 'objects'));
    try {
      await lax.replace(CAPSULES, { ...first, spec: { source: { inline: { data: 'two' } } } });
    } finally {
      await lax.close();
    }
    const refused = await eventually('ImmutableFieldChanged', async () => {
      const o = await getCapsule('pinned');
      return cond(o, 'Ready')?.reason === 'ImmutableFieldChanged' ? o : undefined;
    });
    assert.match(cond(refused, 'Ready')!.message, /cannot change after creation/);
    assert.equal((await client.read(first.metadata.uid!, 'content', 0, 10)).toString(), 'one');
  });

  it('volume capsules grow with spec.size (never shrink); the CSI cluster backend expands through it', async function () {
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'vol', namespace: 'default' }, spec: { source: { empty: { size: '1Mi' } } } });
    const v = await eventually('vol Ready', ready(() => getCapsule('vol')));
    assert.equal(status(v).size, 1024 * 1024);
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'vol', namespace: 'default' }, spec: { source: { empty: { size: '1Mi' } }, size: '4Mi' } });
    await eventually('vol grown', async () => status(await getCapsule('vol')).size === 4 * 1024 * 1024);
    assert.equal((await client.getattr(v.metadata.uid!, 'content')).size, 4 * 1024 * 1024);
    await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'vol', namespace: 'default' }, spec: { source: { empty: { size: '1Mi' } }, size: '2Mi' } });
    const shrunk = await eventually('ShrinkNotSupported', async () => {
      const o = await getCapsule('vol');
      return cond(o, 'Ready')?.reason === 'ShrinkNotSupported' ? o : undefined;
    });
    assert.match(cond(shrunk, 'Ready')!.message, /volumes only grow/);
    assert.equal((await client.getattr(v.metadata.uid!, 'content')).size, 4 * 1024 * 1024, 'nothing was cut');

    if (!fuseOk) return;
    const b = new KubeVolumeBackend({ api: objects, namespace: 'default', pollMs: 20, readyTimeoutMs: 20_000 });
    const vol = await b.createVolume({ name: 'pvc-grow', capacityBytes: 2 * 1024 * 1024, protocol: 'fuse', parameters: { protocol: 'fuse' }, policy: policyFromParameters({}), topology: [] });
    assert.equal(await b.expandVolume(vol.id, 8 * 1024 * 1024), 8 * 1024 * 1024);
    const obj = await getCapsule(vol.id);
    assert.equal(status(obj).size, 8 * 1024 * 1024);
    assert.equal((await client.getattr(obj.metadata.uid!, 'content')).size, 8 * 1024 * 1024);

    // CreateSnapshot returns once the operator has cut it: later writes do not reach it.
    await client.write(obj.metadata.uid!, 'content', 0, Buffer.from('before-snapshot'));
    const snap = await b.createSnapshot(vol.id, 'snap-point-in-time');
    assert.equal(snap.readyToUse, true);
    await client.write(obj.metadata.uid!, 'content', 0, Buffer.from('after--snapshot'));
    const snapObj = await getCapsule(snap.id);
    assert.ok(Number(status(snapObj).version) >= 1, 'the snapshot capsule is frozen as a version');
    assert.equal((await client.read(snapObj.metadata.uid!, 'content', 0, 15)).toString(), 'before-snapshot');
    await b.deleteSnapshot(snap.id);
    await b.deleteVolume(vol.id);
  });

  it('federation zones: connected with a round-trip time when the peer answers, unreachable otherwise', async () => {
    const server = net.createServer((s) => s.end()).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    try {
      const port = (server.address() as net.AddressInfo).port;
      await apply({ apiVersion: 'space.io/v1alpha1', kind: 'FederationZone', metadata: { name: 'zone-live' }, spec: { zone: 'zone-live', region: 'eu-west-1', endpoint: `127.0.0.1:${port}` } });
      const z = await eventually('zone-live connected', async () => {
        const o = await objects.get(FEDERATION_ZONES, 'zone-live');
        return status(o).connected === true ? o : undefined;
      });
      assert.ok(typeof status(z).roundTripMillis === 'number' && Number(status(z).roundTripMillis) >= 0);
      assert.equal(cond(z, 'Ready')!.status, 'True');
      const a = await objects.get(FEDERATION_ZONES, 'zone-a');
      assert.equal(status(a).connected, false);
      assert.equal(cond(a, 'Connected')!.reason, 'Unreachable');
    } finally {
      server.close();
    }
  });

  it('serves /metrics with controller-runtime names and Space gauges, and /healthz /readyz', async () => {
    const base = `http://127.0.0.1:${op!.manager.port}`;
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.match(text, /controller_runtime_reconcile_total\{controller="capsule",result="success"\} [1-9]/);
    assert.match(text, /controller_runtime_reconcile_time_seconds_bucket\{le="[^"]+",controller="capsuleview"\}/);
    assert.match(text, /workqueue_depth\{name="capsule"\}/);
    assert.match(text, /space_capsules\{phase="Ready"\} [1-9]/);
    assert.match(text, /space_capsule_views\{protocol="csi",ready="true"\} [1-9]/);
    assert.match(text, /space_capsule_views\{protocol="nvme",ready="true"\} 1/);
    assert.match(text, /space_capsule_views\{protocol="nfs",ready="true"\} 1/);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
  });

  it('is idle once everything is reconciled: no status writes without a change', async () => {
    await eventually('hello Ready', ready(() => getCapsule('hello')));
    // wait for the zone probes above to settle, then compare resourceVersions over a quiet period
    await new Promise((r) => setTimeout(r, 1500));
    const snapshot = async () => new Map((await Promise.all([CAPSULES, CAPSULE_VIEWS].map((t) => objects.list(t)))).flatMap((l) => l.items).map((o) => [`${o.kind}/${o.metadata.name}`, o.metadata.resourceVersion]));
    const before = await snapshot();
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await snapshot(), before);
  });

  it('a restarted operator re-ingests nothing and changes nothing', async () => {
    const before = await getCapsule('hello');
    await op!.stop();
    op = startOperator();
    await op.start();
    await new Promise((r) => setTimeout(r, 1000));
    const after = await getCapsule('hello');
    assert.equal(after.metadata.resourceVersion, before.metadata.resourceVersion);
    assert.deepEqual((await client.get(before.metadata.uid!)).versions.map((v) => v.version), [1]);
  });

  it('deleting: the finalizer removes the data (Delete) or keeps it (Retain), then the object goes', async () => {
    const hello = await getCapsule('late');
    await objects.delete(CAPSULES, 'late', 'default');
    await eventually('late gone', async () => objects.get(CAPSULES, 'late', 'default').then(() => false, () => true));
    await assert.rejects(client.get(hello.metadata.uid!), /not found|does not exist/i);

    const kept = await apply({ apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name: 'kept', namespace: 'default' }, spec: { source: { inline: { data: 'keep me' } }, deletionPolicy: 'Retain' } });
    const k = await eventually('kept Ready', ready(() => getCapsule('kept')));
    await objects.delete(CAPSULES, 'kept', 'default');
    await eventually('kept gone', async () => objects.get(CAPSULES, 'kept', 'default').then(() => false, () => true));
    assert.equal((await client.read(k.metadata.uid!, 'content', 0, 100)).toString(), 'keep me');
    assert.equal(kept.metadata.name, 'kept');
  });

  it('deleting a fuse view unmounts it', async function () {
    if (!fuseOk) return this.skip();
    const v = await getView('hello-fuse');
    const mp = (status(v).endpoint as { mountPath: string }).mountPath;
    await objects.delete(CAPSULE_VIEWS, 'hello-fuse', 'default');
    await eventually('view gone', async () => getView('hello-fuse').then(() => false, () => true));
    assert.ok(!(await client.listMounts()).some((m) => m.target === mp));
  });
});
