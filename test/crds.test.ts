import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseAllDocuments } from 'yaml';
import { ApiError, type KubeObject } from '../operator/runtime/object-api.js';
import {
  SPACE_API_VERSION, SPACE_KINDS, CAPSULE_SOURCE_KINDS, endpointUrl, quantityToBytes, sourceKind,
  type Capsule, type CapsuleSource, type CapsuleSourceFields, type CapsuleSourceKind, type CapsuleSpec,
  type CapsuleStatus, type CapsuleView, type CapsuleViewSpec, type CapsuleViewStatus, type FederationZone,
  type FederationZoneSpec, type FederationZoneStatus, type SpaceKind,
} from '../operator/api/types.js';
import { allCrds, crdFor, schemaFor, type JSONSchemaProps } from '../operator/api/schemas.js';
import {
  admissionFor, admissionForType, formatIssue, IMPLEMENTED_RULES, rulesIn, validateAgainstSchema, validateObject,
} from '../operator/api/validate.js';
import { renderCrdFiles, CRD_DIRS } from '../operator/api/generate-crds.js';
import { validatePolicy } from '../capsule/policy.js';
import { CAPSULES, CONFIGMAPS } from '../operator/runtime/object-api.js';

// Tests run from the repository root (mocha's spec paths are relative to it).
const ROOT = process.cwd();
const EXAMPLES = path.join(ROOT, 'deployment/examples');
const INVALID = path.join(EXAMPLES, 'invalid');
/** Files in deployment/examples that are not Kubernetes manifests. */
const NOT_MANIFESTS = new Set(['policy.yaml']);

interface Doc {
  file: string;
  obj: KubeObject;
  text: string;
}

