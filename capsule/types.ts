/** Public data types of the capsule store, shared by the store, the gateway and its clients. */
import type { Policy } from './policy.js';

export type FileType = 'file' | 'dir';

export interface CapsuleInfo {
  id: string;
  name: string;
  policy: Policy;
  createdAt: string;
  /** Frozen versions (snapshots), oldest first. The live head is not a version number. */
  versions: VersionInfo[];
  /** Set when the capsule was cloned from another. */
  origin?: { capsule: string; version: number | null };
}

export interface VersionInfo {
  version: number;
  createdAt: string;
  logicalSize: number;
}

export interface FileAttr {
  ino: number;
  type: FileType;
  mode: number; // permission bits only (e.g. 0o644)
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Bytes of segments actually allocated (holes excluded). */
  allocated: number;
}

export interface DirEntry {
  name: string;
  attr: FileAttr;
}

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atimeMs?: number;
  mtimeMs?: number;
}

export interface CapsuleStat {
  id: string;
  name: string;
  /** Sum of file sizes in the live head. */
  logicalSize: number;
  /** Bytes of distinct stored segments referenced by this capsule (any version). */
  storedSize: number;
  /** Referenced plaintext bytes / distinct plaintext bytes (>= 1 when data repeats). */
  dedupRatio: number;
  files: number;
  dirs: number;
  segments: number;
  versions: number[];
  /** sha256 of the `content` file, or of the sorted tree listing and file digests. */
  digest?: string;
}

export interface StoreStat {
  capsules: number;
  segments: number;
  storedBytes: number;
  referencedBytes: number;
  dedupRatio: number;
}

export interface GcReport {
  segmentsRemoved: number;
  bytesFreed: number;
}

export interface FsckProblem {
  capsule?: string;
  version?: number | null;
  file?: string;
  offset?: number;
  segment?: string;
  problem: string;
}

export interface FsckReport {
  capsules: number;
  files: number;
  segmentsChecked: number;
  problems: FsckProblem[];
  orphanSegments: number;
}

export interface RecoveryReport {
  tempFilesRemoved: number;
  orphanSegmentsRemoved: number;
  staleLockRemoved: boolean;
}

export type ChangeKind = 'created' | 'written' | 'snapshot' | 'cloned' | 'deleted' | 'meta';

export interface ChangeEvent {
  kind: ChangeKind;
  capsule: string;
  name: string;
  path?: string;
  version?: number;
  at: string;
}

/** Which version to read: undefined = live head. */
export type VersionSel = number | undefined;

/** How a buffered write may treat the caller's bytes (Store.writeBuffered). */
export interface BufferedWriteOptions {
  /**
   * The caller gives the bytes up (it will neither change nor reuse the memory, as with a
   * request record received for this call): a piece covering a whole segment may become the
   * buffered segment as it is, instead of being copied.
   */
  adopt?: boolean;
  /**
   * With adopt: run once the store holds no reference to the bytes any more, so the caller may
   * reuse the memory. Never run while that memory may still be referenced.
   */
  release?: () => void;
}
