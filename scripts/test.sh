#!/usr/bin/env bash
# Everything CI checks: lint, format, types, then the whole pytest suite with coverage: all three tiers,
# tests/unit, tests/service and tests/system (plain `pytest` runs the first two; set CATDOG_DOCKER_TESTS=1
# to include building and running the CPU Docker image). Extra arguments go to pytest; paths among them
# replace the three tiers, as they replace testpaths. Coverage counts this process only: code run by
# servers the tests start in subprocesses (`python -m app serve`, the Docker image) is not measured. The
# floor is fail_under in pyproject.toml ([tool.coverage.report]); a partial run
# (scripts/test.sh tests/service/test_api.py) falls under it, so add --no-cov (or --cov-fail-under=0) there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/setup-browser.sh"  # chromium for tests/system/test_web_page.py (apt, when root)
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
step() { printf '\n== %s\n' "$*" >&2; }
step "ruff check";  .venv/bin/ruff check .
step "ruff format"; .venv/bin/ruff format --check .
step "mypy";        .venv/bin/mypy
step "pytest";      .venv/bin/pytest -o "testpaths=tests/unit tests/service tests/system" \
  --cov=catdog --cov=app --cov=training --cov-report=term-missing:skip-covered "$@"
