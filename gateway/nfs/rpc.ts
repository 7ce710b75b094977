/**
 * ONC RPC version 2 (RFC 5531) over TCP: record marking, call/reply headers, AUTH_NONE and
 * AUTH_SYS credentials, and dispatch of (program, version, procedure) to handlers that program
 * modules register (NFSv3 and MOUNT today; NFSv4 registers program 100003 version 4 the same way).
 *
 * Robustness rules, because every byte here comes from the network:
 *  - a call whose header or arguments do not decode is answered GARBAGE_ARGS;
 *  - a record that is not even a call (too short, a REPLY, a fragment past the size limit) closes
 *    the connection: the stream can no longer be trusted to be in sync;
 *  - nothing thrown while parsing or handling escapes to the socket's event emitter, where it
 *    would crash the process.
 *
 * Calls on one connection run concurrently and their replies go out as each finishes (clients
 * match them by xid). Each reply is written as one corked burst, so replies never interleave.
 */
import net from 'node:net';
import { silentLogger, type Logger } from '../../capsule/log.js';
import { XdrError, XdrReader, XdrWriter } from './xdr.js';
import { BufferRecycler } from '../../capsule/buffer-recycler.js';
import { LAST_FRAGMENT, RecordAssembler } from './record-marking.js';
import { withUserBufferReads } from './user-buffer-socket.js';

export const RPC_VERSION = 2;

export const MsgType = { CALL: 0, REPLY: 1 } as const;
export const ReplyStat = { MSG_ACCEPTED: 0, MSG_DENIED: 1 } as const;
export const AcceptStat = {
  SUCCESS: 0,
  PROG_UNAVAIL: 1,
  PROG_MISMATCH: 2,
  PROC_UNAVAIL: 3,
  GARBAGE_ARGS: 4,
  SYSTEM_ERR: 5,
} as const;
export const RejectStat = { RPC_MISMATCH: 0, AUTH_ERROR: 1 } as const;
export const AuthStat = {
  AUTH_OK: 0,
  AUTH_BADCRED: 1,
  AUTH_REJECTEDCRED: 2,
  AUTH_BADVERF: 3,
  AUTH_REJECTEDVERF: 4,
  AUTH_TOOWEAK: 5,
  AUTH_INVALIDRESP: 6,
  AUTH_FAILED: 7,
} as const;
export const AuthFlavor = { AUTH_NONE: 0, AUTH_SYS: 1, AUTH_SHORT: 2, AUTH_DH: 3, RPCSEC_GSS: 6 } as const;

/** opaque_auth bodies are at most 400 bytes (RFC 5531 section 8.2). */
export const MAX_AUTH_BYTES = 400;

export interface OpaqueAuth {
  flavor: number;
  body: Buffer;
}

/** authsys_parms (RFC 5531 appendix A). */
export interface AuthSys {
  stamp: number;
  machineName: string;
  uid: number;
  gid: number;
  gids: number[];
}

export interface RpcConnectionInfo {
  /** Unique per server process, for state a later protocol keeps per connection. */
  id: number;
  remoteAddress: string;
  remotePort: number;
  localPort: number;
  /** Reads land in memory the server chose (large records: their own), not in Node's chunks. */
  readsInPlace: boolean;
}

export interface RpcCall {
  xid: number;
  prog: number;
  vers: number;
  proc: number;
  cred: OpaqueAuth;
  verf: OpaqueAuth;
  /** The parsed credential when the flavor is AUTH_SYS. */
  authSys?: AuthSys;
  /** The procedure's arguments, positioned after the call header. */
  args: XdrReader;
  conn: RpcConnectionInfo;
  /**
   * Run once the reply's bytes are in the kernel's hands, or the reply is dropped: a procedure
   * that puts borrowed bytes in its reply by reference (READ's cached segment) releases them here.
   */
  afterReply?: (() => void)[];
  /**
   * Present on large records in reusable memory (capsule/buffer-recycler.ts). A procedure whose views of its
   * arguments either end with the call or go to one holder that can say when it is done with
   * them (the store, for WRITE's data) calls this once and gives that holder the function it
   * returns: the memory is reused once the holder has run it and the reply is written. A
   * record whose procedure does not ask is never reused, as its views may be kept anywhere.
   */
  recycleRecord?: () => () => void;
}

