#!/usr/bin/env bash
# Create .venv and install catdog with its dev tools; re-installs only when pyproject.toml or the lockfile
# changed. Sourced by scripts/serve.sh and scripts/test.sh, so a fresh machine needs nothing but python3.
# requirements/dev.lock (scripts/lock.sh) is passed as constraints (-c): every locked package gets the
# version CI tested, and a dependency added to pyproject.toml but not locked yet still installs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.catdog-installed"
LOCK="$ROOT/requirements/dev.lock"
want="$({ cat "$ROOT/pyproject.toml"; cat "$LOCK" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)"
installed="$(cat "$STAMP" 2>/dev/null || true)"
# A venv whose creation was interrupted (no pip in it) is made again rather than failing later.
# Checked only when an install is due: a finished install has written its stamp.
if [ "$installed" != "$want" ] && [ -x "$VENV/bin/python" ] \
  && ! "$VENV/bin/python" -m pip --version > /dev/null 2>&1; then
  echo "setup: $VENV is incomplete (no pip); creating it again" >&2
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi
if [ "$installed" != "$want" ]; then
  echo "setup: installing catdog and its dependencies (TensorFlow is ~600 MB; first time takes minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  if [ -f "$LOCK" ]; then
    if ! "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" -c "$LOCK"; then
      # pyproject.toml asks for something the lock excludes: install unpinned, loudly.
      echo "setup: WARNING: pyproject.toml conflicts with $LOCK; installing without it (run scripts/lock.sh)" >&2
      "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
    fi
  else
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
  fi
  echo "$want" > "$STAMP"
fi
