/**
 * The export table: which capsules the NFS view serves, under which paths, read-only or not, and
 * to which clients. MOUNT looks exports up by path; every NFS call finds its export through the
 * key inside the file handle, and is refused when the export is gone or the client not allowed.
 */
import net from 'node:net';
import { exists, invalid } from '../../capsule/errors.js';
import { exportKeyOf, generationOf } from './handles.js';

export interface ExportSpec {
  /** Absolute path clients mount ("/data/x"); default "/<capsule name>". */
  path?: string;
  /** Capsule id or name. */
  ref: string;
  readOnly?: boolean;
  /** IP addresses and CIDR blocks (IPv4 or IPv6); empty or absent = every client. */
  allowedClients?: string[];
}

export interface NfsExport {
  path: string;
  capsuleId: string;
  capsuleName: string;
  readOnly: boolean;
  allowedClients: string[];
  /** Export key inside file handles (hex). */
  key: string;
  generation: number;
  /** fsid in attributes: distinct per export, so clients never mix two exports' inode numbers. */
  fsid: bigint;
  /** Set when the capsule was deleted: its handles are STALE from then on. */
  gone: boolean;
  allows(address: string): boolean;
}

/** "/a//b/" -> "/a/b"; refuses relative paths and "." or ".." components. */
export function normalizeExportPath(p: string): string {
  if (typeof p !== 'string' || !p.startsWith('/')) throw invalid(`export path ${JSON.stringify(p)} must be absolute (start with "/")`);
  if (p.includes('\0')) throw invalid('export path must not contain a NUL byte');
  const parts = p.split('/').filter((c) => c.length > 0);
  if (parts.some((c) => c === '.' || c === '..')) throw invalid(`export path ${JSON.stringify(p)} must not contain "." or ".." components`);
  if (parts.length === 0) throw invalid('the export path must name something below "/"');
  return '/' + parts.join('/');
}

/** An IPv4-mapped IPv6 address ("::ffff:10.0.0.1") is that IPv4 address for matching. */
export function plainAddress(addr: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(addr);
  return m ? m[1]! : addr;
}

/** Compile a client list into a matcher; throws on an entry that is not an address or CIDR. */
export function clientMatcher(list: readonly string[]): (address: string) => boolean {
  if (list.length === 0) return () => true;
  const bl = new net.BlockList();
  for (const raw of list) {
    const entry = String(raw).trim();
    const [addr, prefixText, extra] = entry.split('/');
    const family = net.isIP(addr ?? '');
    if (!addr || !family || extra !== undefined) throw invalid(`allowed client ${JSON.stringify(raw)} must be an IP address or a CIDR block`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefixText === undefined) {
      bl.addAddress(addr, type);
      continue;
    }
    const prefix = Number(prefixText);
    if (!/^\d+$/.test(prefixText) || prefix > (family === 4 ? 32 : 128)) throw invalid(`allowed client ${JSON.stringify(raw)} has a bad prefix length`);
    bl.addSubnet(addr, prefix, type);
  }
  return (address: string) => {
    const a = plainAddress(address);
    const family = net.isIP(a);
    if (!family) return false;
    return bl.check(a, family === 4 ? 'ipv4' : 'ipv6');
  };
}

export class ExportTable {
  private readonly byPathMap = new Map<string, NfsExport>();
  private readonly byKeyMap = new Map<string, NfsExport>();

  add(spec: ExportSpec, capsule: { id: string; name: string; createdAt: string }): NfsExport {
    const path = normalizeExportPath(spec.path ?? `/${capsule.name}`);
    if (this.byPathMap.has(path)) throw exists(`NFS export ${path} already exists`);
    const allowedClients = [...(spec.allowedClients ?? [])];
    const allows = clientMatcher(allowedClients);
    const key = exportKeyOf(path, capsule.id);
    const exp: NfsExport = {
      path,
      capsuleId: capsule.id,
      capsuleName: capsule.name,
      readOnly: spec.readOnly ?? false,
      allowedClients,
      key,
      generation: generationOf(capsule.id, capsule.createdAt),
      fsid: BigInt('0x' + key),
      gone: false,
      allows,
    };
    this.byPathMap.set(path, exp);
    this.byKeyMap.set(key, exp);
    return exp;
  }

  remove(path: string): NfsExport | undefined {
    const exp = this.byPathMap.get(normalizeExportPath(path));
    if (!exp) return undefined;
    this.byPathMap.delete(exp.path);
    this.byKeyMap.delete(exp.key);
    return exp;
  }

  has(path: string): boolean {
    return this.byPathMap.has(path);
  }

  byKey(key: string): NfsExport | undefined {
    return this.byKeyMap.get(key);
  }

  list(): NfsExport[] {
    return [...this.byPathMap.values()].sort((a, b) => a.path.localeCompare(b.path));
  }

  forCapsule(capsuleId: string): NfsExport[] {
    return this.list().filter((e) => e.capsuleId === capsuleId);
  }

  /**
   * The export a MOUNT path falls under (longest matching prefix) and the rest of the path
   * inside the capsule, so clients may mount a directory below an export as well.
   */
  match(dirpath: string): { exp: NfsExport; rest: string } | undefined {
    let p: string;
    try {
      p = normalizeExportPath(dirpath);
    } catch {
      return undefined;
    }
    for (let cut = p; cut.length > 0; cut = cut.slice(0, cut.lastIndexOf('/'))) {
      const exp = this.byPathMap.get(cut);
      if (exp) return { exp, rest: p.slice(cut.length).replace(/^\/+/, '') };
    }
    return undefined;
  }
}
