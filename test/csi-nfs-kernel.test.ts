/**
 * The CSI node plugin's NFS attach path (csi-node/mounters/nfs.ts) for real: its mount command
 * line runs in the QEMU guest's kernel NFS client against the gateway's NFS server, and its
 * mount detection reads the guest's /proc/self/mountinfo.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { silentLogger } from '../capsule/log.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { NfsMounter } from '../csi-node/mounters/nfs.js';
import { parseMountInfo } from '../csi-node/mounters/mountinfo.js';
import { needGuest } from './helpers/guest.js';
import { GuestShell } from './helpers/guest-shell.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

describe('CSI node NFS attach against the real kernel client (QEMU guest)', function () {
  this.timeout(300_000);
  let dir: string;
  let store: Store;
  let server: NfsServer;
  let guest: GuestShell | undefined;

  before(async function () {
    needGuest(this);
    dir = tmpDir();
    store = Store.open(path.join(dir, 'data'), { logger: silentLogger });
    await store.create({ name: 'shared' });
    await store.createFile('shared', 'seed.txt');
    await store.write('shared', 'seed.txt', 0, Buffer.from('from the capsule\n'));
    server = await NfsServer.listen({ store, host: '127.0.0.1', port: 0, mountPort: 0 });
    await server.addExport({ ref: 'shared', path: '/default/pvc-shared' });
    guest = await GuestShell.start({ modules: ['nfsv4'] });
  });

  after(async () => {
    const r = await guest?.close();
    if (r && r.code !== 0) console.error(r.output);
    await server?.close();
    await store?.close();
    if (dir) rmrf(dir);
  });

  it('stages (mount vers=4.2), is idempotent, serves RWX writes, unstages', async () => {
    const g = guest!;
    const mountInfo = async () => parseMountInfo((await g.shell('cat /proc/self/mountinfo')).stdout);
    const mounter = new NfsMounter(g.run, mountInfo);
    const exp = { address: '10.0.2.2', port: String(server.address().port), export: '/default/pvc-shared' };
    assert.equal((await g.shell('mkdir -p /staging/a /staging/b')).code, 0);

    assert.equal(await mounter.mount(exp, '/staging/a', false), 'mounted');
    assert.equal(await mounter.mount(exp, '/staging/a', false), 'existing', 'a second stage finds the mount');
    // Two nodes (here: two mounts) share the volume read-write.
    assert.equal(await mounter.mount(exp, '/staging/b', false), 'mounted');
    assert.equal((await g.shell('cat /staging/a/seed.txt')).stdout, 'from the capsule\n');
    assert.equal((await g.shell('echo from-a > /staging/a/x.txt && sync && cat /staging/b/x.txt')).stdout, 'from-a\n');
    const vers = (await g.shell("grep ' /staging/a ' /proc/mounts")).stdout;
    assert.match(vers, /vers=4\.2/);
    assert.equal((await store.read('shared', 'x.txt', 0, 100)).toString(), 'from-a\n', 'written through NFS, visible in the capsule');

    await mounter.unmount('/staging/a');
    await mounter.unmount('/staging/a'); // idempotent unstage
    await mounter.unmount('/staging/b');
    assert.equal((await g.shell('grep -c nfs4 /proc/mounts')).stdout.trim(), '0');
  });
});
