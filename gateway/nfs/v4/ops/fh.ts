/**
 * File handle and name space operations: PUTROOTFH, PUTPUBFH, PUTFH, GETFH, SAVEFH, RESTOREFH,
 * LOOKUP, LOOKUPP, SECINFO, SECINFO_NO_NAME.
 *
 * LOOKUP walks the pseudo file system down to an export's root, then the capsule's directories.
 * An export nested inside another one's tree ("/a" and "/a/b") is crossed into, as a server
 * crosses into a file system mounted on a directory.
 */
import { ROOT_INO } from '../../../../capsule/schema.js';
import type { NfsExport } from '../../exports.js';
import { childPath } from '../../inodes.js';
import type { XdrWriter } from '../../xdr.js';
import type { Compound, OpDef, OpResult } from '../compound.js';
import { NFS4_FHSIZE, Op, SecinfoStyle, Status4 } from '../constants.js';
import { checkName, parentPath, readComponent } from './util.js';

const OK: OpResult = { status: Status4.OK };
const AUTH_SYS = 1;

function writeSecinfo(w: XdrWriter): void {
  // AUTH_SYS only: the server checks nothing stronger, so offering more would be a pretence.
  w.uint32(1).uint32(AUTH_SYS);
}

/** Enter an export at its root (after the client-list check). */
async function enterExport(c: Compound, exp: NfsExport): Promise<void> {
  c.ctx.admit(c.call, exp);
  const view = c.ctx.view(exp.capsuleId);
  await c.ctx.store.getattr(exp.capsuleId, ''); // the capsule must still be there
  c.setFs({ exp, view, ino: ROOT_INO, path: '' });
}

/** LOOKUP's work, shared with SECINFO (which then drops the current handle). */
async function lookup(c: Compound, rawName: Buffer): Promise<void> {
  const cur = c.requireFh();
  const name = checkName(rawName);
  if (cur.kind === 'pseudo') {
    const child = c.env.pseudo.lookup(cur.path, name, c.address);
    if (child.kind === 'dir') c.setPseudo(child.path);
    else await enterExport(c, child.exp);
    return;
  }
  const t = await c.fresh(cur);
  const p = childPath(t.path, name);
  if (c.env.pseudo.hasNested(t.exp)) {
    const nested = c.env.pseudo.nestedExport(t.exp, p, c.address);
    if (nested) {
      await enterExport(c, nested);
      return;
    }
  }
  const a = await c.ctx.store.getattr(t.exp.capsuleId, p);
  t.view.remember(a.ino, t.ino, name);
  c.setFs({ exp: t.exp, view: t.view, ino: a.ino, path: p });
}

export function fhOps(): Map<number, OpDef> {
  const ops = new Map<number, OpDef>();

  const root = (c: Compound): OpResult => {
    c.setPseudo('/');
    c.curStateid = undefined;
    return OK;
  };
  ops.set(Op.PUTROOTFH, { handler: (c) => root(c) });
  ops.set(Op.PUTPUBFH, { handler: (c) => root(c) });

  ops.set(Op.PUTFH, {
    handler: async (c, r) => {
      const fh = r.opaque(NFS4_FHSIZE);
      c.cur = await c.resolveHandle(fh);
      c.curStateid = undefined;
      return OK;
    },
  });

  ops.set(Op.GETFH, {
    handler: (c) => {
      const fh = c.requireFh().fh;
      return { status: Status4.OK, body: (w) => w.opaque(fh, NFS4_FHSIZE) };
    },
  });

  ops.set(Op.SAVEFH, {
    handler: (c) => {
      c.saved = c.requireFh();
      c.savedStateid = c.curStateid;
      return OK;
    },
  });

  ops.set(Op.RESTOREFH, {
    handler: (c) => {
      if (!c.saved) return { status: Status4.RESTOREFH };
      c.cur = c.saved;
      c.curStateid = c.savedStateid;
      return OK;
    },
  });

  ops.set(Op.LOOKUP, {
    handler: async (c, r) => {
      const raw = readComponent(r);
      await lookup(c, raw);
      return OK;
    },
  });

  ops.set(Op.LOOKUPP, {
    handler: async (c) => {
      const cur = c.requireFh();
      if (cur.kind === 'pseudo') {
        if (cur.path === '/') return { status: Status4.NOENT };
        c.setPseudo(c.env.pseudo.parent(cur.path));
        return OK;
      }
      const t = await c.fresh(cur);
      const a = await c.ctx.store.getattr(t.exp.capsuleId, t.path);
      if (a.type !== 'dir') return { status: Status4.NOTDIR };
      if (t.ino !== ROOT_INO) {
        const p = parentPath(t.path);
        const pa = await c.ctx.store.getattr(t.exp.capsuleId, p);
        c.setFs({ exp: t.exp, view: t.view, ino: pa.ino, path: p });
        return OK;
      }
      // Above an export's root: the pseudo directory it hangs from, or the directory of an
      // enclosing export it is nested in.
      const up = c.env.pseudo.parent(t.exp.path);
      for (const e of c.env.pseudo.visible(c.address)) {
        if (e === t.exp || !up.startsWith(e.path) || (up !== e.path && !up.startsWith(e.path + '/'))) continue;
        const inner = up.slice(e.path.length + 1);
        try {
          const pa = await c.ctx.store.getattr(e.capsuleId, inner);
          c.ctx.admit(c.call, e);
          c.setFs({ exp: e, view: c.ctx.view(e.capsuleId), ino: pa.ino, path: inner });
          return OK;
        } catch {
          // not a directory of that export after all: fall back to the pseudo directory
        }
      }
      c.setPseudo(up);
      return OK;
    },
  });

  ops.set(Op.SECINFO, {
    handler: async (c, r) => {
      const raw = readComponent(r);
      await lookup(c, raw);
      // SECINFO consumes the current file handle (RFC 8881 section 2.6.3.1.1.8).
      c.cur = undefined;
      return { status: Status4.OK, body: writeSecinfo };
    },
  });

  ops.set(Op.SECINFO_NO_NAME, {
    handler: async (c, r) => {
      const style = r.enum([SecinfoStyle.CURRENT_FH, SecinfoStyle.PARENT]);
      const cur = c.requireFh();
      if (style === SecinfoStyle.PARENT && cur.kind === 'pseudo' && cur.path === '/') return { status: Status4.NOENT };
      if (cur.kind === 'fs') await c.fresh(cur); // STALE shows here
      c.cur = undefined;
      return { status: Status4.OK, body: writeSecinfo };
    },
  });

  return ops;
}
