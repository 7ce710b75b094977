/**
 * The Linux kernel's NFS client (in the QEMU guest) against the NFS view: NFSv4.1, 4.2 and 4.0
 * mounts of a capsule (ls, cat + sha256, create, write, rename, remove, mkdir, rmdir, a 64 MiB
 * file written and read back), 4.2 SEEK_DATA/SEEK_HOLE, fallocate and hole punching, a server
 * restart under a mounted client and a remount after it (stable handles), a read-only export
 * refusing writes with EROFS, and an NFSv3 mount (with MOUNT on its own port, no portmapper).
 *
 * Changes the guest makes are checked through the store API on the host while the guest runs:
 * the guest asks this test over a small HTTP control channel (busybox wget), which answers with
 * the store's view (sha256 of a file, whether a name exists) or restarts the server.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import { createLogger } from '../capsule/log.js';
import { Store } from '../capsule/store.js';
import { NfsServer } from '../gateway/nfs/server.js';
import { GatewayClient } from '../gateway/client.js';
import { startGateway, type Gateway } from '../gateway/server.js';
import { controlServer } from './helpers/guest-control.js';
import { guestAvailability, runGuest, type GuestResult } from './helpers/guest.js';
import { chunks, prand, rmrf, sha256, tmpDir } from './helpers/tmp.js';
import { exportPhotos, seedPhotos } from './helpers/nfs-fixture.js';

/** lseek(SEEK_DATA/SEEK_HOLE), fallocate(PUNCH_HOLE) and fcntl locks for the guest, which has no tool for them. */
const SPARSE_C = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc < 4) return 2;
  int fd = open(argv[2], O_RDWR);
  if (fd < 0) { printf("open-errno=%d\\n", errno); return 3; }
  long long off = atoll(argv[3]);
  if (!strcmp(argv[1], "punch") && argc > 4) {
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, atoll(argv[4]))) { printf("punch-errno=%d\\n", errno); return 1; }
    printf("punch-ok\\n");
    return 0;
  }
  if (!strcmp(argv[1], "lock") && argc > 6) {
    struct flock fl = { .l_type = argv[5][0] == 'w' ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = atoll(argv[4]) };
    if (fcntl(fd, F_SETLK, &fl)) { printf("lock@%lld=errno%d\\n", off, errno); return 1; }
    printf("lock@%lld=ok\\n", off);
    fflush(stdout);
    sleep(atoi(argv[6]));
    return 0;
  }
  int data = !strcmp(argv[1], "data");
  off_t r = lseek(fd, off, data ? SEEK_DATA : SEEK_HOLE);
  if (r < 0) printf("%s@%lld=errno%d\\n", argv[1], off, errno);
  else printf("%s@%lld=%lld\\n", argv[1], off, (long long)r);
  return 0;
}
`;

const MiB = 1 << 20;

describe('NFS with the Linux kernel client (QEMU guest)', function () {
  this.timeout(400_000);
  let dir: string;
  let store: Store;
  let nfs: NfsServer;
  /** The gateway on the same store: the host-side checks read through its gRPC API. */
  let gw: Gateway;
  let api: GatewayClient;
  let port = 0;
  let mountPort = 0;
  let control: http.Server;
  let sparseTool: string | undefined;
  const photo = prand(MiB + 54_321, 31);
  const unexpected: string[] = [];
  const logger = createLogger({
    component: 'test', level: 'error',
    write: (line) => {
      const ev = JSON.parse(line) as { event: string; err?: { message?: string } };
      if (ev.event === 'nfs4.op.failed' || ev.event === 'rpc.call.failed' || ev.event === 'nfs.op.failed') unexpected.push(`${ev.event}: ${ev.err?.message}`);
    },
  });

  async function serve(): Promise<void> {
    gw = await startGateway({ store, listen: '127.0.0.1:0', httpListen: '', socket: '', logger });
    api?.close();
    api = new GatewayClient(`127.0.0.1:${gw.grpcPort}`);
    nfs = await NfsServer.listen({ store, host: '127.0.0.1', port, mountPort, logger });
    ({ port, mountPort } = nfs.address());
    await exportPhotos(nfs);
  }

  const shaOf = async (p: string): Promise<string> => {
    try {
      const a = await api.getattr('photos', p);
      return sha256(await api.read('photos', p, 0, a.size));
    } catch {
      return 'missing';
    }
  };

  before(async function () {
    const avail = guestAvailability();
    if (!avail.ok) {
      if (process.env.CI) throw new Error(`guest unavailable in CI: ${avail.reason}`);
      return this.skip();
    }
    dir = tmpDir('space-nfs4-kernel-');
    store = Store.open(path.join(dir, 'data'));
    await seedPhotos(store, photo);
    await serve();
    control = await controlServer(async ([cmd, ...args]) => {
      const p = args.join('/');
      if (cmd === 'sha') return shaOf(p);
      if (cmd === 'exists') return api.getattr('photos', p).then(() => 'yes', () => 'no');
      if (cmd === 'type') return api.getattr('photos', p).then((a) => a.type, () => 'missing');
      if (cmd === 'count') return api.readdir('photos', p).then((l) => String(l.length), () => 'missing');
      if (cmd === 'size') return api.getattr('photos', p).then((a) => String(a.size), () => 'missing');
      if (cmd === 'put') {
        const [file, ...text] = args;
        await store.put('photos', file!, chunks(Buffer.from(text.join(' ') + '\n')));
        return 'ok';
      }
      if (cmd === 'restart') {
        // A new server on the same data dir and the same ports: the store is reopened too.
        await nfs.close();
        await gw.close(); // closes the store
        store = Store.open(path.join(dir, 'data'));
        await serve();
        return 'restarted';
      }
      return 'unknown';
    });
    // The SEEK/punch helper needs a static binary (the guest has no libc); without gcc those
    // checks are skipped and the rest of the 4.2 test still runs.
    const src = path.join(dir, 'sparse.c');
    fs.writeFileSync(src, SPARSE_C);
    const out = path.join(dir, 'sparse');
    sparseTool = await new Promise<string | undefined>((resolve, reject) => {
      execFile('gcc', ['-static', '-O2', '-o', out, src], (err, _stdout, stderr) => {
        if (!err) resolve(out);
        else if ((err as NodeJS.ErrnoException).code === 'ENOENT') resolve(undefined); // no gcc here
        else reject(new Error(`compiling the guest helper failed: ${stderr}`));
      });
    });
  });

  afterEach(() => {
    assert.deepEqual(unexpected.splice(0), [], 'no NFS operation failed unexpectedly');
  });

  after(async () => {
    control?.close();
    api?.close();
    await nfs?.close();
    await gw?.close(); // closes the store
    if (dir) rmrf(dir);
  });

  const ctlPort = () => (control.address() as net.AddressInfo).port;
  const prelude = () => `
