/**
 * Standalone mode's API server: the ObjectApi (operator/runtime/object-api.ts) over one SQLite
 * file, so the reconcilers that run against a cluster run unchanged on one machine and
 * `spacectl apply` works without one.
 *
 * Storage (`<dir>/objects.db`, WAL):
 * - `objects`: the current state, one row per object (JSON body) keyed by type/namespace/name.
 * - `changes`: an append-only change log — every write appends (resourceVersion, type, event,
 *   body) in the same transaction as the object row, so the log and the state never disagree.
 *   Watches tail it; it is compacted to the newest `maxChanges` entries, and a watch from before
 *   the compaction point ends with 410 Gone, like the API server after an etcd compaction.
 * - `meta`: the global resourceVersion counter and the compaction point.
 * - `owners`: ownerReference uid -> dependent, for the garbage collection a cluster's
 *   kube-controller-manager would do (background cascading deletion).
 *
 * Several processes may open one store (the CLI applies objects while `spacectl serve` runs the
 * operator). Every write is a BEGIN IMMEDIATE transaction, so resourceVersions are allocated and
 * committed in order across processes: a watcher that has read everything up to N never sees a
 * change <= N appear later. Watchers of this process are woken right after each local commit;
 * commits by other processes are noticed by inotify on the WAL file plus `PRAGMA data_version` (cheap: it reads
 * shared memory) while at least one watch is open, on an unref'd timer.
 *
 * Watch from resourceVersion "" or "0" starts at the current head and sends no synthetic ADDED
 * events for existing objects (a real API server does; every caller here lists first and
 * watches from the list's resourceVersion, so replaying the state would only duplicate it).
 * A fresh store's head is "1", so a list's resourceVersion is never the ambiguous "0".
 *
 * API-server behaviour kept on purpose (code that passes here passes in a cluster):
 * - replace() of a custom resource (any non-k8s group) without metadata.resourceVersion is a 422
 *   "must be specified for an update"; built-in types (ConfigMap, Lease, ...) allow it.
 *   replaceStatus() checks the resourceVersion only when one is given.
 * - create() ignores .status; an update that changes nothing writes nothing (no new
 *   resourceVersion, no event), which keeps idle controllers idle.
 * - Secrets' stringData is folded into base64 data.
 * - Owner references cascade like the garbage collector's background deletion.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ApiError, apiVersionOf, EVENTS, SECRETS } from '../runtime/object-api.js';
import type {
  EventRecord,
  KubeObject,
  ListResult,
  ObjectApi,
  ObjectMeta,
  ResourceType,
  WatchEventType,
  WatchHandle,
  WatchOptions,
} from '../runtime/object-api.js';
import { type Issue, SUBDOMAIN_MAX, validateMetadata } from './validation.js';

export type { Issue } from './validation.js';

export interface AdmissionResult {
  /** The object to store (defaults applied, unknown fields pruned...). */
  object: KubeObject;
  /** Non-empty: the write fails with 422 Invalid listing them. */
  issues: Issue[];
}

/** Validating/mutating admission for one resource type; `old` is undefined on create. */
export type Admission = (obj: KubeObject, old: KubeObject | undefined) => AdmissionResult;

export interface ObjectStoreOptions {
  /**
   * Admission by `${group}/${plural}` (core types have group "", e.g. "/configmaps";
   * "space.io/capsules"). Runs on create, replace and replaceStatus.
   */
  admission?: Record<string, Admission> | Map<string, Admission>;
  /** Change-log entries kept for watches (default 10000); older watches get 410 Gone. */
  maxChanges?: number;
  /** Events kept (default 1000, oldest dropped first). */
  maxEvents?: number;
  /** Events not updated for this long are dropped (default 1 hour, the API server's TTL). */
  eventTtlMs?: number;
  /** How often watches look for commits of other processes (default 50 ms). */
  pollIntervalMs?: number;
  /** BOOKMARK period for watches that allow them (default 30 s). */
  bookmarkIntervalMs?: number;
  /** The clock for timestamps (tests age events with it). */
  now?: () => Date;
  /** fsync every commit (default true): a committed object survives power loss, not only a killed process. */
  fsync?: boolean;
}

/** A 422 whose issues a caller can inspect (the CLI prints them; tests match them). */
export class InvalidError extends ApiError {
  constructor(
    message: string,
    readonly issues: Issue[],
  ) {
    super(422, 'Invalid', message);
  }
}

const SCHEMA_VERSION = 1;
const DDL = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
  rtype TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  uid TEXT NOT NULL,
  rv INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (rtype, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_by_rv ON objects (rtype, rv);
CREATE INDEX IF NOT EXISTS objects_by_uid ON objects (uid);
CREATE TABLE IF NOT EXISTS owners (
  owner TEXT NOT NULL,
  rtype TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  PRIMARY KEY (owner, rtype, namespace, name)
);
CREATE INDEX IF NOT EXISTS owners_by_dependent ON owners (rtype, namespace, name);
CREATE TABLE IF NOT EXISTS changes (
  rv INTEGER PRIMARY KEY,
  rtype TEXT NOT NULL,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  event TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_type ON changes (rtype, rv);
`;

/** etcd's default request limit is 1.5 MiB; the API server refuses bodies over 3 MiB. */
const MAX_OBJECT_BYTES = 3 * 1024 * 1024;
const WATCH_BATCH = 500;
/** Compact after this many local writes (and on open): keeps the log near maxChanges cheaply. */
const COMPACT_EVERY = 64;
const GENERATE_NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

/** Storage key of a type: versions of one group/plural share storage, as in the API server. */
export const typeKey = (t: ResourceType): string => `${t.group}/${t.plural}`;
/** "capsules.space.io" / "configmaps": how the API server names a resource in messages. */
export const qualifiedResource = (t: ResourceType): string => (t.group ? `${t.plural}.${t.group}` : t.plural);
const qualifiedKind = (t: ResourceType): string => (t.group ? `${t.kind}.${t.group}` : t.kind);

/** metav1.Time: RFC 3339 with second precision. */
export const timestamp = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

const badRequest = (msg: string) => new ApiError(400, 'BadRequest', msg);
const notFound = (t: ResourceType, name: string) => new ApiError(404, 'NotFound', `${qualifiedResource(t)} "${name}" not found`);
const conflict = (t: ResourceType, name: string, why: string) => new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${qualifiedResource(t)} "${name}": ${why}`);
const STALE = 'the object has been modified; please apply your changes to the latest version and try again';

export function invalidError(t: ResourceType, name: string, issues: Issue[]): InvalidError {
  const parts = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
  const body = parts.length === 1 ? parts[0]! : `[${parts.join(', ')}]`;
  return new InvalidError(`${qualifiedKind(t)} "${name}" is invalid: ${body}`, issues);
}

/** Key-order-independent JSON: what "unchanged" means for objects (undefined fields vanish, as in JSON). */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => {
    if (x && typeof x === 'object' && !Array.isArray(x)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(x).sort()) sorted[k] = (x as Record<string, unknown>)[k];
      return sorted;
    }
    return x;
  });
}
const same = (a: unknown, b: unknown): boolean => canonical(a) === canonical(b);

