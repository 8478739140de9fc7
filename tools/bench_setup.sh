#!/usr/bin/env bash
# Times tools/setup.sh from nothing: REV's version against the working tree's, alternating, each in
# a fresh virtual environment (pip's cache as it is), then the first import of every dependency
# the pipeline uses in each venv (where bytecode that was not compiled at install would cost).
#   bash tools/bench_setup.sh 29214d3 2     # REV, rounds (default 2); needs the machine to itself
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench_setup.sh REV [ROUNDS]}; rounds=${2:-2}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
git show "$rev:tools/setup.sh" | sed "s|^cd \"\$(dirname \"\$0\")/..\"|cd \"$PWD\"|" > "$tmp/old.sh"
grep -qx "cd \"$PWD\"" "$tmp/old.sh" || {  # it would otherwise install from the wrong folder
  echo "bench_setup.sh: $rev:tools/setup.sh has no 'cd \"\$(dirname \"\$0\")/..\"' line to point at $PWD" >&2; exit 1; }
imp="import torch, lhotse, transformers, sentencepiece, h5py, lilcom, soundfile, scipy, kaldialign, \
multi_quantization, sherpa_onnx, onnxruntime, onnx, pytest, matplotlib.pyplot, \
transformers.models.hubert.modeling_hubert"
now() { date +%s.%N; }
for r in $(seq "$rounds"); do
  for v in old new; do
    script=tools/setup.sh; [ $v = old ] && script=$tmp/old.sh
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    t0=$(now); VENV=$tmp/venv bash "$script" > "$tmp/$v.log" 2>&1 || { cat "$tmp/$v.log"; exit 1; }
    t1=$(now); "$tmp/venv/bin/python" -c "$imp"; t2=$(now)
    pyc=$(find "$tmp/venv" -name '*.pyc' | wc -l)
    printf '%s (%s) round %s: setup %.1f s, first import %.1f s, %s .pyc files; load before %s\n' \
      "$v" "$([ $v = old ] && echo "$rev" || echo working tree)" "$r" "$(echo "$t1-$t0" | bc)" \
      "$(echo "$t2-$t1" | bc)" "$pyc" "$load"
    rm -rf "$tmp/venv"
  done
done