set -u
A=10.0.2.2; P=${port}
ctl() { wget -q -O - "http://$A:${ctlPort()}/$(echo "$*" | tr ' ' /)"; }
modprobe nfsv4 || exit 10
modprobe nfsv3 || exit 10
mkdir -p /mnt/n
`;
  const line = (r: GuestResult, key: string): string => {
    const m = r.output.match(new RegExp(`^${key}=(.*)$`, 'm'));
    assert.ok(m, `${key} missing from the guest output:\n${r.output}`);
    return m[1]!.trim();
  };
  const has = (r: GuestResult, text: string) => assert.match(r.output, new RegExp(`^${text}$`, 'm'), r.output);

  it('mounts with vers=4.1: ls, cat + sha256, create/write/rename/remove/mkdir/rmdir, a 64 MiB file', async function () {
    const script = prelude() + `
mount -t nfs4 -o vers=4.1,port=$P,addr=$A $A:/photos /mnt/n || exit 11
grep " /mnt/n " /proc/mounts | grep -q "vers=4.1" && echo VERS-OK
echo "LS=$(ls /mnt/n | tr '\\n' ' ')"
echo "README=$(cat /mnt/n/readme.txt)"
echo "PHOTO=$(sha256sum /mnt/n/album/one.jpg | cut -c1-64)"
echo "written from the guest" > /mnt/n/new.txt || exit 12
echo "NEW-HOST=$(ctl sha new.txt)"
mkdir /mnt/n/d1 || exit 13
echo "D1=$(ctl type d1)"
mv /mnt/n/new.txt /mnt/n/d1/moved.txt || exit 14
echo "MOVED=$(ctl exists new.txt)/$(ctl exists d1/moved.txt)"
echo "appended" >> /mnt/n/d1/moved.txt
echo "MOVED-CAT=$(cat /mnt/n/d1/moved.txt | tr '\\n' '|')"
echo "MOVED-HOST=$(ctl sha d1/moved.txt)"
rmdir /mnt/n/d1 2>/dev/null && echo "RMDIR-NONEMPTY-SUCCEEDED"
rm /mnt/n/d1/moved.txt && rmdir /mnt/n/d1 && echo "GONE=$(ctl exists d1)"
set -C
echo one > /mnt/n/excl.txt || exit 18
echo two > /mnt/n/excl.txt 2>/dev/null && echo "EXCL-OVERWROTE"
set +C
echo "EXCL=$(ctl sha excl.txt) $(( $(stat -c %Y /mnt/n/excl.txt) - $(date +%s) ))"
rm /mnt/n/excl.txt
mkdir /mnt/n/many && i=0 && while [ $i -lt 150 ]; do : > /mnt/n/many/file-with-a-rather-long-name-to-fill-readdir-pages-$i; i=$((i+1)); done
echo "MANY-HOST=$(ctl count many)"
echo "HOSTPUT=$(ctl put host.txt made on the host)"
echo "HOSTFILE=$(cat /mnt/n/host.txt)"
head -c 67108864 /dev/urandom > /tmp/big
echo "BIGSUM=$(sha256sum /tmp/big | cut -c1-64)"
dd if=/tmp/big of=/mnt/n/big.bin bs=1M 2>/dev/null || exit 15
sync
echo "BIG-HOST=$(ctl sha big.bin)"
umount /mnt/n || exit 16
mount -t nfs4 -o vers=4.1,port=$P,addr=$A $A:/photos /mnt/n || exit 17
echo "BIG-BACK=$(sha256sum /mnt/n/big.bin | cut -c1-64)"
echo "MANY=$(ls /mnt/n/many | wc -l)/$(ls /mnt/n/many | sort -u | wc -l)"
rm -r /mnt/n/many && echo "MANY-GONE=$(ctl exists many)"
echo "BIG-SIZE=$(stat -c %s /mnt/n/big.bin)"
rm /mnt/n/big.bin
echo "BIG-GONE=$(ctl exists big.bin)"
umount /mnt/n && echo UMOUNT-OK
`;
    const r = await runGuest(script, { timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.output);
    has(r, 'VERS-OK');
    assert.equal(line(r, 'LS'), 'album empty readme.txt');
    assert.equal(line(r, 'README'), 'capsule over nfs');
    assert.equal(line(r, 'PHOTO'), sha256(photo));
    assert.equal(line(r, 'NEW-HOST'), sha256(Buffer.from('written from the guest\n')));
    assert.equal(line(r, 'D1'), 'dir');
    assert.equal(line(r, 'MOVED'), 'no/yes');
    assert.equal(line(r, 'MOVED-CAT'), 'written from the guest|appended|');
    assert.equal(line(r, 'MOVED-HOST'), sha256(Buffer.from('written from the guest\nappended\n')));
    assert.doesNotMatch(r.output, /RMDIR-NONEMPTY-SUCCEEDED/);
    assert.equal(line(r, 'GONE'), 'no');
    assert.equal(line(r, 'HOSTFILE'), 'made on the host');
    // O_EXCL (the shell's noclobber) is an EXCLUSIVE4_1 create: a second one fails, and the
    // verifier kept in the times during the create is replaced by real times afterwards
    assert.doesNotMatch(r.output, /EXCL-OVERWROTE/);
    const [exclSha, skew] = line(r, 'EXCL').split(' ');
    assert.equal(exclSha, sha256(Buffer.from('one\n')));
    assert.ok(Math.abs(Number(skew)) < 3600, `mtime of the exclusively created file is now-ish (skew ${skew} s)`);
    const big = line(r, 'BIGSUM');
    assert.equal(line(r, 'BIG-HOST'), big, 'the store holds what the guest wrote');
    assert.equal(line(r, 'BIG-BACK'), big, 'read back after a remount');
    assert.equal(line(r, 'BIG-SIZE'), String(64 * MiB));
    assert.equal(line(r, 'MANY-HOST'), '150');
    assert.equal(line(r, 'MANY'), '150/150', 'a fresh mount lists every entry once (several READDIR calls)');
    assert.equal(line(r, 'MANY-GONE'), 'no');
    assert.equal(line(r, 'BIG-GONE'), 'no');
    has(r, 'UMOUNT-OK');
  });

  it('mounts with vers=4.2: SEEK_DATA/SEEK_HOLE, fallocate (ALLOCATE), hole punching (DEALLOCATE), locks', async function () {
    const tool = sparseTool ? './sparse' : '';
    const script = prelude() + `
