/**
 * Hostile NVMe/TCP input over raw TCP: protocol violations must end the connection with a
 * C2HTermReq naming the field (where the transport spec calls for one), execute nothing, and
 * leave the target serving new connections with the capsule's data intact. Then a seeded fuzzer
 * throws thousands of random and mutated PDUs at it.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Store } from '../capsule/store.js';
import { validatePolicy } from '../capsule/policy.js';
import { NvmeTarget } from '../gateway/nvme/target.js';
import { AdminOpcode, DISCOVERY_NQN, Fes, IoOpcode, PduFlag, PduType, Sgl } from '../gateway/nvme/constants.js';
import { buildSqe, decodeCqe } from '../gateway/nvme/command.js';
import { MAX_H2C_DATA } from '../gateway/nvme/connection.js';
import { MAX_TRANSFER } from '../gateway/nvme/identify.js';
import {
  HOST_ACCEPTS, PduReader, encodeC2HData, encodeCapsuleCmd, encodeCapsuleResp, encodeH2CData, encodeICReq, encodeICResp, encodeR2T,
  encodeTermReq, r2tFields, termReqFields, type Digests, type Pdu,
} from '../gateway/nvme/pdu.js';
import { check, connectController, connectData, connectSqe, propertySqe, readSqe, writeSqe, type ControllerSession } from '../bench/nvme/initiator.js';
import { prand, rmrf, sha256, tmpDir } from './helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * 1024;
const HOSTNQN = 'nqn.2014-08.org.example:hostile-host';
const HOST_ID = Buffer.alloc(16, 0x5a);
const CC_ENABLE = BigInt(1 | (6 << 16) | (4 << 20));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A bare NVMe/TCP host connection: sends whatever bytes it is given and records every PDU the
 * target sends back (framed with the host-side reader, digests as negotiated).
 */
