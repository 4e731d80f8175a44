#!/usr/bin/env bash
# Run the service: installs on first use, trains the default model if model/default is missing,
# then serves on CATDOG_HOST:CATDOG_PORT (default 127.0.0.1:8000). Extra arguments go to `python -m app serve`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m app serve "$@"
