#!/usr/bin/env bash
# hack/ganesha.sh start EXPORT_DIR | stop | status | exec CMD...
#
# nfs-ganesha (Debian's nfs-ganesha + nfs-ganesha-vfs, FSAL_VFS) exporting a plain directory on
# loopback, as a reference server for benchmarks (bench/nfs.ts) and manual interop checks.
#
# Ganesha serves NFSv3 only after registering with rpcbind, and rpcbind always listens on
# 0.0.0.0:111. So both run in a network namespace ($GANESHA_NETNS) that has nothing but `lo`:
# nothing is reachable from outside it, and clients run in it too:
#   hack/ganesha.sh start /tmp/plain
#   hack/ganesha.sh exec nfs-ls 'nfs://127.0.0.1/export?version=3&nfsport=2049&mountport=20048'
#   hack/ganesha.sh stop
# They also get a private mount namespace with fresh tmpfs on /run and /var/lib/nfs/ganesha:
# rpcbind's lock file and unix socket (/run/rpcbind.{lock,sock}) are paths, shared across network
# namespaces, so without that a second rpcbind (another namespace, or the host's) refuses to start,
# or ganesha registers with the wrong one.
#
# Environment:
#   GANESHA_NETNS       network namespace (default space-ganesha); created if missing, and then
#                       deleted again by `stop` (an existing one is used and left alone)
#   GANESHA_RUN         config, logs, pid files (default /tmp/space-ganesha.$GANESHA_NETNS)
#   GANESHA_PORT        NFS port (default 2049)
#   GANESHA_MOUNT_PORT  MOUNT port (default 20048; fixed, so clients can skip the portmapper)
#   GANESHA_PSEUDO      export path for NFSv3 MOUNT and the NFSv4 pseudo fs (default /export)
#   GANESHA_PROTOCOLS   default "3, 4"
#   GANESHA_MAX_S       the servers stop by themselves after this many seconds (default 3600)
#
# Needs root (namespaces) and: apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind
# (libnfs-utils for nfs-ls / nfs-cp clients). Not in hack/install-deps.sh on purpose: only
# benchmarks use it, and installing rpcbind may start it as a service.
set -uo pipefail

NS=${GANESHA_NETNS:-space-ganesha}
RUN=${GANESHA_RUN:-/tmp/space-ganesha.$NS}
PORT=${GANESHA_PORT:-2049}
MPORT=${GANESHA_MOUNT_PORT:-20048}
PSEUDO=${GANESHA_PSEUDO:-/export}
PROTOCOLS=${GANESHA_PROTOCOLS:-3, 4}
MAX_S=${GANESHA_MAX_S:-3600}

die() { echo "ganesha.sh: $*" >&2; exit "${rc:-1}"; }

# The process group of a running instance ("" when none). The leader is the `timeout` wrapper,
# whose command line names $RUN: a stale pid file never makes us signal someone else's group.
running_pgid() {
  local pgid
  pgid=$(cat "$RUN/pgid" 2>/dev/null) || return 0
  [[ $pgid =~ ^[0-9]+$ ]] || return 0
  tr '\0' ' ' < "/proc/$pgid/cmdline" 2>/dev/null | grep -qF -- "$RUN" && echo "$pgid"
  return 0
}

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

preflight() {
  rc=2
  [ "$(id -u)" = 0 ] || die "needs root (network and mount namespaces)"
  local c
  for c in ip unshare setsid timeout ganesha.nfsd rpcbind rpcinfo; do
    command -v "$c" >/dev/null || die "$c not found; install with: apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind"
  done
  compgen -G '/usr/lib/*/ganesha/libfsalvfs.so*' >/dev/null || compgen -G '/usr/lib*/ganesha/libfsalvfs.so*' >/dev/null ||
    die "ganesha's VFS FSAL is missing; install with: apt-get install nfs-ganesha-vfs"
  ip netns list >/dev/null 2>&1 || die "'ip netns' does not work here"
  rc=1
}

write_config() {
  cat > "$RUN/ganesha.conf" <<EOF
# written by hack/ganesha.sh
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = $PORT;
    MNT_Port = $MPORT;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Mount_Path_Pseudo = true;   # NFSv3 MOUNT takes the pseudo path too (default: the real Path)
    Protocols = $PROTOCOLS;
}
NFSV4 {
    Graceless = true;           # no 90 s grace period after start
    Lease_Lifetime = 10;
    Only_Numeric_Owners = true;
}
EXPORT_DEFAULTS { SecType = sys; Squash = No_Root_Squash; }
EXPORT {
    Export_Id = 1;
    Path = $EXPORT;
    Pseudo = $PSEUDO;
    Access_Type = RW;
    Protocols = $PROTOCOLS;
    Transports = TCP;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
EOF
}

