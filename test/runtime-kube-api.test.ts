/**
 * KubeObjectApi against a local HTTP server that speaks just enough of the Kubernetes REST
 * protocol (discovery for /api/v1, list JSON, watch as a chunked stream of JSON lines, Status
 * error bodies), backed by the FakeApi store. This runs the real @kubernetes/client-node code
 * paths: URL building, auth headers, serialization, watch parsing and error mapping.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { Informer } from '../operator/runtime/informer.js';
import { KubeObjectApi } from '../operator/runtime/kube-api.js';
import { LeaderElector } from '../operator/runtime/leader-election.js';
import {
  ApiError, CAPSULE_VIEWS, CAPSULES, CONFIGMAPS, EVENTS, FEDERATION_ZONES, isConflict, isGone, isNotFound, LEASES, SECRETS,
  type KubeObject, type ResourceType,
} from '../operator/runtime/object-api.js';
import { FakeApi, FakeStore, waitFor } from './helpers/fake-api.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const TYPES: ResourceType[] = [CAPSULES, CAPSULE_VIEWS, FEDERATION_ZONES, LEASES, CONFIGMAPS, SECRETS, EVENTS];

interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
  contentType?: string;
  auth?: string;
}

/** The fake REST front end. */
class FakeKubeServer {
  readonly api: FakeApi;
  readonly requests: Seen[] = [];
  /** Answer watch requests with HTTP 410 instead of a stream. */
  watchHttpGone = false;
  private server!: Server;
  port = 0;

  /** `store`: serve an existing store (a restarted server keeps its data). */
  constructor(store?: FakeStore) {
    this.api = new FakeApi(store);
  }

  async start(port = 0): Promise<void> {
    this.server = createServer((req, res) => {
      void this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: `http://127.0.0.1:${this.port}`, skipTLSVerify: true }],
      users: [{ name: 'u', token: 'secret-token' }],
      contexts: [{ name: 'ctx', cluster: 'fake', user: 'u', namespace: 'ns' }],
      currentContext: 'ctx',
    });
    return kc;
  }

  seen(method: string, pathPrefix: string): Seen[] {
    return this.requests.filter((r) => r.method === method && r.path.startsWith(pathPrefix));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    this.requests.push({ method, path: url.pathname, query: url.searchParams, contentType: req.headers['content-type'], auth: req.headers.authorization });
    const body = await readBody(req);

    if (method === 'GET' && url.pathname === '/api/v1') {
      // Discovery, as KubernetesObjectApi asks for it to find a core kind's plural.
      return json(res, 200, {
        kind: 'APIResourceList', apiVersion: 'v1', groupVersion: 'v1',
        resources: TYPES.filter((t) => !t.group).map((t) => ({ name: t.plural, namespaced: t.namespaced, kind: t.kind, singularName: '', verbs: ['get', 'list', 'watch', 'create', 'update', 'delete', 'patch'] })),
      });
    }
    const r = route(url.pathname);
    if (!r) return this.fail(res, new ApiError(404, 'NotFound', `no route for ${url.pathname}`));
    const { type, namespace, name, sub } = r;
    const { api } = this;

    if (!name && method === 'GET' && url.searchParams.get('watch') === 'true') {
      if (this.watchHttpGone) return this.fail(res, new ApiError(410, 'Expired', 'too old resource version'));
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      res.flushHeaders(); // as the API server does: the client's watch() waits for the headers
      const handle = await api.watch(type, {
        namespace, resourceVersion: url.searchParams.get('resourceVersion') ?? '', allowBookmarks: url.searchParams.get('allowWatchBookmarks') === 'true',
      }, (t, obj) => res.write(`${JSON.stringify({ type: t, object: obj })}\n`));
      res.on('close', () => handle.stop());
      handle.done.then(
        () => res.end(),
        (err: unknown) => {
          res.write(`${JSON.stringify({ type: 'ERROR', object: statusOf(err) })}\n`);
          res.end();
        },
      );
      return;
    }
    if (!name && method === 'GET') {
      const list = await api.list(type, namespace);
      // Like a real server, items of built-in lists carry no apiVersion/kind.
      const items = list.items.map((o) => (type.group ? o : { ...o, apiVersion: undefined, kind: undefined }));
      return json(res, 200, { apiVersion: type.group ? `${type.group}/${type.version}` : type.version, kind: `${type.kind}List`, metadata: { resourceVersion: list.resourceVersion }, items });
    }
    if (!name && method === 'POST') return json(res, 201, await api.create(type, body as KubeObject));
    if (name && method === 'GET') return json(res, 200, await api.get(type, name, namespace));
    if (name && method === 'PUT') {
      const obj = body as KubeObject;
      if (obj.metadata?.name !== name) throw new ApiError(400, 'BadRequest', 'name in body does not match the URL');
      return json(res, 200, sub === 'status' ? await api.replaceStatus(type, obj) : await api.replace(type, obj));
    }
    if (name && method === 'DELETE') {
      await api.delete(type, name, namespace);
      return json(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' });
    }
    if (name && method === 'PATCH') {
      if (req.headers['content-type'] !== 'application/json-patch+json') throw new ApiError(415, 'UnsupportedMediaType', 'only JSON patch here');
      const cur = await api.get(type, name, namespace) as Record<string, unknown>;
      for (const op of body as Array<{ op: string; path: string; value: unknown }>) {
        if (op.op !== 'replace' && op.op !== 'add') throw new ApiError(422, 'Invalid', `op ${op.op}`);
        cur[op.path.slice(1)] = op.value;
      }
      return json(res, 200, await api.replace(type, cur as KubeObject));
    }
    throw new ApiError(405, 'MethodNotAllowed', `${method} ${url.pathname}`);
  }

  private fail(res: ServerResponse, err: unknown): void {
    const st = statusOf(err);
    if (res.headersSent) return void res.end();
    json(res, st.code, st);
  }
}