mount -t nfs4 -o vers=4.2,port=$P,addr=$A $A:/photos /mnt/n || exit 11
grep " /mnt/n " /proc/mounts | grep -q "vers=4.2" && echo VERS-OK
echo "PHOTO=$(sha256sum /mnt/n/album/one.jpg | cut -c1-64)"
F=/mnt/n/sparse.bin
dd if=/dev/urandom of=$F bs=1048576 count=2 2>/dev/null || exit 12
truncate -s 8388608 $F || exit 13
dd if=/dev/urandom of=$F bs=1048576 seek=5 count=1 conv=notrunc 2>/dev/null || exit 14
sync
echo "SPARSE-SIZE=$(ctl size sparse.bin)"
T="${tool}"
if [ -n "$T" ]; then
  $T data $F 0; $T hole $F 0; $T data $F 2097152; $T hole $F 5242880; $T data $F 6291456
  $T punch $F 0 1048576
  $T data $F 0
fi
echo "SPARSE-SUM=$(sha256sum $F | cut -c1-64)"
if [ -n "$T" ]; then
  # byte-range locks: a second process conflicts with the first one's write lock, not beside it
  $T lock $F 0 100 w 3 &
  sleep 1
  $T lock $F 50 10 w 0; $T lock $F 200 10 w 0; $T lock $F 60 10 r 0
  wait
  $T lock $F 0 100 w 0 | sed 's/^lock/relock/'