/**
 * A procedure writes its results into `res` (the reply header is already there). Throwing an
 * XdrError answers GARBAGE_ARGS, an RpcError its status, anything else SYSTEM_ERR.
 */
export type RpcProcedure = (call: RpcCall, res: XdrWriter) => void | Promise<void>;

export interface RpcProgram {
  prog: number;
  vers: number;
  /** For logs. */
  name: string;
  procedures: ReadonlyMap<number, RpcProcedure>;
  /** Credential flavors this program accepts (default AUTH_NONE and AUTH_SYS). */
  flavors?: readonly number[];
}

/** Thrown by a procedure to answer with an RPC-level status instead of results. */
export class RpcError extends Error {
  constructor(readonly acceptStat: number, message = `rpc accept_stat ${acceptStat}`) {
    super(message);
    this.name = 'RpcError';
  }
}

/** Thrown by a procedure to deny the call for its credentials (MSG_DENIED / AUTH_ERROR). */
export class RpcAuthError extends Error {
  constructor(readonly authStat: number, message = `rpc auth_stat ${authStat}`) {
    super(message);
    this.name = 'RpcAuthError';
  }
}

export function readOpaqueAuth(r: XdrReader): OpaqueAuth {
  const flavor = r.enum();
  const body = r.opaque(MAX_AUTH_BYTES);
  return { flavor, body };
}

export function writeOpaqueAuth(w: XdrWriter, a: OpaqueAuth): void {
  w.enum(a.flavor);
  w.opaque(a.body, MAX_AUTH_BYTES);
}

export function decodeAuthSys(body: Buffer): AuthSys {
  const r = new XdrReader(body);
  const stamp = r.uint32();
  const machineName = r.string(255);
  const uid = r.uint32();
  const gid = r.uint32();
  const gids = r.array((x) => x.uint32(), 16);
  return { stamp, machineName, uid, gid, gids };
}

export function encodeAuthSys(a: AuthSys): Buffer {
  const w = new XdrWriter(64);
  w.uint32(a.stamp).string(a.machineName, 255).uint32(a.uid).uint32(a.gid).array(a.gids, (x, g) => x.uint32(g), 16);
  return w.toBuffer();
}

export interface RpcServerOptions {
  logger?: Logger;
  /** Largest record accepted; a client announcing a bigger one is disconnected. */
  maxRecordSize?: number;
  /** Calls of one connection in progress at once before reading from it pauses. */
  maxInFlight?: number;
  /** Memory of large records kept for reuse (RECORD_POOL_BYTES by default). */
  recordPoolBytes?: number;
}

/**
 * Record memory kept for reuse: a sequential writer's WRITE records stay with the store until
 * it commits them (the default dirty window, capsule/store.ts, is 64 MiB, and a commit in
 * progress holds as much again), and come back in batches. A smaller pool drops part of each
 * batch and the writer then takes fresh memory, zeroed, for about two records in five
 * (measured: 32 MiB, 1 GiB nfs-cp).
 */
export const RECORD_POOL_BYTES = 128 << 20;
/** Kept record memory goes once no record was taken for this long. */
const RECORD_POOL_IDLE_MS = 10_000;

export interface RpcStats {
  connections: number;
  calls: number;
  garbage: number;
  systemErrors: number;
  protocolErrors: number;
}

/** Default record limit: a 1 MiB WRITE plus generous room for its headers. */
export const DEFAULT_MAX_RECORD = (1 << 20) + (64 << 10);

export class RpcServer {
  readonly stats: RpcStats = { connections: 0, calls: 0, garbage: 0, systemErrors: 0, protocolErrors: 0 };
  /**
   * Memory of large records, shared by every connection (see RpcCall.recycleRecord). Shared
   * memory, so the codec workers hash and write WRITE data where it was received, with no copy.
   */
  readonly records: BufferRecycler;
  private readonly programs = new Map<number, Map<number, RpcProgram>>();
  private readonly listeners = new Set<net.Server>();
  private readonly conns = new Set<Connection>();
  /** Calls still running: close() waits for them, so the store is not closed under them. */
  readonly running = new Set<Promise<unknown>>();
  private nextConnId = 1;
  readonly log: Logger;
  readonly maxRecordSize: number;
  readonly maxInFlight: number;

