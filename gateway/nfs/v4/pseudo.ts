/**
 * The NFSv4 pseudo file system (RFC 8881 section 7): PUTROOTFH lands in a read-only directory
 * tree made of the export paths ("/photos", "/archive/photos-ro" gives "/" with "photos" and
 * "archive", and "archive" with "photos-ro"); LOOKUP through it reaches an export's root, from
 * where the capsule's own files and handles take over.
 *
 * Each client sees only the exports its address may use, so names of other tenants' exports do
 * not show. Pseudo directories have handles of their own, recognizably not file handles (byte 1
 * is 'p', which v3 refuses as BADHANDLE) and stable as long as the export paths are.
 */
import crypto from 'node:crypto';
import type { FileAttr } from '../../../capsule/types.js';
import type { ExportTable, NfsExport } from '../exports.js';
import { FH_MAGIC, FH_SIZE } from '../handles.js';
import { NfsError } from '../status.js';
import type { Fsid4 } from './attrs4.js';
import { Status4 } from './constants.js';

const PSEUDO_LAYOUT = 0x70; // 'p'

/** fsid of the pseudo file system: different from every export's (those are hashes). */
export const PSEUDO_FSID: Fsid4 = { major: 0n, minor: 1n };

export type PseudoChild = { name: string; kind: 'dir'; path: string } | { name: string; kind: 'export'; exp: NfsExport };

function digest(path: string): Buffer {
  return crypto.createHash('sha256').update(`pseudo\0${path}`).digest();
}

export function pseudoHandle(path: string): Buffer {
  const b = Buffer.alloc(FH_SIZE);
  b[0] = FH_MAGIC;
  b[1] = PSEUDO_LAYOUT;
  digest(path).copy(b, 4, 0, 16);
  return b;
}

export const isPseudoHandle = (fh: Buffer): boolean => fh.length === FH_SIZE && fh[0] === FH_MAGIC && fh[1] === PSEUDO_LAYOUT;

/** A pseudo directory's fileid: from its path, so it survives restarts like the handle. */
export function pseudoFileid(path: string): number {
  const d = digest(path);
  // 52 bits, never 0 or 1 (the capsule root's number, in case a client compares across fsids)
  return (d.readUInt32BE(0) & 0xfffff) * 0x1_0000_0000 + d.readUInt32BE(4) + 2;
}

const parentOf = (p: string): string => {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
};

export class PseudoFs {
  private readonly started = Date.now();

  constructor(private readonly exports: ExportTable) {}

  /** Exports a client at `address` may see. */
  visible(address: string): NfsExport[] {
    return this.exports.list().filter((e) => !e.gone && e.allows(address));
  }

  /** Whether `path` is a pseudo directory for this client ("/" always is). */
  isDir(path: string, address: string): boolean {
    if (path === '/') return true;
    return this.visible(address).some((e) => e.path.startsWith(path + '/') && e.path !== path);
  }

  children(path: string, address: string): PseudoChild[] {
    const prefix = path === '/' ? '/' : path + '/';
    const byName = new Map<string, PseudoChild>();
    for (const e of this.visible(address)) {
      if (!e.path.startsWith(prefix)) continue;
      const rest = e.path.slice(prefix.length);
      const name = rest.split('/')[0]!;
      if (rest === name) byName.set(name, { name, kind: 'export', exp: e });
      else if (!byName.has(name)) byName.set(name, { name, kind: 'dir', path: prefix + name });
    }
    return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  lookup(path: string, name: string, address: string): PseudoChild {
    const hit = this.children(path, address).find((c) => c.name === name);
    if (hit) return hit;
    // An export the client may not use answers like a missing name would, except that the
    // refusal is logged by the caller as an access problem.
    const full = (path === '/' ? '' : path) + '/' + name;
    if (this.exports.list().some((e) => e.path === full || e.path.startsWith(full + '/'))) {
      throw new NfsError(Status4.ACCESS, `client ${address} may not use ${full}`);
    }
    throw new NfsError(Status4.NOENT, `${full} is not exported`);
  }

  /** The pseudo directory a pseudo handle names (STALE once no export is below it). */
  pathOfHandle(fh: Buffer, address: string): string {
    const want = fh.subarray(4, 20);
    const candidates = new Set<string>(['/']);
    for (const e of this.visible(address)) {
      for (let p = parentOf(e.path); p !== '/'; p = parentOf(p)) candidates.add(p);
    }
    for (const p of candidates) if (digest(p).subarray(0, 16).equals(want)) return p;
    throw new NfsError(Status4.STALE, 'pseudo directory no longer exists');
  }

  parent(path: string): string {
    return parentOf(path);
  }

  /** An export of a client directly below a capsule directory (nested export paths). */
  nestedExport(exp: NfsExport, capsulePath: string, address: string): NfsExport | undefined {
    const full = capsulePath ? `${exp.path}/${capsulePath}` : exp.path;
    return this.visible(address).find((e) => e.path === full && e !== exp);
  }

  hasNested(exp: NfsExport): boolean {
    return this.exports.list().some((e) => e.path.startsWith(exp.path + '/'));
  }

  attr(path: string, address: string): FileAttr {
    const kids = this.children(path, address);
    // The listing changes when exports come and go: fold it into the times (and so into the
    // change attribute), or clients would keep showing a cached listing.
    const h = digest(kids.map((k) => k.name).join('\0')).readUInt32BE(0) % 1_000_000;
    const t = this.started + h / 1000;
    return {
      ino: pseudoFileid(path), type: 'dir', mode: 0o555, uid: 0, gid: 0, size: 0, nlink: 2 + kids.length,
      atimeMs: t, mtimeMs: t, ctimeMs: t, allocated: 0,
    };
  }
}
