#!/usr/bin/env bash
# Runs the Python client's tests (clients/python/tests) against a real
# cacheserver once per Django series: 3.2 is Debian 12's python3-django; the
# others come from the pinned .deb files of hack/django/pins.txt, unpacked by
# hack/django/debs.sh and put first on PYTHONPATH. The cacheserver is built
# once for all runs.
#
# Usage: hack/test-python.sh [SERIES...]   (default: 3.2 4.2 5.2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-/usr/bin/python3}"
GO="${GO:-go}"
SERIES=("$@")
[[ ${#SERIES[@]} -gt 0 ]] || SERIES=(3.2 4.2 5.2)

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
if [[ -z "${CACHESERVER_BIN:-}" ]]; then
	(cd "${ROOT}" && "${GO}" build -o "${tmp}/cacheserver" ./cmd/cacheserver)
	export CACHESERVER_BIN="${tmp}/cacheserver"
fi

echo "== benchmark scripts' own tests (hack/bench)"
"${PYTHON}" -m pytest -q -p no:cacheprovider "${ROOT}/hack/bench"

for series in "${SERIES[@]}"; do
	site="$(bash "${ROOT}/hack/django/debs.sh" "${series}")"
	echo "== Python client tests, Django ${series}${site:+ (${site})}"
	(cd "${ROOT}/clients/python" &&
		PYTHONPATH="${site}${PYTHONPATH:+:${PYTHONPATH}}" DISKCACHE_DJANGO_SERIES="${series}" \
			"${PYTHON}" -m pytest -q -p no:cacheprovider tests)
done
