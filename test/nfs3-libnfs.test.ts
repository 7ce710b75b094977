/**
 * The NFSv3 view against a real client: the libnfs-utils binaries (nfs-ls, nfs-cat, nfs-cp),
 * pointed at the server's ports with ?nfsport=&mountport= so no portmapper is involved.
 *
 * The client runs as a child process and is always awaited asynchronously: the server lives in
 * this process, and a synchronous spawn would block the event loop that has to answer it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { RpcClient } from '../gateway/nfs/rpc-client.js';
import { NFS_PROGRAM, NFS_V3, Proc3 } from '../gateway/nfs/nfs3.js';
import { MOUNT_PROGRAM, MOUNT_V3, MountProc } from '../gateway/nfs/mount3.js';
import { Nfs3Status } from '../gateway/nfs/status.js';
import { XdrWriter } from '../gateway/nfs/xdr.js';
import { tmpDir, rmrf, sha256, prand } from './helpers/tmp.js';
import { mustRun, needLibnfs, run } from './helpers/libnfs.js';
import { exportPhotos, seedPhotos } from './helpers/nfs-fixture.js';

/** MNT + LOOKUPs with a bare RPC client: file handles to hold across a restart. */
async function handleOf(port: number, exportPath: string, rel: string[]): Promise<Buffer> {
  const c = await RpcClient.connect(port, '127.0.0.1', { stamp: 0, machineName: 'test', uid: 0, gid: 0, gids: [] });
  try {
    const m = await c.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, new XdrWriter().string(exportPath).toBuffer());
    assert.equal(m.body.uint32(), 0, 'MNT');
    let fh = m.body.opaque(64);
    for (const name of rel) {
      const l = await c.call(NFS_PROGRAM, NFS_V3, Proc3.LOOKUP, new XdrWriter().opaque(fh).string(name).toBuffer());
      assert.equal(l.body.uint32(), 0, `LOOKUP ${name}`);
      fh = l.body.opaque(64);
    }
    return fh;
  } finally {
    c.close();
  }
}

/** GETATTR: status and, when OK, fileid and size. */
async function getattr(port: number, fh: Buffer): Promise<{ status: number; fileid?: number; size?: number }> {
  const c = await RpcClient.connect(port);
  try {
    const r = await c.call(NFS_PROGRAM, NFS_V3, Proc3.GETATTR, new XdrWriter().opaque(fh).toBuffer());
    const status = r.body.uint32();
    if (status !== 0) return { status };
    const b = r.body;
    b.uint32(); // type
    b.uint32(); // mode
    b.uint32(); // nlink
    b.uint32(); // uid
    b.uint32(); // gid
    const size = b.uint64();
    b.uint64(); // used
    b.uint64(); // rdev
    b.uint64(); // fsid
    return { status, size, fileid: b.uint64() };
  } finally {
    c.close();
  }
}

async function readAll(port: number, fh: Buffer, size: number): Promise<Buffer> {
  const c = await RpcClient.connect(port);
  const parts: Buffer[] = [];
  try {
    for (let off = 0; off < size;) {
      const r = await c.call(NFS_PROGRAM, NFS_V3, Proc3.READ, new XdrWriter().opaque(fh).uint64(off).uint32(256 << 10).toBuffer());
      assert.equal(r.body.uint32(), 0);
      if (r.body.bool()) r.body.skip(84);
      const n = r.body.uint32();
      r.body.bool();
      parts.push(Buffer.from(r.body.opaque()));
      off += n;
      if (n === 0) break;
    }
  } finally {
    c.close();
  }
  return Buffer.concat(parts);
}

