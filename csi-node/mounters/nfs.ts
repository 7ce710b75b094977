/**
 * NFS v4.2 staging through the kernel client (mount.nfs).
 *
 * test/csi-nfs-kernel.test.ts runs this class for real: its mount command line executes in a
 * QEMU guest's kernel NFS client against the gateway's NFS server, and mount detection reads the
 * guest's /proc/self/mountinfo. test/csi-node.test.ts covers error paths with recorded output.
 */
import { runChecked, type CommandRunner } from './exec.js';
import { mountAtPath, nfsMountsOf, readMountInfo, type MountInfoEntry } from './mountinfo.js';

export interface NfsExport {
  address: string;
  port: string;
  export: string;
}

export function nfsSource(e: NfsExport): string {
  const exp = e.export.startsWith('/') ? e.export : `/${e.export}`;
  // An IPv6 literal must be bracketed in the source, or mount.nfs splits it at the first colon.
  const host = e.address.includes(':') && !e.address.startsWith('[') ? `[${e.address}]` : e.address;
  return `${host}:${exp}`;
}

export function nfsMountArgs(e: NfsExport, target: string, readonly: boolean, flags: string[] = []): string[] {
  // vers=4.2 and proto=tcp pinned: a silent fallback to v3 would need rpcbind/mountd, which the
  // gateway does not run, and would hang instead of failing.
  const opts = ['vers=4.2', 'proto=tcp', `port=${e.port}`, ...(readonly ? ['ro'] : []), ...flags];
  return ['-t', 'nfs', '-o', opts.join(','), nfsSource(e), target];
}

export class NfsMounter {
  constructor(private readonly run: CommandRunner, private readonly mountInfo: () => Promise<MountInfoEntry[]> = () => readMountInfo()) {}

  /** Mount unless this export is already mounted at `target` (idempotent stage). */
  async mount(e: NfsExport, target: string, readonly: boolean, flags: string[] = []): Promise<'mounted' | 'existing'> {
    const at = mountAtPath(await this.mountInfo(), target);
    if (at) {
      if (nfsMountsOf([at], nfsSource(e)).length) return 'existing';
      throw new Error(`${target} already has a ${at.fstype} mount of ${at.source}`);
    }
    await runChecked(this.run, 'mount', nfsMountArgs(e, target, readonly, flags));
    return 'mounted';
  }

  async unmount(target: string): Promise<void> {
    if (!mountAtPath(await this.mountInfo(), target)) return;
    await runChecked(this.run, 'umount', [target]);
  }
}
