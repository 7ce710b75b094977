/**
 * Data operations: READ, WRITE, COMMIT, and the 4.2 ones SEEK, ALLOCATE, DEALLOCATE, READ_PLUS.
 *
 * The data path is the v3 one: READ answers from the store's in-memory segments without a
 * promise when it can and hands the bytes to the socket by reference; WRITE passes the view of
 * the received record to the store's write-back buffer. UNSTABLE writes become durable on
 * COMMIT; DATA_SYNC and FILE_SYNC flush before the reply (which then says FILE_SYNC).
 *
 * READ does no GETATTR of its own: a short read is the end of the file, and a full one says
 * "not at the end" (the client asks once more, or knows the size already), which saves a
 * metadata query per READ on the hot path.
 *
 * SEEK finds holes by looking: the store reads holes as zeros and never stores all-zero
 * segments, so a zero segment is a hole; the scan is bounded, and past the bound SEEK answers
 * conservatively (data is always a correct answer for a hole, and end-of-file always a hole).
 */
import { isZero } from '../../../../capsule/codec-pool.js';
import type { Target } from '../../context.js';
import type { XdrReader } from '../../xdr.js';
import { readStateid, type Compound, type OpDef, type OpResult } from '../compound.js';
import { Op, SeekWhat, Stable4, Status4 } from '../constants.js';
import { writable } from './util.js';

/** Largest file the store accepts (capsule/store.ts MAX_FILE_SIZE). */
export const MAX_FILE_SIZE = 2 ** 50;
/** SEEK reads at most this many segments before answering conservatively. */
const SEEK_SCAN_SEGMENTS = 64;
const EMPTY = Buffer.alloc(0);

/**
 * Most a READ returns: the server's limit, and within a session what the client said it can
 * take in one reply (a shorter read is always allowed; a reply past the limit is not).
 */
function readLimit(c: Compound): number {
  const max = c.env.limits.maxIo;
  if (!c.session) return max;
  return Math.max(512, Math.min(max, c.session.fore.maxResponseSize - 512));
}

const segmentSizes = new Map<string, number>();

async function segmentSizeOf(c: Compound, capsuleId: string): Promise<number> {
  let s = segmentSizes.get(capsuleId);
  if (s === undefined) {
    const info = await c.ctx.store.get(capsuleId);
    s = info.policy.segmentSize;
    if (segmentSizes.size > 1024) segmentSizes.clear();
    segmentSizes.set(capsuleId, s);
  }
  return s;
}

async function fileTarget(c: Compound): Promise<Target> {
  return c.target(Status4.ISDIR);
}

/** The arguments and data of READ and READ_PLUS (the same arguments, different replies). */
async function readRequest(c: Compound, r: XdrReader): Promise<{ offset: number; data: Buffer; eof: boolean }> {
  const sid = readStateid(r);
  const offset = r.uint64();
  const count = Math.min(r.uint32(), readLimit(c));
  const t = await fileTarget(c);
  c.checkIo(sid, t, false);
  const data = offset > MAX_FILE_SIZE ? EMPTY : await c.ctx.readBytes(t, offset, count, c.call);
  return { offset, data, eof: data.length < count || count === 0 };
}

