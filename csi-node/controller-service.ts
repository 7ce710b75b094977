/**
 * CSI Controller: volume and snapshot lifecycle on top of a VolumeBackend. This file owns the
 * CSI rules (required fields, capability checks, idempotency, pagination, error codes); the
 * backend owns where the bytes live.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../capsule/log.js';
import { silentLogger } from '../capsule/log.js';
import { csiError, unary } from './proto.js';
import {
  policyFromParameters, VOLUME_PROTOCOLS,
  type ContentSource, type SnapshotRecord, type VolumeBackend, type VolumeProtocol, type VolumeRecord,
} from './volumes.js';

export const ZONE_KEY = 'topology.space.io/zone';
/** Smallest volume we make: one default segment. Smaller requests are rounded up to it. */
export const MIN_VOLUME_BYTES = 1 << 20;
/** Size when the CO gives no capacity range. */
export const DEFAULT_VOLUME_BYTES = 1 << 30;
const ALIGN = 4096;

const S = grpc.status;

// ---- wire shapes (keepCase, longs as strings, enums as names, oneofs named) ----

interface WCapability {
  block?: object | null;
  mount?: { fs_type: string; mount_flags: string[] } | null;
  access_type?: 'block' | 'mount';
  access_mode?: { mode: string } | null;
}
interface WCapacityRange { required_bytes: string; limit_bytes: string }
interface WContentSource {
  snapshot?: { snapshot_id: string } | null;
  volume?: { volume_id: string } | null;
  type?: 'snapshot' | 'volume';
}
interface WTopology { segments: Record<string, string> }

const SINGLE_NODE_MODES = ['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER'];
/** Access modes and access types each protocol can honour. */
const SUPPORT: Record<VolumeProtocol, { modes: string[]; block: boolean; fsTypes: string[] }> = {
  // One FUSE mount process per node; the gateway's single head keeps writers coherent.
  fuse: { modes: [...SINGLE_NODE_MODES, 'MULTI_NODE_READER_ONLY', 'MULTI_NODE_MULTI_WRITER'], block: false, fsTypes: ['', 'fuse'] },
  nfs: { modes: [...SINGLE_NODE_MODES, 'MULTI_NODE_READER_ONLY', 'MULTI_NODE_SINGLE_WRITER', 'MULTI_NODE_MULTI_WRITER'], block: false, fsTypes: ['', 'nfs', 'nfs4'] },
  // A block device with a local filesystem on it: two nodes would corrupt it.
  nvme: { modes: SINGLE_NODE_MODES, block: true, fsTypes: ['', 'ext4', 'xfs'] },
};

/** Why a capability is unsupported for `protocol`, or null when it is fine. */
export function capabilityProblem(protocol: VolumeProtocol, cap: WCapability): string | null {
  const sup = SUPPORT[protocol];
  const mode = cap.access_mode?.mode;
  if (!mode || mode === 'UNKNOWN') return 'access_mode is required';
  const type = cap.access_type ?? (cap.block ? 'block' : cap.mount ? 'mount' : undefined);
  if (!type) return 'access_type (block or mount) is required';
  if (type === 'block' && !sup.block) return `raw block volumes need protocol nvme (this is ${protocol})`;
  if (type === 'mount' && !sup.fsTypes.includes(cap.mount?.fs_type ?? '')) return `fs_type ${JSON.stringify(cap.mount?.fs_type)} is not supported by ${protocol} (use ${sup.fsTypes.filter(Boolean).join(', ')})`;
  if (!sup.modes.includes(mode)) return `access mode ${mode} is not supported by ${protocol}`;
  return null;
}

function parseBytes(v: string | undefined, field: string): number {
  const n = Number(v ?? '0');
  if (!Number.isSafeInteger(n) || n < 0) throw csiError(S.INVALID_ARGUMENT, `${field} must be a non-negative integer`);
  return n;
}

function parseProtocol(params: Record<string, string>): VolumeProtocol {
  const p = params.protocol ?? 'fuse';
  if (!(VOLUME_PROTOCOLS as readonly string[]).includes(p)) throw csiError(S.INVALID_ARGUMENT, `parameter protocol must be one of ${VOLUME_PROTOCOLS.join(', ')} (got ${JSON.stringify(p)})`);
  return p as VolumeProtocol;
}

/** The size to provision for a capacity range, given the smallest size the content needs. */
function pickCapacity(range: WCapacityRange | null | undefined, floor: number): number {
  const required = parseBytes(range?.required_bytes, 'capacity_range.required_bytes');
  const limit = parseBytes(range?.limit_bytes, 'capacity_range.limit_bytes');
  if (required && limit && limit < required) throw csiError(S.OUT_OF_RANGE, `limit_bytes ${limit} is below required_bytes ${required}`);
  let size = required || (limit ? Math.min(limit, Math.max(DEFAULT_VOLUME_BYTES, floor)) : Math.max(DEFAULT_VOLUME_BYTES, floor));
  size = Math.max(size, MIN_VOLUME_BYTES, floor);
  size = Math.ceil(size / ALIGN) * ALIGN;
  if (limit && size > limit) throw csiError(S.OUT_OF_RANGE, `limit_bytes ${limit} is below the minimum volume size ${size}`);
  return size;
}

