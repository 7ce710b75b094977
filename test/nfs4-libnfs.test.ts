/**
 * The NFSv4 view against libnfs (nfs-ls, nfs-cat, nfs-cp with ?version=4): a second, independent
 * client implementation (it speaks 4.0: SETCLIENTID, OPEN with seqids, no sessions). Used for
 * reads and one small write: libnfs fails NFSv4 writes of 4000 bytes and more on its own, before
 * sending anything (a client bug).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { prand, rmrf, sha256, tmpDir } from './helpers/tmp.js';
import { mustRun, needLibnfs, run } from './helpers/libnfs.js';
import { exportPhotos, seedPhotos } from './helpers/nfs-fixture.js';

describe('nfs4 with the libnfs client', function () {
  this.timeout(180_000);
  let dir: string;
  let work: string;
  let store: Store;
  let nfs: NfsServer;
  let port: number;
  const photo = prand((2 << 20) + 12_345, 21);
  const url = (p: string) => `nfs://127.0.0.1${p}?version=4&nfsport=${port}`;

  before(function () {
    needLibnfs(this);
  });

  beforeEach(async () => {
    dir = tmpDir('space-nfs4-');
    work = tmpDir('space-nfs4-work-');
    store = Store.open(dir);
    await seedPhotos(store, photo);
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0 });
    port = nfs.address().port;
    await exportPhotos(nfs);
  });

  afterEach(async () => {
    await nfs?.close();
    await store?.close();
    rmrf(dir);
    rmrf(work);
  });

  it('lists the pseudo root, an export, and recursively', async () => {
    const root = (await mustRun('nfs-ls', [url('/')])).toString();
    assert.match(root, /^d.*photos$/m);
    assert.match(root, /^d.*archive$/m);
    assert.match((await mustRun('nfs-ls', [url('/archive')])).toString(), /^d.*photos-ro$/m);
    const flat = (await mustRun('nfs-ls', [url('/photos')])).toString();
    assert.match(flat, /\s17 readme\.txt$/m);
    assert.match(flat, /^d.*album$/m);
    assert.match(flat, /^d.*empty$/m);
    const rec = (await mustRun('nfs-ls', ['-R', url('/photos')])).toString();
    assert.match(rec, new RegExp(`\\s${photo.length} album/one\\.jpg`));
  });

  it('cats files with the right bytes (sha256), through both exports', async () => {
    const out = await mustRun('nfs-cat', [url('/photos/album/one.jpg')]);
    assert.equal(out.length, photo.length);
    assert.equal(sha256(out), sha256(photo));
    assert.equal((await mustRun('nfs-cat', [url('/photos/readme.txt')])).toString(), 'capsule over nfs\n');
    assert.equal(sha256(await mustRun('nfs-cat', [url('/archive/photos-ro/album/one.jpg')])), sha256(photo));
    // a file the store changes is read fresh
    await store.write('photos', 'readme.txt', 0, Buffer.from('CAPSULE'));
    assert.equal((await mustRun('nfs-cat', [url('/photos/readme.txt')])).toString(), 'CAPSULE over nfs\n');
  });

  it('writes a small file (4.0 OPEN/WRITE/CLOSE) and refuses one on the read-only export', async () => {
    const local = path.join(work, 'small.txt');
    fs.writeFileSync(local, 'written through libnfs over NFSv4.0\n');
    await mustRun('nfs-cp', [local, url('/photos/empty/small.txt')]);
    assert.equal((await store.read('photos', 'empty/small.txt', 0, 1000)).toString(), 'written through libnfs over NFSv4.0\n');
    const r = await run('nfs-cp', [local, url('/archive/photos-ro/small.txt')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ROFS/);
  });

  it('refuses exports the client is not allowed to use', async () => {
    await nfs.addExport({ ref: 'photos', path: '/lan-only', allowedClients: ['10.0.0.0/8'] });
    await nfs.addExport({ ref: 'photos', path: '/local', allowedClients: ['127.0.0.0/8'] });
    const denied = await run('nfs-ls', [url('/lan-only')]);
    assert.notEqual(denied.code, 0);
    assert.match((await mustRun('nfs-ls', [url('/local')])).toString(), /readme\.txt/);
    const root = (await mustRun('nfs-ls', [url('/')])).toString();
    assert.doesNotMatch(root, /lan-only/);
    assert.match(root, /local/);
  });
});
