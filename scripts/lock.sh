#!/usr/bin/env bash
# Lock the dependency set from pyproject.toml (the one source of truth), for Linux x86_64 / Python 3.11:
#
#   requirements/dev.lock  every extra the set-up installs (pip install -e .[dev]); scripts/setup.sh and
#                          CI install with it as constraints (-c), so a package in pyproject.toml that is
#                          not locked yet still installs (unpinned) until the next scripts/lock.sh.
#   requirements/cpu.lock  the serving dependencies only ([project].dependencies), tensorflow swapped
#                          for tensorflow-cpu; what the CPU image installs (--no-deps).
#   requirements/gpu.lock  the serving dependencies with tensorflow[and-cuda]; what the GPU image installs.
# cpu/gpu are resolved under dev.lock as constraints, so every shared package has the version CI tested.
#
# requirements/overrides.txt keeps out versions uv would pick but pip refuses on Python 3.11 (uv ignores
# the upper bound of a package's Requires-Python).
#
# Usage: scripts/lock.sh [--upgrade]    (one command; rerun after any change to the dependencies)
#   --upgrade  take the newest allowed versions instead of keeping the current pins
# Uses uv from .venv (installed there if missing); needs PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UPGRADE=()
for arg in "$@"; do
    case "$arg" in
        --upgrade) UPGRADE=(--upgrade) ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "lock: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"
UV="$(dirname "$PY")/uv"
if [[ ! -x "$UV" ]]; then
    echo "lock: installing uv into $(dirname "$(dirname "$PY")")" >&2
    "$PY" -m pip install --quiet 'uv>=0.5'
fi
OUT=requirements
mkdir -p "$OUT"
# The host's pip.conf may add local wheel folders: a lock must name only what PyPI serves.
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --annotation-style line
        --index-url https://pypi.org/simple --no-config --custom-compile-command scripts/lock.sh
        --override requirements/overrides.txt --quiet "${UPGRADE[@]}")
export UV_NATIVE_TLS=1  # trust the system store (and SSL_CERT_FILE), as pip does here

lock() {  # $1: output file (its current pins are kept unless --upgrade), rest: uv pip compile arguments
    local out="$1"; shift
    "$UV" pip compile "${common[@]}" "$@" -o "$out"
    echo "lock: $out ($(grep -c '==' "$out") packages)" >&2
}
lock "$OUT/dev.lock" pyproject.toml --extra dev --no-emit-package catdog
# The images' inputs: [project].dependencies with tensorflow swapped (written here, committed with the locks).
"$PY" docker/pyproject_requirements.py pyproject.toml --cpu >"$OUT/cpu.in"
"$PY" docker/pyproject_requirements.py pyproject.toml --gpu >"$OUT/gpu.in"
# Not in the CPU image: libclang (60 MB, a build-time helper of tensorflow, never imported when serving
# a SavedModel) and the packaging tools pip/setuptools/wheel (the runtime venv installs nothing).
lock "$OUT/cpu.lock" "$OUT/cpu.in" --constraint "$OUT/dev.lock" \
    --no-emit-package libclang --no-emit-package setuptools --no-emit-package wheel --no-emit-package pip
lock "$OUT/gpu.lock" "$OUT/gpu.in" --constraint "$OUT/dev.lock"
