/**
 * Conversions between the capsule types (capsule/types.ts) and the proto messages as
 * @grpc/proto-loader hands them over (snake_case, int64 as number, enums as names, unset
 * `optional` fields undefined). Used in both directions by the service and the client.
 */
import type { CreateOptions, CloneOptions } from '../capsule/api.js';
import type { Policy } from '../capsule/policy.js';
import type {
  CapsuleInfo, CapsuleStat, ChangeEvent, ChangeKind, DirEntry, FileAttr, FsckReport, GcReport, SetAttr, StoreStat,
} from '../capsule/types.js';
import type { ExportInfo, ExportSpec, MountInfo } from './views-api.js';

// ---- wire shapes -------------------------------------------------------------------------

export interface WCreateRequest { id?: string; name?: string; policy_json: string; size?: number }
export interface WVersionInfo { version: number; created_at: string; logical_size: number }
export interface WCapsuleInfo {
  id: string; name: string; policy_json: string; created_at: string; versions: WVersionInfo[];
  origin?: { capsule: string; version?: number };
}
export interface WFileAttr {
  ino: number; type: 'FILE' | 'DIR' | 'FILE_TYPE_UNSPECIFIED'; mode: number; uid: number; gid: number; size: number;
  nlink: number; atime_ms: number; mtime_ms: number; ctime_ms: number; allocated: number;
}
export interface WDirEntry { name: string; attr: WFileAttr }
export interface WSetAttr { mode?: number; uid?: number; gid?: number; size?: number; atime_ms?: number; mtime_ms?: number }
export interface WCapsuleStat {
  id: string; name: string; logical_size: number; stored_size: number; dedup_ratio: number;
  files: number; dirs: number; segments: number; versions: number[]; digest?: string;
}
export interface WStoreStat { capsules: number; segments: number; stored_bytes: number; referenced_bytes: number; dedup_ratio: number }
export interface WGcReport { segments_removed: number; bytes_freed: number }
export interface WFsckProblem {
  capsule?: string; version?: number; head: boolean; file?: string; offset?: number; segment?: string; problem: string;
}
export interface WFsckReport { capsules: number; files: number; segments_checked: number; problems: WFsckProblem[]; orphan_segments: number }
export interface WChangeEvent { kind: string; capsule: string; name: string; path?: string; version?: number; at: string }
export interface WMountInfo { ref: string; target: string; rw: boolean; capsule_id: string; kind: string; since: string }
export interface WCloneRequest { ref: string; id?: string; name?: string; version?: number }

export interface WPutHeader { ref: string; path: string; mode?: number; create?: WCreateRequest }
export interface WPutRequest { msg?: 'header' | 'data'; header?: WPutHeader; data?: Buffer }
export interface WReadRequest { ref: string; path: string; offset: number; length?: number; version?: number }
export interface WReadChunk { offset: number; data: Buffer }
export interface WWriteRequest { ref: string; path: string; offset: number; data: Buffer }
export interface WPathRequest { ref: string; path: string; version?: number }
export interface WModeRequest { ref: string; path: string; mode?: number }

/** Drop undefined keys: an `optional` field must be absent, not "undefined", on the wire. */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

// ---- capsules ------------------------------------------------------------------------------

export function createToWire(o: CreateOptions): WCreateRequest {
  return compact({ id: o.id, name: o.name, policy_json: o.policy ? JSON.stringify(o.policy) : '', size: o.size });
}

export function infoToWire(i: CapsuleInfo): WCapsuleInfo {
  return {
    id: i.id,
    name: i.name,
    policy_json: JSON.stringify(i.policy),
    created_at: i.createdAt,
    versions: i.versions.map((v) => ({ version: v.version, created_at: v.createdAt, logical_size: v.logicalSize })),
    ...(i.origin ? { origin: compact({ capsule: i.origin.capsule, version: i.origin.version ?? undefined }) } : {}),
  };
}

export function infoFromWire(w: WCapsuleInfo): CapsuleInfo {
  return {
    id: w.id,
    name: w.name,
    // The server validated the policy; the client trusts its own gateway's JSON.
    policy: JSON.parse(w.policy_json || '{}') as Policy,
    createdAt: w.created_at,
    versions: (w.versions ?? []).map((v) => ({ version: v.version, createdAt: v.created_at, logicalSize: v.logical_size })),
    ...(w.origin ? { origin: { capsule: w.origin.capsule, version: w.origin.version ?? null } } : {}),
  };
}

export function cloneToWire(ref: string, o: CloneOptions = {}): WCloneRequest {
  return compact({ ref, id: o.id, name: o.name, version: o.version });
}

// ---- files ---------------------------------------------------------------------------------

export function attrToWire(a: FileAttr): WFileAttr {
  return {
    ino: a.ino, type: a.type === 'dir' ? 'DIR' : 'FILE', mode: a.mode, uid: a.uid, gid: a.gid, size: a.size,
    nlink: a.nlink, atime_ms: a.atimeMs, mtime_ms: a.mtimeMs, ctime_ms: a.ctimeMs, allocated: a.allocated,
  };
}

export function attrFromWire(w: WFileAttr): FileAttr {
  return {
    ino: w.ino, type: w.type === 'DIR' ? 'dir' : 'file', mode: w.mode, uid: w.uid, gid: w.gid, size: w.size,
    nlink: w.nlink, atimeMs: w.atime_ms, mtimeMs: w.mtime_ms, ctimeMs: w.ctime_ms, allocated: w.allocated,
  };
}

