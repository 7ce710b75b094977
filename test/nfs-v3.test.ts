/**
 * NFSv3 and MOUNT v3 procedure by procedure, through a bare RPC client: argument and result
 * layouts, status mapping, CREATE modes, stable writes and the write verifier, READDIR cookies
 * while the directory changes, read-only exports, and handle staleness.
 */
import assert from 'node:assert/strict';
import { Store } from '../capsule/store.js';
import type { SegmentPool } from '../capsule/segment-pool.js';
import { assertSlotsGivenBack, openPooledStore } from './helpers/pool.js';
import { validatePolicy } from '../capsule/policy.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { RpcClient } from '../gateway/nfs/rpc-client.js';
import { Access3, CreateMode, NFS_PROGRAM, NFS_V3, Proc3, StableHow } from '../gateway/nfs/nfs3.js';
import { MOUNT_PROGRAM, MOUNT_V3, MountProc, MountStat } from '../gateway/nfs/mount3.js';
import { Nfs3Status as S } from '../gateway/nfs/status.js';
import { AcceptStat } from '../gateway/nfs/rpc.js';
import { XdrReader, XdrWriter } from '../gateway/nfs/xdr.js';
import { tmpDir, rmrf, prand, chunks, sha256 } from './helpers/tmp.js';

interface Fattr {
  type: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  used: number;
  fsid: bigint;
  fileid: number;
  mtime: [number, number];
  ctime: [number, number];
  atime: [number, number];
}

function fattr(r: XdrReader): Fattr {
  const type = r.uint32();
  const mode = r.uint32();
  const nlink = r.uint32();
  const uid = r.uint32();
  const gid = r.uint32();
  const size = r.uint64();
  const used = r.uint64();
  r.uint64(); // rdev
  const fsid = r.uint64n();
  const fileid = r.uint64();
  const atime: [number, number] = [r.uint32(), r.uint32()];
  const mtime: [number, number] = [r.uint32(), r.uint32()];
  const ctime: [number, number] = [r.uint32(), r.uint32()];
  return { type, mode, nlink, uid, gid, size, used, fsid, fileid, atime, mtime, ctime };
}
const postOp = (r: XdrReader) => (r.bool() ? fattr(r) : undefined);
function wcc(r: XdrReader) {
  const pre = r.bool() ? { size: r.uint64(), mtime: [r.uint32(), r.uint32()], ctime: [r.uint32(), r.uint32()] } : undefined;
  return { pre, post: postOp(r) };
}

const USER = { stamp: 1, machineName: 'tester', uid: 1000, gid: 1000, gids: [1000, 27] };

class V3 {
  constructor(readonly c: RpcClient) {}

  static async connect(port: number, auth = USER): Promise<V3> {
    return new V3(await RpcClient.connect(port, '127.0.0.1', auth));
  }

  async nfs(proc: number, build: (w: XdrWriter) => void = () => {}): Promise<XdrReader> {
    const w = new XdrWriter();
    build(w);
    const r = await this.c.call(NFS_PROGRAM, NFS_V3, proc, w);
    assert.equal(r.acceptStat, AcceptStat.SUCCESS, `proc ${proc} accepted`);
    return r.body;
  }

  async mount(proc: number, build: (w: XdrWriter) => void = () => {}): Promise<XdrReader> {
    const w = new XdrWriter();
    build(w);
    const r = await this.c.call(MOUNT_PROGRAM, MOUNT_V3, proc, w);
    assert.equal(r.acceptStat, AcceptStat.SUCCESS);
    return r.body;
  }

  async mnt(p: string): Promise<Buffer> {
    const r = await this.mount(MountProc.MNT, (w) => w.string(p));
    assert.equal(r.uint32(), MountStat.OK, `MNT ${p}`);
    const fh = Buffer.from(r.opaque(64));
    assert.deepEqual(r.array((x) => x.uint32()), [1]); // AUTH_SYS
    return fh;
  }

  async lookup(dir: Buffer, name: string): Promise<{ status: number; fh?: Buffer; attr?: Fattr; dirAttr?: Fattr }> {
    const r = await this.nfs(Proc3.LOOKUP, (w) => w.opaque(dir).string(name));
    const status = r.uint32();
    if (status !== S.OK) return { status, dirAttr: postOp(r) };
    const fh = Buffer.from(r.opaque(64));
    return { status, fh, attr: postOp(r), dirAttr: postOp(r) };
  }

