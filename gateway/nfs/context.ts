/**
 * State the NFS programs share (store, export table, per-capsule inode views, write verifier)
 * and the one way a file handle becomes something the store understands: export + inode + path.
 * MOUNT, NFSv3 and a later NFSv4 module all resolve handles here, with the same rules:
 *   malformed handle -> BADHANDLE; export removed, capsule deleted or re-created, file removed
 *   -> STALE; client not in the export's list -> ACCES.
 */
import crypto from 'node:crypto';
import type { Logger } from '../../capsule/log.js';
import type { HeldBytes } from '../../capsule/segment-pool.js';
import type { NfsStore } from './backend.js';
import type { ExportTable, NfsExport } from './exports.js';
import { decodeHandle, encodeHandle } from './handles.js';
import { CapsuleView } from './inodes.js';
import type { RpcCall } from './rpc.js';
import { Nfs3Status, NfsError, statusOf } from './status.js';

const EMPTY = Buffer.alloc(0);

export interface Target {
  exp: NfsExport;
  view: CapsuleView;
  ino: number;
  /** Path inside the capsule ("" is the root). */
  path: string;
}

export class NfsContext {
  private readonly views = new Map<string, CapsuleView>();
  /**
   * WRITE/COMMIT verifier: new on every start, so a client that sent UNSTABLE writes to an
   * earlier incarnation (whose buffered data a crash may have lost) notices and sends them again.
   */
  readonly writeVerifier = crypto.randomBytes(8);

  constructor(readonly store: NfsStore, readonly exports: ExportTable, readonly log: Logger) {}

  view(capsuleId: string): CapsuleView {
    let v = this.views.get(capsuleId);
    if (!v) this.views.set(capsuleId, (v = new CapsuleView(this.store, capsuleId)));
    return v;
  }

  peekView(capsuleId: string): CapsuleView | undefined {
    return this.views.get(capsuleId);
  }

  dropView(capsuleId: string): void {
    this.views.delete(capsuleId);
  }

  handleOf(exp: NfsExport, ino: number): Buffer {
    return encodeHandle({ exportKey: exp.key, ino, generation: exp.generation });
  }

  /** Check that the caller may use `exp` at all. */
  admit(call: RpcCall, exp: NfsExport): void {
    if (exp.gone) throw new NfsError(Nfs3Status.STALE, `the capsule of export ${exp.path} was deleted`);
    if (!exp.allows(call.conn.remoteAddress)) throw new NfsError(Nfs3Status.ACCES, `client ${call.conn.remoteAddress} may not use export ${exp.path}`);
  }

  async target(call: RpcCall, fh: Buffer): Promise<Target> {
    const h = decodeHandle(fh);
    const exp = this.exports.byKey(h.exportKey);
    if (!exp) throw new NfsError(Nfs3Status.STALE, 'file handle of an export that no longer exists');
    this.admit(call, exp);
    if (h.generation !== exp.generation) throw new NfsError(Nfs3Status.STALE, 'file handle of an earlier capsule with this id');
    const view = this.view(exp.capsuleId);
    const path = view.pathOfSync(h.ino) ?? (await view.pathOf(h.ino)); // no promise when known
    return { exp, view, ino: h.ino, path };
  }

  /**
   * The bytes of a READ (v3 READ, v4 READ and READ_PLUS): from the store's memory without a
   * promise when it can (tryReadSyncHeld), otherwise through readHeld(), which also reports
   * errors. Often a view of a cached segment: callers hand it to the socket by reference, and it
   * is released once `call`'s reply is written (RpcCall.afterReply), so the store can reuse that
   * segment memory (capsule/segment-pool.ts).
   */
  async readBytes(t: Target, offset: number, count: number, call: RpcCall): Promise<Buffer> {
    if (count === 0) return EMPTY;
    const id = t.exp.capsuleId;
    let held: HeldBytes | undefined;
    try {
      held = this.store.tryReadSyncHeld?.(id, t.path, offset, count);
    } catch {
      held = undefined; // readHeld() below reports the error properly
    }
    held ??= await this.store.readHeld(id, t.path, offset, count);
    (call.afterReply ??= []).push(() => held!.release());
    return held.data;
  }

  /** Map an error to a status, logging the ones nobody raised on purpose. */
  fail(err: unknown, op: string, fields?: Record<string, unknown>): number {
    const m = statusOf(err);
    if (m.unexpected) this.log.error('nfs.op.failed', { op, ...fields, err });
    else if (m.status === Nfs3Status.IO || m.status === Nfs3Status.SERVERFAULT) this.log.error('nfs.io_error', { op, ...fields, err: (err as Error).message });
    return m.status;
  }
}
