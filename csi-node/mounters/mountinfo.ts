/**
 * /proc/self/mountinfo parsing (proc(5)): which filesystem is mounted where. Used to keep
 * stage/publish idempotent (is the target already mounted, and with what) and to spot NFS
 * mounts left from before a plugin restart.
 */
import fsp from 'node:fs/promises';

export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  /** major:minor of the device. */
  dev: string;
  /** The root of the mount within its filesystem ("/" unless a bind of a subtree). */
  root: string;
  mountPoint: string;
  mountOptions: string[];
  fstype: string;
  source: string;
  superOptions: string[];
}

/** Space, tab, newline and backslash appear as \ooo octal escapes. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountInfo(text: string): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const f = line.split(' ');
    // Optional fields (shared:N, master:N ...) sit between field 6 and the "-" separator.
    const sep = f.indexOf('-', 6);
    if (f.length < 10 || sep < 0) continue;
    out.push({
      mountId: Number(f[0]),
      parentId: Number(f[1]),
      dev: f[2]!,
      root: unescape(f[3]!),
      mountPoint: unescape(f[4]!),
      mountOptions: f[5]!.split(','),
      fstype: f[sep + 1] ?? '',
      source: unescape(f[sep + 2] ?? ''),
      superOptions: (f[sep + 3] ?? '').split(','),
    });
  }
  return out;
}

export async function readMountInfo(file = '/proc/self/mountinfo'): Promise<MountInfoEntry[]> {
  return parseMountInfo(await fsp.readFile(file, 'utf8'));
}

/** The top mount at exactly `target` (the last one listed when several are stacked). */
export function mountAtPath(entries: MountInfoEntry[], target: string): MountInfoEntry | undefined {
  let found: MountInfoEntry | undefined;
  for (const e of entries) if (e.mountPoint === target) found = e;
  return found;
}

/** Every mount of one NFS export ("server:/path"), nfs or nfs4. */
export function nfsMountsOf(entries: MountInfoEntry[], source: string): MountInfoEntry[] {
  return entries.filter((e) => (e.fstype === 'nfs' || e.fstype === 'nfs4') && e.source === source);
}
