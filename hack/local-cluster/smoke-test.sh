#!/usr/bin/env bash
# Smoke test of the local cluster with the project image and no operator:
# a one-replica StatefulSet running /cacheserver on a PVC of the default
# StorageClass, a Service in front of it, and a toolbox pod that resolves the
# Service through cluster DNS and does set/get through it (kube-proxy). Then
# the cache pod is deleted and the key read back from the new pod on the same
# PVC, and everything is deleted and the PV must come back Available.
#
# Usage: hack/local-cluster/smoke-test.sh        (cluster must be up)
# SMOKE_KEEP=1 keeps the namespace for a look around.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="${ROOT}/hack/local-cluster"
DIR="${LOCAL_CLUSTER_DIR:-${ROOT}/.cache/local-cluster}"
DIR="$(cd "${DIR}" && pwd)"
export KUBECONFIG="${DIR}/kubeconfig"
IMG="${IMG:-ghcr.io/diskcache-operator/diskcache-operator:v0.1.0}"
TOOLBOX_IMAGE="${TOOLBOX_IMAGE:-localhost/diskcache-toolbox:v1}"
NS="local-cluster-smoke"
SVC="cache.${NS}.svc.cluster.local"

T0=${SECONDS}
step_start=${SECONDS}
log() { printf '%s smoke: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
step() {
	log "$* ($((SECONDS - step_start))s)"
	step_start=${SECONDS}
}
fail() {
	log "FAILED: $*"
	kubectl -n "${NS}" get all,pvc -o wide >&2 || true
	kubectl -n "${NS}" describe pods >&2 || true
	exit 1
}

if [[ ! -f "${KUBECONFIG}" ]] || ! kubectl get --raw /readyz >/dev/null 2>&1; then
	fail "the local cluster is not up (hack/local-cluster/local-cluster.sh up)"
fi

"${HERE}/local-cluster.sh" images project toolbox
step "project and toolbox images built and imported"

token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
kubectl delete namespace "${NS}" --ignore-not-found --wait=true >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: ${NS}
  labels:
    pod-security.kubernetes.io/enforce: restricted
---
apiVersion: v1
kind: Secret
metadata:
  name: cache-token
  namespace: ${NS}
stringData:
  token: ${token}
---
apiVersion: v1
kind: Service
metadata:
  name: cache
  namespace: ${NS}
spec:
  selector:
    app: cache
  ports:
  - name: http
    port: 8080
    targetPort: http
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: cache
  namespace: ${NS}
spec:
  serviceName: cache
  replicas: 1
  selector:
    matchLabels:
      app: cache
  template:
    metadata:
      labels:
        app: cache
    spec:
      terminationGracePeriodSeconds: 10
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: cacheserver
        image: ${IMG}
        imagePullPolicy: IfNotPresent
        command: [/cacheserver]
        args: [--data-dir=/data, --listen=:8080, --token-file=/token/token, --log-format=text]
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet:
            path: /readyz
            port: http
          periodSeconds: 2
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [ALL]
        volumeMounts:
        - name: data
          mountPath: /data
        - name: token
          mountPath: /token
          readOnly: true
      volumes:
      - name: token
        secret:
          secretName: cache-token
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: toolbox
  namespace: ${NS}
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
step "applied StatefulSet, Service, Secret and toolbox pod"

kubectl -n "${NS}" rollout status statefulset/cache --timeout=120s >/dev/null || fail "StatefulSet not ready"
kubectl -n "${NS}" wait --for=condition=Ready pod/toolbox --timeout=60s >/dev/null || fail "toolbox not ready"
pvc_phase="$(kubectl -n "${NS}" get pvc data-cache-0 -o jsonpath='{.status.phase}')"
[[ "${pvc_phase}" == "Bound" ]] || fail "PVC is ${pvc_phase}"
pv="$(kubectl -n "${NS}" get pvc data-cache-0 -o jsonpath='{.spec.volumeName}')"
step "cache-0 Ready on PVC data-cache-0 (bound to ${pv}), toolbox Ready"

tb() { kubectl -n "${NS}" exec toolbox -- /toolbox "$@"; }
addr="$(tb lookup "${SVC}")" || fail "cannot resolve ${SVC}"
cluster_ip="$(kubectl -n "${NS}" get svc cache -o jsonpath='{.spec.clusterIP}')"
[[ "${addr}" == "${cluster_ip}" ]] || fail "${SVC} resolved to ${addr}, want ${cluster_ip}"
step "cluster DNS: ${SVC} -> ${addr}"

# wait_service: the Service answers once the EndpointSlice has the ready pod
# and kube-proxy has programmed it (a second or so after the pod is Ready).
wait_service() {
	local _
	for _ in $(seq 1 100); do
		tb tcp "${SVC}:8080" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	return 1
}
wait_service || fail "the Service never answered"

value="hello from $(hostname) at $(date -Is)"
tb http -f -X PUT -H "Authorization: Bearer ${token}" -H "Diskcache-Value-Type: text" \
	-d "${value}" "http://${SVC}:8080/v1/keys/smoke?tag=smoke" >/dev/null || fail "set through the Service"
got="$(tb http -f -H "Authorization: Bearer ${token}" "http://${SVC}:8080/v1/keys/smoke")" || fail "get through the Service"
[[ "${got}" == "${value}" ]] || fail "get returned '${got}', want '${value}'"
code="$(tb http -code "http://${SVC}:8080/v1/keys/smoke")"
[[ "${code}" == "401" ]] || fail "a request without the token got ${code}, want 401"
step "set/get through the Service from a pod; no token -> 401"

old_uid="$(kubectl -n "${NS}" get pod cache-0 -o jsonpath='{.metadata.uid}')"
kubectl -n "${NS}" delete pod cache-0 --wait=true >/dev/null
wait_new_pod() {
	local uid
	uid="$(kubectl -n "${NS}" get pod cache-0 -o jsonpath='{.metadata.uid}' 2>/dev/null)" || return 1
	[[ -n "${uid}" && "${uid}" != "${old_uid}" ]]
}
for _ in $(seq 1 300); do wait_new_pod && break; sleep 0.2; done
kubectl -n "${NS}" wait --for=condition=Ready pod/cache-0 --timeout=120s >/dev/null || fail "cache-0 not recreated"
wait_service || fail "the Service never answered after the restart"
got="$(tb http -f -H "Authorization: Bearer ${token}" "http://${SVC}:8080/v1/keys/smoke")" || fail "get after restart"
[[ "${got}" == "${value}" ]] || fail "after restart get returned '${got}', want '${value}'"
step "cache-0 recreated on the same PVC; the key survived"

if [[ "${SMOKE_KEEP:-}" == 1 ]]; then
	log "kept namespace ${NS} (SMOKE_KEEP=1)"
else
	kubectl delete namespace "${NS}" --wait=true --timeout=120s >/dev/null
	for _ in $(seq 1 150); do
		[[ "$(kubectl get pv "${pv}" -o jsonpath='{.status.phase}')" == "Available" ]] && break
		sleep 0.2
	done
	phase="$(kubectl get pv "${pv}" -o jsonpath='{.status.phase}')"
	[[ "${phase}" == "Available" ]] || fail "${pv} is ${phase} after its claim was deleted, want Available"
	step "namespace deleted; ${pv} recycled and Available again"
fi
log "PASSED in $((SECONDS - T0))s"
