/**
 * ObjectApi over a real API server with @kubernetes/client-node 1.x.
 *
 * Which client for which call:
 *  - Every type with an API group (space.io, coordination.k8s.io Leases, ...) goes through
 *    CustomObjectsApi. Despite its name it is a plain group/version/plural REST client that
 *    returns the JSON as is, which is exactly the untyped KubeObject this interface deals in,
 *    and it has the status subresource calls.
 *  - Core types (ConfigMap, Secret, ...) live under /api/v1, which CustomObjectsApi cannot
 *    address; they go through the generic KubernetesObjectApi. That one converts to and from
 *    the generated typed models (timestamps as Date objects), so values are converted at this
 *    boundary (see toTyped / toPlain).
 *  - Events are written with CoreV1Api (create, or a JSON patch of count/lastTimestamp when the
 *    same event repeats, as client-go's event correlator does).
 *  - Watches use the Watch class (chunked JSON lines), from a resourceVersion with bookmarks.
 * Errors become ApiError(code, reason, message) from the Status body the server sent; a watch
 * ERROR event or an HTTP error on the watch request become the same (410 included).
 */
import { hostname } from 'node:os';
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  Watch,
  type CoreV1Event,
  type KubernetesObject,
} from '@kubernetes/client-node';
import {
  ApiError,
  apiVersionOf,
  isNotFound,
  type EventRecord,
  type KubeObject,
  type ListResult,
  type ObjectApi,
  type ResourceType,
  type WatchEventType,
  type WatchHandle,
  type WatchOptions,
} from './object-api.js';

export interface KubeConfigOptions {
  /** Path of a kubeconfig file. */
  kubeconfig?: string;
  /** Use the pod's service account (KUBERNETES_SERVICE_HOST, the mounted token and CA). */
  inCluster?: boolean;
  /** Context to use from the kubeconfig (default: its current-context). */
  context?: string;
}

/** A KubeConfig from a file, the in-cluster service account, or the default search ($KUBECONFIG, ~/.kube/config, in-cluster). */
export function loadKubeConfig(opts: KubeConfigOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else if (opts.inCluster) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (opts.context) kc.setCurrentContext(opts.context);
  return kc;
}

const REASONS: Record<number, string> = {
  400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed',
  406: 'NotAcceptable', 409: 'Conflict', 410: 'Expired', 415: 'UnsupportedMediaType', 422: 'Invalid',
  429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
};

interface StatusBody {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
}

function parseStatus(body: unknown): StatusBody | undefined {
  let v = body;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return undefined;
    }
  }
  return v && typeof v === 'object' ? (v as StatusBody) : undefined;
}

/** Map a client-node failure to ApiError; network errors pass through unchanged. */
export function toApiError(err: unknown, what = 'request'): unknown {
  if (err instanceof ApiError) return err;
  if (err instanceof ApiException) {
    const code = err.code;
    const st = parseStatus(err.body);
    return new ApiError(code, st?.reason || REASONS[code] || 'Unknown', st?.message || `${what}: HTTP ${code}`);
  }
  const statusCode = (err as { statusCode?: unknown } | null)?.statusCode;
  if (typeof statusCode === 'number') {
    return new ApiError(statusCode, REASONS[statusCode] || 'Unknown', `${what}: HTTP ${statusCode} ${(err as Error).message ?? ''}`.trim());
  }
  return err;
}

/** Typed-model fields of ObjectMeta that client-node expects as Date objects. */
const META_TIMES = ['creationTimestamp', 'deletionTimestamp'] as const;

/**
 * Plain JSON → what KubernetesObjectApi's typed serializer accepts: timestamps as Date.
 * managedFields is dropped: it is server-side bookkeeping, and an update without it keeps the
 * stored value.
 */
function toTyped(obj: KubeObject): KubernetesObject {
  const metadata: Record<string, unknown> = { ...obj.metadata };
  for (const f of META_TIMES) if (typeof metadata[f] === 'string') metadata[f] = new Date(metadata[f] as string);
  delete metadata.managedFields;
  return { ...obj, metadata } as KubernetesObject;
}

/** Typed model → plain JSON (Date → RFC 3339 string via toJSON). */
function toPlain<T>(obj: unknown): T {
  return JSON.parse(JSON.stringify(obj)) as T;
}

export interface KubeObjectApiOptions {
  /** Reporting instance of events (default: hostname). */
  instance?: string;
  /** How many distinct events to remember for count-patching repeats. */
  eventCacheSize?: number;
}

interface SeenEvent {
  name: string;
  namespace: string;
  count: number;
  chain: Promise<void>;
}

export class KubeObjectApi implements ObjectApi {
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly objects: KubernetesObjectApi;
  private readonly watcher: Watch;
  private readonly events = new Map<string, SeenEvent>();
  private eventSeq = 0;

  constructor(
    readonly kc: KubeConfig,
    private readonly opts: KubeObjectApiOptions = {},
  ) {
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
    this.objects = KubernetesObjectApi.makeApiClient(kc);
    this.watcher = new Watch(kc);
  }

