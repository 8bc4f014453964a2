#!/usr/bin/env bash
# Builds container images without Docker: static binaries packed by the
# image tool in this directory (github.com/google/go-containerregistry) into
# `docker save`-style tarballs, optionally imported into a containerd.
#
#   pause    registry.k8s.io/pause:3.10 (PAUSE_IMAGE): the pod sandbox image,
#            under the name the local cluster's containerd sandbox_image names
#   toolbox  localhost/diskcache-toolbox:v1 (TOOLBOX_IMAGE): an HTTP/DNS/TCP
#            client for looking at the cluster from inside a pod
#   project  $IMG (default ghcr.io/diskcache-operator/diskcache-operator:v0.1.0):
#            /manager and /cacheserver, static with cgo SQLite, UID 65532, and
#            this machine's CA bundle (/etc/ssl/certs/ca-certificates.crt,
#            Debian's ca-certificates) for TLS peers verified with the
#            system's roots: the same contents as the Dockerfile's image
#            (distroless/static has that bundle too)
#   django   localhost/diskcache-django:v1 (DJANGO_IMAGE): this machine's
#            Debian Python 3.11 (the interpreter, the shared libraries it and
#            its extension modules load, the standard library without tests,
#            IDLE, Tk and build files), Debian's Django and what it needs
#            (asgiref, sqlparse, pytz, tzdata),
#            and clients/python/diskcache_client; entrypoint python3.11, UID
#            65532. Repacked only when one of its files changes.
#
# Usage: hack/image/build.sh [-o OUTDIR] [--import CONTAINERD_SOCKET] TARGET...
# OUTDIR defaults to bin/images. Prints one line per image: tarball, image ID, tags.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="${ROOT}/hack/image"
GO="${GO:-go}"
IMG="${IMG:-ghcr.io/diskcache-operator/diskcache-operator:v0.1.0}"
# The tag of IMG; latest, as docker tags it, when IMG has none (the colon
# of registry:5000/op is a port's).
IMG_TAG="${IMG##*:}"
if [[ "${IMG_TAG}" == "${IMG}" || "${IMG_TAG}" == */* ]]; then
	IMG_TAG=latest
fi
VERSION="${VERSION:-${IMG_TAG}}"
PAUSE_IMAGE="${PAUSE_IMAGE:-registry.k8s.io/pause:3.10}"
TOOLBOX_IMAGE="${TOOLBOX_IMAGE:-localhost/diskcache-toolbox:v1}"
DJANGO_IMAGE="${DJANGO_IMAGE:-localhost/diskcache-django:v1}"

out="${ROOT}/bin/images"
import_address=""
targets=()
while (($#)); do
	case "$1" in
	-o) out="$2"; shift 2 ;;
	--import) import_address="$2"; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
	pause | toolbox | project | django) targets+=("$1"); shift ;;
	all) targets+=(pause toolbox project django); shift ;;
	*) echo "image: unknown argument $1 (want pause, toolbox, project, django or all)" >&2; exit 2 ;;
	esac
done
((${#targets[@]})) || { echo "usage: $0 [-o OUTDIR] [--import SOCKET] pause|toolbox|project|django|all..." >&2; exit 2; }

log() { printf '%s image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "${out}/.build"
build_dir="${out}/.build"
start=${SECONDS}

# The packer itself (cached by the Go build cache after the first run).
(cd "${HERE}" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath -buildvcs=false" "${GO}" build -o "${build_dir}/image" .)
pack() { "${build_dir}/image" "$@"; }

# static_go DIR PKG OUT: a static, stripped, cgo-free build of a helper.
static_go() {
	(cd "$1" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath -buildvcs=false" "${GO}" build -ldflags "-s -w" -o "$3" "$2")
}

# django_image: Debian's Python and Django as they are on this machine.
django_image() {
	local py=/usr/bin/python3.11 stdlib=/usr/lib/python3.11 dist=/usr/lib/python3/dist-packages
	local packages=(django asgiref sqlparse pytz) # Django 3.2 and what it imports
	# Debian's pytz reads the system's time zones (tzdata).
	local zoneinfo=/usr/share/zoneinfo
	local sources=("${py}" "${stdlib}" "${packages[@]/#/${dist}/}" "${zoneinfo}" "${ROOT}/clients/python/diskcache_client")
	local src so skip pattern lib stamp
	for src in "${sources[@]}"; do
		[[ -e "${src}" ]] || { echo "image: django: no ${src} (apt-get install python3.11 python3-django)" >&2; exit 1; }
	done
	local args=(-tag "${DJANGO_IMAGE}" -nonroot -user 65532:65532
		-env PYTHONDONTWRITEBYTECODE=1 -env PYTHONUNBUFFERED=1 -entrypoint /usr/bin/python3.11
		-file "${py}:/usr/bin/python3.11" -dir "${stdlib}:${stdlib}"
		-dir "${ROOT}/clients/python/diskcache_client:${dist}/diskcache_client"
		-dir "${zoneinfo}:${zoneinfo}" -exclude "${zoneinfo}/right"
		# Bytecode is compiled in memory (the root filesystem is read-only and
		# Debian's .pyc files name the host's modification times).
		-exclude __pycache__
		# A link to /etc/python3.11, which the image does not have.
		-exclude "${stdlib}/sitecustomize.py"
		# Translations, the admin's static files and GeoDjango.
		-exclude "${dist}/django/conf/locale/*/LC_MESSAGES" -exclude "${dist}/django/contrib/*/locale"
		-exclude "${dist}/django/contrib/admin/static" -exclude "${dist}/django/contrib/gis")
	for src in "${packages[@]}"; do
		args+=(-dir "${dist}/${src}:${dist}/${src}")
	done
	for pattern in test idlelib tkinter turtledemo turtle.py lib2to3 ensurepip venv pydoc_data 'config-3.11-*' '*/test' '*/tests'; do
		args+=(-exclude "${stdlib}/${pattern}")
	done
	# Extension modules for tests, terminals, dbm and NIS: not needed, and
	# they would pull in ncurses, Berkeley DB, Kerberos and more.
	local modules=()
	for so in "${stdlib}"/lib-dynload/*.so; do
		skip=""
		for pattern in '_test*' '_ctypes_test*' '_xx*' 'xx*' '_curses*' 'readline*' '_dbm*' 'nis*' 'ossaudiodev*' 'audioop*'; do
			[[ "${so##*/}" == ${pattern} ]] && skip=1
		done
		if [[ -n "${skip}" ]]; then args+=(-exclude "${so}"); else modules+=("${so}"); fi
	done
	# The shared libraries, at the paths the loader finds them on Debian
	# (-file stores what a symbolic link names).
	while read -r lib; do
		args+=(-file "${lib}:${lib}:0755")
	done < <(ldd "${py}" "${modules[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | sort -u)
	# Repack only when a file, the packer or the arguments changed.
	stamp="$({
		sha256sum "${build_dir}/image"
		printf '%s\n' "${args[@]}"
		find -L "${sources[@]}" -printf '%p %s %T@ %m\n' 2>/dev/null
	} | sha256sum | cut -d' ' -f1)"
	if [[ -f "${out}/django.tar" && "$(cat "${out}/django.tar.stamp" 2>/dev/null)" == "${stamp}" ]]; then
		log "django: no file changed, ${out}/django.tar kept"
		return
	fi
	rm -f "${out}/django.tar.stamp"
	pack -o "${out}/django.tar" "${args[@]}"
	echo "${stamp}" >"${out}/django.tar.stamp"
}

