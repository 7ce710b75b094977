/**
 * The resource types standalone mode knows, with the names kubectl accepts for them (plural,
 * singular, short names, categories) and the columns `spacectl get` prints. The embedded store
 * itself takes any ResourceType; this registry is what maps a manifest's apiVersion/kind or a
 * word typed on the command line to one.
 */
import {
  CAPSULES,
  CAPSULE_VIEWS,
  CONFIGMAPS,
  EVENTS,
  FEDERATION_ZONES,
  LEASES,
  SECRETS,
  apiVersionOf,
} from '../runtime/object-api.js';
import type { KubeObject, ResourceType } from '../runtime/object-api.js';

export interface Column {
  header: string;
  /** The cell for one object ("" or "<none>" when unset). */
  value: (o: KubeObject, now: Date) => string;
  /** Only with `-o wide`. */
  wide?: boolean;
}

export interface KindInfo {
  type: ResourceType;
  singular: string;
  shortNames: string[];
  categories: string[];
  /** Columns after NAME (and before AGE, which every kind gets unless `noAge`). */
  columns: Column[];
  /** Events print LAST SEEN instead (the columns carry it). */
  noAge?: boolean;
}

const get = (o: unknown, ...path: string[]): unknown => {
  let v = o;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
  return v;
};
const str = (v: unknown): string => (v === undefined || v === null || v === '' ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
const at = (...path: string[]) => (o: KubeObject) => str(get(o, ...path));

/** Bytes as kubectl-ish quantities (1.5Gi); strings (already quantities) pass through. */
export function quantity(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v !== 'number' || !Number.isFinite(v)) return '';
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  let x = v;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return i === 0 ? String(x) : `${Number.isInteger(x) ? x : x.toFixed(1)}${units[i]}`;
}

/** kubectl's HumanDuration: 45s, 5m30s, 3h, 2d5h, 200d, 2y30d. */
export function age(since: string | undefined, now: Date): string {
  const t = since ? Date.parse(since) : NaN;
  if (!Number.isFinite(t)) return '<unknown>';
  const s = Math.max(0, Math.floor((now.getTime() - t) / 1000));
  const m = Math.floor(s / 60);
  const h = Math.floor(s / 3600);
  const d = Math.floor(h / 24);
  const y = Math.floor(d / 365);
  if (s < 120) return `${s}s`;
  if (m < 10) return s % 60 ? `${m}m${s % 60}s` : `${m}m`;
  if (h < 3) return `${m}m`;
  if (h < 8) return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  if (h < 48) return `${h}h`;
  if (h < 24 * 8) return h % 24 ? `${d}d${h % 24}h` : `${d}d`;
  if (d < 365 * 2) return `${d}d`;
  if (d < 365 * 8) return d % 365 ? `${y}y${d % 365}d` : `${y}y`;
  return `${y}y`;
}

/** status of the condition of that type ("True"/"False"/"Unknown"), "" when absent. */
export const condition =
  (type: string) =>
  (o: KubeObject): string => {
    const conds = get(o, 'status', 'conditions');
    if (!Array.isArray(conds)) return '';
    const c = conds.find((x) => get(x, 'type') === type);
    return str(get(c, 'status'));
  };

/** capsuleRef may be a name or {name, namespace}. */
const capsuleRef = (o: KubeObject): string => {
  const ref = get(o, 'spec', 'capsuleRef');
  if (typeof ref === 'string') return ref;
  const name = str(get(ref, 'name'));
  const ns = str(get(ref, 'namespace'));
  return ns && ns !== o.metadata.namespace ? `${ns}/${name}` : name;
};

/** A view's endpoint: its URL (the CRD's printer column), else address:port plus the NQN or export path. */
const endpoint = (o: KubeObject): string => {
  const e = get(o, 'status', 'endpoint');
  if (typeof e === 'string') return e;
  if (!e || typeof e !== 'object') return '';
  const url = str(get(e, 'url'));
  if (url) return url;
  const addr = str(get(e, 'address'));
  const port = str(get(e, 'port'));
  const where = addr && port ? `${addr}:${port}` : addr;
  const extra = str(get(e, 'nqn')) || str(get(e, 'exportPath')) || str(get(e, 'path'));
  return [where, extra].filter(Boolean).join(' ');
};

const keysOf = (...fields: string[]) => (o: KubeObject) => String(fields.reduce((n, f) => n + Object.keys((o[f] as object | undefined) ?? {}).length, 0));