fi
echo "SPARSE-HOST=$(ctl sha sparse.bin)"
fallocate -l 12000000 $F || exit 15
echo "FALLOC-SIZE=$(stat -c %s $F)/$(ctl size sparse.bin)"
echo "mixed" > /mnt/n/v42.txt && echo "V42=$(ctl sha v42.txt)"
umount /mnt/n && echo UMOUNT-OK
`;
    const r = await runGuest(script, { timeoutMs: 240_000, files: sparseTool ? [sparseTool] : [] });
    assert.equal(r.code, 0, r.output);
    has(r, 'VERS-OK');
    assert.equal(line(r, 'PHOTO'), sha256(photo));
    assert.equal(line(r, 'SPARSE-SIZE'), String(8 * MiB));
    if (sparseTool) {
      has(r, 'data@0=0');
      has(r, `hole@0=${2 * MiB}`);
      has(r, `data@${2 * MiB}=${5 * MiB}`);
      has(r, `hole@${5 * MiB}=${6 * MiB}`);
      has(r, `data@${6 * MiB}=errno6`); // ENXIO: no data after the last hole
      has(r, 'punch-ok');
      has(r, `data@0=${MiB}`); // the punched first MiB is a hole now
      has(r, 'lock@0=ok');
      has(r, 'lock@50=errno11'); // EAGAIN: the server said DENIED
      has(r, 'lock@200=ok');
      has(r, 'lock@60=errno11'); // a read lock conflicts with a write lock too
      has(r, 'relock@0=ok'); // released when the holder exited
      const head = await store.read('photos', 'sparse.bin', 0, MiB);
      assert.ok(head.equals(Buffer.alloc(MiB)), 'the punched range reads as zeros in the store');
    } else {
      this.test!.title += ' (no gcc: SEEK/punch checks skipped)';
    }
    assert.equal(line(r, 'SPARSE-HOST'), line(r, 'SPARSE-SUM'));
    assert.equal(line(r, 'FALLOC-SIZE'), '12000000/12000000');
    assert.equal(line(r, 'V42'), sha256(Buffer.from('mixed\n')));
    has(r, 'UMOUNT-OK');
  });

  it('mounts with vers=4.0 (SETCLIENTID, no sessions)', async function () {
    const script = prelude() + `