export const direntToWire = (d: DirEntry): WDirEntry => ({ name: d.name, attr: attrToWire(d.attr) });
export const direntFromWire = (w: WDirEntry): DirEntry => ({ name: w.name, attr: attrFromWire(w.attr) });

export function setAttrToWire(s: SetAttr): WSetAttr {
  return compact({ mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, atime_ms: s.atimeMs, mtime_ms: s.mtimeMs });
}

export function setAttrFromWire(w: WSetAttr | undefined): SetAttr {
  if (!w) return {};
  return compact({ mode: w.mode, uid: w.uid, gid: w.gid, size: w.size, atimeMs: w.atime_ms, mtimeMs: w.mtime_ms });
}

// ---- store-wide ----------------------------------------------------------------------------

export function statToWire(s: CapsuleStat): WCapsuleStat {
  return compact({
    id: s.id, name: s.name, logical_size: s.logicalSize, stored_size: s.storedSize, dedup_ratio: s.dedupRatio,
    files: s.files, dirs: s.dirs, segments: s.segments, versions: s.versions, digest: s.digest,
  });
}

export function statFromWire(w: WCapsuleStat): CapsuleStat {
  return compact({
    id: w.id, name: w.name, logicalSize: w.logical_size, storedSize: w.stored_size, dedupRatio: w.dedup_ratio,
    files: w.files, dirs: w.dirs, segments: w.segments, versions: w.versions ?? [], digest: w.digest,
  });
}

export const storeStatToWire = (s: StoreStat): WStoreStat => ({
  capsules: s.capsules, segments: s.segments, stored_bytes: s.storedBytes, referenced_bytes: s.referencedBytes, dedup_ratio: s.dedupRatio,
});
export const storeStatFromWire = (w: WStoreStat): StoreStat => ({
  capsules: w.capsules, segments: w.segments, storedBytes: w.stored_bytes, referencedBytes: w.referenced_bytes, dedupRatio: w.dedup_ratio,
});

export const gcToWire = (g: GcReport): WGcReport => ({ segments_removed: g.segmentsRemoved, bytes_freed: g.bytesFreed });
export const gcFromWire = (w: WGcReport): GcReport => ({ segmentsRemoved: w.segments_removed, bytesFreed: w.bytes_freed });

export function fsckToWire(r: FsckReport): WFsckReport {
  return {
    capsules: r.capsules, files: r.files, segments_checked: r.segmentsChecked, orphan_segments: r.orphanSegments,
    problems: r.problems.map((p) => compact({
      capsule: p.capsule, version: p.version ?? undefined, head: p.version === null, file: p.file,
      offset: p.offset, segment: p.segment, problem: p.problem,
    })),
  };
}

export function fsckFromWire(w: WFsckReport): FsckReport {
  return {
    capsules: w.capsules, files: w.files, segmentsChecked: w.segments_checked, orphanSegments: w.orphan_segments,
    problems: (w.problems ?? []).map((p) => compact({
      capsule: p.capsule, version: p.head ? null : p.version, file: p.file, offset: p.offset, segment: p.segment, problem: p.problem,
    })),
  };
}

export const changeToWire = (e: ChangeEvent): WChangeEvent =>
  compact({ kind: e.kind, capsule: e.capsule, name: e.name, path: e.path, version: e.version, at: e.at });
export const changeFromWire = (w: WChangeEvent): ChangeEvent =>
  compact({ kind: w.kind as ChangeKind, capsule: w.capsule, name: w.name, path: w.path, version: w.version, at: w.at });

export const mountToWire = (m: MountInfo): WMountInfo => ({
  ref: m.ref, target: m.target, rw: m.rw, capsule_id: m.capsuleId, kind: m.kind, since: m.since,
});
export const mountFromWire = (w: WMountInfo): MountInfo => ({
  ref: w.ref, target: w.target, rw: w.rw, capsuleId: w.capsule_id, kind: w.kind as MountInfo['kind'], since: w.since,
});

export interface WExportRequest { protocol: string; ref: string; read_only: boolean; name?: string; listen?: string; allowed: string[]; block_size?: number; file?: string }
export interface WExportInfo { protocol: string; name: string; capsule_id: string; read_only: boolean; address: string; port: number; mount_port?: number; allowed: string[]; file?: string; since: string }

export const exportSpecToWire = (s: ExportSpec): WExportRequest => ({
  protocol: s.protocol, ref: s.ref, read_only: s.readOnly, name: s.name, listen: s.listen, allowed: s.allowed ?? [], block_size: s.blockSize, file: s.file,
});
export const exportToWire = (e: ExportInfo): WExportInfo => ({
  protocol: e.protocol, name: e.name, capsule_id: e.capsuleId, read_only: e.readOnly, address: e.address, port: e.port, mount_port: e.mountPort, allowed: e.allowed, file: e.file, since: e.since,
});
export const exportFromWire = (w: WExportInfo): ExportInfo => ({
  protocol: w.protocol as ExportInfo['protocol'], name: w.name, capsuleId: w.capsule_id, readOnly: w.read_only, address: w.address, port: w.port,
  allowed: w.allowed ?? [], ...(w.file ? { file: w.file } : {}), ...(w.mount_port ? { mountPort: w.mount_port } : {}), since: w.since,
});
