/**
 * Directory operations: CREATE (directories), REMOVE, RENAME, LINK, READDIR, READLINK, OPENATTR.
 *
 * The store has directories and regular files only: CREATE of anything but a directory is
 * BADTYPE (RFC 8881 section 18.4: a type the server does not support, or one OPEN creates),
 * LINK is NOTSUPP (link_support is false), READLINK finds no symlink (INVAL), named attributes
 * do not exist (OPENATTR NOTSUPP).
 *
 * READDIR cookies follow the v3 scheme: a child's cookie is its inode number + 2 and children
 * are listed in inode order, so "continue after cookie c" stays right whatever is created or
 * removed between two calls, and no cookie goes bad (1 and 2 are reserved in v4 and never used).
 * The pseudo file system numbers its entries by position (its listing changes only when exports
 * do).
 */
import { ROOT_INO } from '../../../../capsule/schema.js';
import type { FileAttr, SetAttr } from '../../../../capsule/types.js';
import type { Target } from '../../context.js';
import type { NfsExport } from '../../exports.js';
import { CHILD_COOKIE_BASE, childPath, resumeIndex } from '../../inodes.js';
import { NfsError, statusOf } from '../../status.js';
import { XdrWriter } from '../../xdr.js';
import {
  decodeSetAttrs, needsFsStats, readBitmap, readFattr4, writeBitmap, writeFattr4, writeFattr4Error, type AttrSubject,
} from '../attrs4.js';
import type { Compound, OpDef } from '../compound.js';
import { Ftype4, NFS4_OPAQUE_LIMIT, Op, Status4 } from '../constants.js';
import { PSEUDO_FSID, pseudoHandle } from '../pseudo.js';
import { toSetAttr } from '../../attrs.js';
import { checkName, isNotFound, readComponent, writable, writeChangeInfo } from './util.js';

/** Largest READDIR reply built, whatever the client asks for. */
const MAX_DIR_REPLY = 1 << 20;
const COOKIE_BASE = CHILD_COOKIE_BASE;
const PSEUDO_COOKIE_BASE = 3;
/** READDIR4resok around the entries: verifier, end-of-list, eof (and the op header). */
const DIR_OVERHEAD = 8 + 4 + 4 + 8;

function cookieVerifier(generation: number): Buffer {
  const v = Buffer.alloc(8);
  v.writeUInt32BE(generation >>> 0, 0);
  v.writeUInt32BE(4, 4);
  return v;
}
const PSEUDO_VERIFIER = Buffer.from('pseudo-4', 'latin1');

/** The directory a name-changing operation works in: a store directory of a writable export. */
async function writableDir(c: Compound): Promise<{ t: Target; before: FileAttr }> {
  const t = await c.target(Status4.ROFS);
  writable(t);
  const before = await c.ctx.store.getattr(t.exp.capsuleId, t.path);
  if (before.type !== 'dir') throw new NfsError(Status4.NOTDIR, `${t.path || '/'} is not a directory`);
  return { t, before };
}

interface DirEntry4 {
  name: string;
  cookie: number;
  subject?: AttrSubject;
  /** An entry whose attributes could not be read. */
  error?: number;
}

