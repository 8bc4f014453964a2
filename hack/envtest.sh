#!/usr/bin/env bash
# Builds the envtest control-plane binaries (etcd, kube-apiserver) from Go
# modules into bin/envtest/. No prebuilt binaries are downloaded: each binary
# comes from its own module under hack/tools/ whose go.mod/go.sum pin the
# exact versions. A stamp file records what was built; a binary is rebuilt
# only when it is missing or its stamp does not match the pinned version and
# the module's go.sum.
#
# Usage: hack/envtest.sh [output-dir]   (default: <repo>/bin/envtest)
# Prints the output directory (for KUBEBUILDER_ASSETS) on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${ROOT}/bin/envtest}"
GO="${GO:-go}"

ETCD_VERSION="v3.6.16"
KUBE_VERSION="v1.37.2"

mkdir -p "${OUT}"

# stamp <name> <version>: the pinned version plus a hash of the tool
# module's files, so editing go.mod/go.sum/main.go triggers a rebuild.
stamp() {
	local dir="${ROOT}/hack/tools/$1"
	printf '%s %s %s\n' "$1" "$2" "$(cat "${dir}/go.mod" "${dir}/go.sum" "${dir}/main.go" | sha256sum | cut -d' ' -f1)"
}

up_to_date() {
	local name="$1" want="$2"
	[[ -x "${OUT}/${name}" && -f "${OUT}/${name}.stamp" && "$(cat "${OUT}/${name}.stamp")" == "${want}" ]]
}

build() {
	local name="$1" want="$2"
	shift 2
	if up_to_date "${name}" "${want}"; then
		echo "envtest: ${name} is up to date (${want%% *} $(echo "${want}" | cut -d' ' -f2))" >&2
		return
	fi
	echo "envtest: building ${name} ..." >&2
	local start=${SECONDS}
	rm -f "${OUT}/${name}.stamp"
	(
		cd "${ROOT}/hack/tools/${name}"
		CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath" "${GO}" build "$@" -o "${OUT}/${name}.tmp" .
	)
	mv -f "${OUT}/${name}.tmp" "${OUT}/${name}"
	echo "${want}" > "${OUT}/${name}.stamp"
	echo "envtest: built ${name} in $((SECONDS - start))s" >&2
}

build etcd "$(stamp etcd "${ETCD_VERSION}")" \
	-ldflags "-s -w"

kube_major="${KUBE_VERSION#v}"; kube_major="${kube_major%%.*}"
kube_minor="${KUBE_VERSION#v*.}"; kube_minor="${kube_minor%%.*}"
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	version_flags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
	version_flags+=" -X ${pkg}.gitMajor=${kube_major}"
	version_flags+=" -X ${pkg}.gitMinor=${kube_minor}"
	version_flags+=" -X ${pkg}.gitTreeState=clean"
done
build kube-apiserver "$(stamp kube-apiserver "${KUBE_VERSION}")" \
	-ldflags "-s -w${version_flags}"

echo "${OUT}"
