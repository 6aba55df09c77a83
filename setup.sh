#!/usr/bin/env bash
# Set up mlipstore in ./.venv (Python 3.11) and run the pipeline on the demo data.
#   bash setup.sh            install, then `dvc repro` (ingest -> export -> select -> train)
#   bash setup.sh --install  install only
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
[ "${1:-}" = "--install" ] && exit 0

export PATH="$PWD/.venv/bin:$PATH"   # dvc runs the stages' `mlipstore stage ...` commands
dvc repro
mlipstore potentials
dvc metrics show
