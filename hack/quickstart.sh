#!/usr/bin/env bash
# The main job on an embedded default (standalone mode, no cluster): install, build, put
# `spacectl` on PATH, then `spacectl apply -f deployment/examples/` — the same manifests a cluster
# takes. Apply starts the standalone server (gateway + operator) in the background; the operator
# stores the example capsules and mounts the FUSE view. Also stores the example capsule by id and
# mounts it at /tmp/space-view, as `spacectl put` / `project mount` do. Prints where to `cat`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/install-deps.sh
npm link --no-fund --no-audit --loglevel=error >/dev/null 2>&1 || true   # `spacectl` on PATH
SPACECTL="$(command -v spacectl || echo "node $(pwd)/dist/cli/spacectl.js")"
ID=550e8400-e29b-41d4-a716-446655440000
TARGET=${SPACE_VIEW:-/tmp/space-view}

$SPACECTL apply -f deployment/examples/ --wait
echo
$SPACECTL get space
echo
if $SPACECTL project umount --target "$TARGET" >/dev/null 2>&1; then echo "(unmounted an earlier view at $TARGET)"; fi
$SPACECTL stat --id "$ID" >/dev/null 2>&1 || \
  $SPACECTL put deployment/examples/hello.txt --id "$ID" --policy-file deployment/examples/policy.yaml
$SPACECTL project mount --id "$ID" --target "$TARGET" --rw
HOME_DIR=${SPACE_HOME:-$HOME/.space}
echo
echo "Space runs standalone on $HOME_DIR. Try:"
echo "  cat /tmp/space-views/hello/content      # the CapsuleView hello-fuse (deployment/examples/view-fuse.yaml)"
echo "  cat $TARGET/content                     # the capsule stored with spacectl put"
echo "  nfs-cat 'nfs://127.0.0.1/default/hello-nfs/content?version=4'   # the NFS view hello-nfs (or mount -t nfs -o vers=4.2)"
echo "  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n nqn.2024-11.io.space:default.scratch   # the NVMe/TCP view (needs nvme-tcp)"
echo "  spacectl get capsules; spacectl get cv -o yaml; spacectl ls"
echo "  kill \$(cat $HOME_DIR/objects/operator.pid)   # stop the standalone server (unmounts its views)"