  async getattr(fh: Buffer): Promise<{ status: number; attr?: Fattr }> {
    const r = await this.nfs(Proc3.GETATTR, (w) => w.opaque(fh));
    const status = r.uint32();
    return status === S.OK ? { status, attr: fattr(r) } : { status };
  }

  async create(dir: Buffer, name: string, how: number, opts: { mode?: number; size?: number; verf?: Buffer } = {}): Promise<{ status: number; fh?: Buffer; attr?: Fattr }> {
    const r = await this.nfs(Proc3.CREATE, (w) => {
      w.opaque(dir).string(name).uint32(how);
      if (how === CreateMode.EXCLUSIVE) w.fixedOpaque(opts.verf ?? Buffer.alloc(8));
      else sattr(w, { mode: opts.mode, size: opts.size });
    });
    const status = r.uint32();
    if (status !== S.OK) return { status };
    assert.equal(r.bool(), true);
    const fh = Buffer.from(r.opaque(64));
    const attr = postOp(r);
    wcc(r);
    return { status, fh, attr };
  }

  async mkdir(dir: Buffer, name: string, mode = 0o755): Promise<{ status: number; fh?: Buffer }> {
    const r = await this.nfs(Proc3.MKDIR, (w) => sattr(w.opaque(dir).string(name), { mode }));
    const status = r.uint32();
    if (status !== S.OK) return { status };
    assert.equal(r.bool(), true);
    return { status, fh: Buffer.from(r.opaque(64)) };
  }

  async write(fh: Buffer, offset: number, data: Buffer, stable: number = StableHow.UNSTABLE) {
    const r = await this.nfs(Proc3.WRITE, (w) => w.opaque(fh).uint64(offset).uint32(data.length).uint32(stable).opaque(data));
    const status = r.uint32();
    const w = wcc(r);
    if (status !== S.OK) return { status, wcc: w };
    return { status, wcc: w, count: r.uint32(), committed: r.uint32(), verf: Buffer.from(r.fixedOpaque(8)) };
  }

  async read(fh: Buffer, offset: number, count: number) {
    const r = await this.nfs(Proc3.READ, (w) => w.opaque(fh).uint64(offset).uint32(count));
    const status = r.uint32();
    const attr = postOp(r);
    if (status !== S.OK) return { status, attr };
    const n = r.uint32();
    const eof = r.bool();
    const data = Buffer.from(r.opaque());
    assert.equal(data.length, n);
    return { status, attr, eof, data };
  }

  async simple(proc: number, build: (w: XdrWriter) => void): Promise<number> {
    return (await this.nfs(proc, build)).uint32();
  }

  close(): void {
    this.c.close();
  }
}

function sattr(w: XdrWriter, s: { mode?: number; uid?: number; size?: number; mtime?: [number, number] }): XdrWriter {
  w.bool(s.mode !== undefined);
  if (s.mode !== undefined) w.uint32(s.mode);
  w.bool(s.uid !== undefined);
  if (s.uid !== undefined) w.uint32(s.uid);
  w.bool(false); // gid
  w.bool(s.size !== undefined);
  if (s.size !== undefined) w.uint64(s.size);
  w.uint32(0); // atime: don't change
  if (s.mtime) w.uint32(2).uint32(s.mtime[0]).uint32(s.mtime[1]);
  else w.uint32(0);
  return w;
}

interface DirEnt {
  fileid: number;
  name: string;
  cookie: number;
  attr?: Fattr;
  fh?: Buffer;
}

async function readdirPage(v: V3, dir: Buffer, cookie: number, verf: Buffer, count: number, plus: boolean) {
  const r = await v.nfs(plus ? Proc3.READDIRPLUS : Proc3.READDIR, (w) => {
    w.opaque(dir).uint64(cookie).fixedOpaque(verf).uint32(count);
    if (plus) w.uint32(count * 2);
  });
  const status = r.uint32();
  const dirAttr = postOp(r);
  if (status !== S.OK) return { status, dirAttr, entries: [] as DirEnt[], eof: false, verf };
  const newVerf = Buffer.from(r.fixedOpaque(8));
  const entries: DirEnt[] = [];
  while (r.bool()) {
    const e: DirEnt = { fileid: r.uint64(), name: r.string(), cookie: r.uint64() };
    if (plus) {
      e.attr = postOp(r);
      if (r.bool()) e.fh = Buffer.from(r.opaque(64));
    }
    entries.push(e);
  }
  return { status, dirAttr, entries, eof: r.bool(), verf: newVerf };
}