const fitsRange = (capacity: number, range: WCapacityRange | null | undefined) => {
  const required = Number(range?.required_bytes ?? 0);
  const limit = Number(range?.limit_bytes ?? 0);
  return capacity >= required && (!limit || capacity <= limit);
};

function sourceOf(src: WContentSource | null | undefined): ContentSource | undefined {
  if (!src) return undefined;
  if (src.snapshot) {
    if (!src.snapshot.snapshot_id) throw csiError(S.INVALID_ARGUMENT, 'volume_content_source.snapshot.snapshot_id is required');
    return { snapshotId: src.snapshot.snapshot_id };
  }
  if (src.volume) {
    if (!src.volume.volume_id) throw csiError(S.INVALID_ARGUMENT, 'volume_content_source.volume.volume_id is required');
    return { volumeId: src.volume.volume_id };
  }
  return undefined;
}

const sameSource = (a: ContentSource | undefined, b: ContentSource | undefined) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

function wireSource(src: ContentSource | undefined): object | null {
  if (!src) return null;
  return 'snapshotId' in src ? { snapshot: { snapshot_id: src.snapshotId } } : { volume: { volume_id: src.volumeId } };
}

/** Parse a pagination token (an offset into the sorted list); a token we never issued is ABORTED. */
function paginate<T>(items: T[], maxEntries: number, token: string): { page: T[]; next: string } {
  if (maxEntries < 0) throw csiError(S.INVALID_ARGUMENT, 'max_entries must not be negative');
  let start = 0;
  if (token) {
    if (!/^\d+$/.test(token) || Number(token) > items.length) throw csiError(S.ABORTED, `starting_token ${JSON.stringify(token)} is not valid`);
    start = Number(token);
  }
  const end = maxEntries ? Math.min(items.length, start + maxEntries) : items.length;
  return { page: items.slice(start, end), next: end < items.length ? String(end) : '' };
}

function timestamp(iso: string): { seconds: string; nanos: number } {
  const ms = Date.parse(iso) || 0;
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
}

export interface ControllerOptions {
  backend: VolumeBackend;
  /** This controller's zone: the accessible topology of every volume it creates. */
  zone?: string;
  logger?: Logger;
}

