#!/usr/bin/env bash
# One-step setup on a fresh Debian/Ubuntu machine (no GPU needed):
#   - Debian packages: espeak-ng and sox (the embedded corpus), and gcc where the processor is not
#     Intel's and there is no C compiler (mvqkd/mkl_vendor.py), via apt-get (sudo when not root)
#   - a virtual environment in .venv (override with VENV=path) with torch (CPU wheel range
#     torch>=2.1,<2.14; set TORCH_SPEC to choose another build) and mvqkd[dev] installed editable.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch>=2.1,<2.14"}

log() { echo "[setup] $*"; }

need_apt=""
for tool in espeak-ng sox; do command -v "$tool" >/dev/null 2>&1 || need_apt="$need_apt $tool"; done
# a processor that is not Intel's (AMD): portable kernels build a one-function library with cc so
# that MKL honours its reproducibility mode there (mvqkd/mkl_vendor.py)
if [ "$(uname -m)" = x86_64 ] && ! grep -q -m1 GenuineIntel /proc/cpuinfo 2>/dev/null \
   && ! command -v "${CC:-cc}" >/dev/null 2>&1; then
  need_apt="$need_apt gcc"
fi
if [ -n "$need_apt" ]; then
  log "installing Debian packages:$need_apt"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need_apt >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
# pip compiles each file to bytecode on one core; --no-compile and one parallel compileall at the
# end does the same work on all cores (8-11 s less on 2 cores: tools/bench_setup.sh, docs/benchmarks.md)
installed=""
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  log "installing $TORCH_SPEC"
  $PIP install -q --no-compile "$TORCH_SPEC"
  installed=1
fi
if ! "$VENV/bin/python" -c "import mvqkd, pytest, multi_quantization, sherpa_onnx, onnxruntime" >/dev/null 2>&1 \
   || [ pyproject.toml -nt "$VENV/.mvqkd-installed" ]; then
  log "installing mvqkd[dev] (editable)"
  $PIP install -q --no-compile -e ".[dev]"
  touch "$VENV/.mvqkd-installed"
  installed=1
fi
if [ -n "$installed" ]; then
  # -qq and "|| true": like pip, skip the few files that are not valid Python 3 (test data inside
  # packages); bytecode is only a cache, so a failure here costs start-up time, not correctness
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  "$VENV/bin/python" -m compileall -qq -j 0 "$site" || true
fi
"$VENV/bin/python" - <<'PY'
import importlib, sys
for name in ("torchaudio",):
    if importlib.util.find_spec(name) is not None:
        print(f"[setup] note: {name} is installed; mvqkd does not need it", file=sys.stderr)
import torch, lhotse, transformers
print(f"[setup] ready: torch {torch.__version__}, lhotse {lhotse.__version__}, transformers {transformers.__version__}")
PY
