/**
 * A minimal ONC RPC client over TCP: record marking, xid matching, AUTH_NONE or AUTH_SYS.
 * Used by the tests and usable as a health probe ("does the NFS port answer NULL?"); it is not a
 * general NFS client. Calls may be pipelined; replies are matched by xid in any order.
 */
import net from 'node:net';
import { AcceptStat, AuthFlavor, encodeAuthSys, MsgType, ReplyStat, RPC_VERSION, type AuthSys } from './rpc.js';
import { XdrReader, XdrWriter } from './xdr.js';
import { LAST_FRAGMENT, RecordAssembler } from './record-marking.js';

export interface RpcReply {
  xid: number;
  /** MSG_ACCEPTED or MSG_DENIED. */
  replyStat: number;
  /** For accepted replies. */
  acceptStat?: number;
  /** For MSG_DENIED: RPC_MISMATCH (0) or AUTH_ERROR (1). */
  rejectStat?: number;
  /** PROG_MISMATCH / RPC_MISMATCH range. */
  low?: number;
  high?: number;
  authStat?: number;
  /** The results, positioned after the reply header (SUCCESS only). */
  body: XdrReader;
}

/** Encode a CALL record (with its record mark) — also handy for tests that send it by hand. */
export function encodeCall(xid: number, prog: number, vers: number, proc: number, args: Buffer = Buffer.alloc(0), auth?: AuthSys): Buffer {
  const w = new XdrWriter(64 + args.length);
  w.uint32(0);
  w.uint32(xid).enum(MsgType.CALL).uint32(RPC_VERSION).uint32(prog).uint32(vers).uint32(proc);
  if (auth) w.enum(AuthFlavor.AUTH_SYS).opaque(encodeAuthSys(auth), 400);
  else w.enum(AuthFlavor.AUTH_NONE).uint32(0);
  w.enum(AuthFlavor.AUTH_NONE).uint32(0);
  w.fixedOpaque(args);
  const b = w.toBuffer();
  b.writeUInt32BE((LAST_FRAGMENT | (b.length - 4)) >>> 0, 0);
  return b;
}

export function decodeReply(record: Buffer): RpcReply {
  const r = new XdrReader(record);
  const xid = r.uint32();
  if (r.uint32() !== MsgType.REPLY) throw new Error('not an RPC reply');
  const replyStat = r.uint32();
  const out: RpcReply = { xid, replyStat, body: r };
  if (replyStat === ReplyStat.MSG_ACCEPTED) {
    r.uint32(); // verifier flavor
    r.opaque(400);
    out.acceptStat = r.uint32();
    if (out.acceptStat === AcceptStat.PROG_MISMATCH) {
      out.low = r.uint32();
      out.high = r.uint32();
    }
  } else {
    out.rejectStat = r.uint32();
    if (out.rejectStat === 0) {
      out.low = r.uint32();
      out.high = r.uint32();
    } else out.authStat = r.uint32();
  }
  return out;
}

/** Splits a TCP byte stream into RPC records (all fragments joined): the server's record marking, unbounded. */
export class RecordReader {
  private readonly records: RecordAssembler;

  constructor(onRecord: (rec: Buffer) => void) {
    // A client trusts its server's sizes; memory of large replies is not reused (no pool).
    this.records = new RecordAssembler(Number.MAX_SAFE_INTEGER, undefined, {
      record: (rec) => onRecord(rec),
      tooLarge: () => undefined,
    });
  }

  push(chunk: Buffer): void {
    this.records.push(chunk);
  }
}

export class RpcClient {
  private nextXid = (Math.random() * 0x7fffffff) >>> 0;
  private readonly waiting = new Map<number, { resolve: (r: RpcReply) => void; reject: (e: Error) => void }>();
  private closedError: Error | undefined;

  private constructor(readonly socket: net.Socket, public auth?: AuthSys) {
    const reader = new RecordReader((rec) => {
      let reply: RpcReply;
      try {
        reply = decodeReply(rec);
      } catch {
        return;
      }
      const w = this.waiting.get(reply.xid);
      if (!w) return;
      this.waiting.delete(reply.xid);
      w.resolve(reply);
    });
    socket.on('data', (c: Buffer) => reader.push(c));
    const fail = (e: Error) => {
      this.closedError ??= e;
      for (const w of this.waiting.values()) w.reject(this.closedError);
      this.waiting.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  static connect(port: number, host = '127.0.0.1', auth?: AuthSys): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, noDelay: true }, () => {
        s.off('error', reject);
        resolve(new RpcClient(s, auth));
      });
      s.once('error', reject);
    });
  }

  call(prog: number, vers: number, proc: number, args: Buffer | XdrWriter = Buffer.alloc(0)): Promise<RpcReply> {
    if (this.closedError) return Promise.reject(this.closedError);
    const xid = (this.nextXid = (this.nextXid + 1) >>> 0);
    const body = Buffer.isBuffer(args) ? args : args.toBuffer();
    return new Promise((resolve, reject) => {
      this.waiting.set(xid, { resolve, reject });
      this.socket.write(encodeCall(xid, prog, vers, proc, body, this.auth));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
