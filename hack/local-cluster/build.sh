#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules into DIR/bin (default
# .cache/local-cluster/bin): etcd (hack/tools/etcd, the envtest module), the
# Kubernetes components and cri-cleanup (hack/local-cluster/kube), CoreDNS
# (hack/local-cluster/coredns), the NetworkPolicy enforcer
# (hack/local-cluster/netpol) and the PKI generator (hack/local-cluster/pki).
#
# Each binary has a stamp file: "<name> <version> <hash of its module's
# files>". A binary is rebuilt only when it is missing or its stamp differs,
# so a warm run costs nothing. The three big builds run concurrently: on two
# cores that overlaps one build's single-threaded link with another's compile.
#
# The flags match hack/envtest.sh (CGO_ENABLED=0, -trimpath, -mod=readonly)
# so the packages etcd and kube-apiserver share with envtest come out of the
# Go build cache instead of being compiled twice.
#
# Usage: hack/local-cluster/build.sh [DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="${ROOT}/hack/local-cluster"
DIR="${1:-${LOCAL_CLUSTER_DIR:-${ROOT}/.cache/local-cluster}}"
BIN="${DIR}/bin"
GO="${GO:-go}"

# Pinned versions. KUBE_VERSION must match k8s.io/kubernetes in kube/go.mod,
# ETCD_VERSION go.etcd.io/etcd/server/v3 in hack/tools/etcd/go.mod and
# COREDNS_VERSION github.com/coredns/coredns in coredns/go.mod (checked below).
KUBE_VERSION="v1.37.2"
ETCD_VERSION="v3.6.16"
COREDNS_VERSION="v1.15.0"
NETPOL_VERSION="v0.8.0" # sigs.k8s.io/kube-network-policies in netpol/go.mod

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy cri-cleanup)

mkdir -p "${BIN}"

log() { printf '%s build: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# modhash DIR: a hash over the module's go.mod, go.sum and Go sources.
modhash() {
	(cd "$1" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1)
}

# require_pin MODDIR MODULE VERSION: fail early when a go.mod drifted from
# the version this script stamps into the binaries.
require_pin() {
	if ! grep -Eq "^[[:space:]]*(require[[:space:]]+)?$2 $3( |$)" "$1/go.mod"; then
		echo "build: $1/go.mod does not require $2 $3; update the pins in $0" >&2
		exit 1
	fi
}

up_to_date() { # stamp binary...
	local want="$1" b
	shift
	for b in "$@"; do
		[[ -x "${BIN}/${b}" && -f "${BIN}/${b}.stamp" && "$(cat "${BIN}/${b}.stamp")" == "${want}" ]] || return 1
	done
}

# build NAME MODDIR STAMP LDFLAGS PACKAGES BINARIES...: go build the packages
# into BIN (one go command for all, so they share one compile), then stamp.
build() {
	local name="$1" moddir="$2" want="$3" ldflags="$4" pkgs="$5"
	shift 5
	if up_to_date "${want}" "$@"; then
		log "${name} is up to date (${want#* })"
		return 0
	fi
	local start=${SECONDS} tmp b
	tmp="$(mktemp -d "${BIN}/.build-${name}.XXXXXX")"
	log "building ${name} (${*}) ..."
	# shellcheck disable=SC2086 # pkgs is a list of package patterns
	if ! (cd "${moddir}" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath -buildvcs=false" \
		"${GO}" build -ldflags "${ldflags}" -o "${tmp}/" ${pkgs}); then
		rm -rf "${tmp}"
		log "building ${name} FAILED"
		return 1
	fi
	for b in "$@"; do
		mv -f "${tmp}/${b}" "${BIN}/${b}"
		echo "${want}" >"${BIN}/${b}.stamp"
	done
	rm -rf "${tmp}"
	log "built ${name} in $((SECONDS - start))s"
}

require_pin "${HERE}/kube" k8s.io/kubernetes "${KUBE_VERSION}"
require_pin "${ROOT}/hack/tools/etcd" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}"
require_pin "${HERE}/coredns" github.com/coredns/coredns "${COREDNS_VERSION}"
require_pin "${HERE}/netpol" sigs.k8s.io/kube-network-policies "${NETPOL_VERSION}"

kube_minor="${KUBE_VERSION#v*.}"
kube_minor="${kube_minor%%.*}"
kube_major="${KUBE_VERSION#v}"
kube_major="${kube_major%%.*}"
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	kube_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=${kube_major}"
	kube_ldflags+=" -X ${pkg}.gitMinor=${kube_minor} -X ${pkg}.gitTreeState=clean"
done

start=${SECONDS}
pids=()
build pki "${HERE}/pki" "pki $(modhash "${HERE}/pki")" "-s -w" . pki & pids+=($!)
build kubernetes "${HERE}/kube" "kubernetes ${KUBE_VERSION} $(modhash "${HERE}/kube")" \
	"${kube_ldflags}" ./cmd/... "${KUBE_BINARIES[@]}" & pids+=($!)
build etcd "${ROOT}/hack/tools/etcd" "etcd ${ETCD_VERSION} $(modhash "${ROOT}/hack/tools/etcd")" \
	"-s -w" . etcd & pids+=($!)
build coredns "${HERE}/coredns" "coredns ${COREDNS_VERSION} $(modhash "${HERE}/coredns")" \
	"-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}" . coredns & pids+=($!)
build netpol "${HERE}/netpol" "netpol ${NETPOL_VERSION} $(modhash "${HERE}/netpol")" "-s -w" . netpol & pids+=($!)
failed=0
for pid in "${pids[@]}"; do
	wait "${pid}" || failed=1
done
if ((failed)); then
	log "some builds failed"
	exit 1
fi
log "binaries ready in ${BIN} ($((SECONDS - start))s)"