export function dirOps(): Map<number, OpDef> {
  const ops = new Map<number, OpDef>();

  ops.set(Op.CREATE, {
    handler: async (c, r) => {
      const type = r.uint32();
      if (type === Ftype4.LNK) r.opaque(NFS4_OPAQUE_LIMIT * 4);
      else if (type === Ftype4.BLK || type === Ftype4.CHR) {
        r.uint32();
        r.uint32();
      }
      const rawName = readComponent(r);
      const attrs = readFattr4(r);
      const cur = c.requireFh();
      if (cur.kind === 'pseudo') return { status: Status4.ROFS };
      if (type !== Ftype4.DIR) return { status: Status4.BADTYPE };
      const name = checkName(rawName);
      const set = decodeSetAttrs(attrs, c.minor);
      const { t, before } = await writableDir(c);
      const id = t.exp.capsuleId;
      const p = childPath(t.path, name);
      let a = await c.ctx.store.mkdir(id, p, set.mode ?? 0o755);
      const extra: SetAttr = toSetAttr({ ...set, mode: undefined, size: undefined });
      const who = c.call.authSys;
      if (who) {
        if (extra.uid === undefined && a.uid !== who.uid) extra.uid = who.uid;
        if (extra.gid === undefined && a.gid !== who.gid) extra.gid = who.gid;
      }
      if (Object.keys(extra).length > 0) a = await c.ctx.store.setattr(id, p, extra);
      t.view.remember(a.ino, t.ino, name);
      const after = await c.ctx.store.getattr(id, t.path);
      c.setFs({ exp: t.exp, view: t.view, ino: a.ino, path: p });
      return {
        status: Status4.OK,
        body: (w) => {
          writeChangeInfo(w, before, after);
          writeBitmap(w, set.mask);
        },
      };
    },
  });

  ops.set(Op.REMOVE, {
    handler: async (c, r) => {
      const rawName = readComponent(r);
      const name = checkName(rawName);
      const { t, before } = await writableDir(c);
      const id = t.exp.capsuleId;
      const p = childPath(t.path, name);
      const victim = await c.ctx.store.getattr(id, p);
      if (victim.type === 'dir') await c.ctx.store.rmdir(id, p);
      else await c.ctx.store.unlink(id, p);
      t.view.forget(victim.ino);
      const after = await c.ctx.store.getattr(id, t.path);
      return { status: Status4.OK, body: (w) => writeChangeInfo(w, before, after) };
    },
  });

  ops.set(Op.RENAME, {
    handler: async (c, r) => {
      const fromRaw = readComponent(r);
      const toRaw = readComponent(r);
      if (!c.saved) return { status: Status4.NOFILEHANDLE };
      const saved = c.saved;
      const cur = c.requireFh();
      if (saved.kind === 'pseudo' || cur.kind === 'pseudo') return { status: saved.kind === cur.kind ? Status4.ROFS : Status4.XDEV };
      const from = checkName(fromRaw);
      const to = checkName(toRaw);
      const ft = await c.fresh(saved);
      const tt = await c.fresh(cur);
      if (ft.exp !== tt.exp) return { status: Status4.XDEV };
      writable(tt);
      const store = c.ctx.store;
      const id = tt.exp.capsuleId;
      const fBefore = await store.getattr(id, ft.path);
      const tBefore = ft.ino === tt.ino ? fBefore : await store.getattr(id, tt.path);
      if (fBefore.type !== 'dir' || tBefore.type !== 'dir') return { status: Status4.NOTDIR };
      const fromPath = childPath(ft.path, from);
      const toPath = childPath(tt.path, to);
      const moving = await store.getattr(id, fromPath);
      let replaced: FileAttr | undefined;
      try {
        replaced = await store.getattr(id, toPath);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
      // Renaming onto a name of the other kind is EXIST in v4 (RFC 8881 section 18.26.4).
      if (replaced && replaced.ino !== moving.ino && (replaced.type === 'dir') !== (moving.type === 'dir')) return { status: Status4.EXIST };
      await store.rename(id, fromPath, toPath);
      if (replaced && replaced.ino !== moving.ino) ft.view.forget(replaced.ino);
      ft.view.remember(moving.ino, tt.ino, to);
      const fAfter = await store.getattr(id, ft.path);
      const tAfter = ft.ino === tt.ino ? fAfter : await store.getattr(id, tt.path);
      return {
        status: Status4.OK,
        body: (w) => {
          writeChangeInfo(w, fBefore, fAfter);
          writeChangeInfo(w, tBefore, tAfter);
        },
      };
    },
  });

  ops.set(Op.LINK, {
    handler: (c, r) => {
      readComponent(r);
      c.requireFh();
      if (!c.saved) return { status: Status4.NOFILEHANDLE };
      return { status: Status4.NOTSUPP }; // no hard links (link_support is false)
    },
  });

  ops.set(Op.READLINK, {
    handler: async (c) => {
      const cur = c.requireFh();
      const a = await c.attrOf(cur);
      return { status: a.type === 'dir' ? Status4.ISDIR : Status4.INVAL }; // there are no symlinks
    },
  });

  ops.set(Op.OPENATTR, {
    handler: (c, r) => {
      r.bool();
      c.requireFh();
      return { status: Status4.NOTSUPP };
    },
  });

  ops.set(Op.READDIR, {
    handler: async (c, r) => {
      const cookie = r.uint64();
      const verf = r.fixedOpaque(8);
      r.uint32(); // dircount: a hint the RFC lets the server ignore; maxcount bounds the reply
      const maxcount = r.uint32();
      const req = readBitmap(r);
      if (cookie === 1 || cookie === 2) return { status: Status4.BAD_COOKIE };
      const cur = c.requireFh();
      const env = await c.env.attrEnv(c.minor, needsFsStats(req));
      let entries: AsyncGenerator<DirEntry4>;
      let ourVerf: Buffer;
      if (cur.kind === 'pseudo') {
        ourVerf = PSEUDO_VERIFIER;
        entries = pseudoEntries(c, cur.path, cookie);
      } else {
        const t = await c.fresh(cur);
        const dirA = await c.ctx.store.getattr(t.exp.capsuleId, t.path);
        if (dirA.type !== 'dir') return { status: Status4.NOTDIR };
        ourVerf = cookieVerifier(t.exp.generation);
        entries = fsEntries(c, t, cookie);
      }
      if (cookie !== 0 && !verf.equals(Buffer.alloc(8)) && !verf.equals(ourVerf)) return { status: Status4.NOT_SAME };
      const limit = Math.min(maxcount, MAX_DIR_REPLY, c.env.limits.maxResponse);
      const pieces: Buffer[] = [];
      let used = DIR_OVERHEAD;
      let eof = true;
      for await (const e of entries) {
        const w = new XdrWriter(128);
        w.bool(true).uint64(e.cookie).string(e.name);
        if (e.subject) writeFattr4(w, e.subject, env, req);
        else writeFattr4Error(w, e.error ?? Status4.SERVERFAULT, req);
        const b = w.toBuffer();
        if (used + b.length > limit) {
          eof = false;
          break;
        }
        used += b.length;
        pieces.push(b);
      }
      if (pieces.length === 0 && !eof) return { status: Status4.TOOSMALL };
      return {
        status: Status4.OK,
        body: (w) => {
          w.fixedOpaque(ourVerf);
          for (const p of pieces) w.raw(p);
          w.bool(false).bool(eof);
        },
      };
    },
  });

  return ops;
}

/** Attributes of an export's root as an entry of the directory it is mounted on. */
async function exportRootSubject(c: Compound, exp: NfsExport): Promise<AttrSubject> {
  c.ctx.admit(c.call, exp);
  const a = await c.ctx.store.getattr(exp.capsuleId, '');
  const view = c.ctx.view(exp.capsuleId);
  return c.subjectOf({ exp, view, ino: ROOT_INO, path: '' }, a);
}

async function* pseudoEntries(c: Compound, path: string, cookie: number): AsyncGenerator<DirEntry4> {
  const kids = c.env.pseudo.children(path, c.address);
  for (let i = 0; i < kids.length; i++) {
    const ck = i + PSEUDO_COOKIE_BASE;
    if (ck <= cookie) continue;
    const k = kids[i]!;
    if (k.kind === 'dir') {
      const a = c.env.pseudo.attr(k.path, c.address);
      const fh = pseudoHandle(k.path);
      yield { name: k.name, cookie: ck, subject: { attr: a, fsid: PSEUDO_FSID, fh, mountedOnFileid: a.ino, readOnly: true } };
      continue;
    }
    let entry: DirEntry4;
    try {
      entry = { name: k.name, cookie: ck, subject: await exportRootSubject(c, k.exp) };
    } catch (e) {
      entry = { name: k.name, cookie: ck, error: statusOf(e).status };
    }
    yield entry;
  }
}

async function* fsEntries(c: Compound, t: Target, cookie: number): AsyncGenerator<DirEntry4> {
  const listing = await t.view.listing(t.ino, t.path);
  const children = listing.entries;
  const from = cookie > COOKIE_BASE ? resumeIndex(children, cookie) : 0;
  const nested = c.env.pseudo.hasNested(t.exp);
  for (let i = from; i < children.length; i++) {
    const d = children[i]!;
    const ck = d.attr.ino + COOKIE_BASE;
    if (nested) {
      const exp = c.env.pseudo.nestedExport(t.exp, childPath(t.path, d.name), c.address);
      if (exp) {
        let entry: DirEntry4;
        try {
          entry = { name: d.name, cookie: ck, subject: await exportRootSubject(c, exp) };
        } catch (e) {
          entry = { name: d.name, cookie: ck, error: statusOf(e).status };
        }
        yield entry;
        continue;
      }
    }
    yield { name: d.name, cookie: ck, subject: c.subjectOf(t, d.attr) };
  }
}
