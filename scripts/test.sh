#!/usr/bin/env bash
# Everything CI checks: lint, format, types, then the whole pytest suite (set CATDOG_DOCKER_TESTS=1
# to include building and running the CPU Docker image). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
step() { printf '\n== %s\n' "$*" >&2; }
step "ruff check";  .venv/bin/ruff check .
step "ruff format"; .venv/bin/ruff format --check .
step "mypy";        .venv/bin/mypy
step "pytest";      .venv/bin/python -m pytest "$@"
