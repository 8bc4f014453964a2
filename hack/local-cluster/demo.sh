#!/usr/bin/env bash
# `make demo`: from a fresh clone to a running DiskCache on a real local
# cluster. Brings the cluster up (hack/local-cluster/local-cluster.sh up),
# builds and imports the project image, installs the CRD and the operator
# from config/default (the manifests users get, via hack/build-installer.sh),
# applies config/samples, waits until the DiskCache is Available, prints how
# to reach it and does a set/get through its Service: once from the host
# through `kubectl port-forward` and once from a pod through cluster DNS.
#
# Usage: hack/local-cluster/demo.sh        `make demo-down` stops the cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="${ROOT}/hack/local-cluster"
DIR="${LOCAL_CLUSTER_DIR:-${ROOT}/.cache/local-cluster}"
IMG="${IMG:-ghcr.io/diskcache-operator/diskcache-operator:v0.1.0}"
TOOLBOX_IMAGE="${TOOLBOX_IMAGE:-localhost/diskcache-toolbox:v1}"
OPERATOR_NS="diskcache-system"
OPERATOR_DEPLOYMENT="diskcache-operator-controller-manager"
DEMO_NS="${DEMO_NAMESPACE:-default}"
LOCAL_PORT="${DEMO_LOCAL_PORT:-18080}"

