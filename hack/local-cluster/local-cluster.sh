#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, built only from
# Debian packages and Go modules (see hack/local-cluster/README.md for why
# each setting is what it is).
#
#   up               install missing Debian packages, build the binaries, start
#                    everything, wait for the node; idempotent (what runs stays)
#   down             stop everything in dependency order (state is kept)
#   purge [--all]    down, then delete the state; --all also the built binaries
#                    and images
#   status           what runs, the node, the pods
#   smoke            a StatefulSet with a PVC running the project image, reached
#                    through its Service by cluster DNS from a pod
#   images [TARGET]  build images (default: project) and import them
#   kubeconfig       print the admin kubeconfig's path
#   preflight        exit 0 when this machine can host the cluster, else say why
#
# Everything lives under LOCAL_CLUSTER_DIR (default .cache/local-cluster):
# bin/ binaries (kept by purge), images/ image tarballs (kept by purge), pki/
# certificates and kubeconfigs, etc/ generated configs, data/ etcd, containerd,
# kubelet, CNI and the local PersistentVolumes, run/ sockets and PID files,
# logs/ one log per component, kubeconfig the admin's kubeconfig.
#
# Only this machine's addresses are used: the node, apiserver, kubelet and
# CoreDNS are on 10.87.0.1 (added to lo), etcd and the component ports are
# on 127.0.0.1, pods (10.88.0.0/16) and services (10.96.0.0/16) exist only
# here, and a firewall chain rejects traffic from them (or to them) that
# would leave the machine; containerd gets an unreachable proxy so an image
# that is not present fails at once instead of being pulled.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="${ROOT}/hack/local-cluster"

DIR="${LOCAL_CLUSTER_DIR:-${ROOT}/.cache/local-cluster}"
mkdir -p "${DIR}"
DIR="$(cd "${DIR}" && pwd)"

NODE_NAME="${LOCAL_CLUSTER_NODE_NAME:-diskcache-node}"
NODE_IP="10.87.0.1"
POD_CIDR="10.88.0.0/16"
POD_GATEWAY="10.88.0.1"
SERVICE_CIDR="10.96.0.0/16"
KUBERNETES_SERVICE_IP="10.96.0.1"
CLUSTER_DOMAIN="cluster.local"
BRIDGE="dcache0"
FIREWALL_CHAIN="DISKCACHE-LOCAL"
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=6443
COREDNS_READY="127.0.0.1:18181"
PV_COUNT="${LOCAL_CLUSTER_PVS:-12}"
PV_SIZE="${LOCAL_CLUSTER_PV_SIZE:-10Gi}"
PAUSE_IMAGE="registry.k8s.io/pause:3.10" # the name hack/image/build.sh gives the pause image

BIN="${DIR}/bin"
IMAGES="${DIR}/images"
PKI="${DIR}/pki"
ETC="${DIR}/etc"
DATA="${DIR}/data"
RUN="${DIR}/run"
LOGS="${DIR}/logs"
PIDS="${RUN}/pids"
KUBECONFIG_PATH="${DIR}/kubeconfig"
SOCK="${RUN}/containerd/containerd.sock"
APISERVER="https://${NODE_IP}:${APISERVER_PORT}"

# Our processes talk only to this machine: no proxy settings leak into them.
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY http_proxy https_proxy all_proxy no_proxy
export PATH="${BIN}:${PATH}"

# Components in start order; down stops them in reverse groups.
NODE_COMPONENTS=(kube-controller-manager kube-scheduler kubelet kube-proxy netpol coredns pv-recycler)

# ---------------------------------------------------------------- output ---

T0=${SECONDS}
PHASE=""
PHASE_START=0
TIMINGS=()

