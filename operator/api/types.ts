/**
 * TypeScript shapes of the space.io/v1alpha1 custom resources: Capsule, CapsuleView and
 * FederationZone. Reconcilers, the CSI driver and spacectl build and read objects through these.
 *
 * The OpenAPI schemas in ./schemas.ts describe the same shapes for the API server; test/crds.test.ts
 * fails when the two disagree on a single field name, so change both together.
 *
 * Optional fields are optional here even when the schema gives them a default: objects written
 * by a user (or a test) leave them out, and only objects read back from the API carry the
 * defaults. Read them through the DEFAULTS constants below when a value is needed.
 */
import type { KubeObject, ObjectMeta } from '../runtime/object-api.js';
import { SPACE_GROUP, SPACE_VERSION } from '../runtime/object-api.js';
import type { Compression as StoreCompression } from '../../capsule/policy.js';

export const API_GROUP = SPACE_GROUP;
export const API_VERSION = SPACE_VERSION;
/** The value of `apiVersion` on every Space object. */
export const SPACE_API_VERSION = `${SPACE_GROUP}/${SPACE_VERSION}` as const;

export type SpaceKind = 'Capsule' | 'CapsuleView' | 'FederationZone';
export const SPACE_KINDS: readonly SpaceKind[] = ['Capsule', 'CapsuleView', 'FederationZone'];

// ---------------------------------------------------------------------------------------------
// Conditions (the metav1.Condition shape, so kubectl and generic tooling understand them)

// One definition, shared with the controller runtime's condition helpers.
import type { Condition, ConditionStatus } from '../runtime/conditions.js';
export type { Condition, ConditionStatus } from '../runtime/conditions.js';
export const CONDITION_STATUSES: readonly ConditionStatus[] = ['True', 'False', 'Unknown'];

/** Condition types the reconcilers set. Ready is the summary every kind carries. */
export const ConditionTypes = {
  /** The object does what its spec asks. */
  Ready: 'Ready',
  /** Capsule: the source was read into the store as a version. */
  Ingested: 'Ingested',
  /** Capsule: every federation target holds the current version. */
  Replicated: 'Replicated',
  /** CapsuleView: the protocol front end serves the capsule. */
  Exported: 'Exported',
  /** FederationZone: the bridge endpoint answers. */
  Reachable: 'Reachable',
} as const;
export type ConditionType = (typeof ConditionTypes)[keyof typeof ConditionTypes];

// ---------------------------------------------------------------------------------------------
// Capsule

export type InlineEncoding = 'utf8' | 'base64';
export const INLINE_ENCODINGS: readonly InlineEncoding[] = ['utf8', 'base64'];

export interface InlineSource {
  /** File content, as text or base64 according to `encoding`. */
  data: string;
  encoding?: InlineEncoding;
  /** Path of the file inside the capsule; "content" when omitted. */
  path?: string;
}

/** A reference to an object in the same namespace. */
export interface LocalObjectReference {
  name: string;
}

export interface SnapshotSource {
  /** Name of a Capsule in the same namespace. */
  capsule: string;
  /** Snapshot version of that capsule (1 is its first version). */
  version: number;
}

export interface CloneSource {
  capsule: string;
}

export interface EmptySource {
  /** Kubernetes quantity, e.g. "1Gi"; see quantityToBytes(). */
  size: string;
}

/** Every way a capsule can be filled, all optional: the schema lets exactly one be set. */
export interface CapsuleSourceFields {
  inline?: InlineSource;
  configMapRef?: LocalObjectReference;
  secretRef?: LocalObjectReference;
  snapshot?: SnapshotSource;
  clone?: CloneSource;
  empty?: EmptySource;
}
export type CapsuleSourceKind = keyof CapsuleSourceFields;
export const CAPSULE_SOURCE_KINDS: readonly CapsuleSourceKind[] = ['inline', 'configMapRef', 'secretRef', 'snapshot', 'clone', 'empty'];

/**
 * A capsule source with exactly one field set, so code that builds one cannot set two and code
 * that reads one can switch on sourceKind().
 */
export type CapsuleSource = {
  [K in CapsuleSourceKind]: { [P in K]-?: NonNullable<CapsuleSourceFields[P]> } & { [P in Exclude<CapsuleSourceKind, K>]?: never };
}[CapsuleSourceKind];

/** Which source field is set (objects from the API passed admission, so exactly one is). */
export function sourceKind(source: CapsuleSourceFields): CapsuleSourceKind {
  const set = CAPSULE_SOURCE_KINDS.filter((k) => source[k] !== undefined);
  if (set.length !== 1) throw new Error(`capsule source must set exactly one of ${CAPSULE_SOURCE_KINDS.join(', ')} (found ${set.length ? set.join(', ') : 'none'})`);
  return set[0]!;
}

