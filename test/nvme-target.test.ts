/**
 * The NVMe/TCP target over real TCP, driven by the test initiator: Connect and the admin command
 * set, properties, features, log pages, discovery, asynchronous events, the NVM command set
 * (with and without digests, in-capsule and R2T), error statuses, keep-alive, many queues at
 * once, subsystem removal and Disconnect.
 */
import assert from 'node:assert/strict';
import { Store } from '../capsule/store.js';
import type { SegmentPool } from '../capsule/segment-pool.js';
import { assertSlotsGivenBack, openPooledStore } from './helpers/pool.js';
import { validatePolicy } from '../capsule/policy.js';
import { SpaceError } from '../capsule/errors.js';
import { NvmeTarget } from '../gateway/nvme/target.js';
import { AdminOpcode, DISCOVERY_NQN, Feature, IoOpcode, LogPage, PduFlag, PduType, Sgl } from '../gateway/nvme/constants.js';
import { buildSqe } from '../gateway/nvme/command.js';
import { HOST_ACCEPTS, PduReader } from '../gateway/nvme/pdu.js';
import {
  HostQueue, check, connectController, connectData, connectSqe, propertySqe, readSqe, writeSqe, type ControllerSession, type QueueOptions, type Response,
} from '../bench/nvme/initiator.js';
import { prand, rmrf, sha256, tmpDir } from './helpers/tmp.js';
import { storeDb } from './helpers/store-db.js';

const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555';
const HOST_ID = Buffer.alloc(16, 0x42);
const CC_ENABLE = BigInt(1 | (6 << 16) | (4 << 20));
const KiB = 1024;
const MiB = 1024 * 1024;

// ---------------------------------------------------------------- command builders

const identifySqe = (cns: number, nsid = 0, length = 4096) =>
  buildSqe({ opcode: AdminOpcode.Identify, cid: 0, nsid, sglId: Sgl.Transport, sglLength: length, cdw: { 10: cns } });

function getLogSqe(lid: number, bytes: number, opts: { offset?: number; rae?: boolean; numd?: number } = {}): Buffer {
  const numd = opts.numd ?? bytes / 4 - 1;
  const offset = opts.offset ?? 0;
  return buildSqe({
    opcode: AdminOpcode.GetLogPage, cid: 0, nsid: 0xffffffff, sglId: Sgl.Transport, sglLength: bytes,
    cdw: { 10: lid | (opts.rae ? 1 << 15 : 0) | ((numd & 0xffff) << 16), 11: numd >>> 16, 12: offset >>> 0, 13: Math.floor(offset / 2 ** 32) },
  });
}

const setFeatureSqe = (fid: number, value: number, save = false) =>
  buildSqe({ opcode: AdminOpcode.SetFeatures, cid: 0, cdw: { 10: fid | (save ? 0x80000000 : 0), 11: value } });
const getFeatureSqe = (fid: number, sel = 0) => buildSqe({ opcode: AdminOpcode.GetFeatures, cid: 0, cdw: { 10: fid | (sel << 8) } });
const aerSqe = () => buildSqe({ opcode: AdminOpcode.AsyncEventRequest, cid: 0 });
const keepAliveSqe = () => buildSqe({ opcode: AdminOpcode.KeepAlive, cid: 0 });
const flushSqe = (nsid = 1) => buildSqe({ opcode: IoOpcode.Flush, cid: 0, nsid });
const disconnectSqe = () => buildSqe({ opcode: 0x7f, cid: 0, fctype: 0x08 });
const writeZeroesSqe = (slba: number, blocks: number, nsid = 1) =>
  buildSqe({ opcode: IoOpcode.WriteZeroes, cid: 0, nsid, cdw: { 10: slba >>> 0, 11: Math.floor(slba / 2 ** 32), 12: blocks - 1 } });
const dsmSqe = (ranges: number, deallocate = true) =>
  buildSqe({ opcode: IoOpcode.DatasetManagement, cid: 0, nsid: 1, cdw: { 10: ranges - 1, 11: deallocate ? 1 << 2 : 0 } });

function dsmRanges(ranges: { slba: number; blocks: number }[]): Buffer {
  const b = Buffer.alloc(16 * ranges.length);
  ranges.forEach((r, i) => {
    b.writeUInt32LE(r.blocks, i * 16 + 4);
    b.writeBigUInt64LE(BigInt(r.slba), i * 16 + 8);
  });
  return b;
}

function expectStatus(r: Response, sct: number, sc: number, what: string): void {
  assert.deepEqual({ sct: r.cqe.sct, sc: r.cqe.sc }, { sct, sc }, `${what}: got sct ${r.cqe.sct} sc 0x${r.cqe.sc.toString(16)}`);
}

const cstr = (b: Buffer) => {
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? b.length : z).toString('utf8');
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll until `fn` is true (a bounded wait for something asynchronous, not a timing check). */
async function until(fn: () => boolean | Promise<boolean>, what: string, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await fn()) return;
    await sleep(25);
  }
  assert.fail(`gave up waiting for ${what}`);
}

/** Resolve with "closed" when the queue's connection closes, or "open" after `ms`. */
function closedWithin(q: HostQueue, ms: number): Promise<'closed' | 'open'> {
  return Promise.race([q.whenClosed.then(() => 'closed' as const), sleep(ms).then(() => 'open' as const)]);
}

// ---------------------------------------------------------------- the test bed

