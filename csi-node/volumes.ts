/**
 * Where CSI volumes and snapshots live. The controller service speaks CSI; a VolumeBackend
 * speaks capsules. Two backends:
 *
 * - GatewayVolumeBackend (standalone): straight to one gateway through the CapsuleApi. A volume
 *   is a capsule whose `content` is a sparse file of the volume's size; a snapshot is its own
 *   capsule, a zero-copy clone of a frozen version of the volume, itself frozen — so a snapshot
 *   outlives its source volume (CSI requires that) and restoring it is another zero-copy clone.
 * - KubeVolumeBackend (cluster): Capsule + CapsuleView objects through the ObjectApi; the
 *   operator does the data-plane work and we wait for Ready.
 *
 * Naming: CSI names are up to 128 arbitrary characters, capsule names are DNS subdomains, so the
 * capsule name is a hash of the CSI name (`csi-vol-<hash>` / `csi-snap-<hash>`). That makes the
 * lookup by name one get(), and a retried CreateVolume finds the capsule a crashed attempt made.
 */
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import type { CapsuleApi } from '../capsule/api.js';
import { SpaceError } from '../capsule/errors.js';
import type { Logger } from '../capsule/log.js';
import { silentLogger } from '../capsule/log.js';
import { validatePolicy, type Policy } from '../capsule/policy.js';
import type { CapsuleInfo, FsckReport } from '../capsule/types.js';
import {
  CAPSULES, CAPSULE_VIEWS, isNotFound, type KubeObject, type ObjectApi,
} from '../operator/runtime/object-api.js';
import type { Capsule, CapsuleSource, CapsuleView } from '../operator/api/types.js';
import { SPACE_API_VERSION } from '../operator/api/types.js';

export type VolumeProtocol = 'fuse' | 'nfs' | 'nvme';
export const VOLUME_PROTOCOLS: readonly VolumeProtocol[] = ['fuse', 'nfs', 'nvme'];

/** A topology segment map, e.g. { 'topology.space.io/zone': 'eu-1' }. */
export type Segments = Record<string, string>;

export type ContentSource = { snapshotId: string } | { volumeId: string };

export interface VolumeRecord {
  /** CSI volume id: the capsule id (gateway backend) or the Capsule object name (kube backend). */
  id: string;
  /** The CSI name the CO asked for (kept because the capsule name is only its hash). */
  name: string;
  capsuleName: string;
  capacityBytes: number;
  protocol: VolumeProtocol;
  parameters: Record<string, string>;
  topology: Segments[];
  contentSource?: ContentSource;
  createdAt: string;
}

export interface SnapshotRecord {
  id: string;
  name: string;
  sourceVolumeId: string;
  sizeBytes: number;
  createdAt: string;
  /** True once the frozen version is committed. */
  readyToUse: boolean;
}

export interface CreateVolumeSpec {
  name: string;
  capacityBytes: number;
  protocol: VolumeProtocol;
  /** StorageClass parameters as given (stored for the node side and for idempotency checks). */
  parameters: Record<string, string>;
  policy: Policy;
  topology: Segments[];
  source?: ContentSource;
}

export interface VolumeCondition {
  abnormal: boolean;
  message: string;
}

export interface VolumeBackend {
  readonly kind: 'gateway' | 'kube';
  createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord>;
  getVolume(id: string): Promise<VolumeRecord | null>;
  findVolumeByName(name: string): Promise<VolumeRecord | null>;
  /** Sorted by id, so a list position is a stable pagination token. */
  listVolumes(): Promise<VolumeRecord[]>;
  /** No-op when the volume does not exist. */
  deleteVolume(id: string): Promise<void>;
  /** Grow to at least `bytes`; returns the new capacity. */
  expandVolume(id: string, bytes: number): Promise<number>;
  volumeCondition(id: string): Promise<VolumeCondition>;
  createSnapshot(sourceVolumeId: string, name: string): Promise<SnapshotRecord>;
  getSnapshot(id: string): Promise<SnapshotRecord | null>;
  findSnapshotByName(name: string): Promise<SnapshotRecord | null>;
  listSnapshots(): Promise<SnapshotRecord[]>;
  deleteSnapshot(id: string): Promise<void>;
  /** Free bytes for new volumes, or undefined when this backend cannot tell. */
  availableCapacity(): Promise<number | undefined>;
  /** Backend reachable (Identity.Probe). */
  ready(): Promise<boolean>;
  close(): Promise<void>;
}