tarballs=()
for target in "${targets[@]}"; do
	t=${SECONDS}
	case "${target}" in
	pause)
		static_go "${HERE}" ./pause "${build_dir}/pause"
		pack -o "${out}/pause.tar" -tag "${PAUSE_IMAGE}" -file "${build_dir}/pause:/pause" \
			-user 65535:65535 -entrypoint /pause
		tarballs+=("${out}/pause.tar")
		;;
	toolbox)
		static_go "${HERE}" ./toolbox "${build_dir}/toolbox"
		pack -o "${out}/toolbox.tar" -tag "${TOOLBOX_IMAGE}" -file "${build_dir}/toolbox:/toolbox" \
			-nonroot -user 65532:65532 -entrypoint /toolbox -cmd sleep
		tarballs+=("${out}/toolbox.tar")
		;;
	project)
		# Same build as the Dockerfile: only the cache server needs cgo (SQLite,
		# linked statically against glibc; Go's own user and DNS lookups so no
		# NSS modules are needed); the operator is pure Go (CGO_ENABLED=0).
		# The system's roots, where Go's crypto/x509 looks first on Linux: a
		# cacheserver verifies TLS peers with them when its TLS Secret has no
		# ca.crt (--peer-ca-file unset).
		ca_bundle=/etc/ssl/certs/ca-certificates.crt
		[[ -s "${ca_bundle}" ]] || { echo "image: project: no ${ca_bundle} (apt-get install ca-certificates)" >&2; exit 1; }
		files=(-file "${build_dir}/cacheserver:/cacheserver" -file "${ca_bundle}:${ca_bundle}:0644")
		entrypoint=/cacheserver
		(cd "${ROOT}" && CGO_ENABLED=1 "${GO}" build -trimpath -buildvcs=false \
			-tags osusergo,netgo,sqlite_omit_load_extension \
			-ldflags "-linkmode external -extldflags -static -s -w" \
			-o "${build_dir}/" ./cmd/cacheserver)
		if [[ -f "${ROOT}/cmd/manager/main.go" ]]; then
			(cd "${ROOT}" && CGO_ENABLED=0 "${GO}" build -trimpath -buildvcs=false \
				-ldflags "-s -w -X main.version=${VERSION}" -o "${build_dir}/" ./cmd/manager)
			files=(-file "${build_dir}/manager:/manager" "${files[@]}")
			entrypoint=/manager
		else
			log "cmd/manager does not exist yet: the image has /cacheserver only"
		fi
		pack -o "${out}/diskcache-operator.tar" -tag "${IMG}" "${files[@]}" \
			-nonroot -user 65532:65532 -entrypoint "${entrypoint}" \
			-label "org.opencontainers.image.source=https://github.com/diskcache-operator/diskcache-operator" \
			-label "org.opencontainers.image.description=DiskCache operator and cache server" \
			-label "org.opencontainers.image.version=${VERSION}" \
			-label "org.opencontainers.image.licenses=Apache-2.0"
		tarballs+=("${out}/diskcache-operator.tar")
		;;
	django)
		django_image
		tarballs+=("${out}/django.tar")
		;;
	esac
	log "${target} packed in $((SECONDS - t))s"
done

if [[ -n "${import_address}" ]]; then
	t=${SECONDS}
	for tarball in "${tarballs[@]}"; do
		ctr --address "${import_address}" -n k8s.io images import "${tarball}" >/dev/null
	done
	log "imported ${#tarballs[@]} image(s) into containerd at ${import_address} in $((SECONDS - t))s"
fi
log "done in $((SECONDS - start))s"