export const KINDS: readonly KindInfo[] = [
  {
    type: CAPSULES,
    singular: 'capsule',
    shortNames: ['cap'],
    categories: ['space'],
    columns: [
      { header: 'PHASE', value: at('status', 'phase') },
      { header: 'VERSION', value: at('status', 'version') },
      { header: 'SIZE', value: (o) => quantity(get(o, 'status', 'size')) },
      { header: 'READY', value: condition('Ready') },
      { header: 'DIGEST', value: (o) => str(get(o, 'status', 'digest')).slice(0, 19), wide: true },
      {
        header: 'ZONES',
        value: (o) => {
          const z = get(o, 'status', 'zones');
          return Array.isArray(z) ? z.map((x) => (typeof x === 'string' ? x : str(get(x, 'zone') ?? get(x, 'name')))).join(',') : '';
        },
        wide: true,
      },
    ],
  },
  {
    type: CAPSULE_VIEWS,
    singular: 'capsuleview',
    shortNames: ['cv'],
    categories: ['space'],
    columns: [
      { header: 'CAPSULE', value: capsuleRef },
      { header: 'PROTOCOL', value: at('spec', 'protocol') },
      { header: 'READY', value: condition('Ready') },
      { header: 'ENDPOINT', value: endpoint },
      { header: 'READONLY', value: (o) => str(get(o, 'spec', 'readOnly') ?? false), wide: true },
    ],
  },
  {
    type: FEDERATION_ZONES,
    singular: 'federationzone',
    shortNames: ['fz'],
    categories: ['space'],
    columns: [
      { header: 'ZONE', value: at('spec', 'zone') },
      { header: 'REGION', value: at('spec', 'region') },
      { header: 'CONNECTED', value: at('status', 'connected') },
      { header: 'RTT', value: (o) => str(get(o, 'status', 'roundTripTime') ?? get(o, 'status', 'rtt')) },
      { header: 'ENDPOINT', value: at('spec', 'endpoint'), wide: true },
      { header: 'LAG', value: (o) => str(get(o, 'status', 'replicationLag') ?? get(o, 'status', 'lag')), wide: true },
    ],
  },
  { type: CONFIGMAPS, singular: 'configmap', shortNames: ['cm'], categories: [], columns: [{ header: 'DATA', value: keysOf('data', 'binaryData') }] },
  {
    type: SECRETS,
    singular: 'secret',
    shortNames: [],
    categories: [],
    columns: [
      { header: 'TYPE', value: (o) => str(o.type) || 'Opaque' },
      { header: 'DATA', value: keysOf('data') },
    ],
  },
  {
    type: EVENTS,
    singular: 'event',
    shortNames: ['ev'],
    categories: [],
    noAge: true,
    columns: [
      { header: 'LAST SEEN', value: (o, now) => age(str(o.lastTimestamp) || o.metadata.creationTimestamp, now) },
      { header: 'TYPE', value: at('type') },
      { header: 'REASON', value: at('reason') },
      { header: 'OBJECT', value: (o) => `${str(get(o, 'involvedObject', 'kind')).toLowerCase()}/${str(get(o, 'involvedObject', 'name'))}` },
      { header: 'COUNT', value: at('count'), wide: true },
      { header: 'MESSAGE', value: at('message') },
    ],
  },
  { type: LEASES, singular: 'lease', shortNames: [], categories: [], columns: [{ header: 'HOLDER', value: at('spec', 'holderIdentity') }] },
];

/** "capsule.space.io" / "configmap": the prefix kubectl prints before "/name". */
export const displayName = (k: KindInfo): string => (k.type.group ? `${k.singular}.${k.type.group}` : k.singular);

/**
 * Kinds named by a word typed on the command line: plural, singular, short name, Kind, any of
 * those qualified by the group (capsules.space.io), or a category (`space`). Case-insensitive.
 * Empty when nothing matches.
 */
export function resolveKinds(word: string): KindInfo[] {
  const w = word.toLowerCase();
  const direct = KINDS.filter((k) => {
    const names = [k.type.plural, k.singular, k.type.kind.toLowerCase(), ...k.shortNames];
    return names.includes(w) || (k.type.group !== '' && names.some((n) => `${n}.${k.type.group}` === w));
  });
  if (direct.length) return direct;
  return KINDS.filter((k) => k.categories.includes(w));
}

/** The kind of a manifest, by apiVersion and kind (as a manifest names it). */
export function kindOf(apiVersion: string, kind: string): KindInfo | undefined {
  return KINDS.find((k) => apiVersionOf(k.type) === apiVersion && k.type.kind === kind);
}

/** The names one may type for the known kinds, for error messages. */
export function knownKindsHelp(): string {
  return KINDS.map((k) => (k.shortNames.length ? `${k.type.plural} (${k.shortNames.join(', ')})` : k.type.plural)).join(', ') + "; category 'space' for all space.io kinds";
}