log() { printf '%s local-cluster: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
phase() {
	phase_end
	PHASE="$1"
	PHASE_START=${SECONDS}
	log "== ${PHASE}"
}
phase_end() {
	if [[ -n "${PHASE}" ]]; then
		TIMINGS+=("$(printf '%-28s %4ss' "${PHASE}" "$((SECONDS - PHASE_START))")")
		PHASE=""
	fi
}
print_timings() {
	phase_end
	local t
	log "timings:"
	for t in "${TIMINGS[@]}"; do
		printf '    %s\n' "${t}" >&2
	done
	printf '    %-28s %4ss\n' "total" "$((SECONDS - T0))" >&2
}

kctl() { kubectl --kubeconfig "${KUBECONFIG_PATH}" "$@"; }

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: poll every 0.2 s.
wait_for() {
	local what="$1" timeout="$2" deadline
	shift 2
	deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "timed out after ${timeout}s waiting for ${what}"
			return 1
		fi
		sleep 0.2
	done
}

# -------------------------------------------------------------- processes ---
# Each process has run/pids/NAME.pid holding "PID STARTTIME" (STARTTIME from
# /proc/PID/stat), so a recycled PID is never mistaken for ours. Nothing is
# ever killed by name.

proc_starttime() {
	local stat rest fields
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	rest="${stat##*) }"
	read -ra fields <<<"${rest}"
	echo "${fields[19]}"
}

# pid_of NAME: prints the PID when NAME runs (and is the process we started).
pid_of() {
	local file="${PIDS}/$1.pid" pid start now
	[[ -f "${file}" ]] || return 1
	read -r pid start <"${file}" || return 1
	[[ -n "${pid}" && -n "${start}" ]] || return 1
	now="$(proc_starttime "${pid}")" || return 1
	[[ "${now}" == "${start}" ]] || return 1
	echo "${pid}"
}

running() { pid_of "$1" >/dev/null; }

# Config files each component reads: a change restarts it on the next up.
declare -A CONFIG_FILES=(
	[containerd]="ETC/containerd.toml"
	[kubelet]="ETC/kubelet.yaml ETC/resolv.conf"
	[kube-proxy]="ETC/kube-proxy.yaml"
	[coredns]="ETC/Corefile"
	[pv-recycler]="HERE/pv-recycler.sh"
)

# spec_of NAME COMMAND...: a hash of the command line, the binary and the
# component's config files.
spec_of() {
	local name="$1" f files=() exe
	shift
	for f in ${CONFIG_FILES[${name}]:-}; do
		f="${f/#ETC/${ETC}}"
		files+=("${f/#HERE/${HERE}}")
	done
	exe="$(command -v "$1" || true)"
	{
		printf '%s\n' "$@"
		if [[ -n "${exe}" ]]; then stat -c '%n %s %Y' "${exe}"; fi
		if ((${#files[@]})); then cat "${files[@]}"; fi
	} | sha256sum | cut -d' ' -f1
}

# start NAME COMMAND...: start COMMAND in its own session, detached, logging
# to logs/NAME.log. When NAME already runs with the same command line,
# binary and config files nothing happens; when any of them changed, NAME
# is restarted.
start() {
	local name="$1" pid start spec
	shift
	spec="$(spec_of "${name}" "$@")"
	if running "${name}"; then
		if [[ "$(cat "${PIDS}/${name}.spec" 2>/dev/null)" == "${spec}" ]]; then
			log "${name} is already running (pid $(pid_of "${name}"))"
			return 0
		fi
		log "${name}: command, binary or config changed: restarting it"
		stop "${name}" 60
	fi
	mkdir -p "${PIDS}" "${LOGS}"
	echo "${spec}" >"${PIDS}/${name}.spec"
	rm -f "${PIDS}/${name}.pid" "${PIDS}/${name}.pid.new"
	printf '\n==== %s start: %s\n' "$(date -Is)" "$*" >>"${LOGS}/${name}.log"
	# The child writes its own PID before exec'ing, so the PID is right even
	# though setsid -f forks.
	# Every inherited descriptor above stderr is closed: a daemon must not
	# hold fd 9 (this script's lock) nor a lock its caller holds (as
	# `flock /tmp/x.lock make e2e` passes down), or the lock outlives the
	# caller for as long as the daemon runs.
	# shellcheck disable=SC2016 # $$ and $@ are the child shell's
	setsid -f bash -c 'for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec ${fd}>&-"; fi; done
		echo $$ >"$0"; exec "$@"' "${PIDS}/${name}.pid.new" "$@" \
		</dev/null >>"${LOGS}/${name}.log" 2>&1 9>&-
	wait_for "${name} to start" 10 test -s "${PIDS}/${name}.pid.new" || return 1
	pid="$(cat "${PIDS}/${name}.pid.new")"
	start="$(proc_starttime "${pid}")" || die "${name} exited at once; see ${LOGS}/${name}.log"
	echo "${pid} ${start}" >"${PIDS}/${name}.pid"
	rm -f "${PIDS}/${name}.pid.new"
	log "started ${name} (pid ${pid})"
}

# stop NAME TIMEOUT: SIGTERM, then SIGKILL after TIMEOUT seconds.
stop() {
	local name="$1" timeout="$2" pid deadline
	if ! pid="$(pid_of "${name}")"; then
		rm -f "${PIDS}/${name}.pid"
		return 0
	fi
	kill -TERM "${pid}" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	while running "${name}"; do
		if ((SECONDS >= deadline)); then
			log "${name} (pid ${pid}) did not exit in ${timeout}s: SIGKILL"
			kill -KILL "${pid}" 2>/dev/null || true
			sleep 0.5
			break
		fi
		sleep 0.1
	done
	rm -f "${PIDS}/${name}.pid"
	log "stopped ${name}"
}

# stop_group TIMEOUT NAME...: SIGTERM to all at once, then wait for each.
stop_group() {
	local timeout="$1" name pid deadline
	shift
	local -A pids=()
	for name in "$@"; do
		if pid="$(pid_of "${name}")"; then
			pids[${name}]="${pid}"
			kill -TERM "${pid}" 2>/dev/null || true
		fi
	done
	deadline=$((SECONDS + timeout))
	for name in "$@"; do
		[[ -n "${pids[${name}]:-}" ]] || {
			rm -f "${PIDS}/${name}.pid"
			continue
		}
		while running "${name}" && ((SECONDS < deadline)); do
			sleep 0.1
		done
		if running "${name}"; then
			log "${name} (pid ${pids[${name}]}) did not exit in ${timeout}s: SIGKILL"
			kill -KILL "${pids[${name}]}" 2>/dev/null || true
		fi
		rm -f "${PIDS}/${name}.pid"
		log "stopped ${name}"
	done
}

# ------------------------------------------------------------- packages ---

ensure_packages() {
	mkdir -p "${LOGS}"
	local missing=()
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback && -x /usr/lib/cni/portmap ]] ||
		missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	# The CA bundle hack/image/build.sh puts into the project image.
	[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
	if ((${#missing[@]})); then
		log "installing from Debian: ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"${LOGS}/apt.log" 2>&1; then
			apt-get update -qq >>"${LOGS}/apt.log" 2>&1
			apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"${LOGS}/apt.log" 2>&1 ||
				die "apt-get install ${missing[*]} failed; see ${LOGS}/apt.log"
		fi
	fi
	local v
	v="$(containerd --version | awk '{print $3}')"
	case "${v}" in
	1.6.* | v1.6.* | 1.7.* | v1.7.* | 2.* | v2.*) ;;
	*) log "warning: containerd ${v} is untested (1.6.20 from Debian 12 is the tested one)" ;;
	esac
	log "containerd ${v}, runc $(runc --version | awk 'NR==1{print $3}'), $(iptables --version)"
}

# ---------------------------------------------------------------- config ---

write_if_changed() { # PATH: content on stdin
	local tmp
	tmp="$(mktemp "$1.XXXXXX")"
	cat >"${tmp}"
	if [[ -f "$1" ]] && cmp -s "${tmp}" "$1"; then
		rm -f "${tmp}"
	else
		mv -f "${tmp}" "$1"
	fi
}

gen_config() {
	mkdir -p "${ETC}/cni" "${DATA}"/{etcd,containerd,kubelet,cni,pv} "${RUN}/containerd" "${LOGS}" "${PIDS}"
	chmod 700 "${DATA}/etcd"
	"${BIN}/pki" -dir "${PKI}" -node "${NODE_NAME}" -node-ip "${NODE_IP}" \
		-service-ip "${KUBERNETES_SERVICE_IP}" -server "${APISERVER}"
	install -m 600 "${PKI}/admin.kubeconfig" "${KUBECONFIG_PATH}"

	write_if_changed "${ETC}/containerd.toml" <<EOF
version = 2
root = "${DATA}/containerd"
state = "${RUN}/containerd"
[grpc]
  address = "${SOCK}"
[ttrpc]
  address = "${SOCK}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj is refused.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${ETC}/cni"
    max_conf_num = 1
EOF

	write_if_changed "${ETC}/cni/10-dcache.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "dcache",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${POD_GATEWAY}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "${DATA}/cni"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

	# Pods resolve through CoreDNS only, whatever their dnsPolicy.
	write_if_changed "${ETC}/resolv.conf" <<<"nameserver ${NODE_IP}"

	write_if_changed "${ETC}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: ${PKI}/ca.crt
authorization:
  mode: Webhook
tlsCertFile: ${PKI}/kubelet.crt
tlsPrivateKeyFile: ${PKI}/kubelet.key
containerRuntimeEndpoint: unix://${SOCK}
cgroupDriver: cgroupfs
# cgroup v1 hosts are still supported by 1.37 when asked for.
failCgroupV1: false
# No CAP_SYS_RESOURCE: the kubelet must not lower its own oom_score_adj.
oomScoreAdj: 0
clusterDNS:
- ${NODE_IP}
clusterDomain: ${CLUSTER_DOMAIN}
resolvConf: ${ETC}/resolv.conf
failSwapOn: false
# Images cannot be pulled again here: never garbage-collect them, and only
# evict when the disk is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
shutdownGracePeriod: 0s
EOF

	write_if_changed "${ETC}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${PKI}/kube-proxy.kubeconfig
hostnameOverride: ${NODE_NAME}
mode: iptables
clusterCIDR: ${POD_CIDR}
bindAddress: ${NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses:
- ${NODE_IP}/32
conntrack:
  # Leave the host's conntrack sysctls as they are.
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

	# No forward plugin: names outside the cluster are not resolved, so no
	# DNS query leaves this machine. No cache plugin and a 5 s TTL: tests
	# delete and recreate Services under the same name, and must not be
	# answered with the old ClusterIP.
	write_if_changed "${ETC}/Corefile" <<EOF
.:53 {
    bind ${NODE_IP}
    errors
    ready ${COREDNS_READY}
    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
        kubeconfig ${PKI}/coredns.kubeconfig diskcache-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    loadbalance
}
EOF

	gen_manifests
}

gen_manifests() {
	{
		cat <<EOF
# Identities of the host processes that are not Kubernetes components.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: diskcache-local:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: diskcache-local:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: diskcache-local:coredns
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: diskcache-local:coredns
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: diskcache-local:pv-recycler
rules:
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: diskcache-local:pv-recycler
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: diskcache-local:pv-recycler
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: diskcache-local:pv-recycler
---
# Volumes are directories under data/pv, bound when a pod is scheduled.
# The PVs are Retain; the pv-recycler host process empties a Released one
# and makes it Available again (what reclaimPolicy Delete would do).
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
		local i name
		for ((i = 0; i < PV_COUNT; i++)); do
			printf -v name 'local-pv-%03d' "${i}"
			cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: ${name}
  labels:
    diskcache.dev/local-pv: "true"
spec:
  capacity:
    storage: ${PV_SIZE}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  volumeMode: Filesystem
  local:
    path: ${DATA}/pv/${name}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - key: kubernetes.io/hostname
          operator: In
          values: [${NODE_NAME}]
EOF
		done
	} | write_if_changed "${ETC}/bootstrap.yaml"
	for ((i = 0; i < PV_COUNT; i++)); do
		printf -v name 'local-pv-%03d' "${i}"
		mkdir -p "${DATA}/pv/${name}"
	done
}

# ------------------------------------------------------------- host net ---

save_sysctl() { # KEY: remember the value we found, once
	local file="${RUN}/sysctl.$1"
	[[ -f "${file}" ]] || sysctl -n "$1" >"${file}"
}

restore_sysctl() {
	local file="${RUN}/sysctl.$1"
	if [[ -f "${file}" ]]; then
		sysctl -qw "$1=$(cat "${file}")" || true
		rm -f "${file}"
	fi
}

# The firewall keeps cluster traffic on this machine. Three chains:
#   filter OUTPUT      the host's own packets towards pod or service
#                      addresses that no kube-proxy rule translated, and that
#                      would leave through another interface: REJECT (fast)
#   filter FORWARD     pod traffic routed anywhere but the pod bridge: REJECT
#   mangle POSTROUTING last net, after NAT, with the real output interface
#                      (filter OUTPUT still sees the interface of the route
#                      before kube-proxy's DNAT): anything from or to a pod
#                      or service address, or translated by kube-proxy, that
#                      leaves through another interface than lo or the
#                      bridge: DROP
# A fourth, DISKCACHE-NETPOL in mangle POSTROUTING (after the third, which
# it must not bypass), hands the first packet of each new connection
# between pods to the NetworkPolicy enforcer (netpol) through NFQUEUE 98;
# packets of root processes on the node (the kubelet's probes) are not
# judged, and with no enforcer listening (--queue-bypass) nothing is held.
# kube-network-policies would queue with an nftables rule, but this
# kernel lacks nftables' queue expression, while iptables' NFQUEUE works.
NETPOL_QUEUE=98
FIREWALL_RULES=(
	"mangle POSTROUTING DISKCACHE-NETPOL|-m conntrack ! --ctstate NEW -j RETURN|-m owner --uid-owner 0 -j RETURN|! -o ${BRIDGE} -j RETURN|-s ${POD_CIDR} -j NFQUEUE --queue-num ${NETPOL_QUEUE} --queue-bypass|-d ${POD_CIDR} -j NFQUEUE --queue-num ${NETPOL_QUEUE} --queue-bypass"
	"filter OUTPUT ${FIREWALL_CHAIN}-OUT|-m conntrack --ctstate DNAT -j RETURN|-o lo -j RETURN|-o ${BRIDGE} -j RETURN|-d ${POD_CIDR} -j REJECT|-d ${SERVICE_CIDR} -j REJECT"
	"filter FORWARD ${FIREWALL_CHAIN}-FWD|-o ${BRIDGE} -j RETURN|-s ${POD_CIDR} -j REJECT|-d ${POD_CIDR} -j REJECT|-d ${SERVICE_CIDR} -j REJECT|-m conntrack --ctstate DNAT -j REJECT"
	"mangle POSTROUTING ${FIREWALL_CHAIN}-POST|-o lo -j RETURN|-o ${BRIDGE} -j RETURN|-s ${POD_CIDR} -j DROP|-d ${POD_CIDR} -j DROP|-d ${SERVICE_CIDR} -j DROP|-m conntrack --ctstate DNAT -j DROP"
)

firewall_up() {
	firewall_down
	local spec head table hook chain rule rules
	for spec in "${FIREWALL_RULES[@]}"; do
		IFS='|' read -ra rules <<<"${spec}"
		head="${rules[0]}"
		read -r table hook chain <<<"${head}"
		iptables -w -t "${table}" -N "${chain}" 2>/dev/null || iptables -w -t "${table}" -F "${chain}"
		for rule in "${rules[@]:1}"; do
			# shellcheck disable=SC2086 # a rule is a list of words
			iptables -w -t "${table}" -A "${chain}" ${rule}
		done
		iptables -w -t "${table}" -C "${hook}" -j "${chain}" 2>/dev/null ||
			iptables -w -t "${table}" -I "${hook}" 1 -j "${chain}"
	done
}

firewall_down() {
	command -v iptables >/dev/null || return 0
	local spec table hook chain
	for spec in "${FIREWALL_RULES[@]}"; do
		read -r table hook chain <<<"${spec%%|*}"
		while iptables -w -t "${table}" -C "${hook}" -j "${chain}" 2>/dev/null; do
			iptables -w -t "${table}" -D "${hook}" -j "${chain}"
		done
		iptables -w -t "${table}" -F "${chain}" 2>/dev/null || true
		iptables -w -t "${table}" -X "${chain}" 2>/dev/null || true
	done
	# The single chain of earlier versions of this script.
	for hook in FORWARD OUTPUT; do
		while iptables -w -C "${hook}" -j "${FIREWALL_CHAIN}" 2>/dev/null; do
			iptables -w -D "${hook}" -j "${FIREWALL_CHAIN}"
		done
	done
	iptables -w -F "${FIREWALL_CHAIN}" 2>/dev/null || true
	iptables -w -X "${FIREWALL_CHAIN}" 2>/dev/null || true
}

host_network_up() {
	if ! ip -4 addr show dev lo | grep -q " ${NODE_IP}/32 "; then
		ip addr add "${NODE_IP}/32" dev lo
	fi
	[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter
	save_sysctl net.ipv4.ip_forward
	save_sysctl net.bridge.bridge-nf-call-iptables
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
	firewall_up
}

# kubelet_chains_down removes the chains the kubelet makes (kube-proxy
# --cleanup removes kube-proxy's own).
kubelet_chains_down() {
	local ipt table chain
	for ipt in iptables ip6tables; do
		command -v "${ipt}" >/dev/null || continue
		for chain in INPUT OUTPUT; do
			while "${ipt}" -w -C "${chain}" -j KUBE-FIREWALL 2>/dev/null; do
				"${ipt}" -w -D "${chain}" -j KUBE-FIREWALL
			done
		done
		for table in filter nat mangle; do
			for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
				"${ipt}" -w -t "${table}" -F "${chain}" 2>/dev/null || continue
				"${ipt}" -w -t "${table}" -X "${chain}" 2>/dev/null || true
			done
		done
	done
}

host_network_down() {
	if [[ -x "${BIN}/kube-proxy" && -f "${ETC}/kube-proxy.yaml" ]] && command -v iptables >/dev/null; then
		"${BIN}/kube-proxy" --cleanup --config "${ETC}/kube-proxy.yaml" >>"${LOGS}/kube-proxy.log" 2>&1 || true
	fi
	kubelet_chains_down
	firewall_down
	if ip link show "${BRIDGE}" >/dev/null 2>&1; then
		ip link del "${BRIDGE}" || true
	fi
	restore_sysctl net.ipv4.ip_forward
	restore_sysctl net.bridge.bridge-nf-call-iptables
	if ip -4 addr show dev lo | grep -q " ${NODE_IP}/32 "; then
		ip addr del "${NODE_IP}/32" dev lo || true
	fi
}

# ------------------------------------------------------------ components ---

start_containerd() {
	# An unreachable proxy: a missing image fails at once instead of being
	# pulled from a registry elsewhere (images come from hack/image).
	start containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
		containerd --config "${ETC}/containerd.toml" --log-level warn
	wait_for "containerd" 30 ctr --address "${SOCK}" version || die "containerd did not start; see ${LOGS}/containerd.log"
}

start_etcd() {
	start etcd etcd --name local --data-dir "${DATA}/etcd" \
		--listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
		--advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
		--listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
		--initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
		--initial-cluster "local=http://127.0.0.1:${ETCD_PEER_PORT}" \
		--log-level warn
}

start_apiserver() {
	start kube-apiserver kube-apiserver \
		--advertise-address="${NODE_IP}" --bind-address="${NODE_IP}" --secure-port="${APISERVER_PORT}" \
		--etcd-servers="http://127.0.0.1:${ETCD_CLIENT_PORT}" \
		--service-cluster-ip-range="${SERVICE_CIDR}" \
		--client-ca-file="${PKI}/ca.crt" \
		--tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
		--kubelet-certificate-authority="${PKI}/ca.crt" \
		--kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
		--kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
		--kubelet-preferred-address-types=InternalIP,Hostname \
		--service-account-issuer="https://kubernetes.default.svc.${CLUSTER_DOMAIN}" \
		--service-account-key-file="${PKI}/sa.pub" \
		--service-account-signing-key-file="${PKI}/sa.key" \
		--authorization-mode=Node,RBAC \
		--enable-admission-plugins=NodeRestriction \
		--allow-privileged=true \
		--profiling=false
}

apiserver_ready() {
	curl -fsS --max-time 2 --cacert "${PKI}/ca.crt" --cert "${PKI}/admin.crt" --key "${PKI}/admin.key" \
		"${APISERVER}/readyz" >/dev/null
}

start_node_components() {
	start kube-controller-manager kube-controller-manager \
		--kubeconfig="${PKI}/controller-manager.kubeconfig" \
		--authentication-kubeconfig="${PKI}/controller-manager.kubeconfig" \
		--authorization-kubeconfig="${PKI}/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 \
		--cluster-name=diskcache-local \
		--service-account-private-key-file="${PKI}/sa.key" \
		--root-ca-file="${PKI}/ca.crt" \
		--cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" \
		--use-service-account-credentials=true \
		--service-cluster-ip-range="${SERVICE_CIDR}" \
		--allocate-node-cidrs=false \
		--leader-elect=false \
		--profiling=false
	start kube-scheduler kube-scheduler \
		--kubeconfig="${PKI}/scheduler.kubeconfig" \
		--authentication-kubeconfig="${PKI}/scheduler.kubeconfig" \
		--authorization-kubeconfig="${PKI}/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 \
		--leader-elect=false \
		--profiling=false
	start kubelet kubelet \
		--config="${ETC}/kubelet.yaml" \
		--kubeconfig="${PKI}/kubelet.kubeconfig" \
		--root-dir="${DATA}/kubelet" \
		--hostname-override="${NODE_NAME}" \
		--node-ip="${NODE_IP}"
	start kube-proxy kube-proxy --config="${ETC}/kube-proxy.yaml"
	# NetworkPolicy, which the bridge plugin does not enforce: the first
	# packet of each new connection between pods reaches this daemon
	# through NFQUEUE (DISKCACHE-NETPOL above), which accepts or drops it by
	# the policies that select either pod.
	start netpol netpol --kubeconfig="${PKI}/admin.kubeconfig" \
		--hostname-override="${NODE_NAME}" --nfqueue-id="${NETPOL_QUEUE}" --v=1
	start coredns coredns -conf "${ETC}/Corefile"
}

coredns_ready() { curl -fsS --max-time 2 "http://${COREDNS_READY}/ready" >/dev/null; }

# node_ready [SINCE]: the node is Ready, by a status the kubelet posted at
# or after SINCE (RFC 3339 UTC; a Ready left in etcd by the previous run of
# the kubelet does not count).
node_ready() {
	local ready
	ready="$(kctl get node "${NODE_NAME}" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null)" ||
		return 1
	[[ "${ready%% *}" == "True" ]] || return 1
	[[ -z "${1:-}" || ! "${ready#* }" < "$1" ]]
}

import_images() {
	local tarball
	for tarball in "$@"; do
		ctr --address "${SOCK}" -n k8s.io images import "${tarball}" >/dev/null
	done
}

# ------------------------------------------------------------- commands ---

cmd_up() {
	phase "packages"
	ensure_packages

	phase "build binaries"
	"${HERE}/build.sh" "${DIR}"
	phase "build pause+toolbox images"
	"${ROOT}/hack/image/build.sh" -o "${IMAGES}" pause toolbox >/dev/null

	phase "certificates and config"
	gen_config
	host_network_up

	phase "containerd"
	start_containerd
	import_images "${IMAGES}/pause.tar" "${IMAGES}/toolbox.tar"

	phase "etcd + kube-apiserver"
	start_etcd
	wait_for "etcd" 30 curl -fsS --max-time 2 "http://127.0.0.1:${ETCD_CLIENT_PORT}/health" ||
		die "etcd did not become healthy; see ${LOGS}/etcd.log"
	start_apiserver
	wait_for "kube-apiserver" 90 apiserver_ready || die "kube-apiserver is not ready; see ${LOGS}/kube-apiserver.log"

	phase "node components"
	local since kubelet_before
	since="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	kubelet_before="$(pid_of kubelet || true)"
	start_node_components
	# A kubelet that kept running does not post a new status just for us.
	[[ "$(pid_of kubelet || true)" != "${kubelet_before}" ]] || since=""
	kctl apply --server-side --force-conflicts -f "${ETC}/bootstrap.yaml" >/dev/null
	start pv-recycler bash "${HERE}/pv-recycler.sh" "${PKI}/pv-recycler.kubeconfig" "${DATA}/pv"

	phase "node Ready"
	wait_for "node ${NODE_NAME} to be Ready" 120 node_ready "${since}" || die "node not Ready; see ${LOGS}/kubelet.log"
	wait_for "CoreDNS" 180 coredns_ready || die "CoreDNS is not ready; see ${LOGS}/coredns.log"
	wait_for "the default ServiceAccount" 60 kctl get serviceaccount default -n default ||
		die "no default ServiceAccount; see ${LOGS}/kube-controller-manager.log"
	print_timings
	log "cluster is up: node ${NODE_NAME} Ready, apiserver ${APISERVER}"
	echo "export KUBECONFIG=${KUBECONFIG_PATH}"
}

cmd_down() {
	phase "stop node components"
	stop_group 30 "${NODE_COMPONENTS[@]}"
	phase "remove pods from containerd"
	if running containerd && [[ -x "${BIN}/cri-cleanup" ]]; then
		"${BIN}/cri-cleanup" "unix://${SOCK}" >&2 || log "warning: cri-cleanup failed"
	fi
	phase "stop kube-apiserver"
	stop kube-apiserver 60
	phase "stop etcd"
	stop etcd 30
	phase "stop containerd"
	stop containerd 30
	# containerd's shims exit with their last container; report any that did
	# not (they are ours when they name our containerd socket).
	local pid leftover=()
	for pid in $(pgrep -f -- "-address ${SOCK}" || true); do
		leftover+=("${pid}")
	done
	if ((${#leftover[@]})); then
		log "warning: shim processes of this cluster still run: ${leftover[*]}; stopping them"
		kill -TERM "${leftover[@]}" 2>/dev/null || true
	fi
	phase "host network and mounts"
	host_network_down
	# The kubelet's volume mounts go too, as on a reboot; the kubelet
	# mounts them again for the pods it restarts.
	unmount_all
	[[ "${1:-}" == "--no-summary" ]] && return 0
	print_timings
	log "cluster is down (state kept in ${DIR}; purge deletes it)"
}

# unmount_all: every mount below DIR (kubelet volumes, containerd rootfs
# and netns bind mounts), deepest first.
unmount_all() {
	local target
	findmnt -rn -o TARGET | awk -v d="${DIR}/" 'index($0, d) == 1' | sort -r |
		while read -r target; do
			umount "$(printf '%b' "${target}")" 2>/dev/null || umount -l "$(printf '%b' "${target}")" || true
		done
}

cmd_purge() {
	local all=0
	[[ "${1:-}" == "--all" ]] && all=1
	cmd_down --no-summary
	phase "delete state"
	# Never rm -rf across a mount (a bind mount could lead anywhere).
	if findmnt -rn -o TARGET | awk -v d="${DIR}/" 'index($0, d) == 1' | grep -q .; then
		die "mounts below ${DIR} remain (findmnt | grep ${DIR}); unmount them and purge again"
	fi
	rm -rf "${DATA}" "${RUN}" "${LOGS}" "${PKI}" "${ETC}" "${DIR}/demo" "${KUBECONFIG_PATH}"
	if ((all)); then
		rm -rf "${DIR}"
		log "deleted ${DIR} (binaries and images too)"
	else
		log "deleted the cluster state; binaries in ${BIN} and images in ${IMAGES} are kept (--all deletes them)"
	fi
	print_timings
}

cmd_status() {
	local name pid all=(containerd etcd kube-apiserver "${NODE_COMPONENTS[@]}") up=0
	for name in "${all[@]}"; do
		if pid="$(pid_of "${name}")"; then
			printf '%-24s running  pid %-7s since %s\n' "${name}" "${pid}" "$(ps -o lstart= -p "${pid}")"
			up=$((up + 1))
		else
			printf '%-24s stopped\n' "${name}"
		fi
	done
	if ((up == 0)); then
		echo "local cluster is down (state in ${DIR})"
		return 0
	fi
	if running kube-apiserver && apiserver_ready 2>/dev/null; then
		echo
		echo "KUBECONFIG=${KUBECONFIG_PATH}"
		kctl get nodes -o wide || true
		echo
		kctl get pods -A -o wide || true
		echo
		kctl get pv --no-headers 2>/dev/null | awk '{n[$5]++} END {printf "PersistentVolumes:"; for (p in n) printf " %s=%d", p, n[p]; print ""}' || true
	fi
}

cmd_images() {
	local targets=("$@")
	((${#targets[@]})) || targets=(project)
	if running containerd; then
		"${ROOT}/hack/image/build.sh" -o "${IMAGES}" --import "${SOCK}" "${targets[@]}"
	else
		"${ROOT}/hack/image/build.sh" -o "${IMAGES}" "${targets[@]}"
		log "the local cluster is not running: images are in ${IMAGES}, not imported"
	fi
}

# cmd_preflight: can this machine host the cluster? Exit 0 when it can;
# otherwise print why and exit 1 (make test uses it to skip the e2e tests).
cmd_preflight() {
	local problems=() cap
	[[ ${EUID} -eq 0 ]] || problems+=("not root")
	cap="$(awk '/^CapEff:/{print $2}' /proc/self/status)"
	(((16#${cap} >> 12) & 1)) || problems+=("no CAP_NET_ADMIN")
	(((16#${cap} >> 21) & 1)) || problems+=("no CAP_SYS_ADMIN")
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || problems+=("no overlay filesystem")
	[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null ||
		problems+=("no br_netfilter")
	local probe=/sys/fs/cgroup/memory/diskcache-preflight.$$
	[[ -d /sys/fs/cgroup/memory ]] || probe=/sys/fs/cgroup/diskcache-preflight.$$
	if mkdir "${probe}" 2>/dev/null; then rmdir "${probe}"; else problems+=("cgroups not writable"); fi
	if ! command -v containerd >/dev/null && ! command -v apt-get >/dev/null; then
		problems+=("no containerd and no apt-get to install it")
	fi
	command -v "${GO:-go}" >/dev/null || [[ -x "${BIN}/kubelet" ]] || problems+=("no Go toolchain to build the binaries")
	if ((${#problems[@]})); then
		echo "this machine cannot host the local cluster: ${problems[*]}"
		return 1
	fi
	echo "this machine can host the local cluster"
}

main() {
	local cmd="${1:-}"
	shift || true
	case "${cmd}" in
	up | down | purge | images)
		[[ ${EUID} -eq 0 ]] || die "must run as root (it runs containerd, the kubelet and changes lo and iptables)"
		# One lifecycle command at a time.
		exec 9>"${DIR}/.lock"
		flock -w 900 9 || die "another local-cluster command holds ${DIR}/.lock"
		"cmd_${cmd}" "$@"
		;;
	status) cmd_status ;;
	preflight) cmd_preflight ;;
	smoke) "${HERE}/smoke-test.sh" "$@" ;;
	kubeconfig) echo "${KUBECONFIG_PATH}" ;;
	-h | --help | help | "") sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d' ;;
	*) die "unknown command ${cmd} (up, down, purge, status, smoke, images, kubeconfig, preflight)" ;;
	esac
}

main "$@"