  static fromConfig(opts: KubeConfigOptions = {}, apiOpts?: KubeObjectApiOptions): KubeObjectApi {
    return new KubeObjectApi(loadKubeConfig(opts), apiOpts);
  }

  async list(type: ResourceType, namespace?: string): Promise<ListResult> {
    return this.call('list', async () => {
      const ns = type.namespaced ? namespace : undefined;
      let raw: { items?: KubeObject[]; metadata?: { resourceVersion?: string } };
      if (!type.group) {
        raw = toPlain(await this.objects.list(type.version, type.kind, ns));
      } else if (!type.namespaced) {
        raw = await this.custom.listClusterCustomObject({ group: type.group, version: type.version, plural: type.plural });
      } else if (ns) {
        raw = await this.custom.listNamespacedCustomObject({ group: type.group, version: type.version, namespace: ns, plural: type.plural });
      } else {
        raw = await this.custom.listCustomObjectForAllNamespaces({ group: type.group, version: type.version, plural: type.plural });
      }
      // Items of a list carry no apiVersion/kind from a real server; reconcilers expect them.
      const items = (raw.items ?? []).map((o) => ({ ...o, apiVersion: o.apiVersion || apiVersionOf(type), kind: o.kind || type.kind }));
      return { items, resourceVersion: raw.metadata?.resourceVersion ?? '' };
    });
  }

  async get(type: ResourceType, name: string, namespace?: string): Promise<KubeObject> {
    return this.call('get', async () => {
      const ns = this.ns(type, namespace);
      if (!type.group) {
        return toPlain<KubeObject>(await this.objects.read({ apiVersion: apiVersionOf(type), kind: type.kind, metadata: { name, namespace: ns } }));
      }
      return ns
        ? this.custom.getNamespacedCustomObject({ group: type.group, version: type.version, namespace: ns, plural: type.plural, name })
        : this.custom.getClusterCustomObject({ group: type.group, version: type.version, plural: type.plural, name });
    });
  }

  async create(type: ResourceType, obj: KubeObject): Promise<KubeObject> {
    return this.call('create', async () => {
      const body = this.complete(type, obj);
      const ns = this.ns(type, body.metadata.namespace);
      if (!type.group) return toPlain<KubeObject>(await this.objects.create(toTyped(body)));
      return ns
        ? this.custom.createNamespacedCustomObject({ group: type.group, version: type.version, namespace: ns, plural: type.plural, body })
        : this.custom.createClusterCustomObject({ group: type.group, version: type.version, plural: type.plural, body });
    });
  }

  async replace(type: ResourceType, obj: KubeObject): Promise<KubeObject> {
    return this.call('replace', async () => {
      const body = this.complete(type, obj);
      const ns = this.ns(type, body.metadata.namespace);
      const name = body.metadata.name;
      if (!type.group) return toPlain<KubeObject>(await this.objects.replace(toTyped(body)));
      return ns
        ? this.custom.replaceNamespacedCustomObject({ group: type.group, version: type.version, namespace: ns, plural: type.plural, name, body })
        : this.custom.replaceClusterCustomObject({ group: type.group, version: type.version, plural: type.plural, name, body });
    });
  }

  async replaceStatus(type: ResourceType, obj: KubeObject): Promise<KubeObject> {
    return this.call('replaceStatus', async () => {
      if (!type.group) {
        // The core types this operator touches (ConfigMap, Secret, Event) have no status.
        throw new ApiError(405, 'MethodNotAllowed', `replaceStatus: ${type.plural} has no status subresource here`);
      }
      const body = this.complete(type, obj);
      const ns = this.ns(type, body.metadata.namespace);
      const name = body.metadata.name;
      return ns
        ? this.custom.replaceNamespacedCustomObjectStatus({ group: type.group, version: type.version, namespace: ns, plural: type.plural, name, body })
        : this.custom.replaceClusterCustomObjectStatus({ group: type.group, version: type.version, plural: type.plural, name, body });
    });
  }

  async delete(type: ResourceType, name: string, namespace?: string): Promise<void> {
    await this.call('delete', async () => {
      const ns = this.ns(type, namespace);
      if (!type.group) {
        await this.objects.delete({ apiVersion: apiVersionOf(type), kind: type.kind, metadata: { name, namespace: ns } });
      } else if (ns) {
        await this.custom.deleteNamespacedCustomObject({ group: type.group, version: type.version, namespace: ns, plural: type.plural, name });
      } else {
        await this.custom.deleteClusterCustomObject({ group: type.group, version: type.version, plural: type.plural, name });
      }
    });
  }

