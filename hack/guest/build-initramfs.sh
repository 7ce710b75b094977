#!/usr/bin/env bash
# Builds the tiny Linux guest that tests boot with QEMU (see run-guest.sh): Debian's own kernel plus
# an initramfs with busybox, nvme-cli and e2fsprogs. It exists because the machines that run the
# tests usually lack the kernel pieces Space must be tested against (the NVMe/TCP initiator and
# target, the NFS client, ext4 on a block device), and a real kernel is the only honest peer.
#
# Output, in ${SPACE_GUEST_DIR:-<repo>/.cache/guest} (never committed; .cache/ is git-ignored):
#   kernel/vmlinuz        Debian's linux-image bzImage
#   kernel/vmlinux        the same kernel as an uncompressed ELF: QEMU boots it through the PVH
#                         entry point, skipping firmware real-mode setup and XZ decompression
#                         (about 2 s per boot under TCG, which is all these machines have)
#   initramfs.cpio        the root filesystem (uncompressed: decompressing under TCG is slow)
#   stamp                 "<kernel version> <hash of this script>" of the last successful build
#
# Idempotent: exits at once when the stamp is newer than this script. The kernel .deb is kept in
# kernel/ so a rebuild (after this script changes) needs no network. Nothing is installed into
# /boot: the package is only unpacked (dpkg -x) into a temporary directory.
#
# Environment:
#   SPACE_GUEST_DIR=DIR   output directory (default <repo>/.cache/guest)
#   KPKG=linux-image-...  kernel package (default: what linux-image-amd64 depends on)
#   GUEST_EXTRA_MODULES   more kernel modules to include (space separated)
#   FORCE=1               rebuild even when up to date
# Host prerequisites (hack/install-deps.sh installs them): busybox-static nvme-cli e2fsprogs cpio
# kmod xz-utils (and qemu-system-x86 to run the guest).
set -euo pipefail

SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${SPACE_GUEST_DIR:-$REPO/.cache/guest}
KPKG=${KPKG:-}

mkdir -p "$OUT/kernel"
OUT=$(cd "$OUT" && pwd)

script_hash() { sha256sum "$SELF" | cut -c1-16; }
up_to_date() {
  [ "${FORCE:-0}" != 1 ] && [ -s "$OUT/initramfs.cpio" ] && [ -s "$OUT/kernel/vmlinuz" ] &&
    # newer than this script, or built by identical script text (a git checkout bumps mtimes)
    { [ "$OUT/stamp" -nt "$SELF" ] || [ "$(cut -d' ' -f2 "$OUT/stamp" 2>/dev/null)" = "$(script_hash)" ]; } &&
    # an explicit KPKG must match what was built; without one, trust the stamp (no apt query, so
    # the fast path also works where apt lists were cleaned)
    { [ -z "$KPKG" ] || [ "$(cut -d' ' -f1 "$OUT/stamp" 2>/dev/null)" = "${KPKG#linux-image-}" ]; }
}
up_to_date && exit 0

# Several test processes may start guests at once; only one may build, the others wait for it
# and then find the outputs up to date.
exec 9>"$OUT/.build.lock"
flock 9
up_to_date && exit 0

missing=()
BB=$(command -v busybox || true)
[ -n "$BB" ] || missing+=(busybox-static)
command -v nvme >/dev/null || missing+=(nvme-cli)
command -v mke2fs >/dev/null || missing+=(e2fsprogs)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
command -v depmod >/dev/null || missing+=(kmod)
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-initramfs: missing host packages: ${missing[*]} (run hack/install-deps.sh)" >&2
  exit 1
fi
# busybox is /init's shell and every basic tool, so it must be the static build (busybox-static):
# it then needs no copied libraries, and Debian's dynamic "busybox" lacks applets the guest uses.
if ldd "$BB" >/dev/null 2>&1; then
  echo "build-initramfs: $BB is dynamically linked; install busybox-static" >&2
  exit 1
fi

t0=$EPOCHREALTIME
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ------------------------------------------------------------------------------------------ kernel
if [ -z "$KPKG" ]; then
  KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$KPKG" ]; then
    # no apt lists (cleaned image): fall back to a kernel .deb downloaded by an earlier build
    KPKG=$(ls "$OUT"/kernel/linux-image-*.deb 2>/dev/null | sed -n 's|.*/\(linux-image-[^_]*\)_.*|\1|p' | tail -1)
  fi
  [ -n "$KPKG" ] || { echo "build-initramfs: cannot resolve linux-image-amd64 (run apt-get update)" >&2; exit 1; }