export type Compression = 'none' | 'gzip' | 'brotli' | 'zstd';
export const COMPRESSIONS: readonly Compression[] = ['none', 'gzip', 'brotli', 'zstd'];
// The CRD enum and the store's codecs must be the same set; this line stops compiling otherwise.
const compressionMatchesStore: [Compression, StoreCompression] extends [StoreCompression, Compression] ? true : never = true;
void compressionMatchesStore;

export type EncryptionAlgorithm = 'aes-256-gcm';

export interface EncryptionSpec {
  /** Defaults to true: writing an encryption block means encryption is wanted. */
  enabled?: boolean;
  algorithm?: EncryptionAlgorithm;
  /** Name of the Secret (capsule's namespace) holding the key-encryption key. */
  keyRef?: string;
}

export interface FederationTargetSpec {
  zone: string;
  region?: string;
  /** Lower replicates first; 0..1000, the store's default is 100. */
  priority?: number;
}

/**
 * The capsule policy as written in a Capsule. Same fields as capsule/policy.ts accepts, so the
 * operator turns it into a store Policy with validatePolicy(spec.policy), which also applies the
 * rules the schema cannot (power-of-two segment size, federation regions within sovereignty).
 */
export interface CapsulePolicySpec {
  compression?: Compression;
  encryption?: EncryptionSpec;
  /** Bytes, or a size string such as "1MiB" (parseSize in capsule/policy.ts reads both). */
  segmentSize?: number | string;
  redundancy?: { replicas?: number };
  sovereignty?: { allowedRegions?: string[] };
  federation?: { targets?: FederationTargetSpec[] };
}

export type DeletionPolicy = 'Delete' | 'Retain';
export const DELETION_POLICIES: readonly DeletionPolicy[] = ['Delete', 'Retain'];

export interface CapsuleSpec {
  /** Immutable after creation. */
  source: CapsuleSource;
  policy?: CapsulePolicySpec;
  deletionPolicy?: DeletionPolicy;
  /** Volume capsules (source.empty) only: the size of `content`, a quantity; it may only grow. */
  size?: string;
}

export type CapsulePhase = 'Pending' | 'Ingesting' | 'Ready' | 'Failed' | 'Deleting';
export const CAPSULE_PHASES: readonly CapsulePhase[] = ['Pending', 'Ingesting', 'Ready', 'Failed', 'Deleting'];

export type ZoneReplicaState = 'Pending' | 'Replicating' | 'InSync' | 'Failed';
export const ZONE_REPLICA_STATES: readonly ZoneReplicaState[] = ['Pending', 'Replicating', 'InSync', 'Failed'];

export interface CapsuleZoneStatus {
  zone: string;
  state: ZoneReplicaState;
  /** RFC 3339 time the zone last confirmed it holds status.version. */
  lastSyncTime?: string;
}