  async watch(type: ResourceType, opts: WatchOptions, onEvent: (type: WatchEventType, obj: KubeObject) => void): Promise<WatchHandle> {
    const base = type.group ? `/apis/${type.group}/${type.version}` : `/api/${type.version}`;
    const path = type.namespaced && opts.namespace
      ? `${base}/namespaces/${encodeURIComponent(opts.namespace)}/${type.plural}`
      : `${base}/${type.plural}`;
    let settled = false;
    let stopped = false;
    let resolveDone!: () => void;
    let rejectDone!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    // A watch whose caller already stopped listening must not become an unhandled rejection.
    done.catch(() => {});
    let abort: AbortController | undefined;
    const finish = (err: unknown) => {
      if (settled) return;
      settled = true;
      abort?.abort();
      if (err && !stopped) rejectDone(err);
      else resolveDone();
    };
    // Ask the server to end the watch after 5-10 min (as client-go's reflector does): a watch on
    // a connection that died silently (no RST through a NAT or proxy) then still ends, and the
    // informer resumes from its last resourceVersion. The spread keeps replicas from re-watching
    // in lockstep.
    const query: Record<string, string | number | boolean> = {
      resourceVersion: opts.resourceVersion,
      timeoutSeconds: Math.floor(300 + Math.random() * 300),
    };
    if (opts.allowBookmarks) query.allowWatchBookmarks = true;
    abort = await this.watcher.watch(
      path,
      query,
      (phase: string, obj: unknown) => {
        if (settled) return;
        if (phase === 'ERROR') {
          const st = parseStatus(obj);
          const code = st?.code ?? 500;
          finish(new ApiError(code, st?.reason || REASONS[code] || 'Unknown', st?.message || `watch ${path}: error event`));
          return;
        }
        if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' || phase === 'BOOKMARK') {
          onEvent(phase, obj as KubeObject);
        }
      },
      (err: unknown) => finish(err ? toApiError(err, `watch ${path}`) : null),
    );
    if (settled) abort.abort();
    return {
      stop: () => {
        stopped = true;
        finish(null);
      },
      done,
    };
  }

  /**
   * Record a core/v1 Event. The first occurrence creates an Event; a repeat (same object, type,
   * reason, message, source) bumps count and lastTimestamp on it instead of creating another.
   */
  async recordEvent(ev: EventRecord): Promise<void> {
    const inv = ev.involved;
    const key = [inv.metadata.uid ?? '', inv.kind, inv.metadata.namespace ?? '', inv.metadata.name, ev.type, ev.reason, ev.message, ev.source].join('\u0000');
    const seen = this.events.get(key);
    if (seen) {
      // Serialize repeats of one event so counts do not race.
      const next = seen.chain.then(() => this.bumpEvent(key, seen, ev));
      seen.chain = next.catch(() => {});
      return next;
    }
    const namespace = inv.metadata.namespace || 'default';
    const now = new Date();
    const name = `${inv.metadata.name}.${((BigInt(now.getTime()) * 1_000_000n) + BigInt(this.eventSeq++ % 1_000_000)).toString(16)}`;
    const entry: SeenEvent = { name, namespace, count: 1, chain: Promise.resolve() };
    const body: CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: inv.apiVersion, kind: inv.kind, name: inv.metadata.name,
        namespace: inv.metadata.namespace, uid: inv.metadata.uid, resourceVersion: inv.metadata.resourceVersion,
      },
      type: ev.type,
      reason: ev.reason,
      message: ev.message,
      count: 1,
      firstTimestamp: now,
      lastTimestamp: now,
      source: { component: ev.source },
      reportingComponent: ev.source,
      reportingInstance: this.opts.instance ?? hostname(),
    };
    const created = this.call('recordEvent', async () => {
      await this.core.createNamespacedEvent({ namespace, body });
    });
    entry.chain = created.catch(() => {});
    this.remember(key, entry);
    try {
      await created;
    } catch (err) {
      this.events.delete(key);
      throw err;
    }
  }

  private async bumpEvent(key: string, seen: SeenEvent, ev: EventRecord): Promise<void> {
    const count = seen.count + 1;
    try {
      await this.call('recordEvent', () => this.core.patchNamespacedEvent({
        name: seen.name,
        namespace: seen.namespace,
        // JSON Patch is the client's default patch content type for this call.
        body: [
          { op: 'replace', path: '/count', value: count },
          { op: 'replace', path: '/lastTimestamp', value: new Date().toISOString() },
        ],
      }));
      seen.count = count;
    } catch (err) {
      // Events expire (1 h by default): start a new one.
      if (!isNotFound(err)) throw err;
      this.events.delete(key);
      await this.recordEvent(ev);
    }
  }

  private remember(key: string, entry: SeenEvent): void {
    this.events.set(key, entry);
    const max = this.opts.eventCacheSize ?? 4096;
    while (this.events.size > max) this.events.delete(this.events.keys().next().value as string);
  }

  private ns(type: ResourceType, namespace: string | undefined): string | undefined {
    if (!type.namespaced) return undefined;
    if (!namespace) throw new ApiError(400, 'BadRequest', `${type.plural} is namespaced: a namespace is required`);
    return namespace;
  }

  /** apiVersion/kind are required on the wire; callers may leave them to the type. */
  private complete(type: ResourceType, obj: KubeObject): KubeObject {
    return { ...obj, apiVersion: obj.apiVersion || apiVersionOf(type), kind: obj.kind || type.kind };
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw toApiError(err, what);
    }
  }
}
