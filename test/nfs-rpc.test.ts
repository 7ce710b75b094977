/**
 * ONC RPC server over TCP, driven by a raw socket sending hand-built records: record marking,
 * pipelining and out-of-order replies, every rejection status, the record size limit, and a fuzz
 * run of thousands of random and mutated records against the real NFS server, after which it
 * must still answer.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Store } from '../capsule/store.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { AcceptStat, AuthFlavor, AuthStat, MsgType, RejectStat, ReplyStat, RpcError, RpcServer, type RpcConnectionInfo, type RpcProcedure } from '../gateway/nfs/rpc.js';
import { decodeReply, encodeCall, RecordReader, RpcClient, type RpcReply } from '../gateway/nfs/rpc-client.js';
import { XdrWriter } from '../gateway/nfs/xdr.js';
import { NFS_PROGRAM, NFS_V3, Proc3 } from '../gateway/nfs/nfs3.js';
import { MOUNT_PROGRAM, MOUNT_V3, MountProc } from '../gateway/nfs/mount3.js';
import { createLogger } from '../capsule/log.js';
import { tmpDir, rmrf } from './helpers/tmp.js';

const PROG = 0x20000042;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw connection: write bytes, collect reply records, notice when the server hangs up. */
class Raw {
  readonly replies: RpcReply[] = [];
  closed = false;
  private waiters: (() => void)[] = [];
  private readonly done: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    const reader = new RecordReader((rec) => {
      this.replies.push(decodeReply(rec));
      this.wake();
    });
    socket.on('data', (c: Buffer) => reader.push(c));
    socket.on('error', () => {});
    this.done = new Promise((r) => socket.on('close', () => {
      this.closed = true;
      this.wake();
      r();
    }));
  }

  static connect(port: number): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(new Raw(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** Wait until `n` replies arrived (or the connection closed, or the timeout passed). */
  async waitReplies(n: number, timeoutMs = 5000): Promise<RpcReply[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length < n && !this.closed && Date.now() < deadline) {
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), sleep(Math.max(1, deadline - Date.now()))]);
    }
    return this.replies;
  }

  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    await Promise.race([this.done, sleep(timeoutMs)]);
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Split a whole record (with its mark) into fragments of the given sizes. */
function fragment(record: Buffer, sizes: number[]): Buffer {
  const body = record.subarray(4);
  const out: Buffer[] = [];
  let off = 0;
  for (let i = 0; off < body.length || i === 0; i++) {
    const n = Math.min(sizes[i % sizes.length]!, body.length - off);
    const last = off + n >= body.length;
    const h = Buffer.alloc(4);
    h.writeUInt32BE(((last ? 0x80000000 : 0) | n) >>> 0, 0);
    out.push(h, body.subarray(off, off + n));
    off += n;
  }
  return Buffer.concat(out);
}

const echoArgs = (s: string, delayMs = 0) => new XdrWriter().uint32(delayMs).string(s).toBuffer();