function readDocs(file: string): Doc[] {
  const text = fs.readFileSync(file, 'utf8');
  return parseAllDocuments(text).map((d) => {
    assert.equal(d.errors.length, 0, `${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    return { file: path.relative(ROOT, file), obj: d.toJS() as KubeObject, text };
  });
}

const yamlFiles = (dir: string): string[] =>
  fs.readdirSync(dir).filter((f) => f.endsWith('.yaml') && !NOT_MANIFESTS.has(f)).sort().map((f) => path.join(dir, f));

const isSpaceKind = (k: unknown): k is SpaceKind => typeof k === 'string' && (SPACE_KINDS as readonly string[]).includes(k);

const messages = (kind: SpaceKind, obj: unknown, old?: unknown): string[] => validateObject(kind, obj, old).issues.map(formatIssue);

// ---------------------------------------------------------------------------------------------
// Fully populated objects, typed so that the compiler demands every field of the interfaces.

/** Every optional field made required, all the way down. */
type DeepRequired<T> = T extends readonly (infer U)[] ? DeepRequired<U>[] : T extends object ? { [K in keyof T]-?: DeepRequired<T[K]> } : T;

const T0 = '2025-01-02T03:04:05Z';

/** One value for each source kind; a new source field in types.ts does not compile until added here. */
const SOURCES: { [K in CapsuleSourceKind]: DeepRequired<NonNullable<CapsuleSourceFields[K]>> } = {
  inline: { data: 'aGVsbG8K', encoding: 'base64', path: 'docs/hello.txt' },
  configMapRef: { name: 'site' },
  secretRef: { name: 'credentials' },
  snapshot: { capsule: 'hello', version: 1 },
  clone: { capsule: 'hello' },
  empty: { size: '1.5Gi' },
};

const fullCapsuleSpec: DeepRequired<Omit<CapsuleSpec, 'source'>> = {
  size: '2Gi',
  policy: {
    compression: 'gzip',
    encryption: { enabled: true, algorithm: 'aes-256-gcm', keyRef: 'space-kek' },
    segmentSize: '1MiB',
    redundancy: { replicas: 2 },
    sovereignty: { allowedRegions: ['eu-west-1', 'eu-central-1'] },
    federation: { targets: [{ zone: 'zone-b', region: 'eu-central-1', priority: 10 }] },
  },
  deletionPolicy: 'Retain',
};

const condition = { type: 'Ready', status: 'True' as const, reason: 'Serving', message: 'all good', lastTransitionTime: T0, observedGeneration: 2 };

const fullCapsuleStatus: DeepRequired<CapsuleStatus> = {
  phase: 'Ready',
  capsuleId: 'c-7f3a',
  gateway: 'space-gateway-0',
  version: 3,
  size: 43,
  storedSize: 61,
  digest: `sha256:${'ab'.repeat(32)}`,
  files: 1,
  zones: [{ zone: 'zone-b', state: 'InSync', lastSyncTime: T0 }],
  observedGeneration: 2,
  conditions: [condition],
};

function capsuleWith(kind: CapsuleSourceKind): Capsule {
  return {
    apiVersion: SPACE_API_VERSION,
    kind: 'Capsule',
    metadata: { name: `full-${kind.toLowerCase()}`, namespace: 'default' },
    spec: { source: { [kind]: SOURCES[kind] } as CapsuleSourceFields as CapsuleSource, ...fullCapsuleSpec },
    status: fullCapsuleStatus,
  };
}

const fullViewSpec: DeepRequired<CapsuleViewSpec> = {
  capsuleRef: { name: 'hello' },
  protocol: 'nvme',
  readOnly: true,
  options: { mountPath: '/tmp/space-views/hello', listen: '[::]:4420', allowedClients: ['10.0.0.0/8', '*.example.com'], nqn: 'nqn.2024-01.io.space:default.hello' },
};
const fullViewStatus: DeepRequired<CapsuleViewStatus> = {
  phase: 'Ready',
  endpoint: { protocol: 'nvme', address: '10.0.0.1', port: 4420, nqn: fullViewSpec.options.nqn, exportPath: '/hello', mountPath: '/tmp/space-views/hello', url: 'nvme://10.0.0.1:4420/nqn.2024-01.io.space:default.hello' },
  gateway: 'space-gateway-0',
  observedGeneration: 1,
  conditions: [condition],
};
const fullView: CapsuleView = {
  apiVersion: SPACE_API_VERSION,
  kind: 'CapsuleView',
  metadata: { name: 'hello-nvme', namespace: 'default' },
  spec: fullViewSpec,
  status: fullViewStatus,
};

const fullZoneSpec: DeepRequired<FederationZoneSpec> = {
  zone: 'zone-b',
  region: 'eu-central-1',
  endpoint: 'bridge.zone-b.example.com:7443',
  tlsSecretRef: { name: 'space-bridge-tls', namespace: 'space-system' },
  latencyClass: 'metro',
};
const fullZoneStatus: DeepRequired<FederationZoneStatus> = {
  connected: true,
  roundTripMillis: 12.5,
  replicationLagSeconds: 0.25,
  lastProbeTime: T0,
  observedGeneration: 1,
  conditions: [condition],
};
const fullZone: FederationZone = { apiVersion: SPACE_API_VERSION, kind: 'FederationZone', metadata: { name: 'zone-b' }, spec: fullZoneSpec, status: fullZoneStatus };

const FULL: Record<SpaceKind, KubeObject[]> = {
  Capsule: CAPSULE_SOURCE_KINDS.map(capsuleWith),
  CapsuleView: [fullView],
  FederationZone: [fullZone],
};

/** Field paths a schema declares: spec.a, spec.list[].b ... (metadata's content is not declared). */
function schemaPaths(s: JSONSchemaProps, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, child] of Object.entries(s.properties ?? {})) {
    const p = prefix ? `${prefix}.${k}` : k;
    out.push(p, ...schemaPaths(child, p));
  }
  if (s.items) out.push(...schemaPaths(s.items, `${prefix}[]`));
  return out;
}

/** Field paths present in a value, in the same notation. */
function valuePaths(v: unknown, prefix = ''): string[] {
  if (Array.isArray(v)) return v.flatMap((x) => valuePaths(x, `${prefix}[]`));
  if (typeof v !== 'object' || v === null || prefix === 'metadata') return [];
  return Object.entries(v).flatMap(([k, x]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    return [p, ...valuePaths(x, p)];
  });
}

// ---------------------------------------------------------------------------------------------
// What apiextensions.k8s.io/v1 demands of a structural schema (and a few house rules).

const KNOWN_KEYS = new Set<string>([
  'type', 'description', 'properties', 'required', 'items', 'additionalProperties', 'enum', 'pattern', 'format', 'minimum', 'maximum',
  'minLength', 'maxLength', 'minItems', 'maxItems', 'default', 'nullable', 'oneOf', 'anyOf', 'x-kubernetes-int-or-string',
  'x-kubernetes-list-type', 'x-kubernetes-list-map-keys', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-validations',
]);
/** What a node inside oneOf/anyOf may carry: value validations only. */
const JUNCTOR_KEYS = new Set(['required', 'enum', 'pattern', 'minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'maxItems', 'format']);

function structuralProblems(s: JSONSchemaProps, at: string, underUncorrelatedList = false): string[] {
  const out: string[] = [];
  const bad = (m: string) => out.push(`${at || '<root>'}: ${m}`);
  for (const k of Object.keys(s)) if (!KNOWN_KEYS.has(k)) bad(`unknown schema keyword ${k}`);
  if (s['x-kubernetes-int-or-string']) {
    if (s.type) bad('x-kubernetes-int-or-string must leave type empty');
    if (s.anyOf && JSON.stringify(s.anyOf) !== JSON.stringify([{ type: 'integer' }, { type: 'string' }])) bad('int-or-string anyOf must be exactly [{type: integer}, {type: string}]');
  } else {
    if (!s.type) bad('every node needs a type');
    for (const j of [...(s.oneOf ?? []), ...(s.anyOf ?? [])]) {
      for (const k of Object.keys(j)) if (!JUNCTOR_KEYS.has(k)) bad(`oneOf/anyOf may only hold value validations, found ${k}`);
      for (const r of j.required ?? []) if (!s.properties?.[r]) bad(`oneOf/anyOf requires ${r}, which properties does not declare`);
    }
  }
  if (s['x-kubernetes-preserve-unknown-fields']) bad('x-kubernetes-preserve-unknown-fields is not needed by any Space field');
  if (s.properties && s.additionalProperties) bad('properties and additionalProperties are mutually exclusive');
  if (at && at !== 'metadata' && !s.description) bad('no description');
  if (s.default !== undefined) {
    const r = validateAgainstSchema(s, s.default);
    if (r.issues.length) bad(`default does not validate: ${r.issues.map(formatIssue).join('; ')}`);
    if (JSON.stringify(r.value) !== JSON.stringify(s.default)) bad('default changes when pruned/defaulted');
  }
  for (const e of s.enum ?? []) if (typeof e !== (s.type === 'integer' ? 'number' : s.type)) bad(`enum value ${JSON.stringify(e)} is not a ${s.type}`);
  if (s.format && (s.format !== 'date-time' || s.type !== 'string')) bad(`format ${s.format} on ${s.type}`);
  if ((s.minLength !== undefined || s.maxLength !== undefined) && s.type !== 'string' && !s['x-kubernetes-int-or-string']) bad('length limits on a non-string');
  if (s.pattern !== undefined) {
    // RE2 (the API server) has no lookaround or backreferences; keep patterns to the shared subset.
    if (/\(\?[=!<]|\\[1-9]/.test(s.pattern)) bad(`pattern ${s.pattern} is not RE2`);
    assert.doesNotThrow(() => new RegExp(s.pattern!, 'u'), `${at}: pattern`);
  }
  const listType = s['x-kubernetes-list-type'];
  if (listType && s.type !== 'array') bad('x-kubernetes-list-type on a non-array');
  if (s['x-kubernetes-list-map-keys']) {
    if (listType !== 'map') bad('list-map-keys without list-type map');
    for (const k of s['x-kubernetes-list-map-keys']) {
      const ks = s.items?.properties?.[k];
      if (!ks || !['string', 'integer', 'boolean'].includes(ks.type ?? '')) bad(`map key ${k} must be a scalar property of the items`);
      if (!s.items?.required?.includes(k) && ks?.default === undefined) bad(`map key ${k} must be required or defaulted`);
    }
  }
  for (const r of s['x-kubernetes-validations'] ?? []) {
    if (!r.message) bad(`rule ${r.rule} has no message`);
    if (r.rule.includes('oldSelf') && underUncorrelatedList) bad(`transition rule ${r.rule} under a list whose items cannot be correlated`);
  }
  for (const [k, child] of Object.entries(s.properties ?? {})) out.push(...structuralProblems(child, at ? `${at}.${k}` : k, underUncorrelatedList));
  if (s.items) out.push(...structuralProblems(s.items, `${at}[]`, underUncorrelatedList || listType !== 'map'));
  if (s.additionalProperties) out.push(...structuralProblems(s.additionalProperties, `${at}[*]`, underUncorrelatedList));
  return out;
}

/** The schema node a printer column's jsonPath points at. */
function nodeAt(s: JSONSchemaProps, jsonPath: string): JSONSchemaProps | undefined {
  let n: JSONSchemaProps | undefined = s;
  for (const seg of jsonPath.replace(/^\./, '').split('.')) n = n?.properties?.[seg];
  return n;
}

// ---------------------------------------------------------------------------------------------

describe('Space API: CRDs, schemas and admission', () => {
  describe('generated CRD files', () => {
    const files = renderCrdFiles();

    it('writes one file per kind into both crds/ and charts/space/crds/', () => {
      const expected = CRD_DIRS.flatMap((d) => ['capsules', 'capsuleviews', 'federationzones'].map((p) => `${d}/${p}.space.io.yaml`)).sort();
      assert.deepEqual([...files.keys()].sort(), expected);
    });

    for (const [rel, text] of renderCrdFiles()) {
      it(`${rel} is what the generator writes now (run node dist/operator/api/generate-crds.js)`, () => {
        const file = path.join(ROOT, rel);
        assert.ok(fs.existsSync(file), `${rel} is missing`);
        assert.equal(fs.readFileSync(file, 'utf8'), text, `${rel} is out of date`);
      });
    }

    it('has the names, scope, columns and status subresource of each kind', () => {
      const byKind = Object.fromEntries(allCrds().map((c) => [c.spec.names.kind, c]));
      assert.deepEqual(Object.keys(byKind).sort(), [...SPACE_KINDS].sort());
      const cap = byKind.Capsule!;
      assert.equal(cap.metadata.name, 'capsules.space.io');
      assert.equal(cap.spec.scope, 'Namespaced');
      assert.deepEqual(cap.spec.names.shortNames, ['cap']);
      assert.deepEqual(byKind.CapsuleView!.spec.names.shortNames, ['cv']);
      assert.deepEqual(byKind.FederationZone!.spec.names.shortNames, ['fz']);
      assert.equal(byKind.FederationZone!.spec.scope, 'Cluster');
      const cols = (k: string) => byKind[k]!.spec.versions[0]!.additionalPrinterColumns.map((c) => c.name);
      assert.deepEqual(cols('Capsule'), ['Phase', 'Size', 'Stored', 'Version', 'Age']);
      assert.deepEqual(cols('CapsuleView'), ['Capsule', 'Protocol', 'Phase', 'Endpoint', 'Age']);
      assert.deepEqual(cols('FederationZone'), ['Zone', 'Region', 'Connected', 'RTT', 'Age']);
      for (const crd of allCrds()) {
        assert.deepEqual(crd.spec.names.categories, ['space']);
        assert.equal(crd.spec.versions.length, 1);
        const v = crd.spec.versions[0]!;
        assert.equal(v.name, 'v1alpha1');
        assert.ok(v.served && v.storage);
        assert.deepEqual(v.subresources, { status: {} });
      }
    });

    it('has printer columns that point at declared fields of the same type', () => {
      for (const crd of allCrds()) {
        const schema = crd.spec.versions[0]!.schema.openAPIV3Schema;
        for (const c of crd.spec.versions[0]!.additionalPrinterColumns) {
          if (c.jsonPath === '.metadata.creationTimestamp') {
            assert.equal(c.type, 'date');
            continue;
          }
          const n = nodeAt(schema, c.jsonPath);
          assert.ok(n, `${crd.spec.names.kind} column ${c.name}: ${c.jsonPath} is not in the schema`);
          assert.equal(n.type, c.type, `${crd.spec.names.kind} column ${c.name}`);
        }
      }
    });

    it('reads back identically through kubectl\'s YAML parser (skipped without kubectl)', function () {
      const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
      if (probe.error || probe.status !== 0) return this.skip();
      // `annotate --local` parses files without contacting a cluster; compare what it read with
      // what we meant, so no value changes type or spelling in Go's YAML dialect.
      const files = [...CRD_DIRS.map((d) => path.join(ROOT, d)), ...yamlFiles(EXAMPLES)];
      for (const f of files) {
        const r = spawnSync('kubectl', ['annotate', '--local', '-f', f, 'space.io/check=1', '-o', 'json'], { encoding: 'utf8', env: { ...process.env, KUBECONFIG: '/dev/null' } });
        assert.equal(r.status, 0, `kubectl could not read ${f}: ${r.stderr}`);
        // One pretty-printed JSON object per document, each closed by a `}` in column 0.
        const got = r.stdout.split(/(?<=^\})\n/m).filter((x) => x.trim()).map((x) => JSON.parse(x) as KubeObject);
        const want = (fs.statSync(f).isDirectory() ? fs.readdirSync(f).sort().map((x) => path.join(f, x)) : [f]).flatMap((x) => readDocs(x).map((d) => d.obj));
        assert.equal(got.length, want.length, f);
        got.forEach((g, i) => {
          const annotations = { ...(g.metadata.annotations ?? {}) };
          delete annotations['space.io/check'];
          const md = { ...g.metadata, annotations };
          if (!Object.keys(annotations).length) delete (md as { annotations?: unknown }).annotations;
          assert.deepEqual({ ...g, metadata: md }, want[i], `${f} document ${i + 1}`);
        });
      }
    });
  });

  describe('schemas', () => {
    for (const kind of SPACE_KINDS) {
      it(`${kind}: structural (typed nodes, value-only junctors, no $ref, bare metadata, valid defaults)`, () => {
        const s = schemaFor(kind);
        assert.ok(!JSON.stringify(s).includes('"$ref"'), 'no $ref');
        assert.deepEqual(s.properties?.metadata, { type: 'object' }, 'metadata is left to the API server');
        assert.deepEqual(structuralProblems(s, ''), []);
      });

      it(`${kind}: every CEL rule has an implementation in the validator`, () => {
        for (const r of rulesIn(schemaFor(kind))) assert.ok(IMPLEMENTED_RULES.includes(r.rule), `${r.path}: ${r.rule}`);
      });

      it(`${kind}: a fully populated typed object validates, and its fields are exactly the schema's`, () => {
        const objs = FULL[kind];
        for (const o of objs) assert.deepEqual(messages(kind, o), [], o.metadata.name);
        const inObjects = new Set(objs.flatMap((o) => valuePaths(o)));
        const inSchema = new Set(schemaPaths(schemaFor(kind)));
        assert.deepEqual([...inSchema].filter((p) => !inObjects.has(p)).sort(), [], 'in the schema but not in types.ts (or not set in the test object)');
        assert.deepEqual([...inObjects].filter((p) => !inSchema.has(p)).sort(), [], 'in types.ts but not in the schema');
      });
    }

    it('uses only the CEL rules this project implements', () => {
      const used = new Set(SPACE_KINDS.flatMap((k) => rulesIn(schemaFor(k)).map((r) => r.rule)));
      assert.deepEqual([...used].sort(), [...IMPLEMENTED_RULES].sort());
    });

    it('the CRD embeds exactly the schema the validator uses', () => {
      for (const k of SPACE_KINDS) assert.equal(crdFor(k).spec.versions[0]!.schema.openAPIV3Schema, schemaFor(k));
    });
  });

  describe('example manifests', () => {
    const docs = yamlFiles(EXAMPLES).flatMap(readDocs);
    const space = docs.filter((d) => isSpaceKind(d.obj.kind));
    const ofKind = (k: string) => docs.filter((d) => d.obj.kind === k).map((d) => d.obj);

    it('cover every kind, every view protocol and every required example file', () => {
      for (const f of ['capsule-inline', 'capsule-configmap', 'capsule-volume', 'capsule-snapshot-clone', 'view-fuse', 'view-nfs', 'view-nvme', 'view-csi', 'zones']) {
        assert.ok(fs.existsSync(path.join(EXAMPLES, `${f}.yaml`)), `${f}.yaml`);
      }
      assert.deepEqual(new Set(space.map((d) => d.obj.kind)), new Set(SPACE_KINDS));
      assert.deepEqual(new Set(ofKind('CapsuleView').map((v) => (v.spec as CapsuleViewSpec).protocol)), new Set(['fuse', 'nfs', 'nvme', 'csi']));
      assert.equal(ofKind('FederationZone').length, 2);
    });

    for (const d of yamlFiles(EXAMPLES).flatMap(readDocs)) {
      it(`${d.file}: ${d.obj.kind} ${d.obj.metadata?.name} is admissible`, () => {
        assert.ok(d.obj.apiVersion && d.obj.kind, 'every document is a Kubernetes object');
        if (!isSpaceKind(d.obj.kind)) {
          assert.equal(d.obj.apiVersion, 'v1', 'other objects in the examples are core objects');
          return;
        }
        assert.deepEqual(messages(d.obj.kind, d.obj), []);
        if (d.obj.kind !== 'FederationZone') assert.equal(d.obj.metadata.namespace, 'default');
      });
    }

    it('are consistent with each other', () => {
      const capsules = ofKind('Capsule') as Capsule[];
      const names = new Set(capsules.map((c) => c.metadata.name));
      const hello = capsules.find((c) => c.metadata.name === 'hello');
      assert.ok(hello?.spec.source.inline, 'capsule-inline.yaml defines the inline capsule hello');

      // Every view names an example capsule; file views show hello, the NVMe view the block volume.
      for (const v of ofKind('CapsuleView') as CapsuleView[]) {
        assert.ok(names.has(v.spec.capsuleRef.name), `${v.metadata.name} views a capsule of the examples`);
        assert.equal(v.spec.capsuleRef.name, v.spec.protocol === 'nvme' ? 'scratch' : 'hello', `${v.metadata.name} views the right example`);
      }
      const fuse = (ofKind('CapsuleView') as CapsuleView[]).find((v) => v.spec.protocol === 'fuse');
      assert.equal(fuse?.spec.options?.mountPath, '/tmp/space-views/hello');

      const snap = capsules.find((c) => c.spec.source.snapshot);
      assert.deepEqual(snap?.spec.source.snapshot, { capsule: 'hello', version: 1 });
      const configMaps = new Set(ofKind('ConfigMap').map((c) => c.metadata.name));
      for (const c of capsules) {
        const s = c.spec.source;
        if (s.configMapRef) assert.ok(configMaps.has(s.configMapRef.name), `${c.metadata.name}: ConfigMap ${s.configMapRef.name} is in the examples`);
        if (s.clone) assert.ok(names.has(s.clone.capsule));
        if (s.snapshot) assert.ok(names.has(s.snapshot.capsule));
        // The store accepts every policy the examples write (it also checks what the schema cannot).
        assert.doesNotThrow(() => validatePolicy(c.spec.policy, `${c.metadata.name}.spec.policy`));
      }
      assert.equal(quantityToBytes(capsules.find((c) => c.spec.source.empty)!.spec.source.empty!.size), 2 ** 30);

      const zones = new Map((ofKind('FederationZone') as FederationZone[]).map((z) => [z.spec.zone, z.spec]));
      assert.deepEqual(zones.get('zone-a'), { zone: 'zone-a', region: 'eu-west-1', endpoint: '127.0.0.1:7443', latencyClass: 'local' });
      assert.equal(zones.get('zone-b')?.region, 'eu-central-1');
      const allowed = hello.spec.policy?.sovereignty?.allowedRegions ?? [];
      for (const z of zones.values()) assert.ok(allowed.includes(z.region!), `zone ${z.zone}'s region is allowed by hello's sovereignty rule`);
      for (const t of hello.spec.policy?.federation?.targets ?? []) {
        assert.ok(zones.has(t.zone), `federation target ${t.zone} is a zone in zones.yaml`);
        assert.equal(t.region, zones.get(t.zone)!.region);
      }
    });
  });

  describe('invalid example manifests', () => {
    const files = yamlFiles(INVALID);

    it('include a bad protocol, two sources, a missing capsuleRef and a bad quantity', () => {
      const expectations = files.map((f) => fs.readFileSync(f, 'utf8')).join('\n');
      for (const needle of ['spec.protocol: Unsupported value: "smb"', 'one and only one schema (oneOf)', 'spec.capsuleRef: Required value', 'spec.source.empty.size: Invalid value: "1GB"']) {
        assert.match(expectations, new RegExp(`^# expect: .*${needle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'), needle);
      }
    });

    for (const f of files) {
      it(`${path.relative(ROOT, f)} is rejected with the expected messages`, () => {
        const [doc, ...rest] = readDocs(f);
        assert.equal(rest.length, 0, 'one document per invalid example');
        const expected = [...doc!.text.matchAll(/^# expect: (.*)$/gm)].map((m) => m[1]!);
        assert.ok(expected.length > 0, 'the file says what it expects with "# expect: <message prefix>" lines');
        assert.ok(isSpaceKind(doc!.obj.kind));
        const got = messages(doc!.obj.kind, doc!.obj);
        // Each expectation matches one message and no message goes unexpected.
        assert.equal(got.length, expected.length, `got:\n${got.join('\n')}`);
        for (const e of expected) assert.ok(got.some((g) => g.startsWith(e)), `expected "${e}" in:\n${got.join('\n')}`);
      });
    }
  });

  describe('defaults', () => {
    it('fill in encoding, path and deletionPolicy of a Capsule without touching what is set', () => {
      const { object, issues } = validateObject<Capsule>('Capsule', {
        apiVersion: SPACE_API_VERSION, kind: 'Capsule', metadata: { name: 'd' },
        spec: { source: { inline: { data: 'x' } }, policy: { encryption: { keyRef: 'k' } } },
      });
      assert.deepEqual(issues, []);
      assert.deepEqual(object.spec.source.inline, { data: 'x', encoding: 'utf8', path: 'content' });
      assert.equal(object.spec.deletionPolicy, 'Delete');
      assert.deepEqual(object.spec.policy?.encryption, { keyRef: 'k', enabled: true, algorithm: 'aes-256-gcm' });
      assert.equal(object.spec.policy?.compression, undefined, 'policy fields without a schema default keep the store default');
      assert.equal(object.status, undefined);
    });

    it('fill in readOnly of a view and latencyClass of a zone', () => {
      const v = validateObject<CapsuleView>('CapsuleView', { apiVersion: SPACE_API_VERSION, kind: 'CapsuleView', metadata: { name: 'v' }, spec: { capsuleRef: { name: 'hello' }, protocol: 'csi' } });
      assert.deepEqual(v.issues, []);
      assert.equal(v.object.spec.readOnly, false);
      const z = validateObject<FederationZone>('FederationZone', { apiVersion: SPACE_API_VERSION, kind: 'FederationZone', metadata: { name: 'z' }, spec: { zone: 'z', endpoint: 'z.example:7443' } });
      assert.deepEqual(z.issues, []);
      assert.equal(z.object.spec.latencyClass, 'regional');
    });

    it('do not modify the input, and null fields are dropped before defaulting', () => {
      const input = { apiVersion: SPACE_API_VERSION, kind: 'CapsuleView', metadata: { name: 'v' }, spec: { capsuleRef: { name: 'hello' }, protocol: 'fuse', readOnly: null, options: null } };
      const before = JSON.stringify(input);
      const { object, issues } = validateObject<CapsuleView>('CapsuleView', input);
      assert.deepEqual(issues, []);
      assert.equal(JSON.stringify(input), before);
      assert.equal(object.spec.readOnly, false);
      assert.equal('options' in object.spec, false);
    });
  });

  describe('updates', () => {
    const base = (): Capsule => ({
      apiVersion: SPACE_API_VERSION, kind: 'Capsule', metadata: { name: 'hello', namespace: 'default' },
      spec: { source: { inline: { data: 'v1' } }, policy: { compression: 'gzip', encryption: { keyRef: 'kek' } } },
    });
    const stored = validateObject<Capsule>('Capsule', base()).object;

    it('allow changing the policy but not the source', () => {
      const ok = base();
      ok.spec.policy!.compression = 'brotli';
      ok.spec.deletionPolicy = 'Retain';
      assert.deepEqual(messages('Capsule', ok, stored), []);

      const changed = base();
      changed.spec.source = { inline: { data: 'v2' } };
      assert.deepEqual(messages('Capsule', changed, stored), ['spec.source: Invalid value: "object": spec.source is immutable']);
      const other = base();
      other.spec.source = { clone: { capsule: 'x' } };
      assert.deepEqual(messages('Capsule', other, stored), ['spec.source: Invalid value: "object": spec.source is immutable']);
    });

    it('treat a default written out as no change', () => {
      const same = base();
      same.spec.source = { inline: { data: 'v1', encoding: 'utf8', path: 'content' } };
      assert.deepEqual(messages('Capsule', same, stored), []);
      assert.deepEqual(messages('Capsule', stored, base()), [], 'an old object stored without defaults');
    });

    it('reject changing, adding or removing encryption', () => {
      const changed = base();
      changed.spec.policy!.encryption = { keyRef: 'other' };
      assert.deepEqual(messages('Capsule', changed, stored), ['spec.policy.encryption: Invalid value: "object": spec.policy.encryption is immutable']);

      const removed = base();
      delete removed.spec.policy!.encryption;
      assert.deepEqual(messages('Capsule', removed, stored), ['spec: Invalid value: "object": spec.policy.encryption cannot be added or removed after creation']);
      const noPolicy = base();
      delete noPolicy.spec.policy;
      assert.deepEqual(messages('Capsule', noPolicy, stored), ['spec: Invalid value: "object": spec.policy.encryption cannot be added or removed after creation']);

      const plain = base();
      delete plain.spec.policy!.encryption;
      const added = base();
      assert.deepEqual(messages('Capsule', added, plain), ['spec: Invalid value: "object": spec.policy.encryption cannot be added or removed after creation']);
    });

    it('reject changing a view\'s protocol, allow the rest', () => {
      const old = { ...fullView, spec: { ...fullView.spec } };
      const next = { ...fullView, spec: { ...fullView.spec, protocol: 'nfs' as const, readOnly: false } };
      assert.deepEqual(messages('CapsuleView', next, old), ['spec.protocol: Invalid value: "string": spec.protocol is immutable']);
      const fine = { ...fullView, spec: { ...fullView.spec, readOnly: false, capsuleRef: { name: 'other' } } };
      assert.deepEqual(messages('CapsuleView', fine, old), []);
      assert.deepEqual(messages('CapsuleView', next), [], 'no transition rule on create');
    });
  });

  describe('validator', () => {
    const view = (spec: unknown, extra: Record<string, unknown> = {}) => ({ apiVersion: SPACE_API_VERSION, kind: 'CapsuleView', metadata: { name: 'v' }, spec, ...extra });

    it('reports types, enums, lengths, ranges and patterns like the API server', () => {
      assert.deepEqual(messages('CapsuleView', view({ capsuleRef: { name: 7 }, protocol: 'smb', readOnly: 'yes', options: { mountPath: 'relative', allowedClients: 'all' } })), [
        'spec.capsuleRef.name: Invalid value: "integer": spec.capsuleRef.name in body must be of type string: "integer"',
        'spec.protocol: Unsupported value: "smb": supported values: "fuse", "nfs", "nvme", "csi"',
        'spec.readOnly: Invalid value: "string": spec.readOnly in body must be of type boolean: "string"',
        'spec.options.mountPath: Invalid value: "relative": spec.options.mountPath in body should match \'^/\'',
        'spec.options.allowedClients: Invalid value: "string": spec.options.allowedClients in body must be of type array: "string"',
      ]);
      const cap = (spec: unknown) => ({ apiVersion: SPACE_API_VERSION, kind: 'Capsule', metadata: { name: 'c' }, spec });
      assert.deepEqual(messages('Capsule', cap({ source: { snapshot: { capsule: 'a', version: 0 } }, policy: { federation: { targets: [{ zone: 'z', priority: 1001 }, { zone: 'z' }] } } })), [
        'spec.source.snapshot.version: Invalid value: 0: spec.source.snapshot.version in body should be greater than or equal to 1',
        'spec.policy.federation.targets[0].priority: Invalid value: 1001: spec.policy.federation.targets[0].priority in body should be less than or equal to 1000',
        'spec.policy.federation.targets[1]: Duplicate value: {"zone":"z"}',
      ]);
      assert.deepEqual(messages('Capsule', cap({ source: { snapshot: { capsule: 'a', version: 1.5 } } })), [
        'spec.source.snapshot.version: Invalid value: "number": spec.source.snapshot.version in body must be of type integer: "number"',
      ]);
      assert.deepEqual(messages('Capsule', cap({ source: { configMapRef: { name: 'x'.repeat(254) } } })), ['spec.source.configMapRef.name: Too long: may not be more than 253 bytes']);
      assert.deepEqual(messages('Capsule', cap({ source: { configMapRef: {} } })), ['spec.source.configMapRef.name: Required value']);
      assert.deepEqual(messages('Capsule', cap({})), ['spec.source: Required value']);
      assert.deepEqual(messages('Capsule', { apiVersion: SPACE_API_VERSION, kind: 'Capsule', metadata: { name: 'c' } }), ['spec: Required value']);
    });

    it('takes segmentSize as an integer or a size string', () => {
      const cap = (segmentSize: unknown) => ({ apiVersion: SPACE_API_VERSION, kind: 'Capsule', metadata: { name: 'c' }, spec: { source: { clone: { capsule: 'a' } }, policy: { segmentSize } } });
      assert.deepEqual(messages('Capsule', cap(65536)), []);
      assert.deepEqual(messages('Capsule', cap('64KiB')), []);
      assert.deepEqual(messages('Capsule', cap('4 MB!')), [`spec.policy.segmentSize: Invalid value: "4 MB!": spec.policy.segmentSize in body should match '^[0-9]+([kKmMgG]([iI]?[bB])?|[bB])?$'`]);
      assert.deepEqual(messages('Capsule', cap(true)), ['spec.policy.segmentSize: Invalid value: "boolean": spec.policy.segmentSize in body must be of type integer or string: "boolean"']);
    });

    it('checks status fields too: date-times, digests, condition lists keyed by type', () => {
      const status = {
        phase: 'Ready', digest: 'md5:abc',
        conditions: [
          { type: 'Ready', status: 'True', reason: 'Ok', message: '', lastTransitionTime: '2025-02-30T00:00:00Z' },
          { type: 'Ready', status: 'Maybe', reason: 'Ok', message: '', lastTransitionTime: T0 },
          { type: 'Replicated', status: 'False', message: 'x', lastTransitionTime: T0 },
        ],
      };
      const got = messages('Capsule', { apiVersion: SPACE_API_VERSION, kind: 'Capsule', metadata: { name: 'c' }, spec: { source: { clone: { capsule: 'a' } } }, status });
      assert.deepEqual(got, [
        `status.digest: Invalid value: "md5:abc": status.digest in body should match '^sha256:[0-9a-f]{64}$'`,
        'status.conditions[0].lastTransitionTime: Invalid value: "2025-02-30T00:00:00Z": status.conditions[0].lastTransitionTime in body must be of type date-time: "2025-02-30T00:00:00Z"',
        'status.conditions[1]: Duplicate value: {"type":"Ready"}',
        'status.conditions[1].status: Unsupported value: "Maybe": supported values: "True", "False", "Unknown"',
        'status.conditions[2].reason: Required value',
      ]);
    });

    it('rejects unknown fields anywhere, including top level, and removes them from the result', () => {
      const r = validateObject('FederationZone', { apiVersion: SPACE_API_VERSION, kind: 'FederationZone', metadata: { name: 'z', labels: { a: 'b' } }, spec: { zone: 'z', endpoint: 'h:1', colour: 'red' }, extra: 1 });
      assert.deepEqual(r.issues.map(formatIssue), ['spec.colour: unknown field "spec.colour"', 'extra: unknown field "extra"']);
      assert.equal('colour' in (r.object.spec as object), false);
      assert.deepEqual(r.object.metadata.labels, { a: 'b' }, 'metadata is not pruned');
    });

    it('checks apiVersion, kind and the object name', () => {
      assert.deepEqual(messages('FederationZone', { apiVersion: 'space.io/v1', kind: 'Zone', metadata: { name: 'Zone_A' }, spec: { zone: 'a', endpoint: 'h:1' } }), [
        'apiVersion: Invalid value: "space.io/v1": must be space.io/v1alpha1',
        'kind: Invalid value: "Zone": must be FederationZone',
        `metadata.name: Invalid value: "Zone_A": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`,
      ]);
      assert.deepEqual(messages('FederationZone', { apiVersion: SPACE_API_VERSION, kind: 'FederationZone', metadata: {}, spec: { zone: 'a', endpoint: 'h:1' } }), [
        'metadata.name: Required value: name or generateName is required',
      ]);
      assert.deepEqual(messages('Capsule', 'nope'), ['Invalid value: "string": a Capsule must be an object']);
    });

    it('accepts host:port endpoints with names, IPv4 and bracketed IPv6, ports 1..65535', () => {
      const zone = (endpoint: string) => messages('FederationZone', { apiVersion: SPACE_API_VERSION, kind: 'FederationZone', metadata: { name: 'z' }, spec: { zone: 'z', endpoint } });
      for (const ok of ['127.0.0.1:7443', 'bridge.example.com:443', '[fd00::1]:7443', 'h:65535']) assert.deepEqual(zone(ok), [], ok);
      for (const bad of ['127.0.0.1', 'h:0', 'h:65536', ':7443', 'http://h:1']) assert.equal(zone(bad).length, 1, bad);
    });
  });

  describe('admission', () => {
    it('returns the defaulted object or throws 422 Invalid with every message', () => {
      const admit = admissionFor('CapsuleView');
      const ok = admit({ apiVersion: SPACE_API_VERSION, kind: 'CapsuleView', metadata: { name: 'v' }, spec: { capsuleRef: { name: 'hello' }, protocol: 'csi' } } as KubeObject);
      assert.equal((ok.spec as CapsuleViewSpec).readOnly, false);
      assert.throws(
        () => admit({ apiVersion: SPACE_API_VERSION, kind: 'CapsuleView', metadata: { name: 'bad' }, spec: { protocol: 'smb' } } as KubeObject),
        (e: unknown) =>
          e instanceof ApiError && e.code === 422 && e.reason === 'Invalid' &&
          e.message === 'CapsuleView.space.io "bad" is invalid: [spec.capsuleRef: Required value, spec.protocol: Unsupported value: "smb": supported values: "fuse", "nfs", "nvme", "csi"]',
      );
      assert.throws(
        () => admit({ apiVersion: SPACE_API_VERSION, kind: 'CapsuleView', metadata: { name: 'one' }, spec: { protocol: 'nfs' } } as KubeObject),
        { message: 'CapsuleView.space.io "one" is invalid: spec.capsuleRef: Required value' },
      );
    });

    it('is found by resource type for Space kinds only', () => {
      assert.equal(typeof admissionForType(CAPSULES), 'function');
      assert.equal(admissionForType(CONFIGMAPS), undefined);
    });
  });

  describe('type helpers', () => {
    it('sourceKind names the one source set', () => {
      for (const k of CAPSULE_SOURCE_KINDS) assert.equal(sourceKind({ [k]: SOURCES[k] }), k);
      assert.throws(() => sourceKind({}), /exactly one/);
      assert.throws(() => sourceKind({ clone: { capsule: 'a' }, empty: { size: '1' } }), /found clone, empty/);
    });

    it('quantityToBytes reads the quantities the schema admits', () => {
      assert.equal(quantityToBytes('1Gi'), 1073741824);
      assert.equal(quantityToBytes('500M'), 500e6);
      assert.equal(quantityToBytes('1.5Ki'), 1536);
      assert.equal(quantityToBytes('4096'), 4096);
      assert.equal(quantityToBytes('0.1'), 1, 'rounded up to a whole byte');
      assert.equal(quantityToBytes('1GB'), null);
      assert.equal(quantityToBytes('-1Gi'), null);
    });

    it('endpointUrl spells view endpoints one way', () => {
      assert.equal(endpointUrl({ protocol: 'nvme', address: '10.0.0.1', port: 4420, nqn: 'nqn.2024-01.io.space:x' }), 'nvme://10.0.0.1:4420/nqn.2024-01.io.space:x');
      assert.equal(endpointUrl({ protocol: 'nfs', address: 'host', port: 2049, exportPath: '/export' }), 'nfs://host:2049/export');
      assert.equal(endpointUrl({ protocol: 'fuse', mountPath: '/mnt/x' }), 'fuse:///mnt/x');
      assert.equal(endpointUrl({ protocol: 'nvme', address: 'fd00::1', port: 4420, nqn: 'nqn.x' }), 'nvme://[fd00::1]:4420/nqn.x');
    });
  });
});
