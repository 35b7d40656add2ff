#!/usr/bin/env bash
# Install (if needed) and run the whole test suite, the real-browser tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2
  else
    echo "warning: /usr/bin/chromium is missing and we are not root; browser tests will be skipped" >&2
  fi
fi
export PYTHONHASHSEED=0
# Test files run in parallel, one worker per core up to 4 (MMAE_TEST_WORKERS overrides; 0 = serial):
# most of the time is CLI subprocesses, servers and browsers waiting, and the suite must finish in a
# few minutes on a 2-core machine. A file's tests stay on one worker (--dist loadfile), so its
# module fixtures are built once.
workers="${MMAE_TEST_WORKERS:-$(n=$(nproc 2>/dev/null || echo 2); echo $(( n < 4 ? n : 4 )))}"
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile "$@"