T0=${SECONDS}
TIMINGS=()
phase_start=${SECONDS}
phase_name=""
log() { printf '%s demo: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
phase() {
	if [[ -n "${phase_name}" ]]; then
		TIMINGS+=("$(printf '%-34s %4ss' "${phase_name}" "$((SECONDS - phase_start))")")
	fi
	phase_name="$1"
	phase_start=${SECONDS}
	[[ -z "$1" ]] || log "== $1"
}
die() {
	log "ERROR: $*"
	exit 1
}

missing=()
for f in config/default/kustomization.yaml config/samples/kustomization.yaml cmd/manager/main.go; do
	[[ -f "${ROOT}/${f}" ]] || missing+=("${f}")
done
((${#missing[@]} == 0)) || die "the operator is not there yet: missing ${missing[*]}"

phase "cluster up (+ project image build)"
# The project image builds meanwhile (on a cold machine its cgo SQLite
# compile overlaps the Kubernetes build); the images step then only packs
# and imports.
mkdir -p "${DIR}"
prebuild_log="${DIR}/demo-image-build.log"
IMG="${IMG}" "${ROOT}/hack/image/build.sh" -o "${DIR}/.demo-prebuild" project >"${prebuild_log}" 2>&1 &
prebuild=$!
"${HERE}/local-cluster.sh" up >/dev/null
DIR="$(cd "${DIR}" && pwd)"
export KUBECONFIG="${DIR}/kubeconfig"
wait "${prebuild}" || die "building the project image failed: $(tail -20 "${prebuild_log}")"
rm -rf "${DIR}/.demo-prebuild" "${prebuild_log}"

phase "images"
IMG="${IMG}" "${HERE}/local-cluster.sh" images project toolbox

phase "install CRD + operator"
install_yaml="${DIR}/demo/install.yaml"
mkdir -p "${DIR}/demo"
if [[ -x "${ROOT}/hack/build-installer.sh" ]]; then
	IMG="${IMG}" bash "${ROOT}/hack/build-installer.sh" "${install_yaml}"
else
	kubectl kustomize "${ROOT}/config/default" >"${install_yaml}"
fi
kubectl apply --server-side --force-conflicts -f "${install_yaml}" >/dev/null
kubectl wait --for=condition=Established crd/diskcaches.cache.diskcache.dev --timeout=60s >/dev/null
if ! kubectl -n "${OPERATOR_NS}" rollout status "deployment/${OPERATOR_DEPLOYMENT}" --timeout=180s; then
	kubectl -n "${OPERATOR_NS}" describe pods >&2 || true
	kubectl -n "${OPERATOR_NS}" logs "deployment/${OPERATOR_DEPLOYMENT}" --tail=50 >&2 || true
	die "the operator did not become ready"
fi

# Same tag, new build (make demo again after a code change): restart the
# operator so it runs the image just imported.
want="$(tar -xOf "${DIR}/images/diskcache-operator.tar" manifest.json | grep -o 'sha256:[0-9a-f]\{64\}' | head -1)"
have="$(kubectl -n "${OPERATOR_NS}" get pods -l control-plane=controller-manager \
	-o jsonpath='{range .items[*]}{.status.containerStatuses[0].imageID}{" "}{end}')"
if [[ -n "${want}" && "${have}" != *"${want}"* ]]; then
	log "the operator runs an older build of ${IMG}: restarting it"
	kubectl -n "${OPERATOR_NS}" rollout restart "deployment/${OPERATOR_DEPLOYMENT}" >/dev/null
	kubectl -n "${OPERATOR_NS}" rollout status "deployment/${OPERATOR_DEPLOYMENT}" --timeout=180s >/dev/null ||
		die "the restarted operator did not become ready"
fi

phase "apply config/samples"
kubectl -n "${DEMO_NS}" apply -k "${ROOT}/config/samples"
# The sample's name: the first DiskCache in config/samples.
name="$(kubectl kustomize "${ROOT}/config/samples" | awk '/^kind: DiskCache/{k=1} k && /^  name:/{print $2; exit}')"
[[ -n "${name}" ]] || die "no DiskCache in config/samples"

phase "wait for DiskCache Available"
if ! kubectl -n "${DEMO_NS}" wait --for=condition=Available "diskcache/${name}" --timeout=300s; then
	kubectl -n "${DEMO_NS}" get diskcache,statefulset,pods,pvc -o wide >&2 || true
	kubectl -n "${DEMO_NS}" describe "diskcache/${name}" >&2 || true
	kubectl -n "${OPERATOR_NS}" logs "deployment/${OPERATOR_DEPLOYMENT}" --tail=50 >&2 || true
	die "diskcache/${name} did not become Available"
fi
# A demo run over an older one may have a new operator roll the pods (its
# pod template changed): wait for that rollout, since a shard restarting
# cannot answer for its keys.
kubectl -n "${DEMO_NS}" rollout status "statefulset/${name}" --timeout=300s >/dev/null ||
	die "statefulset/${name} did not finish rolling out"
# A pod is ready only once it has a topology; the operator announces the
# same one to all of them.
kubectl -n "${DEMO_NS}" wait --for=condition=TopologyAnnounced "diskcache/${name}" --timeout=120s >/dev/null ||
	die "diskcache/${name}: the topology was not announced to every shard: $(kubectl -n "${DEMO_NS}" get "diskcache/${name}" \
		-o jsonpath='{.status.conditions[?(@.type=="TopologyAnnounced")].message}')"
kubectl -n "${DEMO_NS}" get diskcache "${name}" -o wide

phase "set/get through the Service"
token="$(kubectl -n "${DEMO_NS}" get secret "${name}-token" -o jsonpath='{.data.token}' | base64 -d)"
svc_dns="${name}.${DEMO_NS}.svc.cluster.local"
# From the host: kubectl port-forward to the Service, then curl.
pf_log="${DIR}/demo/port-forward.log"
kubectl -n "${DEMO_NS}" port-forward --address 127.0.0.1 "service/${name}" "${LOCAL_PORT}:8080" >"${pf_log}" 2>&1 &
pf=$!
trap 'kill "${pf}" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
	grep -q Forwarding "${pf_log}" && break
	kill -0 "${pf}" 2>/dev/null || die "kubectl port-forward failed: $(cat "${pf_log}")"
	sleep 0.1
done
base="http://127.0.0.1:${LOCAL_PORT}"
curl -fsS -X PUT -H "Authorization: Bearer ${token}" -H 'Diskcache-Value-Type: text' \
	--data-binary 'hello from make demo' "${base}/v1/keys/greeting?expire=3600&tag=demo" -o /dev/null
got="$(curl -fsS -H "Authorization: Bearer ${token}" "${base}/v1/keys/greeting")"
[[ "${got}" == "hello from make demo" ]] || die "get through port-forward returned '${got}'"
log "host -> kubectl port-forward service/${name} -> PUT/GET greeting: '${got}'"
kill "${pf}" 2>/dev/null || true
wait "${pf}" 2>/dev/null || true
trap - EXIT

# From a pod: cluster DNS and the Service's ClusterIP (kube-proxy).
kubectl -n "${DEMO_NS}" delete pod diskcache-demo-client --ignore-not-found --wait=true >/dev/null
kubectl -n "${DEMO_NS}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: diskcache-demo-client
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsNonRoot: true
    seccompProfile:
      type: RuntimeDefault
  containers:
  - name: toolbox
    image: ${TOOLBOX_IMAGE}
    imagePullPolicy: IfNotPresent
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: [ALL]
EOF
kubectl -n "${DEMO_NS}" wait --for=condition=Ready pod/diskcache-demo-client --timeout=60s >/dev/null
tb() { kubectl -n "${DEMO_NS}" exec diskcache-demo-client -- /toolbox "$@"; }
# PUT then GET over one keep-alive connection: the same pod answers both.
out="$(tb http -f -code -X PUT -H "Authorization: Bearer ${token}" -H 'Diskcache-Value-Type: text' \
	-d 'hello from a pod' "http://${svc_dns}:8080/v1/keys/from-pod" \
	-- -f -H "Authorization: Bearer ${token}" "http://${svc_dns}:8080/v1/keys/from-pod")" ||
	die "set/get from a pod through the Service failed: ${out}"
[[ "$(tail -n 1 <<<"${out}")" == "hello from a pod" ]] || die "set/get from a pod returned '${out}'"
code="$(tb http -code "http://${svc_dns}:8080/v1/keys/from-pod")"
[[ "${code}" == "401" ]] || die "a request without the token got ${code}, want 401"
log "pod -> http://${svc_dns}:8080 -> PUT/GET from-pod: 'hello from a pod'; without the token: ${code}"
# A key written through one pod, read on new connections (any shard
# answers): every pod forwards to the key's owner.
misses=0
for _ in 1 2 3 4 5 6; do
	got="$(tb http -H "Authorization: Bearer ${token}" "http://${svc_dns}:8080/v1/keys/greeting")" || true
	[[ "${got}" == "hello from make demo" ]] || misses=$((misses + 1))
done
((misses == 0)) || die "${misses}/6 reads of 'greeting' through the Service from a pod missed"
log "pod -> 6 reads of 'greeting' (written through the port-forward) on new connections: all found"
# Many keys through the Service's ClusterIP from this machine, one new
# connection per request, so kube-proxy spreads them over every shard: each
# read must hit, whichever pod answers.
cluster_ip="$(kubectl -n "${DEMO_NS}" get service "${name}" -o jsonpath='{.spec.clusterIP}')"
shards="$(kubectl -n "${DEMO_NS}" get diskcache "${name}" -o jsonpath='{.spec.shards}')"
keys=100
for i in $(seq 1 "${keys}"); do
	curl -fsS -X PUT -H "Authorization: Bearer ${token}" -H 'Diskcache-Value-Type: text' \
		--data-binary "value ${i}" "http://${cluster_ip}:8080/v1/keys/demo-${i}" -o /dev/null ||
		die "PUT demo-${i} through the Service failed"
done
hits=0
for i in $(seq 1 "${keys}"); do
	got="$(curl -sS -H "Authorization: Bearer ${token}" "http://${cluster_ip}:8080/v1/keys/demo-${i}")" || true
	[[ "${got}" == "value ${i}" ]] && hits=$((hits + 1))
done
((hits == keys)) || die "$((keys - hits))/${keys} reads through the Service missed (${shards} shards)"
log "host -> http://${cluster_ip}:8080: ${keys} keys written, ${hits}/${keys} reads hit across ${shards} shards (every pod forwards to the key's owner)"
kubectl -n "${DEMO_NS}" delete pod diskcache-demo-client --wait=false >/dev/null
phase ""

cat <<EOF

DiskCache ${DEMO_NS}/${name} is Available. To use it:

  export KUBECONFIG=${KUBECONFIG}
  kubectl -n ${DEMO_NS} get diskcache ${name}            # status, shards, endpoint
  TOKEN=\$(kubectl -n ${DEMO_NS} get secret ${name}-token -o jsonpath='{.data.token}' | base64 -d)

  # from this machine, through the Service:
  kubectl -n ${DEMO_NS} port-forward service/${name} ${LOCAL_PORT}:8080 &
  curl -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:${LOCAL_PORT}/v1/keys/greeting
  curl -X PUT -H "Authorization: Bearer \$TOKEN" --data-binary 'hi' http://127.0.0.1:${LOCAL_PORT}/v1/keys/mykey

  # on this machine the Service's ClusterIP is reachable directly too:
  curl -H "Authorization: Bearer \$TOKEN" http://\$(kubectl -n ${DEMO_NS} get service ${name} -o jsonpath='{.spec.clusterIP}'):8080/v1/keys/greeting

  # from a pod in the cluster (Django LOCATION): http://${svc_dns}:8080

make demo-down stops the cluster (state is kept; make cluster-purge deletes it).
EOF
log "timings:"
for t in "${TIMINGS[@]}"; do printf '    %s\n' "${t}" >&2; done
printf '    %-34s %4ss\n' total "$((SECONDS - T0))" >&2
