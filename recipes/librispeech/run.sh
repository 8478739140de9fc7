#!/usr/bin/env bash
# The whole MVQ-KD pipeline on the embedded synthetic corpus (or a real LibriSpeech with
# --corpus-dir PATH --synth false), ending with a results table and a PNG:
#   stage 0: synthesise the corpus (espeak-ng, LibriSpeech layout)      -> CORPUS/LibriSpeech
#   stage 1: manifests, fbank, BPE (prepare.sh)                          -> DATA/
#   stage 2: demo teacher: small HuBERT trained with CTC on train-clean-360 -> EXP/teacher
#   stage 3: teacher -> quantizer -> codebook indexes (distill.sh)       -> DATA/vq
#   stage 4: float teacher embeddings of train-clean-100 for L2-KD       -> DATA/kd
#   stage 5: students baseline, MVQ-KD, L2-KD, one per seed (train.sh)  -> EXP/seed<K>/{baseline,mvq,l2}
#   stage 6: decode test-clean / test-other / dev-clean (decode.sh)      -> EXP/seed<K>/<system>/<method>
#   stage 7: results table (mean over seeds, markdown) + PNG            -> EXP/results.{md,png}
# Every stage resumes / is a no-op when re-run. Wall time of each stage goes to EXP/stage_times.tsv.
# Needs bash >= 5.1 (parallel student jobs).
# Usage: recipes/librispeech/run.sh [--stage N] [--stop-stage M] [--hours 6] [--seeds "1 2"] ...

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
quantizer_time_budget=60
student_size=demo        # student preset (mvqkd train --model-size)
num_epochs=5
max_duration=20           # seconds of audio per student batch (2x the updates of 40 s at the same cost per epoch)
# extra `mvqkd train` options, the same for every system: short warmup, peak LR 1e-3 (3e-3 traps
# the baseline in the blank phase), auxiliary CTC, and no time warp (distilling students cannot
# use it: their labels are frame-aligned). Chosen on dev-clean: docs/RESULTS.md.
student_args="--warmup-steps 100 --lr 1e-3 --ctc-loss-scale 0.3 --time-warp-factor 0"
codebook_loss_scale=0.1   # MVQ-KD student: weight of the codebook loss (mvqkd train --codebook-loss-scale)
seeds="1 2"               # one student per system and seed; results are averaged over seeds
student_jobs=2            # students trained at the same time (each gets nj / student_jobs threads)
systems="baseline mvq l2"
decode_method=modified_beam_search  # or greedy_search, fast_beam_search (beam 4)
decode_avg=1              # checkpoints averaged for decoding (epochs num_epochs-avg+1 .. num_epochs)

. "$(dirname "$0")/parse_options.sh"

recipe=$(cd "$(dirname "$0")" && pwd)
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (run.sh:${BASH_LINENO[0]}) $*"; }
mkdir -p "$exp_root"
times="$exp_root/stage_times.tsv"
timed() {  # timed NAME CMD...: run CMD, record its wall time as NAME in stage_times.tsv
  local name=$1 t0
  shift
  t0=$(date +%s)
  "$@"
  { grep -v "^$name	" "$times" 2>/dev/null || true; echo -e "$name\t$(($(date +%s) - t0))"; } > "$times.tmp"
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

# Stages 5 and 6 train / decode every (system, seed) student as a background job, student_jobs
# at a time, each with nj / student_jobs intra-op threads (a small model on 2 cores runs faster
# as two 1-thread processes than as one 2-thread process). Run K of SYSTEM: EXP/seedK/SYSTEM,
# its console output in EXP/seedK/SYSTEM/{train,decode}.out. A finished training run
# (epoch-N.pt present) is skipped.
threads=$(( nj / student_jobs > 0 ? nj / student_jobs : 1 ))  # intra-op threads of a pool job
train_one() {  # train_one SYSTEM SEED
  local st
  case $1 in baseline) st=0 ;; mvq) st=1 ;; l2) st=2 ;; *) echo "unknown system $1" >&2; return 1 ;; esac
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$recipe/train.sh" --stage $st --stop-stage $st \
    --data-dir "$data_dir" --vocab-size "$vocab_size" --exp-root "$exp_root/seed$2" \
    --model-size "$student_size" --num-epochs "$num_epochs" --max-duration "$max_duration" \
    --num-workers 0 --seed "$2" --extra-args "$student_args" --codebook-loss-scale "$codebook_loss_scale" \
    --mvq-cuts "$data_dir/vq/librispeech_cuts_train-clean-100.jsonl.gz" \
    --kd-cuts "$data_dir/kd/librispeech_cuts_train-clean-100.jsonl.gz"
}
# A job pool for stages 5 and 6: pool_submit starts a command in the background once fewer than
# student_jobs run; pool_drain waits for all of them and fails when any failed.
declare -A pool_running=()  # pid -> "DESCRIPTION (log: FILE)"
pool_failed=""
pool_reap() {  # wait for one job to end, log how it ended
  local pid
  if wait -n -p pid; then log "finished ${pool_running[$pid]}"
  else pool_failed="$pool_failed; ${pool_running[$pid]}"; log "FAILED ${pool_running[$pid]}"; fi
  unset "pool_running[$pid]"
}
pool_submit() {  # pool_submit DESCRIPTION LOGFILE CMD...
  local desc=$1 out=$2
  shift 2
  while [ "${#pool_running[@]}" -ge "$student_jobs" ]; do pool_reap; done
  "$@" > "$out" 2>&1 &
  pool_running[$!]="$desc (log: $out)"
  log "started ${pool_running[$!]}"
}
pool_drain() {  # pool_drain STAGE_NAME
  while [ "${#pool_running[@]}" -gt 0 ]; do pool_reap; done
  [ -z "$pool_failed" ] || { echo "$0: $1 failed for ${pool_failed#; }" >&2; pool_failed=""; return 1; }
}
train_students() {
  local dir
  for seed_ in $seeds; do
    for system in $systems; do
      dir="$exp_root/seed$seed_/$system"
      if [ -f "$dir/epoch-$num_epochs.pt" ]; then log "Stage 5: $dir already trained"; continue; fi
      mkdir -p "$dir"
      pool_submit "Stage 5: $system seed $seed_" "$dir/train.out" train_one "$system" "$seed_"
    done
  done
  pool_drain "stage 5"
}
decode_one() {  # decode_one EXP_DIR
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$recipe/decode.sh" --exp-dir "$1" \
    --epoch "$num_epochs" --avg "$decode_avg" --method "$decode_method" --data-dir "$data_dir" \
    --vocab-size "$vocab_size" --test-sets "test-clean test-other dev-clean"
}
decode_students() {
  log "Stage 6: decode ($decode_method, epoch $num_epochs, avg $decode_avg), $student_jobs at a time"
  for seed_ in $seeds; do
    for system in $systems; do
      pool_submit "Stage 6: decode $system seed $seed_" "$exp_root/seed$seed_/$system/decode.out" \
        decode_one "$exp_root/seed$seed_/$system"
    done
  done
  pool_drain "stage 6"
}

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: students ($systems) x seeds ($seeds), $student_jobs at a time"
  timed students train_students
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  timed decode decode_students
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "Stage 7: results"
  python "$recipe/../../tools/summarize_results.py" --exp-root "$exp_root" --systems $systems \
    --seeds $seeds --method "$decode_method" \
    --store "mvq=$data_dir/vq/train-clean-100/shards" --store "l2=$data_dir/kd/shards"
fi
