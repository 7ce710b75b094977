/**
 * The CSI node plugin's NVMe/TCP attach path (csi-node/mounters/nvme.ts), run for real: every
 * command it issues (nvme connect/list-subsys/list/disconnect, blkid, mkfs.ext4, mount,
 * resize2fs) executes in the QEMU guest's kernel, against the gateway's NVMe/TCP target.
 * Includes online expansion: the capsule grows, the target raises a namespace-attribute notice,
 * the kernel picks up the new size, resize2fs grows the mounted filesystem.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { silentLogger } from '../capsule/log.js';
import { NvmeTarget } from '../gateway/nvme/target.js';
import { NvmeMounter } from '../csi-node/mounters/nvme.js';
import { needGuest } from './helpers/guest.js';
import { GuestShell } from './helpers/guest-shell.js';
import { rmrf, tmpDir } from './helpers/tmp.js';

const NQN = 'nqn.2024-11.io.space:test:csi-volume';
const MiB = 1 << 20;

describe('CSI node NVMe/TCP attach against the real kernel (QEMU guest)', function () {
  this.timeout(300_000);
  let dir: string;
  let store: Store;
  let target: NvmeTarget;
  let guest: GuestShell | undefined;

  before(async function () {
    needGuest(this);
    dir = tmpDir();
    store = Store.open(path.join(dir, 'data'), { logger: silentLogger });
    await store.create({ name: 'vol', size: 64 * MiB });
    target = await NvmeTarget.listen({ store, host: '127.0.0.1', port: 0 });
    await target.addSubsystem({ ref: 'vol', nqn: NQN });
    guest = await GuestShell.start({ modules: ['nvme-tcp', 'ext4'] });
  });

  after(async () => {
    const r = await guest?.close();
    if (r && r.code !== 0) console.error(r.output);
    await target?.close();
    await store?.close();
    if (dir) rmrf(dir);
  });

  it('connects, finds the device, formats once, mounts, grows online, disconnects', async () => {
    const g = guest!;
    const mounter = new NvmeMounter({ run: g.run, multipath: async () => (await g.shell('cat /sys/module/nvme_core/parameters/multipath')).stdout.trim() === 'Y' });
    const t = { address: '10.0.2.2', port: String(target.address().port), nqn: NQN };

    const device = await mounter.connect(t);
    assert.match(device, /^\/dev\/nvme\d+n1$/);
    // connect is idempotent: a second stage of the same volume finds the existing controller
    assert.equal(await mounter.connect(t), device);
    assert.equal((await mounter.subsystems()).filter((s) => s.nqn === NQN).length, 1);
    assert.equal(Number((await g.shell(`blockdev --getsize64 ${device}`)).stdout.trim()), 64 * MiB);

    assert.equal(await mounter.ensureFilesystem(device, 'ext4'), 'created');
    assert.equal(await mounter.ensureFilesystem(device, 'ext4'), 'existing', 'never formats over a filesystem');
    await assert.rejects(mounter.ensureFilesystem(device, 'xfs'), /already holds a ext4 filesystem/);

    assert.equal((await g.shell('mkdir -p /mnt/vol')).code, 0);
    await mounter.mount(device, '/mnt/vol', 'ext4', [], false);
    assert.equal((await g.shell('echo persisted > /mnt/vol/f && sync && cat /mnt/vol/f')).stdout, 'persisted\n');
    const before = Number((await g.shell("df -k /mnt/vol | tail -1 | awk '{print $2}'")).stdout);

    // ControllerExpandVolume grows the capsule's content file; the kernel learns the new size
    // from the target's asynchronous event, then NodeExpandVolume runs resize2fs online.
    await store.truncate('vol', 'content', 128 * MiB);
    let size = 0;
    for (let i = 0; i < 50 && size !== 128 * MiB; i++) {
      size = Number((await g.shell(`blockdev --getsize64 ${device}`)).stdout.trim());
      if (size !== 128 * MiB) await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(size, 128 * MiB, 'the kernel saw the namespace grow (namespace attribute notice)');
    await mounter.expand(device, '/mnt/vol', 'ext4');
    const after = Number((await g.shell("df -k /mnt/vol | tail -1 | awk '{print $2}'")).stdout);
    assert.ok(after > before * 1.8, `filesystem grew online: ${before} KiB -> ${after} KiB`);
    assert.equal((await g.shell('cat /mnt/vol/f')).stdout, 'persisted\n');

    assert.equal((await g.shell('umount /mnt/vol')).code, 0);
    assert.equal((await g.run('e2fsck', ['-fn', device])).code, 0, 'clean filesystem after the online grow');
    await mounter.disconnect(NQN);
    await mounter.disconnect(NQN); // idempotent unstage
    assert.equal((await mounter.subsystems()).some((s) => s.nqn === NQN), false);
  });
});
