#!/usr/bin/env bash
# Builds the lab's tools (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy, kubectl, helm) from Go modules at the versions
# pinned in versions.env, into a cache outside the repository keyed by those
# versions, and installs the Debian packages the lab needs.
#
# Prints the directory holding the binaries on its last line of stdout.
# A warm run (everything already built) takes well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"

cache="${FERROLB_LAB_CACHE:-/var/cache/ferrolb-lab}"
key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
out="${cache}/tools/${key}"
bin="${out}/bin"
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl helm)

log() { printf 'lab-tools: %s\n' "$*" >&2; }

install_packages() {
    local wanted=(iproute2 iputils-ping arping tcpdump nftables iptables conntrack curl mount jq procps)
    local missing=() p
    for p in "${wanted[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]} > 0)); then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

complete() {
    [[ -f "${out}/.complete" ]] || return 1
    local t
    for t in "${tools[@]}"; do [[ -x "${bin}/${t}" ]] || return 1; done
}

install_packages
if complete; then
    printf '%s\n' "${bin}"
    exit 0
fi

command -v go >/dev/null || { log "go is required to build the lab tools"; exit 1; }

# Go state lives in the cache too, so a fresh clone reuses downloads and builds.
export GOPATH="${cache}/go/path"
export GOMODCACHE="${cache}/go/mod"
export GOCACHE="${cache}/go/build"
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0
mkdir -p "${bin}" "${GOPATH}" "${GOMODCACHE}" "${GOCACHE}"

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
gobuild() { nice -n 10 go build "$@"; }

# Prints the module's own go.mod path (downloading it if needed).
module_gomod() {
    (cd "$1" && go mod download -json "$2" | jq -r '.GoMod')
}

# Kubernetes: a helper module requiring k8s.io/kubernetes, with each of its
# ./staging replace directives turned into the published staging version
# (k8s.io/<name> v0.<minor>.<patch>). The list comes from k8s.io/kubernetes's
# own go.mod, so it follows new releases without edits here.
build_kubernetes() {
    local src="${out}/src/kubernetes" v="${KUBERNETES_VERSION}"
    local staging="v0.${v#v1.}"
    local major minor
    major="${v#v}"; major="${major%%.*}"
    minor="${v#v*.}"; minor="${minor%%.*}"
    rm -rf "${src}"; mkdir -p "${src}"
    cd "${src}"
    go mod init ferrolb.lab/kubernetes-tools >/dev/null 2>&1
    go mod edit -require="k8s.io/kubernetes@${v}"
    local gomod
    gomod="$(module_gomod "${src}" "k8s.io/kubernetes@${v}")"
    local replaced=0 mod
    while read -r mod; do
        go mod edit -replace="${mod}=${mod}@${staging}"
        replaced=$((replaced + 1))
    done < <(go mod edit -json "${gomod}" \
        | jq -r '.Replace[]? | select(.New.Path | startswith("./staging/")) | .Old.Path')
    ((replaced > 0)) || { log "no staging replaces found in ${gomod}"; exit 1; }
    log "kubernetes ${v}: ${replaced} staging modules replaced by ${staging}"

    local ld="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
        ld+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
    done
    log "building kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl"
    gobuild -mod=mod -ldflags "${ld}" -o "${bin}/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kube-proxy \
        k8s.io/kubernetes/cmd/kubectl
}

# etcd: a tiny main around etcdmain, in its own module so its dependency
# versions do not mix with Kubernetes'.
build_etcd() {
    local src="${out}/src/etcd"
    rm -rf "${src}"; mkdir -p "${src}"
    cd "${src}"
    go mod init ferrolb.lab/etcd >/dev/null 2>&1
    cat > main.go <<'GO'
// Command etcd runs the etcd server from go.etcd.io/etcd/server/v3.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go mod edit -require="go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
    copy_module_replaces "${src}" "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
    log "building etcd ${ETCD_VERSION}"
    gobuild -mod=mod -ldflags "-s -w" -o "${bin}/etcd" .
}

# Copies replace directives of a dependency that point at published module
# versions (not local paths) into the helper module, as the dependency's own
# build would apply them.
copy_module_replaces() {
    local src="$1" modver="$2" gomod line old new newver
    gomod="$(module_gomod "${src}" "${modver}")"
    while IFS=$'\t' read -r old new newver; do
        [[ -n "${newver}" ]] || continue
        go mod edit -replace="${old}=${new}@${newver}"
    done < <(go mod edit -json "${gomod}" \
        | jq -r '.Replace[]? | [.Old.Path + (if .Old.Version then "@" + .Old.Version else "" end), .New.Path, (.New.Version // "")] | @tsv')
}

build_helm() {
    local src="${out}/src/helm"
    rm -rf "${src}"; mkdir -p "${src}"
    cd "${src}"
    go mod init ferrolb.lab/helm >/dev/null 2>&1
    go mod edit -require="helm.sh/helm/v3@${HELM_VERSION}"
    copy_module_replaces "${src}" "helm.sh/helm/v3@${HELM_VERSION}"
    log "building helm ${HELM_VERSION}"
    gobuild -mod=mod \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        -o "${bin}/helm" helm.sh/helm/v3/cmd/helm
}

start=$(date +%s)
[[ -x "${bin}/etcd" ]] || build_etcd
[[ -x "${bin}/helm" ]] || build_helm
for t in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl; do
    if [[ ! -x "${bin}/${t}" ]]; then build_kubernetes; break; fi
done
complete_check=1
for t in "${tools[@]}"; do [[ -x "${bin}/${t}" ]] || complete_check=0; done
((complete_check)) || { log "some tools are missing after the build"; exit 1; }
date -u +%Y-%m-%dT%H:%M:%SZ > "${out}/.complete"
log "built in $(( $(date +%s) - start ))s: ${bin}"
printf '%s\n' "${bin}"