describe('nvme target over TCP', function () {
  let dir: string;
  let store: Store;
  let target: NvmeTarget;
  let port: number;
  let rw: string;
  let ro: string;
  let volId: string;
  const VOL_SIZE = 64 * MiB;
  const cleanups: (() => void)[] = [];
  const seg64k = () => validatePolicy({ segmentSize: '64KiB' });

  const q = (o: Partial<QueueOptions> = {}): QueueOptions => ({ host: '127.0.0.1', port, ...o });

  /** A connected controller session, closed after the test. */
  async function session(subnqn: string, opts: Partial<Parameters<typeof connectController>[0]> = {}): Promise<ControllerSession> {
    const s = await connectController({ ...q(), subnqn, ...opts });
    cleanups.push(() => s.close());
    return s;
  }

  async function openQueue(o: Partial<QueueOptions> = {}): Promise<HostQueue> {
    const hq = await HostQueue.open(q(o));
    cleanups.push(() => hq.close());
    return hq;
  }

  /** Admin queue: Connect (dynamic controller), then enable unless told not to. */
  async function admin(subnqn: string, o: { hostnqn?: string; hostId?: Buffer; kato?: number; enable?: boolean; queue?: Partial<QueueOptions> } = {}) {
    const hq = await openQueue(o.queue);
    const r = check(await hq.submit(connectSqe(0, 31, o.kato ?? 0), connectData(subnqn, o.hostnqn ?? HOSTNQN, 0xffff, o.hostId ?? HOST_ID)), 'connect');
    assert.equal(r.cqe.sqid, 0);
    if (o.enable !== false) check(await hq.submit(propertySqe(false, 0x14, false, CC_ENABLE)), 'enable');
    return { q: hq, cntlid: r.cqe.dw0 & 0xffff };
  }

  async function identify(hq: HostQueue, cns: number, nsid = 0): Promise<Buffer> {
    return check(await hq.submit(identifySqe(cns, nsid)), `identify cns ${cns}`).data!;
  }

  async function getLog(hq: HostQueue, lid: number, bytes: number, opts: { offset?: number; rae?: boolean } = {}): Promise<Buffer> {
    const r = check(await hq.submit(getLogSqe(lid, bytes, opts)), `get log page 0x${lid.toString(16)}`);
    assert.equal(r.data!.length, bytes);
    return r.data!;
  }

  async function write(hq: HostQueue, slba: number, data: Buffer, blockSize = 512, fua = false): Promise<void> {
    check(await hq.submit(writeSqe(slba, data.length / blockSize, { fua }), data), `write ${data.length} bytes at LBA ${slba}`);
  }

  async function read(hq: HostQueue, slba: number, bytes: number, blockSize = 512): Promise<Buffer> {
    const r = check(await hq.submit(readSqe(slba, bytes / blockSize, blockSize)), `read ${bytes} bytes at LBA ${slba}`);
    assert.equal(r.data!.length, bytes);
    return r.data!;
  }

  /** Capsule with a sparse `content` of `size` bytes, exported; returns the subsystem NQN. */
  async function exportNew(name: string, size: number, spec: { readOnly?: boolean; blockSize?: number; allowedHosts?: string[]; nqn?: string; policy?: boolean } = {}) {
    const info = await store.create({ name, size, ...(spec.policy === false ? {} : { policy: seg64k() }) });
    const sub = await target.addSubsystem({ ref: name, readOnly: spec.readOnly, blockSize: spec.blockSize, allowedHosts: spec.allowedHosts, nqn: spec.nqn });
    return { nqn: sub.nqn, id: info.id };
  }

  before(async () => {
    dir = tmpDir('space-nvme-');
    store = Store.open(dir);
    volId = (await store.create({ name: 'vol', size: VOL_SIZE, policy: seg64k() })).id;
    target = await NvmeTarget.listen({ store, port: 0 });
    port = target.address().port;
    rw = (await target.addSubsystem({ ref: 'vol' })).nqn;
    ro = (await target.addSubsystem({ ref: 'vol', readOnly: true })).nqn;
  });

  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });

  after(async () => {
    await target?.close();
    await store?.close();
    rmrf(dir);
  });

  // ---------------------------------------------------------------- subsystems

  describe('subsystems', function () {
    it('exports capsules under their default NQNs and validates specs', async () => {
      assert.equal(rw, `nqn.2024-11.io.space:capsule:${volId}`);
      assert.equal(ro, `nqn.2024-11.io.space:capsule:${volId}:ro`);
      const list = target.list();
      const a = list.find((s) => s.nqn === rw)!;
      assert.deepEqual({ ...a, controllers: 0 }, { nqn: rw, capsuleId: volId, file: 'content', readOnly: false, blockSize: 512, blocks: VOL_SIZE / 512, allowedHosts: [], controllers: 0, changesInFlight: 0 });
      assert.equal(list.find((s) => s.nqn === ro)!.readOnly, true);
      const codeOf = async (p: Promise<unknown>) => {
        try {
          await p;
        } catch (e) {
          assert.ok(e instanceof SpaceError);
          return e.code;
        }
        return 'ok';
      };
      assert.equal(await codeOf(target.addSubsystem({ ref: 'vol' })), 'ALREADY_EXISTS');
      assert.equal(await codeOf(target.addSubsystem({ ref: 'vol', nqn: 'not-an-nqn' })), 'INVALID_ARGUMENT');
      assert.equal(await codeOf(target.addSubsystem({ ref: 'vol', nqn: DISCOVERY_NQN })), 'INVALID_ARGUMENT');
      assert.equal(await codeOf(target.addSubsystem({ ref: 'vol', nqn: 'nqn.2024-01.io.example:x', blockSize: 1024 })), 'INVALID_ARGUMENT');
      assert.equal(await codeOf(target.removeSubsystem('nqn.2024-01.io.example:missing')), 'NOT_FOUND');
      assert.equal(target.list().length, list.length);
    });

    it('counts the controllers of a subsystem', async () => {
      const before = target.list().find((s) => s.nqn === rw)!.controllers;
      const a = await admin(rw);
      assert.equal(target.list().find((s) => s.nqn === rw)!.controllers, before + 1);
      a.q.close();
      await until(() => target.list().find((s) => s.nqn === rw)!.controllers === before, 'controller release');
    });
  });

  // ---------------------------------------------------------------- identify

  describe('identify', function () {
    it('connects, enables and identifies the controller', async () => {
      const a = await admin(rw, { queue: { inCapsuleMax: 8192 } });
      const b = await admin(rw);
      assert.notEqual(a.cntlid, b.cntlid, 'each Connect creates its own controller');
      assert.ok(a.cntlid >= 1 && a.cntlid <= 0xffef);
      const csts = check(await a.q.submit(propertySqe(true, 0x1c, false)), 'csts');
      assert.equal(csts.cqe.dw0 & 1, 1, 'CSTS.RDY');
      const id = await identify(a.q, 1);
      assert.equal(id.length, 4096);
      assert.equal(id.readUInt16LE(78), a.cntlid, 'CNTLID');
      assert.equal(cstr(id.subarray(768, 1024)), rw, 'SUBNQN');
      assert.equal(id[77], 8, 'MDTS: 2^8 pages of 4 KiB');
      assert.equal(id.readUInt32LE(536), 0x100001, 'SGLS: SGLs without alignment, offsets in capsule');
      assert.equal(id.readUInt32LE(1792), (64 + 16384) / 16, 'IOCCSZ');
      assert.equal(id.readUInt32LE(1796), 1, 'IORCSZ');
      assert.equal(id.readUInt16LE(1800), 0, 'ICDOFF');
      assert.equal(id[1803], 1, 'MSDBD');
      assert.equal(id.readUInt16LE(1804) & 1, 1, 'OFCS: Disconnect');
      assert.equal(id[525] & 1, 1, 'VWC present');
      assert.equal(id.readUInt16LE(520), (1 << 2) | (1 << 3), 'ONCS: DSM and Write Zeroes');
      assert.equal(id[111], 1, 'CNTRLTYPE: I/O controller');
      assert.equal(id.readUInt32LE(516), 1, 'NN');
      assert.equal(id[512], 0x66, 'SQES');
      assert.equal(id[513], 0x44, 'CQES');
      assert.equal(id.readUInt32LE(80), 0x00010400, 'VER');
      assert.equal(id.readUInt32LE(92) & (1 << 8), 1 << 8, 'OAES: namespace attribute notices');
      assert.equal(id[259], 3, 'AERL');
      assert.equal(id.readUInt16LE(320), 1, 'KAS');
      assert.equal(id.readUInt16LE(514), 1024, 'MAXCMD');
      assert.match(id.subarray(4, 24).toString('ascii'), /^[0-9a-f]{20}$/, 'serial');
      assert.equal(id.subarray(24, 64).toString('ascii').trim(), 'Space capsule');
      // Serial numbers are per subsystem: the same for both controllers.
      assert.deepEqual((await identify(b.q, 1)).subarray(4, 24), id.subarray(4, 24));
      assert.equal((await identify(b.q, 1)).readUInt16LE(78), b.cntlid);
    });

    it('identifies the namespace: size, block size, write protection', async () => {
      const a = await admin(rw);
      const ns = await identify(a.q, 0, 1);
      assert.equal(ns.readBigUInt64LE(0), BigInt(VOL_SIZE / 512), 'NSZE');
      assert.equal(ns.readBigUInt64LE(8), BigInt(VOL_SIZE / 512), 'NCAP');
      assert.equal(ns[25], 0, 'NLBAF');
      assert.equal(ns[26], 0, 'FLBAS');
      assert.equal(ns[130], 9, 'LBADS');
      assert.equal(ns[99], 0, 'NSATTR');
      assert.equal(ns[33] & 7, 1, 'DLFEAT: deallocated blocks read as zeros');
      const r = await admin(ro);
      const rns = await identify(r.q, 0, 1);
      assert.equal(rns[99], 1, 'NSATTR: write protected');
      assert.equal(rns.readBigUInt64LE(0), BigInt(VOL_SIZE / 512));
      const big = await exportNew('vol4k', 16 * MiB, { blockSize: 4096, nqn: 'nqn.2024-01.io.example:vol4k' });
      const k = await admin(big.nqn);
      const kns = await identify(k.q, 0, 1);
      assert.equal(kns[130], 12, 'LBADS 4 KiB');
      assert.equal(kns.readBigUInt64LE(0), BigInt((16 * MiB) / 4096));
      expectStatus(await a.q.submit(identifySqe(0, 2)), 0, 0x0b, 'identify namespace 2');
      expectStatus(await a.q.submit(identifySqe(0, 0)), 0, 0x0b, 'identify namespace 0');
      expectStatus(await a.q.submit(identifySqe(0x10)), 0, 0x02, 'unsupported CNS');
    });

    it('lists active namespaces', async () => {
      const a = await admin(rw);
      const all = await identify(a.q, 2, 0);
      assert.equal(all.readUInt32LE(0), 1);
      assert.equal(all.readUInt32LE(4), 0);
      const after1 = await identify(a.q, 2, 1);
      assert.ok(after1.every((b) => b === 0));
      expectStatus(await a.q.submit(identifySqe(2, 0xfffffffe)), 0, 0x0b, 'active list after 0xfffffffe');
    });

    it('gives namespace descriptors that survive a target and store restart', async () => {
      const dir2 = tmpDir('space-nvme-restart-');
      const parse = (b: Buffer) => {
        const out: { type: number; id: string }[] = [];
        for (let off = 0; off < b.length && b[off] !== 0;) {
          const len = b[off + 1]!;
          assert.equal(b.readUInt16LE(off + 2), 0, 'reserved bytes');
          out.push({ type: b[off]!, id: b.subarray(off + 4, off + 4 + len).toString('hex') });
          off += 4 + len;
        }
        return out;
      };
      const snapshot = async (s: Store) => {
        const t = await NvmeTarget.listen({ store: s, port: 0 });
        try {
          const sub = await t.addSubsystem({ ref: 'stable' });
          const hq = await HostQueue.open({ host: '127.0.0.1', port: t.address().port });
          try {
            check(await hq.submit(connectSqe(0, 31, 0), connectData(sub.nqn, HOSTNQN, 0xffff, HOST_ID)), 'connect');
            check(await hq.submit(propertySqe(false, 0x14, false, CC_ENABLE)), 'enable');
            const desc = check(await hq.submit(identifySqe(3, 1)), 'descriptors').data!;
            const ns = check(await hq.submit(identifySqe(0, 1)), 'identify ns').data!;
            const ctrl = check(await hq.submit(identifySqe(1)), 'identify ctrl').data!;
            return { desc: parse(desc), nguid: ns.subarray(104, 120).toString('hex'), eui64: ns.subarray(120, 128).toString('hex'), serial: ctrl.subarray(4, 24).toString('ascii') };
          } finally {
            hq.close();
          }
        } finally {
          await t.close();
        }
      };
      let s2 = Store.open(dir2);
      try {
        const id = (await s2.create({ name: 'stable', size: MiB })).id;
        const first = await snapshot(s2);
        assert.deepEqual(first.desc.map((d) => [d.type, d.id.length / 2]), [[1, 8], [2, 16], [3, 16]]);
        assert.equal(first.desc[0]!.id, first.eui64, 'EUI-64 as in Identify Namespace');
        assert.equal(first.desc[1]!.id, first.nguid, 'NGUID as in Identify Namespace');
        assert.equal(first.desc[2]!.id, id.replace(/-/g, ''), 'UUID is the capsule id');
        assert.equal(new Set(first.desc.map((d) => d.id)).size, 3);
        await s2.close();
        s2 = Store.open(dir2);
        const second = await snapshot(s2);
        assert.deepEqual(second, first);
      } finally {
        await s2.close();
        rmrf(dir2);
      }
    });
  });

  // ---------------------------------------------------------------- properties

  describe('properties', function () {
    it('reports CAP, VS, CC and CSTS', async () => {
      const a = await admin(rw, { enable: false });
      const cap = check(await a.q.submit(propertySqe(true, 0x00, true)), 'CAP');
      const capv = (BigInt(cap.cqe.dw1) << 32n) | BigInt(cap.cqe.dw0);
      assert.equal(capv & 0xffffn, 1023n, 'MQES');
      assert.equal((capv >> 16n) & 1n, 1n, 'CQR');
      assert.equal((capv >> 24n) & 0xffn, 20n, 'TO');
      assert.equal((capv >> 37n) & 1n, 1n, 'CSS: NVM command set');
      assert.equal((capv >> 48n) & 0xfn, 0n, 'MPSMIN: 4 KiB');
      expectStatus(await a.q.submit(propertySqe(true, 0x00, false)), 0, 2, 'CAP read as 4 bytes');
      assert.equal(check(await a.q.submit(propertySqe(true, 0x08, false)), 'VS').cqe.dw0, 0x00010400);
      expectStatus(await a.q.submit(propertySqe(true, 0x08, true)), 0, 2, 'VS read as 8 bytes');
      assert.equal(check(await a.q.submit(propertySqe(true, 0x1c, false)), 'CSTS').cqe.dw0 & 1, 0, 'not ready before CC.EN');
      // Admin commands wait for CC.EN.
      expectStatus(await a.q.submit(identifySqe(1)), 0, 0x0c, 'identify before enable');
      check(await a.q.submit(propertySqe(false, 0x14, false, CC_ENABLE)), 'enable');
      assert.equal(check(await a.q.submit(propertySqe(true, 0x14, false)), 'CC').cqe.dw0, Number(CC_ENABLE));
      assert.equal(check(await a.q.submit(propertySqe(true, 0x1c, false)), 'CSTS').cqe.dw0 & 1, 1);
      check(await a.q.submit(identifySqe(1)), 'identify after enable');
      expectStatus(await a.q.submit(propertySqe(true, 0x30, false)), 0, 2, 'unknown property');
      expectStatus(await a.q.submit(propertySqe(false, 0x1c, false, 0n)), 0, 2, 'CSTS is read-only');
      expectStatus(await a.q.submit(propertySqe(false, 0x14, true, CC_ENABLE)), 0, 2, 'CC written as 8 bytes');
      // Disable: not ready, admin commands refused again; enable again.
      check(await a.q.submit(propertySqe(false, 0x14, false, 0n)), 'disable');
      assert.equal(check(await a.q.submit(propertySqe(true, 0x1c, false)), 'CSTS').cqe.dw0 & 1, 0);
      expectStatus(await a.q.submit(identifySqe(1)), 0, 0x0c, 'identify while disabled');
      check(await a.q.submit(propertySqe(false, 0x14, false, CC_ENABLE)), 're-enable');
      assert.equal(check(await a.q.submit(propertySqe(true, 0x1c, false)), 'CSTS').cqe.dw0 & 1, 1);
    });

    it('flags a fatal status when enabled with wrong queue entry sizes', async () => {
      const a = await admin(rw, { enable: false });
      check(await a.q.submit(propertySqe(false, 0x14, false, 1n)), 'enable with IOSQES 0');
      const csts = check(await a.q.submit(propertySqe(true, 0x1c, false)), 'CSTS').cqe.dw0;
      assert.equal(csts & 3, 2, 'CFS set, RDY clear');
      expectStatus(await a.q.submit(identifySqe(1)), 0, 0x0c, 'identify on a failed controller');
    });

    it('completes a shutdown notification with SHST after making writes durable', async () => {
      const vol = await exportNew('shutdown', 4 * MiB);
      const s = await session(vol.nqn);
      const data = prand(64 * KiB, 41);
      await write(s.io[0]!, 128, data); // segment 1 (64 KiB segments)
      check(await s.admin.submit(propertySqe(false, 0x14, false, CC_ENABLE | (1n << 14n))), 'shutdown notification');
      await until(async () => ((check(await s.admin.submit(propertySqe(true, 0x1c, false)), 'CSTS').cqe.dw0 >> 2) & 3) === 2, 'SHST = shutdown complete');
      assert.equal(committedSegments(vol.id, 1), 1, 'the buffered write was committed');
      assert.deepEqual(await store.read('shutdown', 'content', 64 * KiB, 64 * KiB), data);
    });
  });

  /** Committed extents of segment `idx` of a capsule's content (the store's own connection: helpers/store-db.ts). */
  function committedSegments(capsuleId: string, idx: number): number {
    return storeDb(store).prepare('SELECT COUNT(*) FROM extents WHERE capsule = ? AND version = 0 AND idx = ?').pluck().get(capsuleId, idx) as number;
  }

  // ---------------------------------------------------------------- features

  describe('features', function () {
    it('grants a number of queues once and reports it', async () => {
      const a = await admin(rw);
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.NumberOfQueues)), 'get').cqe.dw0, 0);
      assert.equal(check(await a.q.submit(setFeatureSqe(Feature.NumberOfQueues, (7 << 16) | 7)), 'set 8').cqe.dw0, (7 << 16) | 7);
      assert.equal(check(await a.q.submit(setFeatureSqe(Feature.NumberOfQueues, (1 << 16) | 1)), 'set 2').cqe.dw0, (7 << 16) | 7, 'the first grant stands');
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.NumberOfQueues)), 'get').cqe.dw0, (7 << 16) | 7);
      const b = await admin(rw);
      assert.equal(check(await b.q.submit(setFeatureSqe(Feature.NumberOfQueues, (3 << 16) | 199)), 'set').cqe.dw0, (3 << 16) | 3, 'min of submission and completion queues');
      const c = await admin(rw);
      assert.equal(check(await c.q.submit(setFeatureSqe(Feature.NumberOfQueues, (1000 << 16) | 1000)), 'set').cqe.dw0, (63 << 16) | 63, 'capped at 64');
      expectStatus(await c.q.submit(setFeatureSqe(Feature.NumberOfQueues, 0xffffffff)), 0, 2, '65536 queues');
    });

    it('sets and gets the keep-alive timer and other features; nothing is saveable', async () => {
      const a = await admin(rw, { kato: 120_000 });
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.KeepAliveTimer)), 'get KATO').cqe.dw0, 120_000);
      check(await a.q.submit(setFeatureSqe(Feature.KeepAliveTimer, 60_000)), 'set KATO');
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.KeepAliveTimer)), 'get KATO').cqe.dw0, 60_000);
      check(await a.q.submit(setFeatureSqe(Feature.AsyncEventConfig, 1 << 8)), 'set AEC');
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.AsyncEventConfig)), 'get AEC').cqe.dw0, 1 << 8);
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.TemperatureThreshold)), 'get temp').cqe.dw0, 0x157);
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.VolatileWriteCache, 3)), 'capabilities').cqe.dw0, 1 << 2, 'changeable, not saveable');
      assert.equal(check(await a.q.submit(getFeatureSqe(Feature.VolatileWriteCache, 1)), 'default').cqe.dw0, 1);
      expectStatus(await a.q.submit(setFeatureSqe(Feature.VolatileWriteCache, 1, true)), 1, 0x0d, 'save VWC');
      expectStatus(await a.q.submit(setFeatureSqe(Feature.KeepAliveTimer, 1000, true)), 1, 0x0d, 'save KATO');
      expectStatus(await a.q.submit(setFeatureSqe(0x7e, 1)), 0, 2, 'unknown feature set');
      expectStatus(await a.q.submit(getFeatureSqe(0x7e)), 0, 2, 'unknown feature get');
      expectStatus(await a.q.submit(getFeatureSqe(0x7e, 3)), 0, 2, 'unknown feature capabilities');
      expectStatus(await a.q.submit(getFeatureSqe(Feature.Arbitration, 4)), 0, 2, 'reserved SEL');
      const d = await admin(DISCOVERY_NQN);
      expectStatus(await d.q.submit(setFeatureSqe(Feature.VolatileWriteCache, 0)), 0, 2, 'VWC on a discovery controller');
    });

    it('accepts the largest keep-alive timeouts without expiring at once', async () => {
      // KATO is 32 bits of milliseconds: more than a timer can hold.
      const a = await admin(rw, { kato: 0xffffffff });
      const b = await admin(rw);
      check(await b.q.submit(setFeatureSqe(Feature.KeepAliveTimer, 0xfffffff0)), 'set KATO');
      assert.equal(check(await b.q.submit(getFeatureSqe(Feature.KeepAliveTimer)), 'get KATO').cqe.dw0, 0xfffffff0);
      await sleep(300);
      assert.equal(a.q.closed || b.q.closed, false, 'both controllers still connected');
      check(await a.q.submit(keepAliveSqe()), 'keep alive');
      check(await b.q.submit(keepAliveSqe()), 'keep alive');
    });

    it('makes writes durable before completion once the volatile write cache is off', async () => {
      const vol = await exportNew('wcache', 4 * MiB);
      const s = await session(vol.nqn);
      assert.equal(check(await s.admin.submit(getFeatureSqe(Feature.VolatileWriteCache)), 'get VWC').cqe.dw0, 1);
      // Cache on: a write is buffered until Flush.
      const a = prand(64 * KiB, 1);
      await write(s.io[0]!, 2 * 128, a);
      assert.equal(committedSegments(vol.id, 2), 0, 'buffered');
      check(await s.io[0]!.submit(flushSqe()), 'flush');
      assert.equal(committedSegments(vol.id, 2), 1, 'committed by Flush');
      // FUA: durable even with the cache on.
      await write(s.io[0]!, 3 * 128, prand(64 * KiB, 2), 512, true);
      assert.equal(committedSegments(vol.id, 3), 1, 'FUA write committed');
      // Cache off: every write is durable when it completes.
      await write(s.io[0]!, 4 * 128, prand(64 * KiB, 3));
      assert.equal(committedSegments(vol.id, 4), 0, 'buffered');
      check(await s.admin.submit(setFeatureSqe(Feature.VolatileWriteCache, 0)), 'VWC off');
      assert.equal(committedSegments(vol.id, 4), 1, 'turning the cache off commits what it held');
      assert.equal(check(await s.admin.submit(getFeatureSqe(Feature.VolatileWriteCache)), 'get VWC').cqe.dw0, 0);
      const b = prand(64 * KiB, 4);
      await write(s.io[0]!, 5 * 128, b);
      assert.equal(committedSegments(vol.id, 5), 1, 'write-through');
      assert.deepEqual(await store.read('wcache', 'content', 5 * 64 * KiB, 64 * KiB), b);
      assert.deepEqual(await read(s.io[0]!, 2 * 128, 64 * KiB), a);
    });
  });

  // ---------------------------------------------------------------- log pages

  describe('log pages', function () {
    it('returns the error, SMART and firmware logs; SMART counts I/O', async () => {
      const vol = await exportNew('smart', 8 * MiB);
      const s = await session(vol.nqn, { inCapsuleMax: 4096 });
      const err = await getLog(s.admin, LogPage.Error, 64);
      assert.ok(err.every((b) => b === 0), 'no errors recorded');
      const fw = await getLog(s.admin, LogPage.FirmwareSlot, 512);
      assert.equal(fw[0], 1, 'AFI: slot 1');
      assert.equal(fw.subarray(8, 16).toString('ascii').trim(), '0.1.0');
      const counters = (b: Buffer) => ({
        unitsRead: b.readBigUInt64LE(32), unitsWritten: b.readBigUInt64LE(48), reads: b.readBigUInt64LE(64), writes: b.readBigUInt64LE(80),
      });
      const before = await getLog(s.admin, LogPage.Smart, 512);
      assert.equal(before.readUInt16LE(1), 293, 'composite temperature');
      assert.equal(before[3], 100, 'available spare');
      const c0 = counters(before);
      await write(s.io[0]!, 0, prand(MiB, 5));
      for (let i = 0; i < 3; i++) await write(s.io[0]!, 4096 + i * 8, prand(4096, 6 + i));
      await read(s.io[0]!, 0, 64 * KiB);
      await read(s.io[0]!, 0, MiB);
      const c1 = counters(await getLog(s.admin, LogPage.Smart, 512));
      assert.equal(c1.writes - c0.writes, 4n, 'host write commands');
      assert.equal(c1.reads - c0.reads, 2n, 'host read commands');
      // Data units are thousands of 512-byte units, rounded up: 1 MiB + 12 KiB written.
      assert.equal(c1.unitsWritten, (BigInt(MiB + 3 * 4096) + 511_999n) / 512_000n);
      assert.equal(c1.unitsRead, (BigInt(MiB + 64 * KiB) + 511_999n) / 512_000n);
      // A part of a page: offset and length in dwords.
      const part = await getLog(s.admin, LogPage.Smart, 16, { offset: 64 });
      assert.equal(part.readBigUInt64LE(0), c1.reads);
    });

    it('rejects unknown log pages, bad offsets and oversized transfers', async () => {
      const a = await admin(rw);
      expectStatus(await a.q.submit(getLogSqe(0x55, 512)), 1, 0x09, 'log page 0x55');
      expectStatus(await a.q.submit(getLogSqe(LogPage.Discovery, 1024)), 1, 0x09, 'discovery log on an I/O controller');
      expectStatus(await a.q.submit(getLogSqe(LogPage.Error, 64, { offset: 2 })), 0, 2, 'offset not in dwords');
      expectStatus(await a.q.submit(getLogSqe(LogPage.Error, 64, { offset: 4096 })), 0, 2, 'offset past the page');
      expectStatus(await a.q.submit(getLogSqe(LogPage.Smart, 4, { numd: 0x7fffffff })), 0, 2, 'NUMD of 8 GiB');
      expectStatus(await a.q.submit(getLogSqe(LogPage.Smart, 4, { numd: 0xffffffff })), 0, 2, 'NUMD of 16 GiB');
      expectStatus(await a.q.submit(getLogSqe(LogPage.Smart, 4, { numd: (2 * MiB) / 4 - 1 })), 0, 2, 'NUMD beyond MDTS');
      // The connection still works, and a 1 MiB (MDTS) log read is fine.
      const big = check(await a.q.submit(getLogSqe(LogPage.Smart, MiB)), 'SMART of 1 MiB').data!;
      assert.equal(big.length, MiB);
      assert.equal(big.readUInt16LE(1), 293);
      assert.ok(big.subarray(512).every((b) => b === 0), 'past the page: zeros');
    });
  });

  // ---------------------------------------------------------------- discovery

  describe('discovery', function () {
    interface Entry { trtype: number; adrfam: number; subtype: number; treq: number; portid: number; cntlid: number; asqsz: number; trsvcid: string; subnqn: string; traddr: string }
    const entries = (page: Buffer): Entry[] => {
      const n = Number(page.readBigUInt64LE(8));
      return Array.from({ length: n }, (_, i) => {
        const e = page.subarray(1024 * (i + 1), 1024 * (i + 2));
        return {
          trtype: e[0]!, adrfam: e[1]!, subtype: e[2]!, treq: e[3]!, portid: e.readUInt16LE(4), cntlid: e.readUInt16LE(6), asqsz: e.readUInt16LE(8),
          trsvcid: e.subarray(32, 64).toString('ascii').trim(), subnqn: cstr(e.subarray(256, 512)), traddr: e.subarray(512, 768).toString('ascii').trim(),
        };
      });
    };
    const discoveryLog = async (hq: HostQueue) => {
      const head = await getLog(hq, LogPage.Discovery, 1024);
      const n = Number(head.readBigUInt64LE(8));
      const page = await getLog(hq, LogPage.Discovery, 1024 * (n + 1));
      assert.equal(page.readBigUInt64LE(0), head.readBigUInt64LE(0), 'generation unchanged between reads');
      return { genctr: page.readBigUInt64LE(0), entries: entries(page), recfmt: page.readUInt16LE(16) };
    };

    it('identifies as a discovery controller and lists every subsystem', async () => {
      const d = await admin(DISCOVERY_NQN);
      const id = await identify(d.q, 1);
      assert.equal(id[111], 2, 'CNTRLTYPE: discovery');
      assert.equal(cstr(id.subarray(768, 1024)), DISCOVERY_NQN);
      assert.equal(id.readUInt32LE(516), 0, 'no namespaces');
      assert.equal(id.readUInt16LE(78), d.cntlid);
      const log = await discoveryLog(d.q);
      assert.equal(log.recfmt, 0);
      assert.deepEqual(new Set(log.entries.map((e) => e.subnqn)), new Set(target.list().map((s) => s.nqn)));
      const e = log.entries.find((x) => x.subnqn === rw)!;
      assert.deepEqual(e, { trtype: 3, adrfam: 1, subtype: 2, treq: 2, portid: 1, cntlid: 0xffff, asqsz: 32, trsvcid: String(port), subnqn: rw, traddr: '127.0.0.1' });
      expectStatus(await d.q.submit(getLogSqe(LogPage.Smart, 512)), 1, 0x09, 'SMART log from discovery');
      expectStatus(await d.q.submit(identifySqe(0, 1)), 0, 0x0b, 'identify namespace from discovery');
    });

    it('changes the generation counter when subsystems come and go', async () => {
      const d = await admin(DISCOVERY_NQN);
      const g0 = await discoveryLog(d.q);
      const extra = await exportNew('disc-extra', MiB, { nqn: 'nqn.2024-01.io.example:disc-extra' });
      const g1 = await discoveryLog(d.q);
      assert.notEqual(g1.genctr, g0.genctr);
      assert.equal(g1.entries.length, g0.entries.length + 1);
      assert.ok(g1.entries.some((e) => e.subnqn === extra.nqn));
      await target.removeSubsystem(extra.nqn);
      const g2 = await discoveryLog(d.q);
      assert.notEqual(g2.genctr, g1.genctr);
      assert.notEqual(g2.genctr, g0.genctr);
      assert.equal(g2.entries.length, g0.entries.length);
      assert.ok(!g2.entries.some((e) => e.subnqn === extra.nqn));
      // Discovery controllers have no I/O queues.
      const hq = await openQueue();
      expectStatus(await hq.submit(connectSqe(1, 31, 0), connectData(DISCOVERY_NQN, HOSTNQN, d.cntlid, HOST_ID)), 1, 0x82, 'I/O queue on discovery');
    });
  });

  // ---------------------------------------------------------------- asynchronous events

  describe('asynchronous events', function () {
    it('completes an AER with a namespace attribute notice when the content file grows', async () => {
      const vol = await exportNew('grow', MiB);
      const s = await session(vol.nqn);
      check(await s.admin.submit(setFeatureSqe(Feature.AsyncEventConfig, 1 << 8)), 'enable namespace attribute notices');
      // A second controller that did not ask for notices.
      const quiet = await admin(vol.nqn);
      let quietDone = false;
      void quiet.q.submit(aerSqe()).then(() => (quietDone = true), () => {});
      const aer = s.admin.submit(aerSqe());
      await store.truncate('grow', 'content', 2 * MiB);
      const ev = await aer;
      expectStatus(ev, 0, 0, 'AER');
      assert.equal(ev.cqe.dw0, 0x02 | (0x00 << 8) | (LogPage.ChangedNamespaces << 16), 'notice, namespace attribute changed, log page 04h');
      const ns = await identify(s.admin, 0, 1);
      assert.equal(ns.readBigUInt64LE(0), BigInt((2 * MiB) / 512), 'new size');
      // Blocks past the old end are usable at once.
      const tail = prand(4096, 77);
      await write(s.io[0]!, (2 * MiB) / 512 - 8, tail);
      assert.deepEqual(await read(s.io[0]!, (2 * MiB) / 512 - 8, 4096), tail);
      // The changed namespace list names namespace 1 once; reading it (without RAE) clears it.
      const log1 = await getLog(s.admin, LogPage.ChangedNamespaces, 4096);
      assert.equal(log1.readUInt32LE(0), 1);
      assert.equal(log1.readUInt32LE(4), 0);
      assert.equal((await getLog(s.admin, LogPage.ChangedNamespaces, 4096)).readUInt32LE(0), 0);
      // The quiet controller saw the new size but got no event; its list still names the namespace.
      assert.equal((await identify(quiet.q, 0, 1)).readBigUInt64LE(0), BigInt((2 * MiB) / 512));
      check(await quiet.q.submit(keepAliveSqe()), 'round trip');
      assert.equal(quietDone, false, 'no notice without Async Event Configuration bit 8');
      assert.equal((await getLog(quiet.q, LogPage.ChangedNamespaces, 4096)).readUInt32LE(0), 1);

      // Again, reading the log with RAE (retain asynchronous event) first.
      const aer2 = s.admin.submit(aerSqe());
      await store.truncate('grow', 'content', 3 * MiB);
      assert.equal((await aer2).cqe.dw0 >>> 16, LogPage.ChangedNamespaces);
      assert.equal((await getLog(s.admin, LogPage.ChangedNamespaces, 4096, { rae: true })).readUInt32LE(0), 1);
      assert.equal((await getLog(s.admin, LogPage.ChangedNamespaces, 4096)).readUInt32LE(0), 1, 'RAE kept it');
      assert.equal((await getLog(s.admin, LogPage.ChangedNamespaces, 4096)).readUInt32LE(0), 0);
    });

    it('holds at most AERL + 1 requests', async () => {
      const a = await admin(rw);
      const pending = [0, 1, 2, 3].map(() => a.q.submit(aerSqe()));
      let settled = 0;
      for (const p of pending) void p.then(() => settled++, () => {});
      expectStatus(await a.q.submit(aerSqe()), 1, 0x05, 'fifth AER');
      check(await a.q.submit(keepAliveSqe()), 'round trip');
      assert.equal(settled, 0, 'the four AERs stay outstanding');
    });
  });

  // ---------------------------------------------------------------- I/O

  describe('read and write', function () {
    const sizes = [512, 1024, 4096, 4608, 16384, 16896, 65536, 131584, 262144, 786432 + 512, MiB];
    const modes = [
      { name: 'no digests', headerDigest: false, dataDigest: false },
      { name: 'header digests', headerDigest: true, dataDigest: false },
      { name: 'data digests', headerDigest: false, dataDigest: true },
      { name: 'header and data digests, 128-byte data alignment', headerDigest: true, dataDigest: true, hpda: 31 },
    ];
    modes.forEach(({ name, ...digests }, mi) => {
      for (const [ci, inCapsuleMax] of [16384, 0].entries()) {
        it(`round-trips 512 B .. 1 MiB with ${name}, ${inCapsuleMax ? 'in-capsule up to 16 KiB' : 'always R2T'}`, async () => {
          const s = await session(rw, { ...digests, inCapsuleMax, ioQueues: 2 });
          const base = (mi * 2 + ci) * 4 * MiB; // each combination writes its own 4 MiB
          let off = base;
          const written: { off: number; data: Buffer }[] = [];
          for (const [i, size] of sizes.entries()) {
            const data = prand(size, 1000 + mi * 100 + ci * 50 + i);
            await write(s.io[i % 2]!, off / 512, data);
            written.push({ off, data });
            off += size;
          }
          for (const [i, w] of written.entries()) {
            assert.deepEqual(await read(s.io[(i + 1) % 2]!, w.off / 512, w.data.length), w.data, `${w.data.length} bytes read back`);
            assert.deepEqual(await store.read('vol', 'content', w.off, w.data.length), w.data, `${w.data.length} bytes in the capsule`);
          }
          // One read across all of them.
          const all = Buffer.concat(written.map((w) => w.data)).subarray(0, MiB);
          assert.deepEqual(await read(s.io[0]!, base / 512, MiB), all);
        });
      }
    });

    it('writes and reads 4 KiB blocks', async () => {
      const vol = await exportNew('blocks4k', 8 * MiB, { blockSize: 4096, nqn: 'nqn.2024-01.io.example:blocks4k' });
      const s = await session(vol.nqn, { inCapsuleMax: 8192 });
      assert.equal(s.blockSize, 4096);
      assert.equal(s.blocks, 2048);
      const a = prand(4096, 1);
      const b = prand(MiB, 2);
      await write(s.io[0]!, 3, a, 4096);
      await write(s.io[0]!, 100, b, 4096);
      assert.deepEqual(await read(s.io[0]!, 3, 4096, 4096), a);
      assert.deepEqual(await read(s.io[0]!, 100, MiB, 4096), b);
      assert.deepEqual(await store.read('blocks4k', 'content', 3 * 4096, 4096), a);
      assert.deepEqual(await store.read('blocks4k', 'content', 100 * 4096, MiB), b);
      expectStatus(await s.io[0]!.submit(readSqe(2047, 2, 4096)), 0, 0x80, 'read past the end');
      assert.deepEqual(await read(s.io[0]!, 2047, 4096, 4096), Buffer.alloc(4096));
    });

    it('reads unwritten blocks as zeros and sees writes made through the store', async () => {
      const s = await session(rw);
      const at = 40 * MiB;
      assert.deepEqual(await read(s.io[0]!, at / 512, 64 * KiB), Buffer.alloc(64 * KiB));
      const data = prand(10_000, 9);
      await store.write('vol', 'content', at + 3, data);
      const got = await read(s.io[0]!, at / 512, 64 * KiB);
      assert.deepEqual(got.subarray(3, 10_003), data);
      assert.ok(got.subarray(0, 3).every((x) => x === 0));
    });

    it('flushes', async () => {
      const s = await session(rw);
      check(await s.io[0]!.submit(flushSqe(1)), 'flush ns 1');
      check(await s.io[0]!.submit(flushSqe(0xffffffff)), 'flush all namespaces');
      expectStatus(await s.io[0]!.submit(flushSqe(2)), 0, 0x0b, 'flush ns 2');
    });

    it('deallocates with Write Zeroes and Dataset Management', async () => {
      const vol = await exportNew('trim', 8 * MiB);
      const s = await session(vol.nqn, { inCapsuleMax: 4096 });
      const seg = 64 * KiB;
      const blocksPerSeg = seg / 512;
      const data = prand(8 * seg, 31);
      await write(s.io[0]!, 0, data);
      check(await s.io[0]!.submit(flushSqe()), 'flush');
      const allocated = async () => (await store.getattr('trim', 'content')).allocated;
      const a0 = await allocated();
      assert.ok(a0 >= 8 * seg, `allocated ${a0}`);
      const expected = Buffer.from(data);

      // Write Zeroes over segments 1..2, whole.
      check(await s.io[0]!.submit(writeZeroesSqe(blocksPerSeg, 2 * blocksPerSeg)), 'write zeroes');
      expected.fill(0, seg, 3 * seg);
      assert.deepEqual(await read(s.io[0]!, 0, 8 * seg), expected);
      check(await s.io[0]!.submit(flushSqe()), 'flush');
      const a1 = await allocated();
      assert.ok(a1 <= a0 - 2 * seg, `Write Zeroes released space: ${a0} -> ${a1}`);

      // Dataset Management, deallocate: segment 4 whole, 3 blocks inside segment 6, and an empty range.
      const ranges = dsmRanges([{ slba: 4 * blocksPerSeg, blocks: blocksPerSeg }, { slba: 6 * blocksPerSeg + 5, blocks: 3 }, { slba: 0, blocks: 0 }]);
      check(await s.io[0]!.submit(dsmSqe(3), ranges), 'deallocate');
      expected.fill(0, 4 * seg, 5 * seg);
      expected.fill(0, 6 * seg + 5 * 512, 6 * seg + 8 * 512);
      assert.deepEqual(await read(s.io[0]!, 0, 8 * seg), expected);
      check(await s.io[0]!.submit(flushSqe()), 'flush');
      const a2 = await allocated();
      assert.ok(a2 <= a1 - seg, `DSM released space: ${a1} -> ${a2}`);
      assert.deepEqual(await store.read('trim', 'content', 0, 8 * seg), expected);

      // Without the deallocate attribute DSM is advisory and changes nothing.
      check(await s.io[0]!.submit(dsmSqe(1, false), dsmRanges([{ slba: 0, blocks: 8 * blocksPerSeg }])), 'DSM hints');
      assert.deepEqual(await read(s.io[0]!, 0, 8 * seg), expected);

      // Out of range.
      const blocks = (8 * MiB) / 512;
      expectStatus(await s.io[0]!.submit(writeZeroesSqe(blocks - 1, 2)), 0, 0x80, 'write zeroes past the end');
      expectStatus(await s.io[0]!.submit(dsmSqe(2), dsmRanges([{ slba: 0, blocks: 1 }, { slba: blocks, blocks: 1 }])), 0, 0x80, 'DSM range past the end');
      assert.deepEqual(await read(s.io[0]!, 0, 8 * seg), expected, 'a failed DSM deallocates nothing');
    });
  });

  describe('I/O errors', function () {
    it('rejects LBAs out of range, oversized transfers and short SGLs', async () => {
      const s = await session(rw, { inCapsuleMax: 8192 });
      const blocks = VOL_SIZE / 512;
      assert.equal(s.blocks, blocks);
      const before = sha256(await store.read('vol', 'content', VOL_SIZE - MiB, MiB));
      expectStatus(await s.io[0]!.submit(readSqe(blocks - 1, 2, 512)), 0, 0x80, 'read past the end');
      expectStatus(await s.io[0]!.submit(readSqe(blocks, 1, 512)), 0, 0x80, 'read at the end');
      expectStatus(await s.io[0]!.submit(readSqe(2 ** 40, 1, 512)), 0, 0x80, 'read far past the end');
      expectStatus(await s.io[0]!.submit(readSqe(0x7fffffff * 2 ** 32, 1, 512)), 0, 0x80, 'read at a 64-bit LBA');
      expectStatus(await s.io[0]!.submit(writeSqe(blocks - 1, 2), prand(1024, 1)), 0, 0x80, 'in-capsule write past the end');
      expectStatus(await s.io[0]!.submit(writeSqe(blocks - 1, 64), prand(32768, 1)), 0, 0x80, 'R2T write past the end');
      expectStatus(await s.io[0]!.submit(readSqe(0, 4096, 512)), 0, 0x02, 'read of 2 MiB (MDTS is 1 MiB)');
      expectStatus(await s.io[0]!.submit(writeSqe(0, 4096), prand(2 * MiB, 2)), 0, 0x02, 'write of 2 MiB');
      const short = readSqe(0, 8, 512);
      short.writeUInt32LE(2048, 32);
      expectStatus(await s.io[0]!.submit(short), 0, 0x0f, 'SGL shorter than the read');
      const keyed = readSqe(0, 1, 512);
      keyed[39] = 0x20;
      expectStatus(await s.io[0]!.submit(keyed), 0, 0x11, 'keyed SGL for a read');
      assert.equal(sha256(await store.read('vol', 'content', VOL_SIZE - MiB, MiB)), before, 'nothing written');
      // The queue is still fine.
      assert.equal((await read(s.io[0]!, 0, 512)).length, 512);
    });

    it('answers Invalid Opcode and Invalid Namespace', async () => {
      const s = await session(rw);
      const io = s.io[0]!;
      for (const opcode of [0x03, 0x04, 0x05, 0x0c, 0x0d, 0x11, 0x80, 0xff]) {
        expectStatus(await io.submit(buildSqe({ opcode, cid: 0, nsid: 1 })), 0, 0x01, `I/O opcode 0x${opcode.toString(16)}`);
      }
      for (const opcode of [0x00, 0x01, 0x03, 0x04, 0x05, 0x10, 0x11, 0x80, 0xc0]) {
        expectStatus(await s.admin.submit(buildSqe({ opcode, cid: 0 })), 0, 0x01, `admin opcode 0x${opcode.toString(16)}`);
      }
      expectStatus(await s.admin.submit(buildSqe({ opcode: 0x7f, cid: 0, fctype: 0x05 })), 0, 0x01, 'fabrics Authentication Send');
      expectStatus(await io.submit(propertySqe(true, 0x1c, false)), 0, 0x01, 'property get on an I/O queue');
      for (const nsid of [0, 2, 0xffffffff]) {
        expectStatus(await io.submit(buildSqe({ opcode: IoOpcode.Read, cid: 0, nsid, sglId: Sgl.Transport, sglLength: 512 })), 0, 0x0b, `read nsid ${nsid}`);
        expectStatus(await io.submit(writeZeroesSqe(0, 1, nsid)), 0, 0x0b, `write zeroes nsid ${nsid}`);
      }
      const w = writeSqe(0, 1);
      w.writeUInt32LE(7, 4);
      expectStatus(await io.submit(w, prand(512, 3)), 0, 0x0b, 'write nsid 7');
      check(await io.submit(readSqe(0, 1, 512)), 'still serving');
    });

    it('protects a read-only subsystem from every kind of write', async () => {
      const s = await session(ro, { inCapsuleMax: 4096 });
      const w = await session(rw);
      const data = prand(8192, 55);
      const at = (48 * MiB) / 512;
      await write(w.io[0]!, at, data);
      const before = sha256(await store.read('vol', 'content', 48 * MiB, MiB));
      expectStatus(await s.io[0]!.submit(writeSqe(at, 8), prand(4096, 1)), 0, 0x20, 'in-capsule write');
      expectStatus(await s.io[0]!.submit(writeSqe(at, 128), prand(65536, 1)), 0, 0x20, 'R2T write');
      expectStatus(await s.io[0]!.submit(writeSqe(at, 1, { fua: true }), prand(512, 1)), 0, 0x20, 'FUA write');
      expectStatus(await s.io[0]!.submit(writeZeroesSqe(at, 16)), 0, 0x20, 'write zeroes');
      expectStatus(await s.io[0]!.submit(dsmSqe(1), dsmRanges([{ slba: at, blocks: 16 }])), 0, 0x20, 'deallocate');
      check(await s.io[0]!.submit(dsmSqe(1, false), dsmRanges([{ slba: at, blocks: 16 }])), 'DSM hints are harmless');
      check(await s.io[0]!.submit(flushSqe()), 'flush');
      assert.deepEqual(await read(s.io[0]!, at, 8192), data, 'reads work');
      assert.equal(sha256(await store.read('vol', 'content', 48 * MiB, MiB)), before);
    });
  });

  // ---------------------------------------------------------------- connect

  describe('connect', function () {
    it('rejects unknown subsystems, hosts not allowed, and bad Connect fields', async () => {
      const hq = await openQueue({ inCapsuleMax: 8192 });
      const unknown = await hq.submit(connectSqe(0, 31, 0), connectData('nqn.2024-01.io.example:nope', HOSTNQN, 0xffff, HOST_ID));
      expectStatus(unknown, 1, 0x82, 'unknown subsystem');
      assert.equal(unknown.cqe.dw0, 256 | (1 << 16), 'IPO 256 (SUBNQN), IATTR 1 (connect data)');

      const vol = await exportNew('allow', MiB, { nqn: 'nqn.2024-01.io.example:allow', allowedHosts: ['nqn.2014-08.org.example:host-a'] });
      expectStatus(await hq.submit(connectSqe(0, 31, 0), connectData(vol.nqn, 'nqn.2014-08.org.example:host-b', 0xffff, HOST_ID)), 1, 0x84, 'host not allowed');
      expectStatus(await hq.submit(connectSqe(0, 31, 0), connectData(vol.nqn, HOSTNQN, 0xffff, HOST_ID)), 1, 0x84, 'host not allowed');

      const dyn = await hq.submit(connectSqe(0, 31, 0), connectData(rw, HOSTNQN, 5, HOST_ID));
      expectStatus(dyn, 1, 0x82, 'admin connect with a static cntlid');
      assert.equal(dyn.cqe.dw0, 16 | (1 << 16), 'IPO 16 (CNTLID)');
      const sq0 = await hq.submit(connectSqe(0, 0, 0), connectData(rw, HOSTNQN, 0xffff, HOST_ID));
      expectStatus(sq0, 1, 0x82, 'SQSIZE 0');
      assert.equal(sq0.cqe.dw0, 44, 'IPO 44 (SQSIZE), IATTR 0');
      expectStatus(await hq.submit(connectSqe(0, 1024, 0), connectData(rw, HOSTNQN, 0xffff, HOST_ID)), 1, 0x82, 'SQSIZE beyond MQES');
      const fmt = connectSqe(0, 31, 0);
      fmt.writeUInt16LE(1, 40);
      expectStatus(await hq.submit(fmt, connectData(rw, HOSTNQN, 0xffff, HOST_ID)), 1, 0x80, 'RECFMT 1');
      expectStatus(await hq.submit(connectSqe(0, 31, 0), connectData(rw, HOSTNQN, 0xffff, HOST_ID).subarray(0, 512)), 0, 0x0f, 'short connect data');
      expectStatus(await hq.submit(connectSqe(0, 31, 0)), 0, 0x0f, 'connect without data');

      // After all that, the same queue connects and works; a second Connect is out of sequence.
      const ok = check(await hq.submit(connectSqe(0, 31, 0), connectData(vol.nqn, 'nqn.2014-08.org.example:host-a', 0xffff, HOST_ID)), 'allowed host');
      assert.ok((ok.cqe.dw0 & 0xffff) > 0);
      expectStatus(await hq.submit(connectSqe(0, 31, 0), connectData(vol.nqn, 'nqn.2014-08.org.example:host-a', 0xffff, HOST_ID)), 0, 0x0c, 'second connect');
      check(await hq.submit(propertySqe(false, 0x14, false, CC_ENABLE)), 'enable');
      check(await hq.submit(identifySqe(1)), 'identify');
    });

    it('rejects I/O queue connects that do not match a controller', async () => {
      const a = await admin(rw, { enable: false });
      const io = await openQueue({ inCapsuleMax: 1024 });
      const data = (cntlid: number, hostnqn = HOSTNQN, hostId = HOST_ID) => connectData(rw, hostnqn, cntlid, hostId);
      // Not enabled yet.
      expectStatus(await io.submit(connectSqe(1, 31, 0), data(a.cntlid)), 0, 0x0c, 'I/O queue before CC.EN');
      check(await a.q.submit(propertySqe(false, 0x14, false, CC_ENABLE)), 'enable');
      // No queues granted yet.
      const none = await io.submit(connectSqe(1, 31, 0), data(a.cntlid));
      expectStatus(none, 1, 0x82, 'no queues granted');
      assert.equal(none.cqe.dw0, 42, 'IPO 42 (QID)');
      check(await a.q.submit(setFeatureSqe(Feature.NumberOfQueues, (1 << 16) | 1)), 'two queues');
      const unknown = await io.submit(connectSqe(1, 31, 0), data(0xfff0 - 1));
      expectStatus(unknown, 1, 0x82, 'unknown cntlid');
      assert.equal(unknown.cqe.dw0, 16 | (1 << 16));
      expectStatus(await io.submit(connectSqe(1, 31, 0), data(a.cntlid, 'nqn.2014-08.org.example:other')), 1, 0x82, 'other host NQN');
      expectStatus(await io.submit(connectSqe(1, 31, 0), data(a.cntlid, HOSTNQN, Buffer.alloc(16, 1))), 1, 0x82, 'other host id');
      const beyond = await io.submit(connectSqe(3, 31, 0), data(a.cntlid));
      expectStatus(beyond, 1, 0x82, 'qid beyond the granted queues');
      assert.equal(beyond.cqe.dw0, 42);
      check(await io.submit(connectSqe(2, 31, 0), data(a.cntlid)), 'qid 2');
      const dup = await openQueue({ inCapsuleMax: 1024 });
      expectStatus(await dup.submit(connectSqe(2, 31, 0), data(a.cntlid)), 1, 0x82, 'qid 2 again');
      check(await dup.submit(connectSqe(1, 31, 0), data(a.cntlid)), 'qid 1');
      assert.equal((await read(io, 0, 512)).length, 512);
      assert.equal((await read(dup, 0, 512)).length, 512);
    });

    it('answers Command Sequence Error to commands before Connect', async () => {
      const hq = await openQueue();
      expectStatus(await hq.submit(identifySqe(1)), 0, 0x0c, 'identify');
      expectStatus(await hq.submit(propertySqe(true, 0x1c, false)), 0, 0x0c, 'property get');
      expectStatus(await hq.submit(propertySqe(false, 0x14, false, CC_ENABLE)), 0, 0x0c, 'property set');
      expectStatus(await hq.submit(keepAliveSqe()), 0, 0x0c, 'keep alive');
      expectStatus(await hq.submit(readSqe(0, 1, 512)), 0, 0x0c, 'read');
      expectStatus(await hq.submit(writeSqe(0, 1), prand(512, 1)), 0, 0x0c, 'write');
      expectStatus(await hq.submit(disconnectSqe()), 0, 0x0c, 'disconnect');
      // Then Connect works on the same queue.
      check(await hq.submit(connectSqe(0, 31, 0), connectData(rw, HOSTNQN, 0xffff, HOST_ID)), 'connect');
    });
  });

  // ---------------------------------------------------------------- transport details

  describe('transport', function () {
    /** Every PDU the target sends on a queue without digests, seen beside the initiator's own framing. */
    const tap = (hq: HostQueue) => {
      const seen: { type: number; flags: number; cid: number; r2tl?: number }[] = [];
      const reader = new PduReader({ accept: HOST_ACCEPTS, maxPduBytes: 64 << 20 });
      hq.socket.on('data', (c: Buffer) => {
        for (const p of reader.push(c)) {
          seen.push({
            type: p.type, flags: p.flags, cid: p.type === PduType.CapsuleResp ? p.header.readUInt16LE(20) : p.header.readUInt16LE(8),
            ...(p.type === PduType.R2T ? { r2tl: p.header.readUInt32LE(16) } : {}),
          });
        }
      });
      return seen;
    };

    it('never asks in one R2T for more than one H2CData may carry (older Linux hosts send one PDU per R2T)', async () => {
      const s = await session(rw, { inCapsuleMax: 0 });
      const io = s.io[0]!;
      const advertised = io.maxH2CData;
      assert.ok(advertised > 0, 'MAXH2CDATA in ICResp');
      const seen = tap(io);
      // Answer every R2T with a single H2CData PDU of R2TL bytes, as hosts before Linux 5.17 do.
      io.maxH2CData = 0;
      let lba = (56 * MiB) / 512;
      for (const size of [4096, 64 * KiB, 256 * KiB, 256 * KiB + 512, 512 * KiB, MiB]) {
        const data = prand(size, size);
        await write(io, lba, data);
        assert.deepEqual(await read(io, lba, size), data, `${size} bytes`);
        lba += size / 512;
      }
      const r2ts = seen.filter((p) => p.type === PduType.R2T);
      assert.ok(r2ts.length >= 6);
      for (const r of r2ts) assert.ok(r.r2tl! <= advertised, `R2TL ${r.r2tl} <= MAXH2CDATA ${advertised}`);
    });

    it('takes the data of one R2T in many H2CData PDUs', async () => {
      const s = await session(rw, { inCapsuleMax: 0, headerDigest: true, dataDigest: true });
      const io = s.io[0]!;
      io.maxH2CData = 60 * 512; // not a divisor of the writes: the last PDU of each is short
      let lba = (60 * MiB) / 512;
      for (const size of [64 * KiB, 300 * KiB, MiB]) {
        const data = prand(size, size + 1);
        await write(io, lba, data);
        assert.deepEqual(await read(io, lba, size), data, `${size} bytes`);
        assert.deepEqual(await store.read('vol', 'content', lba * 512, size), data);
        lba += size / 512;
      }
    });

    it('advances the SQ head pointer, and skips the response capsule when SQ flow control is off', async () => {
      const s = await session(rw, { hostnqn: HOSTNQN, hostId: HOST_ID, ioQueues: 0, grantQueues: 2 });
      const data = prand(4096, 4);
      const w = await session(rw);
      await write(w.io[0]!, (52 * MiB) / 512, data);

      // A queue of 4 entries: Connect took entry 0, so the head moves 1, 2, 3, 0, 1, ...
      const q1 = await openQueue({ inCapsuleMax: 1024 });
      const c1 = check(await q1.submit(connectSqe(1, 3, 0), connectData(rw, HOSTNQN, s.cntlid, HOST_ID)), 'connect qid 1');
      assert.deepEqual([c1.cqe.sqid, c1.cqe.sqhd], [1, 1]);
      const heads: number[] = [];
      for (let i = 0; i < 5; i++) heads.push(check(await q1.submit(flushSqe()), 'flush').cqe.sqhd);
      assert.deepEqual(heads, [2, 3, 0, 1, 2]);
      const seen1 = tap(q1);
      const r1 = check(await q1.submit(readSqe((52 * MiB) / 512, 8, 512)), 'read');
      assert.deepEqual(r1.data, data);
      assert.equal(r1.cqe.sqid, 1);
      assert.deepEqual(seen1.map((p) => [p.type, p.flags]), [[PduType.C2HData, PduFlag.LAST_PDU], [PduType.CapsuleResp, 0]]);

      // CATTR bit 2: SQ flow control disabled; a successful read ends with C2HData SUCCESS alone.
      const q2 = await openQueue({ inCapsuleMax: 1024 });
      const conn = connectSqe(2, 31, 0);
      conn[46] = 0x04;
      check(await q2.submit(conn, connectData(rw, HOSTNQN, s.cntlid, HOST_ID)), 'connect qid 2');
      const seen2 = tap(q2);
      const r2 = check(await q2.submit(readSqe((52 * MiB) / 512, 8, 512)), 'read');
      assert.deepEqual(r2.data, data);
      check(await q2.submit(flushSqe()), 'flush');
      assert.deepEqual(seen2.map((p) => [p.type, p.flags]), [[PduType.C2HData, PduFlag.LAST_PDU | PduFlag.SUCCESS], [PduType.CapsuleResp, 0]]);
      assert.notEqual(seen2[0]!.cid, seen2[1]!.cid, 'the response capsule is the flush\'s');
      // A failed read still gets its response capsule.
      expectStatus(await q2.submit(readSqe(VOL_SIZE / 512, 1, 512)), 0, 0x80, 'read past the end');
      assert.equal(seen2.length, 3);
      assert.equal(seen2[2]!.type, PduType.CapsuleResp);
    });
  });

  // ---------------------------------------------------------------- keep-alive

  describe('keep-alive', function () {
    it('tears down a controller whose host falls silent, and keeps one that sends Keep Alive', async () => {
      const silent = await session(rw, { katoMs: 200, ioQueues: 1 });
      const chatty = await session(rw, { katoMs: 200, ioQueues: 1 });
      let stop = false;
      const pinger = (async () => {
        while (!stop) {
          check(await chatty.admin.submit(keepAliveSqe()), 'keep alive');
          await sleep(100);
        }
      })();
      try {
        const outcome = await Promise.race([silent.admin.whenClosed.then(() => 'closed'), sleep(30_000).then(() => 'still open')]);
        assert.equal(outcome, 'closed', 'the silent controller was torn down');
        assert.equal(await closedWithin(silent.io[0]!, 5_000), 'closed', 'its I/O queue too');
        assert.equal(chatty.admin.closed, false, 'the host sending Keep Alive stays connected');
        assert.equal((await read(chatty.io[0]!, 0, 512)).length, 512);
      } finally {
        stop = true;
        await pinger.catch(() => {});
      }
      // A new controller for the silent host can be created.
      const again = await session(rw);
      assert.equal((await read(again.io[0]!, 0, 512)).length, 512);
    });
  });

  // ---------------------------------------------------------------- scale

  describe('many hosts and queues', function () {
    it('serves 4 controllers x 4 I/O queues at queue depth 16 with every byte verified', async () => {
      const vol = await exportNew('many', 32 * MiB, { policy: false });
      const ctrls = await Promise.all([0, 1, 2, 3].map((i) => session(vol.nqn, {
        hostnqn: `nqn.2014-08.org.example:host-${i}`, hostId: Buffer.alloc(16, i + 1), ioQueues: 4, inCapsuleMax: 8192,
        headerDigest: i % 2 === 1, dataDigest: i >= 2, queueSize: 64,
      })));
      assert.equal(new Set(ctrls.map((c) => c.cntlid)).size, 4);
      const model = Buffer.alloc(32 * MiB);
      const slotBlocks = 128; // 64 KiB per command slot
      let seed = 5000;
      const lane = async (c: number, qn: number, round: number) => {
        const laneNo = c * 4 + qn;
        const jobs = Array.from({ length: 16 }, (_, slot) => {
          const blocks = 1 + ((laneNo * 31 + slot * 17 + round * 7) % slotBlocks);
          const slba = (laneNo * 16 + slot) * slotBlocks + (round % 2 ? slotBlocks - blocks : 0);
          const data = prand(blocks * 512, seed++);
          data.copy(model, slba * 512);
          return { slba, data };
        });
        // 16 writes in flight on this queue, then 16 reads through another controller's queue.
        await Promise.all(jobs.map((j) => write(ctrls[c]!.io[qn]!, j.slba, j.data)));
        const other = ctrls[(c + 1) % 4]!.io[(qn + 1) % 4]!;
        const got = await Promise.all(jobs.map((j) => read(other, j.slba, j.data.length)));
        got.forEach((g, i) => assert.deepEqual(g, jobs[i]!.data, `controller ${c} queue ${qn} slot ${i} round ${round}`));
      };
      for (let round = 0; round < 3; round++) {
        await Promise.all([0, 1, 2, 3].flatMap((c) => [0, 1, 2, 3].map((qn) => lane(c, qn, round))));
      }
      // Everything, through the store and through one 1 MiB read per MiB.
      const span = 16 * 16 * slotBlocks * 512;
      assert.equal(sha256(await store.read('many', 'content', 0, span)), sha256(model.subarray(0, span)));
      const reads = await Promise.all(Array.from({ length: span / MiB }, (_, i) => read(ctrls[i % 4]!.io[i % 4]!, (i * MiB) / 512, MiB)));
      assert.equal(sha256(Buffer.concat(reads)), sha256(model.subarray(0, span)));
    });
  });

  // ---------------------------------------------------------------- teardown

  describe('teardown', function () {
    it('closes the connections of a removed subsystem and leaves the others alone', async () => {
      const vol = await exportNew('removed', 2 * MiB, { nqn: 'nqn.2024-01.io.example:removed' });
      const s = await session(vol.nqn, { ioQueues: 2 });
      const other = await session(rw);
      const data = prand(4096, 8);
      await write(s.io[0]!, 0, data);
      await target.removeSubsystem(vol.nqn);
      for (const hq of [s.admin, ...s.io]) assert.equal(await closedWithin(hq, 10_000), 'closed');
      assert.ok(!target.list().some((x) => x.nqn === vol.nqn));
      // Buffered writes were made durable on the way out.
      assert.equal(committedSegments(vol.id, 0), 1);
      assert.deepEqual(await store.read('removed', 'content', 0, 4096), data);
      const hq = await openQueue();
      expectStatus(await hq.submit(connectSqe(0, 31, 0), connectData(vol.nqn, HOSTNQN, 0xffff, HOST_ID)), 1, 0x82, 'connect to the removed subsystem');
      assert.equal(other.admin.closed, false);
      assert.equal((await read(other.io[0]!, 0, 512)).length, 512);
      // It can be exported again.
      await target.addSubsystem({ ref: 'removed', nqn: vol.nqn });
      const back = await session(vol.nqn);
      assert.deepEqual(await read(back.io[0]!, 0, 4096), data);
      await target.removeSubsystem(vol.nqn);
    });

    it('a write still running when its host hangs up lands, and removing the subsystem waits for it', async () => {
      const vol = await exportNew('hangup', 2 * MiB, { nqn: 'nqn.2024-01.io.example:hangup' });
      const s = await session(vol.nqn, { ioQueues: 1 });
      // Hold the store's buffered write until the host has gone and the removal has begun.
      const real = store.writeBuffered.bind(store);
      let entered!: () => void;
      const reached = new Promise<void>((r) => (entered = r));
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      store.writeBuffered = async (...args: Parameters<Store['writeBuffered']>) => {
        entered();
        await gate;
        return real(...args);
      };
      try {
        const data = prand(64 * KiB, 21);
        const pending = s.io[0]!.submit(writeSqe(128, data.length / 512), data).catch(() => undefined);
        await reached;
        s.io[0]!.close();
        s.admin.close();
        assert.equal(await closedWithin(s.io[0]!, 10_000), 'closed');
        assert.equal(target.list().find((x) => x.nqn === vol.nqn)!.changesInFlight, 1, 'the orphaned write is still running');
        let removed = false;
        const removal = target.removeSubsystem(vol.nqn).then(() => (removed = true));
        await sleep(50);
        assert.equal(removed, false, 'removal waits for the running write');
        release();
        await removal;
        await pending;
        assert.deepEqual(await store.read('hangup', 'content', 128 * 512, data.length), data);
        assert.equal(committedSegments(vol.id, 1), 1, 'and it was flushed on the way out (64 KiB segments: LBA 128 is segment 1)');
      } finally {
        store.writeBuffered = real;
        release();
      }
    });

    it('disconnects an I/O queue with Disconnect, and the controller with Disconnect on the admin queue', async () => {
      const s = await session(rw, { ioQueues: 2 });
      check(await s.io[0]!.submit(disconnectSqe()), 'disconnect I/O queue 1');
      assert.equal(await closedWithin(s.io[0]!, 10_000), 'closed');
      assert.equal(s.admin.closed, false);
      assert.equal((await read(s.io[1]!, 0, 512)).length, 512, 'queue 2 still serves');
      check(await s.admin.submit(identifySqe(1)), 'admin still serves');
      // The qid is free again.
      let reconnected: HostQueue | undefined;
      await until(async () => {
        const hq = await openQueue();
        const r = await hq.submit(connectSqe(1, 31, 0), connectData(rw, 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001', s.cntlid, Buffer.alloc(16, 7)));
        if (r.cqe.sct === 0 && r.cqe.sc === 0) reconnected = hq;
        else hq.close();
        return reconnected !== undefined;
      }, 'qid 1 to be free');
      assert.equal((await read(reconnected!, 0, 512)).length, 512);
      // Disconnect on the admin queue ends the association: every queue closes.
      check(await s.admin.submit(disconnectSqe()), 'disconnect admin queue');
      for (const hq of [s.admin, s.io[1]!, reconnected!]) assert.equal(await closedWithin(hq, 10_000), 'closed');
    });
  });
});

