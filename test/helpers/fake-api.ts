/**
 * A scripted in-memory ObjectApi for runtime tests. It keeps the API server's semantics that the
 * runtime depends on (global resourceVersion, 409 on stale writes, generation bumps on spec
 * change, the status subresource, finalizers, watches replaying history after a
 * resourceVersion and ending with 410 once that history is compacted) and lets a test inject
 * faults: failed or slow calls, conflicts, network partitions, dropped / broken / expired
 * watches. Several clients (FakeApi.client()) share one store but have their own faults, so
 * two leader-election candidates can be partitioned independently.
 */
import { randomUUID } from 'node:crypto';
import {
  ApiError,
  objectKey,
  type EventRecord,
  type KubeObject,
  type ListResult,
  type ObjectApi,
  type ResourceType,
  type WatchEventType,
  type WatchHandle,
  type WatchOptions,
} from '../../operator/runtime/object-api.js';

export type Op = 'list' | 'watch' | 'get' | 'create' | 'replace' | 'replaceStatus' | 'delete' | 'recordEvent';
const OPS: Op[] = ['list', 'watch', 'get', 'create', 'replace', 'replaceStatus', 'delete', 'recordEvent'];

const tid = (t: ResourceType): string => `${t.group}/${t.version}/${t.plural}`;
const clone = <T>(v: T): T => structuredClone(v);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface HistoryEntry {
  rv: number;
  typeId: string;
  type: WatchEventType;
  obj: KubeObject;
}

interface ActiveWatch {
  typeId: string;
  namespace?: string;
  allowBookmarks: boolean;
  onEvent: (type: WatchEventType, obj: KubeObject) => void;
  resolve: () => void;
  reject: (e: unknown) => void;
  closed: boolean;
}

/** The shared state: objects, history, watches, recorded events. */
export class FakeStore {
  rv = 0;
  /** Watches from a resourceVersion below this end with 410 Gone. */
  compactedRv = 0;
  readonly objects = new Map<string, Map<string, KubeObject>>();
  readonly history: HistoryEntry[] = [];
  readonly watches = new Set<ActiveWatch>();
  readonly events: EventRecord[] = [];

  bucket(t: ResourceType): Map<string, KubeObject> {
    let b = this.objects.get(tid(t));
    if (!b) this.objects.set(tid(t), (b = new Map()));
    return b;
  }

  /** Store a write and tell the watches. */
  commit(t: ResourceType, type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: KubeObject): KubeObject {
    this.rv++;
    obj.metadata.resourceVersion = String(this.rv);
    const key = objectKey(obj);
    if (type === 'DELETED') this.bucket(t).delete(key);
    else this.bucket(t).set(key, obj);
    const entry = { rv: this.rv, typeId: tid(t), type, obj: clone(obj) };
    this.history.push(entry);
    for (const w of this.watches) this.deliver(w, entry);
    return clone(obj);
  }

  deliver(w: ActiveWatch, e: HistoryEntry): void {
    if (w.typeId !== e.typeId || (w.namespace && e.obj.metadata.namespace !== w.namespace)) return;
    const obj = clone(e.obj);
    // setImmediate keeps events in order, asynchronous like a network stream, and before any close.
    setImmediate(() => {
      if (!w.closed) w.onEvent(e.type, obj);
    });
  }

  close(w: ActiveWatch, err?: unknown): void {
    if (w.closed) return;
    this.watches.delete(w);
    setImmediate(() => {
      if (w.closed) return;
      w.closed = true;
      if (err) w.reject(err);
      else w.resolve();
    });
  }
}

export interface Faults {
  /** Errors thrown by the next calls of each op, in order. */
  failures: Map<Op, Array<() => unknown>>;
  /** Extra latency per op. */
  delayMs: Partial<Record<Op, number>>;
  /** 'hang': calls never return; 'fail': calls fail like a refused connection. */
  partition?: 'hang' | 'fail';
}

