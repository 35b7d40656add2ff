#!/usr/bin/env bash
# Install (if needed) and start the dashboard on ./mmae_studio.duckdb (or $MMAE_STUDIO_DB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m streamlit run app.py "$@"