describe('nfs3 with the libnfs client', function () {
  this.timeout(180_000);
  let dir: string;
  let work: string;
  let store: Store;
  let nfs: NfsServer;
  let port: number;
  let mountPort: number;
  const photo = prand((1 << 20) + 123_457, 11);
  const url = (p: string) => `nfs://127.0.0.1${p}?version=3&nfsport=${port}&mountport=${mountPort}`;

  before(function () {
    needLibnfs(this);
  });

  beforeEach(async () => {
    dir = tmpDir('space-nfs-');
    work = tmpDir('space-nfs-work-');
    store = Store.open(dir);
    await seedPhotos(store, photo);
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0 });
    ({ port, mountPort } = nfs.address());
    await exportPhotos(nfs);
  });

  afterEach(async () => {
    await nfs?.close();
    await store?.close();
    rmrf(dir);
    rmrf(work);
  });

  it('lists a capsule, flat and recursively', async () => {
    const flat = (await mustRun('nfs-ls', [url('/photos')])).toString();
    assert.match(flat, /readme\.txt/);
    assert.match(flat, /^d.*album$/m);
    assert.match(flat, /^d.*empty$/m);
    assert.match(flat, /\s17 readme\.txt/, 'size of readme.txt');
    const rec = (await mustRun('nfs-ls', ['-R', url('/photos')])).toString();
    assert.match(rec, new RegExp(`\\s${photo.length} album/one\\.jpg`));
  });

  it('cats a file with the right bytes (sha256)', async () => {
    const out = await mustRun('nfs-cat', [url('/photos/album/one.jpg')]);
    assert.equal(out.length, photo.length);
    assert.equal(sha256(out), sha256(photo));
    assert.equal((await mustRun('nfs-cat', [url('/photos/readme.txt')])).toString(), 'capsule over nfs\n');
  });

  it('copies a file in and out (1 MiB+ random data), verified through the store', async () => {
    const data = prand((3 << 20) + 4321, 12);
    const local = path.join(work, 'in.bin');
    fs.writeFileSync(local, data);
    const r = await run('nfs-cp', [local, url('/photos/album/upload.bin')]);
    assert.equal(r.code, 0, r.stderr);
    const attr = await store.getattr('photos', 'album/upload.bin');
    assert.equal(attr.size, data.length);
    assert.equal(sha256(await store.read('photos', 'album/upload.bin', 0, data.length)), sha256(data));
    const back = path.join(work, 'out.bin');
    await mustRun('nfs-cp', [url('/photos/album/upload.bin'), back]);
    assert.equal(sha256(fs.readFileSync(back)), sha256(data));
    // and the bytes are durable: they survive closing and reopening the store
    await nfs.close();
    await store.close();
    store = Store.open(dir);
    assert.equal(sha256(await store.read('photos', 'album/upload.bin', 0, data.length)), sha256(data));
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0 });
  });

  it('serves a read-only export that rejects writes', async () => {
    const out = await mustRun('nfs-cat', [url('/archive/photos-ro/album/one.jpg')]);
    assert.equal(sha256(out), sha256(photo));
    const local = path.join(work, 'x.bin');
    fs.writeFileSync(local, prand(100_000, 3));
    const r = await run('nfs-cp', [local, url('/archive/photos-ro/x.bin')]);
    assert.notEqual(r.code, 0, 'write to a read-only export must fail');
    assert.match(r.stderr, /ROFS/);
    await assert.rejects(store.getattr('photos', 'x.bin'), /not found/);
    // overwriting an existing file is refused as well, and the file is unchanged
    const r2 = await run('nfs-cp', [local, url('/archive/photos-ro/readme.txt')]);
    assert.notEqual(r2.code, 0);
    assert.equal((await store.read('photos', 'readme.txt', 0, 100)).toString(), 'capsule over nfs\n');
  });

  it('refuses clients outside the allowed list', async () => {
    await nfs.addExport({ ref: 'photos', path: '/lan-only', allowedClients: ['10.0.0.0/8', 'fd00::/8'] });
    await nfs.addExport({ ref: 'photos', path: '/local', allowedClients: ['192.168.1.1', '127.0.0.0/8'] });
    const denied = await run('nfs-ls', [url('/lan-only')]);
    assert.notEqual(denied.code, 0);
    assert.match((await mustRun('nfs-ls', [url('/local')])).toString(), /readme\.txt/);
    const exported = nfs.listExports().map((e) => e.path);
    assert.deepEqual(exported, ['/archive/photos-ro', '/lan-only', '/local', '/photos']);
  });

  it('keeps file handles valid across a restart; removed files and exports go STALE', async () => {
    const fh = await handleOf(port, '/photos', ['album', 'one.jpg']);
    const dirFh = await handleOf(port, '/photos', ['album']);
    const before = await getattr(port, fh);
    assert.equal(before.status, 0);
    // a new server (and a reopened store) on the same data dir
    await nfs.close();
    await store.close();
    store = Store.open(dir);
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0 });
    ({ port, mountPort } = nfs.address());
    await nfs.addExport({ ref: 'photos' });
    const after = await getattr(port, fh);
    assert.equal(after.status, 0, 'old handle still valid');
    assert.equal(after.fileid, before.fileid);
    assert.equal(after.size, photo.length);
    assert.equal(sha256(await readAll(port, fh, photo.length)), sha256(photo));
    assert.equal((await getattr(port, dirFh)).status, 0);
    // the libnfs client works against the new incarnation too
    assert.equal(sha256(await mustRun('nfs-cat', [url('/photos/album/one.jpg')])), sha256(photo));
    // a removed file's handle is STALE, a forged one BADHANDLE
    await store.unlink('photos', 'album/one.jpg');
    assert.equal((await getattr(port, fh)).status, Nfs3Status.STALE);
    const forged = Buffer.from(dirFh);
    forged[0] ^= 0xff;
    assert.equal((await getattr(port, forged)).status, Nfs3Status.BADHANDLE);
    assert.equal((await getattr(port, Buffer.alloc(7))).status, Nfs3Status.BADHANDLE);
    // a renamed directory keeps its handle (found again by walking the tree)
    await store.rename('photos', 'album', 'album-2024');
    assert.equal((await getattr(port, dirFh)).status, 0);
    // removing the export makes its handles STALE
    await nfs.removeExport('/photos');
    assert.equal((await getattr(port, dirFh)).status, Nfs3Status.STALE);
  });
});