class Raw {
  readonly pdus: Pdu[] = [];
  private readonly taken = new Set<Pdu>();
  private readonly reader = new PduReader({ accept: HOST_ACCEPTS, maxPduBytes: 64 << 20 });
  readonly dg: Digests = { header: false, data: false };
  readonly closed: Promise<void>;
  isClosed = false;
  parseError?: unknown;
  private wake: () => void = () => {};
  private nextCid = 1;

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const p of this.reader.push(chunk)) {
          this.pdus.push(p);
          if (p.type === PduType.ICResp) {
            this.dg.header = (p.header[11]! & 1) !== 0;
            this.dg.data = (p.header[11]! & 2) !== 0;
            this.reader.headerDigest = this.dg.header;
            this.reader.dataDigest = this.dg.data;
          }
        }
      } catch (e) {
        this.parseError = e;
      }
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.isClosed = true;
      this.wake();
      resolve();
    }));
  }

  static async open(port: number): Promise<Raw> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new Raw(socket);
  }

  send(...parts: (Buffer | Buffer[])[]): void {
    for (const p of parts.flat()) if (!this.socket.destroyed) this.socket.write(p);
  }

  /** The first PDU not yet taken that matches; fails if the connection closes first. */
  async take(pred: (p: Pdu) => boolean, what: string, timeoutMs = 10_000): Promise<Pdu> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this.pdus.find((x) => !this.taken.has(x) && pred(x));
      if (p) {
        this.taken.add(p);
        return p;
      }
      if (this.isClosed) assert.fail(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  async icreq(o: { headerDigest?: boolean; dataDigest?: boolean; hpda?: number } = {}): Promise<void> {
    this.send(encodeICReq({ headerDigest: !!o.headerDigest, dataDigest: !!o.dataDigest, hpda: o.hpda }));
    await this.take((p) => p.type === PduType.ICResp, 'ICResp');
  }

  /** Send a command (cid assigned, data in the capsule when given) and return its cid. */
  command(sqe: Buffer, inCapsule?: Buffer, cid = this.nextCid++): number {
    sqe.writeUInt16LE(cid, 2);
    if (inCapsule) {
      sqe[39] = Sgl.InCapsule;
      sqe.writeUInt32LE(inCapsule.length, 32);
    }
    this.send(encodeCapsuleCmd(sqe, inCapsule, this.dg));
    return cid;
  }

  async completion(cid: number, what = `completion of cid ${cid}`) {
    const p = await this.take((x) => x.type === PduType.CapsuleResp && x.header.readUInt16LE(20) === cid, what);
    return decodeCqe(p.header.subarray(8, 24));
  }

  async r2t(cid: number) {
    return r2tFields((await this.take((x) => x.type === PduType.R2T && x.header.readUInt16LE(8) === cid, `R2T for cid ${cid}`)).header);
  }

  /** Wait for the target to close the connection; its C2HTermReq, if it sent one. */
  async terminated(timeoutMs = 10_000): Promise<{ fes: number; fei: number; echo: Buffer } | undefined> {
    const outcome = await Promise.race([this.closed.then(() => 'closed'), sleep(timeoutMs).then(() => 'open')]);
    assert.equal(outcome, 'closed', 'the target closes the connection');
    assert.equal(this.parseError, undefined, 'the target sent well-formed PDUs');
    const t = this.pdus.find((p) => p.type === PduType.C2HTermReq);
    if (!t) return undefined;
    assert.ok(t.header.readUInt32LE(4) <= 152, 'C2HTermReq PLEN is at most 152');
    return { ...termReqFields(t.header), echo: t.data ?? Buffer.alloc(0) };
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Expect a C2HTermReq with this FES (and FEI), echoing the start of the offending PDU. */
async function expectTermReq(raw: Raw, fes: number, fei: number | undefined, offending?: Buffer): Promise<void> {
  const t = await raw.terminated();
  assert.ok(t, 'a C2HTermReq was sent');
  assert.equal(t.fes, fes, `FES (FEI ${t.fei})`);
  if (fei !== undefined) assert.equal(t.fei, fei, 'FEI');
  if (offending) {
    assert.ok(t.echo.length >= 8, 'the offending header is echoed');
    assert.deepEqual(t.echo, offending.subarray(0, t.echo.length));
  }
}

/** A common header with arbitrary fields, padded to `total` bytes. */
function pdu(type: number, flags: number, hlen: number, pdo: number, plen: number, total = hlen): Buffer {
  const b = Buffer.alloc(total);
  b[0] = type;
  b[1] = flags;
  b[2] = hlen;
  b[3] = pdo;
  b.writeUInt32LE(plen >>> 0, 4);
  return b;
}

/** Deterministic random numbers drawn from a seeded byte pool. */
class Rng {
  private pool: Buffer;
  private pos = 0;
  private refills = 0;
  constructor(private readonly seed: number) {
    this.pool = prand(64 * 1024, seed);
  }
  u32(): number {
    if (this.pos + 4 > this.pool.length) {
      this.pool = prand(64 * 1024, this.seed * 1000 + ++this.refills);
      this.pos = 0;
    }
    const v = this.pool.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  int(n: number): number {
    return this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

describe('nvme target under hostile input', function () {
  let dir: string;
  let store: Store;
  let target: NvmeTarget;
  let port: number;
  let rw: string;
  let ro: string;
  let scratch: string;
  const SIZE = 4 * MiB;
  let original: Buffer;
  let originalHash: string;
  const cleanups: (() => void)[] = [];

  const contentHash = async () => sha256(await store.read('victim', 'content', 0, SIZE));

  async function session(subnqn: string, o: Partial<Parameters<typeof connectController>[0]> = {}): Promise<ControllerSession> {
    const s = await connectController({ host: '127.0.0.1', port, subnqn, ...o });
    cleanups.push(() => s.close());
    return s;
  }

  async function raw(): Promise<Raw> {
    const r = await Raw.open(port);
    cleanups.push(() => r.close());
    return r;
  }

  /** A raw connection that is an enabled admin queue. */
  async function rawAdmin(subnqn = rw): Promise<Raw> {
    const r = await raw();
    await r.icreq();
    const c = await r.completion(r.command(connectSqe(0, 31, 0), connectData(subnqn, HOSTNQN, 0xffff, HOST_ID)));
    assert.deepEqual([c.sct, c.sc], [0, 0], 'connect');
    const e = await r.completion(r.command(propertySqe(false, 0x14, false, CC_ENABLE)));
    assert.deepEqual([e.sct, e.sc], [0, 0], 'enable');
    return r;
  }

  /** A raw connection that is I/O queue 1 of a fresh controller (whose admin queue is a normal session). */
  async function rawIo(subnqn = rw, o: { headerDigest?: boolean; dataDigest?: boolean } = {}): Promise<Raw> {
    const s = await session(subnqn, { hostnqn: HOSTNQN, hostId: HOST_ID, ioQueues: 0, grantQueues: 1 });
    const r = await raw();
    await r.icreq(o);
    const c = await r.completion(r.command(connectSqe(1, 127, 0), connectData(subnqn, HOSTNQN, s.cntlid, HOST_ID)));
    assert.deepEqual([c.sct, c.sc], [0, 0], 'I/O queue connect');
    return r;
  }

  /** The target still serves a new connection, and the victim capsule holds exactly what it did. */
  async function stillServes(): Promise<void> {
    const s = await session(rw, { ioQueues: 1, headerDigest: true, dataDigest: true });
    const got = check(await s.io[0]!.submit(readSqe(0, 2048, 512)), 'read').data!;
    assert.deepEqual(got, original.subarray(0, MiB));
    const tail = check(await s.io[0]!.submit(readSqe(SIZE / 512 - 16, 16, 512)), 'read tail').data!;
    assert.deepEqual(tail, original.subarray(SIZE - 8192));
    assert.equal(await contentHash(), originalHash, 'the capsule is unchanged');
    s.close();
  }

  /** A hostile test: its body, then proof that nothing broke. */
  function hostile(name: string, body: () => Promise<void>): void {
    it(name, async () => {
      await body();
      await stillServes();
    });
  }

  before(async () => {
    dir = tmpDir('space-nvme-hostile-');
    store = Store.open(dir);
    await store.create({ name: 'victim', size: SIZE, policy: validatePolicy({ segmentSize: '64KiB' }) });
    await store.create({ name: 'scratch', size: SIZE, policy: validatePolicy({ segmentSize: '64KiB' }) });
    original = prand(SIZE, 4242);
    await store.write('victim', 'content', 0, original);
    await store.flush('victim');
    originalHash = sha256(original);
    assert.equal(await contentHash(), originalHash);
    target = await NvmeTarget.listen({ store, port: 0 });
    port = target.address().port;
    rw = (await target.addSubsystem({ ref: 'victim' })).nqn;
    ro = (await target.addSubsystem({ ref: 'victim', readOnly: true })).nqn;
    scratch = (await target.addSubsystem({ ref: 'scratch' })).nqn;
  });

  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });

  after(async () => {
    await target?.close();
    await store?.close();
    rmrf(dir);
  });

  // ---------------------------------------------------------------- before and during ICReq

  describe('connection establishment', function () {
    hostile('terminates on garbage before ICReq', async () => {
      const r = await raw();
      const garbage = Buffer.from('GET / HTTP/1.1\r\nHost: nvme\r\n\r\n');
      r.send(garbage);
      await expectTermReq(r, Fes.InvalidHeaderField, 0, garbage);
      assert.ok(!r.pdus.some((p) => p.type === PduType.ICResp));
    });

    hostile('terminates on zeros before ICReq (an ICReq with HLEN 0)', async () => {
      const r = await raw();
      r.send(Buffer.alloc(256));
      await expectTermReq(r, Fes.InvalidHeaderField, 2, Buffer.alloc(8));
    });

    hostile('terminates on a command capsule before ICReq', async () => {
      const r = await raw();
      const capsule = Buffer.concat(encodeCapsuleCmd(connectSqe(0, 31, 0), connectData(rw, HOSTNQN, 0xffff, HOST_ID), { header: false, data: false }));
      r.send(capsule);
      await expectTermReq(r, Fes.PduSequenceError, 0, capsule);
    });

    hostile('terminates on H2CData before ICReq', async () => {
      const r = await raw();
      const h2c = Buffer.concat(encodeH2CData(1, 0, 0, prand(512, 1), true, { header: false, data: false }));
      r.send(h2c);
      await expectTermReq(r, Fes.PduSequenceError, 0, h2c);
    });

    hostile('terminates on a second ICReq', async () => {
      const r = await raw();
      await r.icreq();
      const again = encodeICReq({ headerDigest: false, dataDigest: false });
      r.send(again);
      await expectTermReq(r, Fes.PduSequenceError, 0, again);
      assert.equal(r.pdus.filter((p) => p.type === PduType.ICResp).length, 1);
    });

    hostile('terminates on a second ICReq after Connect', async () => {
      const r = await rawAdmin();
      r.send(encodeICReq({ headerDigest: true, dataDigest: true }));
      await expectTermReq(r, Fes.PduSequenceError, 0);
    });

    hostile('refuses an unsupported PDU format version and a bad HPDA', async () => {
      const a = await raw();
      const pfv = encodeICReq({ pfv: 1, headerDigest: false, dataDigest: false });
      a.send(pfv);
      await expectTermReq(a, Fes.UnsupportedParameter, 8, pfv);
      assert.ok(!a.pdus.some((p) => p.type === PduType.ICResp), 'no ICResp');
      const b = await raw();
      b.send(encodeICReq({ hpda: 32, headerDigest: false, dataDigest: false }));
      await expectTermReq(b, Fes.InvalidHeaderField, 10);
    });

    hostile('serves a host that trickles its PDUs one byte at a time', async () => {
      const r = await raw();
      const dg = { header: true, data: true };
      const bytes = encodeICReq({ headerDigest: true, dataDigest: true });
      // ICReq first, byte by byte; then Connect with in-capsule data, byte by byte.
      for (let i = 0; i < bytes.length; i++) {
        r.send(bytes.subarray(i, i + 1));
        if (i % 16 === 0) await new Promise((res) => setImmediate(res));
      }
      await r.take((p) => p.type === PduType.ICResp, 'ICResp');
      const sqe = connectSqe(0, 31, 0);
      sqe.writeUInt16LE(1, 2);
      sqe[39] = Sgl.InCapsule;
      sqe.writeUInt32LE(1024, 32);
      const connect = Buffer.concat(encodeCapsuleCmd(sqe, connectData(ro, HOSTNQN, 0xffff, HOST_ID), dg));
      for (let i = 0; i < connect.length; i++) {
        r.send(connect.subarray(i, i + 1));
        if (i % 16 === 0) await new Promise((res) => setImmediate(res));
      }
      const c = await r.completion(1);
      assert.deepEqual([c.sct, c.sc], [0, 0]);
      assert.ok(r.pdus.every((p) => (p.type === PduType.ICResp) || (p.flags & PduFlag.HDGSTF) !== 0), 'digests in use');
    });
  });

  // ---------------------------------------------------------------- header fields

  describe('bad headers', function () {
    for (const [name, type] of [['C2HData', PduType.C2HData], ['ICResp', PduType.ICResp], ['CapsuleResp', PduType.CapsuleResp], ['R2T', PduType.R2T], ['C2HTermReq', PduType.C2HTermReq], ['type 0x08', 0x08], ['type 0x0a', 0x0a], ['type 0xff', 0xff]] as const) {
      hostile(`terminates on a ${name} PDU from the host`, async () => {
        const r = await rawAdmin();
        let bytes: Buffer;
        if (type === PduType.C2HData) bytes = Buffer.concat(encodeC2HData(1, 0, prand(64, 1), true, true, r.dg));
        else if (type === PduType.ICResp) bytes = encodeICResp({ headerDigest: false, dataDigest: false, maxH2CData: 4096 });
        else if (type === PduType.CapsuleResp) bytes = Buffer.concat(encodeCapsuleResp(Buffer.alloc(16), r.dg));
        else if (type === PduType.R2T) bytes = Buffer.concat(encodeR2T(1, 0, 0, 512, r.dg));
        else if (type === PduType.C2HTermReq) bytes = encodeTermReq(PduType.C2HTermReq, Fes.InvalidHeaderField, 0);
        else bytes = pdu(type, 0, 24, 0, 24);
        r.send(bytes);
        await expectTermReq(r, Fes.InvalidHeaderField, 0, bytes);
      });
    }

    hostile('terminates on a command capsule with the wrong HLEN', async () => {
      const r = await rawAdmin();
      const bad = Buffer.concat(encodeCapsuleCmd(buildSqe({ opcode: AdminOpcode.KeepAlive, cid: 9 }), undefined, r.dg));
      bad[2] = 64;
      r.send(bad);
      await expectTermReq(r, Fes.InvalidHeaderField, 2, bad);
    });

    hostile('terminates at once on a huge PLEN, without waiting for the bytes', async () => {
      const r = await rawIo();
      const h = pdu(PduType.CapsuleCmd, 0, 72, 72, 0xfffffff0, 8);
      r.send(h);
      await expectTermReq(r, Fes.DataLimitExceeded, 4, h);
    });

    hostile('terminates on a PLEN shorter than the header', async () => {
      const r = await rawAdmin();
      const h = pdu(PduType.CapsuleCmd, 0, 72, 0, 40);
      r.send(h);
      await expectTermReq(r, Fes.InvalidHeaderField, 4, h);
    });

    hostile('terminates on a PDO inside the header', async () => {
      const r = await rawIo();
      const h = pdu(PduType.CapsuleCmd, 0, 72, 16, 72 + 512, 72 + 512);
      r.send(h);
      await expectTermReq(r, Fes.InvalidHeaderField, 3, h);
    });

    hostile('terminates on header digest flags that were not negotiated, or are missing', async () => {
      const a = await rawAdmin();
      const withDigest = Buffer.concat(encodeCapsuleCmd(buildSqe({ opcode: AdminOpcode.KeepAlive, cid: 3 }), undefined, { header: true, data: false }));
      a.send(withDigest);
      await expectTermReq(a, Fes.InvalidHeaderField, 1, withDigest);
      const b = await rawIo(rw, { headerDigest: true });
      const without = Buffer.concat(encodeCapsuleCmd(readSqe(0, 1, 512), undefined, { header: false, data: false }));
      b.send(without);
      await expectTermReq(b, Fes.InvalidHeaderField, 1, without);
      const c = await rawIo(rw);
      const dd = Buffer.concat(encodeCapsuleCmd(writeSqe(0, 1), prand(512, 1), { header: false, data: true }));
      c.send(dd);
      await expectTermReq(c, Fes.InvalidHeaderField, 1, dd);
    });

    hostile('terminates on a header digest mismatch without executing the command', async () => {
      const r = await rawIo(rw, { headerDigest: true, dataDigest: true });
      const sqe = writeSqe(0, 1);
      sqe.writeUInt16LE(7, 2);
      sqe[39] = Sgl.InCapsule;
      sqe.writeUInt32LE(512, 32);
      const bytes = Buffer.concat(encodeCapsuleCmd(sqe, prand(512, 99), r.dg));
      bytes[72] ^= 0xff; // the header digest
      r.send(bytes);
      await expectTermReq(r, Fes.HeaderDigestError, undefined, bytes);
      assert.ok(!r.pdus.some((p) => p.type === PduType.CapsuleResp && p.header.readUInt16LE(20) === 7), 'no completion');
    });
  });

  // ---------------------------------------------------------------- digests and capsules

  describe('data errors that fail a command, not the connection', function () {
    hostile('fails an in-capsule write whose data digest is wrong and writes nothing', async () => {
      const r = await rawIo(rw, { headerDigest: true, dataDigest: true });
      const sqe = writeSqe(8, 8);
      sqe.writeUInt16LE(5, 2);
      sqe[39] = Sgl.InCapsule;
      sqe.writeUInt32LE(4096, 32);
      const bytes = Buffer.concat(encodeCapsuleCmd(sqe, prand(4096, 5), r.dg));
      bytes[bytes.length - 1] ^= 0x01;
      r.send(bytes);
      const c = await r.completion(5);
      assert.deepEqual([c.sct, c.sc], [0, 0x22], 'Transient Transport Error');
      // The connection lives on.
      const rd = r.command(readSqe(8, 8, 512));
      const data = await r.take((p) => p.type === PduType.C2HData && p.header.readUInt16LE(8) === rd, 'read data');
      assert.ok(data.dataDigestOk);
      assert.deepEqual(data.data, original.subarray(4096, 8192));
      assert.deepEqual([(await r.completion(rd)).sc], [0]);
      assert.equal(r.isClosed, false);
    });

    hostile('fails a write whose H2CData digest is wrong and writes nothing', async () => {
      const r = await rawIo(rw, { headerDigest: false, dataDigest: true });
      const sqe = writeSqe(16, 16);
      sqe[39] = Sgl.Transport;
      sqe.writeUInt32LE(8192, 32);
      const cid = r.command(sqe);
      const t = await r.r2t(cid);
      assert.deepEqual([t.r2to, t.r2tl], [0, 8192]);
      const first = Buffer.concat(encodeH2CData(cid, t.ttag, 0, prand(4096, 1), false, r.dg));
      const second = Buffer.concat(encodeH2CData(cid, t.ttag, 4096, prand(4096, 2), true, r.dg));
      first[first.length - 2] ^= 0x10;
      r.send(first, second);
      const c = await r.completion(cid);
      assert.deepEqual([c.sct, c.sc], [0, 0x22]);
      assert.equal(r.isClosed, false);
    });

    hostile('rejects in-capsule data beyond the capsule size, on the wrong command, or at an offset', async () => {
      const io = await rawIo(rw);
      const big = writeSqe(0, 40);
      const c1 = await io.completion(io.command(big, prand(20 * KiB, 1)));
      assert.deepEqual([c1.sct, c1.sc], [0, 0x0d], 'more than IOCCSZ allows');
      const rd = readSqe(0, 1, 512);
      rd[39] = Sgl.InCapsule;
      rd.writeUInt32LE(512, 32);
      const c2 = await io.completion(io.command(rd, prand(512, 2)));
      assert.deepEqual([c2.sct, c2.sc], [0, 0x0d], 'data in a read capsule');
      const off = writeSqe(0, 1);
      off.writeBigUInt64LE(64n, 24);
      const c3 = await io.completion(io.command(off, prand(512, 3)));
      assert.deepEqual([c3.sct, c3.sc], [0, 0x0d], 'in-capsule data at an offset');
      const both = writeSqe(0, 1);
      both.writeUInt16LE(77, 2);
      both[39] = Sgl.Transport;
      both.writeUInt32LE(512, 32);
      io.send(encodeCapsuleCmd(both, prand(512, 4), io.dg));
      const c4 = await io.completion(77);
      assert.deepEqual([c4.sct, c4.sc], [0, 0x0d], 'transport SGL with data in the capsule');
      const short = writeSqe(0, 4);
      const c5 = await io.completion(io.command(short, prand(1024, 5)));
      assert.deepEqual([c5.sct, c5.sc], [0, 0x0f], 'less data than the write covers');
      const admin = await rawAdmin();
      const c6 = await admin.completion(admin.command(buildSqe({ opcode: AdminOpcode.SetFeatures, cid: 0, cdw: { 10: 0x0b } }), prand(8704, 6)));
      assert.deepEqual([c6.sct, c6.sc], [0, 0x0d], 'admin capsule over 8 KiB');
      assert.equal(io.isClosed || admin.isClosed, false);
    });

    hostile('answers Command ID Conflict to a cid that is still outstanding', async () => {
      const r = await rawAdmin();
      r.command(buildSqe({ opcode: AdminOpcode.AsyncEventRequest, cid: 0 }), undefined, 40);
      r.command(buildSqe({ opcode: AdminOpcode.Identify, cid: 0, sglId: Sgl.Transport, sglLength: 4096, cdw: { 10: 1 } }), undefined, 40);
      const c = await r.completion(40);
      assert.deepEqual([c.sct, c.sc], [0, 0x03]);
      const ok = await r.completion(r.command(buildSqe({ opcode: AdminOpcode.Identify, cid: 0, sglId: Sgl.Transport, sglLength: 4096, cdw: { 10: 1 } }), undefined, 41));
      assert.deepEqual([ok.sct, ok.sc], [0, 0]);
      assert.equal(r.pdus.filter((p) => p.type === PduType.CapsuleResp && p.header.readUInt16LE(20) === 40).length, 1, 'the AER is still outstanding');
    });
  });

  // ---------------------------------------------------------------- H2CData

  describe('bad H2CData', function () {
    /** I/O queue with a Write of `bytes` waiting for its data. */
    async function pendingWrite(bytes = 4096) {
      const r = await rawIo(rw);
      const sqe = writeSqe(64, bytes / 512);
      sqe[39] = Sgl.Transport;
      sqe.writeUInt32LE(bytes, 32);
      const cid = r.command(sqe);
      const t = await r.r2t(cid);
      assert.deepEqual([t.r2to, t.r2tl], [0, bytes]);
      return { r, cid, ttag: t.ttag };
    }
    const h2c = (r: Raw, cid: number, ttag: number, datao: number, data: Buffer, last: boolean) => Buffer.concat(encodeH2CData(cid, ttag, datao, data, last, r.dg));

    hostile('terminates on H2CData for an unknown transfer tag', async () => {
      const { r, cid, ttag } = await pendingWrite();
      const bad = h2c(r, cid, ttag + 1, 0, prand(4096, 1), true);
      r.send(bad);
      await expectTermReq(r, Fes.InvalidHeaderField, 10, bad);
    });

    hostile('terminates on H2CData with the wrong command id', async () => {
      const { r, cid, ttag } = await pendingWrite();
      const bad = h2c(r, cid + 1, ttag, 0, prand(4096, 1), true);
      r.send(bad);
      await expectTermReq(r, Fes.InvalidHeaderField, 8, bad);
    });

    hostile('terminates on unsolicited H2CData', async () => {
      const r = await rawIo(rw);
      const bad = h2c(r, 1, 0, 0, prand(512, 1), true);
      r.send(bad);
      await expectTermReq(r, Fes.InvalidHeaderField, 10, bad);
    });

    hostile('terminates on H2CData at the wrong offset', async () => {
      const { r, cid, ttag } = await pendingWrite();
      const bad = h2c(r, cid, ttag, 512, prand(1024, 1), false);
      r.send(bad);
      await expectTermReq(r, Fes.DataOutOfRange, 12, bad);
    });

    hostile('terminates on H2CData beyond what the R2T asked for', async () => {
      const { r, cid, ttag } = await pendingWrite();
      r.send(h2c(r, cid, ttag, 0, prand(2048, 1), false));
      const bad = h2c(r, cid, ttag, 2048, prand(4096, 2), true);
      r.send(bad);
      await expectTermReq(r, Fes.DataOutOfRange, 16, bad);
    });

    hostile('terminates on H2CData whose DATAL disagrees with its data', async () => {
      const { r, cid, ttag } = await pendingWrite();
      const bad = h2c(r, cid, ttag, 0, prand(4096, 1), true);
      bad.writeUInt32LE(2048, 16);
      r.send(bad);
      await expectTermReq(r, Fes.InvalidHeaderField, 16, bad);
    });

    hostile('terminates on H2CData larger than MAXH2CDATA', async () => {
      const { r, cid, ttag } = await pendingWrite(MAX_TRANSFER);
      const bad = h2c(r, cid, ttag, 0, prand(MAX_H2C_DATA + 4096, 1), false);
      r.send(bad);
      await expectTermReq(r, Fes.DataLimitExceeded, 16, bad);
    });

    hostile('terminates when the last H2CData lacks LAST_PDU', async () => {
      const { r, cid, ttag } = await pendingWrite();
      r.send(h2c(r, cid, ttag, 0, prand(2048, 1), false));
      const bad = h2c(r, cid, ttag, 2048, prand(2048, 2), false);
      r.send(bad);
      await expectTermReq(r, Fes.PduSequenceError, 1, bad);
    });

    hostile('terminates on LAST_PDU before all the data', async () => {
      const { r, cid, ttag } = await pendingWrite();
      const bad = h2c(r, cid, ttag, 0, prand(2048, 1), true);
      r.send(bad);
      await expectTermReq(r, Fes.PduSequenceError, 1, bad);
      assert.ok(!r.pdus.some((p) => p.type === PduType.CapsuleResp && p.header.readUInt16LE(20) === cid), 'the write never completed');
    });

    hostile('closes without a C2HTermReq on an H2CTermReq, dropping the pending write', async () => {
      const { r, cid, ttag } = await pendingWrite();
      r.send(h2c(r, cid, ttag, 0, prand(2048, 1), false));
      r.send(encodeTermReq(PduType.H2CTermReq, Fes.PduSequenceError, 0));
      const t = await r.terminated();
      assert.equal(t, undefined, 'no C2HTermReq in answer to an H2CTermReq');
      assert.ok(!r.pdus.some((p) => p.type === PduType.CapsuleResp && p.header.readUInt16LE(20) === cid), 'the write never completed');
    });

    hostile('survives a host that vanishes in the middle of a PDU', async () => {
      const { r, cid, ttag } = await pendingWrite(64 * KiB);
      const data = h2c(r, cid, ttag, 0, prand(64 * KiB, 1), true);
      r.send(data.subarray(0, 1000));
      await sleep(20);
      r.close();
      const a = await rawAdmin();
      const partial = Buffer.concat(encodeCapsuleCmd(connectSqe(0, 31, 0), connectData(rw, HOSTNQN, 0xffff, HOST_ID), a.dg));
      a.send(partial.subarray(0, 50));
      await sleep(20);
      a.close();
    });
  });

  // ---------------------------------------------------------------- fuzzing

  describe('fuzzing', function () {
    interface Stats { connections: number; pdusSent: number; termReqs: number; completions: number; r2ts: number; c2hData: number; verifiedBlocks: number }

    /** Valid PDUs of every kind a host sends, for a connection in role `role`. */
    /** Per-connection state the templates use to make commands that fit together. */
    interface Conn { nextCid: number; nextTtag: number }

    /** Valid PDUs of the kinds a host sends, for a connection in role `role`; rare ones end the connection. */
    function template(rng: Rng, dg: Digests, role: 'admin' | 'io', conn: Conn, cntlid: number, subnqn: string, blocks: number): Buffer[] {
      // Mostly fresh command ids (conflicts now and then), and the transfer tags the target hands out in order.
      const cid = rng.chance(0.95) ? conn.nextCid++ & 0xffff : rng.int(conn.nextCid + 1);
      const lba = () => (rng.chance(0.8) ? rng.int(blocks) : rng.pick([blocks - 1, blocks, 2 ** 32, 2 ** 40]));
      const nlb = () => 1 + rng.int(rng.chance(0.8) ? 16 : 4096);
      const sqe = (f: Omit<Parameters<typeof buildSqe>[0], 'cid'>) => buildSqe({ ...f, cid });
      const cap = (sq: Buffer, data?: Buffer) => {
        if (data) {
          sq[39] = Sgl.InCapsule;
          sq.writeUInt32LE(data.length, 32);
        }
        return [Buffer.concat(encodeCapsuleCmd(sq, data, dg))];
      };
      const k = rng.int(100);
      // Connection enders, rare: an H2CTermReq, a second ICReq, plain garbage, Disconnect.
      if (k < 2) return [encodeTermReq(PduType.H2CTermReq, 1 + rng.int(6), rng.u32())];
      if (k < 4) return [encodeICReq({ headerDigest: rng.chance(0.5), dataDigest: rng.chance(0.5), hpda: rng.int(40) })];
      if (k < 6) return [rng.bytes(1 + rng.int(200))];
      if (k < 7) return cap(sqe({ opcode: 0x7f, fctype: 0x08 }));
      if (k < 15) return cap(sqe({ opcode: rng.int(256), nsid: rng.int(3), sglId: rng.pick([0, Sgl.Transport, Sgl.InCapsule]), sglLength: rng.int(8192) }));
      if (role === 'io') {
        if (k < 45) {
          const n = nlb();
          return cap(sqe({ opcode: IoOpcode.Read, nsid: rng.chance(0.95) ? 1 : rng.int(4), sglId: Sgl.Transport, sglLength: n * 512, cdw: { 10: lba() >>> 0, 12: n - 1 } }));
        }
        if (k < 60) {
          const n = 1 + rng.int(8);
          return cap(sqe({ opcode: IoOpcode.Write, nsid: 1, cdw: { 10: lba() >>> 0, 12: n - 1, ...(rng.chance(0.2) ? { 13: 0 } : {}) } }), rng.bytes(n * 512));
        }
        if (k < 80) {
          // A write fetched with R2T, then its data (in one or two H2CData PDUs).
          const n = 1 + rng.int(64);
          const parts = cap(sqe({ opcode: IoOpcode.Write, nsid: 1, sglId: Sgl.Transport, sglLength: n * 512, cdw: { 10: lba() >>> 0, 12: n - 1 } }));
          const data = rng.bytes(n * 512);
          const ttag = conn.nextTtag++;
          const split = rng.chance(0.5) ? 512 * rng.int(n) : 0;
          if (split > 0) parts.push(Buffer.concat(encodeH2CData(cid, ttag, 0, data.subarray(0, split), false, dg)));
          parts.push(Buffer.concat(encodeH2CData(cid, ttag, split, data.subarray(split), true, dg)));
          return parts;
        }
        if (k < 85) return cap(sqe({ opcode: IoOpcode.Flush, nsid: rng.pick([1, 0xffffffff, 2]) }));
        if (k < 90) return cap(sqe({ opcode: IoOpcode.WriteZeroes, nsid: 1, cdw: { 10: lba() >>> 0, 12: nlb() - 1 } }));
        const ranges = 1 + rng.int(4);
        const d = Buffer.alloc(16 * ranges);
        for (let i = 0; i < ranges; i++) {
          d.writeUInt32LE(nlb(), i * 16 + 4);
          d.writeBigUInt64LE(BigInt(lba()), i * 16 + 8);
        }
        return cap(sqe({ opcode: IoOpcode.DatasetManagement, nsid: 1, cdw: { 10: ranges - 1, 11: rng.chance(0.8) ? 4 : 0 } }), d);
      }
      // Admin queue commands.
      if (k < 30) return cap(sqe({ opcode: AdminOpcode.Identify, nsid: rng.int(3), sglId: Sgl.Transport, sglLength: 4096, cdw: { 10: rng.int(5) } }));
      if (k < 42) {
        const lid = rng.pick([1, 2, 3, 4, 0x70, rng.int(256)]);
        const bytes = 4 * (1 + rng.int(2048));
        const numd = rng.chance(0.9) ? bytes / 4 - 1 : rng.u32();
        return cap(sqe({ opcode: AdminOpcode.GetLogPage, sglId: Sgl.Transport, sglLength: bytes, cdw: { 10: lid | ((numd & 0xffff) << 16), 11: numd >>> 16, 12: 4 * rng.int(300) } }));
      }
      if (k < 54) return cap(sqe({ opcode: AdminOpcode.SetFeatures, cdw: { 10: rng.pick([0x07, 0x0b, 0x0f, 0x06, 0x04, rng.int(256)]) | (rng.chance(0.1) ? 0x80000000 : 0), 11: rng.u32() } }));
      if (k < 64) return cap(sqe({ opcode: AdminOpcode.GetFeatures, cdw: { 10: rng.int(0x10) | (rng.int(8) << 8) } }));
      if (k < 68) return cap(sqe({ opcode: AdminOpcode.AsyncEventRequest }));
      if (k < 76) return cap(sqe({ opcode: AdminOpcode.KeepAlive }));
      if (k < 86) {
        const sq = propertySqe(rng.chance(0.5), rng.pick([0x00, 0x08, 0x14, 0x1c, 0x20, rng.int(64)]), rng.chance(0.3), BigInt(rng.u32()));
        sq.writeUInt16LE(cid, 2);
        return [Buffer.concat(encodeCapsuleCmd(sq, undefined, dg))];
      }
      if (k < 91) {
        const sq = connectSqe(rng.int(3), rng.int(40), rng.int(3) * 100);
        sq.writeUInt16LE(cid, 2);
        return cap(sq, connectData(rng.chance(0.8) ? subnqn : DISCOVERY_NQN, HOSTNQN, rng.chance(0.5) ? 0xffff : cntlid, HOST_ID));
      }
      if (k < 94) return cap(sqe({ opcode: AdminOpcode.Abort, cdw: { 10: rng.u32() } }));
      return cap(sqe({ opcode: 0x7f, fctype: rng.pick([0x00, 0x04, 0x05, 0x06, rng.int(256)]) }), rng.chance(0.3) ? rng.bytes(rng.int(2048) + 1) : undefined);
    }

    /** Damage one PDU. */
    function mutate(rng: Rng, bytes: Buffer): Buffer {
      let b = Buffer.from(bytes);
      const rounds = 1 + rng.int(3);
      for (let k = 0; k < rounds && b.length > 0; k++) {
        switch (rng.int(10)) {
          case 0: case 1: case 2: { // flip bits in the header
            const flips = 1 + rng.int(4);
            for (let i = 0; i < flips; i++) b[rng.int(Math.min(b.length, 80))]! ^= 1 << rng.int(8);
            break;
          }
          case 3: b[rng.int(b.length)]! ^= 1 << rng.int(8); break;
          case 4: if (b.length >= 8) b.writeUInt32LE(rng.pick([0, 7, 8, 23, 24, 71, 72, 76, 128, b.length - 1, b.length + 1, b.length + 4, 270_000, 0xffffffff, rng.u32()]) >>> 0, 4); break;
          case 5: if (b.length >= 4) b[rng.pick([2, 3])] = rng.pick([0, 8, 24, 28, 72, 76, 128, 255, rng.int(256)]); break;
          case 6: if (b.length >= 2) b[1] = rng.int(256); break;
          case 7: b = b.subarray(0, rng.int(b.length)); break;
          case 8: b = Buffer.concat([b, rng.bytes(1 + rng.int(64))]); break;
          case 9: // the SQE: opcode, nsid, SGL
            if (b.length >= 48 && b[0] === PduType.CapsuleCmd) {
              const at = rng.pick([8, 9, 12, 13, 32, 40, 44, 47, 48, 52, 56, 60]);
              b[at] = rng.int(256);
            }
            break;
        }
      }
      return b;
    }

    /** One fuzz connection: a handshake (usually valid), then valid and damaged PDUs, sent blind. */
    async function fuzzConnection(rng: Rng, stats: Stats, subnqn: string, cntlid: number, blocks: number, verifyRead?: (data: Buffer) => number): Promise<void> {
      const role = rng.pick(['admin', 'admin', 'io', 'io', 'io', 'discovery', 'none'] as const);
      const hd = rng.chance(0.4);
      const dd = rng.chance(0.4);
      const dg: Digests = { header: hd, data: dd };
      const stream: Buffer[] = [];
      const damage = rng.pick([0.02, 0.05, 0.1, 0.3, 0.8]);
      const icreq = encodeICReq({ headerDigest: hd, dataDigest: dd, hpda: rng.chance(0.2) ? rng.int(32) : 0 });
      const first = rng.chance(0.1) ? mutate(rng, icreq) : icreq;
      if (role !== 'none') {
        const qid = role === 'io' ? 1 + rng.int(64) : 0;
        const nqn = role === 'discovery' ? DISCOVERY_NQN : subnqn;
        const s = connectSqe(qid, 127, role === 'admin' ? rng.pick([0, 0, 150, 10_000]) : 0);
        s[39] = Sgl.InCapsule;
        s.writeUInt32LE(1024, 32);
        s.writeUInt16LE(0x100, 2);
        const connect = Buffer.concat(encodeCapsuleCmd(s, connectData(nqn, HOSTNQN, role === 'io' ? cntlid : 0xffff, HOST_ID), dg));
        stream.push(rng.chance(damage / 4) ? mutate(rng, connect) : connect);
        if (role !== 'io') {
          const en = propertySqe(false, 0x14, false, CC_ENABLE);
          en.writeUInt16LE(0x101, 2);
          stream.push(Buffer.concat(encodeCapsuleCmd(en, undefined, dg)));
        }
      }
      const n = 1 + rng.int(30);
      const conn: Conn = { nextCid: 1, nextTtag: 0 };
      for (let i = 0; i < n; i++) {
        const parts = template(rng, dg, role === 'io' ? 'io' : 'admin', conn, cntlid, subnqn, blocks);
        for (const p of parts) stream.push(rng.chance(damage) ? mutate(rng, p) : p);
      }
      stats.connections++;
      stats.pdusSent += 1 + stream.length;
      const bytes = Buffer.concat(stream);
      const r = await Raw.open(port);
      try {
        // Like a real host, wait for ICResp before going on (when the ICReq was a proper one).
        r.send(first);
        if (first === icreq) await Promise.race([r.take((p) => p.type === PduType.ICResp, 'ICResp').catch(() => {}), r.closed]);
        // Random chunking, so the target frames across arbitrary boundaries.
        for (let off = 0; off < bytes.length && !r.isClosed;) {
          const len = rng.chance(0.3) ? 1 + rng.int(16) : 1 + rng.int(4096);
          r.send(bytes.subarray(off, off + len));
          off += len;
          if (rng.chance(0.1)) await new Promise((res) => setImmediate(res));
        }
        // Wait for the target to close or to go quiet.
        let seen = -1;
        for (let i = 0; i < 20 && !r.isClosed && seen !== r.pdus.length; i++) {
          seen = r.pdus.length;
          await Promise.race([r.closed, sleep(15)]);
        }
      } finally {
        r.close();
      }
      assert.equal(r.parseError, undefined, 'everything the target sent is a well-formed PDU');
      for (const p of r.pdus) {
        if (p.type === PduType.C2HTermReq) stats.termReqs++;
        else if (p.type === PduType.CapsuleResp) stats.completions++;
        else if (p.type === PduType.R2T) stats.r2ts++;
        else if (p.type === PduType.C2HData) {
          stats.c2hData++;
          // On an I/O queue only Read returns data: it must be the namespace's bytes, block for block.
          if (role === 'io' && verifyRead && p.data) stats.verifiedBlocks += verifyRead(p.data);
        }
      }
      // Data the target sends always carries correct digests when they were negotiated.
      assert.ok(r.pdus.every((p) => p.dataDigestOk), 'data digests of C2HData are correct');
    }

    async function fuzz(seed: number, connections: number, subnqn: string, blocks: number, verifyRead?: (data: Buffer) => number): Promise<Stats> {
      const owner = await session(subnqn, { hostnqn: HOSTNQN, hostId: HOST_ID, ioQueues: 0, grantQueues: 64 });
      const stats: Stats = { connections: 0, pdusSent: 0, termReqs: 0, completions: 0, r2ts: 0, c2hData: 0, verifiedBlocks: 0 };
      const problems: unknown[] = [];
      const onProblem = (e: unknown) => problems.push(e);
      process.on('uncaughtException', onProblem);
      process.on('unhandledRejection', onProblem);
      try {
        // Each connection draws from its own seeded generator: the same bytes whatever the interleaving.
        let started = 0;
        const worker = async () => {
          while (started < connections) {
            const index = started++;
            await fuzzConnection(new Rng(seed * 100_000 + index), stats, subnqn, owner.cntlid, blocks, verifyRead);
          }
        };
        await Promise.all(Array.from({ length: 16 }, worker));
      } finally {
        process.off('uncaughtException', onProblem);
        process.off('unhandledRejection', onProblem);
      }
      assert.deepEqual(problems, [], 'no uncaught exceptions or unhandled rejections');
      // The controller the fuzz connections attached I/O queues to is still fine.
      check(await owner.admin.submit(buildSqe({ opcode: AdminOpcode.KeepAlive, cid: 0 })), 'keep alive');
      return stats;
    }

    it('survives thousands of random and mutated PDUs on a read-only subsystem, data untouched', async function () {
      // Every 512-byte block of the victim is random, so its hash names its LBA.
      const lbaOf = new Map<string, number>();
      for (let i = 0; i < SIZE / 512; i++) lbaOf.set(sha256(original.subarray(i * 512, (i + 1) * 512)), i);
      const verifyRead = (data: Buffer) => {
        assert.equal(data.length % 512, 0, 'whole blocks');
        const first = lbaOf.get(sha256(data.subarray(0, 512)));
        assert.notEqual(first, undefined, 'read data is a block of the namespace');
        for (let j = 1; j < data.length / 512; j++) assert.equal(lbaOf.get(sha256(data.subarray(j * 512, (j + 1) * 512))), first! + j, 'consecutive blocks');
        return data.length / 512;
      };
      const stats = await fuzz(7, 2000, ro, SIZE / 512, verifyRead);
      const summary = JSON.stringify(stats);
      assert.ok(stats.pdusSent >= 20_000, summary);
      // The fuzzer reached every layer: framing errors, commands executed, writes asked for data, reads returned it.
      assert.ok(stats.termReqs > 500, summary);
      assert.ok(stats.completions > 1000, summary);
      assert.ok(stats.r2ts > 100, summary);
      assert.ok(stats.c2hData > 100 && stats.verifiedBlocks > 1000, summary);
      assert.equal(await contentHash(), originalHash, 'not one byte of the read-only namespace changed');
      await stillServes();
      const s = await session(ro, { ioQueues: 1 });
      assert.deepEqual(check(await s.io[0]!.submit(readSqe(SIZE / 512 - 2048, 2048, 512)), 'read').data, original.subarray(SIZE - MiB));
      // Every fuzz connection is gone: only this test's controllers remain.
      await (async () => {
        for (let i = 0; i < 200; i++) {
          if (target.list().find((x) => x.nqn === ro)!.controllers <= 2) return;
          await sleep(25);
        }
        assert.fail(`controllers left behind: ${target.list().find((x) => x.nqn === ro)!.controllers}`);
      })();
    });

    it('survives fuzzing on a writable subsystem and keeps serving it', async function () {
      const stats = await fuzz(11, 1000, scratch, SIZE / 512);
      // The fuzz connections are closed, but commands they started may still be running (a
      // deallocate waiting for the file lock): like a host after a controller reset, wait for
      // them before writing what must not be overwritten.
      for (let i = 0; target.list().find((x) => x.nqn === scratch)!.changesInFlight > 0; i++) {
        assert.ok(i < 1200, 'commands of the fuzz connections finish');
        await sleep(25);
      }
      assert.ok(stats.pdusSent >= 10_000, JSON.stringify(stats));
      assert.ok(stats.termReqs > 200 && stats.completions > 500 && stats.r2ts > 50, JSON.stringify(stats));
      // A proper host still gets exactly what it writes.
      const s = await session(scratch, { ioQueues: 2, headerDigest: true, dataDigest: true, inCapsuleMax: 8192 });
      const data = prand(256 * KiB, 31337);
      check(await s.io[0]!.submit(writeSqe(2048, 512), data), 'write');
      check(await s.io[1]!.submit(buildSqe({ opcode: IoOpcode.Flush, cid: 0, nsid: 1 })), 'flush');
      assert.deepEqual(check(await s.io[1]!.submit(readSqe(2048, 512, 512)), 'read').data, data);
      assert.deepEqual(await store.read('scratch', 'content', 2048 * 512, data.length), data);
      // The other capsule was never exported writable to the fuzzer.
      await stillServes();
    });
  });
});
