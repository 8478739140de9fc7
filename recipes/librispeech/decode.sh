#!/usr/bin/env bash
# Decode the LibriSpeech test sets with a trained student and write WER reports.
#   stage 0: greedy search          -> EXP/greedy_search/{recogs,errs,wer-summary}-<set>.txt
#   stage 1: modified beam search   -> EXP/modified_beam_search/...   (--beam-size)
#   stage 2: fast beam search       -> EXP/fast_beam_search/...       (--beam --max-contexts --max-states;
#            icefall's fast_beam_search with the trivial graph, in PyTorch: no k2 needed)
# --method picks the stages to run: greedy_search, modified_beam_search, fast_beam_search, or all.
# Checkpoints: --epoch E --avg A averages epoch-(E-A+1..E).pt; --iter N --avg A averages the
# A newest checkpoint-STEP.pt with STEP <= N (leave --epoch and --iter empty for the newest).
# (options are the variables below; parse_options.sh lists them with --help)
# Usage: recipes/librispeech/decode.sh --exp-dir exp/mvq [--epoch 30 --avg 5] [--method all] ...

set -euo pipefail

stage=0
stop_stage=2
exp_dir=exp
epoch=""
iter=""
avg=1
method=all
beam_size=4               # modified_beam_search
beam=4.0                  # fast_beam_search: log-prob beam
max_contexts=4            # fast_beam_search
max_states=8              # fast_beam_search
max_duration=300
device=cpu
data_dir=data
vocab_size=500
test_sets="test-clean test-other"

. "$(dirname "$0")/parse_options.sh"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (decode.sh:${BASH_LINENO[0]}) $*"; }

declare bpe_model="$data_dir/lang_bpe_${vocab_size}/bpe.model"
[ -f "$bpe_model" ] || { echo "$0: BPE model not found: $bpe_model (run prepare.sh, or set --vocab-size)" >&2; exit 1; }
[ -d "$exp_dir" ] || { echo "$0: --exp-dir not found: $exp_dir" >&2; exit 1; }
if [ -n "$epoch" ] && [ -n "$iter" ]; then
  echo "$0: give --epoch or --iter, not both" >&2; exit 1
fi
case "$method" in
  all|greedy_search|modified_beam_search|fast_beam_search) ;;
  *) echo "$0: unknown --method $method (greedy_search, modified_beam_search, fast_beam_search or all)" >&2; exit 1 ;;
esac

declare -a cuts_args=()
for part in $test_sets; do
  f="$data_dir/fbank/librispeech_cuts_${part}.jsonl.gz"
  [ -f "$f" ] || { echo "$0: cut manifest not found: $f" >&2; exit 1; }
  cuts_args+=("$part=$f")
done

declare -a ckpt_args=(--avg "$avg")
[ -n "$epoch" ] && ckpt_args+=(--epoch "$epoch")
[ -n "$iter" ] && ckpt_args+=(--iter "$iter")

run_method() {
  mvqkd decode --exp-dir "$exp_dir" "${ckpt_args[@]}" --bpe-model "$bpe_model" \
    --cuts "${cuts_args[@]}" --method "$1" --beam-size "$beam_size" \
    --beam "$beam" --max-contexts "$max_contexts" --max-states "$max_states" \
    --max-duration "$max_duration" --device "$device"
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && { [ "$method" = all ] || [ "$method" = greedy_search ]; }; then
  log "Stage 0: greedy search on $test_sets ($exp_dir)"
  run_method greedy_search
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ] && { [ "$method" = all ] || [ "$method" = modified_beam_search ]; }; then
  log "Stage 1: modified beam search (beam $beam_size) on $test_sets ($exp_dir)"
  run_method modified_beam_search
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ] && { [ "$method" = all ] || [ "$method" = fast_beam_search ]; }; then
  log "Stage 2: fast beam search (beam $beam, max contexts $max_contexts, max states $max_states) on $test_sets ($exp_dir)"
  run_method fast_beam_search
fi
log "Done: WER summaries in $exp_dir/<method>/wer-summary-<set>.txt"