const hash = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex').slice(0, 40);
export const volumeCapsuleName = (csiName: string) => `csi-vol-${hash(csiName)}`;
export const snapshotCapsuleName = (csiName: string) => `csi-snap-${hash(csiName)}`;

/**
 * StorageClass parameters → capsule policy. `protocol` is read by the caller; the
 * `csi.storage.k8s.io/` keys are the provisioner's own and pass through untouched. Anything else
 * unknown is rejected so a typo in a StorageClass fails loudly instead of being ignored.
 */
export const POLICY_PARAMETERS = ['compression', 'encryptionKeySecret', 'federationTargets'] as const;

export function policyFromParameters(params: Record<string, string>): Policy {
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    if (k === 'protocol' || k.startsWith('csi.storage.k8s.io/')) continue;
    if (k === 'compression') raw.compression = v;
    else if (k === 'encryptionKeySecret') raw.encryption = { enabled: true, keyRef: v };
    else if (k === 'federationTargets') {
      raw.federation = { targets: v.split(',').map((z) => z.trim()).filter(Boolean).map((zone) => ({ zone })) };
    } else {
      throw new SpaceError('INVALID_ARGUMENT', `unknown StorageClass parameter ${JSON.stringify(k)} (known: protocol, ${POLICY_PARAMETERS.join(', ')})`);
    }
  }
  return validatePolicy(raw, 'StorageClass parameters');
}

// ---------------------------------------------------------------------------------------------
// Gateway backend

const REGISTRY = 'csi-registry';

interface StoredVolume {
  name: string;
  capsuleName: string;
  protocol: VolumeProtocol;
  parameters: Record<string, string>;
  topology: Segments[];
  contentSource?: ContentSource;
  createdAt: string;
}

interface StoredSnapshot {
  name: string;
  capsuleName: string;
  sourceVolumeId: string;
  createdAt: string;
}

export interface GatewayVolumeBackendOptions {
  api: CapsuleApi;
  /** The store's data dir when it is on this machine: GetCapacity reports its free space. */
  dataDir?: string;
  logger?: Logger;
  /** How old a store-wide fsck result may get before a volume-condition check starts another. */
  fsckIntervalMs?: number;
}

/**
 * Metadata (CSI name, parameters, protocol, topology, content source) is kept in one registry
 * capsule, `csi-registry`, one small JSON file per volume or snapshot keyed by capsule name —
 * not in the volume capsule, because a FUSE/NFS view would show that file to the pod, and a
 * snapshot or clone would carry a stale copy along. Capacity is never stored: the size of
 * `content` is the truth, so an expansion interrupted between steps cannot disagree with it.
 * Order of writes: capsule first, record second; a crash in between leaves a capsule that the
 * retried CreateVolume (same name, same hash) adopts.
 */
export class GatewayVolumeBackend implements VolumeBackend {
  readonly kind = 'gateway' as const;
  private readonly api: CapsuleApi;
  private readonly log: Logger;
  private fsck: { at: number; report: FsckReport } | undefined;
  private fsckRunning: Promise<void> | undefined;

  constructor(private readonly opts: GatewayVolumeBackendOptions) {
    this.api = opts.api;
    this.log = opts.logger ?? silentLogger;
  }

  // ---- registry ----

  private async readRecord<T>(file: string): Promise<T | null> {
    try {
      const chunks: Buffer[] = [];
      for await (const c of this.api.readStream(REGISTRY, file)) chunks.push(Buffer.from(c));
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as T;
    } catch (e) {
      if (e instanceof SpaceError && e.code === 'NOT_FOUND') return null;
      throw e;
    }
  }

  private async writeRecord(file: string, value: unknown): Promise<void> {
    const body = Buffer.from(JSON.stringify(value));
    await this.api.put(REGISTRY, file, (async function* () { yield body; })(), { createWith: { name: REGISTRY } });
  }

  private async removeRecord(file: string): Promise<void> {
    try {
      await this.api.unlink(REGISTRY, file);
    } catch (e) {
      if (!(e instanceof SpaceError && e.code === 'NOT_FOUND')) throw e;
    }
  }

  private async registryFiles(prefix: string): Promise<string[]> {
    try {
      return (await this.api.readdir(REGISTRY, '/')).map((d) => d.name).filter((n) => n.startsWith(prefix)).sort();
    } catch (e) {
      if (e instanceof SpaceError && e.code === 'NOT_FOUND') return [];
      throw e;
    }
  }

