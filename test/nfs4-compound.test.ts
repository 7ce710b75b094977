/**
 * NFSv4 COMPOUND handling at the protocol level, with the small test client: header and
 * operation decoding of malformed input (statuses, never a crash), minor version and operation
 * placement rules, the SEQUENCE reply cache, lease expiry, share reservations, stateid checks,
 * the pseudo file system, 4.2 SEEK/ALLOCATE/DEALLOCATE, handles across a restart, and a fuzz
 * run over mutated COMPOUNDs.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { createLogger } from '../capsule/log.js';
import { Store } from '../capsule/store.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { AcceptStat } from '../gateway/nfs/rpc.js';
import { XdrWriter } from '../gateway/nfs/xdr.js';
import { bitmapOf } from '../gateway/nfs/v4/attrs4.js';
import { CompoundBuilder, Nfs4TestClient, type CompoundReply } from '../gateway/nfs/v4/client.js';
import { Attr, NFS4_PROGRAM, NFS_V4, Op, Proc4, Status4 } from '../gateway/nfs/v4/constants.js';
import type { Stateid } from '../gateway/nfs/v4/state.js';
import { chunks, prand, rmrf, sha256, tmpDir } from './helpers/tmp.js';
import { seedPhotos } from './helpers/nfs-fixture.js';

const ANON: Stateid = { seqid: 0, other: Buffer.alloc(12) };

/** Statuses of all results of a reply whose bodies the caller does not need. */
function statuses(r: CompoundReply): number[] {
  const out: number[] = [];
  // Only usable when every result before the last has no body to skip.
  while (r.remaining > 0) {
    const x = r.next();
    out.push(x.status);
    if (x.op === Op.SEQUENCE && x.status === 0) r.skipSequence();
    else if (x.op === Op.GETFH && x.status === 0) r.fh();
  }
  return out;
}

