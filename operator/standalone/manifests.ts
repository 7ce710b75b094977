/**
 * Manifests as `kubectl apply -f` reads them (multi-document YAML or JSON files, directories
 * non-recursively, `kind: List` expanded), and apply's create-or-update against any ObjectApi.
 * Errors name the file and line, so a typo in deployment/examples/ points at itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { isConflict, isNotFound } from '../runtime/object-api.js';
import type { KubeObject, ObjectApi, ResourceType } from '../runtime/object-api.js';

export interface Manifest {
  object: KubeObject;
  /** The file it came from ("-" for stdin). */
  source: string;
  /** 1-based line where its document starts. */
  line: number;
}

export class ManifestError extends Error {
  constructor(
    readonly source: string,
    readonly line: number | undefined,
    message: string,
  ) {
    super(`${source}${line ? `:${line}` : ''}: ${message}`);
    this.name = 'ManifestError';
  }
}

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

/** The files `-f` names: a file as is, a directory's *.yaml|*.yml|*.json sorted by name, "-" for stdin. */
export function manifestFiles(paths: string[]): string[] {
  const files: string[] = [];
  for (const p of paths) {
    if (p === '-') {
      files.push(p);
      continue;
    }
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      throw new ManifestError(p, undefined, 'no such file or directory');
    }
    if (st.isDirectory()) {
      const names = fs
        .readdirSync(p, { withFileTypes: true })
        .filter((e) => (e.isFile() || e.isSymbolicLink()) && MANIFEST_FILE.test(e.name))
        .map((e) => e.name)
        .sort();
      files.push(...names.map((n) => path.join(p, n)));
    } else files.push(p);
  }
  return files;
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Every object in one YAML/JSON text (empty documents skipped, Lists expanded). */
export function parseManifests(text: string, source: string): Manifest[] {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (!Array.isArray(docs)) return []; // an empty stream
  const out: Manifest[] = [];
  for (const doc of docs) {
    const err = doc.errors[0];
    if (err) {
      const line = err.linePos?.[0]?.line ?? lc.linePos(err.pos[0]).line;
      throw new ManifestError(source, line, `invalid YAML: ${err.message.split('\n')[0]}`);
    }
    const start = doc.contents?.range?.[0] ?? doc.range[0];
    const line = lc.linePos(start).line;
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      throw new ManifestError(source, line, `invalid YAML: ${(e as Error).message}`);
    }
    if (value === null || value === undefined) continue;
    if (!isMap(value)) throw new ManifestError(source, line, `a manifest must be a mapping with apiVersion, kind and metadata, not ${Array.isArray(value) ? 'a list' : typeof value}`);
    const items = value.kind === 'List' || (typeof value.kind === 'string' && value.kind.endsWith('List') && Array.isArray(value.items)) ? value.items : [value];
    if (!Array.isArray(items)) throw new ManifestError(source, line, 'a List needs items');
    for (const item of items) {
      if (!isMap(item)) throw new ManifestError(source, line, 'every item of a List must be a mapping');
      checkShape(item, source, line);
      out.push({ object: item as unknown as KubeObject, source, line });
    }
  }
  return out;
}

function checkShape(o: Record<string, unknown>, source: string, line: number): void {
  if (typeof o.apiVersion !== 'string' || !o.apiVersion) throw new ManifestError(source, line, 'apiVersion not set');
  if (typeof o.kind !== 'string' || !o.kind) throw new ManifestError(source, line, 'kind not set');
  if (!isMap(o.metadata)) throw new ManifestError(source, line, `${o.kind}: metadata not set`);
  const name = o.metadata.name;
  if (name !== undefined && typeof name !== 'string') throw new ManifestError(source, line, `${o.kind}: metadata.name must be a string`);
  if (!name && !o.metadata.generateName) throw new ManifestError(source, line, `${o.kind}: metadata.name not set`);
  const ns = o.metadata.namespace;
  if (ns !== undefined && typeof ns !== 'string') throw new ManifestError(source, line, `${o.kind} "${String(name)}": metadata.namespace must be a string`);
}

