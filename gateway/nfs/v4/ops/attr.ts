/**
 * Attribute operations: GETATTR, SETATTR, ACCESS, VERIFY, NVERIFY.
 */
import { toSetAttr } from '../../attrs.js';
import { accessFor } from '../../nfs3.js';
import { NfsError } from '../../status.js';
import {
  decodeSetAttrs, encodeValuesFor, needsFsStats, readBitmap, readFattr4, writeBitmap, writeFattr4, type SetAttrs4,
} from '../attrs4.js';
import { readStateid, statusFor, type Compound, type OpDef } from '../compound.js';
import { Op, Status4 } from '../constants.js';
import { caller, writable } from './util.js';

async function verify(c: Compound, r: Parameters<OpDef['handler']>[1], wantSame: boolean) {
  const f = readFattr4(r);
  const cur = c.requireFh();
  const a = await c.attrOf(cur);
  const env = await c.env.attrEnv(c.minor, needsFsStats(f.mask));
  const mine = encodeValuesFor(c.subject(cur, a), env, f.mask);
  const same = mine.equals(f.vals);
  if (wantSame) return { status: same ? Status4.OK : Status4.NOT_SAME };
  return { status: same ? Status4.SAME : Status4.OK };
}

export function attrOps(): Map<number, OpDef> {
  const ops = new Map<number, OpDef>();

  ops.set(Op.GETATTR, {
    handler: async (c, r) => {
      const req = readBitmap(r);
      const cur = c.requireFh();
      const a = await c.attrOf(cur);
      const env = await c.env.attrEnv(c.minor, needsFsStats(req));
      const subj = c.subject(cur, a);
      return { status: Status4.OK, body: (w) => writeFattr4(w, subj, env, req) };
    },
  });

  ops.set(Op.SETATTR, {
    handler: async (c, r) => {
      const sid = readStateid(r);
      const f = readFattr4(r);
      // SETATTR4res carries the attributes set even on failure (none, here: all or nothing).
      const fail = (status: number) => ({ status, body: (w: Parameters<typeof writeBitmap>[0]) => writeBitmap(w, []) });
      try {
        const set = decodeSetAttrs(f, c.minor);
        const t = await c.target(Status4.ROFS);
        writable(t);
        const id = t.exp.capsuleId;
        const before = await c.ctx.store.getattr(id, t.path);
        if (set.size !== undefined) {
          if (before.type === 'dir') throw new NfsError(Status4.ISDIR, 'cannot set the size of a directory');
          c.checkIo(sid, t, true);
        }
        const s = toSetAttr(set);
        if (Object.keys(s).length > 0) await c.ctx.store.setattr(id, t.path, s);
        return { status: Status4.OK, body: (w) => writeBitmap(w, set.mask) };
      } catch (e) {
        return fail(statusFor(c.env, e, Op.SETATTR));
      }
    },
  });

  ops.set(Op.ACCESS, {
    handler: async (c, r) => {
      const want = r.uint32();
      const cur = c.requireFh();
      const a = await c.attrOf(cur);
      const readOnly = cur.kind === 'pseudo' || cur.t.exp.readOnly;
      const supported = want & 0x3f; // the extended-attribute bits of RFC 8276 are not offered
      const granted = accessFor(a, caller(c.call), readOnly) & supported;
      return { status: Status4.OK, body: (w) => w.uint32(supported).uint32(granted) };
    },
  });

  ops.set(Op.VERIFY, { handler: (c, r) => verify(c, r, true) });
  ops.set(Op.NVERIFY, { handler: (c, r) => verify(c, r, false) });

  return ops;
}