describe('nfs4 COMPOUND (protocol level)', function () {
  this.timeout(60_000);
  let dir: string;
  let store: Store;
  let nfs: NfsServer;
  let port: number;
  let clock = 0;
  const clients: Nfs4TestClient[] = [];
  const payload = prand(300_000, 4);
  /** Error log events of the kind that mark a bug (an operation failing unexpectedly). */
  const unexpected: string[] = [];
  const logger = createLogger({
    component: 'test', level: 'error',
    write: (line) => {
      const ev = JSON.parse(line) as { event: string; err?: { message?: string } };
      if (ev.event === 'nfs4.op.failed' || ev.event === 'rpc.call.failed') unexpected.push(`${ev.event}: ${ev.err?.message}`);
    },
  });

  async function start(): Promise<void> {
    nfs = await NfsServer.listen({
      store, host: '127.0.0.1', port: 0, mountPort: 0, logger,
      nfs4: { leaseSeconds: 5, now: () => Date.now() + clock },
    });
    port = nfs.address().port;
    await nfs.addExport({ ref: 'photos' });
    await nfs.addExport({ ref: 'photos', path: '/archive/photos-ro', readOnly: true });
    await nfs.addExport({ ref: 'photos', path: '/lan-only', allowedClients: ['10.0.0.0/8'] });
  }

  async function client(minor = 1, establish = true): Promise<Nfs4TestClient> {
    const c = await Nfs4TestClient.connect(port, { minor });
    clients.push(c);
    if (establish && minor >= 1) await c.establish();
    return c;
  }

  before(async () => {
    dir = tmpDir('space-nfs4-');
    store = Store.open(dir);
    await seedPhotos(store, payload);
    await start();
  });

  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
    clock = 0;
  });

  after(async () => {
    await nfs?.close();
    await store?.close();
    rmrf(dir);
  });

  it('answers NULL and refuses minor version 3 with MINOR_VERS_MISMATCH and no results', async () => {
    const c = await client(1, false);
    const n = await c.rpc.call(NFS4_PROGRAM, NFS_V4, Proc4.NULL);
    assert.equal(n.acceptStat, AcceptStat.SUCCESS);
    const r = await c.compound(new CompoundBuilder().putrootfh(), 3);
    assert.equal(r.status, Status4.MINOR_VERS_MISMATCH);
    assert.equal(r.count, 0);
    assert.equal(r.tag.toString(), 'test');
  });

  it('decodes malformed input into statuses (BADXDR, OP_ILLEGAL, GARBAGE_ARGS), never a crash', async () => {
    const c = await client(0, false);
    // PUTFH with a 200-byte handle: longer than NFS4_FHSIZE
    let r = await c.raw(new XdrWriter().uint32(Op.PUTFH).opaque(Buffer.alloc(200)).toBuffer(), 1, 0);
    assert.equal(r.status, Status4.BADXDR);
    assert.deepEqual(r.next(Op.PUTFH), { op: Op.PUTFH, status: Status4.BADXDR });
    // arguments cut short
    r = await c.raw(new XdrWriter().uint32(Op.PUTROOTFH).uint32(Op.LOOKUP).uint32(10).toBuffer(), 2, 0);
    assert.equal(r.status, Status4.BADXDR);
    assert.deepEqual(statuses(r), [Status4.OK, Status4.BADXDR]);
    // more operations announced than the body can hold
    r = await c.raw(new XdrWriter().uint32(Op.PUTROOTFH).toBuffer(), 1_000_000, 0);
    assert.equal(r.status, Status4.BADXDR);
    // undefined operation numbers: OP_ILLEGAL, result tagged OP_ILLEGAL
    for (const op of [0, 2, 9999, Op.SEQUENCE]) {
      r = await c.raw(new XdrWriter().uint32(Op.PUTROOTFH).uint32(op).toBuffer(), 2, 0);
      assert.equal(r.status, Status4.OP_ILLEGAL, `op ${op}`);
      r.next(Op.PUTROOTFH);
      assert.deepEqual(r.next(), { op: Op.ILLEGAL, status: Status4.OP_ILLEGAL });
    }
    // a tag longer than any allowed: the header itself is garbage
    await assert.rejects(c.send(new XdrWriter().uint32(0xfffffff0).toBuffer()), (e: { acceptStat?: number }) => e.acceptStat === AcceptStat.GARBAGE_ARGS);
    // bad enum inside arguments (OPEN's claim type)
    const open = new XdrWriter().uint32(Op.PUTROOTFH).uint32(Op.OPEN).uint32(0).uint32(1).uint32(0).uint64(0).opaque(Buffer.from('o')).uint32(0).uint32(77);
    r = await c.raw(open.toBuffer(), 2, 0);
    assert.equal(r.status, Status4.BADXDR);
    // the server still serves normally
    r = await c.compound(new CompoundBuilder().putrootfh().getfh(), 0);
    assert.equal(r.status, Status4.OK);
    assert.equal(nfs.rpc.stats.systemErrors, 0);
  });

  it('enforces operation placement: SEQUENCE first, sessionless operations, 4.0-only operations', async () => {
    const c = await client(1, false);
    let r = await c.compound(new CompoundBuilder().putrootfh(), 1);
    assert.deepEqual(r.next(), { op: Op.PUTROOTFH, status: Status4.OP_NOT_IN_SESSION });
    // a session-less operation followed by anything: NOT_ONLY_OP for the second
    r = await c.compound(new CompoundBuilder().op(Op.DESTROY_SESSION, (w) => w.fixedOpaque(Buffer.alloc(16))).putrootfh(), 1);
    assert.deepEqual(r.next(), { op: Op.DESTROY_SESSION, status: Status4.BADSESSION });
    r = await c.compound(new CompoundBuilder().op(Op.BIND_CONN_TO_SESSION, (w) => w.fixedOpaque(Buffer.alloc(16)).uint32(1).bool(false)), 1);
    assert.deepEqual(r.next(), { op: Op.BIND_CONN_TO_SESSION, status: Status4.BADSESSION });
    await c.establish();
    r = await c.compound(new CompoundBuilder().op(Op.BIND_CONN_TO_SESSION, (w) => w.fixedOpaque(c.sessionId).uint32(3).bool(false)).putrootfh(), 1);
    assert.deepEqual(r.next(), { op: Op.BIND_CONN_TO_SESSION, status: Status4.OK });
    assert.ok(Buffer.from(r.r.fixedOpaque(16)).equals(c.sessionId));
    assert.equal(r.r.uint32(), 1); // bound for the fore channel only
    r.r.bool();
    assert.deepEqual(r.next(), { op: Op.PUTROOTFH, status: Status4.NOT_ONLY_OP });
    r = await c.compound(c.seq().op(Op.SETCLIENTID, (w) => w.fixedOpaque(Buffer.alloc(8)).opaque(Buffer.from('x')).uint32(0).string('tcp').string('1.2.3.4.5.6').uint32(0)));
    assert.equal(r.status, Status4.NOTSUPP);
    r = await c.compound(c.seq().putrootfh().sequence(c.sessionId, 99));
    assert.deepEqual(statuses(r), [Status4.OK, Status4.OK, Status4.SEQUENCE_POS]);
    // stops at the first failure: GETFH without a handle, nothing after it runs
    r = await c.compound(c.seq().getfh().putrootfh());
    assert.deepEqual(statuses(r), [Status4.OK, Status4.NOFILEHANDLE]);
    assert.equal(r.status, Status4.NOFILEHANDLE);
    // handles that were never ours
    r = await c.compound(c.seq().putfh(Buffer.alloc(24, 9)));
    assert.deepEqual(statuses(r), [Status4.OK, Status4.BADHANDLE]);
  });

  it('SEQUENCE: a retry gets the cached reply (not a second execution); misordered, bad slot, bad session', async () => {
    const c = await client();
    const dirFh = await c.lookupPath('/photos');
    const name = `guarded-${crypto.randomUUID()}`;
    const build = (seqid: number) => new CompoundBuilder().sequence(c.sessionId, seqid, 0, 0, true).putfh(dirFh).open(name, { create: true, guarded: true }).getfh();
    c.seqid++;
    const seqid = c.seqid;
    const first = await c.compound(build(seqid));
    assert.equal(first.status, Status4.OK);
    // the same slot and sequence id again: the GUARDED create must not run again (it would be
    // EXIST); the answer is the first reply, byte for byte
    const again = await c.compound(build(seqid));
    assert.equal(again.status, Status4.OK);
    assert.ok(again.bytes.equals(first.bytes));
    // skipping a sequence id
    let r = await c.compound(new CompoundBuilder().sequence(c.sessionId, seqid + 2).putrootfh());
    assert.deepEqual(r.next(), { op: Op.SEQUENCE, status: Status4.SEQ_MISORDERED });
    assert.equal(r.count, 1);
    // a slot past the table, a session that does not exist
    r = await c.compound(new CompoundBuilder().sequence(c.sessionId, 1, 500).putrootfh());
    assert.deepEqual(r.next(), { op: Op.SEQUENCE, status: Status4.BADSLOT });
    r = await c.compound(new CompoundBuilder().sequence(Buffer.alloc(16, 7), 1).putrootfh());
    assert.deepEqual(r.next(), { op: Op.SEQUENCE, status: Status4.BADSESSION });
    // the next sequence id runs normally; other slots keep their own sequence
    r = await c.compound(c.seq().putrootfh());
    assert.equal(r.status, Status4.OK);
    r = await c.compound(new CompoundBuilder().sequence(c.sessionId, 1, 3).putrootfh());
    assert.equal(r.status, Status4.OK);
    assert.ok(await store.getattr('photos', name));
  });

  it('expires a lease: the session is gone and its share reservations no longer block others', async () => {
    const a = await client();
    const b = await client();
    const dirFh = await a.lookupPath('/photos');
    let r = await a.compound(a.seq().putfh(dirFh).open('readme.txt', { access: 1, deny: 3, owner: 'a' }));
    assert.equal(r.status, Status4.OK);
    r = await b.compound(b.seq().putfh(dirFh).open('readme.txt', { access: 1, owner: 'b' }));
    assert.deepEqual(statuses(r), [Status4.OK, Status4.OK, Status4.SHARE_DENIED]);
    // b keeps renewing; a goes silent past its lease (5 s, plus the server's slack)
    clock += 4_000;
    assert.equal((await b.compound(b.seq())).status, Status4.OK);
    clock += 4_000;
    assert.equal((await b.compound(b.seq())).status, Status4.OK);
    r = await b.compound(b.seq().putfh(dirFh).open('readme.txt', { access: 3, owner: 'b' }));
    assert.equal(r.status, Status4.OK, 'the expired client no longer denies');
    r = await a.compound(a.seq().putrootfh());
    assert.deepEqual(r.next(), { op: Op.SEQUENCE, status: Status4.BADSESSION });
    // CREATE_SESSION with the old client id: it is gone too
    r = await a.compound(new CompoundBuilder().op(Op.CREATE_SESSION, (w) => {
      w.uint64(a.clientid).uint32(2).uint32(0);
      for (let i = 0; i < 2; i++) w.uint32(0).uint32(65536).uint32(65536).uint32(4096).uint32(8).uint32(4).uint32(0);
      w.uint32(0).uint32(0);
    }));
    assert.deepEqual(r.next(), { op: Op.CREATE_SESSION, status: Status4.STALE_CLIENTID });
  });

  it('share reservations: deny conflicts are SHARE_DENIED, compatible opens succeed, CLOSE releases', async () => {
    const a = await client();
    const b = await client();
    const dirFh = await a.lookupPath('/photos/album');
    let r = await a.compound(a.seq().putfh(dirFh).open('one.jpg', { access: 1, deny: 2, owner: 'reader' }));
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTFH);
    assert.equal(r.next(Op.OPEN).status, Status4.OK);
    const sidA = r.openResult();
    const tryOpen = async (access: number, deny: number) => {
      const x = await b.compound(b.seq().putfh(dirFh).open('one.jpg', { access, deny, owner: `w${access}${deny}` }));
      return x.status;
    };
    assert.equal(await tryOpen(2, 0), Status4.SHARE_DENIED, 'write access against deny-write');
    assert.equal(await tryOpen(1, 1), Status4.SHARE_DENIED, 'deny-read against read access');
    assert.equal(await tryOpen(1, 0), Status4.OK, 'read, deny none');
    // the same owner may upgrade its own open without conflicting with itself
    r = await a.compound(a.seq().putfh(dirFh).open('one.jpg', { access: 3, deny: 2, owner: 'reader' }));
    assert.equal(r.status, Status4.OK);
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTFH);
    r.next(Op.OPEN);
    const upgraded = r.openResult();
    assert.ok(upgraded.other.equals(sidA.other));
    assert.equal(upgraded.seqid, sidA.seqid + 1);
    const fileFh = await a.lookupPath('/photos/album/one.jpg');
    r = await a.compound(a.seq().putfh(fileFh).close(upgraded));
    assert.equal(r.status, Status4.OK);
    assert.equal(await tryOpen(2, 0), Status4.OK, 'after CLOSE the deny is gone');
  });

  it('checks stateids: OLD_STATEID, BAD_STATEID, OPENMODE, other files, TEST_STATEID, anonymous I/O', async () => {
    const c = await client();
    const dirFh = await c.lookupPath('/photos');
    const fileFh = await c.lookupPath('/photos/readme.txt');
    const otherFh = await c.lookupPath('/photos/album/one.jpg');
    const open = async (access: number) => {
      const r = await c.compound(c.seq().putfh(dirFh).open('readme.txt', { access, owner: 'sid-test' }));
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      assert.equal(r.next(Op.OPEN).status, Status4.OK);
      return r.openResult();
    };
    const readStatus = async (fh: Buffer, sid: Stateid) => (await c.compound(c.seq().putfh(fh).read(sid, 0, 100))).status;
    const writeStatus = async (fh: Buffer, sid: Stateid) => (await c.compound(c.seq().putfh(fh).write(sid, 100, Buffer.from('x')))).status;
    const s1 = await open(1);
    assert.equal(await readStatus(fileFh, s1), Status4.OK);
    assert.equal(await writeStatus(fileFh, s1), Status4.OPENMODE, 'write with a read-only open');
    assert.equal(await readStatus(fileFh, { ...s1, seqid: s1.seqid + 5 }), Status4.BAD_STATEID, 'seqid from the future');
    assert.equal(await readStatus(otherFh, s1), Status4.BAD_STATEID, 'stateid of another file');
    const forged = Buffer.from(s1.other);
    forged[11] ^= 0x55;
    assert.equal(await readStatus(fileFh, { seqid: 1, other: forged }), Status4.BAD_STATEID);
    const s2 = await open(1); // the same owner again: seqid moves on
    assert.equal(s2.seqid, s1.seqid + 1);
    assert.equal(await readStatus(fileFh, s1), Status4.OLD_STATEID);
    assert.equal(await readStatus(fileFh, { ...s2, seqid: 0 }), Status4.OK, 'seqid 0 is "current" in 4.1');
    let r = await c.compound(c.seq().op(Op.TEST_STATEID, (w) => w.uint32(3).uint32(s2.seqid).fixedOpaque(s2.other).uint32(s1.seqid).fixedOpaque(s1.other).uint32(1).fixedOpaque(forged)));
    r.next(Op.SEQUENCE);
    r.skipSequence();
    assert.equal(r.next(Op.TEST_STATEID).status, Status4.OK);
    assert.deepEqual(r.r.array((x) => x.uint32()), [Status4.OK, Status4.OLD_STATEID, Status4.BAD_STATEID]);
    // the anonymous stateid reads (no deny reservation in the way)
    r = await c.compound(c.seq().putfh(fileFh).read(ANON, 0, 100));
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTFH);
    assert.equal(r.next(Op.READ).status, Status4.OK);
    assert.equal(r.r.bool(), true);
    assert.equal(Buffer.from(r.r.opaque()).toString(), 'capsule over nfs\n');
    // after CLOSE the stateid is gone
    r = await c.compound(c.seq().putfh(fileFh).close(s2));
    assert.equal(r.status, Status4.OK);
    assert.equal(await readStatus(fileFh, s2), Status4.BAD_STATEID);
  });

  it('crosses into an export nested in another one\'s tree, and back up with LOOKUPP', async () => {
    await store.create({ name: 'inner' });
    await store.put('inner', 'inside.txt', chunks(Buffer.from('inner capsule\n')));
    await nfs.addExport({ ref: 'inner', path: '/photos/empty' });
    try {
      const c = await client();
      const fsidOf = async (fh: Buffer) => {
        const r = await c.compound(c.seq().putfh(fh).getattr(bitmapOf([Attr.FSID])));
        r.next(Op.SEQUENCE);
        r.skipSequence();
        r.next(Op.PUTFH);
        r.next(Op.GETATTR);
        const v = r.fattr().vals;
        return `${v.uint64n()}.${v.uint64n()}`;
      };
      const outer = await c.lookupPath('/photos');
      const inner = await c.lookupPath('/photos/empty');
      assert.notEqual(await fsidOf(inner), await fsidOf(outer), 'the nested export is a file system of its own');
      const file = await c.lookupPath('/photos/empty/inside.txt');
      let r = await c.compound(c.seq().putfh(file).read(ANON, 0, 100));
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      r.next(Op.READ);
      r.r.bool();
      assert.equal(Buffer.from(r.r.opaque()).toString(), 'inner capsule\n');
      r = await c.compound(c.seq().putfh(inner).op(Op.LOOKUPP).getfh());
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      r.next(Op.LOOKUPP);
      r.next(Op.GETFH);
      assert.ok(r.fh().equals(outer), 'LOOKUPP from the nested root is the enclosing export\'s directory');
      r = await c.compound(c.seq().putfh(outer).op(Op.LOOKUPP).getfh());
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      r.next(Op.LOOKUPP);
      r.next(Op.GETFH);
      const root = await c.compound(c.seq().putrootfh().getfh());
      root.next(Op.SEQUENCE);
      root.skipSequence();
      root.next(Op.PUTROOTFH);
      root.next(Op.GETFH);
      assert.ok(r.fh().equals(root.fh()), 'LOOKUPP from an export root is the pseudo directory above it');
    } finally {
      await nfs.removeExport('/photos/empty');
    }
  });

  it('OPEN create modes: GUARDED, EXCLUSIVE4_1 retried with its verifier, UNCHECKED truncates with size 0', async () => {
    const c = await client();
    const dirFh = await c.lookupPath('/photos');
    const name = `excl-${crypto.randomUUID()}`;
    const exclusive = (verf: Buffer) => c.compound(c.seq().putfh(dirFh).op(Op.OPEN, (w) => {
      w.uint32(0).uint32(3).uint32(0).uint64(0).opaque(Buffer.from('excl-owner'));
      w.uint32(1).uint32(3).fixedOpaque(verf); // OPEN4_CREATE, EXCLUSIVE4_1
      w.uint32(2).uint32(0).uint32(1 << (Attr.MODE - 32)).uint32(4).uint32(0o600); // fattr4: mode 0600
      w.uint32(0).string(name);
    }).getattr(bitmapOf([Attr.MODE])));
    const v1 = Buffer.from('verifier');
    let r = await exclusive(v1);
    assert.equal(r.status, Status4.OK);
    assert.equal((await store.getattr('photos', name)).mode, 0o600);
    r = await exclusive(v1);
    assert.equal(r.status, Status4.OK, 'a retry with the same verifier finds its own file');
    r = await exclusive(Buffer.from('another!'));
    assert.equal(r.status, Status4.EXIST);
    // times are not settable in the same EXCLUSIVE4_1 create (they hold the verifier)
    r = await c.compound(c.seq().putfh(dirFh).op(Op.OPEN, (w) => {
      w.uint32(0).uint32(3).uint32(0).uint64(0).opaque(Buffer.from('excl-owner'));
      w.uint32(1).uint32(3).fixedOpaque(v1);
      w.uint32(2).uint32(0).uint32(1 << (Attr.TIME_MODIFY_SET - 32)).uint32(4).uint32(0); // server time
      w.uint32(0).string(`${name}-2`);
    }));
    assert.equal(r.status, Status4.INVAL);
    r = await c.compound(c.seq().putfh(dirFh).open(name, { create: true, guarded: true }));
    assert.equal(r.status, Status4.EXIST);
    await store.write('photos', name, 0, Buffer.from('some content'));
    r = await c.compound(c.seq().putfh(dirFh).op(Op.OPEN, (w) => {
      w.uint32(0).uint32(3).uint32(0).uint64(0).opaque(Buffer.from('trunc-owner'));
      w.uint32(1).uint32(0).uint32(1).uint32(1 << Attr.SIZE).uint32(8).uint64(0); // UNCHECKED4, size 0
      w.uint32(0).string(name);
    }));
    assert.equal(r.status, Status4.OK);
    assert.equal((await store.getattr('photos', name)).size, 0);
    r = await c.compound(c.seq().putfh(dirFh).open('album', {}));
    assert.equal(r.status, Status4.ISDIR);
    r = await c.compound(c.seq().putfh(dirFh).open('no-such-file', {}));
    assert.equal(r.status, Status4.NOENT);
  });

  it('byte-range locks: LOCK/LOCKT/LOCKU, DENIED describes the holder, CLOSE under locks is LOCKS_HELD', async () => {
    const a = await client();
    const b = await client();
    const dirFh = await a.lookupPath('/photos');
    const fileFh = await a.lookupPath('/photos/readme.txt');
    const openSid = async (c: Nfs4TestClient, owner: string) => {
      const r = await c.compound(c.seq().putfh(dirFh).open('readme.txt', { access: 3, owner }));
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      assert.equal(r.next(Op.OPEN).status, Status4.OK);
      return r.openResult();
    };
    const lockNew = (c: Nfs4TestClient, open: Stateid, owner: string, type: number, offset: bigint, length: bigint) =>
      c.compound(c.seq().putfh(fileFh).op(Op.LOCK, (w) => {
        w.uint32(type).bool(false).uint64(offset).uint64(length).bool(true);
        w.uint32(0).uint32(open.seqid).fixedOpaque(open.other).uint32(0).uint64(c.clientid).opaque(Buffer.from(owner));
      }));
    const oa = await openSid(a, 'oa');
    const ob = await openSid(b, 'ob');
    let r = await lockNew(a, oa, 'la', 2, 0n, 100n);
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTFH);
    assert.equal(r.next(Op.LOCK).status, Status4.OK);
    const la = r.stateid();
    assert.equal(la.seqid, 1);
    // another client's overlapping write lock: DENIED with the holder's range, type and owner
    r = await lockNew(b, ob, 'lb', 2, 50n, 10n);
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTFH);
    assert.equal(r.next(Op.LOCK).status, Status4.DENIED);
    assert.equal(r.r.uint64n(), 0n);
    assert.equal(r.r.uint64n(), 100n);
    assert.equal(r.r.uint32(), 2);
    assert.equal(r.r.uint64n(), a.clientid);
    assert.equal(Buffer.from(r.r.opaque()).toString(), 'la');
    // beside it is fine; LOCKT reports the conflict without taking anything
    assert.equal((await lockNew(b, ob, 'lb', 1, 100n, 10n)).status, Status4.OK);
    const lockt = (offset: bigint) => b.compound(b.seq().putfh(fileFh).op(Op.LOCKT, (w) => w.uint32(1).uint64(offset).uint64(1n).uint64(b.clientid).opaque(Buffer.from('lt'))));
    assert.equal((await lockt(99n)).status, Status4.DENIED);
    assert.equal((await lockt(200n)).status, Status4.OK);
    // I/O with the lock stateid is allowed; CLOSE while holding a lock is LOCKS_HELD
    assert.equal((await a.compound(a.seq().putfh(fileFh).read(la, 0, 10))).status, Status4.OK);
    assert.equal((await a.compound(a.seq().putfh(fileFh).close(oa))).status, Status4.LOCKS_HELD);
    assert.equal((await a.compound(a.seq().op(Op.FREE_STATEID, (w) => w.uint32(la.seqid).fixedOpaque(la.other)))).status, Status4.LOCKS_HELD);
    // LOCKU of the middle splits the range: 50..60 is free for b now, 0..50 is not
    r = await a.compound(a.seq().putfh(fileFh).op(Op.LOCKU, (w) => w.uint32(2).uint32(0).uint32(la.seqid).fixedOpaque(la.other).uint64(50n).uint64(10n)));
    assert.equal(r.status, Status4.OK);
    assert.equal((await lockt(55n)).status, Status4.OK);
    assert.equal((await lockt(10n)).status, Status4.DENIED);
    r = await a.compound(a.seq().putfh(fileFh).op(Op.LOCKU, (w) => w.uint32(2).uint32(0).uint32(0).fixedOpaque(la.other).uint64(0n).uint64(0xffffffffffffffffn)));
    assert.equal(r.status, Status4.OK);
    assert.equal((await lockt(10n)).status, Status4.OK);
    assert.equal((await a.compound(a.seq().op(Op.FREE_STATEID, (w) => w.uint32(0).fixedOpaque(la.other)))).status, Status4.OK);
    assert.equal((await a.compound(a.seq().putfh(fileFh).close(oa))).status, Status4.OK);
    // zero-length and overflowing ranges are INVAL
    assert.equal((await lockNew(b, ob, 'lb2', 2, 0n, 0n)).status, Status4.INVAL);
    assert.equal((await lockNew(b, ob, 'lb2', 2, 0xfffffffffffffff0n, 0x100n)).status, Status4.INVAL);
  });

  it('serves the pseudo root per client (allow lists), read-only exports refuse writes with ROFS', async () => {
    const c = await client();
    let r = await c.compound(c.seq().putrootfh().op(Op.READDIR, (w) => w.uint64(0).fixedOpaque(Buffer.alloc(8)).uint32(4096).uint32(8192).uint32(2).uint32((1 << Attr.TYPE) | (1 << Attr.FILEID)).uint32(0)));
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTROOTFH);
    assert.equal(r.next(Op.READDIR).status, Status4.OK);
    r.r.fixedOpaque(8);
    const names: string[] = [];
    while (r.r.bool()) {
      r.r.uint64();
      names.push(r.r.string());
      r.fattr();
    }
    assert.equal(r.r.bool(), true, 'eof');
    assert.deepEqual(names, ['archive', 'photos'], 'the /lan-only export is not shown to 127.0.0.1');
    r = await c.compound(c.seq().putrootfh().lookup('lan-only'));
    assert.equal(r.status, Status4.ACCESS);
    r = await c.compound(c.seq().putrootfh().lookup('nope'));
    assert.equal(r.status, Status4.NOENT);
    const ro = await c.lookupPath('/archive/photos-ro');
    r = await c.compound(c.seq().putfh(ro).open('new.txt', { create: true }));
    assert.equal(r.status, Status4.ROFS);
    const roFile = await c.lookupPath('/archive/photos-ro/readme.txt');
    r = await c.compound(c.seq().putfh(roFile).write(ANON, 0, Buffer.from('x')));
    assert.equal(r.status, Status4.ROFS);
    r = await c.compound(c.seq().putfh(ro).op(Op.REMOVE, (w) => w.string('readme.txt')));
    assert.equal(r.status, Status4.ROFS);
    // GETATTR through the read-only export reads the same file
    r = await c.compound(c.seq().putfh(roFile).getattr(bitmapOf([Attr.SIZE])));
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTFH);
    r.next(Op.GETATTR);
    assert.equal(r.fattr().vals.uint64(), 17);
  });

  it('READDIR pages through a large directory with cookies (no entry lost or repeated), TOOSMALL, NOT_SAME', async () => {
    const c = await client();
    const names = Array.from({ length: 120 }, (_, i) => `entry-${String(i).padStart(3, '0')}-${'x'.repeat(i % 40)}`);
    await store.mkdir('photos', 'many');
    for (const n of names) await store.createFile('photos', `many/${n}`);
    const fh = await c.lookupPath('/photos/many');
    const page = async (cookie: bigint, verf: Buffer, maxcount: number) => {
      const r = await c.compound(c.seq().putfh(fh).op(Op.READDIR, (w) => w.uint64(cookie).fixedOpaque(verf).uint32(maxcount).uint32(maxcount).uint32(2).uint32((1 << Attr.TYPE) | (1 << Attr.FILEID)).uint32(1 << (Attr.MOUNTED_ON_FILEID - 32))));
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      const st = r.next(Op.READDIR).status;
      if (st !== Status4.OK) return { status: st, entries: [] as { name: string; cookie: bigint }[], eof: false, verf };
      const v = Buffer.from(r.r.fixedOpaque(8));
      const entries: { name: string; cookie: bigint }[] = [];
      while (r.r.bool()) {
        const ck = r.r.uint64n();
        entries.push({ name: r.r.string(), cookie: ck });
        r.fattr();
      }
      return { status: st, entries, eof: r.r.bool(), verf: v };
    };
    const seen: string[] = [];
    let cookie = 0n;
    let verf: Buffer = Buffer.alloc(8);
    let calls = 0;
    for (;;) {
      const p = await page(cookie, verf, 1500);
      assert.equal(p.status, Status4.OK);
      calls++;
      seen.push(...p.entries.map((e) => e.name));
      if (p.eof) break;
      assert.ok(p.entries.length > 0);
      cookie = p.entries[p.entries.length - 1]!.cookie;
      verf = p.verf;
      // a file created mid-listing shows up at the end (new inodes sort last), nothing shifts
      if (calls === 2) {
        await store.createFile('photos', 'many/late-arrival');
        names.push('late-arrival');
      }
    }
    assert.ok(calls > 3, `paged in ${calls} calls`);
    assert.deepEqual([...seen].sort(), [...names].sort());
    assert.equal((await page(0n, Buffer.alloc(8), 40)).status, Status4.TOOSMALL);
    assert.equal((await page(cookie, Buffer.from('garbage!'), 4000)).status, Status4.NOT_SAME);
    assert.equal((await page(1n, Buffer.alloc(8), 4000)).status, Status4.BAD_COOKIE);
  });

  it('4.2 SEEK finds data and holes; ALLOCATE extends; DEALLOCATE punches', async () => {
    const c = await client(2);
    const MiB = 1 << 20;
    await store.write('photos', 'sparse.bin', 0, prand(MiB, 5)).catch(async () => {
      await store.createFile('photos', 'sparse.bin');
      await store.write('photos', 'sparse.bin', 0, prand(MiB, 5));
    });
    await store.truncate('photos', 'sparse.bin', 6 * MiB);
    await store.write('photos', 'sparse.bin', 4 * MiB, prand(MiB, 6));
    const fh = await c.lookupPath('/photos/sparse.bin');
    const seek = async (offset: number, what: number) => {
      const r = await c.compound(c.seq().putfh(fh).op(Op.SEEK, (w) => w.uint32(0).fixedOpaque(Buffer.alloc(12)).uint64(offset).uint32(what)));
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      const s = r.next(Op.SEEK).status;
      if (s !== Status4.OK) return { status: s };
      return { status: s, eof: r.r.bool(), offset: r.r.uint64() };
    };
    assert.deepEqual(await seek(0, 0), { status: 0, eof: false, offset: 0 });
    assert.deepEqual(await seek(0, 1), { status: 0, eof: false, offset: MiB });
    assert.deepEqual(await seek(MiB + 5, 0), { status: 0, eof: false, offset: 4 * MiB });
    assert.deepEqual(await seek(4 * MiB, 1), { status: 0, eof: false, offset: 5 * MiB });
    assert.deepEqual(await seek(5 * MiB, 0), { status: Status4.NXIO });
    assert.deepEqual(await seek(7 * MiB, 1), { status: Status4.NXIO });
    // DEALLOCATE the first MiB: it becomes a hole that reads as zeros
    let r = await c.compound(c.seq().putfh(fh).op(Op.DEALLOCATE, (w) => w.uint32(0).fixedOpaque(Buffer.alloc(12)).uint64(0).uint64(MiB)));
    assert.equal(r.status, Status4.OK);
    assert.ok((await store.read('photos', 'sparse.bin', 0, MiB)).equals(Buffer.alloc(MiB)));
    assert.deepEqual(await seek(0, 0), { status: 0, eof: false, offset: 4 * MiB });
    // ALLOCATE past the end grows the file
    r = await c.compound(c.seq().putfh(fh).op(Op.ALLOCATE, (w) => w.uint32(0).fixedOpaque(Buffer.alloc(12)).uint64(6 * MiB).uint64(MiB)));
    assert.equal(r.status, Status4.OK);
    assert.equal((await store.getattr('photos', 'sparse.bin')).size, 7 * MiB);
    // 4.2 operations are OP_ILLEGAL in 4.1
    const c41 = await client(1);
    r = await c41.compound(c41.seq().putfh(fh).op(Op.SEEK, (w) => w.uint32(0).fixedOpaque(Buffer.alloc(12)).uint64(0).uint32(0)));
    assert.equal(r.status, Status4.OP_ILLEGAL);
  });

  it('reads and writes whole files; handles stay valid across a server restart', async () => {
    const c = await client();
    const fh = await c.lookupPath('/photos/album/one.jpg');
    const parts: Buffer[] = [];
    for (let off = 0; ;) {
      const r = await c.compound(c.seq().putfh(fh).read(ANON, off, 64 << 10));
      r.next(Op.SEQUENCE);
      r.skipSequence();
      r.next(Op.PUTFH);
      assert.equal(r.next(Op.READ).status, Status4.OK);
      const eof = r.r.bool();
      const data = Buffer.from(r.r.opaque());
      parts.push(data);
      off += data.length;
      if (eof) break;
    }
    assert.equal(sha256(Buffer.concat(parts)), sha256(payload));
    await nfs.close();
    await start();
    const c2 = await client();
    const r = await c2.compound(c2.seq().putfh(fh).getattr(bitmapOf([Attr.SIZE, Attr.FILEID])));
    assert.equal(r.status, Status4.OK, 'the old handle works on the new server');
    r.next(Op.SEQUENCE);
    r.skipSequence();
    r.next(Op.PUTFH);
    r.next(Op.GETATTR);
    const f = r.fattr();
    assert.equal(f.vals.uint64(), payload.length);
    assert.equal(f.vals.uint64(), (await store.getattr('photos', 'album/one.jpg')).ino);
  });

  it('gives a WRITE\'s record back once the store is done with it, unless another operation could keep a view of it', async () => {
    const SEG = 1 << 20; // the capsule's segment: whole aligned segments are adopted, not copied
    await store.createFile('photos', 'records.bin');
    const c = await client();
    const fh = await c.lookupPath('/photos/records.bin');
    const given: (ArrayBuffer | SharedArrayBuffer)[] = [];
    const records = nfs.rpc.records;
    const give = records.give.bind(records);
    records.give = (ab) => {
      given.push(ab);
      give(ab);
    };
    const expected = Buffer.alloc(6 * SEG);
    const ok = (r: CompoundReply) => assert.equal(r.status, Status4.OK);
    const write = (b: CompoundBuilder, seg: number, seed: number, from = 0, to = SEG) => {
      const data = prand(to - from, seed);
      data.copy(expected, seg * SEG + from);
      return b.write(ANON, seg * SEG + from, data, 0); // UNSTABLE: the data waits in the store
    };
    const commit = async () => ok(await c.compound(c.seq().putfh(fh).op(Op.COMMIT, (w) => w.uint64(0).uint32(0))));
    try {
      // The Linux client's WRITE: SEQUENCE, PUTFH, WRITE, GETATTR.
      for (let seg = 0; seg < 2; seg++) ok(await c.compound(write(c.seq().putfh(fh), seg, 100 + seg).getattr(bitmapOf([Attr.SIZE]))));
      assert.equal(given.length, 0, 'the store still holds the data: nothing given back');
      await commit();
      assert.equal(given.length, 2, 'committed: both records are given back');
      // Two WRITEs in one compound share a record (half segments each: a record holds at most
      // one); an operation off the list might keep a view.
      ok(await c.compound(write(write(c.seq().putfh(fh), 2, 102, 0, SEG / 2), 2, 103, SEG / 2)));
      ok(await c.compound(write(c.seq().putfh(fh), 3, 106)));
      await commit();
      assert.equal(given.length, 3, 'only the single WRITE\'s record');
      const r = await c.compound(write(c.seq().putfh(fh), 4, 104).op(Op.LOOKUPP));
      assert.equal(r.status, Status4.NOTDIR, 'LOOKUPP ran (and failed) after the WRITE');
      await commit();
      assert.equal(given.length, 3, 'nor the one with LOOKUPP after its WRITE');
      // Records going round again must not touch data the store took from earlier ones.
      ok(await c.compound(write(c.seq().putfh(fh), 5, 105)));
      await commit();
      assert.equal(given.length, 4);
      assert.equal(sha256(await store.read('photos', 'records.bin', 0, 6 * SEG)), sha256(expected));
    } finally {
      records.give = give;
      await store.unlink('photos', 'records.bin');
    }
  });

  it('survives fuzzed COMPOUNDs (mutated valid requests and random bytes)', async () => {
    const c = await client();
    const dirFh = await c.lookupPath('/photos');
    const seeds: Buffer[] = [
      new CompoundBuilder().putrootfh().lookup('photos').getfh().getattr(bitmapOf([Attr.TYPE, Attr.SIZE, Attr.CHANGE])).w.toBuffer(),
      new CompoundBuilder().putfh(dirFh).open('fuzz.txt', { create: true }).write(ANON, 0, Buffer.from('abc')).w.toBuffer(),
      new CompoundBuilder().putfh(dirFh).op(Op.READDIR, (w) => w.uint64(0).fixedOpaque(Buffer.alloc(8)).uint32(1000).uint32(4000).uint32(1).uint32(0xffffffff)).w.toBuffer(),
      new CompoundBuilder().putfh(dirFh).op(Op.CREATE, (w) => w.uint32(2).string('fz').uint32(1).uint32(0).uint32(0)).w.toBuffer(),
      new CompoundBuilder().putfh(dirFh).open('readme.txt').op(Op.LOCK, (w) => {
        w.uint32(2).bool(false).uint64(0).uint64(10).bool(true).uint32(0).uint32(1).fixedOpaque(Buffer.alloc(12)).uint32(0).uint64(0).opaque(Buffer.from('lo'));
      }).op(Op.SEEK, (w) => w.uint32(0).fixedOpaque(Buffer.alloc(12)).uint64(0).uint32(1)).w.toBuffer(),
    ];
    let rnd = 12345;
    const next = () => (rnd = (rnd * 1103515245 + 12345) >>> 0);
    const fuzz = await client(1, false);
    for (let i = 0; i < 1000; i++) {
      const seed = seeds[i % seeds.length]!;
      let body: Buffer;
      if (i % 10 === 9) body = crypto.randomBytes(next() % 300);
      else {
        body = Buffer.from(seed);
        const flips = 1 + (next() % 4);
        for (let k = 0; k < flips; k++) body[next() % body.length] = next() & 0xff;
        if (next() % 5 === 0) body = body.subarray(0, next() % body.length);
      }
      const minor = next() % 4;
      const numOps = next() % 3 === 0 ? next() : 2 + (next() % 6);
      // 4.1 requests go through a session sometimes, so the ops behind SEQUENCE get fuzzed too
      const prefix = minor >= 1 && i % 2 === 0 ? new CompoundBuilder().sequence(c.sessionId, ++c.seqid).w.toBuffer() : Buffer.alloc(0);
      const w = new XdrWriter();
      w.string('fuzz').uint32(minor).uint32(numOps).raw(Buffer.concat([prefix, body, Buffer.alloc((4 - ((prefix.length + body.length) & 3)) & 3)]));
      const target = prefix.length ? c : fuzz;
      try {
        await target.send(w.toBuffer());
      } catch (e) {
        assert.equal((e as { acceptStat?: number }).acceptStat, AcceptStat.GARBAGE_ARGS, String(e));
      }
    }
    assert.equal(nfs.rpc.stats.systemErrors, 0);
    assert.deepEqual(unexpected, [], 'no operation failed with an unexpected error');
    const after = await client();
    const r = await after.compound(after.seq().putrootfh().lookup('photos').getfh());
    assert.equal(r.status, Status4.OK);
  });
});
