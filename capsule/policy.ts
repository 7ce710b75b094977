/**
 * Capsule policy: what a capsule's data goes through on its way to disk and where it may live.
 * Parsed from YAML with errors that name the file, line and column of the bad field.
 */
import { LineCounter, parseDocument, isMap, isSeq, isScalar, type Node } from 'yaml';
import { SpaceError } from './errors.js';
import { zstdAvailable } from './compression.js';

export type Compression = 'none' | 'gzip' | 'brotli' | 'zstd';
export const COMPRESSIONS: readonly Compression[] = ['none', 'gzip', 'brotli', 'zstd'];

export interface FederationTarget {
  zone: string;
  priority: number;
  region?: string;
}

export interface Policy {
  compression: Compression;
  encryption: { enabled: boolean; algorithm: 'aes-256-gcm'; keyRef: string };
  segmentSize: number;
  redundancy: { replicas: number };
  sovereignty: { allowedRegions: string[] };
  federation: { targets: FederationTarget[] };
}

export const DEFAULT_SEGMENT_SIZE = 1 << 20;
export const MIN_SEGMENT_SIZE = 4 << 10;
export const MAX_SEGMENT_SIZE = 64 << 20;

export function defaultPolicy(): Policy {
  return {
    compression: 'none',
    encryption: { enabled: false, algorithm: 'aes-256-gcm', keyRef: 'default' },
    segmentSize: DEFAULT_SEGMENT_SIZE,
    redundancy: { replicas: 1 },
    sovereignty: { allowedRegions: [] },
    federation: { targets: [] },
  };
}

/** One bad field: where it is and what is wrong. */
export interface PolicyIssue {
  path: string;
  message: string;
  line?: number;
  col?: number;
}

export class PolicyError extends SpaceError {
  constructor(readonly source: string, readonly issues: PolicyIssue[]) {
    super('INVALID_ARGUMENT', issues.map((i) => formatIssue(source, i)).join('\n'), { details: { issues } });
    this.name = 'PolicyError';
  }
}

function formatIssue(source: string, i: PolicyIssue): string {
  const where = i.line !== undefined ? `${source}:${i.line}:${i.col}` : source;
  return `${where}: ${i.path ? i.path + ': ' : ''}${i.message}`;
}

const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/;
const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: 1 << 20, mb: 1e6, mib: 1 << 20, g: 1 << 30, gb: 1e9, gib: 1 << 30 };

/** Parse "1MiB", "64KiB", "4096" or a number into bytes; null when it is not a size. */
export function parseSize(v: unknown): number | null {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 ? v : null;
  if (typeof v !== 'string') return null;
  const m = /^\s*(\d+)\s*([a-zA-Z]*)\s*$/.exec(v);
  if (!m) return null;
  const unit = UNITS[m[2]!.toLowerCase()];
  return unit === undefined ? null : Number(m[1]) * unit;
}

type Locate = (path: (string | number)[]) => { line?: number; col?: number };