export function createControllerService(opts: ControllerOptions): grpc.UntypedServiceImplementation {
  const { backend } = opts;
  const log = opts.logger ?? silentLogger;
  const topology = opts.zone ? [{ [ZONE_KEY]: opts.zone }] : [];

  // CSI lets the CO retry while an operation is still running; the spec's answer is ABORTED,
  // and it keeps two attempts from racing on the same capsule.
  const inFlight = new Set<string>();
  async function exclusive<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const busy = keys.find((k) => inFlight.has(k));
    if (busy) throw csiError(S.ABORTED, `an operation on ${busy} is already in progress`);
    for (const k of keys) inFlight.add(k);
    try {
      return await fn();
    } finally {
      for (const k of keys) inFlight.delete(k);
    }
  }

  const volumeContext = (v: VolumeRecord): Record<string, string> => ({
    protocol: v.protocol,
    capsuleId: v.id,
    capsuleName: v.capsuleName,
    backend: backend.kind,
  });

  const wireVolume = (v: VolumeRecord) => ({
    capacity_bytes: String(v.capacityBytes),
    volume_id: v.id,
    volume_context: volumeContext(v),
    content_source: wireSource(v.contentSource),
    accessible_topology: v.topology.map((segments) => ({ segments })),
  });

  const wireSnapshot = (s: SnapshotRecord) => ({
    size_bytes: String(s.sizeBytes),
    snapshot_id: s.id,
    source_volume_id: s.sourceVolumeId,
    creation_time: timestamp(s.createdAt),
    ready_to_use: s.readyToUse,
    group_snapshot_id: '',
  });

  const mustVolume = async (id: string): Promise<VolumeRecord> => {
    const v = await backend.getVolume(id);
    if (!v) throw csiError(S.NOT_FOUND, `volume ${id} not found`);
    return v;
  };

  const checkCapabilities = (protocol: VolumeProtocol, caps: WCapability[] | undefined) => {
    if (!caps?.length) throw csiError(S.INVALID_ARGUMENT, 'volume_capabilities is required');
    for (const cap of caps) {
      const problem = capabilityProblem(protocol, cap);
      if (problem) throw csiError(S.INVALID_ARGUMENT, problem);
    }
  };

  return {
    CreateVolume: unary(async (req: {
      name: string; capacity_range: WCapacityRange | null; volume_capabilities: WCapability[];
      parameters: Record<string, string>; volume_content_source: WContentSource | null;
      accessibility_requirements: { requisite: WTopology[]; preferred: WTopology[] } | null;
    }) => {
      if (!req.name) throw csiError(S.INVALID_ARGUMENT, 'name is required');
      const parameters = req.parameters ?? {};
      const protocol = parseProtocol(parameters);
      checkCapabilities(protocol, req.volume_capabilities);
      let policy;
      try {
        policy = policyFromParameters(parameters);
      } catch (e) {
        throw csiError(S.INVALID_ARGUMENT, (e as Error).message);
      }
      const requisite = req.accessibility_requirements?.requisite ?? [];
      if (opts.zone && requisite.length && !requisite.some((t) => t.segments?.[ZONE_KEY] === opts.zone)) {
        throw csiError(S.RESOURCE_EXHAUSTED, `this controller provisions in zone ${opts.zone} only`);
      }
      const source = sourceOf(req.volume_content_source);
      return exclusive([`name:${req.name}`, ...(source && 'volumeId' in source ? [`volume:${source.volumeId}`] : [])], async () => {
        const existing = await backend.findVolumeByName(req.name);
        if (existing) {
          if (!fitsRange(existing.capacityBytes, req.capacity_range) || !sameSource(existing.contentSource, source)) {
            throw csiError(S.ALREADY_EXISTS, `volume ${req.name} exists with capacity ${existing.capacityBytes} and a different range or content source`);
          }
        }
        let floor = 0;
        if (source && !existing) {
          if ('snapshotId' in source) {
            const snap = await backend.getSnapshot(source.snapshotId);
            if (!snap) throw csiError(S.NOT_FOUND, `snapshot ${source.snapshotId} not found`);
            floor = snap.sizeBytes;
          } else {
            const src = await backend.getVolume(source.volumeId);
            if (!src) throw csiError(S.NOT_FOUND, `source volume ${source.volumeId} not found`);
            floor = src.capacityBytes;
          }
        }
        const capacityBytes = existing ? existing.capacityBytes : pickCapacity(req.capacity_range, floor);
        const v = await backend.createVolume({ name: req.name, capacityBytes, protocol, parameters, policy, topology, source });
        log.info('csi.volume_ready', { volume: v.id, name: req.name, capacity: v.capacityBytes, protocol, reused: !!existing });
        return { volume: wireVolume(v) };
      });
    }),

    DeleteVolume: unary(async (req: { volume_id: string }) => {
      if (!req.volume_id) throw csiError(S.INVALID_ARGUMENT, 'volume_id is required');
      // Deleting what is already gone succeeds: the CO retries deletes after timeouts.
      return exclusive([`volume:${req.volume_id}`], async () => {
        await backend.deleteVolume(req.volume_id);
        return {};
      });
    }),

    ControllerPublishVolume: unary(async () => {
      throw csiError(S.UNIMPLEMENTED, 'attach is not required: volumes are served by the gateway, not attached to nodes');
    }),
    ControllerUnpublishVolume: unary(async () => {
      throw csiError(S.UNIMPLEMENTED, 'attach is not required: volumes are served by the gateway, not attached to nodes');
    }),
    ControllerModifyVolume: unary(async () => {
      throw csiError(S.UNIMPLEMENTED, 'ControllerModifyVolume is not supported');
    }),

    ValidateVolumeCapabilities: unary(async (req: { volume_id: string; volume_capabilities: WCapability[]; volume_context: Record<string, string>; parameters: Record<string, string> }) => {
      if (!req.volume_id) throw csiError(S.INVALID_ARGUMENT, 'volume_id is required');
      if (!req.volume_capabilities?.length) throw csiError(S.INVALID_ARGUMENT, 'volume_capabilities is required');
      const v = await mustVolume(req.volume_id);
      const problems = req.volume_capabilities.map((c) => capabilityProblem(v.protocol, c)).filter((p): p is string => !!p);
      if (problems.length) return { confirmed: null, message: problems.join('; ') };
      return {
        confirmed: {
          volume_context: req.volume_context ?? {},
          volume_capabilities: req.volume_capabilities,
          parameters: req.parameters ?? {},
          mutable_parameters: {},
        },
        message: '',
      };
    }),

    ListVolumes: unary(async (req: { max_entries: number; starting_token: string }) => {
      const all = await backend.listVolumes();
      const { page, next } = paginate(all, req.max_entries ?? 0, req.starting_token ?? '');
      const entries = [];
      for (const v of page) {
        entries.push({ volume: wireVolume(v), status: { published_node_ids: [], volume_condition: await backend.volumeCondition(v.id) } });
      }
      return { entries, next_token: next };
    }),

    GetCapacity: unary(async (req: { volume_capabilities: WCapability[]; parameters: Record<string, string>; accessible_topology: WTopology | null }) => {
      const params = req.parameters ?? {};
      const protocol = parseProtocol(params);
      const zoneAsked = req.accessible_topology?.segments?.[ZONE_KEY];
      const unsupported = (req.volume_capabilities ?? []).some((c) => capabilityProblem(protocol, c));
      // Capacity we cannot serve there is zero capacity, which is what the CO wants to know.
      const available = unsupported || (zoneAsked && zoneAsked !== opts.zone) ? 0 : (await backend.availableCapacity()) ?? 0;
      return {
        available_capacity: String(available),
        maximum_volume_size: { value: String(available) },
        minimum_volume_size: { value: String(MIN_VOLUME_BYTES) },
      };
    }),

    ControllerGetCapabilities: unary(async () => ({
      capabilities: [
        'CREATE_DELETE_VOLUME', 'LIST_VOLUMES', 'GET_CAPACITY', 'CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS',
        'CLONE_VOLUME', 'GET_VOLUME', 'VOLUME_CONDITION', 'EXPAND_VOLUME',
      ].map((type) => ({ rpc: { type } })),
    })),

    CreateSnapshot: unary(async (req: { source_volume_id: string; name: string }) => {
      if (!req.name) throw csiError(S.INVALID_ARGUMENT, 'name is required');
      if (!req.source_volume_id) throw csiError(S.INVALID_ARGUMENT, 'source_volume_id is required');
      return exclusive([`snapshot:${req.name}`, `volume:${req.source_volume_id}`], async () => {
        const existing = await backend.findSnapshotByName(req.name);
        if (existing && existing.sourceVolumeId !== req.source_volume_id) {
          throw csiError(S.ALREADY_EXISTS, `snapshot ${req.name} exists for another source volume (${existing.sourceVolumeId})`);
        }
        if (!existing) await mustVolume(req.source_volume_id);
        const s = await backend.createSnapshot(req.source_volume_id, req.name);
        log.info('csi.snapshot_ready', { volume: req.source_volume_id, snapshot: s.id, name: req.name, ready: s.readyToUse });
        return { snapshot: wireSnapshot(s) };
      });
    }),

    DeleteSnapshot: unary(async (req: { snapshot_id: string }) => {
      if (!req.snapshot_id) throw csiError(S.INVALID_ARGUMENT, 'snapshot_id is required');
      return exclusive([`snapshotid:${req.snapshot_id}`], async () => {
        await backend.deleteSnapshot(req.snapshot_id);
        return {};
      });
    }),

    ListSnapshots: unary(async (req: { max_entries: number; starting_token: string; source_volume_id: string; snapshot_id: string }) => {
      let all: SnapshotRecord[];
      if (req.snapshot_id) {
        // An unknown id is an empty list, not an error (the spec says so).
        const s = await backend.getSnapshot(req.snapshot_id);
        all = s ? [s] : [];
      } else {
        all = await backend.listSnapshots();
      }
      if (req.source_volume_id) all = all.filter((s) => s.sourceVolumeId === req.source_volume_id);
      const { page, next } = paginate(all, req.max_entries ?? 0, req.starting_token ?? '');
      return { entries: page.map((s) => ({ snapshot: wireSnapshot(s) })), next_token: next };
    }),

    ControllerExpandVolume: unary(async (req: { volume_id: string; capacity_range: WCapacityRange | null; volume_capability: WCapability | null }) => {
      if (!req.volume_id) throw csiError(S.INVALID_ARGUMENT, 'volume_id is required');
      if (!req.capacity_range) throw csiError(S.INVALID_ARGUMENT, 'capacity_range is required');
      return exclusive([`volume:${req.volume_id}`], async () => {
        const v = await mustVolume(req.volume_id);
        const size = pickCapacity(req.capacity_range, 0);
        const capacity = await backend.expandVolume(v.id, size);
        // fuse and nfs report the new size as soon as `content` grows; an NVMe namespace with a
        // filesystem on it needs the node to grow the filesystem.
        const nodeExpansion = v.protocol === 'nvme' && req.volume_capability?.access_type !== 'block' && !req.volume_capability?.block;
        log.info('csi.volume_expanded', { volume: v.id, capacity, nodeExpansion });
        return { capacity_bytes: String(capacity), node_expansion_required: nodeExpansion };
      });
    }),

    ControllerGetVolume: unary(async (req: { volume_id: string }) => {
      if (!req.volume_id) throw csiError(S.INVALID_ARGUMENT, 'volume_id is required');
      const v = await mustVolume(req.volume_id);
      return { volume: wireVolume(v), status: { published_node_ids: [], volume_condition: await backend.volumeCondition(v.id) } };
    }),
  };
}
