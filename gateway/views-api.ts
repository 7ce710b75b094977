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