export const networkError = (): Error => Object.assign(new Error('connect ECONNREFUSED (injected)'), { code: 'ECONNREFUSED' });
export const serverError = (): ApiError => new ApiError(500, 'InternalError', 'injected failure');
export const conflictError = (): ApiError => new ApiError(409, 'Conflict', 'injected conflict');

export class FakeApi implements ObjectApi {
  readonly faults: Faults = { failures: new Map(), delayMs: {} };
  readonly calls = Object.fromEntries(OPS.map((o) => [o, 0])) as Record<Op, number>;

  constructor(readonly store: FakeStore = new FakeStore()) {}

  /** Another client of the same store, with its own faults and counters. */
  client(): FakeApi {
    return new FakeApi(this.store);
  }

  // ---- fault injection ----

  failNext(op: Op, n = 1, err: () => unknown = serverError): this {
    const list = this.faults.failures.get(op) ?? [];
    for (let i = 0; i < n; i++) list.push(err);
    this.faults.failures.set(op, list);
    return this;
  }

  conflictNext(op: Op = 'replace', n = 1): this {
    return this.failNext(op, n, conflictError);
  }

  slow(op: Op, ms: number): this {
    this.faults.delayMs[op] = ms;
    return this;
  }

  partition(mode: 'hang' | 'fail' | undefined): this {
    this.faults.partition = mode;
    return this;
  }

  // ---- watch control (affects every client of the store) ----

  /** Compact history: current watches end with 410, and so will watches from older versions. */
  expireWatches(): void {
    this.store.compactedRv = this.store.rv;
    this.store.history.length = 0;
    for (const w of [...this.store.watches]) this.store.close(w, new ApiError(410, 'Expired', 'too old resource version'));
  }

  /** End every watch cleanly (as the API server does on its watch timeout). */
  dropWatches(): void {
    for (const w of [...this.store.watches]) this.store.close(w);
  }

  /** Break every watch with a network error. */
  breakWatches(err: () => unknown = networkError): void {
    for (const w of [...this.store.watches]) this.store.close(w, err());
  }

  /** Send a BOOKMARK with the current resourceVersion to watches that asked for them. */
  bookmark(): void {
    const rv = String(this.store.rv);
    for (const w of this.store.watches) {
      if (!w.allowBookmarks) continue;
      setImmediate(() => {
        if (!w.closed) w.onEvent('BOOKMARK', { apiVersion: '', kind: '', metadata: { name: '', resourceVersion: rv } });
      });
    }
  }

  activeWatches(): number {
    return this.store.watches.size;
  }

  // ---- ObjectApi ----

  async list(type: ResourceType, namespace?: string): Promise<ListResult> {
    await this.enter('list');
    const items = [...this.store.bucket(type).values()].filter((o) => !namespace || o.metadata.namespace === namespace);
    return { items: clone(items), resourceVersion: String(this.store.rv) };
  }

