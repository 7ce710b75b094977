# Guest script (busybox sh; run it with hack/guest/run-guest.sh hack/guest/nvmet-dd.sh).
# Baseline for the NVMe/TCP benchmark: the guest kernel's own NVMe/TCP target (nvmet-tcp) serves a
# 128 MiB file on tmpfs over loopback, the guest's own initiator (nvme-tcp) connects, and dd moves
# 64 MiB each way with direct I/O. The numbers are what the emulated guest can do with the kernel
# on both ends, i.e. the ceiling a Space target can be compared against on the same machine.
#
# Output (machine-parsable, one per line):
#   dd-write-MiBps=<n>   dd if=/dev/zero of=<dev> bs=1M count=64 oflag=direct
#   dd-read-MiBps=<n>    dd if=<dev> of=/dev/null bs=1M count=64 iflag=direct
# plus dd-write-seconds= / dd-read-seconds= and device=. Exit status 0 only if all worked.
#
# With ADDR set (variables put in front of the script), no nvmet is configured: the same dd runs
# against the subsystem NQN at ADDR:PORT instead (bench/nvme.ts measures the Space target so).

NQN=${NQN:-nqn.2024-01.io.space.test:nvmet-dd}
PORT=${PORT:-4420}
ADDR=${ADDR:-}
CFG=/sys/kernel/config/nvmet
BACKING=/tmp/nvmet-dd.img
MB=${MB:-64}

die() { echo "nvmet-dd: $*" >&2; exit 1; }
# /proc/uptime has 10 ms resolution, which is plenty for transfers that take seconds; busybox has
# no date +%N to do better.
now() { cut -d' ' -f1 /proc/uptime; }
rate() { awk -v mb="$MB" -v s="$1" -v e="$2" 'BEGIN { d = e - s; if (d < 0.01) d = 0.01; printf "%.1f", mb / d }'; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.2f", e - s }'; }

modprobe nvme-tcp || die "modprobe nvme-tcp failed"
if [ -z "$ADDR" ]; then
  modprobe nvmet-tcp || die "modprobe nvmet-tcp failed"
  grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs none /sys/kernel/config || die "mount configfs failed"

  # /tmp is tmpfs: the backing store costs no emulated disk I/O, so the numbers measure NVMe/TCP.
  truncate -s 128M "$BACKING" || die "truncate failed"
  mkdir "$CFG/subsystems/$NQN" || die "creating the subsystem failed"
  echo 1 >"$CFG/subsystems/$NQN/attr_allow_any_host"
  mkdir "$CFG/subsystems/$NQN/namespaces/1"
  echo "$BACKING" >"$CFG/subsystems/$NQN/namespaces/1/device_path"
  # tmpfs files cannot be opened O_DIRECT, which nvmet's file backend uses by default
  echo 1 >"$CFG/subsystems/$NQN/namespaces/1/buffered_io"
  echo 1 >"$CFG/subsystems/$NQN/namespaces/1/enable" || die "enabling the namespace failed"
  mkdir "$CFG/ports/1"
  echo tcp >"$CFG/ports/1/addr_trtype"
  echo ipv4 >"$CFG/ports/1/addr_adrfam"
  echo 127.0.0.1 >"$CFG/ports/1/addr_traddr"
  echo "$PORT" >"$CFG/ports/1/addr_trsvcid"
  ln -s "$CFG/subsystems/$NQN" "$CFG/ports/1/subsystems/$NQN" || die "enabling the port failed"
  ADDR=127.0.0.1
fi

nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" >/dev/null || die "nvme connect failed"
# Find the namespace's block device by subsystem NQN rather than guessing nvme0n1, and wait for it:
# it appears asynchronously after connect returns. /sys/block/X/device is the controller (or, with
# native multipath, the subsystem); both carry subsysnqn.
dev=
i=0
while [ -z "$dev" ] && [ $i -lt 100 ]; do
  for b in /sys/block/nvme*; do
    [ "$(cat "$b/device/subsysnqn" 2>/dev/null)" = "$NQN" ] && [ -b "/dev/${b##*/}" ] && dev=/dev/${b##*/} && break
  done
  [ -n "$dev" ] || { sleep 0.1; i=$((i + 1)); }
done
[ -n "$dev" ] || die "no block device for $NQN after connect"
echo "device=$dev"

t0=$(now)
dd if=/dev/zero of="$dev" bs=1M count=$MB oflag=direct 2>/dev/null || die "dd write failed"
t1=$(now)
dd if="$dev" of=/dev/null bs=1M count=$MB iflag=direct 2>/dev/null || die "dd read failed"
t2=$(now)
echo "dd-write-seconds=$(secs "$t0" "$t1")"
echo "dd-read-seconds=$(secs "$t1" "$t2")"
echo "dd-write-MiBps=$(rate "$t0" "$t1")"
echo "dd-read-MiBps=$(rate "$t1" "$t2")"

nvme disconnect -n "$NQN" >/dev/null || die "nvme disconnect failed"