/** Validate a plain object as a policy. `locate` maps a field path to a source position. */
export function validatePolicy(raw: unknown, source = 'policy', locate: Locate = () => ({})): Policy {
  const issues: PolicyIssue[] = [];
  const bad = (path: (string | number)[], message: string) =>
    issues.push({ path: path.join('.'), message, ...locate(path) });
  const p = defaultPolicy();

  if (raw === null || raw === undefined) return p;
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    bad([], 'a policy must be a mapping of fields (compression, encryption, segmentSize, ...)');
    throw new PolicyError(source, issues);
  }
  const r = raw as Record<string, unknown>;
  const known = ['compression', 'encryption', 'segmentSize', 'redundancy', 'sovereignty', 'federation'];
  for (const k of Object.keys(r)) if (!known.includes(k)) bad([k], `unknown field (known: ${known.join(', ')})`);

  if (r.compression !== undefined) {
    if (typeof r.compression !== 'string' || !COMPRESSIONS.includes(r.compression as Compression)) {
      bad(['compression'], `must be one of ${COMPRESSIONS.join(', ')} (got ${JSON.stringify(r.compression)})`);
    } else if (r.compression === 'zstd' && !zstdAvailable()) {
      bad(['compression'], 'zstd is not available on this build (the zstd-napi binding failed to load); use gzip or brotli');
    } else p.compression = r.compression as Compression;
  }

  if (r.encryption !== undefined) {
    const e = r.encryption;
    if (typeof e === 'boolean') p.encryption.enabled = e;
    else if (e && typeof e === 'object' && !Array.isArray(e)) {
      const eo = e as Record<string, unknown>;
      for (const k of Object.keys(eo)) if (!['enabled', 'algorithm', 'keyRef'].includes(k)) bad(['encryption', k], 'unknown field (known: enabled, algorithm, keyRef)');
      if (eo.enabled !== undefined) {
        if (typeof eo.enabled !== 'boolean') bad(['encryption', 'enabled'], `must be true or false (got ${JSON.stringify(eo.enabled)})`);
        else p.encryption.enabled = eo.enabled;
      } else p.encryption.enabled = true; // an encryption block without `enabled` means "on"
      if (eo.algorithm !== undefined && eo.algorithm !== 'aes-256-gcm') {
        bad(['encryption', 'algorithm'], `must be aes-256-gcm (got ${JSON.stringify(eo.algorithm)})`);
      }
      if (eo.keyRef !== undefined) {
        if (typeof eo.keyRef !== 'string' || !NAME_RE.test(eo.keyRef)) bad(['encryption', 'keyRef'], 'must be a DNS-style name (lower-case letters, digits, - and .)');
        else p.encryption.keyRef = eo.keyRef;
      }
    } else bad(['encryption'], 'must be true, false or a mapping {enabled, algorithm, keyRef}');
  }

  if (r.segmentSize !== undefined) {
    const s = parseSize(r.segmentSize);
    if (s === null) bad(['segmentSize'], `must be a size such as 1MiB or 65536 (got ${JSON.stringify(r.segmentSize)})`);
    else if (s < MIN_SEGMENT_SIZE || s > MAX_SEGMENT_SIZE) bad(['segmentSize'], `must be between 4KiB and 64MiB (got ${s} bytes)`);
    else if ((s & (s - 1)) !== 0) bad(['segmentSize'], `must be a power of two (got ${s} bytes)`);
    else p.segmentSize = s;
  }

  if (r.redundancy !== undefined) {
    const red = r.redundancy as Record<string, unknown>;
    if (!red || typeof red !== 'object' || Array.isArray(red)) bad(['redundancy'], 'must be a mapping {replicas}');
    else {
      for (const k of Object.keys(red)) if (k !== 'replicas') bad(['redundancy', k], 'unknown field (known: replicas)');
      if (red.replicas !== undefined) {
        if (!Number.isInteger(red.replicas) || (red.replicas as number) < 1 || (red.replicas as number) > 5) bad(['redundancy', 'replicas'], `must be an integer from 1 to 5 (got ${JSON.stringify(red.replicas)})`);
        else p.redundancy.replicas = red.replicas as number;
      }
    }
  }

  if (r.sovereignty !== undefined) {
    const sv = r.sovereignty as Record<string, unknown>;
    if (!sv || typeof sv !== 'object' || Array.isArray(sv)) bad(['sovereignty'], 'must be a mapping {allowedRegions}');
    else {
      for (const k of Object.keys(sv)) if (k !== 'allowedRegions') bad(['sovereignty', k], 'unknown field (known: allowedRegions)');
      if (sv.allowedRegions !== undefined) {
        if (!Array.isArray(sv.allowedRegions)) bad(['sovereignty', 'allowedRegions'], 'must be a list of region names');
        else sv.allowedRegions.forEach((reg, i) => {
          if (typeof reg !== 'string' || !NAME_RE.test(reg)) bad(['sovereignty', 'allowedRegions', i], `must be a region name such as eu-west-1 (got ${JSON.stringify(reg)})`);
          else p.sovereignty.allowedRegions.push(reg);
        });
      }
    }
  }

  if (r.federation !== undefined) {
    const f = r.federation as Record<string, unknown>;
    if (!f || typeof f !== 'object' || Array.isArray(f)) bad(['federation'], 'must be a mapping {targets}');
    else {
      for (const k of Object.keys(f)) if (k !== 'targets') bad(['federation', k], 'unknown field (known: targets)');
      if (f.targets !== undefined) {
        if (!Array.isArray(f.targets)) bad(['federation', 'targets'], 'must be a list of {zone, priority, region}');
        else f.targets.forEach((t, i) => {
          const at = ['federation', 'targets', i];
          if (!t || typeof t !== 'object' || Array.isArray(t)) return bad(at, 'must be a mapping {zone, priority, region}');
          const to = t as Record<string, unknown>;
          for (const k of Object.keys(to)) if (!['zone', 'priority', 'region'].includes(k)) bad([...at, k], 'unknown field (known: zone, priority, region)');
          if (typeof to.zone !== 'string' || !NAME_RE.test(to.zone)) return bad([...at, 'zone'], `is required and must be a zone name (got ${JSON.stringify(to.zone)})`);
          let priority = 100;
          if (to.priority !== undefined) {
            if (!Number.isInteger(to.priority) || (to.priority as number) < 0 || (to.priority as number) > 1000) return bad([...at, 'priority'], `must be an integer from 0 to 1000 (got ${JSON.stringify(to.priority)})`);
            priority = to.priority as number;
          }
          if (to.region !== undefined && (typeof to.region !== 'string' || !NAME_RE.test(to.region))) return bad([...at, 'region'], `must be a region name (got ${JSON.stringify(to.region)})`);
          if (p.federation.targets.some((x) => x.zone === to.zone)) return bad([...at, 'zone'], `zone ${to.zone} is listed twice`);
          p.federation.targets.push({ zone: to.zone, priority, ...(to.region ? { region: to.region as string } : {}) });
        });
      }
    }
  }

  // Sovereignty is a promise about where data may live: a federation target in a region outside
  // the allowed list would break it, so it is a user error, not something to silently drop.
  if (p.sovereignty.allowedRegions.length > 0) {
    p.federation.targets.forEach((t, i) => {
      if (t.region && !p.sovereignty.allowedRegions.includes(t.region)) {
        bad(['federation', 'targets', i, 'region'], `region ${t.region} is outside sovereignty.allowedRegions (${p.sovereignty.allowedRegions.join(', ')})`);
      }
    });
  }

  if (issues.length) throw new PolicyError(source, issues);
  p.federation.targets.sort((a, b) => a.priority - b.priority);
  return p;
}

