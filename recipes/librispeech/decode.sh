#!/usr/bin/env bash
# Decode the test sets (DATA/fbank/CORPUS_cuts_<set>.jsonl.gz; LibriSpeech's by default) with a trained student and write WER reports:
#   EXP/<method>/{recogs,errs,wer-summary}-<set>.txt for each --method
#   (greedy_search, modified_beam_search, fast_beam_search, or all; fast_beam_search is
#   icefall's with the trivial graph, in PyTorch: no k2 needed).
# Checkpoints: --epoch E --avg A averages epoch-(E-A+1..E).pt; --iter N --avg A averages the
# A newest checkpoint-STEP.pt with STEP <= N (leave --epoch and --iter empty for the newest);
# --use-averaged-model true decodes icefall's averaged model over the same span instead.
# The BPE model comes from the checkpoint. Options left empty are not passed: `mvqkd decode
# --help` shows their defaults.
# Usage: recipes/librispeech/decode.sh --exp-dir exp/mvq [--epoch 30 --avg 5] [--method all] ...

set -euo pipefail

exp_dir=exp
epoch=""
iter=""
avg=""
use_averaged_model=""     # true: decode the running mean of the weights (mvqkd train --average-period)
method=all
beam_size=""              # modified_beam_search
beam=""                   # fast_beam_search: log-prob beam
max_contexts=""           # fast_beam_search
max_states=""             # fast_beam_search
max_duration=""
device=""
data_dir=data
corpus=librispeech        # the manifests' name prefix (recipes/mycorpus sets it)
test_sets="test-clean test-other"

. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/local/common.sh"

[ -d "$exp_dir" ] || die "--exp-dir not found: $exp_dir"
[ -z "$epoch" ] || [ -z "$iter" ] || die "give --epoch or --iter, not both"

cuts_args=()
for part in $test_sets; do
  f=$(fbank_cuts "$part")
  [ -f "$f" ] || die "cut manifest not found: $f"
  cuts_args+=("$part=$f")
done
read -r -a methods <<< "$method"
opts=()
for name in epoch iter avg beam_size beam max_contexts max_states max_duration device; do
  add_opt opts "--${name//_/-}" "${!name}"
done
add_flag opts --use-averaged-model "$use_averaged_model"

log "decoding ${test_sets} with ${methods[*]} ($exp_dir)"
mvqkd decode --exp-dir "$exp_dir" --cuts "${cuts_args[@]}" --method "${methods[@]}" "${opts[@]}"
log "Done: WER summaries in $exp_dir/<method>/wer-summary-<set>.txt"
