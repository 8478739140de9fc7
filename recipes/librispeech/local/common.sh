#!/usr/bin/env bash
# Sourced (never copied) by the recipe scripts: logging, option pass-through, paths,
# done markers that notice changed inputs, stage timing and a job pool.
# Every function quotes its paths: folders with spaces work.

recipe_name=$(basename "$0")

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (${recipe_name}:${BASH_LINENO[0]}) $*"; }
die() { echo "${recipe_name}: $*" >&2; exit 1; }

# add_opt ARRAY --flag VALUE: append "--flag VALUE" to the array named ARRAY when VALUE is set,
# so that a recipe passes on only the options a user gave and mvqkd's defaults stay the defaults.
add_opt() {
  local -n __arr=$1
  [ -z "$3" ] || __arr+=("$2" "$3")
}

# add_flag ARRAY --flag VALUE: VALUE true -> --flag, false -> --no-flag, empty -> nothing.
add_flag() {
  local -n __arr=$1
  case "$3" in
    "") ;;
    true) __arr+=("$2") ;;
    false) __arr+=("--no-${2#--}") ;;
    *) die "$2 must be true or false, got '$3'" ;;
  esac
}

# record_environment FILE: what a run's float results depend on besides the command and seed:
# the processor (model, the torch kernels it gets), the portable-kernels setting, mvqkd's commit,
# the Python packages and espeak-ng. Written at the start of a run; compare two runs' files
# before their models (docs/RESULTS.md, "Repeatability across processors").
record_environment() {
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
    echo "cpu family / model: $(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2) /$(grep -m1 '^model\s*:' /proc/cpuinfo | cut -d: -f2)"
    echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|avx512_fp16|amx_tile|fma)$' | tr '\n' ' ')"
    echo "mvqkd commit: $(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "MVQKD_PORTABLE_KERNELS=${MVQKD_PORTABLE_KERNELS:-} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-}"
    python - <<'PY' 2>/dev/null || echo "torch: not importable with mvqkd by $(command -v python)"
import os, sys
from mvqkd.cli import portable_kernels
portable_kernels()
import torch
print(f"python {sys.version.split()[0]}; torch {torch.__version__}, kernels "
      f"{torch.backends.cpu.get_cpu_capability()}, oneDNN {'on' if torch.backends.mkldnn.enabled else 'off'}, "
      f"MKL_CBWR={os.environ.get('MKL_CBWR', '')}")
PY
    echo "espeak-ng: $(espeak-ng --version 2>/dev/null | head -1)"
    echo "packages:"
    python -m pip freeze --exclude-editable 2>/dev/null | sed 's/^/  /'
  } > "$1"
}

# --portable-kernels VALUE -> MVQKD_PORTABLE_KERNELS for every mvqkd command of the run: true
# (1: the same floats on every x86-64 processor with AVX2, mvqkd.cli.portable_kernels), false
# (0: the processor's own, faster kernels), empty: the environment's, untouched.
set_portable_kernels() {
  case "$1" in
    true) export MVQKD_PORTABLE_KERNELS=1 ;;
    false) export MVQKD_PORTABLE_KERNELS=0 ;;
    "") ;;
    *) die "--portable-kernels must be true or false, got '$1'" ;;
  esac
}

# Paths of the data folder (DATA = $data_dir); CORPUS = $corpus (--corpus; librispeech by
# default) names the manifests, so recipes/mycorpus runs the same stages on your corpus.
manifest_path() { echo "$data_dir/manifests/${corpus:-librispeech}_$1_$2.jsonl.gz"; }  # KIND PART
fbank_cuts() { echo "$data_dir/fbank/${corpus:-librispeech}_cuts_$1.jsonl.gz"; }     # PART
vq_cuts() { echo "$1/${corpus:-librispeech}_cuts_$2.jsonl.gz"; }                    # DIR PART

