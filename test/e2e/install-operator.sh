#!/usr/bin/env bash
# Installs the CRD and the operator from config/default (via
# hack/build-installer.sh, the same manifests users get) into the local
# cluster, the way hack/local-cluster/demo.sh does, and waits until the
# operator is ready. With E2E_INSTALL=helm it installs the same objects with
# the Helm chart (charts/diskcache-operator; helm from bin/, built by
# `make helm` when missing), taking over objects a kustomize install made.
# Restarts the operator when it runs an older build of the same tag. The
# cluster must be up and the images imported (`make cluster-up images`).
#
# Usage: [E2E_INSTALL=kustomize|helm] test/e2e/install-operator.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${LOCAL_CLUSTER_DIR:-${ROOT}/.cache/local-cluster}"
DIR="$(cd "${DIR}" && pwd)"
export KUBECONFIG="${KUBECONFIG:-${DIR}/kubeconfig}"
IMG="${IMG:-ghcr.io/diskcache-operator/diskcache-operator:v0.1.0}"
OPERATOR_NS="diskcache-system"
OPERATOR_DEPLOYMENT="diskcache-operator-controller-manager"

log() { printf '%s e2e-install: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

install_kustomize() {
	local install_yaml="${DIR}/e2e/install.yaml"
	mkdir -p "${DIR}/e2e"
	IMG="${IMG}" bash "${ROOT}/hack/build-installer.sh" "${install_yaml}"
	kubectl apply --server-side --force-conflicts -f "${install_yaml}" >/dev/null
}

install_helm() {
	local helm="${HELM:-${ROOT}/bin/helm}" chart="${ROOT}/charts/diskcache-operator" repo tag
	if [[ ! -x "${helm}" ]]; then
		make -C "${ROOT}" --no-print-directory helm HELM="${helm}" >&2
	fi
	repo="${IMG%:*}"
	tag="${IMG##*:}"
	if [[ "${repo}" == "${IMG}" || "${tag}" == */* ]]; then
		repo="${IMG}"
		tag="latest"
	fi
	# Helm never upgrades a CRD: apply the chart's, as its README says.
	kubectl apply --server-side --force-conflicts -f "${chart}/crds/" >/dev/null
	# The namespace as config/default makes it (restricted Pod Security).
	kubectl apply --server-side --force-conflicts -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: ${OPERATOR_NS}
  labels:
    pod-security.kubernetes.io/enforce: restricted
YAML
	# --take-ownership and --force-conflicts: a kustomize install of the
	# same objects may be there (the local cluster is shared).
	"${helm}" upgrade --install diskcache-operator "${chart}" --namespace "${OPERATOR_NS}" \
		--take-ownership --force-conflicts --set "image.repository=${repo}" --set "image.tag=${tag}" >/dev/null
}

case "${E2E_INSTALL:-kustomize}" in
kustomize) install_kustomize ;;
helm) install_helm ;;
*) die "E2E_INSTALL=${E2E_INSTALL}: want kustomize or helm" ;;
esac
kubectl wait --for=condition=Established crd/diskcaches.cache.diskcache.dev --timeout=60s >/dev/null
if ! kubectl -n "${OPERATOR_NS}" rollout status "deployment/${OPERATOR_DEPLOYMENT}" --timeout=180s >/dev/null; then
	kubectl -n "${OPERATOR_NS}" describe pods >&2 || true
	kubectl -n "${OPERATOR_NS}" logs "deployment/${OPERATOR_DEPLOYMENT}" --tail=50 >&2 || true
	die "the operator did not become ready"
fi

# Same tag, new build: restart the operator so it runs the image just imported.
want="$(tar -xOf "${DIR}/images/diskcache-operator.tar" manifest.json | grep -o 'sha256:[0-9a-f]\{64\}' | head -1)"
have="$(kubectl -n "${OPERATOR_NS}" get pods -l control-plane=controller-manager \
	-o jsonpath='{range .items[*]}{.status.containerStatuses[0].imageID}{" "}{end}')"
if [[ -n "${want}" && "${have}" != *"${want}"* ]]; then
	log "the operator runs an older build of ${IMG}: restarting it"
	kubectl -n "${OPERATOR_NS}" rollout restart "deployment/${OPERATOR_DEPLOYMENT}" >/dev/null
	kubectl -n "${OPERATOR_NS}" rollout status "deployment/${OPERATOR_DEPLOYMENT}" --timeout=180s >/dev/null ||
		die "the restarted operator did not become ready"
fi
log "operator ${IMG} ready in ${OPERATOR_NS} (installed with ${E2E_INSTALL:-kustomize})"
