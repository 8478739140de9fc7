#!/usr/bin/env bash
# The CUDA checks of mvqkd in under 5 minutes on a GPU (see tools/gpu_check.py for what each
# one compares against the CPU). Prints one PASS / FAIL line per check; exit status 1 when any
# fails. Usage: bash tools/gpu_check.sh [--device cuda:0] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" tools/gpu_check.py "$@"