/**
 * True when no document of the text has an apiVersion or a kind: a YAML file of another kind
 * (deployment/examples/ keeps a capsule policy file next to the manifests), not a broken one.
 */
function isForeignYaml(text: string): boolean {
  try {
    const docs = parseAllDocuments(text);
    if (!Array.isArray(docs) || docs.some((d) => d.errors.length)) return false;
    const values = docs.map((d) => d.toJS() as unknown).filter((v) => v !== null && v !== undefined);
    return values.length > 0 && values.every((v) => isMap(v) && v.apiVersion === undefined && v.kind === undefined);
  } catch {
    return false;
  }
}

export interface ReadOptions {
  /** Where "-" reads from (default: this process's stdin). */
  stdin?: () => string;
  /** Told about files in a directory that are YAML but hold no Kubernetes objects (skipped). */
  onSkip?: (file: string, why: string) => void;
}

/**
 * Read and parse the manifests of files and directories, in order. A file found in a
 * directory whose documents have neither apiVersion nor kind is skipped (onSkip says so); named
 * explicitly, it is an error like any other malformed manifest.
 */
export function readManifests(paths: string[], opts: ReadOptions = {}): Manifest[] {
  const out: Manifest[] = [];
  const named = new Set(paths);
  for (const f of manifestFiles(paths)) {
    let text: string;
    try {
      text = f === '-' ? (opts.stdin ?? (() => fs.readFileSync(0, 'utf8')))() : fs.readFileSync(f, 'utf8');
    } catch (e) {
      throw new ManifestError(f, undefined, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!named.has(f) && isForeignYaml(text)) {
      opts.onSkip?.(f, 'not a Kubernetes manifest (no apiVersion or kind)');
      continue;
    }
    out.push(...parseManifests(text, f));
  }
  return out;
}

export type ApplyOutcome = 'created' | 'configured' | 'unchanged';

/**
 * The object to write over `current` for an apply of `desired`: labels and annotations are
 * merged (the manifest wins per key), finalizers are the union (controllers add their own and
 * an apply must not strip them), owner references are the manifest's if it has any; every other
 * top-level field (spec, data, ...) is the manifest's. Status is the controllers' business.
 *
 * Unlike kubectl there is no last-applied annotation, so a label removed from the manifest stays
 * on the object until removed explicitly.
 */
export function mergeForApply(current: KubeObject, desired: KubeObject): KubeObject {
  const { metadata: dm, status: _s, ...fields } = desired;
  const cm = current.metadata;
  const union = [...new Set([...(cm.finalizers ?? []), ...(dm.finalizers ?? [])])];
  const metadata = {
    ...cm,
    labels: { ...cm.labels, ...dm.labels },
    annotations: { ...cm.annotations, ...dm.annotations },
    finalizers: union,
    ownerReferences: dm.ownerReferences ?? cm.ownerReferences,
  };
  return { ...fields, metadata, status: current.status } as KubeObject;
}

/**
 * Create `obj` or update the existing object to match it, with the API's optimistic
 * concurrency: a conflicting write by a controller in between is retried on a fresh read.
 */
export async function applyObject(api: ObjectApi, type: ResourceType, obj: KubeObject): Promise<{ outcome: ApplyOutcome; object: KubeObject }> {
  const name = obj.metadata.name;
  const ns = type.namespaced ? obj.metadata.namespace : undefined;
  for (let attempt = 0; ; attempt++) {
    let current: KubeObject | undefined;
    try {
      current = name ? await api.get(type, name, ns) : undefined;
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    try {
      if (!current) {
        const { status: _s, ...rest } = obj;
        const created = await api.create(type, { ...rest, metadata: { ...obj.metadata, resourceVersion: undefined } } as KubeObject);
        return { outcome: 'created', object: created };
      }
      const next = await api.replace(type, mergeForApply(current, obj));
      return { outcome: next.metadata.resourceVersion === current.metadata.resourceVersion ? 'unchanged' : 'configured', object: next };
    } catch (e) {
      // Someone created it or changed it since our read: read again.
      if (attempt < 5 && e && (isConflict(e) || isNotFound(e))) continue;
      throw e;
    }
  }
}