  constructor(opts: RpcServerOptions = {}) {
    this.log = opts.logger ?? silentLogger;
    this.maxRecordSize = opts.maxRecordSize ?? DEFAULT_MAX_RECORD;
    this.maxInFlight = opts.maxInFlight ?? 128;
    this.records = new BufferRecycler({ maxBytes: opts.recordPoolBytes ?? RECORD_POOL_BYTES, shared: true, idleMs: RECORD_POOL_IDLE_MS });
  }

  register(p: RpcProgram): void {
    let byVers = this.programs.get(p.prog);
    if (!byVers) this.programs.set(p.prog, (byVers = new Map()));
    if (byVers.has(p.vers)) throw new Error(`RPC program ${p.prog} version ${p.vers} is already registered`);
    byVers.set(p.vers, p);
  }

  unregister(prog: number, vers: number): void {
    const byVers = this.programs.get(prog);
    byVers?.delete(vers);
    if (byVers && byVers.size === 0) this.programs.delete(prog);
  }

  /** Start accepting connections; resolves with the bound port. */
  listen(port: number, host = '0.0.0.0'): Promise<net.Server> {
    // Paused on connect: nothing is read before the connection chooses where reads land.
    const srv = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => this.serve(s, true));
    this.listeners.add(srv);
    return new Promise((resolve, reject) => {
      srv.once('error', (e) => {
        this.listeners.delete(srv);
        reject(e);
      });
      srv.listen(port, host, () => {
        srv.removeAllListeners('error');
        srv.on('error', (e) => this.log.error('rpc.listener.error', { err: e }));
        resolve(srv);
      });
    });
  }

  /** Serve one already connected socket (listen() calls this; tests may too). */
  accept(socket: net.Socket): void {
    this.serve(socket, false);
  }

  private serve(socket: net.Socket, ownAccept: boolean): void {
    const conn = new Connection(this, socket, this.nextConnId++, ownAccept);
    this.conns.add(conn);
    this.stats.connections++;
    conn.socket.once('close', () => this.conns.delete(conn));
  }

  /** Stop listening, drop every connection, and wait (up to `graceMs`) for running calls. */
  async close(graceMs = 10_000): Promise<void> {
    const closing = [...this.listeners].map((s) => new Promise<void>((r) => s.close(() => r())));
    this.listeners.clear();
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    await Promise.all(closing);
    if (this.running.size) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.running]),
        new Promise<void>((r) => (timer = setTimeout(r, graceMs))),
      ]);
      clearTimeout(timer);
    }
    this.records.clear();
  }

  /** Version range registered for a program (for PROG_MISMATCH), or undefined. */
  versions(prog: number): { low: number; high: number } | undefined {
    const byVers = this.programs.get(prog);
    if (!byVers || byVers.size === 0) return undefined;
    const vs = [...byVers.keys()];
    return { low: Math.min(...vs), high: Math.max(...vs) };
  }

  program(prog: number, vers: number): RpcProgram | undefined {
    return this.programs.get(prog)?.get(vers);
  }
}

/** Reply header through accept_stat SUCCESS, preceded by room for the record mark. */
function acceptedHeader(xid: number, stat: number): XdrWriter {
  const w = new XdrWriter(256);
  w.uint32(0); // record mark, set in send()
  w.uint32(xid).enum(MsgType.REPLY).enum(ReplyStat.MSG_ACCEPTED);
  w.enum(AuthFlavor.AUTH_NONE).uint32(0); // verifier: AUTH_NONE, empty
  w.enum(stat);
  return w;
}

function deniedHeader(xid: number, stat: number): XdrWriter {
  const w = new XdrWriter(64);
  w.uint32(0);
  w.uint32(xid).enum(MsgType.REPLY).enum(ReplyStat.MSG_DENIED).enum(stat);
  return w;
}

class Connection {
  private readonly info: RpcConnectionInfo;
  private readonly log: Logger;
  private readonly records: RecordAssembler;
  /** The socket this connection reads and writes (the re-made one, with user-buffer reads). */
  readonly socket: net.Socket;
  private inFlight = 0;
  private writeBlocked = false;
  private dead = false;
  /** The socket is corked until the replies of this turn are all written (see send). */
  private corkedForTurn = false;

