/**
 * The node plugin's memory across restarts: which volumes are staged where, by which mount
 * process, and where they are published. Kubelet does not tell a restarted plugin what it had
 * set up, and FUSE mount processes outlive the plugin, so without this file a restarted plugin
 * could neither repair a dead mount nor unstage cleanly.
 *
 * One JSON file, replaced atomically (write a temp file, fsync, rename, fsync the directory):
 * a crash mid-write leaves either the old or the new state, never a torn file.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export type Protocol = 'fuse' | 'nfs' | 'nvme';

export interface MountProcessRecord {
  pid: number;
  /** argv after the node binary: tells our mount process from an unrelated one that reused the pid. */
  args: string[];
  startedAt: string;
}

export interface PublishRecord {
  readonly: boolean;
  block: boolean;
  /** We created the target (dir or, for raw block, file), so unpublish removes it. */
  createdTarget: boolean;
  publishedAt: string;
}

export interface VolumeRecord {
  volumeId: string;
  capsuleId: string;
  protocol: Protocol;
  stagingPath: string;
  /** 'block' or 'mount' (with fsType): what the staging satisfied, for idempotency checks. */
  accessType: 'block' | 'mount';
  fsType?: string;
  /** Staged read-only (every publish then is read-only too). */
  readonly: boolean;
  /** FUSE: the process serving the staging mount. */
  mountProcess?: MountProcessRecord;
  /** NVMe/TCP: the subsystem and the block device it appeared as. */
  nvme?: { nqn: string; address: string; port: string; hostNqn?: string; device?: string };
  /** NFS: what was mounted at the staging path. */
  nfs?: { address: string; port: string; export: string };
  publishes: Record<string, PublishRecord>;
  /** We created the staging dir (kubelet normally does), so unstage removes it. */
  createdStaging: boolean;
  stagedAt: string;
}

interface StateFile {
  version: 1;
  volumes: Record<string, VolumeRecord>;
}

export class NodeState {
  private data: StateFile = { version: 1, volumes: {} };
  /** Saves are serialized: two concurrent renames could otherwise land the older content last. */
  private saving: Promise<void> = Promise.resolve();
  readonly file: string;

  private constructor(readonly dir: string) {
    this.file = path.join(dir, 'node-state.json');
  }

  static async open(dir: string): Promise<NodeState> {
    const s = new NodeState(dir);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      const parsed = JSON.parse(await fsp.readFile(s.file, 'utf8')) as StateFile;
      if (parsed?.version !== 1 || typeof parsed.volumes !== 'object') throw new Error(`unsupported state format in ${s.file}`);
      s.data = parsed;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return s;
  }

  get(volumeId: string): VolumeRecord | undefined {
    return this.data.volumes[volumeId];
  }

  list(): VolumeRecord[] {
    return Object.values(this.data.volumes);
  }

  /** The volume published (or staged) at `p`, if any. */
  findByPath(p: string): { volume: VolumeRecord; kind: 'published' | 'staged' } | undefined {
    for (const v of this.list()) {
      if (v.publishes[p]) return { volume: v, kind: 'published' };
      if (v.stagingPath === p) return { volume: v, kind: 'staged' };
    }
    return undefined;
  }

  async put(v: VolumeRecord): Promise<void> {
    this.data.volumes[v.volumeId] = v;
    await this.save();
  }

  async remove(volumeId: string): Promise<void> {
    delete this.data.volumes[volumeId];
    await this.save();
  }

  save(): Promise<void> {
    const snapshot = JSON.stringify(this.data, null, 2);
    const next = this.saving.then(() => writeAtomic(this.file, snapshot));
    this.saving = next.catch(() => {});
    return next;
  }
}

/** Also used by the mounter sidecar for its own state file (csi-node/mounter-service.ts). */
export async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await fsp.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  // The rename is durable only once the directory entry is: fsync the directory too.
  const dfd = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