/**
 * Reads borrow the store's pooled segment memory and give it back once the C2HData is written:
 * with a cache far smaller than the data, every pass evicts and reloads, and the slots the
 * reads used are reused rather than kept for good (segment-pool.ts).
 */
describe('nvme target: reads give pooled segment memory back', function () {
  this.timeout(60_000);
  let dir: string;
  let store: Store;
  let target: NvmeTarget;
  let pool: SegmentPool;

  before(async () => {
    ({ dir, pool, store } = openPooledStore('space-nvme-pool-', MiB));
    await store.create({ name: 'p', size: 4 * MiB, policy: validatePolicy({ segmentSize: '64KiB', encryption: false }) });
    target = await NvmeTarget.listen({ store, port: 0 });
  });
  after(async () => {
    await target?.close();
    await store?.close();
    rmrf(dir);
  });

  it('reuses the slots of segments it has served, and keeps none', async () => {
    const data = prand(4 * MiB, 21);
    await store.write('p', 'content', 0, data);
    await store.flush('p');
    const nqn = (await target.addSubsystem({ ref: 'p' })).nqn;
    const s = await connectController({ host: '127.0.0.1', port: target.address().port, subnqn: nqn });
    try {
      for (let pass = 0; pass < 2; pass++) {
        // 32 KiB reads, inside one 64 KiB segment each: served as views of the cached segment.
        for (let off = 0; off < data.length; off += 32 * KiB) {
          const r = check(await s.io[0]!.submit(readSqe(off / 512, (32 * KiB) / 512, 512)), `read at ${off}`);
          assert.ok(r.data!.equals(data.subarray(off, off + 32 * KiB)), `pass ${pass}: bytes at ${off}`);
        }
      }
    } finally {
      s.close();
    }
    await sleep(50); // the last write callbacks
    assertSlotsGivenBack(pool, 16, 32); // 1 MiB cache: 16 segments of 64 KiB
  });
});