mount -t nfs4 -o vers=4.0,port=$P,addr=$A,clientaddr=10.0.2.15 $A:/photos /mnt/n || exit 11
grep " /mnt/n " /proc/mounts | grep -q "vers=4.0" && echo VERS-OK
echo "LS=$(ls /mnt/n/album | tr '\\n' ' ')"
echo "PHOTO=$(sha256sum /mnt/n/album/one.jpg | cut -c1-64)"
mkdir /mnt/n/v40 && echo "four oh" > /mnt/n/v40/f.txt && mv /mnt/n/v40/f.txt /mnt/n/v40/g.txt || exit 12
echo "G=$(ctl sha v40/g.txt)"
dd if=/dev/urandom of=/tmp/m bs=1048576 count=8 2>/dev/null
dd if=/tmp/m of=/mnt/n/v40/m.bin bs=1048576 2>/dev/null && sync
echo "M=$(sha256sum /tmp/m | cut -c1-64)/$(ctl sha v40/m.bin)"
rm -r /mnt/n/v40 && echo "V40-GONE=$(ctl exists v40)"
umount /mnt/n && echo UMOUNT-OK
`;
    const r = await runGuest(script, { timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.output);
    has(r, 'VERS-OK');
    assert.equal(line(r, 'LS'), 'one.jpg');
    assert.equal(line(r, 'PHOTO'), sha256(photo));
    assert.equal(line(r, 'G'), sha256(Buffer.from('four oh\n')));
    const [local, host] = line(r, 'M').split('/');
    assert.equal(host, local);
    assert.equal(line(r, 'V40-GONE'), 'no');
    has(r, 'UMOUNT-OK');
  });

  it('survives a server restart under a mounted client, and remounts after one (stable handles)', async function () {
    const script = prelude() + `
mount -t nfs4 -o vers=4.1,port=$P,addr=$A $A:/photos /mnt/n || exit 11
echo "kept across restarts" > /mnt/n/keep.txt || exit 12
mkdir -p /mnt/n/deep/er && echo "deep" > /mnt/n/deep/er/file.txt
cd /mnt/n/deep/er || exit 13
exec 3< /mnt/n/readme.txt
echo "RESTART1=$(ctl restart)"
echo "AFTER-LS=$(ls /mnt/n | tr '\\n' ' ')"
echo "AFTER-KEEP=$(cat /mnt/n/keep.txt)"
echo "AFTER-CWD=$(cat file.txt)"
echo "AFTER-FD=$(cat <&3)"
exec 3<&-
echo "after restart" > /mnt/n/after.txt && echo "AFTER-WRITE=$(ctl sha after.txt)"
cd /
umount /mnt/n || exit 14
echo "RESTART2=$(ctl restart)"
mount -t nfs4 -o vers=4.1,port=$P,addr=$A $A:/photos /mnt/n || exit 15
echo "REMOUNT-KEEP=$(cat /mnt/n/keep.txt)"
echo "REMOUNT-DEEP=$(cat /mnt/n/deep/er/file.txt)"
rm -r /mnt/n/deep /mnt/n/keep.txt /mnt/n/after.txt
umount /mnt/n && echo UMOUNT-OK
`;
    const r = await runGuest(script, { timeoutMs: 300_000 });
    assert.equal(r.code, 0, r.output);
    assert.equal(line(r, 'RESTART1'), 'restarted');
    assert.match(line(r, 'AFTER-LS'), /keep\.txt/);
    assert.equal(line(r, 'AFTER-KEEP'), 'kept across restarts');
    assert.equal(line(r, 'AFTER-CWD'), 'deep');
    assert.equal(line(r, 'AFTER-FD'), 'capsule over nfs');
    assert.equal(line(r, 'AFTER-WRITE'), sha256(Buffer.from('after restart\n')));
    assert.equal(line(r, 'RESTART2'), 'restarted');
    assert.equal(line(r, 'REMOUNT-KEEP'), 'kept across restarts');
    assert.equal(line(r, 'REMOUNT-DEEP'), 'deep');
    has(r, 'UMOUNT-OK');
  });

  it('refuses writes on a read-only export with EROFS; the pseudo root lists the exports', async function () {
    const script = prelude() + `
