// The real-kernel harness itself (hack/guest, test/helpers/guest.ts): before any Space test leans
// on the guest as an NVMe/TCP initiator or NFS client, prove that it boots, reports exit status,
// reaches servers in this process, and that the kernel features and tools those tests use work.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { guestAvailability, runGuest, REPO } from './helpers/guest.js';

// Booting takes ~3 s under TCG on an idle machine; a loaded CI runner can be many times slower.
const GUEST_TEST_TIMEOUT = 240_000;
const RUN_TIMEOUT = 180_000;

describe('guest harness (real Linux kernel under QEMU)', function () {
  this.timeout(GUEST_TEST_TIMEOUT);

  before(function () {
    const avail = guestAvailability();
    if (avail.ok) return;
    // On a developer machine without QEMU the guest tests are optional; CI installs and builds the
    // guest (hack/install-deps.sh), so there a missing guest is a broken setup, not a reason to skip.
    if (process.env.CI) throw new Error(`guest unavailable in CI: ${avail.reason}`);
    this.skip();
  });

  it('boots, runs the script in the Debian kernel and propagates its exit status', async function () {
    const r = await runGuest('echo "kernel=$(uname -r)"\necho "host=$(hostname)"\nexit 3\n', { timeoutMs: RUN_TIMEOUT });
    assert.equal(r.code, 3, r.output);
    // the Debian kernel build-initramfs.sh unpacked, not the host's
    assert.match(r.output, /^kernel=\d+\.\d+\.\d+-\d+-amd64$/m, r.output);
    assert.match(r.output, /^host=guest$/m, r.output);

    const ok = await runGuest('true\n', { timeoutMs: RUN_TIMEOUT });
    assert.equal(ok.code, 0, ok.output);
  });

  it('reaches a TCP server this test process runs on 127.0.0.1 (as 10.0.2.2)', async function () {
    const received: string[] = [];
    const server = net.createServer((sock) => {
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        received.push(buf.slice(0, nl));
        // answer and close, so busybox nc (which waits for the peer) returns
        sock.end('ack-from-host\n');
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const r = await runGuest(`echo "hello-from-guest $(uname -r)" | nc 10.0.2.2 ${port}\necho "nc-rc=$?"\n`, { timeoutMs: RUN_TIMEOUT });
      assert.equal(r.code, 0, r.output);
      assert.equal(received.length, 1, `server received ${JSON.stringify(received)}; guest said:\n${r.output}`);
      assert.match(received[0]!, /^hello-from-guest \d+\.\d+\.\d+-\d+-amd64$/);
      assert.match(r.output, /^ack-from-host$/m, r.output);
      assert.match(r.output, /^nc-rc=0$/m, r.output);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('formats, mounts and checks ext4 on a loop device (e2fsprogs work in the guest)', async function () {
    const script = `set -e
truncate -s 64M /tmp/ext4.img
dev=$(losetup -f)
losetup "$dev" /tmp/ext4.img
mkfs.ext4 -q -F -L spacetest "$dev"
mkdir -p /mnt/e
mount -t ext4 "$dev" /mnt/e
echo "written-in-guest" > /mnt/e/hello.txt
dd if=/dev/urandom of=/mnt/e/blob bs=64k count=16 2>/dev/null
sum=$(sha256sum /mnt/e/blob | cut -d' ' -f1)
umount /mnt/e
e2fsck -fn "$dev" >/tmp/fsck.log 2>&1 || { rc=$?; cat /tmp/fsck.log; echo "fsck-rc=$rc"; exit 1; }
echo "fsck-clean"
mount -t ext4 -o ro "$dev" /mnt/e
echo "read-back=$(cat /mnt/e/hello.txt)"
[ "$(sha256sum /mnt/e/blob | cut -d' ' -f1)" = "$sum" ] && echo "blob-intact"
umount /mnt/e
echo "label=$(dumpe2fs -h "$dev" 2>/dev/null | sed -n 's/^Filesystem volume name: *//p')"
losetup -d "$dev"
`;
    const r = await runGuest(script, { timeoutMs: RUN_TIMEOUT });
    assert.equal(r.code, 0, r.output);
    for (const line of ['fsck-clean', 'read-back=written-in-guest', 'blob-intact', 'label=spacetest']) {
      assert.match(r.output, new RegExp(`^${line}$`, 'm'), r.output);
    }
  });

  it("connects the guest kernel's NVMe/TCP initiator to its own nvmet-tcp target and does I/O", async function () {
    // The target is configured through configfs (what nvmetcli does), backed by a tmpfs file; the
    // initiator is nvme-cli + nvme-tcp. Both ends are the guest kernel, over its loopback.
    const script = `
NQN=nqn.2024-01.io.space.test:harness
N=/sys/kernel/config/nvmet
modprobe nvmet-tcp && modprobe nvme-tcp || exit 10
grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs none /sys/kernel/config || exit 11
truncate -s 32M /tmp/disk.img
mkdir $N/subsystems/$NQN || exit 12
echo 1 > $N/subsystems/$NQN/attr_allow_any_host
mkdir $N/subsystems/$NQN/namespaces/1
echo /tmp/disk.img > $N/subsystems/$NQN/namespaces/1/device_path
echo 1 > $N/subsystems/$NQN/namespaces/1/buffered_io   # tmpfs files cannot be opened O_DIRECT
echo 1 > $N/subsystems/$NQN/namespaces/1/enable || exit 13
mkdir $N/ports/1
echo tcp > $N/ports/1/addr_trtype; echo ipv4 > $N/ports/1/addr_adrfam
echo 127.0.0.1 > $N/ports/1/addr_traddr; echo 4420 > $N/ports/1/addr_trsvcid
ln -s $N/subsystems/$NQN $N/ports/1/subsystems/$NQN || exit 14
nvme discover -t tcp -a 127.0.0.1 -s 4420 | grep -q "subnqn: *$NQN" && echo "discovered"
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n $NQN || exit 15
dev=
for i in $(seq 50); do
  for b in /sys/block/nvme*; do
    [ "$(cat $b/device/subsysnqn 2>/dev/null)" = "$NQN" ] && dev=/dev/\${b##*/}
  done
  [ -n "$dev" ] && [ -b "$dev" ] && break
  sleep 0.1
done
[ -b "$dev" ] || { echo "no namespace device"; exit 16; }
echo "size=$(cat /sys/block/\${dev#/dev/}/size)"
head -c 4194304 /dev/urandom > /tmp/pattern
dd if=/tmp/pattern of=$dev bs=1M oflag=direct 2>/dev/null || exit 17
dd if=$dev of=/tmp/back bs=1M count=4 iflag=direct 2>/dev/null || exit 18
cmp /tmp/pattern /tmp/back && echo "readback-ok"
# the bytes must have gone through the target into its backing file
head -c 4194304 /tmp/disk.img | cmp - /tmp/pattern && echo "backing-ok"
nvme disconnect -n $NQN >/dev/null && echo "disconnected"
`;
    const r = await runGuest(script, { timeoutMs: RUN_TIMEOUT });
    assert.equal(r.code, 0, r.output);
    for (const line of ['discovered', 'size=65536', 'readback-ok', 'backing-ok', 'disconnected']) {
      assert.match(r.output, new RegExp(`^${line}$`, 'm'), r.output);
    }
  });

  it('hack/guest/nvmet-dd.sh prints parsable dd throughput lines (benchmark baseline)', async function () {
    // run exactly as the benchmark will: the file is the guest script
    const script = await fs.promises.readFile(path.join(REPO, 'hack', 'guest', 'nvmet-dd.sh'), 'utf8');
    const r = await runGuest(script, { timeoutMs: RUN_TIMEOUT });
    assert.equal(r.code, 0, r.output);
    for (const key of ['dd-write-MiBps', 'dd-read-MiBps']) {
      const m = r.output.match(new RegExp(`^${key}=(\\d+(?:\\.\\d+)?)$`, 'm'));
      assert.ok(m, `${key} missing:\n${r.output}`);
      assert.ok(Number(m[1]) > 0, `${key}=${m[1]}`);
    }
  });
});
