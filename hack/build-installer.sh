#!/usr/bin/env bash
# Writes a single install manifest (CRD, RBAC, namespace, operator
# Deployment) for the image $IMG: config/default with the image replaced.
# Usage: IMG=registry/diskcache-operator:tag hack/build-installer.sh dist/install.yaml
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?output file}"
IMG="${IMG:?IMG=<image> is required}"
# The kubectl on PATH, else the one `make kubectl` builds into bin/.
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "${ROOT}/bin/kubectl")}"
command -v "${KUBECTL}" >/dev/null || { echo "build-installer: no kubectl at ${KUBECTL} (make kubectl builds one into bin/)" >&2; exit 1; }

name="${IMG%:*}"
tag="${IMG##*:}"
if [[ "${name}" == "${IMG}" || "${tag}" == */* ]]; then
	name="${IMG}"
	tag="latest"
fi
overlay="$(mktemp -d "${ROOT}/config/.installer.XXXXXX")"
trap 'rm -rf "${overlay}"' EXIT
cat > "${overlay}/kustomization.yaml" <<YAML
resources:
- ../default
images:
- name: ghcr.io/diskcache-operator/diskcache-operator
  newName: ${name}
  newTag: ${tag}
# The cacheserver image defaults to the operator image (config/default does
# the same before this overlay changes the image).
replacements:
- source:
    kind: Deployment
    name: diskcache-operator-controller-manager
    fieldPath: spec.template.spec.containers.[name=manager].image
  targets:
  - select:
      kind: Deployment
      name: diskcache-operator-controller-manager
    fieldPaths:
    - spec.template.spec.containers.[name=manager].env.[name=CACHESERVER_IMAGE].value
YAML
mkdir -p "$(dirname "${OUT}")"
"${KUBECTL}" kustomize "${overlay}" > "${OUT}.tmp"
mv -f "${OUT}.tmp" "${OUT}"
