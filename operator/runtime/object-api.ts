/**
 * The slice of the Kubernetes API the operator needs, as one interface with two implementations:
 * a real API server through @kubernetes/client-node (operator/runtime/kube-api.ts) and the
 * embedded file-backed object store of standalone mode (operator/standalone/object-store.ts).
 * Reconcilers, informers and leader election are written against this interface only, so they
 * behave the same in a cluster, on one machine, and in fast unit tests.
 *
 * Semantics are the API server's: every write bumps metadata.resourceVersion; replace() with a
 * stale resourceVersion is a 409 Conflict; spec changes bump metadata.generation (status writes
 * do not); replace() ignores .status and replaceStatus() ignores everything but .status;
 * delete() of an object with finalizers only sets metadata.deletionTimestamp, and the object goes
 * away when the last finalizer is removed; watches deliver events after a resourceVersion and
 * end with a 410 Gone ApiError when that version is too old.
 */

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: unknown;
  status?: unknown;
  /** ConfigMap / Secret payloads and other top-level fields pass through untouched. */
  [field: string]: unknown;
}

/** Identifies one resource type (what a REST path is built from). group '' is the core API. */
export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

export const apiVersionOf = (r: ResourceType): string => (r.group ? `${r.group}/${r.version}` : r.version);

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK';

export interface ListResult {
  items: KubeObject[];
  /** The collection's resourceVersion: start a watch from here to miss nothing. */
  resourceVersion: string;
}

export interface WatchHandle {
  /** Stop watching; `done` then resolves. */
  stop(): void;
  /**
   * Settles when the watch ends: resolves on stop() or a clean server-side close (the caller
   * re-watches from its last resourceVersion), rejects with an ApiError (410 when expired) or a
   * network error.
   */
  done: Promise<void>;
}

export interface WatchOptions {
  namespace?: string;
  resourceVersion: string;
  /** Ask for BOOKMARK events (the resourceVersion moves on without an object change). */
  allowBookmarks?: boolean;
}

/** A core/v1 Event, as reconcilers record them (see operator/runtime/events.ts). */
export interface EventRecord {
  involved: KubeObject;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  /** Component that reports it, e.g. "space-operator". */
  source: string;
}

/**
 * HTTP-style status of a failed call: 400 BadRequest, 404 NotFound, 409 Conflict or
 * AlreadyExists, 410 Gone (Expired), 422 Invalid, 500/503 server trouble.
 */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof ApiError && e.code === 404;
export const isConflict = (e: unknown): boolean => e instanceof ApiError && e.code === 409;
export const isGone = (e: unknown): boolean => e instanceof ApiError && e.code === 410;

export interface ObjectApi {
  list(type: ResourceType, namespace?: string): Promise<ListResult>;
  watch(type: ResourceType, opts: WatchOptions, onEvent: (type: WatchEventType, obj: KubeObject) => void): Promise<WatchHandle>;
  get(type: ResourceType, name: string, namespace?: string): Promise<KubeObject>;
  create(type: ResourceType, obj: KubeObject): Promise<KubeObject>;
  /** Whole-object update (spec, metadata) with optimistic concurrency on resourceVersion. */
  replace(type: ResourceType, obj: KubeObject): Promise<KubeObject>;
  /** The status subresource: only .status is taken from `obj`; resourceVersion is checked. */
  replaceStatus(type: ResourceType, obj: KubeObject): Promise<KubeObject>;
  delete(type: ResourceType, name: string, namespace?: string): Promise<void>;
  recordEvent(ev: EventRecord): Promise<void>;
}

/** Well-known resource types. */
export const LEASES: ResourceType = { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease', namespaced: true };
export const EVENTS: ResourceType = { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true };
export const CONFIGMAPS: ResourceType = { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true };
export const SECRETS: ResourceType = { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true };
export const SPACE_GROUP = 'space.io';
export const SPACE_VERSION = 'v1alpha1';
export const CAPSULES: ResourceType = { group: SPACE_GROUP, version: SPACE_VERSION, plural: 'capsules', kind: 'Capsule', namespaced: true };
export const CAPSULE_VIEWS: ResourceType = { group: SPACE_GROUP, version: SPACE_VERSION, plural: 'capsuleviews', kind: 'CapsuleView', namespaced: true };
export const FEDERATION_ZONES: ResourceType = { group: SPACE_GROUP, version: SPACE_VERSION, plural: 'federationzones', kind: 'FederationZone', namespaced: false };

export const objectKey = (o: { metadata: ObjectMeta }): string => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);