/** Everything generation tracks: the object without metadata and status. */
function specOf(o: KubeObject): Record<string, unknown> {
  const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = o;
  return rest;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringMap(v: unknown, field: string): void {
  if (v === undefined || v === null) return;
  if (!isPlainObject(v)) throw badRequest(`${field} must be a map of strings`);
  for (const [k, x] of Object.entries(v)) if (typeof x !== 'string') throw badRequest(`${field}[${JSON.stringify(k)}] must be a string, not ${typeof x}`);
}

/**
 * A detached, JSON-clean copy of a caller's object with a sane shape — or a 400, as the API
 * server answers a body it cannot decode. Nothing the caller holds is ever stored or mutated.
 */
function decode(type: ResourceType, input: unknown): KubeObject {
  if (!isPlainObject(input)) throw badRequest(`the request body must be a JSON object, not ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}`);
  let obj: KubeObject;
  try {
    obj = JSON.parse(JSON.stringify(input)) as KubeObject;
  } catch (e) {
    throw badRequest(`the object cannot be encoded as JSON: ${(e as Error).message}`);
  }
  const want = apiVersionOf(type);
  if (obj.apiVersion === undefined) obj.apiVersion = want;
  else if (obj.apiVersion !== want) throw badRequest(`the API version in the data (${String(obj.apiVersion)}) does not match the expected API version (${want})`);
  if (obj.kind === undefined) obj.kind = type.kind;
  else if (obj.kind !== type.kind) throw badRequest(`the kind in the data (${String(obj.kind)}) does not match the expected kind (${type.kind})`);
  if (obj.metadata === undefined) obj.metadata = {} as ObjectMeta;
  if (!isPlainObject(obj.metadata)) throw badRequest('metadata must be an object');
  const m = obj.metadata as ObjectMeta & Record<string, unknown>;
  for (const f of ['name', 'namespace', 'generateName', 'uid', 'resourceVersion', 'creationTimestamp', 'deletionTimestamp'] as const) {
    if (m[f] !== undefined && m[f] !== null && typeof m[f] !== 'string') throw badRequest(`metadata.${f} must be a string`);
    if (m[f] === null) delete m[f];
  }
  if (m.generation !== undefined && typeof m.generation !== 'number') throw badRequest('metadata.generation must be an integer');
  stringMap(m.labels, 'metadata.labels');
  stringMap(m.annotations, 'metadata.annotations');
  if (m.finalizers !== undefined && m.finalizers !== null && (!Array.isArray(m.finalizers) || m.finalizers.some((f) => typeof f !== 'string'))) {
    throw badRequest('metadata.finalizers must be a list of strings');
  }
  if (m.ownerReferences !== undefined && m.ownerReferences !== null && (!Array.isArray(m.ownerReferences) || m.ownerReferences.some((r) => !isPlainObject(r)))) {
    throw badRequest('metadata.ownerReferences must be a list of objects');
  }
  tidyMeta(m);
  return obj;
}

/** Empty lists and maps are omitted, as the API server's JSON does (so `[]` vs absent is no change). */
function tidyMeta(m: ObjectMeta): void {
  for (const f of ['labels', 'annotations', 'finalizers', 'ownerReferences'] as const) {
    const v = m[f] as unknown;
    if (v === null || (Array.isArray(v) && v.length === 0) || (isPlainObject(v) && Object.keys(v).length === 0)) delete m[f];
  }
  if (m.finalizers) m.finalizers = [...new Set(m.finalizers)];
}

/** Built-in per-type behaviour of the API server that reconcilers can observe. */
function applyStrategy(type: ResourceType, obj: KubeObject): void {
  if (typeKey(type) === typeKey(SECRETS) && isPlainObject(obj.stringData)) {
    // Secrets: stringData is write-only sugar merged into base64 data.
    const data: Record<string, string> = isPlainObject(obj.data) ? (obj.data as Record<string, string>) : {};
    for (const [k, v] of Object.entries(obj.stringData)) data[k] = Buffer.from(String(v)).toString('base64');
    obj.data = data;
    delete obj.stringData;
  }
}

/**
 * Custom resources refuse updates without a resourceVersion (the API server's CRD strategy);
 * built-in types allow "unconditional" updates.
 */
const BUILTIN_GROUPS = new Set(['', 'apps', 'batch', 'policy', 'autoscaling']);
const allowsUnconditionalUpdate = (t: ResourceType): boolean => BUILTIN_GROUPS.has(t.group) || t.group.endsWith('.k8s.io');

interface ObjectRow {
  rtype: string;
  namespace: string;
  name: string;
  uid: string;
  rv: number;
  updated: number;
  body: string;
}

interface ChangeRow {
  rv: number;
  event: WatchEventType;
  body: string;
}

type Handler = (type: WatchEventType, obj: KubeObject) => void;

class Watcher {
  cursor: number;
  lastBookmark: number;
  ended = false;
  resolve!: () => void;
  reject!: (e: unknown) => void;
  readonly done: Promise<void>;

  constructor(
    readonly type: ResourceType,
    readonly namespace: string | undefined,
    start: number,
    readonly bookmarks: boolean,
    readonly handler: Handler,
    now: number,
  ) {
    this.cursor = start;
    this.lastBookmark = now;
    this.done = new Promise<void>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    // A caller that never awaits `done` must not crash the process with an unhandled
    // rejection; callers that do await it still see the error.
    this.done.catch(() => undefined);
  }
}

export class ObjectStore implements ObjectApi {
  private readonly db: Database.Database;
  private readonly admission: Map<string, Admission>;
  private readonly maxChanges: number;
  private readonly maxEvents: number;
  private readonly eventTtlMs: number;
  private readonly pollIntervalMs: number;
  private readonly bookmarkIntervalMs: number;
  private readonly now: () => Date;
  private readonly statements = new Map<string, Database.Statement>();
  private readonly watchers = new Set<Watcher>();
  private readonly inTx: <T>(fn: () => T) => T;
  private readonly inRead: <T>(fn: () => T) => T;
  private timer: NodeJS.Timeout | undefined;
  private fileWatcher: fs.FSWatcher | undefined;
  private tickScheduled = false;
  private followUp: NodeJS.Timeout | undefined;
  private dataVersion = -1;
  private pumpScheduled = false;
  private pumping = false;
  private pumpAgain = false;
  private writesSinceCompact = 0;
  private closed = false;

  /** Open (creating if needed) the store in `dir` (file `dir/objects.db`). */
  static open(dir: string, opts: ObjectStoreOptions = {}): ObjectStore {
    fs.mkdirSync(dir, { recursive: true });
    return new ObjectStore(path.join(dir, 'objects.db'), opts);
  }

  private constructor(
    readonly file: string,
    opts: ObjectStoreOptions,
  ) {
    this.admission = opts.admission instanceof Map ? new Map(opts.admission) : new Map(Object.entries(opts.admission ?? {}));
    this.maxChanges = Math.max(1, opts.maxChanges ?? 10_000);
    this.maxEvents = Math.max(1, opts.maxEvents ?? 1000);
    this.eventTtlMs = opts.eventTtlMs ?? 60 * 60 * 1000;
    this.pollIntervalMs = Math.max(5, opts.pollIntervalMs ?? 50);
    this.bookmarkIntervalMs = Math.max(10, opts.bookmarkIntervalMs ?? 30_000);
    this.now = opts.now ?? (() => new Date());
    try {
      this.db = new Database(file, { timeout: 10_000 });
    } catch (e) {
      throw new ApiError(500, 'InternalError', `cannot open object store ${file}: ${(e as Error).message}`);
    }
    try {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${opts.fsync === false ? 'NORMAL' : 'FULL'}`);
      const tx = this.db.transaction((fn: () => unknown) => fn());
      this.inTx = <T>(fn: () => T): T => tx.immediate(fn) as T;
      this.inRead = <T>(fn: () => T): T => tx.deferred(fn) as T;
      this.inTx(() => {
        this.db.exec(DDL);
        const schema = this.meta('schema');
        if (schema === undefined) this.setMeta('schema', SCHEMA_VERSION);
        else if (schema > SCHEMA_VERSION) throw new Error(`its schema (${schema}) is newer than this build understands (${SCHEMA_VERSION})`);
        // Start at 1, not 0: "0" in a watch means "from now", so a fresh store's list
        // resourceVersion must be a real version a watch can resume from.
        if (this.meta('rv') === undefined) this.setMeta('rv', 1);
        if (this.meta('compacted') === undefined) this.setMeta('compacted', 0);
      });
      this.compact();
    } catch (e) {
      this.db.close();
      throw new ApiError(500, 'InternalError', `cannot open object store ${file}: ${(e as Error).message}`);
    }
  }

  // ------------------------------------------------------------------ plumbing

  private stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  private meta(key: string): number | undefined {
    const r = this.stmt('SELECT value FROM meta WHERE key = ?').get(key) as { value: number } | undefined;
    return r?.value;
  }

  private setMeta(key: string, value: number): void {
    this.stmt('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  private live(): void {
    if (this.closed) throw new ApiError(503, 'ServiceUnavailable', 'the object store is closed');
  }

  /** Run a write transaction; SQLite trouble becomes an ApiError (503 when another process holds the lock too long). */
  private write<T>(fn: () => T): T {
    this.live();
    let result: T;
    try {
      result = this.inTx(fn);
    } catch (e) {
      throw this.storageError(e);
    }
    this.afterWrite();
    return result;
  }

  /** A consistent snapshot for reads that touch several rows. */
  private read<T>(fn: () => T): T {
    this.live();
    try {
      return this.inRead(fn);
    } catch (e) {
      throw this.storageError(e);
    }
  }

  private storageError(e: unknown): unknown {
    if (e instanceof ApiError) return e;
    const code = (e as { code?: unknown })?.code;
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return new ApiError(503, 'ServiceUnavailable', `the object store is busy (another process holds it): ${(e as Error).message}`);
    if (code === 'SQLITE_FULL') return new ApiError(507, 'InsufficientStorage', `the object store is full: ${(e as Error).message}`);
    return new ApiError(500, 'InternalError', `object store: ${(e as Error)?.message ?? String(e)}`);
  }

  private afterWrite(): void {
    if (++this.writesSinceCompact >= COMPACT_EVERY) {
      try {
        this.compact();
      } catch {
        // Compaction is housekeeping: a busy store compacts on a later write.
      }
    }
    this.schedulePump();
  }

  private namespaceOf(type: ResourceType, ns: string | undefined): string {
    return type.namespaced ? ns || 'default' : '';
  }

  private loadRow(type: ResourceType, ns: string, name: string): ObjectRow | undefined {
    return this.stmt('SELECT * FROM objects WHERE rtype = ? AND namespace = ? AND name = ?').get(typeKey(type), ns, name) as ObjectRow | undefined;
  }

  private parseRow(row: ObjectRow, type: ResourceType): KubeObject {
    try {
      const o = JSON.parse(row.body) as KubeObject;
      if (!isPlainObject(o) || !isPlainObject(o.metadata)) throw new Error('not an object');
      return o;
    } catch (e) {
      throw new ApiError(500, 'InternalError', `${qualifiedResource(type)} "${row.name}" in namespace "${row.namespace}" is corrupt in the object store: ${(e as Error).message}`);
    }
  }

  private load(type: ResourceType, ns: string, name: string): KubeObject {
    const row = this.loadRow(type, ns, name);
    if (!row) throw notFound(type, name);
    return this.parseRow(row, type);
  }

  private nextRv(): number {
    const rv = (this.meta('rv') ?? 0) + 1;
    this.setMeta('rv', rv);
    return rv;
  }

  private encode(type: ResourceType, obj: KubeObject): string {
    const body = JSON.stringify(obj);
    if (body.length > MAX_OBJECT_BYTES) {
      throw new ApiError(413, 'RequestEntityTooLarge', `${qualifiedResource(type)} "${obj.metadata.name}": request entity too large: limit is ${MAX_OBJECT_BYTES}`);
    }
    return body;
  }

  /** Store `obj` as the new state (assigning the next resourceVersion) and log the change. */
  private put(type: ResourceType, key: string, obj: KubeObject, event: 'ADDED' | 'MODIFIED'): KubeObject {
    const m = obj.metadata;
    const ns = m.namespace ?? '';
    const rv = this.nextRv();
    m.resourceVersion = String(rv);
    const body = this.encode(type, obj);
    this.stmt(
      `INSERT INTO objects (rtype, namespace, name, uid, rv, updated, body) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (rtype, namespace, name) DO UPDATE SET uid = excluded.uid, rv = excluded.rv, updated = excluded.updated, body = excluded.body`,
    ).run(key, ns, m.name, m.uid ?? '', rv, this.now().getTime(), body);
    this.stmt('DELETE FROM owners WHERE rtype = ? AND namespace = ? AND name = ?').run(key, ns, m.name);
    for (const r of m.ownerReferences ?? []) this.stmt('INSERT OR IGNORE INTO owners (owner, rtype, namespace, name) VALUES (?, ?, ?, ?)').run(r.uid, key, ns, m.name);
    this.stmt('INSERT INTO changes (rv, rtype, namespace, name, event, body) VALUES (?, ?, ?, ?, ?, ?)').run(rv, key, ns, m.name, event, body);
    return JSON.parse(body) as KubeObject;
  }

  /** Remove an object for good (DELETED carries its last state at a new resourceVersion), then collect its dependents. */
  private remove(key: string, ns: string, name: string, last: KubeObject): KubeObject {
    const rv = this.nextRv();
    last.metadata.resourceVersion = String(rv);
    const body = JSON.stringify(last);
    this.stmt('DELETE FROM objects WHERE rtype = ? AND namespace = ? AND name = ?').run(key, ns, name);
    this.stmt('DELETE FROM owners WHERE rtype = ? AND namespace = ? AND name = ?').run(key, ns, name);
    this.stmt('INSERT INTO changes (rv, rtype, namespace, name, event, body) VALUES (?, ?, ?, ?, ?, ?)').run(rv, key, ns, name, 'DELETED', body);
    const uid = last.metadata.uid;
    if (uid) this.collectDependents(uid);
    return last;
  }

  /**
   * Background cascading deletion, as the garbage collector does in a cluster: a dependent
   * whose owners are all gone is deleted (respecting its finalizers); one that still has a
   * live owner only loses the reference to the deleted one.
   */
  private collectDependents(ownerUid: string): void {
    const deps = this.stmt('SELECT rtype, namespace, name FROM owners WHERE owner = ?').all(ownerUid) as { rtype: string; namespace: string; name: string }[];
    this.stmt('DELETE FROM owners WHERE owner = ?').run(ownerUid);
    for (const d of deps) {
      const row = this.stmt('SELECT * FROM objects WHERE rtype = ? AND namespace = ? AND name = ?').get(d.rtype, d.namespace, d.name) as ObjectRow | undefined;
      if (!row) continue;
      let obj: KubeObject;
      try {
        obj = JSON.parse(row.body) as KubeObject;
      } catch {
        continue; // a corrupt dependent is left for an explicit delete
      }
      const type = this.typeOfRow(row.rtype, obj);
      const refs = obj.metadata.ownerReferences ?? [];
      const remaining = refs.filter((r) => r.uid !== ownerUid);
      const alive = remaining.some((r) => this.stmt('SELECT 1 FROM objects WHERE uid = ?').get(r.uid) !== undefined);
      if (alive) {
        obj.metadata.ownerReferences = remaining;
        tidyMeta(obj.metadata);
        this.put(type, row.rtype, obj, 'MODIFIED');
      } else if (obj.metadata.finalizers?.length) {
        if (!obj.metadata.deletionTimestamp) {
          obj.metadata.deletionTimestamp = timestamp(this.now());
          obj.metadata.generation = (obj.metadata.generation ?? 1) + 1;
          this.put(type, row.rtype, obj, 'MODIFIED');
        }
      } else {
        this.remove(row.rtype, row.namespace, row.name, obj);
      }
    }
  }

  /** A ResourceType for a stored row of a type this call was not given (garbage collection). */
  private typeOfRow(rtype: string, obj: KubeObject): ResourceType {
    const slash = rtype.indexOf('/');
    const group = rtype.slice(0, slash);
    const plural = rtype.slice(slash + 1);
    const version = String(obj.apiVersion ?? '').split('/').pop() || 'v1';
    return { group, version, plural, kind: String(obj.kind ?? ''), namespaced: (obj.metadata.namespace ?? '') !== '' };
  }

  private admit(type: ResourceType, obj: KubeObject, old: KubeObject | undefined): { object: KubeObject; issues: Issue[] } {
    const fn = this.admission.get(typeKey(type));
    if (!fn) return { object: obj, issues: [] };
    let r: AdmissionResult;
    try {
      r = fn(JSON.parse(JSON.stringify(obj)) as KubeObject, old && (JSON.parse(JSON.stringify(old)) as KubeObject));
    } catch (e) {
      throw new ApiError(500, 'InternalError', `admission for ${qualifiedResource(type)} "${obj.metadata.name}" failed: ${(e as Error)?.message ?? String(e)}`);
    }
    if (!r || !isPlainObject(r.object)) throw new ApiError(500, 'InternalError', `admission for ${qualifiedResource(type)} returned no object`);
    const object = JSON.parse(JSON.stringify(r.object)) as KubeObject;
    if (!isPlainObject(object.metadata)) object.metadata = obj.metadata;
    return { object, issues: Array.isArray(r.issues) ? r.issues : [] };
  }

  private checkPreconditions(type: ResourceType, cur: KubeObject, m: ObjectMeta, requireRv: boolean): void {
    if (m.uid && cur.metadata.uid && m.uid !== cur.metadata.uid) {
      throw conflict(type, cur.metadata.name, `Precondition failed: UID in precondition: ${m.uid}, UID in object meta: ${cur.metadata.uid}`);
    }
    if (m.resourceVersion) {
      if (m.resourceVersion !== cur.metadata.resourceVersion) throw conflict(type, cur.metadata.name, STALE);
    } else if (requireRv) {
      throw invalidError(type, cur.metadata.name, [{ path: 'metadata.resourceVersion', message: 'Invalid value: 0x0: must be specified for an update' }]);
    }
  }

  // ------------------------------------------------------------------ reads

  async get(type: ResourceType, name: string, namespace?: string): Promise<KubeObject> {
    const ns = this.namespaceOf(type, namespace);
    return this.read(() => this.load(type, ns, name));
  }

  /**
   * All objects of a type (in one namespace, or all), sorted by namespace and name. A row that
   * no longer decodes is left out rather than failing the list: one damaged object must not
   * blind every informer; get() of it reports the damage and delete() removes it.
   */
  async list(type: ResourceType, namespace?: string): Promise<ListResult> {
    const key = typeKey(type);
    const ns = type.namespaced && namespace ? namespace : undefined;
    return this.read(() => {
      const rows = (
        ns === undefined
          ? this.stmt('SELECT * FROM objects WHERE rtype = ? ORDER BY namespace, name').all(key)
          : this.stmt('SELECT * FROM objects WHERE rtype = ? AND namespace = ? ORDER BY name').all(key, ns)
      ) as ObjectRow[];
      const items: KubeObject[] = [];
      for (const row of rows) {
        try {
          items.push(this.parseRow(row, type));
        } catch {
          // see above
        }
      }
      return { items, resourceVersion: String(this.meta('rv') ?? 0) };
    });
  }

  /** The newest resourceVersion of the whole store. */
  resourceVersion(): string {
    return this.read(() => String(this.meta('rv') ?? 0));
  }

  // ------------------------------------------------------------------ writes

  async create(type: ResourceType, input: KubeObject): Promise<KubeObject> {
    const obj = decode(type, input);
    const m = obj.metadata as ObjectMeta & { generateName?: string };
    if (m.resourceVersion) throw badRequest('resourceVersion should not be set on objects to be created');
    if (!type.namespaced && m.namespace) throw badRequest(`${type.kind} is cluster-scoped: metadata.namespace must be empty (got ${JSON.stringify(m.namespace)})`);
    if (!m.name && !m.generateName) {
      throw invalidError(type, '', [{ path: 'metadata.name', message: 'Required value: name or generateName is required' }]);
    }
    const ns = this.namespaceOf(type, m.namespace);
    const key = typeKey(type);
    return this.write(() => {
      if (!m.name) m.name = this.generateName(type, ns, m.generateName!);
      else if (this.loadRow(type, ns, m.name)) throw new ApiError(409, 'AlreadyExists', `${qualifiedResource(type)} "${m.name}" already exists`);
      const pin = (o: KubeObject): KubeObject => {
        const om = o.metadata as ObjectMeta & { generateName?: string };
        om.name = m.name;
        if (type.namespaced) om.namespace = ns;
        else delete om.namespace;
        om.uid = uid;
        om.creationTimestamp = created;
        om.generation = 1;
        delete om.resourceVersion;
        delete om.deletionTimestamp;
        // Status comes from the status subresource only: a create starts without it.
        delete o.status;
        tidyMeta(om);
        return o;
      };
      const uid = crypto.randomUUID();
      const created = timestamp(this.now());
      applyStrategy(type, pin(obj));
      const issues = validateMetadata(type, obj);
      const admitted = this.admit(type, obj, undefined);
      issues.push(...admitted.issues);
      if (issues.length) throw invalidError(type, m.name, issues);
      const final = pin(admitted.object);
      final.apiVersion = obj.apiVersion;
      final.kind = obj.kind;
      return this.put(type, key, final, 'ADDED');
    });
  }

  private generateName(type: ResourceType, ns: string, prefix: string): string {
    const base = prefix.slice(0, SUBDOMAIN_MAX - 5);
    for (let i = 0; i < 100; i++) {
      let name = base;
      for (const b of crypto.randomBytes(5)) name += GENERATE_NAME_ALPHABET[b % GENERATE_NAME_ALPHABET.length];
      if (!this.loadRow(type, ns, name)) return name;
    }
    throw new ApiError(409, 'AlreadyExists', `${qualifiedResource(type)}: no free name for generateName ${JSON.stringify(prefix)}`);
  }

  async replace(type: ResourceType, input: KubeObject): Promise<KubeObject> {
    const obj = decode(type, input);
    const m = obj.metadata;
    if (!m.name) throw invalidError(type, '', [{ path: 'metadata.name', message: 'Required value: name is required' }]);
    if (!type.namespaced && m.namespace) throw badRequest(`${type.kind} is cluster-scoped: metadata.namespace must be empty (got ${JSON.stringify(m.namespace)})`);
    const ns = this.namespaceOf(type, m.namespace);
    const key = typeKey(type);
    return this.write(() => {
      const cur = this.load(type, ns, m.name);
      const cm = cur.metadata;
      this.checkPreconditions(type, cur, m, !allowsUnconditionalUpdate(type));
      // Fields only the server sets; status belongs to the status subresource.
      const pin = (o: KubeObject): KubeObject => {
        const om = o.metadata;
        om.name = cm.name;
        if (type.namespaced) om.namespace = ns;
        else delete om.namespace;
        om.uid = cm.uid;
        om.creationTimestamp = cm.creationTimestamp;
        om.generation = cm.generation ?? 1;
        om.resourceVersion = cm.resourceVersion;
        if (cm.deletionTimestamp) om.deletionTimestamp = cm.deletionTimestamp;
        else delete om.deletionTimestamp;
        delete (om as { generateName?: string }).generateName;
        if (cur.status === undefined) delete o.status;
        else o.status = cur.status;
        tidyMeta(om);
        return o;
      };
      applyStrategy(type, pin(obj));
      const issues = validateMetadata(type, obj);
      if (cm.deletionTimestamp) {
        const had = new Set(cm.finalizers ?? []);
        const added = (obj.metadata.finalizers ?? []).filter((f) => !had.has(f));
        if (added.length) {
          issues.push({
            path: 'metadata.finalizers',
            message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{${added.map((f) => JSON.stringify(f)).join(', ')}}`,
          });
        }
      }
      const admitted = this.admit(type, obj, cur);
      issues.push(...admitted.issues);
      if (issues.length) throw invalidError(type, cm.name, issues);
      const next = pin(admitted.object);
      next.apiVersion = cur.apiVersion;
      next.kind = cur.kind;
      if (!same(specOf(next), specOf(cur))) next.metadata.generation = (cm.generation ?? 1) + 1;
      // An update that changes nothing writes nothing: no new resourceVersion, no watch event.
      if (same(next, cur)) return cur;
      if (next.metadata.deletionTimestamp && !next.metadata.finalizers?.length) return this.remove(key, ns, cm.name, next);
      return this.put(type, key, next, 'MODIFIED');
    });
  }

  async replaceStatus(type: ResourceType, input: KubeObject): Promise<KubeObject> {
    const obj = decode(type, input);
    const m = obj.metadata;
    if (!m.name) throw invalidError(type, '', [{ path: 'metadata.name', message: 'Required value: name is required' }]);
    const ns = this.namespaceOf(type, m.namespace);
    const key = typeKey(type);
    return this.write(() => {
      const cur = this.load(type, ns, m.name);
      this.checkPreconditions(type, cur, m, false);
      const candidate = JSON.parse(JSON.stringify(cur)) as KubeObject;
      if (obj.status === undefined) delete candidate.status;
      else candidate.status = obj.status;
      const admitted = this.admit(type, candidate, cur);
      if (admitted.issues.length) throw invalidError(type, cur.metadata.name, admitted.issues);
      // Only .status is taken, from the caller and from admission alike.
      const next = JSON.parse(JSON.stringify(cur)) as KubeObject;
      if (admitted.object.status === undefined) delete next.status;
      else next.status = admitted.object.status;
      if (same(next, cur)) return cur;
      return this.put(type, key, next, 'MODIFIED');
    });
  }

  async delete(type: ResourceType, name: string, namespace?: string): Promise<void> {
    const ns = this.namespaceOf(type, namespace);
    const key = typeKey(type);
    this.write(() => {
      const row = this.loadRow(type, ns, name);
      if (!row) throw notFound(type, name);
      let cur: KubeObject;
      try {
        cur = this.parseRow(row, type);
      } catch {
        // A damaged row can still be deleted: the DELETED event carries what is known.
        const stub: KubeObject = { apiVersion: apiVersionOf(type), kind: type.kind, metadata: { name, ...(type.namespaced ? { namespace: ns } : {}), uid: row.uid } };
        this.remove(key, ns, name, stub);
        return;
      }
      const cm = cur.metadata;
      if (cm.finalizers?.length) {
        // Deleting again while finalizers run changes nothing (the API server answers 200 too).
        if (cm.deletionTimestamp) return;
        cm.deletionTimestamp = timestamp(this.now());
        cm.generation = (cm.generation ?? 1) + 1;
        this.put(type, key, cur, 'MODIFIED');
        return;
      }
      this.remove(key, ns, name, cur);
    });
  }

  // ------------------------------------------------------------------ events

  /**
   * Record a core/v1 Event about `ev.involved`, aggregated like client-go's recorder: the same
   * type/reason/message/source on the same object bumps count and lastTimestamp of one Event
   * (its name is derived from those fields, so aggregation is one keyed lookup even across
   * processes). Events are bounded by maxEvents and eventTtlMs.
   */
  async recordEvent(ev: EventRecord): Promise<void> {
    const inv = ev.involved;
    if (!inv || !isPlainObject(inv.metadata) || typeof inv.metadata.name !== 'string' || !inv.metadata.name) {
      throw badRequest('an event needs an involved object with metadata.name');
    }
    if (ev.type !== 'Normal' && ev.type !== 'Warning') {
      throw invalidError(EVENTS, inv.metadata.name, [{ path: 'type', message: `Unsupported value: ${JSON.stringify(ev.type)}: supported values: "Normal", "Warning"` }]);
    }
    const ns = inv.metadata.namespace || 'default';
    const digest = crypto
      .createHash('sha256')
      .update(JSON.stringify([inv.apiVersion, inv.kind, ns, inv.metadata.name, inv.metadata.uid ?? '', ev.type, ev.reason, ev.message, ev.source]))
      .digest('hex')
      .slice(0, 16);
    // The involved object's name is a DNS subdomain already; keep the total within 253.
    const name = `${inv.metadata.name.slice(0, SUBDOMAIN_MAX - 17).replace(/[.-]+$/, '')}.${digest}`;
    const key = typeKey(EVENTS);
    this.write(() => {
      const now = this.now();
      const ts = timestamp(now);
      const row = this.loadRow(EVENTS, ns, name);
      let existing: KubeObject | undefined;
      if (row) {
        try {
          existing = this.parseRow(row, EVENTS);
        } catch {
          existing = undefined; // a damaged event is simply replaced
        }
      }
      if (existing) {
        existing.count = (typeof existing.count === 'number' ? existing.count : 1) + 1;
        existing.lastTimestamp = ts;
        const involved = existing.involvedObject as Record<string, unknown> | undefined;
        if (involved && inv.metadata.resourceVersion) involved.resourceVersion = inv.metadata.resourceVersion;
        this.put(EVENTS, key, existing, 'MODIFIED');
      } else {
        const involvedObject: Record<string, unknown> = { apiVersion: inv.apiVersion, kind: inv.kind, name: inv.metadata.name };
        if (inv.metadata.namespace) involvedObject.namespace = inv.metadata.namespace;
        if (inv.metadata.uid) involvedObject.uid = inv.metadata.uid;
        if (inv.metadata.resourceVersion) involvedObject.resourceVersion = inv.metadata.resourceVersion;
        const event: KubeObject = {
          apiVersion: 'v1',
          kind: 'Event',
          metadata: { name, namespace: ns, uid: crypto.randomUUID(), creationTimestamp: ts, generation: 1 },
          involvedObject,
          reason: ev.reason,
          message: ev.message,
          type: ev.type,
          source: { component: ev.source },
          reportingComponent: ev.source,
          reportingInstance: '',
          count: 1,
          firstTimestamp: ts,
          lastTimestamp: ts,
        };
        this.put(EVENTS, key, event, row ? 'MODIFIED' : 'ADDED');
      }
      this.pruneEvents(now.getTime());
    });
  }

  /** Drop events past their TTL, then the least recently updated beyond maxEvents. */
  private pruneEvents(nowMs: number): void {
    const key = typeKey(EVENTS);
    const oldest = this.stmt('SELECT * FROM objects WHERE rtype = ? ORDER BY rv LIMIT 256');
    const drop = (row: ObjectRow) => {
      let last: KubeObject;
      try {
        last = JSON.parse(row.body) as KubeObject;
      } catch {
        last = { apiVersion: 'v1', kind: 'Event', metadata: { name: row.name, namespace: row.namespace, uid: row.uid } };
      }
      this.remove(key, row.namespace, row.name, last);
    };
    for (const row of oldest.all(key) as ObjectRow[]) {
      if (row.updated >= nowMs - this.eventTtlMs) break;
      drop(row);
    }
    const count = (this.stmt('SELECT COUNT(*) AS n FROM objects WHERE rtype = ?').get(key) as { n: number }).n;
    if (count > this.maxEvents) {
      for (const row of this.stmt('SELECT * FROM objects WHERE rtype = ? ORDER BY rv LIMIT ?').all(key, count - this.maxEvents) as ObjectRow[]) drop(row);
    }
  }

  // ------------------------------------------------------------------ change log

  /**
   * Drop change-log entries beyond the newest maxChanges. Runs on open and every few writes;
   * callable directly (tests, or after a burst). Returns the compaction point: watches from a
   * resourceVersion below it get 410 Gone.
   */
  compact(): number {
    this.live();
    try {
      return this.inTx(() => {
        const head = this.meta('rv') ?? 0;
        const compacted = this.meta('compacted') ?? 0;
        const cut = head - this.maxChanges;
        this.writesSinceCompact = 0;
        if (cut <= compacted) return compacted;
        this.stmt('DELETE FROM changes WHERE rv <= ?').run(cut);
        this.setMeta('compacted', cut);
        return cut;
      });
    } catch (e) {
      throw this.storageError(e);
    }
  }

  // ------------------------------------------------------------------ watches

  async watch(type: ResourceType, opts: WatchOptions, onEvent: (type: WatchEventType, obj: KubeObject) => void): Promise<WatchHandle> {
    this.live();
    const from = opts.resourceVersion ?? '';
    if (from !== '' && !/^\d+$/.test(from)) throw badRequest(`invalid resourceVersion ${JSON.stringify(from)}: must be an integer`);
    const state = this.read(() => ({ head: this.meta('rv') ?? 0, compacted: this.meta('compacted') ?? 0 }));
    const start = from === '' || from === '0' ? state.head : Number(from);
    const w = new Watcher(type, type.namespaced && opts.namespace ? opts.namespace : undefined, start, !!opts.allowBookmarks, onEvent, Date.now());
    const handle: WatchHandle = { stop: () => this.endWatch(w), done: w.done };
    if (start < state.compacted) {
      this.endWatch(w, new ApiError(410, 'Expired', `too old resource version: ${start} (${state.compacted})`));
    } else if (start > state.head) {
      // Not a version of this store (it was recreated?): the caller must relist, as after 410.
      this.endWatch(w, new ApiError(410, 'Expired', `too large resource version: ${start} (current ${state.head})`));
    } else {
      this.watchers.add(w);
      this.startTimer();
      this.schedulePump();
    }
    return handle;
  }

  private endWatch(w: Watcher, err?: unknown): void {
    if (w.ended) return;
    w.ended = true;
    this.watchers.delete(w);
    if (err === undefined) w.resolve();
    else w.reject(err);
    if (this.watchers.size === 0) this.stopTimer();
  }

  private startTimer(): void {
    if (this.timer) return;
    this.dataVersion = this.db.pragma('data_version', { simple: true }) as number;
    // Another process's commit appends to the WAL file: inotify tells at once, so a watch sees
    // it within a millisecond instead of up to one poll interval later. The poll stays as the
    // fallback (a filesystem without inotify, a missed event), then at a relaxed pace.
    let fast = true;
    try {
      const wal = path.basename(this.file) + '-wal';
      this.fileWatcher = fs.watch(path.dirname(this.file), { persistent: false }, (_event, name) => {
        if (name === wal || name === path.basename(this.file)) this.scheduleTick();
      });
      this.fileWatcher.on('error', () => {
        // e.g. the inotify queue overflowed under a burst of writes: start over (and catch up).
        this.stopTimer();
        if (this.watchers.size > 0 && !this.closed) this.startTimer();
        this.scheduleTick();
      });
      fast = false;
    } catch {
      this.fileWatcher = undefined;
    }
    this.timer = setInterval(() => this.tick(), fast ? this.pollIntervalMs : Math.max(this.pollIntervalMs, 1000));
    this.timer.unref();
  }

  /**
   * Look now, and look again shortly: the WAL write that raised the event can precede the
   * commit becoming visible (the wal-index in -shm is updated by mmap, which raises no event),
   * so a single look may come too early.
   */
  private scheduleTick(): void {
    if (!this.tickScheduled) {
      this.tickScheduled = true;
      setImmediate(() => {
        this.tickScheduled = false;
        this.tick();
      });
    }
    // A commit's fsync of the WAL comes between the write and the visibility: follow up at
    // growing delays (2, 10, 50 ms) until one of them sees it.
    if (this.followUp) clearTimeout(this.followUp);
    const before = this.dataVersion;
    const follow = (delays: number[]) => {
      const [d, ...rest] = delays;
      if (d === undefined) return;
      this.followUp = setTimeout(() => {
        this.followUp = undefined;
        this.tick();
        if (this.dataVersion === before) follow(rest);
      }, d);
      this.followUp.unref();
    };
    follow([2, 10, 50]);
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.fileWatcher?.close();
    this.fileWatcher = undefined;
    if (this.followUp) clearTimeout(this.followUp);
    this.followUp = undefined;
  }

  private tick(): void {
    if (this.closed) return;
    try {
      // data_version changes when another connection commits; our own commits pump directly.
      const dv = this.db.pragma('data_version', { simple: true }) as number;
      if (dv !== this.dataVersion) {
        this.dataVersion = dv;
        this.pump();
      }
    } catch {
      // a busy or closing database: try again on the next tick
    }
    const now = Date.now();
    for (const w of [...this.watchers]) {
      if (!w.bookmarks || now - w.lastBookmark < this.bookmarkIntervalMs) continue;
      w.lastBookmark = now;
      this.pump(); // the bookmark must not run ahead of undelivered events
      if (w.ended) continue;
      const bookmark: KubeObject = { apiVersion: apiVersionOf(w.type), kind: w.type.kind, metadata: { name: '', resourceVersion: String(w.cursor) } };
      this.deliver(w, 'BOOKMARK', bookmark);
    }
  }

  /** Deliver after the current call stack: writers never run watch handlers re-entrantly. */
  private schedulePump(): void {
    if (this.pumpScheduled || this.watchers.size === 0) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    if (this.closed) return;
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pumpAgain = false;
        for (const w of [...this.watchers]) this.drain(w);
      } while (this.pumpAgain && !this.closed);
    } finally {
      this.pumping = false;
    }
  }

  private drain(w: Watcher): void {
    const key = typeKey(w.type);
    while (!w.ended && !this.closed) {
      let batch: { head: number; compacted: number; rows: ChangeRow[] };
      try {
        batch = this.read(() => ({
          head: this.meta('rv') ?? 0,
          compacted: this.meta('compacted') ?? 0,
          rows: (w.namespace === undefined
            ? this.stmt('SELECT rv, event, body FROM changes WHERE rtype = ? AND rv > ? ORDER BY rv LIMIT ?').all(key, w.cursor, WATCH_BATCH)
            : this.stmt('SELECT rv, event, body FROM changes WHERE rtype = ? AND namespace = ? AND rv > ? ORDER BY rv LIMIT ?').all(key, w.namespace, w.cursor, WATCH_BATCH)) as ChangeRow[],
        }));
      } catch (e) {
        const err = e instanceof ApiError ? e : this.storageError(e);
        if (err instanceof ApiError && err.code === 503) return; // busy: the next tick retries
        this.endWatch(w, err);
        return;
      }
      if (w.cursor < batch.compacted) {
        this.endWatch(w, new ApiError(410, 'Expired', `too old resource version: ${w.cursor} (${batch.compacted})`));
        return;
      }
      for (const row of batch.rows) {
        if (w.ended) return;
        let obj: KubeObject;
        try {
          obj = JSON.parse(row.body) as KubeObject;
        } catch (e) {
          // Skipping a change would leave the caller's cache silently wrong: end the watch so it relists.
          this.endWatch(w, new ApiError(500, 'InternalError', `change ${row.rv} of ${qualifiedResource(w.type)} is corrupt in the object store: ${(e as Error).message}`));
          return;
        }
        w.cursor = row.rv;
        this.deliver(w, row.event, obj);
      }
      if (batch.rows.length < WATCH_BATCH) {
        // Everything up to head was seen (other types' changes included): bookmarks may say so.
        if (!w.ended) w.cursor = Math.max(w.cursor, batch.head);
        return;
      }
    }
  }

  private deliver(w: Watcher, type: WatchEventType, obj: KubeObject): void {
    try {
      w.handler(type, obj);
    } catch (e) {
      // A throwing handler is a bug in the caller: surface it through `done` instead of losing events.
      this.endWatch(w, e);
    }
  }

  // ------------------------------------------------------------------ lifecycle

  /** End every watch (their `done` resolves) and close the database. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of [...this.watchers]) this.endWatch(w);
    this.stopTimer();
    this.closed = true;
    this.db.close();
  }
}
