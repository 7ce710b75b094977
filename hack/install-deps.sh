#!/usr/bin/env bash
# Installs what Space needs on a fresh Debian machine: the FUSE runtime (libfuse2 + fusermount),
# openssl (TLS tests), and the npm dependencies (native addons build from source with node-gyp).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
# prometheus: the scrape test; python3-grpcio: a non-Node gRPC client for the CSI socket; nvme-cli: the
# CSI node plugin's NVMe/TCP attach (its parsers are tested against recorded output).
for pkg in libfuse2 fuse openssl python3 make g++ prometheus python3-grpcio nvme-cli util-linux libnfs-utils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# The real-kernel test guest (hack/guest): QEMU plus what goes into its initramfs. Installed without
# recommends: qemu-system-x86's recommends pull ~170 packages (~490 MB, GUI and firmware bits),
# without them it is ~30 packages (~90 MB), and the headless guest needs none of the extras.
lean=()
for pkg in qemu-system-x86 busybox-static cpio kmod xz-utils e2fsprogs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || lean+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ] || [ "${#lean[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${need[*]} ${lean[*]}"
  $SUDO apt-get update -qq
  [ "${#need[@]}" -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  [ "${#lean[@]}" -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-fund --no-audit --loglevel=error 2>&1 | grep -v 'Unknown user config' || true
fi
npx tsc -p .
# tsc writes 0644: the `spacectl` bin (linked onto PATH by npm link) must be executable.
chmod 0755 dist/cli/spacectl.js

# Build the guest kernel + initramfs into .cache/guest (a no-op when up to date; ~6 s cold, most of it
# downloading and unpacking the kernel .deb). Only where QEMU can run it; the guest tests skip
# without it (and fail under CI).
if command -v qemu-system-x86_64 >/dev/null; then
  # the kernel .deb comes from apt; an image whose apt lists were cleaned needs them once (skipped
  # when the .deb is already cached, so repeated runs stay offline and fast)
  if ! ls "${SPACE_GUEST_DIR:-.cache/guest}"/kernel/linux-image-*.deb >/dev/null 2>&1 &&
     ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
    $SUDO apt-get update -qq
  fi
  bash hack/guest/build-initramfs.sh
fi