describe('nfs v3 procedures', function () {
  this.timeout(60_000);
  let dir: string;
  let store: Store;
  let nfs: NfsServer;
  let port: number;
  let mountPort: number;
  let v: V3;
  let root: Buffer;

  beforeEach(async () => {
    dir = tmpDir('space-nfs3-');
    store = Store.open(dir);
    await store.create({ name: 'cap' });
    await store.put('cap', 'docs/a.txt', chunks(Buffer.from('alpha')));
    await store.put('cap', 'big.bin', chunks(prand(3 << 20, 5)));
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0 });
    ({ port, mountPort } = nfs.address());
    await nfs.addExport({ ref: 'cap' });
    await nfs.addExport({ ref: 'cap', path: '/ro/cap', readOnly: true });
    v = await V3.connect(port);
    root = await v.mnt('/cap');
  });

  afterEach(async () => {
    v?.close();
    await nfs.close();
    await store.close();
    rmrf(dir);
  });

  describe('MOUNT', () => {
    it('mounts exports and directories below them, on either port', async () => {
      const m = await V3.connect(mountPort);
      const fh = await m.mnt('/cap');
      assert.deepEqual(fh, root, 'same handle from the MOUNT port and the NFS port');
      const docs = await m.mnt('/cap/docs');
      const l = await m.lookup(docs, 'a.txt');
      assert.equal(l.status, S.OK);
      const r = await m.mount(MountProc.MNT, (w) => w.string('/nope'));
      assert.equal(r.uint32(), MountStat.NOENT);
      const r2 = await m.mount(MountProc.MNT, (w) => w.string('/cap/docs/a.txt'));
      assert.equal(r2.uint32(), MountStat.NOTDIR);
      const r3 = await m.mount(MountProc.MNT, (w) => w.string('/cap/missing'));
      assert.equal(r3.uint32(), MountStat.NOENT);
      m.close();
    });

    it('lists exports and mounts (EXPORT, DUMP, UMNT, UMNTALL)', async () => {
      await nfs.addExport({ ref: 'cap', path: '/secret', allowedClients: ['10.1.2.3'] });
      await nfs.addExport({ ref: 'cap', path: '/shared', allowedClients: ['127.0.0.1/32', '10.0.0.0/8'] });
      const ex = await v.mount(MountProc.EXPORT);
      const exports: { dir: string; groups: string[] }[] = [];
      while (ex.bool()) {
        const d = ex.string();
        const groups: string[] = [];
        while (ex.bool()) groups.push(ex.string());
        exports.push({ dir: d, groups });
      }
      assert.deepEqual(exports, [
        { dir: '/cap', groups: [] },
        { dir: '/ro/cap', groups: [] },
        { dir: '/shared', groups: ['127.0.0.1/32', '10.0.0.0/8'] },
      ], 'exports this client may not mount are not listed');
      const denied = await v.mount(MountProc.MNT, (w) => w.string('/secret'));
      assert.equal(denied.uint32(), MountStat.ACCES);
      const dump = async () => {
        const r = await v.mount(MountProc.DUMP);
        const out: string[] = [];
        while (r.bool()) out.push(`${r.string()} ${r.string()}`);
        return out;
      };
      assert.deepEqual(await dump(), ['127.0.0.1 /cap']);
      await v.mount(MountProc.UMNT, (w) => w.string('/cap'));
      assert.deepEqual(await dump(), []);
      await v.mnt('/cap');
      await v.mnt('/ro/cap');
      await v.mount(MountProc.UMNTALL);
      assert.deepEqual(await dump(), []);
    });
  });

  it('GETATTR and LOOKUP (., .., missing, too long, in a file)', async () => {
    const ga = await v.getattr(root);
    assert.equal(ga.status, S.OK);
    assert.equal(ga.attr!.type, 2);
    assert.equal(ga.attr!.fileid, 1);
    const docs = await v.lookup(root, 'docs');
    assert.equal(docs.status, S.OK);
    assert.equal(docs.attr!.type, 2);
    const a = await v.lookup(docs.fh!, 'a.txt');
    assert.equal(a.attr!.size, 5);
    assert.equal(a.attr!.type, 1);
    assert.equal((await v.lookup(docs.fh!, '.')).attr!.fileid, docs.attr!.fileid);
    assert.equal((await v.lookup(docs.fh!, '..')).attr!.fileid, 1);
    assert.equal((await v.lookup(root, '..')).attr!.fileid, 1, '.. of the root stays at the root');
    const missing = await v.lookup(root, 'missing');
    assert.equal(missing.status, S.NOENT);
    assert.equal(missing.dirAttr!.fileid, 1, 'resfail carries the directory attributes');
    assert.equal((await v.lookup(root, 'x'.repeat(256))).status, S.NAMETOOLONG);
    assert.equal((await v.lookup(a.fh!, 'x')).status, S.NOTDIR);
  });

  it('CREATE: UNCHECKED, GUARDED, EXCLUSIVE (with retransmission) and ownership', async () => {
    const u = await v.create(root, 'u.txt', CreateMode.UNCHECKED, { mode: 0o640 });
    assert.equal(u.status, S.OK);
    assert.equal(u.attr!.mode, 0o640);
    assert.equal(u.attr!.uid, USER.uid, 'new files belong to the AUTH_SYS caller');
    assert.equal(u.attr!.gid, USER.gid);
    await v.write(u.fh!, 0, Buffer.from('content'), StableHow.FILE_SYNC);
    // UNCHECKED on an existing file with size 0 truncates it, like O_CREAT|O_TRUNC
    const again = await v.create(root, 'u.txt', CreateMode.UNCHECKED, { size: 0 });
    assert.equal(again.status, S.OK);
    assert.equal(again.attr!.fileid, u.attr!.fileid);
    assert.equal(again.attr!.size, 0);
    assert.equal((await v.create(root, 'u.txt', CreateMode.GUARDED, { mode: 0o644 })).status, S.EXIST);
    assert.equal((await v.create(root, 'docs', CreateMode.UNCHECKED)).status, S.EXIST);
    const verf = Buffer.from('0123abcd');
    const x1 = await v.create(root, 'x.txt', CreateMode.EXCLUSIVE, { verf });
    assert.equal(x1.status, S.OK);
    const x2 = await v.create(root, 'x.txt', CreateMode.EXCLUSIVE, { verf });
    assert.equal(x2.status, S.OK, 'a retransmitted EXCLUSIVE create succeeds');
    assert.equal(x2.attr!.fileid, x1.attr!.fileid);
    assert.equal((await v.create(root, 'x.txt', CreateMode.EXCLUSIVE, { verf: Buffer.from('otherone') })).status, S.EXIST);
    assert.equal((await v.create(root, 'bad/name', CreateMode.UNCHECKED)).status, S.INVAL);
    const st = await store.getattr('cap', 'x.txt');
    assert.equal(st.type, 'file');
  });

  it('WRITE (unstable, file_sync), COMMIT with a stable verifier, READ with eof', async () => {
    const f = await v.create(root, 'w.bin', CreateMode.GUARDED, { mode: 0o644 });
    const data = prand(300_000, 9);
    const w1 = await v.write(f.fh!, 0, data.subarray(0, 200_000));
    assert.equal(w1.status, S.OK);
    assert.equal(w1.count, 200_000);
    assert.equal(w1.committed, StableHow.UNSTABLE);
    assert.equal(w1.wcc.post!.size, 200_000);
    const w2 = await v.write(f.fh!, 200_000, data.subarray(200_000), StableHow.FILE_SYNC);
    assert.equal(w2.committed, StableHow.FILE_SYNC);
    assert.deepEqual(w2.verf, w1.verf);
    const c = await v.nfs(Proc3.COMMIT, (w) => w.opaque(f.fh!).uint64(0).uint32(0));
    assert.equal(c.uint32(), S.OK);
    wcc(c);
    assert.deepEqual(Buffer.from(c.fixedOpaque(8)), w1.verf!, 'COMMIT verifier matches WRITE verifier');
    assert.equal(sha256(await store.read('cap', 'w.bin', 0, data.length)), sha256(data));
    const r = await v.read(f.fh!, 250_000, 100_000);
    assert.equal(r.data!.length, 50_000);
    assert.equal(r.eof, true);
    assert.deepEqual(r.data, data.subarray(250_000));
    const mid = await v.read(f.fh!, 1000, 1000);
    assert.equal(mid.eof, false);
    assert.deepEqual(mid.data, data.subarray(1000, 2000));
    const past = await v.read(f.fh!, 10_000_000, 10);
    assert.equal(past.data!.length, 0);
    assert.equal(past.eof, true);
    // sequential reads of a large file (served from cached segments) return the right bytes
    const big = await v.lookup(root, 'big.bin');
    const want = prand(3 << 20, 5);
    const parts: Buffer[] = [];
    for (let off = 0; off < want.length; off += 128 << 10) parts.push((await v.read(big.fh!, off, 128 << 10)).data!);
    assert.equal(sha256(Buffer.concat(parts)), sha256(want));
    assert.equal((await v.write(root, 0, Buffer.from('x'))).status, S.ISDIR);
    assert.equal((await v.read(root, 0, 10)).status, S.ISDIR);
  });

  it('pipelined UNSTABLE writes in any order, then COMMIT, leave the exact bytes', async () => {
    const f = await v.create(root, 'pipe.bin', CreateMode.GUARDED, { mode: 0o644 });
    const data = prand((24 << 20) + 777, 21);
    // uneven pieces (not segment aligned), sent 8 at a time in shuffled order
    const pieces: [number, number][] = [];
    for (let off = 0, i = 0; off < data.length; i++) {
      const n = Math.min([1 << 20, 65_536 + 3, 300_001][i % 3]!, data.length - off);
      pieces.push([off, n]);
      off += n;
    }
    for (let i = pieces.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!];
    }
    let next = 0;
    const lane = async () => {
      while (next < pieces.length) {
        const [off, n] = pieces[next++]!;
        const w = await v.write(f.fh!, off, data.subarray(off, off + n));
        assert.equal(w.status, S.OK);
        assert.equal(w.count, n);
      }
    };
    await Promise.all(Array.from({ length: 8 }, lane));
    const c = await v.nfs(Proc3.COMMIT, (w) => w.opaque(f.fh!).uint64(0).uint32(0));
    assert.equal(c.uint32(), S.OK);
    assert.equal((await store.getattr('cap', 'pipe.bin')).size, data.length);
    assert.equal(sha256(await store.read('cap', 'pipe.bin', 0, data.length)), sha256(data));
  });

  it('SETATTR: size, mode, mtime, and the ctime guard', async () => {
    const f = await v.lookup(root, 'big.bin');
    const r = await v.nfs(Proc3.SETATTR, (w) => sattr(w.opaque(f.fh!), { size: 1000, mode: 0o600, mtime: [1_600_000_000, 5000] }).bool(false));
    assert.equal(r.uint32(), S.OK);
    const after = wcc(r).post!;
    assert.equal(after.size, 1000);
    assert.equal(after.mode, 0o600);
    assert.deepEqual(after.mtime, [1_600_000_000, 5000], 'mtime kept to the microsecond');
    assert.equal((await store.getattr('cap', 'big.bin')).size, 1000);
    const guarded = await v.nfs(Proc3.SETATTR, (w) => sattr(w.opaque(f.fh!), { mode: 0o644 }).bool(true).uint32(1).uint32(2));
    assert.equal(guarded.uint32(), S.NOT_SYNC);
    const ok = await v.nfs(Proc3.SETATTR, (w) => sattr(w.opaque(f.fh!), { mode: 0o644 }).bool(true).uint32(after.ctime[0]).uint32(after.ctime[1]));
    assert.equal(ok.uint32(), S.OK);
  });

  it('MKDIR, RENAME, REMOVE, RMDIR with the right statuses; removed handles go STALE', async () => {
    const d = await v.mkdir(root, 'new');
    assert.equal(d.status, S.OK);
    assert.equal((await v.mkdir(root, 'new')).status, S.EXIST);
    const f = await v.create(d.fh!, 'f', CreateMode.UNCHECKED, { mode: 0o644 });
    assert.equal(await v.simple(Proc3.RMDIR, (w) => w.opaque(root).string('new')), S.NOTEMPTY);
    assert.equal(await v.simple(Proc3.REMOVE, (w) => w.opaque(root).string('new')), S.ISDIR);
    assert.equal(await v.simple(Proc3.RMDIR, (w) => w.opaque(d.fh!).string('f')), S.NOTDIR);
    assert.equal(await v.simple(Proc3.REMOVE, (w) => w.opaque(root).string('nothing')), S.NOENT);
    // rename a file across directories: its handle follows it
    assert.equal(await v.simple(Proc3.RENAME, (w) => w.opaque(d.fh!).string('f').opaque(root).string('moved')), S.OK);
    assert.equal((await v.getattr(f.fh!)).status, S.OK);
    assert.equal((await store.getattr('cap', 'moved')).ino, (await v.getattr(f.fh!)).attr!.fileid);
    // rename a directory: handles below it stay valid
    const docs = await v.lookup(root, 'docs');
    const a = await v.lookup(docs.fh!, 'a.txt');
    assert.equal(await v.simple(Proc3.RENAME, (w) => w.opaque(root).string('docs').opaque(d.fh!).string('docs2')), S.OK);
    const ra = await v.read(a.fh!, 0, 100);
    assert.equal(ra.data!.toString(), 'alpha');
    // a directory cannot move into itself
    assert.equal(await v.simple(Proc3.RENAME, (w) => w.opaque(root).string('new').opaque(d.fh!).string('x')), S.INVAL);
    // replacing a file by rename: the replaced file's handle is STALE
    const victim = await v.create(root, 'victim', CreateMode.UNCHECKED, { mode: 0o644 });
    assert.equal(await v.simple(Proc3.RENAME, (w) => w.opaque(root).string('moved').opaque(root).string('victim')), S.OK);
    assert.equal((await v.getattr(victim.fh!)).status, S.STALE);
    assert.equal(await v.simple(Proc3.REMOVE, (w) => w.opaque(root).string('victim')), S.OK);
    assert.equal((await v.getattr(f.fh!)).status, S.STALE);
    assert.equal((await v.write(f.fh!, 0, Buffer.from('x'))).status, S.STALE);
    // rename across exports is refused
    const ro = await v.mnt('/ro/cap');
    assert.equal(await v.simple(Proc3.RENAME, (w) => w.opaque(root).string('big.bin').opaque(ro).string('b')), S.XDEV);
  });

  it('READDIR and READDIRPLUS page with stable cookies while the directory changes', async () => {
    const d = await v.mkdir(root, 'many');
    const names = Array.from({ length: 60 }, (_, i) => `file-${String(i).padStart(3, '0')}`);
    for (const n of names) assert.equal((await v.create(d.fh!, n, CreateMode.GUARDED, { mode: 0o644 })).status, S.OK);
    for (const plus of [false, true]) {
      const seen: DirEnt[] = [];
      let cookie = 0;
      let verf: Buffer = Buffer.alloc(8);
      let pages = 0;
      for (;;) {
        const p = await readdirPage(v, d.fh!, cookie, verf, plus ? 1024 : 512, plus);
        assert.equal(p.status, S.OK);
        pages++;
        seen.push(...p.entries);
        if (pages === 2) {
          // change the directory mid-walk: a new file, a removed file not yet listed
          await store.createFile('cap', 'many/zz-new');
          await store.unlink('cap', `many/${names[59]}`);
          if (plus) await store.createFile('cap', `many/${names[59]}`); // recreated: a new inode
        }
        if (p.eof) break;
        cookie = p.entries[p.entries.length - 1]!.cookie;
        verf = p.verf;
      }
      assert.ok(pages > 3, `paged (${pages} pages)`);
      const got = seen.map((e) => e.name);
      assert.equal(new Set(got).size, got.length, 'no duplicates');
      assert.deepEqual(got.slice(0, 2), ['.', '..']);
      for (const n of names.slice(0, 59)) assert.ok(got.includes(n), `${n} listed`);
      assert.ok(got.includes('zz-new'), 'a file created mid-walk appears');
      if (plus) {
        for (const e of seen) {
          assert.ok(e.attr && e.fh, `${e.name} has attributes and a handle`);
          assert.equal(e.attr.fileid, e.fileid);
        }
        const pick = seen.find((e) => e.name === 'file-010')!;
        assert.equal((await v.getattr(pick.fh!)).attr!.fileid, pick.fileid);
      }
      await store.unlink('cap', 'many/zz-new');
      if (!plus) await store.createFile('cap', `many/${names[59]}`);
    }
    // a foreign cookie verifier is refused; a tiny buffer is TOOSMALL
    const bad = await readdirPage(v, d.fh!, 5, Buffer.from('zzzzzzzz'), 4096, false);
    assert.equal(bad.status, S.BAD_COOKIE);
    const small = await readdirPage(v, d.fh!, 0, Buffer.alloc(8), 100, false);
    assert.equal(small.status, S.TOOSMALL);
    const onFile = await readdirPage(v, (await v.lookup(root, 'big.bin')).fh!, 0, Buffer.alloc(8), 4096, false);
    assert.equal(onFile.status, S.NOTDIR);
  });

  it('read-only export: every modifying procedure answers ROFS', async () => {
    const ro = await v.mnt('/ro/cap');
    const file = (await v.lookup(ro, 'big.bin')).fh!;
    assert.equal((await v.read(file, 0, 10)).status, S.OK);
    assert.equal(await v.simple(Proc3.SETATTR, (w) => sattr(w.opaque(file), { mode: 0o777 }).bool(false)), S.ROFS);
    assert.equal((await v.write(file, 0, Buffer.from('x'))).status, S.ROFS);
    assert.equal((await v.create(ro, 'n', CreateMode.UNCHECKED)).status, S.ROFS);
    assert.equal((await v.mkdir(ro, 'n')).status, S.ROFS);
    assert.equal(await v.simple(Proc3.REMOVE, (w) => w.opaque(ro).string('big.bin')), S.ROFS);
    assert.equal(await v.simple(Proc3.RMDIR, (w) => w.opaque(ro).string('docs')), S.ROFS);
    assert.equal(await v.simple(Proc3.RENAME, (w) => w.opaque(ro).string('big.bin').opaque(ro).string('x')), S.ROFS);
    const acc = await v.nfs(Proc3.ACCESS, (w) => w.opaque(ro).uint32(0x3f));
    assert.equal(acc.uint32(), S.OK);
    postOp(acc);
    assert.equal(acc.uint32() & (Access3.MODIFY | Access3.EXTEND | Access3.DELETE), 0);
    assert.equal((await store.getattr('cap', 'big.bin')).mode, 0o644, 'unchanged');
  });

  it('ACCESS follows the mode bits for the caller', async () => {
    await store.setattr('cap', 'docs/a.txt', { mode: 0o640, uid: 1000, gid: 50 });
    const docs = await v.lookup(root, 'docs');
    const a = (await v.lookup(docs.fh!, 'a.txt')).fh!;
    const access = async (who: V3) => {
      const r = await who.nfs(Proc3.ACCESS, (w) => w.opaque(a).uint32(0x3f));
      assert.equal(r.uint32(), S.OK);
      postOp(r);
      return r.uint32();
    };
    assert.equal(await access(v), Access3.READ | Access3.MODIFY | Access3.EXTEND, 'owner: rw-');
    const group = await V3.connect(port, { ...USER, uid: 2000, gid: 3000, gids: [50] });
    assert.equal(await access(group), Access3.READ, 'group: r--');
    const other = await V3.connect(port, { ...USER, uid: 2000, gid: 3000, gids: [] });
    assert.equal(await access(other), 0, 'other: ---');
    group.close();
    other.close();
  });

  it('FSSTAT, FSINFO, PATHCONF, and NOTSUPP for links and special files', async () => {
    const fs = await v.nfs(Proc3.FSSTAT, (w) => w.opaque(root));
    assert.equal(fs.uint32(), S.OK);
    postOp(fs);
    const tbytes = fs.uint64();
    const fbytes = fs.uint64();
    assert.ok(tbytes > 0 && fbytes <= tbytes);
    const fi = await v.nfs(Proc3.FSINFO, (w) => w.opaque(root));
    assert.equal(fi.uint32(), S.OK);
    postOp(fi);
    assert.equal(fi.uint32(), 1 << 20, 'rtmax');
    fi.uint32();
    fi.uint32();
    assert.equal(fi.uint32(), 1 << 20, 'wtmax');
    const pc = await v.nfs(Proc3.PATHCONF, (w) => w.opaque(root));
    assert.equal(pc.uint32(), S.OK);
    postOp(pc);
    pc.uint32();
    assert.equal(pc.uint32(), 255, 'name_max');
    assert.equal(await v.simple(Proc3.READLINK, (w) => w.opaque(root)), S.NOTSUPP);
    assert.equal(await v.simple(Proc3.SYMLINK, (w) => w.opaque(root).string('l')), S.NOTSUPP);
    assert.equal(await v.simple(Proc3.MKNOD, (w) => w.opaque(root).string('n')), S.NOTSUPP);
    assert.equal(await v.simple(Proc3.LINK, (w) => w.opaque(root).opaque(root).string('l')), S.NOTSUPP);
  });

  it('resolves unknown handles through the store\'s inodePath when it has one (no tree walk)', async () => {
    const docs = await v.lookup(root, 'docs');
    const a = (await v.lookup(docs.fh!, 'a.txt')).fh!;
    const ino = (await v.getattr(a)).attr!.fileid;
    let asked = 0;
    let walked = 0;
    // the real store, plus the optional lookup (answered from what this test knows)
    const hooked = new Proxy(store, {
      get(t, k) {
        if (k === 'inodePath') return (_ref: string, i: number) => (asked++, i === ino ? 'docs/a.txt' : undefined);
        if (k === 'readdir') walked++;
        const val = Reflect.get(t, k) as unknown;
        return typeof val === 'function' ? (val as (...x: unknown[]) => unknown).bind(t) : val;
      },
    });
    const other = await NfsServer.listen({ store: hooked, host: '127.0.0.1', port: 0, mountPort: 0 });
    try {
      await other.addExport({ ref: 'cap' });
      const v2 = await V3.connect(other.address().port);
      walked = 0;
      const ga = await v2.getattr(a);
      assert.equal(ga.status, S.OK);
      assert.equal(ga.attr!.fileid, ino);
      assert.equal(asked, 1);
      assert.equal(walked, 0, 'no readdir walk');
      const forged = Buffer.from(a);
      forged.writeUInt32BE(999_999, 16); // same export, an inode that never existed
      assert.equal((await v2.getattr(forged)).status, S.STALE);
      assert.equal(walked, 0);
      v2.close();
    } finally {
      await other.close();
    }
  });

  it('handles: BADHANDLE for garbage, STALE after the capsule is deleted', async () => {
    assert.equal((await v.getattr(Buffer.from('not a handle'))).status, S.BADHANDLE);
    assert.equal((await v.getattr(Buffer.alloc(0))).status, S.BADHANDLE);
    const garbage = await v.c.call(NFS_PROGRAM, NFS_V3, Proc3.GETATTR, new XdrWriter().uint32(65).toBuffer());
    assert.equal(garbage.acceptStat, AcceptStat.GARBAGE_ARGS, 'a handle longer than 64 bytes is not valid XDR');
    const docs = (await v.lookup(root, 'docs')).fh!;
    await store.delete('cap');
    assert.equal((await v.getattr(docs)).status, S.STALE);
    assert.equal((await v.getattr(root)).status, S.STALE);
    const m = await v.mount(MountProc.MNT, (w) => w.string('/cap'));
    assert.equal(m.uint32(), MountStat.NOENT);
  });
});