  async watch(type: ResourceType, opts: WatchOptions, onEvent: (type: WatchEventType, obj: KubeObject) => void): Promise<WatchHandle> {
    await this.enter('watch');
    const { store } = this;
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => {});
    const w: ActiveWatch = { typeId: tid(type), namespace: opts.namespace, allowBookmarks: !!opts.allowBookmarks, onEvent, resolve, reject, closed: false };
    const from = opts.resourceVersion === '' ? store.rv : Number(opts.resourceVersion);
    if (from < store.compactedRv) {
      store.close(w, new ApiError(410, 'Expired', `too old resource version: ${from} (${store.compactedRv})`));
    } else {
      for (const e of store.history) if (e.rv > from) store.deliver(w, e);
      store.watches.add(w);
    }
    return {
      stop: () => {
        store.watches.delete(w);
        if (!w.closed) {
          w.closed = true;
          resolve();
        }
      },
      done,
    };
  }

  async get(type: ResourceType, name: string, namespace?: string): Promise<KubeObject> {
    await this.enter('get');
    const o = this.store.bucket(type).get(namespace ? `${namespace}/${name}` : name);
    if (!o) throw notFound(type, name);
    return clone(o);
  }

  async create(type: ResourceType, obj: KubeObject): Promise<KubeObject> {
    await this.enter('create');
    const o = clone(obj);
    if (type.namespaced && !o.metadata.namespace) throw new ApiError(400, 'BadRequest', 'namespace required');
    if (!type.namespaced) delete o.metadata.namespace;
    if (this.store.bucket(type).has(objectKey(o))) throw new ApiError(409, 'AlreadyExists', `${type.plural} "${o.metadata.name}" already exists`);
    o.apiVersion ||= type.group ? `${type.group}/${type.version}` : type.version;
    o.kind ||= type.kind;
    o.metadata.uid = randomUUID();
    o.metadata.generation = 1;
    o.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    delete o.metadata.deletionTimestamp;
    return this.store.commit(type, 'ADDED', o);
  }

  async replace(type: ResourceType, obj: KubeObject): Promise<KubeObject> {
    await this.enter('replace');
    const cur = this.current(type, obj);
    const o = clone(obj);
    o.status = clone(cur.status);
    if (o.status === undefined) delete o.status;
    o.metadata = {
      ...o.metadata,
      uid: cur.metadata.uid,
      creationTimestamp: cur.metadata.creationTimestamp,
      deletionTimestamp: cur.metadata.deletionTimestamp,
      generation: (cur.metadata.generation ?? 1) + (JSON.stringify(o.spec) !== JSON.stringify(cur.spec) ? 1 : 0),
    };
    if (!o.metadata.deletionTimestamp) delete o.metadata.deletionTimestamp;
    if (o.metadata.deletionTimestamp && !(o.metadata.finalizers?.length)) return this.store.commit(type, 'DELETED', o);
    return this.store.commit(type, 'MODIFIED', o);
  }

  async replaceStatus(type: ResourceType, obj: KubeObject): Promise<KubeObject> {
    await this.enter('replaceStatus');
    const cur = this.current(type, obj);
    const o = clone(cur);
    o.status = clone(obj.status);
    return this.store.commit(type, 'MODIFIED', o);
  }

  async delete(type: ResourceType, name: string, namespace?: string): Promise<void> {
    await this.enter('delete');
    const cur = this.store.bucket(type).get(namespace ? `${namespace}/${name}` : name);
    if (!cur) throw notFound(type, name);
    const o = clone(cur);
    if (o.metadata.finalizers?.length) {
      if (!o.metadata.deletionTimestamp) {
        o.metadata.deletionTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
        this.store.commit(type, 'MODIFIED', o);
      }
      return;
    }
    this.store.commit(type, 'DELETED', o);
  }

  async recordEvent(ev: EventRecord): Promise<void> {
    await this.enter('recordEvent');
    this.store.events.push(clone(ev));
  }

  // ---- internals ----

  private current(type: ResourceType, obj: KubeObject): KubeObject {
    const cur = this.store.bucket(type).get(objectKey(obj));
    if (!cur) throw notFound(type, obj.metadata.name);
    const rv = obj.metadata.resourceVersion;
    if (rv && rv !== cur.metadata.resourceVersion) {
      throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${type.plural} "${obj.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    return cur;
  }

  private async enter(op: Op): Promise<void> {
    this.calls[op]++;
    if (this.faults.partition === 'hang') await new Promise<never>(() => {});
    if (this.faults.partition === 'fail') throw networkError();
    const d = this.faults.delayMs[op];
    if (d) await sleep(d);
    const f = this.faults.failures.get(op)?.shift();
    if (f) throw f();
  }
}

function notFound(type: ResourceType, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${type.plural} "${name}" not found`);
}

/** Poll `cond` until true; fails with `what` after `timeoutMs` (a deadline, not a timing assertion). */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000, everyMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(everyMs);
  }
}

export { sleep };
