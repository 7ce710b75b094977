/**
 * Views a gateway serves for its capsules. For this milestone: local FUSE mounts.
 * (NFS exports and NVMe/TCP namespaces join here in their own issues.)
 */
export interface MountSpec {
  ref: string; // capsule id or name
  target: string; // absolute directory
  rw: boolean;
}

export interface MountInfo extends MountSpec {
  capsuleId: string;
  /** 'fuse' for a kernel mount; 'content-file' when FUSE is unavailable and a read-only copy was placed instead. */
  kind: 'fuse' | 'content-file';
  since: string;
}

export interface ViewManager {
  mount(spec: MountSpec): Promise<MountInfo>;
  unmount(target: string): Promise<void>;
  list(): MountInfo[];
  /** Unmount everything (shutdown, SIGTERM). */
  closeAll(): Promise<void>;
}

/**
 * Network exports a gateway serves for its capsules: NVMe/TCP subsystems and NFS exports.
 * `name` is what clients ask for: the subsystem NQN, or the export path.
 */
export type ExportProtocol = 'nvme' | 'nfs';

export interface ExportSpec {
  protocol: ExportProtocol;
  ref: string;
  readOnly: boolean;
  /** NQN (nvme) or export path (nfs); generated from the capsule when absent. */
  name?: string;
  /** host:port to serve on; the gateway's default listener for the protocol when absent. */
  listen?: string;
  /** nvme: host NQNs; nfs: client CIDRs or host names. Empty = everyone. */
  allowed?: string[];
  /** nvme: logical block size (512 or 4096). */
  blockSize?: number;
  /** nvme: the capsule file backing the namespace (default `content`). */
  file?: string;
}

export interface ExportInfo {
  protocol: ExportProtocol;
  name: string;
  capsuleId: string;
  readOnly: boolean;
  /** The address and port the listener is bound to (may be a wildcard such as 0.0.0.0). */
  address: string;
  port: number;
  /** nfs: the MOUNT protocol's port (MOUNT is also answered on `port`). */
  mountPort?: number;
  allowed: string[];
  file?: string;
  since: string;
}

/** One protocol's exports (an NVMe/TCP target, an NFS server). */
export interface ExportBackend {
  readonly protocol: ExportProtocol;
  export(spec: ExportSpec): Promise<ExportInfo>;
  unexport(name: string): Promise<void>;
  list(): ExportInfo[];
  closeAll(): Promise<void>;
}

export interface ExportManager {
  export(spec: ExportSpec): Promise<ExportInfo>;
  unexport(protocol: ExportProtocol, name: string): Promise<void>;
  list(): ExportInfo[];
  closeAll(): Promise<void>;
}
