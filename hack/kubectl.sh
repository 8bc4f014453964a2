#!/usr/bin/env bash
# Builds kubectl from the k8s.io/kubectl Go module (hack/tools/kubectl) into
# the given directory, for machines without one (Debian ships no kubectl
# package). A stamp file records what was built; kubectl is rebuilt only
# when it is missing or its stamp does not match the pinned version and the
# module's files.
#
# Usage: hack/kubectl.sh [output-dir]   (default: <repo>/bin)
# Prints the path of kubectl on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${ROOT}/bin}"
GO="${GO:-go}"
KUBE_VERSION="v1.37.2" # the version of the local cluster and envtest (hack/envtest.sh)

dir="${ROOT}/hack/tools/kubectl"
want="kubectl ${KUBE_VERSION} $(cat "${dir}/go.mod" "${dir}/go.sum" "${dir}/main.go" | sha256sum | cut -d' ' -f1)"
mkdir -p "${OUT}"
if [[ -x "${OUT}/kubectl" && -f "${OUT}/kubectl.stamp" && "$(cat "${OUT}/kubectl.stamp")" == "${want}" ]]; then
	echo "kubectl: up to date (${KUBE_VERSION})" >&2
else
	echo "kubectl: building ${KUBE_VERSION} ..." >&2
	start=${SECONDS}
	rm -f "${OUT}/kubectl.stamp"
	major="${KUBE_VERSION#v}"; major="${major%%.*}"
	minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
	done
	(
		cd "${dir}"
		CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath" "${GO}" build -ldflags "${ldflags}" -o "${OUT}/kubectl.tmp" .
	)
	mv -f "${OUT}/kubectl.tmp" "${OUT}/kubectl"
	echo "${want}" >"${OUT}/kubectl.stamp"
	echo "kubectl: built in $((SECONDS - start))s" >&2
fi
echo "${OUT}/kubectl"
