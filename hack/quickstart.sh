#!/usr/bin/env bash
# The main job on an embedded default: install, build, put `spacectl` on PATH, store the example
# capsule in a standalone data dir and mount its FUSE view. Prints where to `cat` it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
npm link --no-fund --no-audit --loglevel=error >/dev/null 2>&1 || true   # `spacectl` on PATH
SPACECTL="$(command -v spacectl || echo "node $(pwd)/dist/cli/spacectl.js")"
ID=550e8400-e29b-41d4-a716-446655440000
TARGET=${SPACE_VIEW:-/tmp/space-view}

if $SPACECTL project umount --target "$TARGET" >/dev/null 2>&1; then echo "(unmounted an earlier view at $TARGET)"; fi
$SPACECTL stat --id "$ID" >/dev/null 2>&1 || \
  $SPACECTL put deployment/examples/hello.txt --id "$ID" --policy-file deployment/examples/policy.yaml
$SPACECTL project mount --id "$ID" --target "$TARGET" --rw
echo
echo "The capsule is live. Try:"
echo "  cat $TARGET/content"
echo "  spacectl ls --id $ID; spacectl stat --id $ID"
echo "  spacectl project umount --target $TARGET     # when done"
