#!/usr/bin/env bash
# Install (if needed) and run the whole test suite, the real-browser tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2
  else
    echo "warning: /usr/bin/chromium is missing and we are not root; browser tests will be skipped" >&2
  fi
fi
export PYTHONHASHSEED=0
exec .venv/bin/python -m pytest -q "$@"
