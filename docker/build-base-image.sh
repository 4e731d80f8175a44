#!/usr/bin/env bash
# Choose the Dockerfile's base image and print its name on stdout (logs go to stderr):
#
#   BASE_IMAGE=$(docker/build-base-image.sh)
#   docker build --build-arg BASE_IMAGE="$BASE_IMAGE" --target cpu -t catdog:cpu .
#
# 1. The official python:3.11-slim-bookworm, whenever `docker pull` gets it (or a genuine copy is
#    already local and the registry is unreachable).
# 2. Otherwise a registry-free stand-in under its OWN tag, catdog-base:bookworm (never the official
#    name, which would hide the real image later): debootstrap (Debian 12 bookworm, minbase + python3,
#    python3-venv, ca-certificates) imported with `docker import`. A stand-in that an older version of
#    this script tagged with the official name is untagged.
#
# Nothing of the build machine's trust goes into either: no extra CA certificates, no PIP_CERT /
# SSL_CERT_FILE / REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE. A build that needs the host's proxy CA gets it
# in the Dockerfile's builder stage only (docker/build-ca/, see the Dockerfile).
#
# Usage: docker/build-base-image.sh [--force] [--no-pull] [--tag NAME]
#   --force    rebuild the stand-in even if its tag exists
#   --no-pull  do not try the registry (same as CATDOG_BASE_NO_PULL=1)
#   --tag      stand-in tag (default catdog-base:bookworm)
# Env: OFFICIAL_BASE_IMAGE (default python:3.11-slim-bookworm), DEBIAN_MIRROR (default: the host's apt
#      mirror, else http://deb.debian.org/debian), DEBIAN_SUITE (default bookworm).
# Needs docker; for the stand-in also root and debootstrap (installed with apt-get when missing).
set -euo pipefail

OFFICIAL="${OFFICIAL_BASE_IMAGE:-python:3.11-slim-bookworm}"
TAG="catdog-base:bookworm"
FORCE=0
PULL=1
[[ "${CATDOG_BASE_NO_PULL:-0}" == "1" ]] && PULL=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) FORCE=1 ;;
        --no-pull) PULL=0 ;;
        --tag) TAG="$2"; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "build-base-image: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

SUITE="${DEBIAN_SUITE:-bookworm}"
log() { echo "[build-base-image] $*" >&2; }
die() { echo "[build-base-image] ERROR: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "docker engine not reachable (start dockerd first; scripts/docker-smoke.sh does)"

[[ "$TAG" != "$OFFICIAL" ]] || die "the stand-in must not carry the official name $OFFICIAL"

STANDIN_MARK="catdog local base"
is_standin() {  # $1: image; true if this script (any version) made it
    # The whole history is read, then matched (no pipe into grep -q: SIGPIPE under pipefail).
    local comments
    comments=$(docker history --no-trunc --format '{{.Comment}}' "$1" 2>/dev/null) || return 1
    [[ $'\n'"$comments" == *$'\n'"$STANDIN_MARK"* ]]
}
# An older version of this script tagged its stand-in with the official name: take that name back.
if docker image inspect "$OFFICIAL" >/dev/null 2>&1 && is_standin "$OFFICIAL"; then
    # (Not re-tagged: those carried the build host's CA certificates.)
    log "untagging $OFFICIAL: it is an old local stand-in, not the official image"
    docker rmi "$OFFICIAL" >/dev/null
fi

if [[ "$PULL" -eq 1 ]]; then
    log "trying the official base image: docker pull $OFFICIAL"
    if pull_out=$(timeout 120 docker pull "$OFFICIAL" 2>&1); then
        log "pulled $OFFICIAL"
        echo "$OFFICIAL"
        exit 0
    fi
    log "cannot pull $OFFICIAL: ${pull_out##*$'\n'}"
    if docker image inspect "$OFFICIAL" >/dev/null 2>&1; then
        log "using the official $OFFICIAL already present locally"
        echo "$OFFICIAL"
        exit 0
    fi
fi

if [[ "$FORCE" -eq 0 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    log "using the local stand-in $TAG (use --force to rebuild it)"
    echo "$TAG"
    exit 0
fi
log "building the registry-free stand-in $TAG"

[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null \
        || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null; } \
        || die "could not install debootstrap"
fi

# The host's Debian mirror: first non-security URI of a deb822 .sources file or a one-line .list entry.
# One awk per file picks the first match and reads the file to its end (no early-exiting pipe).
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if (!found && $i ~ /\/debian\/?$/) found = $i }
                   END { print found }' "$f")
        [[ -n "$uri" ]] && { echo "${uri%/}"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { if (!found && $i ~ /\/debian\/?$/) found = $i; break } }
                   END { print found }' "$f")
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
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 40 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }

# apt inside the image uses the same mirror (plus security updates from the standard location).
cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF

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
    --change 'CMD ["python3"]' \
    --message "$STANDIN_MARK: debootstrap $SUITE minbase + python3 ($MIRROR)" \
    - "$TAG" >/dev/null

END=$(date +%s)
size=$(docker image inspect -f '{{.Size}}' "$TAG")
log "built $TAG in $((END - START)) s ($((size / 1024 / 1024)) MiB); python: $(docker run --rm "$TAG" python3 -V 2>&1)"
echo "$TAG"
