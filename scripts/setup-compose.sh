#!/usr/bin/env bash
# Make a machine that has (or can install) Docker's engine ready for the compose commands of docs/deployment.md,
# and print the compose command to use on stdout (`docker compose` or `docker-compose`); logs on stderr.
#
#   COMPOSE=$(scripts/setup-compose.sh) && $COMPOSE up -d --build
#
# 1. Engine: the running one, else dockerd started here (docker.io installed with apt-get when missing;
#    overlayfs, then vfs fallbacks for restricted kernels). A dockerd started here is detached, and its
#    pid is written to $CATDOG_DOCKERD_PIDFILE so CI can stop it (.ci/run does).
# 2. Compose: the `docker compose` plugin (v2) if the CLI has it, else `docker-compose` (v1) if installed,
#    else apt-get: docker-compose-plugin where the configured repositories have it, otherwise Debian's
#    docker-compose (v1, >= 1.28 reads this project's compose file, profiles included). Says which.
# 3. Base image: docker/build-base-image.sh (the official python:3.11-slim-bookworm when it can be
#    pulled, else the local stand-in catdog-base:bookworm); its name goes to .env as BASE_IMAGE, which
#    compose reads for the build argument.
# 4. Build trust: the host's extra CA certificates (/usr/local/share/ca-certificates/*.crt, e.g. a
#    TLS-intercepting proxy's) are copied to docker/ca-certificates/ (git-ignored), which only the
#    Dockerfile's builder stage reads; removed there when the host has none.
#
# Env: CATDOG_DOCKERD_FLAGS (extra dockerd flags), CATDOG_DOCKERD_LOG (default /var/log/catdog-dockerd.log),
#      CATDOG_DOCKERD_PIDFILE (default /run/catdog-dockerd.pid), EXTRA_CA_DIR (default
#      /usr/local/share/ca-certificates), CATDOG_BASE_NO_PULL=1 (skip the pull attempt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERD_LOG="${CATDOG_DOCKERD_LOG:-/var/log/catdog-dockerd.log}"
PIDFILE="${CATDOG_DOCKERD_PIDFILE:-/run/catdog-dockerd.pid}"
EXTRA_CA_DIR="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
log() { echo "[setup-compose] $*" >&2; }
die() { echo "[setup-compose] ERROR: $*" >&2; exit 1; }

apt_install() { bash "$ROOT/scripts/apt-install.sh" "$@" || die "could not install $*"; }
apt_has() { bash "$ROOT/scripts/apt-has.sh" "$1"; }

# ------------------------------------------------------------------------------------------ engine
start_dockerd() {  # $@: extra flags; returns 0 once `docker info` answers (bounded: 60 s)
    log "starting dockerd $* (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # Fully detached from our stdout/stderr so callers capturing output (pytest) don't wait on it.
    setsid dockerd "$@" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            echo "$pid" >"$PIDFILE"
            log "dockerd is up (pid $pid, written to $PIDFILE)"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    echo "--- last lines of $DOCKERD_LOG ---" >&2
    tail -n 15 "$DOCKERD_LOG" >&2 || true
    return 1
}

ensure_engine() {
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        log "using the running docker engine ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
        return
    fi
    [[ "$(id -u)" -eq 0 ]] || die "no docker engine reachable and not root: start dockerd or join the docker group"
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        apt_install docker.io
        # The package may have started the engine through an init system already.
        docker info >/dev/null 2>&1 && { log "docker engine started by the package"; return; }
    fi
    # shellcheck disable=SC2086  # CATDOG_DOCKERD_FLAGS is a list of flags
    start_dockerd ${CATDOG_DOCKERD_FLAGS:-} && return
    # Fallbacks for restricted kernels: no overlayfs, then no iptables either.
    # shellcheck disable=SC2086
    start_dockerd ${CATDOG_DOCKERD_FLAGS:-} --storage-driver=vfs && return
    # shellcheck disable=SC2086
    start_dockerd ${CATDOG_DOCKERD_FLAGS:-} --storage-driver=vfs --iptables=false --bridge=none && return
    die "could not start dockerd (see $DOCKERD_LOG)"
}

# ----------------------------------------------------------------------------------------- compose
find_compose() {  # prints the command, or fails
    if docker compose version >/dev/null 2>&1; then echo "docker compose"; return 0; fi
    if command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
        echo "docker-compose"; return 0
    fi
    return 1
}
ensure_compose() {
    local cmd
    if ! cmd=$(find_compose); then
        if apt_has docker-compose-plugin || { apt-get update >/dev/null 2>&1 && apt_has docker-compose-plugin; }; then
            apt_install docker-compose-plugin
        elif apt_has docker-compose; then
            apt_install docker-compose
        else
            die "no compose found and apt offers neither docker-compose-plugin nor docker-compose"
        fi
        cmd=$(find_compose) || die "compose was installed but does not run"
        log "installed compose"
    fi
    local version
    # Whole outputs, then their first line: no pipe into head (SIGPIPE under pipefail).
    version=$($cmd version --short 2>/dev/null || $cmd version 2>/dev/null || true)
    version=${version%%$'\n'*}
    if [[ "$cmd" == "docker compose" ]]; then
        log "compose: the docker compose plugin (v2), version $version"
    else
        log "compose: docker-compose (v1, standalone), version $version"
    fi
    COMPOSE_CMD="$cmd"
}

# ------------------------------------------------------------------------------------------ trust
stage_build_ca() {
    local dest="$ROOT/docker/ca-certificates"
    shopt -s nullglob
    local cas=("$EXTRA_CA_DIR"/*.crt)
    shopt -u nullglob
    rm -rf "$dest"
    if [[ ${#cas[@]} -gt 0 ]]; then
        mkdir -p "$dest"
        cp "${cas[@]}" "$dest/"
        log "build trust: ${#cas[@]} CA certificate(s) from $EXTRA_CA_DIR -> docker/ca-certificates/ (builder stage only, git-ignored)"
    else
        log "build trust: no extra CA certificates on this host"
    fi
}

ensure_engine
ensure_compose
stage_build_ca
base=$(bash "$ROOT/docker/build-base-image.sh") || die "no base image (docker/build-base-image.sh failed)"
env_file="$ROOT/.env"
touch "$env_file"
grep -v '^BASE_IMAGE=' "$env_file" >"$env_file.tmp" || true
echo "BASE_IMAGE=$base" >>"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
log "base image: $base (BASE_IMAGE in .env, read by compose)"
echo "$COMPOSE_CMD"
