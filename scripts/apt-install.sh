#!/usr/bin/env bash
# Install Debian packages non-interactively, for the set-up scripts (setup-compose.sh, docker-smoke.sh):
# `apt-get install` first, and only if that fails `apt-get update` and once more (a fresh machine's
# package lists may be missing or stale). Exits non-zero, saying why, when not root, without
# apt-get, or when the install fails (the last lines of apt's log are shown).
#
# Usage: scripts/apt-install.sh PACKAGE...
set -euo pipefail
say() { echo "[apt-install] $*" >&2; }
[[ $# -gt 0 ]] || { say "usage: $0 PACKAGE..."; exit 2; }
[[ "$(id -u)" -eq 0 ]] || { say "$* missing and not root: install it (apt-get install $*)"; exit 1; }
command -v apt-get >/dev/null 2>&1 || { say "$* missing and no apt-get to install it"; exit 1; }
say "installing $* with apt-get"
export DEBIAN_FRONTEND=noninteractive
LOG=/tmp/catdog-apt.log
apt-get install -y --no-install-recommends "$@" >"$LOG" 2>&1 \
    || { apt-get update >>"$LOG" 2>&1 && apt-get install -y --no-install-recommends "$@" >>"$LOG" 2>&1; } \
    || { tail -n 20 "$LOG" >&2; say "apt-get install $* failed"; exit 1; }
