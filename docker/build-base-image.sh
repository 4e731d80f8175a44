#!/usr/bin/env bash
# Build the Dockerfile's base image locally, without any container registry.
#
# The Dockerfile starts FROM ${BASE_IMAGE} (default python:3.11-slim-bookworm, the official image).
# Where no registry is reachable, this script makes a stand-in with debootstrap (Debian 12 bookworm,
# minbase + python3, python3-venv, python3-pip, ca-certificates), imports it with `docker import` and
# tags it with that same name, so `docker build` finds it locally and never pulls.
#
# Extra CA certificates found on the host (/usr/local/share/ca-certificates/*.crt, e.g. a TLS-intercepting
# proxy's) are installed into this local image only, and PIP_CERT / SSL_CERT_FILE / REQUESTS_CA_BUNDLE are
# set so pip inside `docker build` trusts them. They never go into git.
#
# Usage: docker/build-base-image.sh [--force] [--tag NAME]
#   --force    rebuild even if the tag already exists
#   --tag      image name (default: $BASE_IMAGE or python:3.11-slim-bookworm)
# Env: DEBIAN_MIRROR (default: the host's apt mirror, else http://deb.debian.org/debian),
#      DEBIAN_SUITE (default bookworm), EXTRA_CA_DIR (default /usr/local/share/ca-certificates).
# Needs root, docker and debootstrap (installed with apt-get when missing and running as root).
set -euo pipefail

TAG="${BASE_IMAGE:-python:3.11-slim-bookworm}"
FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) FORCE=1 ;;
        --tag) TAG="$2"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-base-image: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

SUITE="${DEBIAN_SUITE:-bookworm}"
EXTRA_CA_DIR="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
log() { echo "[build-base-image] $*" >&2; }
die() { echo "[build-base-image] ERROR: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (start dockerd first; scripts/docker-smoke.sh does)"

if [[ "$FORCE" -eq 0 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already exists; skipping (use --force to rebuild)"
    exit 0
fi

[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null; } \
        || die "could not install debootstrap"
fi

# The host's Debian mirror: first non-security URI of a deb822 .sources file or a one-line .list entry.
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f" | grep -E '/debian/?$' | head -n1 || true)
        [[ -n "$uri" ]] && { echo "${uri%/}"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }' "$f" \
            | grep -E '/debian/?$' | head -n1 || true)
        [[ -n "$uri" ]] && { echo "${uri%/}"; return; }
    done
    echo "http://deb.debian.org/debian"
}
MIRROR="${DEBIAN_MIRROR:-$(host_mirror)}"

START=$(date +%s)
WORK=$(mktemp -d /var/tmp/catdog-base.XXXXXX)
ROOTFS="$WORK/rootfs"
cleanup() {
    # debootstrap may leave proc/sys mounted on failure; unmount before deleting.
    local m
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$ROOTFS/$m" 2>/dev/null; then umount -l "$ROOTFS/$m" || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log "debootstrap $SUITE (minbase) from $MIRROR into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 40 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }

# apt inside the image uses the same mirror (plus security updates from the standard location).
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF

CA_ENV=()
shopt -s nullglob
cas=("$EXTRA_CA_DIR"/*.crt)
shopt -u nullglob
if [[ ${#cas[@]} -gt 0 ]]; then
    log "installing ${#cas[@]} extra CA certificate(s) from $EXTRA_CA_DIR into the local image only"
    mkdir -p "$ROOTFS/usr/local/share/ca-certificates"
    cp "${cas[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
    chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in rootfs"
    bundle=/etc/ssl/certs/ca-certificates.crt
    CA_ENV=(--change "ENV PIP_CERT=$bundle" --change "ENV SSL_CERT_FILE=$bundle"
            --change "ENV REQUESTS_CA_BUNDLE=$bundle" --change "ENV CURL_CA_BUNDLE=$bundle")
fi

# Keep it small: no package caches, lists, docs, man pages or locales.
chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/usr/share/locale/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* \
    "$ROOTFS"/root/.cache
find "$ROOTFS/usr/lib" -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null || true
# The official python image has `python`; give the stand-in one too (Dockerfile uses python3 anyway).
[[ -e "$ROOTFS/usr/bin/python" ]] || ln -s python3 "$ROOTFS/usr/bin/python"
: >"$ROOTFS/etc/machine-id"

log "importing as $TAG"
tar --numeric-owner --xattrs -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    "${CA_ENV[@]}" \
    --change 'CMD ["python3"]' \
    --message "catdog local base: debootstrap $SUITE minbase + python3 ($MIRROR)" \
    - "$TAG" >/dev/null

END=$(date +%s)
size=$(docker image inspect -f '{{.Size}}' "$TAG")
log "built $TAG in $((END - START)) s ($((size / 1024 / 1024)) MiB); python: $(docker run --rm "$TAG" python3 -V 2>&1)"
