/**
 * The OpenAPI v3 schemas of the space.io/v1alpha1 kinds — the single source of truth for the CRD
 * files (operator/api/generate-crds.ts writes crds/ and charts/space/crds/ from here) and for the
 * admission validator of standalone mode (./validate.ts). Edit here, then regenerate.
 *
 * The schemas are structural (what apiextensions.k8s.io/v1 demands): every node has a type (or
 * is int-or-string), logical junctors only carry value validations, no $ref, nothing preserved
 * unknown. Unknown fields are therefore pruned by a real API server (or rejected under
 * kubectl's strict field validation), and the validator rejects them.
 *
 * Rules a schema cannot state without CEL are CEL rules (x-kubernetes-validations). Only the exact
 * rule strings implemented in validate.ts may be used; generation fails on any other.
 */
import type { SpaceKind } from './types.js';
import {
  CAPSULE_PHASES, CONDITION_STATUSES, COMPRESSIONS, DELETION_POLICIES, INLINE_ENCODINGS, LATENCY_CLASSES,
  QUANTITY_PATTERN, VIEW_PHASES, VIEW_PROTOCOLS, ZONE_REPLICA_STATES, CAPSULE_SOURCE_KINDS, DEFAULTS,
} from './types.js';
import { CAPSULES, CAPSULE_VIEWS, FEDERATION_ZONES, SPACE_GROUP, SPACE_VERSION, type ResourceType } from '../runtime/object-api.js';

export interface ValidationRule {
  rule: string;
  message: string;
}