  private async capsule(ref: string): Promise<CapsuleInfo | null> {
    try {
      return await this.api.get(ref);
    } catch (e) {
      if (e instanceof SpaceError && (e.code === 'NOT_FOUND' || e.code === 'INVALID_ARGUMENT')) return null;
      throw e;
    }
  }

  private async contentSize(ref: string): Promise<number> {
    return (await this.api.getattr(ref, 'content')).size;
  }

  private async toVolume(info: CapsuleInfo, rec: StoredVolume): Promise<VolumeRecord> {
    return {
      id: info.id,
      name: rec.name,
      capsuleName: info.name,
      capacityBytes: await this.contentSize(info.id),
      protocol: rec.protocol,
      parameters: rec.parameters,
      topology: rec.topology,
      ...(rec.contentSource ? { contentSource: rec.contentSource } : {}),
      createdAt: rec.createdAt,
    };
  }

  // ---- volumes ----

  async createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord> {
    const capsuleName = volumeCapsuleName(spec.name);
    let info = await this.capsule(capsuleName);
    if (!info) {
      if (!spec.source) {
        info = await this.api.create({ name: capsuleName, size: spec.capacityBytes, policy: spec.policy });
      } else if ('snapshotId' in spec.source) {
        const snap = await this.capsule(spec.source.snapshotId);
        const version = snap?.versions.at(-1)?.version;
        if (!snap || !snap.name.startsWith('csi-snap-') || version === undefined) {
          throw new SpaceError('NOT_FOUND', `snapshot ${spec.source.snapshotId} not found`);
        }
        info = await this.api.clone(snap.id, { name: capsuleName, version });
      } else {
        const src = await this.capsule(spec.source.volumeId);
        if (!src || !src.name.startsWith('csi-vol-')) throw new SpaceError('NOT_FOUND', `source volume ${spec.source.volumeId} not found`);
        info = await this.api.clone(src.id, { name: capsuleName });
      }
      // A restored or cloned volume may be asked to be larger than its source.
      if (spec.source && (await this.contentSize(info.id)) < spec.capacityBytes) {
        await this.api.truncate(info.id, 'content', spec.capacityBytes);
      }
      this.log.info('csi.volume_capsule_created', { volume: info.id, capsule: capsuleName, source: spec.source ?? null });
    }
    const rec: StoredVolume = {
      name: spec.name, capsuleName, protocol: spec.protocol, parameters: spec.parameters, topology: spec.topology,
      ...(spec.source ? { contentSource: spec.source } : {}),
      createdAt: info.createdAt,
    };
    const existing = await this.readRecord<StoredVolume>(`${capsuleName}.json`);
    if (!existing) await this.writeRecord(`${capsuleName}.json`, rec);
    return this.toVolume(info, existing ?? rec);
  }

  async getVolume(id: string): Promise<VolumeRecord | null> {
    const info = await this.capsule(id);
    if (!info || !info.name.startsWith('csi-vol-')) return null;
    const rec = await this.readRecord<StoredVolume>(`${info.name}.json`);
    return rec ? this.toVolume(info, rec) : null;
  }