  /**
   * `accepted`: a socket our listener accepted paused; its reads are re-made to land in memory
   * the record assembler chooses (user-buffer-socket.ts). Any other socket is read as it comes.
   */
  constructor(private readonly server: RpcServer, accepted: net.Socket, id: number, ownAccept: boolean) {
    this.records = new RecordAssembler(server.maxRecordSize, server.records, {
      record: (record, pooled) => this.dispatch(record, pooled),
      tooLarge: (bytes, max) => this.protocolError('rpc.record.too_large', { bytes, max }),
    });
    const guarded = (fn: () => void) => {
      try {
        fn();
      } catch (e) {
        this.log.error('rpc.conn.failed', { err: e });
        this.destroy();
      }
    };
    const direct = ownAccept
      ? withUserBufferReads(accepted, {
        buffer: () => this.records.nextBuffer(),
        callback: (n) => guarded(() => this.records.filled(n)),
      })
      : null;
    const socket = (this.socket = direct ?? accepted);
    this.info = { id, remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0, localPort: socket.localPort ?? 0, readsInPlace: direct !== null };
    this.log = server.log.child({ conn: id, peer: `${this.info.remoteAddress}:${this.info.remotePort}` });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    if (!direct) socket.on('data', (chunk: Buffer) => guarded(() => this.records.push(chunk)));
    socket.on('drain', () => {
      this.writeBlocked = false;
      this.flowControl();
    });
    socket.on('error', (e) => this.log.debug('rpc.conn.error', { err: e }));
    socket.on('close', () => {
      this.dead = true;
      this.records.stop();
    });
    if (ownAccept) socket.resume(); // accepted paused (or re-made): start reading
  }

  destroy(): void {
    this.dead = true;
    this.records.stop();
    this.socket.destroy();
  }

  /** Stop reading while too many calls run or the peer does not read its replies. */
  private flowControl(): void {
    if (this.dead) return;
    const stop = this.writeBlocked || this.inFlight >= this.server.maxInFlight;
    if (stop && !this.socket.isPaused()) this.socket.pause();
    else if (!stop && this.socket.isPaused()) this.socket.resume();
  }

  private protocolError(event: string, fields: Record<string, unknown>): void {
    this.server.stats.protocolErrors++;
    this.log.warn(event, fields);
    this.destroy();
  }

  private dispatch(record: Buffer, pooled = false): void {
    const server = this.server;
    if (record.length < 8) {
      this.protocolError('rpc.record.short', { bytes: record.length });
      return;
    }
    const r = new XdrReader(record);
    const xid = r.uint32();
    const mtype = r.uint32();
    if (mtype !== MsgType.CALL) {
      this.protocolError('rpc.record.not_a_call', { xid, mtype });
      return;
    }
    server.stats.calls++;
    let call: RpcCall;
    try {
      const rpcvers = r.uint32();
      if (rpcvers !== RPC_VERSION) {
        this.send(deniedHeader(xid, RejectStat.RPC_MISMATCH).uint32(RPC_VERSION).uint32(RPC_VERSION));
        return;
      }
      const prog = r.uint32();
      const vers = r.uint32();
      const proc = r.uint32();
      const cred = readOpaqueAuth(r);
      const verf = readOpaqueAuth(r);
      call = { xid, prog, vers, proc, cred, verf, args: r, conn: this.info };
      if (pooled) call.recycleRecord = () => this.recycleWhenDone(call, record);
    } catch (e) {
      if (!(e instanceof XdrError)) throw e;
      this.garbage(xid, e);
      return;
    }
    const program = server.program(call.prog, call.vers);
    if (!program) {
      const range = server.versions(call.prog);
      if (!range) this.send(acceptedHeader(xid, AcceptStat.PROG_UNAVAIL));
      else this.send(acceptedHeader(xid, AcceptStat.PROG_MISMATCH).uint32(range.low).uint32(range.high));
      return;
    }
    const flavors = program.flavors ?? [AuthFlavor.AUTH_NONE, AuthFlavor.AUTH_SYS];
    if (!flavors.includes(call.cred.flavor)) {
      this.send(deniedHeader(xid, RejectStat.AUTH_ERROR).enum(AuthStat.AUTH_TOOWEAK));
      return;
    }
    if (call.cred.flavor === AuthFlavor.AUTH_SYS) {
      try {
        call.authSys = decodeAuthSys(call.cred.body);
      } catch {
        this.send(deniedHeader(xid, RejectStat.AUTH_ERROR).enum(AuthStat.AUTH_BADCRED));
        return;
      }
    }
    const handler = program.procedures.get(call.proc);
    if (!handler) {
      this.send(acceptedHeader(xid, AcceptStat.PROC_UNAVAIL));
      return;
    }
    const res = acceptedHeader(xid, AcceptStat.SUCCESS);
    let pending: void | Promise<void>;
    try {
      pending = handler(call, res);
    } catch (e) {
      this.failed(call, program, e);
      return;
    }
    if (!pending || typeof (pending as Promise<void>).then !== 'function') {
      this.send(res, call);
      return;
    }
    this.inFlight++;
    this.flowControl();
    const done = (pending as Promise<void>).then(
      () => this.send(res, call),
      (e: unknown) => this.failed(call, program, e),
    ).finally(() => {
      this.inFlight--;
      server.running.delete(done);
      this.flowControl();
    }).catch((e: unknown) => this.log.error('rpc.reply.failed', { err: e }));
    server.running.add(done);
  }

