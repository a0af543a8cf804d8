#!/usr/bin/env bash
# Builds pinned etcd, the Kubernetes binaries (control plane, kubelet,
# kube-proxy, kubectl), CoreDNS, helm and the pause binary from the Go module
# proxy into a cache directory. Reruns reuse the cache.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
CACHE_DIR="${PALISADE_E2E_CACHE:-$HOME/.cache/palisade-e2e}"
BIN_DIR="$CACHE_DIR/bin"
STAMP="$BIN_DIR/.versions"
WANT="k8s=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION coredns=$COREDNS_VERSION stamped"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns helm pause)

mkdir -p "$BIN_DIR"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  for b in "${BINARIES[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] || { rm -f "$STAMP"; break; }
  done
  [[ -f "$STAMP" ]] && { echo "e2e binaries cached in $BIN_DIR ($WANT)"; exit 0; }
fi

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

build_in_module() {
  # $1: module dir; rest: go build args
  local dir="$1"; shift
  (cd "$dir" && go build -trimpath -ldflags="-s -w" "$@")
}

# --- etcd: etcdmain from the server module, wrapped in a one-line main. ---
if [[ ! -x "$BIN_DIR/etcd" || "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]]; then
  work="$CACHE_DIR/src/etcd"
  rm -rf "$work" && mkdir -p "$work"
  cat >"$work/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work" && go mod init palisade.dev/e2e/etcd >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy)
  build_in_module "$work" -o "$BIN_DIR/etcd" .
fi

# --- Kubernetes: k8s.io/kubernetes replaces its staging modules with local
# paths, so a consumer module pins each staging module to the matching v0.x tag.
work="$CACHE_DIR/src/kubernetes"
rm -rf "$work" && mkdir -p "$work"
staging_version="v0.${K8S_VERSION#v1.}"
(cd "$work" && go mod init palisade.dev/e2e/kubernetes >/dev/null 2>&1)
gomod_url="$(go env GOPROXY | cut -d, -f1)/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
curl -fsSL "$gomod_url" -o "$work/kubernetes.mod"
grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$work/kubernetes.mod" \
  | awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}' >>"$work/go.mod"
cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
(cd "$work" && go get "k8s.io/kubernetes@$K8S_VERSION" && go mod tidy)
# One invocation: the packages they share are compiled once, in parallel.
cmds=()
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  cmds+=("k8s.io/kubernetes/cmd/$cmd")
done
# Stamp the version the way Kubernetes' own build does, so nodes, kubectl
# and Helm see v1.34.x rather than v0.0.0.
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
(cd "$work" && go build -trimpath -ldflags="-s -w$version_ldflags" -o "$BIN_DIR/" "${cmds[@]}")

# --- pause: the sandbox process of every Pod, from the same Kubernetes
# source (build/pause/linux/pause.c), linked statically.
k8s_src="$(cd "$work" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
"${PAUSE_CC:-musl-gcc}" -Os -static -Wall -Werror \
  -DVERSION="\"palisade-e2e-$K8S_VERSION\"" \
  -o "$BIN_DIR/pause" "$k8s_src/build/pause/linux/pause.c"
strip "$BIN_DIR/pause" 2>/dev/null || true

# --- CoreDNS: coremain with just the plugins a cluster DNS needs, the way
# CoreDNS documents external builds (the full plugin set compiles for minutes).
work="$CACHE_DIR/src/coredns"
rm -rf "$work" && mkdir -p "$work"
cat >"$work/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// Plugin chain order, as in CoreDNS's plugin.cfg.
func init() {
	dnsserver.Directives = []string{"errors", "log", "health", "ready", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
(cd "$work" && go mod init palisade.dev/e2e/coredns >/dev/null 2>&1 \
  && go get "github.com/coredns/coredns@$COREDNS_VERSION" && go mod tidy)
build_in_module "$work" -o "$BIN_DIR/coredns" .

# --- helm ---
work="$CACHE_DIR/src/helm"
rm -rf "$work" && mkdir -p "$work"
(cd "$work" && go mod init palisade.dev/e2e/helm >/dev/null 2>&1 \
  && printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' >tools.go \
  && go get "helm.sh/helm/v3@$HELM_VERSION" && go mod tidy)
build_in_module "$work" -o "$BIN_DIR/helm" helm.sh/helm/v3/cmd/helm

echo "$WANT" >"$STAMP"
echo "e2e binaries built in $BIN_DIR ($WANT)"