/** The subset of JSONSchemaProps (apiextensions.k8s.io/v1) that Space's schemas use. */
export interface JSONSchemaProps {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, JSONSchemaProps>;
  required?: string[];
  items?: JSONSchemaProps;
  additionalProperties?: JSONSchemaProps;
  enum?: (string | number | boolean)[];
  pattern?: string;
  format?: 'date-time';
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  default?: unknown;
  nullable?: boolean;
  oneOf?: JSONSchemaProps[];
  anyOf?: JSONSchemaProps[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-validations'?: ValidationRule[];
}

// ---------------------------------------------------------------------------------------------
// Small builders: they keep every node typed and described, which structural schemas require.

type Extra = Omit<JSONSchemaProps, 'type' | 'description' | 'properties' | 'required' | 'items'>;

const str = (description: string, extra: Extra = {}): JSONSchemaProps => ({ type: 'string', description, ...extra });
const int = (description: string, extra: Extra = {}): JSONSchemaProps => ({ type: 'integer', description, ...extra });
const num = (description: string, extra: Extra = {}): JSONSchemaProps => ({ type: 'number', description, ...extra });
const bool = (description: string, extra: Extra = {}): JSONSchemaProps => ({ type: 'boolean', description, ...extra });
const oneOfStr = (description: string, values: readonly string[], extra: Extra = {}): JSONSchemaProps =>
  str(description, { enum: [...values], ...extra });
const obj = (description: string, properties: Record<string, JSONSchemaProps>, required: string[] = [], extra: Extra = {}): JSONSchemaProps => ({
  type: 'object',
  description,
  properties,
  ...(required.length ? { required } : {}),
  ...extra,
});
const arr = (description: string, items: JSONSchemaProps, extra: Extra = {}): JSONSchemaProps => ({ type: 'array', description, items, ...extra });
const dateTime = (description: string): JSONSchemaProps => str(description, { format: 'date-time' });

// Patterns are written in the syntax shared by RE2 (the API server) and ECMAScript (validate.ts).
/** RFC 1123 subdomain: names of Kubernetes objects. */
export const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
/** RFC 1123 label: zone names. */
export const DNS_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
/** Region names, as capsule/policy.ts accepts them. */
const REGION_PATTERN = '^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$';
/** host:port with a port 1..65535; the host is a name, an IPv4 address or a bracketed IPv6 address. */
export const HOST_PORT_PATTERN =
  '^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$';
/** Byte count with the units capsule/policy.ts parseSize() reads (k, kb, KiB, M, MB, MiB, G, ...). */
const SIZE_PATTERN = '^[0-9]+([kKmMgG]([iI]?[bB])?|[bB])?$';
/** A relative path inside a capsule: no leading slash, no empty segments. */
const FILE_PATH_PATTERN = '^[^/]+(/[^/]+)*$';
const CIDR_OR_HOST_PATTERN = '^[A-Za-z0-9*.:_-]+(/[0-9]{1,3})?$';

const nameRef = (description: string): JSONSchemaProps =>
  obj(description, { name: str('Name of the object.', { minLength: 1, maxLength: 253, pattern: DNS_SUBDOMAIN_PATTERN }) }, ['name']);
const capsuleName = (description: string): JSONSchemaProps => str(description, { minLength: 1, maxLength: 253, pattern: DNS_SUBDOMAIN_PATTERN });

/** Transition rule: the field may not change once set. Implemented in validate.ts. */
const immutable = (message: string): Extra => ({ 'x-kubernetes-validations': [{ rule: 'self == oldSelf', message }] });

const conditions = (): JSONSchemaProps =>
  arr(
    'Latest observations of the object\'s state, one entry per condition type (Ready summarizes the rest).',
    obj(
      'One aspect of the object\'s state, in the standard Kubernetes condition shape.',
      {
        type: str('Condition type in CamelCase, e.g. Ready.', { minLength: 1, maxLength: 316, pattern: '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$' }),
        status: oneOfStr('Whether the condition holds: True, False or Unknown.', CONDITION_STATUSES),
        reason: str('Machine-readable CamelCase cause of the last transition.', { minLength: 1, maxLength: 1024, pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$' }),
        message: str('Human-readable details of the last transition; may be empty.', { maxLength: 32768 }),
        lastTransitionTime: dateTime('When status last changed from one value to another.'),
        observedGeneration: int('metadata.generation the condition was computed from.', { minimum: 0 }),
      },
      ['type', 'status', 'reason', 'message', 'lastTransitionTime'],
    ),
    { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'], maxItems: 32 },
  );

const observedGeneration = (): JSONSchemaProps => int('The metadata.generation the controller last acted on.', { minimum: 0 });

/** The top of every kind: apiVersion, kind, metadata (left to the API server), spec, status. */
function root(description: string, spec: JSONSchemaProps, status: JSONSchemaProps): JSONSchemaProps {
  return obj(description, {
    apiVersion: str('Versioned schema of this object; space.io/v1alpha1.'),
    kind: str('Kind of this object.'),
    // Structural schemas may not describe metadata beyond name constraints; the API server owns it.
    metadata: { type: 'object' },
    spec,
    status,
  }, ['spec']);
}

// ---------------------------------------------------------------------------------------------
// Capsule

const SOURCE_LIST = CAPSULE_SOURCE_KINDS.join(', ');

const capsuleSource = obj(
  `Where the capsule's first version comes from. Set exactly one of: ${SOURCE_LIST}. ` +
    'Immutable after creation (enforced by a CEL rule; on API servers without CEL the operator rejects the change).',
  {
    inline: obj(
      'A single file whose content is written in the manifest.',
      {
        data: str('File content: text, or base64 when encoding is base64. At most 1 MiB; use a ConfigMap, a Secret or spacectl for more.', { maxLength: 1048576 }),
        encoding: oneOfStr('How data is written: utf8 text or base64.', INLINE_ENCODINGS, { default: DEFAULTS.inlineEncoding }),
        path: str('Path of the file inside the capsule.', { default: DEFAULTS.inlinePath, minLength: 1, maxLength: 4096, pattern: FILE_PATH_PATTERN }),
      },
      ['data'],
    ),
    configMapRef: nameRef('A ConfigMap in the capsule\'s namespace; each key becomes a file of that name (binaryData included).'),
    secretRef: nameRef('A Secret in the capsule\'s namespace; each key becomes a file of that name, holding the decoded value.'),
    snapshot: obj(
      'A new capsule sharing the segments of a frozen version of another capsule.',
      {
        capsule: capsuleName('Name of the Capsule, in the same namespace.'),
        version: int('The snapshot version to clone; versions are numbered from 1.', { minimum: 1 }),
      },
      ['capsule', 'version'],
    ),
    clone: obj('A new capsule sharing the segments of another capsule\'s current head.', { capsule: capsuleName('Name of the Capsule, in the same namespace.') }, ['capsule']),
    empty: obj(
      'A volume: one sparse file named content of the given size.',
      { size: str('Size as a Kubernetes quantity without sign or exponent, e.g. 1Gi or 500M.', { minLength: 1, maxLength: 64, pattern: QUANTITY_PATTERN }) },
      ['size'],
    ),
  },
  [],
  {
    // oneOf of bare `required` lists is valid in a structural schema and enforced by every API
    // server, with or without CEL.
    oneOf: CAPSULE_SOURCE_KINDS.map((k) => ({ required: [k] })),
    ...immutable('spec.source is immutable'),
  },
);

const capsulePolicy = obj(
  'What the capsule\'s segments go through on their way to disk and where they may live. Same fields as a policy file for spacectl; ' +
    'omitted fields take the store\'s defaults. The operator applies the rules a schema cannot express (segmentSize a power of two, ' +
    'federation regions within sovereignty.allowedRegions) and reports violations in the Ready condition.',
  {
    compression: oneOfStr('Segment compression codec.', COMPRESSIONS),
    encryption: obj(
      'Encryption at rest with a per-capsule data key wrapped by a key-encryption key. Immutable after creation, including whether it is present ' +
        '(CEL rules; on API servers without CEL the operator rejects the change).',
      {
        enabled: bool('Encrypt the capsule\'s segments; an encryption block means yes unless this says otherwise.', { default: DEFAULTS.encryptionEnabled }),
        algorithm: oneOfStr('Cipher for segments.', ['aes-256-gcm'], { default: DEFAULTS.encryptionAlgorithm }),
        keyRef: str('Name of the Secret, in the capsule\'s namespace, holding the key-encryption key.', { minLength: 1, maxLength: 253, pattern: DNS_SUBDOMAIN_PATTERN }),
      },
      [],
      immutable('spec.policy.encryption is immutable'),
    ),
    segmentSize: {
      description: 'Size of the fixed segments files are split into: bytes or a size such as 1MiB; a power of two from 4KiB to 64MiB.',
      'x-kubernetes-int-or-string': true,
      anyOf: [{ type: 'integer' }, { type: 'string' }],
      // No minimum/maximum here: the range and the power-of-two rule apply to strings too, so
      // the operator checks both (validatePolicy) rather than the schema checking half of it.
      pattern: SIZE_PATTERN,
    },
    redundancy: obj('Copies kept within the zone.', { replicas: int('Number of replicas, 1 to 5.', { minimum: 1, maximum: 5 }) }),
    sovereignty: obj('Where the capsule\'s data may be stored.', {
      allowedRegions: arr('Regions the data may be stored in; empty means anywhere.', str('A region name, e.g. eu-west-1.', { maxLength: 63, pattern: REGION_PATTERN }), {
        maxItems: 64,
      }),
    }),
    federation: obj('Replication of the capsule\'s versions to other zones.', {
      targets: arr(
        'Zones that receive every version, each at most once.',
        obj(
          'One federation target.',
          {
            zone: str('Zone name (spec.zone of a FederationZone).', { minLength: 1, maxLength: 63, pattern: DNS_LABEL_PATTERN }),
            region: str('Region of the zone; must be allowed by sovereignty.', { maxLength: 63, pattern: REGION_PATTERN }),
            priority: int('Replication order: lower goes first.', { minimum: 0, maximum: 1000 }),
          },
          ['zone'],
        ),
        { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['zone'], maxItems: 32 },
      ),
    }),
  },
);

const capsuleSpec = obj(
  'Desired state of a Capsule.',
  {
    source: capsuleSource,
    policy: capsulePolicy,
    deletionPolicy: oneOfStr('What happens to the stored data when the Capsule is deleted: Delete removes it, Retain keeps it in the store.', DELETION_POLICIES, {
      default: DEFAULTS.deletionPolicy,
    }),
    size: str('Volume capsules (source.empty) only: the size of the content file as a quantity, e.g. 2Gi. Raising it grows the volume (how CSI expansion works); it can never shrink.', { minLength: 1, maxLength: 64, pattern: QUANTITY_PATTERN }),
  },
  ['source'],
  {
    // `self == oldSelf` on spec.policy.encryption only runs when both versions have the field;
    // this rule closes the gap of adding or removing the block after creation.
    'x-kubernetes-validations': [
      {
        rule: '(has(self.policy) && has(self.policy.encryption)) == (has(oldSelf.policy) && has(oldSelf.policy.encryption))',
        message: 'spec.policy.encryption cannot be added or removed after creation',
      },
    ],
  },
);

const capsuleStatus = obj('Observed state of a Capsule, written by the operator.', {
  phase: oneOfStr('Lifecycle phase.', CAPSULE_PHASES),
  capsuleId: str('Id of the capsule in the store.'),
  gateway: str('Gateway that owns the capsule\'s head.'),
  version: int('Current head version.', { minimum: 0 }),
  size: int('Logical size of all files, in bytes.', { minimum: 0 }),
  storedSize: int('Bytes stored after deduplication, compression and encryption.', { minimum: 0 }),
  digest: str('Digest of the current version, sha256:<hex>.', { pattern: '^sha256:[0-9a-f]{64}$' }),
  files: int('Number of files in the current version.', { minimum: 0 }),
  zones: arr(
    'Replication state per federation target.',
    obj(
      'Replication state of one zone.',
      {
        zone: str('Zone name.', { minLength: 1, maxLength: 63 }),
        state: oneOfStr('Whether the zone holds the current version.', ZONE_REPLICA_STATES),
        lastSyncTime: dateTime('When the zone last confirmed it holds the current version.'),
      },
      ['zone', 'state'],
    ),
    { 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['zone'] },
  ),
  observedGeneration: observedGeneration(),
  conditions: conditions(),
});

// ---------------------------------------------------------------------------------------------
// CapsuleView

const viewSpec = obj(
  'Desired state of a CapsuleView.',
  {
    capsuleRef: nameRef('The Capsule to project, in the same namespace.'),
    protocol: oneOfStr('Protocol the capsule is served over. Immutable after creation.', VIEW_PROTOCOLS, immutable('spec.protocol is immutable')),
    readOnly: bool('Serve the capsule read-only.', { default: DEFAULTS.readOnly }),
    options: obj('Protocol-specific settings; fields for other protocols are ignored.', {
      mountPath: str('fuse: absolute directory to mount the capsule on.', { maxLength: 4096, pattern: '^/' }),
      listen: str('nfs, nvme: host:port to listen on; the gateway\'s default when omitted.', { maxLength: 261, pattern: HOST_PORT_PATTERN }),
      allowedClients: arr('nfs: clients allowed to mount, as CIDRs or host names; everyone when omitted.', str('A CIDR such as 10.0.0.0/8, or a host name (may start with *.).', {
        minLength: 1,
        maxLength: 253,
        pattern: CIDR_OR_HOST_PATTERN,
      }), { maxItems: 64 }),
      nqn: str('nvme: NVMe Qualified Name of the subsystem; generated from the capsule when omitted.', { maxLength: 223, pattern: '^nqn\\.' }),
    }),
  },
  ['capsuleRef', 'protocol'],
);

const viewStatus = obj('Observed state of a CapsuleView, written by the operator.', {
  phase: oneOfStr('Lifecycle phase.', VIEW_PHASES),
  endpoint: obj('Where clients reach the view.', {
    protocol: oneOfStr('Protocol served.', VIEW_PROTOCOLS),
    address: str('Address the view listens on.'),
    port: int('Port the view listens on.', { minimum: 0, maximum: 65535 }),
    nqn: str('nvme: subsystem NQN to connect to.'),
    exportPath: str('nfs: path of the export.'),
    mountPath: str('fuse, csi: where the capsule is mounted.'),
    url: str('All of the above as one URL, e.g. nvme://10.0.0.1:4420/nqn.… or nfs://host:2049/export or fuse:///mnt/x.'),
  }),
  gateway: str('Gateway serving the view.'),
  observedGeneration: observedGeneration(),
  conditions: conditions(),
});

// ---------------------------------------------------------------------------------------------
// FederationZone

const zoneSpec = obj(
  'Desired state of a FederationZone: a peer zone reachable over the federation bridge.',
  {
    zone: str('Zone name, a DNS label; federation targets in capsule policies refer to it.', { minLength: 1, maxLength: 63, pattern: DNS_LABEL_PATTERN }),
    region: str('Region the zone is in; checked against capsule sovereignty rules.', { maxLength: 63, pattern: REGION_PATTERN }),
    endpoint: str('host:port of the zone\'s federation bridge (gRPC over TLS).', { maxLength: 261, pattern: HOST_PORT_PATTERN }),
    tlsSecretRef: obj(
      'Secret with tls.crt, tls.key and ca.crt for mutual TLS with the bridge.',
      {
        name: str('Name of the Secret.', { minLength: 1, maxLength: 253, pattern: DNS_SUBDOMAIN_PATTERN }),
        namespace: str('Namespace of the Secret.', { minLength: 1, maxLength: 63, pattern: DNS_LABEL_PATTERN }),
      },
      ['name', 'namespace'],
    ),
    latencyClass: oneOfStr('How far the zone is, which sets replication timeouts and ordering.', LATENCY_CLASSES, { default: DEFAULTS.latencyClass }),
  },
  ['zone', 'endpoint'],
);

const zoneStatus = obj('Observed state of a FederationZone, written by the operator\'s probes.', {
  connected: bool('Whether the last probe reached the bridge.'),
  roundTripMillis: num('Round-trip time of the last probe, in milliseconds.', { minimum: 0 }),
  replicationLagSeconds: num('Age of the oldest version not yet replicated to the zone, in seconds.', { minimum: 0 }),
  lastProbeTime: dateTime('When the zone was last probed.'),
  observedGeneration: observedGeneration(),
  conditions: conditions(),
});

// ---------------------------------------------------------------------------------------------
// CRDs

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  priority?: number;
}

interface KindDefinition {
  resource: ResourceType;
  singular: string;
  shortNames: string[];
  schema: JSONSchemaProps;
  columns: PrinterColumn[];
}

const age: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

const DEFINITIONS: Record<SpaceKind, KindDefinition> = {
  Capsule: {
    resource: CAPSULES,
    singular: 'capsule',
    shortNames: ['cap'],
    schema: root('A Capsule is a versioned set of files with a policy, stored by Space and served through CapsuleViews.', capsuleSpec, capsuleStatus),
    columns: [
      { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Lifecycle phase' },
      { name: 'Size', type: 'integer', jsonPath: '.status.size', description: 'Logical bytes' },
      { name: 'Stored', type: 'integer', jsonPath: '.status.storedSize', description: 'Bytes on disk' },
      { name: 'Version', type: 'integer', jsonPath: '.status.version', description: 'Head version' },
      age,
    ],
  },
  CapsuleView: {
    resource: CAPSULE_VIEWS,
    singular: 'capsuleview',
    shortNames: ['cv'],
    schema: root('A CapsuleView serves one Capsule over one protocol: FUSE, NFS, NVMe/TCP or a CSI volume.', viewSpec, viewStatus),
    columns: [
      { name: 'Capsule', type: 'string', jsonPath: '.spec.capsuleRef.name', description: 'Projected capsule' },
      { name: 'Protocol', type: 'string', jsonPath: '.spec.protocol', description: 'fuse, nfs, nvme or csi' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Lifecycle phase' },
      { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint.url', description: 'Where clients connect' },
      age,
    ],
  },
  FederationZone: {
    resource: FEDERATION_ZONES,
    singular: 'federationzone',
    shortNames: ['fz'],
    schema: root('A FederationZone is a peer zone that capsule versions replicate to over the federation bridge.', zoneSpec, zoneStatus),
    columns: [
      { name: 'Zone', type: 'string', jsonPath: '.spec.zone', description: 'Zone name' },
      { name: 'Region', type: 'string', jsonPath: '.spec.region', description: 'Region' },
      { name: 'Connected', type: 'boolean', jsonPath: '.status.connected', description: 'Last probe reached the bridge' },
      { name: 'RTT', type: 'number', jsonPath: '.status.roundTripMillis', description: 'Round-trip time of the last probe in milliseconds' },
      age,
    ],
  },
};

/** The openAPIV3Schema of a kind (shared, do not mutate). */
export function schemaFor(kind: SpaceKind): JSONSchemaProps {
  return DEFINITIONS[kind].schema;
}

export function resourceFor(kind: SpaceKind): ResourceType {
  return DEFINITIONS[kind].resource;
}

export interface CustomResourceDefinition {
  apiVersion: 'apiextensions.k8s.io/v1';
  kind: 'CustomResourceDefinition';
  metadata: { name: string; labels: Record<string, string> };
  spec: {
    group: string;
    names: { kind: string; listKind: string; plural: string; singular: string; shortNames: string[]; categories: string[] };
    scope: 'Namespaced' | 'Cluster';
    versions: {
      name: string;
      served: boolean;
      storage: boolean;
      subresources: { status: Record<string, never> };
      additionalPrinterColumns: PrinterColumn[];
      schema: { openAPIV3Schema: JSONSchemaProps };
    }[];
  };
}

export function crdFor(kind: SpaceKind): CustomResourceDefinition {
  const d = DEFINITIONS[kind];
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${d.resource.plural}.${SPACE_GROUP}`, labels: { 'app.kubernetes.io/name': 'space', 'app.kubernetes.io/part-of': 'space' } },
    spec: {
      group: SPACE_GROUP,
      names: { kind, listKind: `${kind}List`, plural: d.resource.plural, singular: d.singular, shortNames: d.shortNames, categories: ['space'] },
      scope: d.resource.namespaced ? 'Namespaced' : 'Cluster',
      versions: [
        {
          name: SPACE_VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: d.columns,
          schema: { openAPIV3Schema: d.schema },
        },
      ],
    },
  };
}

export function allCrds(): CustomResourceDefinition[] {
  return (Object.keys(DEFINITIONS) as SpaceKind[]).map(crdFor);
}