# find_bpe_model [VOCAB_SIZE]: DATA/lang_bpe_V/bpe.model; without V the only one there is.
find_bpe_model() {
  if [ -n "${1:-}" ]; then
    [ -f "$data_dir/lang_bpe_$1/bpe.model" ] || die "BPE model not found: $data_dir/lang_bpe_$1/bpe.model (run prepare.sh --vocab-size $1)"
    echo "$data_dir/lang_bpe_$1/bpe.model"; return
  fi
  local found=("$data_dir"/lang_bpe_*/bpe.model)
  [ -f "${found[0]}" ] || die "no BPE model under $data_dir/lang_bpe_*/ (run prepare.sh first)"
  [ "${#found[@]}" -eq 1 ] || die "several BPE models (${found[*]}); choose one with --vocab-size"
  echo "${found[0]}"
}

# input_key ARG...: a fingerprint of the arguments, and of what each names on disk (a file:
# path, size, mtime; a folder: the same for every file below it). A done marker holds it, so
# a stage re-runs when its inputs or options change.
input_key() {
  local a
  {
    for a in "$@"; do
      printf 'arg %s\n' "$a"
      if [ -f "$a" ]; then stat -c 'file %s %Y' "$a"
      elif [ -d "$a" ]; then find "$a" -type f -printf '%P %s %T@\n' | LC_ALL=C sort
      fi
    done
  } | sha1sum | cut -d' ' -f1
}

# is_done MARKER KEY: the stage's marker exists and was written for the same inputs.
is_done() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
# mark_done MARKER KEY
mark_done() { mkdir -p "$(dirname "$1")"; echo "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }
# changed MARKER KEY: true when a marker exists but for other inputs (outputs are stale).
changed() { [ -f "$1" ] && [ "$(cat "$1")" != "$2" ]; }

# timed FILE NAME CMD...: run CMD and record its wall time as "NAME<TAB>seconds" in FILE
# (a measurement, never a stopping rule).
timed() {
  local file=$1 name=$2 t0
  shift 2
  t0=$(date +%s)
  "$@"
  mkdir -p "$(dirname "$file")"
  { grep -v "^$name	" "$file" 2>/dev/null || true; printf '%s\t%s\n' "$name" "$(($(date +%s) - t0))"; } > "$file.tmp"
  mv "$file.tmp" "$file"
}

# A job pool: pool_submit starts a command in the background once fewer than $pool_size
# run (its pid in $pool_last_pid); pool_wait_for PID waits until that job has ended and fails
# when it failed; pool_drain waits for all of them and fails when any failed. Needs bash >= 5.1.
declare -A pool_running=()  # pid -> "DESCRIPTION (log: FILE)"
declare -A pool_exit=()     # pid -> 0 or 1, once reaped
pool_failed=""
pool_last_pid=""
pool_size=${pool_size:-1}
pool_reap() {
  local pid
  if wait -n -p pid; then pool_exit[$pid]=0; log "finished ${pool_running[$pid]}"
  else
    pool_exit[$pid]=1
    pool_failed="$pool_failed; ${pool_running[$pid]}"; log "FAILED ${pool_running[$pid]}"
  fi
  unset "pool_running[$pid]"
}
pool_submit() {  # pool_submit DESCRIPTION LOGFILE CMD...
  local desc=$1 out=$2
  shift 2
  while [ "${#pool_running[@]}" -ge "$pool_size" ]; do pool_reap; done
  "$@" > "$out" 2>&1 &
  pool_last_pid=$!
  pool_running[$!]="$desc (log: $out)"
  log "started ${pool_running[$!]}"
}
pool_wait_for() {  # pool_wait_for PID
  while [ -n "${pool_running[$1]+x}" ]; do pool_reap; done
  [ "${pool_exit[$1]:-1}" = 0 ]
}
pool_drain() {  # pool_drain WHAT
  while [ "${#pool_running[@]}" -gt 0 ]; do pool_reap; done
  [ -z "$pool_failed" ] || { echo "${recipe_name}: $1 failed for ${pool_failed#; }" >&2; pool_failed=""; return 1; }
}