export interface CapsuleStatus {
  phase?: CapsulePhase;
  /** Id of the capsule in the store (what spacectl and the gateways call it). */
  capsuleId?: string;
  /** Gateway that owns the head (its single writer). */
  gateway?: string;
  /** Current head version. */
  version?: number;
  /** Logical bytes of all files. */
  size?: number;
  /** Bytes on disk after deduplication, compression and encryption. */
  storedSize?: number;
  /** "sha256:<64 hex>" over the version's file tree. */
  digest?: string;
  files?: number;
  zones?: CapsuleZoneStatus[];
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface Capsule extends KubeObject {
  apiVersion: typeof SPACE_API_VERSION;
  kind: 'Capsule';
  metadata: ObjectMeta;
  spec: CapsuleSpec;
  status?: CapsuleStatus;
}

// ---------------------------------------------------------------------------------------------
// CapsuleView

export type ViewProtocol = 'fuse' | 'nfs' | 'nvme' | 'csi';
export const VIEW_PROTOCOLS: readonly ViewProtocol[] = ['fuse', 'nfs', 'nvme', 'csi'];

export interface CapsuleViewOptions {
  /** fuse: absolute directory the capsule is mounted on. */
  mountPath?: string;
  /** nfs / nvme: "host:port" to listen on. */
  listen?: string;
  /** nfs: CIDRs or host names allowed to mount. */
  allowedClients?: string[];
  /** nvme: subsystem NQN, "nqn." followed by the name. */
  nqn?: string;
}

export interface CapsuleViewSpec {
  capsuleRef: LocalObjectReference;
  /** Immutable after creation. */
  protocol: ViewProtocol;
  readOnly?: boolean;
  options?: CapsuleViewOptions;
}

export type ViewPhase = 'Pending' | 'Ready' | 'Failed';
export const VIEW_PHASES: readonly ViewPhase[] = ['Pending', 'Ready', 'Failed'];

export interface ViewEndpoint {
  protocol?: ViewProtocol;
  address?: string;
  port?: number;
  nqn?: string;
  exportPath?: string;
  mountPath?: string;
  /** One string a client can use, see endpointUrl(). Shown by `kubectl get cv`. */
  url?: string;
}

export interface CapsuleViewStatus {
  phase?: ViewPhase;
  endpoint?: ViewEndpoint;
  gateway?: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface CapsuleView extends KubeObject {
  apiVersion: typeof SPACE_API_VERSION;
  kind: 'CapsuleView';
  metadata: ObjectMeta;
  spec: CapsuleViewSpec;
  status?: CapsuleViewStatus;
}

/**
 * The display URL of an endpoint, so every reconciler spells it the same way:
 * nvme://10.0.0.1:4420/nqn.…, nfs://host:2049/export, fuse:///mnt/x, csi://<address>.
 */
export function endpointUrl(e: Omit<ViewEndpoint, 'url'> & { protocol: ViewProtocol }): string {
  const host = e.address && e.address.includes(':') && !e.address.startsWith('[') ? `[${e.address}]` : (e.address ?? '');
  const hostPort = e.port !== undefined ? `${host}:${e.port}` : host;
  switch (e.protocol) {
    case 'fuse':
      return `fuse://${e.mountPath ?? ''}`;
    case 'nfs':
      return `nfs://${hostPort}${e.exportPath?.startsWith('/') ? '' : '/'}${e.exportPath ?? ''}`;
    case 'nvme':
      return `nvme://${hostPort}/${e.nqn ?? ''}`;
    case 'csi':
      return `csi://${hostPort}${e.mountPath ?? ''}`;
  }
}

// ---------------------------------------------------------------------------------------------
// FederationZone (cluster-scoped)

export type LatencyClass = 'local' | 'metro' | 'regional' | 'global';
export const LATENCY_CLASSES: readonly LatencyClass[] = ['local', 'metro', 'regional', 'global'];

/** A Secret anywhere in the cluster (zones are cluster-scoped, so the namespace is explicit). */
export interface SecretReference {
  name: string;
  namespace: string;
}

export interface FederationZoneSpec {
  /** DNS label naming the zone; what federation targets refer to. */
  zone: string;
  region?: string;
  /** "host:port" of the zone's federation bridge. */
  endpoint: string;
  /** Secret with tls.crt, tls.key and ca.crt for the bridge's mutual TLS. */
  tlsSecretRef?: SecretReference;
  latencyClass?: LatencyClass;
}

export interface FederationZoneStatus {
  connected?: boolean;
  roundTripMillis?: number;
  replicationLagSeconds?: number;
  lastProbeTime?: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface FederationZone extends KubeObject {
  apiVersion: typeof SPACE_API_VERSION;
  kind: 'FederationZone';
  metadata: ObjectMeta;
  spec: FederationZoneSpec;
  status?: FederationZoneStatus;
}

export type SpaceObject = Capsule | CapsuleView | FederationZone;

/** Schema defaults, for code that reads objects that did not go through admission. */
export const DEFAULTS = {
  inlineEncoding: 'utf8' as InlineEncoding,
  inlinePath: 'content',
  deletionPolicy: 'Delete' as DeletionPolicy,
  encryptionEnabled: true,
  encryptionAlgorithm: 'aes-256-gcm' as EncryptionAlgorithm,
  readOnly: false,
  latencyClass: 'regional' as LatencyClass,
} as const;

// ---------------------------------------------------------------------------------------------
// Quantities

/** The subset of Kubernetes quantities a capsule size may use: no sign, no exponent. */
export const QUANTITY_PATTERN = '^[0-9]+(\\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$';

const QUANTITY_SUFFIX: Record<string, number> = {
  '': 1,
  k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/**
 * Bytes of a quantity such as "1Gi", "500M" or "1.5Gi", rounded up to a whole byte as the API
 * server does; null when the string is not in QUANTITY_PATTERN.
 */
export function quantityToBytes(q: string): number | null {
  const m = /^([0-9]+(?:\.[0-9]+)?)([KMGTPE]i|[kMGTPE])?$/.exec(q);
  if (!m) return null;
  return Math.ceil(Number(m[1]) * QUANTITY_SUFFIX[m[2] ?? '']!);
}
