#!/usr/bin/env bash
# Set up mlipstore in ./.venv and run the pipeline on the demo data.
#   bash setup.sh            install, then `dvc repro` (ingest -> export -> select -> train)
#   bash setup.sh --install  install only
# Python 3.10 to 3.13 (PYTHON=/path/to/python to choose). The versions of every package are
# those of constraints.txt. TensorFlow trains on the CPU; where `nvidia-smi` sees a GPU
# (or MLIPSTORE_GPU=1) TensorFlow's CUDA libraries are installed too and the fit runs there.
set -euo pipefail
cd "$(dirname "$0")"

# supported PYTHON LOWEST: PYTHON is 3.LOWEST to 3.13
supported() { "$1" -c "import sys; sys.exit(not (3, $2) <= sys.version_info[:2] <= (3, 13))" \
    >/dev/null 2>&1; }
if [ ! -x .venv/bin/python ]; then
    PY=""
    # PYTHON, else python3 or the newest python3.x; a 3.10 only where there is no 3.11+
    for candidate in ${PYTHON:+$PYTHON:10} python3:11 python3.13:11 python3.12:11 python3.11:11 \
                     python3:10 python3.10:10; do
        if command -v "${candidate%:*}" >/dev/null && supported "${candidate%:*}" "${candidate##*:}"
        then
            PY=${candidate%:*}; break
        fi
    done
    [ -n "$PY" ] || { echo "setup.sh: no Python 3.10-3.13 found; set PYTHON=/path/to/python3.x" >&2
                      exit 1; }
    "$PY" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet -c constraints.txt)
"${pip[@]}" --upgrade pip
"${pip[@]}" -e ".[test,tensorpot]"
# tensorpotential's metadata pins tensorflow[and-cuda]; its real needs are installed above
"${pip[@]}" --no-deps tensorpotential
if [ "${MLIPSTORE_GPU:-}" = 1 ] || { [ "${MLIPSTORE_GPU:-}" != 0 ] && command -v nvidia-smi \
        >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; }; then
    "${pip[@]}" "tensorflow[and-cuda]"   # the CUDA and cuDNN libraries TensorFlow was built for
fi
[ "${1:-}" = "--install" ] && exit 0

export PATH="$PWD/.venv/bin:$PATH"   # dvc runs the stages' `mlipstore stage ...` commands
dvc repro
mlipstore potentials
dvc metrics show
echo
echo "Commit the result so that 'dvc metrics diff' and 'dvc exp' have a baseline:"
echo "  git add -A && git commit -m 'demo fit'"
