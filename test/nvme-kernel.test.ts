/**
 * The Linux kernel's NVMe/TCP initiator (in the QEMU guest) against the gateway's target:
 * discover, connect, read the capsule byte for byte, write through the block device and see it
 * through the gateway API, ext4 on top, fsck, reconnects, a gateway restart, digests.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { Store } from '../capsule/store.js';
import { silentLogger } from '../capsule/log.js';
import { GatewayClient } from '../gateway/client.js';
import { GatewayExports } from '../gateway/exports.js';
import { NvmeExports } from '../gateway/nvme/exports.js';
import { startGateway, type Gateway } from '../gateway/server.js';
import { controlServer } from './helpers/guest-control.js';
import { needGuest, runGuest } from './helpers/guest.js';
import { prand, rmrf, tmpDir } from './helpers/tmp.js';

const NQN = 'nqn.2024-11.io.space:test:kernel';
const SIZE = 128 << 20;

describe('NVMe/TCP target with the Linux kernel initiator (QEMU guest)', function () {
  this.timeout(300_000);
  let dir: string;
  let gw: Gateway;
  let client: GatewayClient;
  let nvmePort = 0;
  let capsuleId = '';
  let initialSha = '';
  let control: http.Server;
  const restarts: number[] = [];

  async function startServing(): Promise<void> {
    const store = Store.open(path.join(dir, 'data'), { logger: silentLogger });
    const exports = new GatewayExports([new NvmeExports(store, silentLogger, `127.0.0.1:${nvmePort}`)]);
    gw = await startGateway({ dataDir: path.join(dir, 'data'), store, exports, listen: '127.0.0.1:0', httpListen: '', logger: silentLogger });
    client?.close();
    client = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    const e = await client.export({ protocol: 'nvme', ref: 'disk', readOnly: false, name: NQN });
    nvmePort = e.port;
  }

  before(async function () {
    needGuest(this);
    dir = tmpDir();
    const store = Store.open(path.join(dir, 'data'), { logger: silentLogger });
    const info = await store.create({ name: 'disk', size: SIZE });
    capsuleId = info.id;
    // Some recognizable data at the start and in the middle; the rest stays a hole (zeros).
    await store.write('disk', 'content', 0, prand(8 << 20, 5));
    await store.write('disk', 'content', 64 << 20, prand(1 << 20, 6));
    const whole = await store.read('disk', 'content', 0, SIZE);
    initialSha = crypto.createHash('sha256').update(whole).digest('hex');
    await store.close();
    await startServing();
    control = await controlServer(async ([cmd, ...args]) => {
      if (cmd === 'check') {
        // The bytes the guest wrote to the block device, read back through the gateway's gRPC API.
        const [offset, length, sha] = args as [string, string, string];
        const got = await client.read(capsuleId, 'content', Number(offset), Number(length));
        return crypto.createHash('sha256').update(got).digest('hex') === sha ? 'match' : 'mismatch';
      }
      if (cmd === 'restart') {
        client.close();
        await gw.close();
        await startServing();
        restarts.push(Date.now());
        return 'restarted';
      }
      return 'unknown';
    });
  });

  after(async () => {
    control?.close();
    client?.close();
    await gw?.close();
    if (dir) rmrf(dir);
  });

  const ctlPort = () => (control.address() as net.AddressInfo).port;

  it('discover, connect, sha256 of the device, write through it, ext4 + fsck, reconnect, gateway restart', async function () {
    const script = `
set -u
A=10.0.2.2; P=${nvmePort}; N=${NQN}
ctl() { wget -q -O - "http://$A:${ctlPort()}/$(echo "$*" | tr ' ' /)"; }
dev() { for i in $(seq 1 50); do [ -b /dev/nvme0n1 ] && return 0; sleep 0.2; done; echo "no /dev/nvme0n1"; return 1; }
gone() { for i in $(seq 1 50); do [ -b /dev/nvme0n1 ] || return 0; sleep 0.2; done; return 1; }
modprobe nvme-tcp && modprobe ext4 || exit 10
nvme discover -t tcp -a $A -s $P > /tmp/disc || { cat /tmp/disc; exit 11; }
grep -q "subnqn: *$N" /tmp/disc && grep -q "trsvcid: *$P" /tmp/disc && echo DISCOVER-OK
nvme connect -t tcp -a $A -s $P -n $N || exit 12
dev || exit 13
echo "SIZE=$(blockdev --getsize64 /dev/nvme0n1)"
echo "SHA=$(sha256sum < /dev/nvme0n1 | cut -c1-64)"
dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null
dd if=/tmp/pat of=/dev/nvme0n1 bs=1M seek=32 oflag=direct 2>/dev/null || exit 14
dd if=/dev/nvme0n1 of=/tmp/back bs=1M skip=32 count=4 iflag=direct 2>/dev/null
cmp -s /tmp/pat /tmp/back && echo READBACK-OK
echo "API=$(ctl check $((32 << 20)) $((4 << 20)) $(sha256sum < /tmp/pat | cut -c1-64))"
mkfs.ext4 -q -F /dev/nvme0n1 || exit 15
mkdir -p /mnt/v && mount -t ext4 /dev/nvme0n1 /mnt/v || exit 16
mkdir /mnt/v/dir && for i in 1 2 3 4; do dd if=/dev/urandom of=/mnt/v/dir/f$i bs=64k count=$((i * 8)) 2>/dev/null; done
echo hello > /mnt/v/hello.txt
(cd /mnt/v && sha256sum hello.txt dir/*) > /tmp/sums
umount /mnt/v || exit 17
nvme disconnect -n $N >/dev/null || exit 18
gone || exit 19
nvme connect -t tcp -a $A -s $P -n $N || exit 20
dev || exit 21
e2fsck -fn /dev/nvme0n1 >/tmp/fsck 2>&1 && echo FSCK-CLEAN || cat /tmp/fsck
mount -t ext4 /dev/nvme0n1 /mnt/v && (cd /mnt/v && sha256sum -c /tmp/sums >/dev/null) && echo FILES-INTACT
umount /mnt/v
nvme disconnect -n $N >/dev/null || exit 22
gone || exit 23
echo "RESTART=$(ctl restart)"
nvme connect -t tcp -a $A -s $P -n $N || exit 24
dev || exit 25
mount -t ext4 /dev/nvme0n1 /mnt/v && (cd /mnt/v && sha256sum -c /tmp/sums >/dev/null) && echo AFTER-RESTART-INTACT
umount /mnt/v
e2fsck -fn /dev/nvme0n1 >/tmp/fsck 2>&1 && echo FSCK-CLEAN-AFTER-RESTART || cat /tmp/fsck
nvme disconnect -n $N >/dev/null && echo DISCONNECTED
`;
    const r = await runGuest(script, { timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.output);
    const o = r.output;
    assert.match(o, /^DISCOVER-OK$/m, o);
    assert.match(o, new RegExp(`^SIZE=${SIZE}$`, 'm'), o);
    assert.match(o, new RegExp(`^SHA=${initialSha}$`, 'm'), 'the device reads exactly the capsule file');
    assert.match(o, /^READBACK-OK$/m, o);
    assert.match(o, /^API=match$/m, 'bytes written through the block device are what the gateway API reads');
    assert.match(o, /^FSCK-CLEAN$/m, o);
    assert.match(o, /^FILES-INTACT$/m, o);
    assert.match(o, /^RESTART=restarted$/m, o);
    assert.equal(restarts.length, 1);
    assert.match(o, /^AFTER-RESTART-INTACT$/m, o);
    assert.match(o, /^FSCK-CLEAN-AFTER-RESTART$/m, o);
    assert.match(o, /^DISCONNECTED$/m, o);
  });

  it('works with header and data digests (CRC32C) on', async function () {
    const script = `
A=10.0.2.2; P=${nvmePort}; N=${NQN}
ctl() { wget -q -O - "http://$A:${ctlPort()}/$(echo "$*" | tr ' ' /)"; }
modprobe nvme-tcp || exit 10
nvme connect -t tcp -a $A -s $P -n $N --hdr-digest --data-digest || exit 12
for i in $(seq 1 50); do [ -b /dev/nvme0n1 ] && break; sleep 0.2; done
dd if=/dev/urandom of=/tmp/pat bs=1M count=8 2>/dev/null
dd if=/tmp/pat of=/dev/nvme0n1 bs=1M seek=40 oflag=direct 2>/dev/null || exit 14
dd if=/dev/nvme0n1 of=/tmp/back bs=1M skip=40 count=8 iflag=direct 2>/dev/null
cmp -s /tmp/pat /tmp/back && echo DIGEST-READBACK-OK
echo "API=$(ctl check $((40 << 20)) $((8 << 20)) $(sha256sum < /tmp/pat | cut -c1-64))"
dmesg | grep -i -E 'digest|error' | head -5
nvme disconnect -n $N >/dev/null && echo DISCONNECTED
`;
    const r = await runGuest(script, { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /^DIGEST-READBACK-OK$/m, r.output);
    assert.match(r.output, /^API=match$/m, r.output);
    assert.doesNotMatch(r.output, /digest error/i, r.output);
  });
});