fi
KVER=${KPKG#linux-image-}
DEB=$(ls "$OUT"/kernel/"$KPKG"_*.deb 2>/dev/null | tail -1 || true)
if [ -z "$DEB" ]; then
  echo "build-initramfs: downloading $KPKG" >&2
  # download into the private work dir, then move: an interrupted download never looks complete.
  # As root apt warns that its sandbox user cannot write here; that is harmless, so the log is
  # only shown on failure.
  if ! (cd "$WORK" && apt-get download "$KPKG") >"$WORK/apt.log" 2>&1; then
    cat "$WORK/apt.log" >&2
    exit 1
  fi
  rm -f "$OUT"/kernel/linux-image-*.deb
  mv "$WORK"/"$KPKG"_*.deb "$OUT/kernel/"
  DEB=$(ls "$OUT"/kernel/"$KPKG"_*.deb | tail -1)
fi
KROOT=$WORK/kroot
dpkg -x "$DEB" "$KROOT"
depmod -b "$KROOT" "$KVER"
cp "$KROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
# The bzImage carries an XZ-compressed ELF; find the XZ magic and unpack it once here instead of in
# every boot. Failure is not fatal: run-guest.sh falls back to vmlinuz.
off=$(LC_ALL=C grep -obUaP '\xfd\x37\x7a\x58\x5a\x00' "$WORK/vmlinuz" | head -1 | cut -d: -f1 || true)
if [ -n "$off" ]; then
  tail -c +$((off + 1)) "$WORK/vmlinuz" | xz -dc --single-stream >"$WORK/vmlinux" 2>/dev/null || true
fi
if [ "$(head -c 4 "$WORK/vmlinux" 2>/dev/null | od -An -c | tr -d ' ')" != '177ELF' ]; then
  rm -f "$WORK/vmlinux"
  echo "build-initramfs: warning: could not extract vmlinux; guests boot the slower vmlinuz" >&2
fi

# ------------------------------------------------------------------------------------------ rootfs
S=$WORK/stage
mkdir -p "$S"/{bin,sbin,usr/bin,usr/sbin,etc/nvme,proc,sys,dev,tmp,run,root,mnt,host,var,lib/modules/"$KVER"}
ln -s ../run "$S/var/run"
cp "$BB" "$S/bin/busybox"
for a in $("$BB" --list); do
  [ -e "$S/bin/$a" ] || ln -s busybox "$S/bin/$a"
done

# The kernel runs /sbin/modprobe to load modules on demand (mount -t ext4 asks for "fs-ext4", the
# crypto API for "crypto-crc32c"); busybox resolves those aliases from modules.alias.
ln -s ../bin/busybox "$S/sbin/modprobe"

# Copy a host binary with the shared libraries ldd reports, at the same paths (the guest's dynamic
# loader then finds them exactly where the host's does).
copy_bin() {
  local src dst=$2 lib
  src=$(command -v "$1")
  mkdir -p "$S$(dirname "$dst")"
  cp -L "$src" "$S$dst"
  for lib in $(ldd "$src" | grep -oE '/[^ ]+'); do
    [ -e "$S$lib" ] && continue
    mkdir -p "$S$(dirname "$lib")"
    cp -L "$lib" "$S$lib"
  done
}
copy_bin nvme /usr/sbin/nvme
# e2fsprogs: formatting and checking ext4 on guest block devices (loop, NVMe namespaces) is what the
# CSI node plugin does on a real node; resize2fs is there for volume expansion.
for b in mke2fs e2fsck tune2fs dumpe2fs resize2fs; do copy_bin "$b" "/usr/sbin/$b"; done
for a in mkfs.ext2 mkfs.ext3 mkfs.ext4; do ln -sf mke2fs "$S/usr/sbin/$a"; done
for a in fsck.ext2 fsck.ext3 fsck.ext4; do ln -sf e2fsck "$S/usr/sbin/$a"; done
# util-linux blkid: the CSI node plugin probes devices with `blkid -p -o export` (busybox's blkid
# has neither option).
copy_bin blkid /usr/sbin/blkid
# mke2fs falls back to compiled-in defaults without this file, which differ between e2fsprogs
# versions; the host's file makes guest-made filesystems match what the host would make.
if [ -f /etc/mke2fs.conf ]; then cp /etc/mke2fs.conf "$S/etc/"; fi
# e2fsck and mke2fs ask /etc/mtab whether a device is mounted; without it they warn and e2fsck
# refuses to be sure the filesystem is unmounted.
ln -s /proc/mounts "$S/etc/mtab"

# nvme-cli needs a host NQN and host ID. Keep them stable per output dir so target-side ACLs written
# by a test stay valid across rebuilds.
[ -s "$OUT/hostnqn" ] || nvme gen-hostnqn >"$OUT/hostnqn"
cp "$OUT/hostnqn" "$S/etc/nvme/hostnqn"
sed -n 's/.*uuid:\(.*\)/\1/p' "$OUT/hostnqn" >"$S/etc/nvme/hostid"
echo 'root:x:0:0:root:/root:/bin/sh' >"$S/etc/passwd"
echo 'root:x:0:' >"$S/etc/group"
echo 'nameserver 10.0.2.3' >"$S/etc/resolv.conf"
printf '127.0.0.1 localhost\n10.0.2.2 host\n10.0.2.15 guest\n' >"$S/etc/hosts"

# ----------------------------------------------------------------------------------------- modules
# Required: what the tests exercise. Infrastructure: the virtio devices run-guest.sh attaches
# (network, entropy, the optional 9p share). modprobe resolves dependencies and aliases (crc32c
# means crc32c-intel + crc32c_generic); a required module that is neither loadable nor built in
# fails the build rather than a test much later.
REQUIRED="nvme-tcp nvmet-tcp nvme-fabrics nfsv3 nfsv4 sunrpc ext4 loop crc32c configfs
          virtio_pci virtio_net virtio_rng 9pnet_virtio 9p ${GUEST_EXTRA_MODULES:-}"
: >"$WORK/kos"
for m in $REQUIRED; do
  if ! deps=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null) || [ -z "$deps" ]; then
    echo "build-initramfs: kernel module $m not found in $KPKG" >&2
    exit 1
  fi
  # lines are "insmod /path/x.ko [params]" or "builtin x"; built-ins need nothing copied
  awk '$1 == "insmod" {print $2}' <<<"$deps" >>"$WORK/kos"
