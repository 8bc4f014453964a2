#!/usr/bin/env bash
# Makes a Django release from hack/django/pins.txt importable without
# installing it: downloads the pinned Debian packages with `apt-get download`
# through a private apt state (its own sources.list, lists and cache; the
# system's apt configuration is never changed), checks their sha256 sums,
# unpacks them with `dpkg -x`, and prints the directory to put first on
# PYTHONPATH. The .deb files stay in a cache directory between runs, so the
# network is used only when a pin changes.
#
# Usage: hack/django/debs.sh SERIES      (e.g. 4.2; prints nothing for 3.2,
#                                         Debian 12's own python3-django)
# Environment: DJANGO_DEBS_CACHE (default ~/.cache/diskcache-operator/debs),
#              DJANGO_PINS (default hack/django/pins.txt),
#              DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERIES="${1:?usage: $0 SERIES (3.2, 4.2, 5.2)}"
PINS="${DJANGO_PINS:-${HERE}/pins.txt}"
CACHE="${DJANGO_DEBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/diskcache-operator/debs}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { echo "django-debs: $*" >&2; }
die() { log "$*"; exit 1; }

# Debian 12's own release: nothing to fetch.
if [[ "${SERIES}" == 3.2 ]]; then
	exit 0
fi

mapfile -t PINNED < <(awk -v s="${SERIES}" '$1 == s { print $2, $3, $4, $5 }' "${PINS}")
[[ ${#PINNED[@]} -gt 0 ]] || die "no pins for Django ${SERIES} in ${PINS}"

mkdir -p "${CACHE}"
exec 9>"${CACHE}/.lock"
flock 9 # one run at a time per cache

# The private apt state: sources for every suite named in the pins.
STATE="${CACHE}/apt"
APT_OPTS=(
	-o "Dir::Etc::SourceList=${STATE}/sources.list"
	-o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::State::Lists=${STATE}/lists"
	-o "Dir::Cache=${STATE}/cache"
	-o "APT::Sandbox::User=$(id -un)"
	-o "Acquire::Languages=none"
	-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false"
)
UPDATED=""
apt_update() {
	[[ -z "${UPDATED}" ]] || return 0
	mkdir -p "${STATE}/lists/partial" "${STATE}/cache/archives/partial"
	awk '!/^#/ && NF { print $2 }' "${PINS}" | sort -u | while read -r suite; do
		echo "deb [signed-by=${KEYRING}] ${MIRROR} ${suite} main"
	done >"${STATE}/sources.list"
	log "apt-get update (private state in ${STATE})"
	apt-get "${APT_OPTS[@]}" -qq update >&2 || die "apt-get update failed (private state ${STATE})"
	UPDATED=1
}

deb_path() { echo "${CACHE}/${1}_${2//:/%3a}_all.deb"; }

sha_ok() { [[ -f "$1" && "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]; }

# newer_in_series PACKAGE SUITE VERSION: the newest version of PACKAGE in
# SUITE with the same upstream major.minor as VERSION (4.2.x for 4.2.28), if
# any.
newer_in_series() {
	local pkg="$1" suite="$2" version="$3" upstream series best="" v
	upstream="${version#*:}"
	series="$(echo "${upstream}" | cut -d. -f1,2)"
	while read -r v; do
		local up="${v#*:}"
		[[ "${up}" == "${series}."* || "${up}" == "${series}-"* ]] || continue
		if [[ -z "${best}" ]] || dpkg --compare-versions "${v}" gt "${best}"; then
			best="${v}"
		fi
	done < <(apt-cache "${APT_OPTS[@]}" madison "${pkg}" | awk -F' *[|] *' -v s="${suite}/" 'index($3, " " s) { print $2 }')
	echo "${best}"
}

fetch() {
	local suite="$1" pkg="$2" version="$3" sha="$4" dest tmp newer newsha
	dest="$(deb_path "${pkg}" "${version}")"
	if sha_ok "${dest}" "${sha}"; then
		return
	fi
	apt_update
	if ! apt-cache "${APT_OPTS[@]}" madison "${pkg}" | awk -F' *[|] *' -v v="${version}" -v s="${suite}/" '$2 == v && index($3, " " s) { found = 1 } END { exit !found }'; then
		newer="$(newer_in_series "${pkg}" "${suite}" "${version}")"
		if [[ -n "${newer}" ]]; then
			local which="the newer version of the same series"
			dpkg --compare-versions "${newer}" gt "${version}" || which="the version of the same series now there"
			newsha="$(apt-cache "${APT_OPTS[@]}" show "${pkg}=${newer}" 2>/dev/null | awk '/^SHA256:/ { print $2; exit }')"
			die "${pkg} ${version} is no longer in Debian ${suite}; pin ${which} in ${PINS}: ${pkg} ${newer} (sha256 ${newsha})"
		fi
		die "${pkg} ${version} is no longer in Debian ${suite}, and no other version of its series is there: choose a new pin in ${PINS}"
	fi
	tmp="$(mktemp -d "${CACHE}/download.XXXXXX")"
	log "downloading ${pkg} ${version} (${suite})"
	(cd "${tmp}" && apt-get "${APT_OPTS[@]}" -qq -o "APT::Default-Release=${suite}" download "${pkg}=${version}" >&2) ||
		{ rm -rf "${tmp}"; die "apt-get download ${pkg}=${version} failed"; }
	mv "${tmp}"/*.deb "${dest}.part"
	rm -rf "${tmp}"
	if ! sha_ok "${dest}.part" "${sha}"; then
		local got
		got="$(sha256sum "${dest}.part" | cut -d' ' -f1)"
		rm -f "${dest}.part"
		die "${pkg} ${version}: sha256 ${got} does not match the pin ${sha}"
	fi
	mv "${dest}.part" "${dest}"
}

# Unpack the series' packages into one root; a stamp of the pins decides
# whether an existing root is current.
ROOT="${CACHE}/django-${SERIES}"
STAMP="$(printf '%s\n' "${PINNED[@]}")"
for line in "${PINNED[@]}"; do
	read -r suite pkg version sha <<<"${line}"
	fetch "${suite}" "${pkg}" "${version}" "${sha}"
done
if [[ ! -f "${ROOT}/.stamp" || "$(cat "${ROOT}/.stamp")" != "${STAMP}" ]]; then
	rm -rf "${ROOT}"
	mkdir -p "${ROOT}.new"
	for line in "${PINNED[@]}"; do
		read -r suite pkg version sha <<<"${line}"
		dpkg -x "$(deb_path "${pkg}" "${version}")" "${ROOT}.new"
	done
	echo "${STAMP}" >"${ROOT}.new/.stamp"
	rm -rf "${ROOT}"
	mv "${ROOT}.new" "${ROOT}"
	log "unpacked Django ${SERIES} into ${ROOT}"
fi
SITE="${ROOT}/usr/lib/python3/dist-packages"
[[ -d "${SITE}/django" ]] || die "no django package in ${SITE}"
echo "${SITE}"