  /** recycleRecord: `record` goes back to the pool after the holder's release and the reply. */
  private recycleWhenDone(call: RpcCall, record: Buffer): () => void {
    call.recycleRecord = undefined; // one holder per record
    let users = 2;
    const done = () => {
      if (--users === 0) this.server.records.give(record.buffer);
    };
    (call.afterReply ??= []).push(done);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      done();
    };
  }

  private garbage(xid: number, e: unknown): void {
    this.server.stats.garbage++;
    this.log.debug('rpc.call.garbage', { xid, err: e });
    this.send(acceptedHeader(xid, AcceptStat.GARBAGE_ARGS));
  }

  private failed(call: RpcCall, program: RpcProgram, e: unknown): void {
    afterReply(call); // the reply the procedure built is not sent
    if (e instanceof XdrError) return this.garbage(call.xid, e);
    if (e instanceof RpcAuthError) return this.send(deniedHeader(call.xid, RejectStat.AUTH_ERROR).enum(e.authStat));
    if (e instanceof RpcError) {
      if (e.acceptStat === AcceptStat.GARBAGE_ARGS) return this.garbage(call.xid, e);
      return this.send(acceptedHeader(call.xid, e.acceptStat));
    }
    this.server.stats.systemErrors++;
    this.log.error('rpc.call.failed', { program: program.name, vers: call.vers, proc: call.proc, xid: call.xid, err: e });
    this.send(acceptedHeader(call.xid, AcceptStat.SYSTEM_ERR));
  }

  /**
   * Write one reply record: the mark goes into the first piece, all pieces in one corked burst
   * (with the other replies of this turn).
   * `call`'s afterReply runs once the socket has written the last piece (or failed to).
   */
  private send(w: XdrWriter, call?: RpcCall): void {
    const after = call?.afterReply?.length ? () => afterReply(call) : undefined;
    if (this.dead || this.socket.destroyed) {
      after?.();
      return;
    }
    const parts = w.finish();
    let total = 0;
    for (const p of parts) total += p.length;
    parts[0]!.writeUInt32BE((LAST_FRAGMENT | (total - 4)) >>> 0, 0);
    // Replies finished in the same turn leave in one write: a client with calls in flight sends
    // them in one segment, and their replies (CREATE, GETATTR, REMOVE: a few hundred bytes each)
    // would otherwise cost a system call apiece. The cork comes off on the next tick: when this
    // reply came from a promise job (most handlers await), that is after every promise job
    // already queued, so their replies join it; a lone reply waits for nothing.
    if (!this.corkedForTurn) {
      this.corkedForTurn = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corkedForTurn = false;
        this.socket.uncork();
      });
    }
    let ok = true;
    for (let i = 0; i < parts.length; i++) ok = this.socket.write(parts[i]!, i === parts.length - 1 ? after : undefined) && ok;
    if (!ok && !this.writeBlocked) {
      this.writeBlocked = true;
      this.flowControl();
    }
  }
}

/** Run (once) what a call asked to run after its reply. */
function afterReply(call: RpcCall): void {
  const fns = call.afterReply;
  if (!fns) return;
  call.afterReply = undefined;
  for (const f of fns) f();
}