/** Parse policy YAML text; every error names source:line:col and the field. */
export function parsePolicyYaml(text: string, source = 'policy.yaml'): Policy {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    throw new PolicyError(source, doc.errors.map((e) => {
      const pos = e.pos ? lc.linePos(e.pos[0]) : undefined;
      return { path: '', message: `YAML syntax error: ${e.message.split('\n')[0]}`, line: pos?.line, col: pos?.col };
    }));
  }
  const locate: Locate = (path) => {
    let node: unknown = doc.contents;
    let lastRange: [number, number, number] | undefined = (doc.contents as Node | null)?.range ?? undefined;
    for (const key of path) {
      if (isMap(node)) {
        const pair = node.items.find((it) => isScalar(it.key) && String(it.key.value) === String(key));
        if (!pair) break;
        lastRange = (pair.value as Node | null)?.range ?? (pair.key as Node).range ?? lastRange;
        if (!pair.value) { lastRange = (pair.key as Node).range ?? lastRange; break; }
        node = pair.value;
        // point at the key for unknown-field errors (the value may be a long block)
        if (path[path.length - 1] === key && !isScalar(node)) lastRange = (pair.key as Node).range ?? lastRange;
      } else if (isSeq(node) && typeof key === 'number') {
        const item = node.items[key] as Node | undefined;
        if (!item) break;
        lastRange = item.range ?? lastRange;
        node = item;
      } else break;
    }
    if (!lastRange) return {};
    const pos = lc.linePos(lastRange[0]);
    return { line: pos.line, col: pos.col };
  };
  return validatePolicy(doc.toJS(), source, locate);
}