function statusOf(err: unknown): { kind: 'Status'; apiVersion: 'v1'; metadata: object; status: 'Failure'; code: number; reason: string; message: string } {
  const e = err instanceof ApiError ? err : new ApiError(500, 'InternalError', String(err));
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', code: e.code, reason: e.reason, message: e.message };
}

function route(p: string): { type: ResourceType; namespace?: string; name?: string; sub?: string } | undefined {
  const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?(?:\/(status))?$/.exec(p);
  if (!m) return undefined;
  const group = m[2] ?? '';
  const version = m[1] ?? m[3];
  const type = TYPES.find((t) => t.group === group && t.version === version && t.plural === m[5]);
  if (!type) return undefined;
  return { type, namespace: m[4] ? decodeURIComponent(m[4]) : undefined, name: m[6] ? decodeURIComponent(m[6]) : undefined, sub: m[7] };
}

function json(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  if (!chunks.length) return undefined;
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function rejects(p: Promise<unknown>, check: (e: unknown) => boolean, what: string): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    assert.ok(check(e), `${what}: unexpected error ${String(e)}`);
    return e;
  }
  assert.fail(`${what}: expected a rejection`);
}

const capsule = (name: string, spec: unknown = { size: 1 }): KubeObject => ({
  apiVersion: 'space.io/v1alpha1', kind: 'Capsule', metadata: { name, namespace: 'ns' }, spec,
});