# Runs inside the namespaces (as `bash -c`, $1 = $RUN): private /run, rpcbind, then ganesha.
# shellcheck disable=SC2016
SUPERVISOR='
set -e
RUN=$1
mount -t tmpfs -o mode=0755 space-ganesha-run /run
mkdir -p /run/rpcbind /run/ganesha
mount -t tmpfs -o mode=0755 space-ganesha-state /var/lib/nfs/ganesha
rpcbind -f > "$RUN/rpcbind.out" 2>&1 &
for _ in $(seq 100); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.05; done
exec ganesha.nfsd -F -L "$RUN/ganesha.log" -f "$RUN/ganesha.conf" -p "$RUN/ganesha.pid"
'

ready() {
  local url="nfs://127.0.0.1$PSEUDO?version=3&nfsport=$PORT&mountport=$MPORT"
  if command -v nfs-ls >/dev/null && [[ $PROTOCOLS == *3* ]]; then
    ip netns exec "$NS" timeout 5 nfs-ls "$url" >/dev/null 2>&1
  else
    ip netns exec "$NS" timeout 5 rpcinfo -n "$PORT" -t 127.0.0.1 100003 >/dev/null 2>&1
  fi
}

stop() {
  local pgid
  pgid=$(running_pgid)
  if [ -n "$pgid" ]; then
    kill -TERM -- "-$pgid" 2>/dev/null
    for _ in $(seq 60); do group_alive "$pgid" || break; sleep 0.25; done
    group_alive "$pgid" && kill -KILL -- "-$pgid" 2>/dev/null
  fi
  if [ -f "$RUN/netns-created" ]; then
    ip netns del "$NS" 2>/dev/null
    rm -f "$RUN/netns-created"
  fi
  rm -f "$RUN/pgid" "$RUN/ganesha.pid"
  echo "ganesha.sh: stopped${pgid:+ (process group $pgid)}"
}

case ${1:-} in
start)
  EXPORT=${2:-}
  [ -n "$EXPORT" ] || { rc=2; die "usage: $0 start EXPORT_DIR"; }
  preflight
  [ -z "$(running_pgid)" ] || die "already running (process group $(running_pgid)); run: $0 stop"
  mkdir -p "$EXPORT" "$RUN" /var/lib/nfs/ganesha
  EXPORT=$(cd "$EXPORT" && pwd -P)
  write_config
  rm -f "$RUN/ganesha.log"
  t0=$(date +%s.%N)
  if ! ip netns list | grep -qE "^$NS( |$)"; then
    ip netns add "$NS" || die "cannot create network namespace $NS"
    touch "$RUN/netns-created"
  fi
  ip -n "$NS" link set lo up
  # glibc's getaddrinfo (AI_ADDRCONFIG) ignores loopback addresses when deciding whether IPv4 is
  # configured, and then ganesha cannot resolve Bind_addr: any second address on lo fixes that.
  ip -n "$NS" addr add 127.0.0.2/8 dev lo 2>/dev/null || true
  # setsid: a process group of its own (rpcbind and ganesha included), so stop can signal all of it.
  setsid ip netns exec "$NS" unshare --mount --propagation private -- \
    timeout "$MAX_S" bash -c "$SUPERVISOR" supervisor "$RUN" < /dev/null > "$RUN/supervisor.out" 2>&1 &
  echo $! > "$RUN/pgid"
  for _ in $(seq 150); do
    if ready; then
      printf 'ganesha.sh: ready in %.2f s (netns %s, 127.0.0.1:%s, mount port %s, %s -> %s, log %s)\n' \
        "$(echo "$(date +%s.%N) - $t0" | bc)" "$NS" "$PORT" "$MPORT" "$PSEUDO" "$EXPORT" "$RUN/ganesha.log"
      exit 0
    fi
    [ -n "$(running_pgid)" ] || break
    sleep 0.1
  done
  echo "ganesha.sh: ganesha did not come up; see $RUN/ganesha.log and $RUN/supervisor.out" >&2
  grep -E 'MAJ|CRIT|FATAL' "$RUN/ganesha.log" 2>/dev/null | grep -v DBUS | tail -5 >&2
  tail -5 "$RUN/supervisor.out" >&2 2>/dev/null
  stop >/dev/null
  exit 1;;
stop)
  stop;;
status)
  pgid=$(running_pgid)
  [ -n "$pgid" ] || { echo "ganesha.sh: not running (netns $NS)"; exit 3; }
  echo "ganesha.sh: running, process group $pgid, netns $NS"
  ps -o pid,comm,args -g "$pgid" | cut -c1-120
  ip netns exec "$NS" rpcinfo -p 127.0.0.1;;
exec)
  shift
  [ $# -gt 0 ] || { rc=2; die "usage: $0 exec CMD..."; }
  exec ip netns exec "$NS" "$@";;
*)
  sed -n '2,30p' "$0"; exit 2;;
esac
