#!/usr/bin/env bash
# Fails when the files controller-gen generates (CRD, ClusterRole, DeepCopy)
# differ from what `make manifests generate` would write now. The working
# tree is left exactly as it was, so a stale tree keeps failing until the
# files are regenerated and committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONTROLLER_GEN="${CONTROLLER_GEN:-bin/controller-gen}"

generated=(config/crd/bases config/rbac/role.yaml api/v1alpha1/zz_generated.deepcopy.go)
saved="$(mktemp -d)"
trap 'rm -rf "${saved}"' EXIT
for f in "${generated[@]}"; do
	mkdir -p "${saved}/$(dirname "$f")"
	[[ -e "$f" ]] && cp -a "$f" "${saved}/$f"
done

out="$(mktemp -d)"
trap 'rm -rf "${saved}" "${out}"' EXIT
"${CONTROLLER_GEN}" rbac:roleName=manager-role crd paths=./api/... paths=./controllers/... \
	output:crd:artifacts:config="${out}/config/crd/bases" output:rbac:artifacts:config="${out}/config/rbac"
"${CONTROLLER_GEN}" object:headerFile=hack/boilerplate.go.txt paths=./api/...
mkdir -p "${out}/api/v1alpha1"
cp api/v1alpha1/zz_generated.deepcopy.go "${out}/api/v1alpha1/"
# Put back the DeepCopy file as it was (controller-gen writes it in place).
if [[ -e "${saved}/api/v1alpha1/zz_generated.deepcopy.go" ]]; then
	cp -a "${saved}/api/v1alpha1/zz_generated.deepcopy.go" api/v1alpha1/zz_generated.deepcopy.go
else
	rm -f api/v1alpha1/zz_generated.deepcopy.go
fi

status=0
for f in "${generated[@]}"; do
	if ! diff -ru "$f" "${out}/$f" >&2; then
		status=1
	fi
done
if [[ ${status} -ne 0 ]]; then
	echo "generated files are stale: run 'make manifests generate' and commit the result" >&2
	exit 1
fi
echo "generated files are up to date"