describe('runtime: KubeObjectApi over client-node against a fake REST server', () => {
  let srv: FakeKubeServer;
  let api: KubeObjectApi;
  beforeEach(async () => {
    srv = new FakeKubeServer();
    await srv.start();
    api = new KubeObjectApi(srv.kubeConfig(), { instance: 'test-pod' });
  });
  afterEach(async () => {
    await srv.stop();
  });

  it('creates, reads, replaces (optimistic concurrency), updates status and deletes a custom resource', async () => {
    const created = await api.create(CAPSULES, capsule('a'));
    assert.equal(created.metadata.generation, 1);
    assert.ok(created.metadata.resourceVersion);
    assert.equal(srv.seen('POST', '/apis/space.io/v1alpha1/namespaces/ns/capsules').length, 1);
    assert.equal(srv.requests[0].auth, 'Bearer secret-token', 'credentials from the kubeconfig');

    const got = await api.get(CAPSULES, 'a', 'ns');
    assert.deepEqual(got.spec, { size: 1 });
    const updated = await api.replace(CAPSULES, { ...got, spec: { size: 2 } });
    assert.equal(updated.metadata.generation, 2);

    const conflict = await rejects(api.replace(CAPSULES, { ...got, spec: { size: 3 } }), isConflict, 'stale replace') as ApiError;
    assert.equal(conflict.reason, 'Conflict');
    assert.match(conflict.message, /has been modified/);
    const dup = await rejects(api.create(CAPSULES, capsule('a')), isConflict, 'duplicate create') as ApiError;
    assert.equal(dup.reason, 'AlreadyExists');

    const withStatus = await api.replaceStatus(CAPSULES, { ...updated, status: { phase: 'Ready' } });
    assert.deepEqual(withStatus.status, { phase: 'Ready' });
    assert.equal(withStatus.metadata.generation, 2, 'status writes do not bump generation');
    assert.equal(srv.seen('PUT', '/apis/space.io/v1alpha1/namespaces/ns/capsules/a/status').length, 1);

    const all = await api.list(CAPSULES);
    assert.equal(all.items.length, 1);
    assert.equal(all.resourceVersion, withStatus.metadata.resourceVersion);
    assert.equal(srv.seen('GET', '/apis/space.io/v1alpha1/capsules').length, 1, 'all-namespaces list path');
    await api.list(CAPSULES, 'ns');

    await api.delete(CAPSULES, 'a', 'ns');
    const nf = await rejects(api.get(CAPSULES, 'a', 'ns'), isNotFound, 'get after delete') as ApiError;
    assert.equal(nf.reason, 'NotFound');
    await rejects(api.delete(CAPSULES, 'a', 'ns'), isNotFound, 'second delete');
    await rejects(api.get(CAPSULES, 'a'), (e) => e instanceof ApiError && e.code === 400, 'namespaced type without namespace');
  });

  it('handles cluster-scoped custom resources', async () => {
    const z = await api.create(FEDERATION_ZONES, { apiVersion: 'space.io/v1alpha1', kind: 'FederationZone', metadata: { name: 'zone-b' }, spec: { zone: 'b' } });
    assert.equal(z.metadata.namespace, undefined);
    await api.replaceStatus(FEDERATION_ZONES, { ...z, status: { connected: true } });
    assert.deepEqual((await api.get(FEDERATION_ZONES, 'zone-b')).status, { connected: true });
    assert.equal((await api.list(FEDERATION_ZONES)).items.length, 1);
    assert.ok(srv.seen('PUT', '/apis/space.io/v1alpha1/federationzones/zone-b/status').length === 1);
    await api.delete(FEDERATION_ZONES, 'zone-b');
  });

  it('handles core types through the typed client (timestamps, list items without kind)', async () => {
    const cm = await api.create(CONFIGMAPS, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'src', namespace: 'ns', labels: { a: 'b' } }, data: { 'content': 'hello' } });
    assert.equal(typeof cm.metadata.creationTimestamp, 'string', 'plain JSON, not Date objects');
    assert.deepEqual(cm.data, { content: 'hello' });
    assert.equal(srv.seen('POST', '/api/v1/namespaces/ns/configmaps').length, 1);
    // Replace carries the string timestamp back: it must survive the typed serializer.
    const replaced = await api.replace(CONFIGMAPS, { ...cm, data: { content: 'bye' } });
    assert.deepEqual(replaced.data, { content: 'bye' });
    const list = await api.list(CONFIGMAPS, 'ns');
    assert.equal(list.items[0].kind, 'ConfigMap');
    assert.equal(list.items[0].apiVersion, 'v1');
    await rejects(api.replace(CONFIGMAPS, cm), isConflict, 'stale core replace');
    await api.create(SECRETS, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'kek', namespace: 'ns' }, data: { key: Buffer.from('k').toString('base64') } });
    const secret = await api.get(SECRETS, 'kek', 'ns') as KubeObject & { data: { key: string } };
    assert.equal(secret.data.key, 'aw==');
    await api.delete(CONFIGMAPS, 'src', 'ns');
    await rejects(api.get(CONFIGMAPS, 'src', 'ns'), isNotFound, 'core get after delete');
    await rejects(api.replaceStatus(CONFIGMAPS, cm), (e) => e instanceof ApiError && e.code === 405, 'no status for core');
  });

  it('watches: events as JSON lines, bookmarks requested, ERROR 410 and HTTP 410 become ApiError 410', async () => {
    await api.create(CAPSULES, capsule('before'));
    const { resourceVersion } = await api.list(CAPSULES, 'ns');
    const events: string[] = [];
    const h = await api.watch(CAPSULES, { namespace: 'ns', resourceVersion, allowBookmarks: true }, (t, o) => events.push(`${t} ${o.metadata.name}`));
    await api.create(CAPSULES, capsule('w'));
    await api.delete(CAPSULES, 'w', 'ns');
    srv.api.bookmark();
    await waitFor(() => events.length === 3, 'events through the stream');
    assert.deepEqual(events, ['ADDED w', 'DELETED w', 'BOOKMARK ']);
    const req = srv.seen('GET', '/apis/space.io/v1alpha1/namespaces/ns/capsules').find((r) => r.query.get('watch') === 'true')!;
    assert.equal(req.query.get('resourceVersion'), resourceVersion);
    assert.equal(req.query.get('allowWatchBookmarks'), 'true');
    assert.ok(Number(req.query.get('timeoutSeconds')) >= 300, 'server-side watch timeout requested');
    h.stop();
    await h.done;

    // Compaction while watching: the server sends an ERROR event with a 410 Status.
    const h2 = await api.watch(CAPSULES, { namespace: 'ns', resourceVersion: String(srv.api.store.rv) }, () => {});
    srv.api.expireWatches();
    const e1 = await rejects(h2.done, isGone, 'ERROR event') as ApiError;
    assert.equal(e1.reason, 'Expired');

    // A watch from a compacted version.
    const h3 = await api.watch(CAPSULES, { namespace: 'ns', resourceVersion: '1' }, () => {});
    await rejects(h3.done, isGone, 'old version');

    // A server that refuses the watch request itself with HTTP 410.
    srv.watchHttpGone = true;
    const h4 = await api.watch(CAPSULES, { resourceVersion: '1' }, () => {});
    await rejects(h4.done, isGone, 'HTTP 410');

    // A clean server-side close resolves.
    srv.watchHttpGone = false;
    const h5 = await api.watch(CAPSULES, { resourceVersion: String(srv.api.store.rv) }, () => {});
    srv.api.dropWatches();
    await h5.done;
  });

  it('an informer over the real client lists, watches, relists on 410 and survives server restarts', async () => {
    await api.create(CAPSULES, capsule('a'));
    await api.create(CAPSULES, capsule('b'));
    const inf = new Informer(api, CAPSULES, { backoff: { initialMs: 5, maxMs: 50 }, minWatchMs: 0 });
    const log: string[] = [];
    inf.addHandler({ onAdd: (o) => log.push(`add ${o.metadata.name}`), onDelete: (o) => log.push(`delete ${o.metadata.name}`) });
    inf.start();
    try {
      await inf.waitForSync(10_000);
      assert.deepEqual(log.sort(), ['add a', 'add b']);
      await api.create(CAPSULES, capsule('c'));
      await waitFor(() => inf.get('ns/c') !== undefined, 'c via the watch stream');

      // Changes while the watch is expired: 410 → relist → diff.
      srv.api.partition('fail');
      srv.api.breakWatches();
      await srv.api.client().delete(CAPSULES, 'b', 'ns');
      await srv.api.client().create(CAPSULES, capsule('d'));
      srv.api.expireWatches();
      srv.api.partition(undefined);
      await waitFor(() => inf.get('ns/d') !== undefined && inf.get('ns/b') === undefined, 'converged after 410');
      assert.ok(log.includes('delete b'));
      assert.ok(inf.stats.relistsOnGone >= 1);

      // The connection itself goes away (server restart on the same port).
      const port = srv.port;
      await srv.stop();
      await new Promise((r) => setTimeout(r, 50));
      const again = new FakeKubeServer(srv.api.store);
      await again.start(port);
      srv = again;
      await again.api.create(CAPSULES, capsule('e'));
      await waitFor(() => inf.get('ns/e') !== undefined, 'reconnected after the restart', 15_000);
    } finally {
      await inf.stop();
    }
  });

  it('leader election works over the real client (Leases via the coordination group)', async () => {
    const e = new LeaderElector(api, { namespace: 'kube-system', name: 'space', identity: 'me', leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 50 });
    e.start();
    try {
      await waitFor(() => e.isLeader(), 'leading');
      const lease = await api.get(LEASES, 'space', 'kube-system');
      const spec = lease.spec as { holderIdentity: string; renewTime: string; leaseDurationSeconds: number };
      assert.equal(spec.holderIdentity, 'me');
      assert.equal(spec.leaseDurationSeconds, 3);
      assert.match(spec.renewTime, /\.\d{6}Z$/);
      assert.equal(srv.seen('POST', '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases').length, 1, 'created');
      await waitFor(() => srv.seen('PUT', '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/space').length >= 2, 'renewed');
      assert.equal(e.isLeader(), true);
    } finally {
      await e.stop();
    }
    const released = await api.get(LEASES, 'space', 'kube-system');
    assert.equal((released.spec as { holderIdentity: string }).holderIdentity, '', 'released on stop');
  });

  it('records events: create the first time, JSON-patch the count on repeats', async () => {
    const c = await api.create(CAPSULES, capsule('ev'));
    await api.recordEvent({ involved: c, type: 'Warning', reason: 'ReplicationFailed', message: 'zone b down', source: 'space-operator' });
    await api.recordEvent({ involved: c, type: 'Warning', reason: 'ReplicationFailed', message: 'zone b down', source: 'space-operator' });
    await api.recordEvent({ involved: c, type: 'Warning', reason: 'ReplicationFailed', message: 'zone b down', source: 'space-operator' });
    await api.recordEvent({ involved: c, type: 'Normal', reason: 'Ready', message: 'ok', source: 'space-operator' });
    assert.equal(srv.seen('POST', '/api/v1/namespaces/ns/events').length, 2);
    const patches = srv.seen('PATCH', '/api/v1/namespaces/ns/events/');
    assert.equal(patches.length, 2);
    assert.equal(patches[0].contentType, 'application/json-patch+json');
    const events = (await api.list(EVENTS, 'ns')).items as Array<KubeObject & { count: number; reason: string; involvedObject: { name: string; uid: string }; source: { component: string }; reportingInstance: string }>;
    const failed = events.find((e) => e.reason === 'ReplicationFailed')!;
    assert.equal(failed.count, 3);
    assert.equal(failed.involvedObject.name, 'ev');
    assert.equal(failed.involvedObject.uid, c.metadata.uid);
    assert.equal(failed.source.component, 'space-operator');
    assert.equal(failed.reportingInstance, 'test-pod');

    // The event expired on the server: a repeat creates a new one.
    await api.delete(EVENTS, failed.metadata.name, 'ns');
    await api.recordEvent({ involved: c, type: 'Warning', reason: 'ReplicationFailed', message: 'zone b down', source: 'space-operator' });
    assert.equal(srv.seen('POST', '/api/v1/namespaces/ns/events').length, 3);
  });

  it('loads a kubeconfig file; network errors pass through unmapped', async () => {
    const dir = tmpDir();
    try {
      const file = path.join(dir, 'config');
      fs.writeFileSync(file, [
        'apiVersion: v1', 'kind: Config', 'current-context: c',
        'clusters:', `- name: k`, `  cluster: {server: "http://127.0.0.1:${srv.port}", insecure-skip-tls-verify: true}`,
        'users:', '- name: u', '  user: {token: file-token}',
        'contexts:', '- name: c', '  context: {cluster: k, user: u}',
      ].join('\n'));
      const fromFile = KubeObjectApi.fromConfig({ kubeconfig: file });
      await fromFile.list(CAPSULES);
      assert.equal(srv.requests.at(-1)?.auth, 'Bearer file-token');
      await srv.stop();
      const err = await rejects(fromFile.list(CAPSULES), (e) => !(e instanceof ApiError), 'connection refused');
      assert.match(String((err as Error).message), /ECONNREFUSED|connect/);
      const w = await fromFile.watch(CAPSULES, { resourceVersion: '1' }, () => {});
      await rejects(w.done, (e) => !(e instanceof ApiError), 'watch connection refused');
      srv = new FakeKubeServer();
      await srv.start(); // for afterEach
    } finally {
      rmrf(dir);
    }
  });
});