  async findVolumeByName(name: string): Promise<VolumeRecord | null> {
    const capsuleName = volumeCapsuleName(name);
    const info = await this.capsule(capsuleName);
    if (!info) return null;
    const rec = await this.readRecord<StoredVolume>(`${capsuleName}.json`);
    // No record: a crashed create; report it so the caller's checks run, createVolume adopts it.
    return this.toVolume(info, rec ?? {
      name, capsuleName, protocol: 'fuse', parameters: {}, topology: [], createdAt: info.createdAt,
    });
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    const out: VolumeRecord[] = [];
    for (const file of await this.registryFiles('csi-vol-')) {
      const rec = await this.readRecord<StoredVolume>(file);
      const info = rec && (await this.capsule(rec.capsuleName));
      if (rec && info) out.push(await this.toVolume(info, rec));
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async deleteVolume(id: string): Promise<void> {
    const info = await this.capsule(id);
    if (!info || !info.name.startsWith('csi-vol-')) return;
    await this.api.delete(info.id);
    await this.removeRecord(`${info.name}.json`);
    this.log.info('csi.volume_deleted', { volume: id });
  }

  async expandVolume(id: string, bytes: number): Promise<number> {
    const size = await this.contentSize(id);
    if (size >= bytes) return size;
    await this.api.truncate(id, 'content', bytes);
    this.log.info('csi.volume_expanded', { volume: id, from: size, to: bytes });
    return bytes;
  }

  async volumeCondition(id: string): Promise<VolumeCondition> {
    const info = await this.capsule(id);
    if (!info) return { abnormal: true, message: `capsule ${id} is missing` };
    try {
      await this.contentSize(id);
    } catch (e) {
      return { abnormal: true, message: `content of capsule ${id} is unreadable: ${(e as Error).message}` };
    }
    // fsck reads every segment of the store: never on the request path. A cached report,
    // refreshed in the background, is as fresh as fsckIntervalMs allows.
    const interval = this.opts.fsckIntervalMs ?? 10 * 60_000;
    if (!this.fsckRunning && (!this.fsck || Date.now() - this.fsck.at > interval)) {
      this.fsckRunning = this.api.fsck()
        .then((report) => { this.fsck = { at: Date.now(), report }; })
        .catch((err: unknown) => this.log.warn('csi.fsck_failed', { volume: id, err }))
        .finally(() => { this.fsckRunning = undefined; });
    }
    const problems = this.fsck?.report.problems.filter((p) => p.capsule === info.id || p.capsule === info.name) ?? [];
    if (problems.length) {
      const p = problems[0]!;
      return { abnormal: true, message: `fsck: ${problems.length} problem(s), first: ${p.file ?? ''}${p.offset !== undefined ? `@${p.offset}` : ''} ${p.problem}` };
    }
    return { abnormal: false, message: 'capsule present and readable' };
  }

  /** Wait for a background fsck started by volumeCondition (tests). */
  async settled(): Promise<void> {
    await this.fsckRunning;
  }

  // ---- snapshots ----

  private async toSnapshot(info: CapsuleInfo, rec: StoredSnapshot): Promise<SnapshotRecord> {
    const v = info.versions.at(-1);
    return {
      id: info.id,
      name: rec.name,
      sourceVolumeId: rec.sourceVolumeId,
      sizeBytes: v ? v.logicalSize : await this.contentSize(info.id),
      createdAt: v?.createdAt ?? rec.createdAt,
      readyToUse: v !== undefined,
    };
  }

  async createSnapshot(sourceVolumeId: string, name: string): Promise<SnapshotRecord> {
    const capsuleName = snapshotCapsuleName(name);
    let info = await this.capsule(capsuleName);
    if (!info) {
      const src = await this.capsule(sourceVolumeId);
      if (!src || !src.name.startsWith('csi-vol-')) throw new SpaceError('NOT_FOUND', `source volume ${sourceVolumeId} not found`);
      // Freeze the volume, then give the frozen version a capsule of its own.
      const version = await this.api.snapshot(src.id);
      info = await this.api.clone(src.id, { name: capsuleName, version });
    }
    // A crash between clone and this freeze leaves an unfrozen snapshot capsule; a retry ends here.
    if (info.versions.length === 0) {
      await this.api.snapshot(info.id);
      info = await this.api.get(info.id);
    }
    let rec = await this.readRecord<StoredSnapshot>(`${capsuleName}.json`);
    if (!rec) {
      rec = { name, capsuleName, sourceVolumeId, createdAt: info.versions.at(-1)?.createdAt ?? new Date().toISOString() };
      await this.writeRecord(`${capsuleName}.json`, rec);
    }
    this.log.info('csi.snapshot_created', { volume: sourceVolumeId, snapshot: info.id });
    return this.toSnapshot(info, rec);
  }

  async getSnapshot(id: string): Promise<SnapshotRecord | null> {
    const info = await this.capsule(id);
    if (!info || !info.name.startsWith('csi-snap-')) return null;
    const rec = await this.readRecord<StoredSnapshot>(`${info.name}.json`);
    return rec ? this.toSnapshot(info, rec) : null;
  }

  async findSnapshotByName(name: string): Promise<SnapshotRecord | null> {
    const capsuleName = snapshotCapsuleName(name);
    const info = await this.capsule(capsuleName);
    if (!info) return null;
    const rec = await this.readRecord<StoredSnapshot>(`${capsuleName}.json`);
    const origin = info.origin?.capsule ?? '';
    return this.toSnapshot(info, rec ?? { name, capsuleName, sourceVolumeId: origin, createdAt: info.createdAt });
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    const out: SnapshotRecord[] = [];
    for (const file of await this.registryFiles('csi-snap-')) {
      const rec = await this.readRecord<StoredSnapshot>(file);
      const info = rec && (await this.capsule(rec.capsuleName));
      if (rec && info) out.push(await this.toSnapshot(info, rec));
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async deleteSnapshot(id: string): Promise<void> {
    const info = await this.capsule(id);
    if (!info || !info.name.startsWith('csi-snap-')) return;
    await this.api.delete(info.id);
    await this.removeRecord(`${info.name}.json`);
    this.log.info('csi.snapshot_deleted', { snapshot: id });
  }

  async availableCapacity(): Promise<number | undefined> {
    if (!this.opts.dataDir) return undefined;
    const st = await fsp.statfs(this.opts.dataDir);
    return st.bavail * st.bsize;
  }

  async ready(): Promise<boolean> {
    try {
      await this.api.storeStat();
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.fsckRunning;
  }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes backend

const ANN = {
  name: 'csi.space.io/name',
  protocol: 'csi.space.io/protocol',
  parameters: 'csi.space.io/parameters',
  topology: 'csi.space.io/topology',
  source: 'csi.space.io/content-source',
  sourceVolume: 'csi.space.io/source-volume',
  capacity: 'csi.space.io/capacity',
};
const ROLE_LABEL = 'csi.space.io/role';

export interface KubeVolumeBackendOptions {
  api: ObjectApi;
  namespace: string;
  logger?: Logger;
  /** How long to wait for a Capsule / CapsuleView to become Ready (default 60 s). */
  readyTimeoutMs?: number;
  pollMs?: number;
}

/**
 * Cluster mode: the controller only writes objects; the operator creates the capsule on a
 * gateway and serves the view. The volume id is the Capsule object name (known before the
 * operator assigns a store id, and stable across operator restarts). Metadata rides in
 * annotations. Snapshots are Capsules cloned from the volume's head and frozen as their version 1
 * by the operator; CreateSnapshot returns once that cut has happened.
 */
export class KubeVolumeBackend implements VolumeBackend {
  readonly kind = 'kube' as const;
  private readonly log: Logger;

  constructor(private readonly opts: KubeVolumeBackendOptions) {
    this.log = opts.logger ?? silentLogger;
  }

  private async getCapsule(name: string): Promise<Capsule | null> {
    try {
      return (await this.opts.api.get(CAPSULES, name, this.opts.namespace)) as Capsule;
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  private async waitReady(type: typeof CAPSULES, name: string): Promise<KubeObject> {
    const deadline = Date.now() + (this.opts.readyTimeoutMs ?? 60_000);
    for (;;) {
      const obj = await this.opts.api.get(type, name, this.opts.namespace);
      const phase = (obj.status as { phase?: string } | undefined)?.phase;
      if (phase === 'Ready') return obj;
      if (phase === 'Failed') throw new SpaceError('INTERNAL', `${type.kind} ${name} failed`);
      // ABORTED-style retry is the CO's job: report UNAVAILABLE and let it call again.
      if (Date.now() > deadline) throw new SpaceError('UNAVAILABLE', `${type.kind} ${name} is not Ready yet`);
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 200));
    }
  }

  private toVolume(c: Capsule): VolumeRecord {
    const a = c.metadata.annotations ?? {};
    const source = a[ANN.source] ? (JSON.parse(a[ANN.source]) as ContentSource) : undefined;
    return {
      id: c.metadata.name,
      name: a[ANN.name] ?? c.metadata.name,
      capsuleName: c.metadata.name,
      capacityBytes: Number(a[ANN.capacity] ?? c.status?.size ?? 0),
      protocol: (a[ANN.protocol] as VolumeProtocol | undefined) ?? 'fuse',
      parameters: a[ANN.parameters] ? (JSON.parse(a[ANN.parameters]) as Record<string, string>) : {},
      topology: a[ANN.topology] ? (JSON.parse(a[ANN.topology]) as Segments[]) : [],
      ...(source ? { contentSource: source } : {}),
      createdAt: c.metadata.creationTimestamp ?? '',
    };
  }

  async createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord> {
    const name = volumeCapsuleName(spec.name);
    let existing = await this.getCapsule(name);
    if (!existing) {
      let source: CapsuleSource;
      if (!spec.source) source = { empty: { size: String(spec.capacityBytes) } };
      else if ('snapshotId' in spec.source) {
        const snap = await this.getCapsule(spec.source.snapshotId);
        if (!snap || snap.metadata.labels?.[ROLE_LABEL] !== 'snapshot') throw new SpaceError('NOT_FOUND', `snapshot ${spec.source.snapshotId} not found`);
        source = { clone: { capsule: snap.metadata.name } };
      } else {
        const src = await this.getCapsule(spec.source.volumeId);
        if (!src || src.metadata.labels?.[ROLE_LABEL] !== 'volume') throw new SpaceError('NOT_FOUND', `source volume ${spec.source.volumeId} not found`);
        source = { clone: { capsule: src.metadata.name } };
      }
      const policy = spec.policy;
      const obj: Capsule = {
        apiVersion: SPACE_API_VERSION,
        kind: 'Capsule',
        metadata: {
          name,
          namespace: this.opts.namespace,
          labels: { [ROLE_LABEL]: 'volume' },
          annotations: {
            [ANN.name]: spec.name,
            [ANN.protocol]: spec.protocol,
            [ANN.parameters]: JSON.stringify(spec.parameters),
            [ANN.topology]: JSON.stringify(spec.topology),
            [ANN.capacity]: String(spec.capacityBytes),
            ...(spec.source ? { [ANN.source]: JSON.stringify(spec.source) } : {}),
          },
        },
        spec: {
          source,
          policy: {
            compression: policy.compression,
            ...(policy.encryption.enabled ? { encryption: { enabled: true, keyRef: policy.encryption.keyRef } } : {}),
            ...(policy.federation.targets.length ? { federation: { targets: policy.federation.targets } } : {}),
          },
        },
      };
      existing = (await this.opts.api.create(CAPSULES, obj)) as Capsule;
      const view: CapsuleView = {
        apiVersion: SPACE_API_VERSION,
        kind: 'CapsuleView',
        metadata: { name: `${name}-${spec.protocol}`, namespace: this.opts.namespace, labels: { [ROLE_LABEL]: 'volume' } },
        spec: { capsuleRef: { name }, protocol: spec.protocol },
      };
      try {
        await this.opts.api.create(CAPSULE_VIEWS, view);
      } catch (e) {
        if (!(e instanceof Error && 'code' in e && (e as { code: number }).code === 409)) throw e;
      }
      this.log.info('csi.capsule_object_created', { volume: name });
    }
    const ready = (await this.waitReady(CAPSULES, name)) as Capsule;
    await this.waitReady(CAPSULE_VIEWS, `${name}-${this.toVolume(ready).protocol}`);
    return this.toVolume(ready);
  }

  async getVolume(id: string): Promise<VolumeRecord | null> {
    const c = await this.getCapsule(id);
    return c && c.metadata.labels?.[ROLE_LABEL] === 'volume' ? this.toVolume(c) : null;
  }

  async findVolumeByName(name: string): Promise<VolumeRecord | null> {
    return this.getVolume(volumeCapsuleName(name));
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    const { items } = await this.opts.api.list(CAPSULES, this.opts.namespace);
    return (items as Capsule[])
      .filter((c) => c.metadata.labels?.[ROLE_LABEL] === 'volume' && !c.metadata.deletionTimestamp)
      .map((c) => this.toVolume(c))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async deleteVolume(id: string): Promise<void> {
    const c = await this.getVolume(id);
    if (!c) return;
    for (const [type, name] of [[CAPSULE_VIEWS, `${id}-${c.protocol}`], [CAPSULES, id]] as const) {
      try {
        await this.opts.api.delete(type, name, this.opts.namespace);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
  }

  async expandVolume(id: string, bytes: number): Promise<number> {
    // spec.size of a volume capsule may only grow; the operator grows `content` and reports
    // the new size in status.size.
    const c = await this.getCapsule(id);
    if (!c || c.metadata.labels?.[ROLE_LABEL] !== 'volume') throw new SpaceError('NOT_FOUND', `volume ${id} not found`);
    const current = this.toVolume(c).capacityBytes;
    if (bytes <= current) return current;
    await this.opts.api.replace(CAPSULES, {
      ...c,
      spec: { ...c.spec, size: String(bytes) },
      metadata: { ...c.metadata, annotations: { ...(c.metadata.annotations ?? {}), [ANN.capacity]: String(bytes) } },
    });
    const deadline = Date.now() + (this.opts.readyTimeoutMs ?? 60_000);
    for (;;) {
      const now = (await this.getCapsule(id)) as Capsule | null;
      if ((now?.status?.size ?? 0) >= bytes) break;
      if (now?.status?.phase === 'Failed') throw new SpaceError('INTERNAL', `expanding volume ${id} failed: ${now.status.conditions?.find((x) => x.type === 'Ready')?.message ?? 'see the Capsule'}`);
      if (Date.now() > deadline) throw new SpaceError('UNAVAILABLE', `volume ${id} has not grown to ${bytes} bytes yet`);
      await new Promise((r) => setTimeout(r, this.opts.pollMs ?? 200));
    }
    this.log.info('csi.volume_expanded', { volume: id, from: current, to: bytes });
    return bytes;
  }

  async volumeCondition(id: string): Promise<VolumeCondition> {
    const c = await this.getCapsule(id);
    if (!c) return { abnormal: true, message: `Capsule ${id} is missing` };
    const phase = c.status?.phase ?? 'Pending';
    return phase === 'Ready' ? { abnormal: false, message: 'Capsule Ready' } : { abnormal: true, message: `Capsule phase ${phase}` };
  }

  private toSnapshot(c: Capsule): SnapshotRecord {
    const a = c.metadata.annotations ?? {};
    // The snapshot is cut when the operator freezes the clone (the capsule turns Ready): that
    // moment, not the object's creation, is the snapshot's point in time.
    const cut = c.status?.phase === 'Ready' ? c.status.conditions?.find((x) => x.type === 'Ready' && x.status === 'True')?.lastTransitionTime : undefined;
    return {
      id: c.metadata.name,
      name: a[ANN.name] ?? c.metadata.name,
      sourceVolumeId: a[ANN.sourceVolume] ?? '',
      sizeBytes: Number(c.status?.size ?? a[ANN.capacity] ?? 0),
      createdAt: cut ?? c.metadata.creationTimestamp ?? '',
      readyToUse: c.status?.phase === 'Ready',
    };
  }

  async createSnapshot(sourceVolumeId: string, name: string): Promise<SnapshotRecord> {
    const objName = snapshotCapsuleName(name);
    let c = await this.getCapsule(objName);
    if (!c) {
      const src = await this.getVolume(sourceVolumeId);
      if (!src) throw new SpaceError('NOT_FOUND', `source volume ${sourceVolumeId} not found`);
      c = (await this.opts.api.create(CAPSULES, {
        apiVersion: SPACE_API_VERSION,
        kind: 'Capsule',
        metadata: {
          name: objName,
          namespace: this.opts.namespace,
          labels: { [ROLE_LABEL]: 'snapshot' },
          annotations: { [ANN.name]: name, [ANN.sourceVolume]: sourceVolumeId, [ANN.capacity]: String(src.capacityBytes) },
        },
        spec: { source: { clone: { capsule: sourceVolumeId } } },
      } satisfies Capsule)) as Capsule;
    }
    // CreateSnapshot returns once the snapshot is cut (CSI: the application may resume then), so
    // wait for the operator to freeze the clone; if it takes too long the CO retries by name.
    return this.toSnapshot((await this.waitReady(CAPSULES, objName)) as Capsule);
  }

  async getSnapshot(id: string): Promise<SnapshotRecord | null> {
    const c = await this.getCapsule(id);
    return c && c.metadata.labels?.[ROLE_LABEL] === 'snapshot' ? this.toSnapshot(c) : null;
  }

  async findSnapshotByName(name: string): Promise<SnapshotRecord | null> {
    return this.getSnapshot(snapshotCapsuleName(name));
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    const { items } = await this.opts.api.list(CAPSULES, this.opts.namespace);
    return (items as Capsule[])
      .filter((c) => c.metadata.labels?.[ROLE_LABEL] === 'snapshot' && !c.metadata.deletionTimestamp)
      .map((c) => this.toSnapshot(c))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async deleteSnapshot(id: string): Promise<void> {
    if (!(await this.getSnapshot(id))) return;
    try {
      await this.opts.api.delete(CAPSULES, id, this.opts.namespace);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  async availableCapacity(): Promise<number | undefined> {
    return undefined;
  }

  async ready(): Promise<boolean> {
    try {
      await this.opts.api.list(CAPSULES, this.opts.namespace);
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {}
}