done
sort -u "$WORK/kos" | while read -r ko; do
  rel=${ko#"$KROOT"/}
  mkdir -p "$S/$(dirname "$rel")"
  cp "$ko" "$S/$rel"
done
cp "$KROOT/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$S/lib/modules/$KVER/"
depmod -b "$S" "$KVER"

# -------------------------------------------------------------------------------------------- init
# run-guest.sh appends /run.sh (the test's script) and files for /root, and passes a per-run nonce
# on the kernel command line (guest.nonce=...). The nonce goes into the start/exit markers so that
# nothing the script prints can be mistaken for them.
cat >"$S/init" <<'EOF'
#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Device nodes that load their module on first open (/dev/loop-control -> loop), as kmod's
# static-nodes does on a normal system: "losetup -f" then works without an explicit modprobe.
while read -r mod node dev; do
  case $mod in ''|'#'*) continue ;; esac
  majmin=${dev#?}
  [ -e "/dev/$node" ] || mknod "/dev/$node" "${dev%"$majmin"}" "${majmin%:*}" "${majmin#*:}"
done <"/lib/modules/$(uname -r)/modules.devname"
nonce=$(sed -n 's/.*guest\.nonce=\([A-Za-z0-9]*\).*/\1/p' /proc/cmdline)
# Kernel messages share the console with the script's output; keep them off it unless asked
# (guest.kmsg on the command line, i.e. GUEST_APPEND=guest.kmsg).
grep -q 'guest\.kmsg' /proc/cmdline || dmesg -n 1
for m in virtio_pci virtio_net virtio_rng; do modprobe -q $m; done
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
  # QEMU user-mode networking: fixed addresses, 10.0.2.2 is the host's loopback
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
fi
hostname guest
# GUEST_SHARE: run-guest.sh attaches a virtio-9p device and says so on the command line (loading the
# 9p modules only then keeps the common boot shorter)
if grep -q 'guest\.share' /proc/cmdline; then
  modprobe -q 9pnet_virtio && modprobe -q 9p &&
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostshare /host ||
    echo "guest init: mounting the host share at /host failed"
fi
cd /root
echo "@@GUEST-START-$nonce@@ uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -f /run.sh ]; then
  # Debian's busybox prefers its own applets to PATH, so a bare "mke2fs" would be busybox's
  # ext2-only one; a shell function outranks applets and points the name at e2fsprogs.
  sh -c 'mke2fs() { /usr/sbin/mke2fs "$@"; }; . /run.sh' </dev/null 2>&1
  rc=$?
else
  echo "no /run.sh"; rc=99
fi
echo "@@GUEST-EXIT-$nonce $rc@@ uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
EOF
chmod +x "$S/init"

# A sorted file list and fixed owner make the archive reproducible for the same inputs.
(cd "$S" && find . -print0 | sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$WORK/initramfs.cpio"

# Publish: rename() each output so concurrently booting guests see either the old or the new file.
mv -f "$WORK/vmlinuz" "$OUT/kernel/vmlinuz"
if [ -f "$WORK/vmlinux" ]; then mv -f "$WORK/vmlinux" "$OUT/kernel/vmlinux"; else rm -f "$OUT/kernel/vmlinux"; fi
mv -f "$WORK/initramfs.cpio" "$OUT/initramfs.cpio"
echo "$KVER $(script_hash)" >"$OUT/stamp"
echo "build-initramfs: built $OUT/initramfs.cpio ($(du -h "$OUT/initramfs.cpio" | cut -f1), kernel $KVER) in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')s" >&2
