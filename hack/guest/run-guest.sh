#!/usr/bin/env bash
# run-guest.sh SCRIPT [FILE...]
#   Boots the tiny Linux guest built by build-initramfs.sh (built first if missing or stale), runs
#   SCRIPT inside it with busybox sh (POSIX sh, not bash; cwd /root, FILEs copied into /root),
#   prints the script's output (stdout and stderr, merged) and exits with the script's exit status:
#   124 when GUEST_TIMEOUT ran out, 125 when the guest produced no result (kernel panic, bad build).
#   Run statistics go to stderr as one "run-guest: ..." line.
#
#   Networking is QEMU user mode: the guest is 10.0.2.15, and 10.0.2.2 inside the guest is the
#   host's 127.0.0.1, so a test can serve a protocol on the host's loopback to the guest's kernel.
#   Every run has its own temp dir and QEMU process, so several guests can run at once.
#
# Environment:
#   GUEST_TIMEOUT=300   wall-clock limit (s) for the whole VM; exit 124 on timeout
#   GUEST_MEM=1G        guest memory
#   GUEST_SMP=1         guest vCPUs
#   GUEST_ACCEL=auto    auto|tcg|kvm. auto = kvm only when /dev/kvm is writable and is not the
#                       software kvm_pvm module (stock kernels crawl there), else tcg
#   GUEST_CPU=MODEL     QEMU -cpu model (default: max under tcg, host under kvm)
#   GUEST_FWD=RULES     extra user-net options, e.g. "hostfwd=tcp:127.0.0.1:14420-:4420" (host
#                       127.0.0.1:14420 -> guest :4420, for servers running in the guest)
#   GUEST_SHARE=DIR     share host DIR into the guest at /host (virtio-9p, read-write)
#   GUEST_APPEND=...    extra kernel command line (guest.kmsg = kernel messages on the console)
#   GUEST_LOG=FILE      keep the whole serial console log there (default: temp, deleted)
#   VERBOSE=1           stream the whole console (kernel boot messages etc., not quieted), not
#                       just the script's output
#   SPACE_GUEST_DIR=DIR where the kernel and initramfs are (default <repo>/.cache/guest)
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
GDIR=${SPACE_GUEST_DIR:-$(cd "$HERE/../.." && pwd)/.cache/guest}
SCRIPT=${1:?usage: run-guest.sh SCRIPT [FILE...]}
shift
[ -r "$SCRIPT" ] || { echo "run-guest: cannot read $SCRIPT" >&2; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { echo "run-guest: qemu-system-x86_64 not found (apt-get install qemu-system-x86)" >&2; exit 2; }
# Cheap when up to date (a stamp check); rebuilds when build-initramfs.sh changed.
"$HERE/build-initramfs.sh" || { echo "run-guest: building the guest failed" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/run-guest.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# bash runs the EXIT trap on exit; make termination signals exit (so the temp dir goes too)
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# The script and FILEs ride in a second cpio archive appended to the base one: the kernel unpacks
# concatenated archives in order, so nothing in the shared build is modified per run.
mkdir -p "$TMP/add/root"
cp "$SCRIPT" "$TMP/add/run.sh"
for f in "$@"; do cp -a "$f" "$TMP/add/root/" || exit 2; done
(cd "$TMP/add" && find . | cpio -o -H newc --owner=0:0 --quiet) >"$TMP/add.cpio"
cat "$GDIR/initramfs.cpio" "$TMP/add.cpio" >"$TMP/initrd"

accel=${GUEST_ACCEL:-auto}
if [ "$accel" = auto ]; then
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then accel=kvm; else accel=tcg; fi
fi
# -cpu max under TCG: the kernel then sees SSE4.2/PCLMUL and picks the fast crc32c/crct10dif
# drivers that ext4 and NVMe use
if [ "$accel" = kvm ]; then accelopts=(-accel kvm -cpu "${GUEST_CPU:-host}")
else accelopts=(-accel tcg,thread=multi -cpu "${GUEST_CPU:-max}")
fi

# panic=-1: a panicking guest reboots at once, and -no-reboot turns that into QEMU exiting (125)
# instead of hanging until the timeout. VERBOSE wants the kernel's own messages too.
if [ "${VERBOSE:-0}" = 1 ]; then append="console=ttyS0 panic=-1 guest.kmsg"
else append="console=ttyS0 quiet panic=-1"
fi
share=()
if [ -n "${GUEST_SHARE:-}" ]; then
  share=(-virtfs "local,path=$GUEST_SHARE,mount_tag=hostshare,security_model=none,id=hs")
  append+=" guest.share"
fi
# a fresh nonce per run marks the start and end of the script's output on the console
nonce=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
append+=" guest.nonce=$nonce ${GUEST_APPEND:-}"

kernel=$GDIR/kernel/vmlinux
[ -s "$kernel" ] || kernel=$GDIR/kernel/vmlinuz

LOG=${GUEST_LOG:-$TMP/console.log}
start=$EPOCHREALTIME
# timeout --foreground keeps QEMU in this script's process group (plain timeout makes a new one), so
# a caller that kills the group (test/helpers/guest.ts does on its own deadline) also stops QEMU.
timeout --foreground -k 5 "${GUEST_TIMEOUT:-300}" \
  qemu-system-x86_64 "${accelopts[@]}" -m "${GUEST_MEM:-1G}" -smp "${GUEST_SMP:-1}" \
    -nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot \
    -kernel "$kernel" -initrd "$TMP/initrd" -append "$append" \
    -netdev "user,id=n0${GUEST_FWD:+,$GUEST_FWD}" -device virtio-net-pci,netdev=n0,romfile= \
    -device virtio-rng-pci "${share[@]}" \
    </dev/null 2>&1 |
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >&3
    case $line in
      *"@@GUEST-START-$nonce@@"*) echo "$EPOCHREALTIME" >"$TMP/t_start"; p=1; [ "${VERBOSE:-0}" = 1 ] && printf '%s\n' "$line"; continue ;;
      *"@@GUEST-EXIT-$nonce "*) echo "$EPOCHREALTIME" >"$TMP/t_exit"; p=0 ;;
    esac
    if [ "${p:-0}" = 1 ] || [ "${VERBOSE:-0}" = 1 ]; then printf '%s\n' "$line"; fi
  done 3>"$LOG"
qrc=${PIPESTATUS[0]}
end=$EPOCHREALTIME

rc=$(sed -n "s/.*@@GUEST-EXIT-$nonce \([0-9]*\)@@.*/\1/p" "$LOG" | tail -1)
boot=$(sed -n "s/.*@@GUEST-START-$nonce@@ uptime=//p" "$LOG" | tail -1)
t_start=$(cat "$TMP/t_start" 2>/dev/null) t_exit=$(cat "$TMP/t_exit" 2>/dev/null)
# awk, not bc: bc is not in a minimal Debian
secs() { if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; else echo '?'; fi; }
echo "run-guest: accel=$accel total=$(secs "$start" "$end")s launch-to-script=$(secs "$start" "$t_start")s script=$(secs "$t_start" "$t_exit")s guest-uptime-at-start=${boot:-?}s qemu-rc=$qrc script-rc=${rc:-none}" >&2
if [ -z "$rc" ]; then
  echo "run-guest: no exit marker (timeout or kernel panic?); last console lines:" >&2
  tail -n 30 "$LOG" >&2
  [ "$qrc" = 124 ] && exit 124
  exit 125
fi
exit "$rc"