/**
 * READ borrows the store's pooled segment memory and gives it back once the reply is written
 * (RpcCall.afterReply): through a cache far smaller than the file, every pass evicts and
 * reloads, and the slots READ used serve the next segments instead of being kept for good.
 */
describe('nfs v3 READ gives pooled segment memory back', function () {
  this.timeout(60_000);
  let dir: string;
  let store: Store;
  let nfs: NfsServer;
  let pool: SegmentPool;

  before(async () => {
    ({ dir, pool, store } = openPooledStore('space-nfs3-pool-', 1 << 20));
    await store.create({ name: 'p', policy: validatePolicy({ segmentSize: '64KiB', encryption: false }) });
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0 });
    await nfs.addExport({ ref: 'p' });
  });
  after(async () => {
    await nfs?.close();
    await store?.close();
    rmrf(dir);
  });

  it('reuses the slots of segments it has sent, keeps none, and holds only what the cache holds', async () => {
    const data = prand(4 << 20, 31);
    await store.put('p', 'f.bin', chunks(data));
    const v = await V3.connect(nfs.address().port);
    try {
      const fh = (await v.lookup(await v.mnt('/p'), 'f.bin')).fh!;
      for (let pass = 0; pass < 2; pass++) {
        // 32 KiB READs, inside one 64 KiB segment each: answered with views of the cached segment.
        for (let off = 0; off < data.length; off += 32 << 10) {
          const r = await v.read(fh, off, 32 << 10);
          assert.equal(r.status, S.OK);
          assert.ok(r.data!.equals(data.subarray(off, off + (32 << 10))), `pass ${pass}: bytes at ${off}`);
        }
      }
    } finally {
      v.close();
    }
    await new Promise((r) => setTimeout(r, 50)); // the last write callbacks
    assertSlotsGivenBack(pool, 16, 32); // 1 MiB cache: 16 segments of 64 KiB
  });
});
