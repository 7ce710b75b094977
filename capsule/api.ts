/**
 * The capsule API: what every front end (CLI, gRPC gateway, FUSE, later NFS/NVMe/CSI) calls.
 * Implemented by the local `Store` (capsule/store.ts) and by the gRPC client
 * (gateway/client.ts), so spacectl works the same on a data dir or on a remote gateway.
 *
 * A capsule is named by `ref`: its id (a UUID) or its name. Paths are POSIX, relative to the
 * capsule root ("content", "dir/a.txt"; a leading "/" is accepted). `version` undefined = live head.
 */
import type { Policy } from './policy.js';
import type {
  CapsuleInfo, CapsuleStat, ChangeEvent, DirEntry, FileAttr, FsckReport, GcReport, SetAttr, StoreStat, VersionSel,
} from './types.js';

export interface CreateOptions {
  id?: string;
  name?: string;
  policy?: Policy;
  /** Create `content` as a sparse file of this size (a block-volume capsule). */
  size?: number;
}

export interface CloneOptions {
  id?: string;
  name?: string;
  /** Clone this snapshot; default the live head. */
  version?: number;
}

export interface PutOptions {
  mode?: number;
  /** Create the capsule if it does not exist yet (with this policy). */
  createWith?: CreateOptions;
}

export interface CapsuleApi {
  create(opts: CreateOptions): Promise<CapsuleInfo>;
  get(ref: string): Promise<CapsuleInfo>;
  list(): Promise<CapsuleInfo[]>;
  delete(ref: string): Promise<void>;

  /** Stream a whole file into the capsule (replaces it atomically on success). Bounded memory. */
  put(ref: string, path: string, source: AsyncIterable<Uint8Array>, opts?: PutOptions): Promise<FileAttr>;
  /**
   * Random-access read; short only at end of file. The result may be a view of the store's
   * verified-segment cache: treat it as read-only.
   */
  read(ref: string, path: string, offset: number, length: number, version?: VersionSel): Promise<Buffer>;
  /** Stream a range (default whole file) in pieces of at most one segment. */
  readStream(ref: string, path: string, opts?: { offset?: number; length?: number; version?: VersionSel }): AsyncIterable<Buffer>;
  /** Write at offset (copy-on-write segments); durable when it returns. */
  write(ref: string, path: string, offset: number, data: Uint8Array): Promise<number>;
  truncate(ref: string, path: string, size: number): Promise<void>;

  getattr(ref: string, path: string, version?: VersionSel): Promise<FileAttr>;
  readdir(ref: string, path: string, version?: VersionSel): Promise<DirEntry[]>;
  mkdir(ref: string, path: string, mode?: number): Promise<FileAttr>;
  createFile(ref: string, path: string, mode?: number): Promise<FileAttr>;
  unlink(ref: string, path: string): Promise<void>;
  rmdir(ref: string, path: string): Promise<void>;
  rename(ref: string, from: string, to: string): Promise<void>;
  setattr(ref: string, path: string, attr: SetAttr): Promise<FileAttr>;

  snapshot(ref: string): Promise<number>;
  clone(ref: string, opts?: CloneOptions): Promise<CapsuleInfo>;
  stat(ref: string): Promise<CapsuleStat>;
  storeStat(): Promise<StoreStat>;
  gc(): Promise<GcReport>;
  fsck(): Promise<FsckReport>;

  /** Change feed; ends when the signal aborts. */
  watch(signal: AbortSignal): AsyncIterable<ChangeEvent>;
}