export function ioOps(): Map<number, OpDef> {
  const ops = new Map<number, OpDef>();
  const store = (c: Compound) => c.ctx.store;

  ops.set(Op.READ, {
    handler: async (c, r) => {
      const { data, eof } = await readRequest(c, r);
      // By reference: the bytes (often a view of a cached segment) go to the socket uncopied.
      return { status: Status4.OK, body: (w) => w.bool(eof).opaqueRef(data) };
    },
  });

  ops.set(Op.READ_PLUS, {
    handler: async (c, r) => {
      const { offset, data, eof } = await readRequest(c, r);
      return {
        status: Status4.OK,
        body: (w) => {
          w.bool(eof);
          if (data.length === 0) {
            w.uint32(0);
            return;
          }
          // One data segment: holes come back as zeros, which READ_PLUS allows.
          w.uint32(1).uint32(SeekWhat.DATA).uint64(offset).opaqueRef(data);
        },
      };
    },
  });

  ops.set(Op.WRITE, {
    handler: async (c, r) => {
      const sid = readStateid(r);
      const offset = r.uint64();
      const stable = r.enum([Stable4.UNSTABLE, Stable4.DATA_SYNC, Stable4.FILE_SYNC]);
      const data = r.opaque(c.env.limits.maxRequest);
      const t = await fileTarget(c);
      writable(t);
      c.checkIo(sid, t, true);
      if (offset + data.length > MAX_FILE_SIZE) return { status: Status4.FBIG };
      const id = t.exp.capsuleId;
      const n = data.length === 0 ? 0 : await store(c).writeBuffered(id, t.path, offset, data, { adopt: true, release: c.takeRecordRelease() });
      let committed: number = Stable4.UNSTABLE;
      if (stable !== Stable4.UNSTABLE) {
        await store(c).flush(id, t.path);
        committed = Stable4.FILE_SYNC; // a flush commits data and metadata together
      }
      const verf = c.ctx.writeVerifier;
      return { status: Status4.OK, body: (w) => w.uint32(n).uint32(committed).fixedOpaque(verf) };
    },
  });

  ops.set(Op.COMMIT, {
    handler: async (c, r) => {
      r.uint64(); // offset and count: a flush commits the whole file, which covers any range
      r.uint32();
      const t = await fileTarget(c);
      const a = await store(c).getattr(t.exp.capsuleId, t.path);
      if (a.type === 'dir') return { status: Status4.ISDIR };
      if (!t.exp.readOnly) await store(c).flush(t.exp.capsuleId, t.path);
      const verf = c.ctx.writeVerifier;
      return { status: Status4.OK, body: (w) => w.fixedOpaque(verf) };
    },
  });

  ops.set(Op.SEEK, {
    handler: async (c, r) => {
      const sid = readStateid(r);
      const offset = r.uint64();
      const what = r.enum([SeekWhat.DATA, SeekWhat.HOLE]);
      const t = await fileTarget(c);
      c.checkIo(sid, t, false);
      const id = t.exp.capsuleId;
      const a = await store(c).getattr(id, t.path);
      if (a.type === 'dir') return { status: Status4.ISDIR };
      if (offset >= a.size) return { status: Status4.NXIO };
      const answer = (at: number): OpResult => ({ status: Status4.OK, body: (w) => w.bool(at >= a.size).uint64(at) });
      if (what === SeekWhat.DATA && a.allocated === 0) return { status: Status4.NXIO };
      if (what === SeekWhat.DATA && a.allocated >= a.size) return answer(offset);
      if (what === SeekWhat.HOLE && a.allocated >= a.size) return answer(a.size);
      const seg = await segmentSizeOf(c, id);
      let pos = offset;
      for (let i = 0; i < SEEK_SCAN_SEGMENTS && pos < a.size; i++) {
        const segEnd = Math.min((Math.floor(pos / seg) + 1) * seg, a.size);
        const bytes = await store(c).read(id, t.path, pos, segEnd - pos);
        const zero = isZero(bytes);
        if (what === SeekWhat.DATA && !zero) return answer(pos);
        if (what === SeekWhat.HOLE && zero) return answer(pos);
        pos = segEnd;
      }
      if (pos >= a.size) return what === SeekWhat.DATA ? { status: Status4.NXIO } : answer(a.size);
      // Scan limit: claim data here, or the implicit hole at end of file.
      return answer(what === SeekWhat.DATA ? pos : a.size);
    },
  });

  /** ALLOCATE and DEALLOCATE args: stateid, offset, length, on a writable file opened for writing. */
  const writableRange = async (c: Parameters<typeof fileTarget>[0], r: Parameters<typeof readStateid>[0]) => {
    const sid = readStateid(r);
    const offset = r.uint64();
    const length = r.uint64();
    const t = await fileTarget(c);
    writable(t);
    c.checkIo(sid, t, true);
    return { offset, length, t };
  };

  ops.set(Op.ALLOCATE, {
    handler: async (c, r) => {
      const { offset, length, t } = await writableRange(c, r);
      if (offset + length > MAX_FILE_SIZE) return { status: Status4.FBIG };
      const id = t.exp.capsuleId;
      const a = await store(c).getattr(id, t.path);
      if (a.type === 'dir') return { status: Status4.ISDIR };
      // Space is not reserved ahead (segments are content-addressed and written on demand), so
      // ALLOCATE guarantees what it can: the size.
      if (offset + length > a.size) await store(c).setattr(id, t.path, { size: offset + length });
      return { status: Status4.OK };
    },
  });

  ops.set(Op.DEALLOCATE, {
    handler: async (c, r) => {
      const { offset, length, t } = await writableRange(c, r);
      const punch = store(c).punchHole;
      if (!punch) return { status: Status4.NOTSUPP };
      if (offset > MAX_FILE_SIZE) return { status: Status4.FBIG };
      const len = Math.min(length, MAX_FILE_SIZE - offset);
      await punch.call(store(c), t.exp.capsuleId, t.path, offset, len);
      return { status: Status4.OK };
    },
  });

  return ops;
}
