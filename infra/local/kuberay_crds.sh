#!/usr/bin/env bash
# KubeRay's CRDs (RayCluster, RayJob, RayService), to check infra/k8s against their schemas:
# the ray-operator Go module at KUBERAY_VERSION, fetched with `go mod download` into the cache
# (once), whose config/crd/bases holds the CRDs KubeRay installs. Prints that folder.
#   bash infra/local/kuberay_crds.sh     ->  ~/.cache/embedworker/go-mod/github.com/ray-project/kuberay/ray-operator@v1.5.0/config/crd/bases
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KUBERAY_VERSION="${KUBERAY_VERSION:-v1.5.0}"
command -v go >/dev/null || die "no go command here: KubeRay's CRDs come as its Go module (install Go to check infra/k8s against them)"
export GOMODCACHE="$CACHE_DIR/go-mod" GOFLAGS=-modcacherw
dir="$(cd "$(mktemp -d)" && GO111MODULE=on go mod download -json "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" \
      | "$PYTHON" -c 'import json, sys; info = json.load(sys.stdin); print(info.get("Dir") or sys.exit(info.get("Error", "no Dir")))')"
[ -f "$dir/config/crd/bases/ray.io_rayservices.yaml" ] || die "KubeRay $KUBERAY_VERSION has no config/crd/bases/ray.io_rayservices.yaml"
echo "$dir/config/crd/bases"