mount -t nfs4 -o vers=4.1,port=$P,addr=$A $A:/ /mnt/n || exit 11
echo "ROOT=$(ls /mnt/n | tr '\\n' ' ')"
echo "ARCHIVE=$(ls /mnt/n/archive | tr '\\n' ' ')"
R=/mnt/n/archive/photos-ro
echo "RO-CAT=$(cat $R/readme.txt)"
echo "RO-PHOTO=$(sha256sum $R/album/one.jpg | cut -c1-64)"
echo x > $R/new.txt 2>/tmp/e1; echo "CREATE-RC=$?"; cat /tmp/e1
echo x >> $R/readme.txt 2>/tmp/e2; echo "APPEND-RC=$?"; cat /tmp/e2
mkdir $R/d 2>/tmp/e3; echo "MKDIR-RC=$?"; cat /tmp/e3
rm $R/readme.txt 2>/tmp/e4; echo "RM-RC=$?"; cat /tmp/e4
mkdir /mnt/n/pseudo-dir 2>/dev/null; echo "PSEUDO-MKDIR-RC=$?"
echo "README-HOST=$(ctl sha readme.txt)"
echo "NEW-HOST=$(ctl exists new.txt)"
umount /mnt/n && echo UMOUNT-OK
`;
    const r = await runGuest(script, { timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.output);
    assert.equal(line(r, 'ROOT'), 'archive photos');
    assert.equal(line(r, 'ARCHIVE'), 'photos-ro');
    assert.equal(line(r, 'RO-CAT'), 'capsule over nfs');
    assert.equal(line(r, 'RO-PHOTO'), sha256(photo));
    for (const k of ['CREATE-RC', 'APPEND-RC', 'MKDIR-RC', 'RM-RC', 'PSEUDO-MKDIR-RC']) assert.notEqual(line(r, k), '0', `${k}\n${r.output}`);
    const erofs = r.output.match(/Read-only file system/g) ?? [];
    assert.ok(erofs.length >= 4, `EROFS for each write attempt:\n${r.output}`);
    assert.equal(line(r, 'README-HOST'), sha256(Buffer.from('capsule over nfs\n')));
    assert.equal(line(r, 'NEW-HOST'), 'no');
    has(r, 'UMOUNT-OK');
  });

  it('mounts with vers=3 (MOUNT on its own port, no portmapper) and does the same file work', async function () {
    const script = prelude() + `
mount -t nfs -o vers=3,proto=tcp,nolock,port=$P,mountport=${mountPort},mountproto=tcp $A:/photos /mnt/n || exit 11
grep " /mnt/n " /proc/mounts | grep -q "vers=3" && echo VERS-OK
echo "LS=$(ls /mnt/n | tr '\\n' ' ')"
echo "PHOTO=$(sha256sum /mnt/n/album/one.jpg | cut -c1-64)"
mkdir /mnt/n/v3 && echo "over v3" > /mnt/n/v3/a.txt && mv /mnt/n/v3/a.txt /mnt/n/v3/b.txt || exit 12
echo "B=$(ctl sha v3/b.txt)/$(ctl exists v3/a.txt)"
head -c 16777216 /dev/urandom > /tmp/m
dd if=/tmp/m of=/mnt/n/v3/m.bin bs=1048576 2>/dev/null && sync
echo "M=$(sha256sum /tmp/m | cut -c1-64)/$(ctl sha v3/m.bin)"
umount /mnt/n
mount -t nfs -o vers=3,proto=tcp,nolock,port=$P,mountport=${mountPort},mountproto=tcp $A:/photos /mnt/n || exit 13
echo "M-BACK=$(sha256sum /mnt/n/v3/m.bin | cut -c1-64)"
rm /mnt/n/v3/b.txt /mnt/n/v3/m.bin && rmdir /mnt/n/v3 && echo "V3-GONE=$(ctl exists v3)"
umount /mnt/n
mount -t nfs -o ro,vers=3,proto=tcp,nolock,port=$P,mountport=${mountPort},mountproto=tcp $A:/archive/photos-ro /mnt/n || exit 14
echo "RO-CAT=$(cat /mnt/n/readme.txt)"
touch /mnt/n/x 2>/dev/null; echo "RO-TOUCH-RC=$?"
umount /mnt/n && echo UMOUNT-OK
`;
    const r = await runGuest(script, { timeoutMs: 240_000 });
    assert.equal(r.code, 0, r.output);
    has(r, 'VERS-OK');
    assert.match(line(r, 'LS'), /\balbum empty\b.*\breadme\.txt\b/);
    assert.equal(line(r, 'PHOTO'), sha256(photo));
    assert.equal(line(r, 'B'), `${sha256(Buffer.from('over v3\n'))}/no`);
    const [local, host] = line(r, 'M').split('/');
    assert.equal(host, local);
    assert.equal(line(r, 'M-BACK'), local);
    assert.equal(line(r, 'V3-GONE'), 'no');
    assert.equal(line(r, 'RO-CAT'), 'capsule over nfs');
    assert.notEqual(line(r, 'RO-TOUCH-RC'), '0');
    has(r, 'UMOUNT-OK');
  });
});
