#!/usr/bin/env bash
# The whole MVQ-KD pipeline on the embedded synthetic corpus (or a real LibriSpeech with
# --corpus-dir PATH --synth false), ending with a results table and a PNG:
#   stage 0: synthesise the corpus (espeak-ng, LibriSpeech layout)      -> CORPUS/LibriSpeech
#   stage 1: manifests, fbank, BPE (prepare.sh)                          -> DATA/
#   stage 2: demo teacher: small HuBERT trained with CTC on train-clean-360 -> EXP/teacher
#   stage 3: teacher -> quantizer -> codebook indexes (distill.sh)       -> DATA/vq
#   stage 4: float teacher embeddings of train-clean-100 for L2-KD       -> DATA/kd
#   stage 5: students: baseline, MVQ-KD, L2-KD (train.sh)                -> EXP/{baseline,mvq,l2}
#   stage 6: decode test-clean / test-other / dev-clean (decode.sh)      -> EXP/<system>/greedy_search
#   stage 7: results table (markdown) + PNG                              -> EXP/results.{md,png}
# Every stage resumes / is a no-op when re-run. Wall time of each stage goes to EXP/stage_times.tsv.
# Usage: recipes/librispeech/run.sh [--stage N] [--stop-stage M] [--hours 6] [--seed 0] ...

set -euo pipefail

stage=0
stop_stage=7
synth=true                # false: use an existing LibriSpeech copy in --corpus-dir
hours=6                   # size of the synthetic corpus (all parts)
corpus_seed=0
corpus_dir=download
data_dir=data
exp_root=exp
vocab_size=256
nj=2
teacher_size=small
teacher_time_budget=900   # seconds of teacher training (the budget, not the epochs, ends it)
teacher_epochs=100
teacher_layer=3           # 1-based teacher layer that is quantized / regressed (of 4)
num_codebooks=8
quantizer_time_budget=120
student_size=small
num_epochs=3
max_duration=60           # seconds of audio per student batch
student_args="--warmup-steps 100 --lr 2e-3"  # extra `mvqkd train` options (short demo: short warmup)
seed=42                   # student seed
systems="baseline mvq l2"
decode_method=greedy_search

. "$(dirname "$0")/parse_options.sh"

recipe=$(cd "$(dirname "$0")" && pwd)
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"; }
mkdir -p "$exp_root"
times="$exp_root/stage_times.tsv"
timed() {  # timed NAME CMD...: run CMD, append its wall time to stage_times.tsv
  local name=$1 t0 t1
  shift
  t0=$(date +%s)
  "$@"
  t1=$(date +%s)
  { grep -v "^$name	" "$times" 2>/dev/null || true; echo -e "$name\t$((t1 - t0))"; } > "$times.tmp"
  mv "$times.tmp" "$times"
}
all_parts="train-clean-360 train-clean-100 dev-clean test-clean test-other"
fbank() { echo "$data_dir/fbank/librispeech_cuts_$1.jsonl.gz"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ "$synth" = true ]; then
  log "Stage 0: synthetic corpus, $hours h, seed $corpus_seed -> $corpus_dir"
  if [ -f "$corpus_dir/.synth.done" ] && [ "$(cat "$corpus_dir/.synth.done")" = "$hours $corpus_seed" ]; then
    log "Stage 0: already done"
  else
    timed corpus mvqkd synth-corpus --out-dir "$corpus_dir" --hours "$hours" --seed "$corpus_seed" --num-jobs "$nj"
    echo "$hours $corpus_seed" > "$corpus_dir/.synth.done"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data preparation"
  timed prepare "$recipe/prepare.sh" --corpus-dir "$corpus_dir" --data-dir "$data_dir" \
    --parts "$all_parts" --vocab-size "$vocab_size" --nj "$nj"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: demo teacher ($teacher_size, ${teacher_time_budget}s) on train-clean-360 -> $exp_root/teacher"
  if [ -f "$exp_root/teacher/teacher_wer.json" ]; then
    log "Stage 2: already done"
  else
    timed teacher mvqkd finetune-teacher --train-cuts "$(fbank train-clean-360)" --dev-cuts "$(fbank dev-clean)" \
      --out "$exp_root/teacher" --size "$teacher_size" --time-budget "$teacher_time_budget" --num-epochs "$teacher_epochs" \
      --eval-cuts "test-clean=$(fbank test-clean)" "test-other=$(fbank test-other)"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: quantizer + codebook indexes (teacher layer $teacher_layer, $num_codebooks codebooks)"
  timed distill "$recipe/distill.sh" --data-dir "$data_dir" --vq-dir "$data_dir/vq" \
    --teacher-dir "$exp_root/teacher" --layer "$teacher_layer" --num-codebooks "$num_codebooks" \
    --quantizer-time-budget "$quantizer_time_budget" --train-parts train-clean-100
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ] && [[ " $systems " == *" l2 "* ]]; then
  log "Stage 4: float16 teacher embeddings of train-clean-100 for the L2-KD baseline -> $data_dir/kd"
  timed embeddings mvqkd dump-embeddings --cuts "$(fbank train-clean-100)" --teacher "$exp_root/teacher" \
    --layer "$teacher_layer" --all --out-dir "$data_dir/kd" --join-onto "$(fbank train-clean-100)" \
    --out-manifest "$data_dir/kd/librispeech_cuts_train-clean-100.jsonl.gz"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for system in $systems; do
    case $system in baseline) st=0 ;; mvq) st=1 ;; l2) st=2 ;; *) echo "unknown system $system" >&2; exit 1 ;; esac
    log "Stage 5: student $system"
    timed "train-$system" "$recipe/train.sh" --stage $st --stop-stage $st --data-dir "$data_dir" \
      --vocab-size "$vocab_size" --exp-root "$exp_root" --model-size "$student_size" \
      --num-epochs "$num_epochs" --max-duration "$max_duration" --seed "$seed" --extra-args "$student_args" \
      --mvq-cuts "$data_dir/vq/librispeech_cuts_train-clean-100.jsonl.gz" \
      --kd-cuts "$data_dir/kd/librispeech_cuts_train-clean-100.jsonl.gz"
  done
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  for system in $systems; do
    log "Stage 6: decode $system ($decode_method, epoch $num_epochs)"
    timed "decode-$system" "$recipe/decode.sh" --exp-dir "$exp_root/$system" --epoch "$num_epochs" --avg 1 \
      --method "$decode_method" --data-dir "$data_dir" --vocab-size "$vocab_size" \
      --test-sets "test-clean test-other dev-clean"
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "Stage 7: results"
  python "$recipe/../../tools/summarize_results.py" --exp-root "$exp_root" --systems $systems \
    --method "$decode_method" --store "mvq=$data_dir/vq/train-clean-100/shards" --store "l2=$data_dir/kd/shards"
fi
