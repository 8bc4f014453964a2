#!/usr/bin/env bash
# The local cluster's volume recycler, run by local-cluster.sh as a host
# process: every few seconds it takes each Released local PersistentVolume
# (label diskcache.dev/local-pv=true), empties its directory and clears its
# claimRef so the PV is Available again. That is what reclaimPolicy Delete
# plus a dynamic provisioner would do; the local volume plugin has no deleter,
# so the PVs are Retain and this loop does the deleting. It only ever touches
# directories below DATA_DIR.
#
# Usage: pv-recycler.sh KUBECONFIG DATA_DIR [INTERVAL_SECONDS]
set -uo pipefail

kubeconfig="$1"
data_dir="$(cd "$2" && pwd)"
interval="${3:-3}"
running=1
trap 'running=0' TERM INT
errors="$(mktemp)"
trap 'rm -f "${errors}"' EXIT

while ((running)); do
	if ! released="$(kubectl --kubeconfig "${kubeconfig}" get pv -l diskcache.dev/local-pv=true \
		-o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{" "}{.spec.local.path}{"\n"}{end}' 2>"${errors}")"; then
		echo "pv-recycler: $(cat "${errors}")"
		released=""
	fi
	while read -r name path; do
		[[ -n "${name}" ]] || continue
		case "${path}" in
		"${data_dir}"/*) ;;
		*)
			echo "pv-recycler: ${name}: ${path} is not below ${data_dir}; left alone"
			continue
			;;
		esac
		if [[ -d "${path}" ]]; then
			find "${path}" -mindepth 1 -delete
		fi
		if kubectl --kubeconfig "${kubeconfig}" patch pv "${name}" --type json \
			-p '[{"op":"remove","path":"/spec/claimRef"}]' >/dev/null; then
			echo "pv-recycler: $(date -Is) ${name} emptied and Available again"
		fi
	done <<<"${released}"
	sleep "${interval}" &
	wait $! || true
done
