/** Pieces every reconciler uses: finalizers, change-only status writes, object lookups. */
import { isDeepStrictEqual } from 'node:util';
import type { KubeObject, ObjectApi, ResourceType } from '../runtime/object-api.js';
import { objectKey } from '../runtime/object-api.js';

export const FINALIZER = 'space.io/finalizer';

/** Read access to an informer's cache (operator/runtime/informer.ts satisfies it). */
export interface Lister {
  get(key: string): KubeObject | undefined;
  list(): KubeObject[];
}

export const keyOf = (namespace: string | undefined, name: string): string => (namespace ? `${namespace}/${name}` : name);

export const hasFinalizer = (o: KubeObject): boolean => (o.metadata.finalizers ?? []).includes(FINALIZER);

/** Add our finalizer (one update); returns the stored object. */
export async function addFinalizer(api: ObjectApi, type: ResourceType, o: KubeObject): Promise<KubeObject> {
  if (hasFinalizer(o)) return o;
  return api.replace(type, { ...o, metadata: { ...o.metadata, finalizers: [...(o.metadata.finalizers ?? []), FINALIZER] } });
}

/** Remove our finalizer; the API server deletes the object once no finalizer is left. */
export async function removeFinalizer(api: ObjectApi, type: ResourceType, o: KubeObject): Promise<void> {
  if (!hasFinalizer(o)) return;
  await api.replace(type, { ...o, metadata: { ...o.metadata, finalizers: (o.metadata.finalizers ?? []).filter((f) => f !== FINALIZER) } });
}

/**
 * Write status only when it differs from what is stored: a reconcile that changes nothing makes
 * no API call, which is what keeps an idle operator idle (every write would trigger a watch
 * event and another reconcile).
 */
export async function writeStatus<S>(api: ObjectApi, type: ResourceType, o: KubeObject, status: S): Promise<KubeObject> {
  if (isDeepStrictEqual(stripUndefined(o.status), stripUndefined(status))) return o;
  return api.replaceStatus(type, { ...o, status });
}

function stripUndefined(v: unknown): unknown {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

export const describe = (o: KubeObject): string => `${o.kind} ${objectKey(o)}`;

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
