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
for pkg in libfuse2 fuse openssl python3 make g++ prometheus python3-grpcio nvme-cli util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-fund --no-audit --loglevel=error 2>&1 | grep -v 'Unknown user config' || true
fi
npx tsc -p .