describe('nfs rpc server (raw TCP)', function () {
  let server: RpcServer;
  let port: number;
  /** What the afterReply procedures saw: 'sent:<tag>' when their release ran. */
  const released: string[] = [];
  const payload = Buffer.alloc(20000, 0x5a);

  before(async () => {
    server = new RpcServer({ maxRecordSize: 64 << 10 });
    // Borrowed bytes in the reply by reference, released once written (or the reply dropped).
    const lend = (tag: string, fail: boolean, delay: number): RpcProcedure => async (call, res) => {
      if (delay) await sleep(delay);
      (call.afterReply ??= []).push(() => released.push(`sent:${tag}`));
      res.opaqueRef(payload);
      if (fail) throw new Error('failed after borrowing');
    };
    const echo: RpcProcedure = async (call, res) => {
      const delay = call.args.uint32();
      const s = call.args.string(1024);
      if (delay) await sleep(delay);
      res.string(s);
    };
    const procs = new Map<number, RpcProcedure>([
      [0, () => {}],
      [1, echo],
      [2, () => {
        throw new Error('handler bug');
      }],
      [3, () => {
        throw new RpcError(AcceptStat.PROC_UNAVAIL);
      }],
      [4, (call, res) => {
        res.uint32(call.authSys?.uid ?? 0xffffffff).uint32(call.authSys?.gids.length ?? 0).string(call.authSys?.machineName ?? '');
      }],
      [5, lend('ok', false, 0)],
      [6, lend('failed', true, 0)],
      [7, lend('late', false, 300)],
    ]);
    server.register({ prog: PROG, vers: 1, name: 'test1', procedures: procs });
    server.register({ prog: PROG, vers: 3, name: 'test3', procedures: procs });
    const l = await server.listen(0, '127.0.0.1');
    port = (l.address() as net.AddressInfo).port;
  });
  after(() => server.close());

  it('answers a NULL call and an echo', async () => {
    const c = await RpcClient.connect(port);
    const r0 = await c.call(PROG, 1, 0);
    assert.equal(r0.replyStat, ReplyStat.MSG_ACCEPTED);
    assert.equal(r0.acceptStat, AcceptStat.SUCCESS);
    const r1 = await c.call(PROG, 1, 1, echoArgs('hello'));
    assert.equal(r1.body.string(), 'hello');
    c.close();
  });

  it('runs a call\'s afterReply once its reply is written, when it fails, and when the peer is gone', async () => {
    const c = await RpcClient.connect(port);
    const ok = await c.call(PROG, 1, 5);
    assert.ok(ok.body.opaque().equals(payload), 'the borrowed bytes arrive');
    const failed = await c.call(PROG, 1, 6);
    assert.equal(failed.acceptStat, AcceptStat.SYSTEM_ERR);
    for (let i = 0; i < 50 && released.length < 2; i++) await sleep(10);
    assert.deepEqual(released.splice(0), ['sent:ok', 'sent:failed']);
    // The peer hangs up while the procedure runs: the reply is dropped and the release still runs.
    const raw = await Raw.connect(port);
    raw.write(encodeCall(9, PROG, 1, 7, Buffer.alloc(0)));
    await sleep(50);
    raw.close();
    for (let i = 0; i < 100 && released.length < 1; i++) await sleep(10);
    assert.deepEqual(released.splice(0), ['sent:late']);
    c.close();
  });

  it('reassembles a record sent in many fragments and in dribbles', async () => {
    const raw = await Raw.connect(port);
    const rec = encodeCall(77, PROG, 1, 1, echoArgs('fragmented record payload '.repeat(20)));
    const frags = fragment(rec, [1, 3, 7, 100]);
    // dribble the bytes in irregular pieces, including pieces that split record marks
    for (let off = 0; off < frags.length;) {
      const n = 1 + (off % 13);
      raw.write(frags.subarray(off, off + n));
      off += n;
      if (off % 5 === 0) await sleep(1);
    }
    const [r] = await raw.waitReplies(1);
    assert.equal(r!.xid, 77);
    assert.equal(r!.acceptStat, AcceptStat.SUCCESS);
    assert.equal(r!.body.string(), 'fragmented record payload '.repeat(20));
    // an empty fragment before the last one is legal too
    const empty = Buffer.from([0, 0, 0, 0]);
    const rec2 = encodeCall(78, PROG, 1, 0);
    const body = rec2.subarray(4);
    const lastHdr = Buffer.alloc(4);
    lastHdr.writeUInt32BE((0x80000000 | body.length) >>> 0, 0);
    raw.write(Buffer.concat([empty, lastHdr, body]));
    const rs = await raw.waitReplies(2);
    assert.equal(rs[1]!.xid, 78);
    raw.close();
  });

  it('handles many pipelined calls and lets replies overtake each other', async () => {
    const raw = await Raw.connect(port);
    const n = 200;
    const batch: Buffer[] = [];
    // early calls are slow, late calls fast: replies must come back out of order
    for (let i = 0; i < n; i++) batch.push(encodeCall(1000 + i, PROG, 1, 1, echoArgs(`call-${i}`, i < 10 ? 50 - i * 5 : 0)));
    raw.write(Buffer.concat(batch));
    const replies = await raw.waitReplies(n);
    assert.equal(replies.length, n);
    const byXid = new Map(replies.map((r) => [r.xid, r]));
    for (let i = 0; i < n; i++) assert.equal(byXid.get(1000 + i)!.body.string(), `call-${i}`);
    const order = replies.map((r) => r.xid);
    assert.notDeepEqual(order, [...order].sort((a, b) => a - b), 'slow early calls were answered after fast later ones');
    raw.close();
  });

  it('writes the replies it finished in one turn together, not a system call apiece', async () => {
    // Our own listener hands its sockets to accept(), so the server-side socket can be watched:
    // every flush to the kernel goes through _write or _writev.
    let flushes = 0;
    const tcp = net.createServer((sock) => {
      const s = sock as unknown as { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
      const write = s._write.bind(sock);
      const writev = s._writev.bind(sock);
      s._write = (...a) => {
        flushes++;
        write(...a);
      };
      s._writev = (...a) => {
        flushes++;
        writev(...a);
      };
      server.accept(sock);
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    try {
      const raw = await Raw.connect((tcp.address() as net.AddressInfo).port);
      const n = 64;
      const batch: Buffer[] = [];
      for (let i = 0; i < n; i++) batch.push(encodeCall(5000 + i, PROG, 1, 1, echoArgs(`b-${i}`, 0)));
      raw.write(Buffer.concat(batch)); // ~7 KB: arrives in one read, or a few
      const replies = await raw.waitReplies(n);
      assert.deepEqual(replies.map((r) => r.body.string()).sort(), batch.map((_, i) => `b-${i}`).sort());
      assert.ok(flushes >= 1 && flushes <= 8, `${n} replies went out in ${flushes} writes`);
      raw.close();
    } finally {
      tcp.close();
    }
  });

  it('answers GARBAGE_ARGS for undecodable arguments and keeps the connection', async () => {
    const raw = await Raw.connect(port);
    // the string length claims 1000 bytes that are not there
    raw.write(encodeCall(5, PROG, 1, 1, new XdrWriter().uint32(0).uint32(1000).toBuffer()));
    raw.write(encodeCall(6, PROG, 1, 1, new XdrWriter().uint32(0).uint32(5000).toBuffer())); // over the 1024 max
    raw.write(encodeCall(7, PROG, 1, 0));
    const rs = await raw.waitReplies(3);
    const by = new Map(rs.map((r) => [r.xid, r]));
    assert.equal(by.get(5)!.acceptStat, AcceptStat.GARBAGE_ARGS);
    assert.equal(by.get(6)!.acceptStat, AcceptStat.GARBAGE_ARGS);
    assert.equal(by.get(7)!.acceptStat, AcceptStat.SUCCESS);
    assert.equal(raw.closed, false);
    raw.close();
  });

  it('rejects unknown programs, versions, procedures and RPC versions with the right status', async () => {
    const c = await RpcClient.connect(port);
    const unavail = await c.call(PROG + 1, 1, 0);
    assert.equal(unavail.acceptStat, AcceptStat.PROG_UNAVAIL);
    const mismatch = await c.call(PROG, 2, 0);
    assert.equal(mismatch.acceptStat, AcceptStat.PROG_MISMATCH);
    assert.equal(mismatch.low, 1);
    assert.equal(mismatch.high, 3);
    const noproc = await c.call(PROG, 1, 99);
    assert.equal(noproc.acceptStat, AcceptStat.PROC_UNAVAIL);
    const thrown = await c.call(PROG, 1, 3);
    assert.equal(thrown.acceptStat, AcceptStat.PROC_UNAVAIL);
    c.close();
    const raw = await Raw.connect(port);
    const bad = encodeCall(9, PROG, 1, 0);
    bad.writeUInt32BE(3, 12); // rpcvers
    raw.write(bad);
    const [r] = await raw.waitReplies(1);
    assert.equal(r!.replyStat, ReplyStat.MSG_DENIED);
    assert.equal(r!.rejectStat, RejectStat.RPC_MISMATCH);
    assert.equal(r!.low, 2);
    assert.equal(r!.high, 2);
    raw.close();
  });

  it('parses AUTH_SYS and denies malformed or unsupported credentials', async () => {
    const c = await RpcClient.connect(port, '127.0.0.1', { stamp: 1, machineName: 'client-a', uid: 1000, gid: 100, gids: [100, 20, 30] });
    const r = await c.call(PROG, 1, 4);
    assert.equal(r.body.uint32(), 1000);
    assert.equal(r.body.uint32(), 3);
    assert.equal(r.body.string(), 'client-a');
    c.close();
    const raw = await Raw.connect(port);
    const call = (xid: number, flavor: number, body: Buffer) => {
      const w = new XdrWriter().uint32(0).uint32(xid).uint32(MsgType.CALL).uint32(2).uint32(PROG).uint32(1).uint32(0);
      w.uint32(flavor).opaque(body).uint32(0).uint32(0);
      const b = w.toBuffer();
      b.writeUInt32BE((0x80000000 | (b.length - 4)) >>> 0, 0);
      return b;
    };
    raw.write(call(1, AuthFlavor.AUTH_SYS, Buffer.from([0, 0, 0, 1]))); // truncated authsys_parms
    raw.write(call(2, AuthFlavor.RPCSEC_GSS, Buffer.alloc(8)));
    raw.write(call(3, AuthFlavor.AUTH_SYS, new XdrWriter().uint32(1).string('h').uint32(0).uint32(0).uint32(17).toBuffer())); // 17 gids > 16
    const rs = await raw.waitReplies(3);
    const by = new Map(rs.map((x) => [x.xid, x]));
    assert.equal(by.get(1)!.rejectStat, RejectStat.AUTH_ERROR);
    assert.equal(by.get(1)!.authStat, AuthStat.AUTH_BADCRED);
    assert.equal(by.get(2)!.authStat, AuthStat.AUTH_TOOWEAK);
    assert.equal(by.get(3)!.authStat, AuthStat.AUTH_BADCRED);
    raw.close();
  });

  it('answers SYSTEM_ERR when a handler fails, and goes on serving', async () => {
    const before = server.stats.systemErrors;
    const c = await RpcClient.connect(port);
    const r = await c.call(PROG, 1, 2);
    assert.equal(r.acceptStat, AcceptStat.SYSTEM_ERR);
    assert.equal(server.stats.systemErrors, before + 1);
    assert.equal((await c.call(PROG, 1, 0)).acceptStat, AcceptStat.SUCCESS);
    c.close();
  });

  it('closes the connection when a record exceeds the size limit', async () => {
    const raw = await Raw.connect(port);
    const h = Buffer.alloc(4);
    h.writeUInt32BE((0x80000000 | (10 << 20)) >>> 0, 0); // announces 10 MiB, limit is 64 KiB
    raw.write(Buffer.concat([h, Buffer.alloc(100)]));
    assert.equal(await raw.waitClosed(), true);
    // also when the fragments of one record add up past the limit
    const raw2 = await Raw.connect(port);
    const frag = Buffer.alloc(4 + 40_000);
    frag.writeUInt32BE(40_000, 0); // not last
    raw2.write(frag);
    raw2.write(frag);
    assert.equal(await raw2.waitClosed(), true);
    const c = await RpcClient.connect(port);
    assert.equal((await c.call(PROG, 1, 0)).acceptStat, AcceptStat.SUCCESS);
    c.close();
  });

  it('closes the connection on records that are not calls', async () => {
    const raw = await Raw.connect(port);
    const reply = new XdrWriter().uint32(0x80000000 | 12).uint32(1).uint32(MsgType.REPLY).uint32(0).toBuffer();
    raw.write(reply);
    assert.equal(await raw.waitClosed(), true);
    const raw2 = await Raw.connect(port);
    raw2.write(Buffer.from([0x80, 0, 0, 2, 1, 2]));
    assert.equal(await raw2.waitClosed(), true);
  });
});

// ---------------------------------------------------------------- fuzz against the NFS server

/** Deterministic PRNG (mulberry32) so a failing run can be replayed. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('nfs rpc server: reusable record memory', function () {
  let server: RpcServer;
  let client: RpcClient;
  /** What the holding procedure kept of each call: its data (a view of the record) and release. */
  const held: { data: Buffer; copy: Buffer; release?: () => void }[] = [];
  const HOLD = 1;
  const IGNORE = 2;
  let lastConn: RpcConnectionInfo | undefined;

  before(async () => {
    server = new RpcServer();
    const procs = new Map<number, RpcProcedure>([
      [HOLD, (call, res) => {
        lastConn = call.conn;
        const data = call.args.opaque();
        held.push({ data, copy: Buffer.from(data), release: call.recycleRecord?.() });
        res.uint32(data.length);
      }],
      [IGNORE, (call, res) => {
        const data = call.args.opaque();
        held.push({ data, copy: Buffer.from(data) });
        res.uint32(data.length);
      }],
    ]);
    server.register({ prog: PROG, vers: 1, name: 'records', procedures: procs });
    const l = await server.listen(0, '127.0.0.1');
    client = await RpcClient.connect((l.address() as net.AddressInfo).port);
  });
  after(async () => {
    client.close();
    await server.close();
  });

  const send = async (proc: number, size: number, seed: number) => {
    const r = await client.call(PROG, 1, proc, new XdrWriter(size + 8).opaque(Buffer.alloc(size, seed)).toBuffer());
    assert.equal(r.body.uint32(), size);
    return held[held.length - 1]!;
  };

  it('reuses a large record only after its holder released it and the reply went out', async () => {
    const small = await send(HOLD, 1000, 1);
    assert.equal(small.release, undefined, 'small records are not pooled');
    const a = await send(HOLD, 200_000, 2);
    assert.ok(a.release, 'a large record is offered');
    const b = await send(HOLD, 200_000, 3);
    assert.notEqual(b.data.buffer, a.data.buffer, 'not released yet: new memory');
    assert.deepEqual(a.data, a.copy, 'and the held bytes are intact');
    a.release!();
    a.release!(); // a second call changes nothing
    const c = await send(HOLD, 200_000, 4);
    assert.equal(c.data.buffer, a.data.buffer, 'released: the memory is reused');
    assert.deepEqual(c.data, c.copy);
    assert.equal(server.records.keptBytes, 0);
  });

  it('reads large records in place into shared memory on its own connections; a socket handed to accept() is read as it comes', async () => {
    const a = await send(HOLD, 300_000, 11);
    assert.ok(a.data.buffer instanceof SharedArrayBuffer, 'pooled records are shared memory (codec workers read them where they are)');
    assert.equal(lastConn?.readsInPlace, true, 'a connection our listener accepted reads in place');
    a.release!();
    // The same server, fed a socket accepted elsewhere: Node's own chunks, same records.
    const other = net.createServer((s) => server.accept(s));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const c2 = await RpcClient.connect((other.address() as net.AddressInfo).port);
    try {
      for (const size of [10, 70_000, 300_000]) {
        const r = await c2.call(PROG, 1, HOLD, new XdrWriter(size + 8).opaque(Buffer.alloc(size, 12)).toBuffer());
        assert.equal(r.body.uint32(), size);
        const h = held[held.length - 1]!;
        assert.deepEqual(h.data, Buffer.alloc(size, 12));
        assert.equal(lastConn?.readsInPlace, false);
        h.release?.();
      }
    } finally {
      c2.close();
      await new Promise<void>((r) => other.close(() => r()));
    }
  });

  it('never reuses a record whose procedure did not ask', async () => {
    const ignored = await send(IGNORE, 200_000, 5);
    const later: Buffer[] = [];
    for (let i = 0; i < 4; i++) {
      const h = await send(HOLD, 200_000, 6 + i);
      later.push(h.data);
      h.release!();
    }
    assert.ok(later.every((d) => d.buffer !== ignored.data.buffer));
    assert.ok(later.slice(1).every((d) => d.buffer === later[0]!.buffer), 'the released one goes round');
    assert.deepEqual(ignored.data, ignored.copy);
  });
});

describe('nfs rpc fuzz', function () {
  this.timeout(300_000);
  let dir: string;
  let store: Store;
  let nfs: NfsServer;
  const errors: Record<string, unknown>[] = [];

  before(async () => {
    dir = tmpDir('space-nfs-fuzz-');
    store = Store.open(dir);
    await store.create({ name: 'fuzz' });
    await store.mkdir('fuzz', 'd');
    await store.put('fuzz', 'd/f', (async function* () {
      yield Buffer.alloc(10_000, 7);
    })());
    const logger = createLogger({ component: 'fuzz', level: 'error', write: (l) => errors.push(JSON.parse(l) as Record<string, unknown>) });
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0, maxRecordSize: 256 << 10, logger });
    await nfs.addExport({ ref: 'fuzz' });
  });
  after(async () => {
    await nfs.close();
    await store.close();
    rmrf(dir);
  });

  it('survives thousands of random and mutated records and still answers', async () => {
    const { port, mountPort } = nfs.address();
    const c = await RpcClient.connect(port, '127.0.0.1', { stamp: 0, machineName: 'fuzzer', uid: 0, gid: 0, gids: [] });
    const mnt = await c.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, new XdrWriter().string('/fuzz').toBuffer());
    assert.equal(mnt.body.uint32(), 0);
    const root = mnt.body.opaque(64);
    const look = await c.call(NFS_PROGRAM, NFS_V3, Proc3.LOOKUP, new XdrWriter().opaque(root).string('d').toBuffer());
    assert.equal(look.body.uint32(), 0);
    const dh = look.body.opaque(64);
    c.close();

    // Valid calls of every procedure: the seeds that mutations start from.
    const fh = (h: Buffer) => new XdrWriter().opaque(h);
    const sattr = (w: XdrWriter) => w.bool(true).uint32(0o644).bool(false).bool(false).bool(false).uint32(0).uint32(0);
    const seeds: [number, number, number, Buffer][] = [
      [NFS_PROGRAM, 3, Proc3.NULL, Buffer.alloc(0)],
      [NFS_PROGRAM, 3, Proc3.GETATTR, fh(root).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.SETATTR, sattr(fh(dh)).bool(false).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.LOOKUP, fh(dh).string('f').toBuffer()],
      [NFS_PROGRAM, 3, Proc3.ACCESS, fh(root).uint32(0x3f).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.READ, fh(dh).uint64(0).uint32(4096).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.WRITE, fh(dh).uint64(100).uint32(16).uint32(0).opaque(Buffer.alloc(16, 1)).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.CREATE, sattr(fh(dh).string('new').uint32(0)).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.MKDIR, sattr(fh(dh).string('sub')).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.REMOVE, fh(dh).string('new').toBuffer()],
      [NFS_PROGRAM, 3, Proc3.RMDIR, fh(dh).string('sub').toBuffer()],
      [NFS_PROGRAM, 3, Proc3.RENAME, fh(dh).string('new').opaque(dh).string('new2').toBuffer()],
      [NFS_PROGRAM, 3, Proc3.READDIR, fh(root).uint64(0).fixedOpaque(Buffer.alloc(8)).uint32(4096).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.READDIRPLUS, fh(root).uint64(0).fixedOpaque(Buffer.alloc(8)).uint32(4096).uint32(32768).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.FSSTAT, fh(root).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.FSINFO, fh(root).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.PATHCONF, fh(root).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.COMMIT, fh(dh).uint64(0).uint32(0).toBuffer()],
      [NFS_PROGRAM, 3, Proc3.LINK, fh(dh).opaque(dh).string('l').toBuffer()],
      [MOUNT_PROGRAM, 3, MountProc.MNT, new XdrWriter().string('/fuzz/d').toBuffer()],
      [MOUNT_PROGRAM, 3, MountProc.EXPORT, Buffer.alloc(0)],
      [MOUNT_PROGRAM, 3, MountProc.DUMP, Buffer.alloc(0)],
      [MOUNT_PROGRAM, 3, MountProc.UMNT, new XdrWriter().string('/fuzz').toBuffer()],
    ];
    const rand = rng(Number(process.env.NFS_FUZZ_SEED) || 0x5eed);
    const ri = (n: number) => Math.floor(rand() * n);
    const authSys = { stamp: 1, machineName: 'fz', uid: 1000, gid: 1000, gids: [1, 2] };
    const mutate = (xid: number): Buffer => {
      const kind = ri(10);
      if (kind === 0) {
        // pure noise with a valid record mark
        const body = Buffer.from(Array.from({ length: 8 + ri(200) }, () => ri(256)));
        body.writeUInt32BE(xid, 0);
        body.writeUInt32BE(0, 4); // CALL, so it is answered rather than dropped
        const h = Buffer.alloc(4);
        h.writeUInt32BE((0x80000000 | body.length) >>> 0, 0);
        return Buffer.concat([h, body]);
      }
      const [prog, vers, proc, args] = seeds[ri(seeds.length)]!;
      const rec = Buffer.from(encodeCall(xid, kind === 1 ? ri(0x7fffffff) : prog, kind === 2 ? ri(6) : vers, kind === 3 ? ri(30) : proc, args, ri(2) ? authSys : undefined));
      if (kind <= 3) return rec;
      // byte flips, 32-bit field overwrites, truncation or extension of the body
      const body = rec.subarray(4);
      const flips = 1 + ri(4);
      for (let i = 0; i < flips; i++) {
        const at = 8 + ri(Math.max(1, body.length - 8)); // keep xid and msg type
        if (at >= body.length) continue;
        if (ri(2)) body[at] = ri(256);
        else if (at + 4 <= body.length) body.writeUInt32BE([0, 1, 0xffffffff, 0x7fffffff, 64, 65, 1 << 20, ri(0x100000000)][ri(8)]! >>> 0, at & ~3);
      }
      let out = body;
      if (kind === 8) out = body.subarray(0, 8 + ri(Math.max(1, body.length - 8)));
      if (kind === 9) out = Buffer.concat([body, Buffer.from(Array.from({ length: ri(64) }, () => ri(256)))]);
      const h = Buffer.alloc(4);
      h.writeUInt32BE((0x80000000 | out.length) >>> 0, 0);
      return Buffer.concat([h, out]);
    };

    let sent = 0;
    let answered = 0;
    let closedByServer = 0;
    const target = 6000;
    let xid = 1;
    for (let conn = 0; sent < target; conn++) {
      const raw = await Raw.connect(conn % 3 === 2 ? mountPort : port);
      const batch: Buffer[] = [];
      const n = 50 + ri(150);
      for (let i = 0; i < n; i++) batch.push(mutate(xid++));
      sent += n;
      const all = Buffer.concat(batch);
      // every fourth connection gets its stream cut into random pieces, one in ten a broken mark
      if (conn % 4 === 1) {
        for (let off = 0; off < all.length;) {
          const k = 1 + ri(3000);
          raw.write(all.subarray(off, off + k));
          off += k;
        }
      } else raw.write(all);
      if (conn % 10 === 7) raw.write(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3])); // huge non-last fragment
      const sentinel = xid++;
      raw.write(encodeCall(sentinel, NFS_PROGRAM, 3, Proc3.NULL));
      const deadline = Date.now() + 10_000;
      while (!raw.closed && !raw.replies.some((r) => r.xid === sentinel) && Date.now() < deadline) await raw.waitReplies(raw.replies.length + 1, 200);
      answered += raw.replies.length;
      if (raw.closed) closedByServer++;
      raw.close();
    }
    console.log(`      fuzz: ${sent} records sent, ${answered} replies, ${closedByServer} connections closed by the server, garbage=${nfs.rpc.stats.garbage} protocolErrors=${nfs.rpc.stats.protocolErrors}`);
    assert.ok(sent >= target);
    assert.ok(answered > target / 2, `most fuzz calls were answered (${answered} of ${sent})`);
    assert.ok(closedByServer > 0, 'broken framing closed some connections');

    // the server is alive and well: NULL on both ports, and real work
    for (const p of [port, mountPort]) {
      const ok = await RpcClient.connect(p);
      assert.equal((await ok.call(NFS_PROGRAM, NFS_V3, Proc3.NULL)).acceptStat, AcceptStat.SUCCESS);
      const ga = await ok.call(NFS_PROGRAM, NFS_V3, Proc3.GETATTR, new XdrWriter().opaque(root).toBuffer());
      assert.equal(ga.acceptStat, AcceptStat.SUCCESS);
      assert.equal(ga.body.uint32(), 0);
      ok.close();
    }
    assert.equal(nfs.rpc.stats.systemErrors, 0, 'no handler crashed on fuzzed input');
    const unexpected = errors.filter((e) => e.event === 'nfs.op.failed' || e.event === 'rpc.call.failed' || e.event === 'rpc.conn.failed' || e.event === 'nfs.mount.failed');
    assert.deepEqual(unexpected, [], 'no unexpected error on fuzzed input');
  });
});
