#!/usr/bin/env bash
# The whole MVQ-KD pipeline on the embedded synthetic corpus (or a real LibriSpeech with
# --corpus-dir PATH --synth false), ending with a results table and a PNG:
#   stage 0: synthesise the corpus (espeak-ng, LibriSpeech layout)          -> CORPUS/LibriSpeech
#   stage 1: manifests, fbank, BPE (prepare.sh)                              -> DATA/
#   stage 2: demo teacher: small HuBERT trained with CTC on train-clean-360  -> EXP/teacher
#   stage 3: teacher -> quantizer -> codebook indexes (distill.sh)           -> DATA/vq
#   stage 4: float teacher embeddings of train-clean-100 for L2-KD           -> DATA/kd
#            and their PCA at the indexes' storage (the l2-pca system)       -> DATA/kd_pca
#   stage 5: students, one per system and seed (train.sh)                    -> EXP/seed<K>/<system>
#   stage 6: decode test-clean / test-other / dev-clean (decode.sh)          -> EXP/seed<K>/<system>/<method>
#            (run with stage 5, each student is decoded once it is trained, in the same job pool)
#   stage 7: results table (mean over seeds, markdown) + PNG                -> EXP/results.{md,png}
# Every budget is counted (teacher steps, quantizer iterations, student epochs): the same
# command gives the same models on a faster or a busier machine, and, with the default
# --portable-kernels true, on another x86-64 processor with AVX2. Wall times are measured
# into EXP/stage_times.tsv. Every stage resumes / is a no-op when re-run. Needs bash >= 5.1.
# Usage: recipes/librispeech/run.sh [--stage N] [--stop-stage M] [--hours 6] [--seeds "1 2"] ...
#   a short deterministic run: run.sh --hours 0.1 --teacher-steps 30 --quantizer-iters 2 --stop-stage 3

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
teacher_steps=1800        # optimizer steps of the demo teacher (its cosine schedule ends there)
teacher_layer=3           # 1-based teacher layer that is quantized / regressed (of 4)
num_codebooks=8
quantizer_iters=10        # quantizer training iterations (the students' options were chosen on dev-clean with 10)
student_size=demo         # student preset (mvqkd train --model-size)
num_epochs=5
max_duration=20           # seconds of audio per student batch
# extra `mvqkd train` options, the same for every system. Chosen on dev-clean: docs/RESULTS.md
# (--valid-every 0: the dev-clean loss after the last epoch only, not after each: ~6 s an epoch;
# subsampling_channels=32: the front-end at half the demo preset's width, for the 60-minute wall
# time: students ~0.85x as long, dev-clean mixed, table W against table T in docs/RESULTS.md).
student_args="--sigma-reparam --lr 3e-3 --warmup-steps 100 --no-spec-augment --model-override dropout=0.0 --model-override rnnt_warmup_steps=500 --model-override subsampling_channels=32 --ctc-loss-scale 0.3 --num-workers 0 --valid-every 0"
average_period=10         # students keep icefall's running mean of their weights, sampled every N steps
                          # (mvqkd train --average-period; 0: none); it never changes the trained weights
codebook_loss_scale=0.04  # MVQ-KD students (mvqkd train --codebook-loss-scale; its default 0.1 is the
                          # paper's, for the linear head); 0.04 chosen for the residual head with squared
                          # energy weights on dev-clean with the 32-channel front-end (mean of 2 seeds: 22.92
                          # against 0.01 / 0.02 / 0.08's 23.45 / 24.10 / 24.92; at 64 channels 0.02 won on 6
                          # seeds: docs/RESULTS.md, tables AN and T)
codebook_label_smoothing=0.1  # MVQ-KD students: label smoothing of the codebook CE (chosen on dev-clean, mean
                          # of 2 seeds, at scale 0.01 and 64 channels, again at 0.04 and 32: 0 / 0.2 worse)
codebook_smoothing_temperature=0  # MVQ-KD students: > 0 spreads that smoothing over the nearest codewords (0: uniform)
codebook_head=residual    # MVQ-KD students: residual (the quantizer's codewords scored by their distance to a
                          # predicted embedding minus the frame's other target codewords; chosen on dev-clean,
                          # docs/RESULTS.md), geometry (the same without that shift) or linear (the paper's head)
codebook_weighting=energy  # MVQ-KD students: energy (each codebook's CE weighed by its codewords' mean squared
                          # norm; chosen on dev-clean over uniform, mean of 2 seeds: docs/RESULTS.md) or uniform
codebook_weighting_power=2  # MVQ-KD students with energy weighting: the energy raised to this power (2 chosen
                          # on dev-clean over 1, mean of 4 seeds, at scale 0.01; 2 at 0.005 worse: docs/RESULTS.md)
mvq_dec_loss_scale=2.0    # mvq-dec students: scale of the decoded regression (chosen on dev-clean, mean of 3 seeds;
                          # again at 32 channels over 1 / 4, mean of 2)
kd_loss_scale=1.0         # l2 students: scale of the float L2-KD loss (chosen on dev-clean, mean of 2 seeds,
                          # over 0.25 / 0.5 / 2 with the 32-channel front-end; 0.5 at 64: docs/RESULTS.md, table W)
l2_pca_loss_scale=0.25    # l2-pca students: the same for L2-KD at equal storage (over 0.125 / 0.5 / 1 / 2; again
                          # at 32 channels over 0.125 / 0.5)
seeds="1 2"               # one student per system and seed; results are averaged over seeds
student_jobs=2            # students trained (and decoded) at the same time, nj / student_jobs threads each
systems="baseline mvq mvq-dec l2 l2-pca"  # mvq-dec: the MVQ indexes regressed through the quantizer's decoder; l2-pca: L2-KD at the storage of the indexes
decode_method=modified_beam_search  # or greedy_search, fast_beam_search
portable_kernels=true     # the same models on every x86-64 CPU with AVX2 (MVQKD_PORTABLE_KERNELS=1: AVX2
                          # kernels, MKL's reproducibility mode, OpenBLAS at Haswell, no oneDNN or NNPACK;
                          # docs/RESULTS.md; elsewhere a warning and this CPU's own kernels). false: the
                          # processor's fastest kernels (1.09-1.62x faster steps, floats differ by CPU);
                          # empty: the environment's MVQKD_PORTABLE_KERNELS
decode_avg=1              # epochs averaged for decoding (num_epochs-avg+1 .. num_epochs)
decode_averaged_model=true   # true: decode the running mean of the weights over those epochs (icefall's
                          # --use-averaged-model; needs --average-period > 0); false: the mean of the
                          # epoch-E.pt files. Chosen on dev-clean: the running mean over the last epoch beats
                          # the last epoch alone, the mean of 2-4 epoch files and the running mean over 2-3
                          # epochs for every system of the demo (docs/RESULTS.md, run L)

. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/local/common.sh"

set_portable_kernels "$portable_kernels"
averaging=" --average-period $average_period"
[ "$decode_averaged_model" != true ] || [ "$average_period" != 0 ] || \
  die "--decode-averaged-model true decodes the running mean that --average-period N (> 0) keeps; give both, or --decode-averaged-model false"
recipe=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$exp_root"
times="$exp_root/stage_times.tsv"
record_environment "$exp_root/environment.txt"
all_parts="train-clean-360 train-clean-100 dev-clean test-clean test-other"
pool_size=$student_jobs
threads=$(( nj / student_jobs > 0 ? nj / student_jobs : 1 ))  # intra-op threads of a pool job

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ "$synth" = true ]; then
  key=$(input_key "$hours" "$corpus_seed")
  if is_done "$corpus_dir/.synth.done" "$key"; then
    log "Stage 0: corpus already done"
  else
    log "Stage 0: synthetic corpus, $hours h, seed $corpus_seed -> $corpus_dir"
    timed "$times" corpus mvqkd synth-corpus --out-dir "$corpus_dir" --hours "$hours" --seed "$corpus_seed" --num-jobs "$nj"
    mark_done "$corpus_dir/.synth.done" "$key"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data preparation"
  timed "$times" prepare "$recipe/prepare.sh" --corpus-dir "$corpus_dir" --data-dir "$data_dir" \
    --parts "$all_parts" --vocab-size "$vocab_size" --nj "$nj"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ -f "$exp_root/teacher/teacher_wer.json" ]; then
    log "Stage 2: teacher already done"
  else
    log "Stage 2: demo teacher ($teacher_size, $teacher_steps steps) on train-clean-360 -> $exp_root/teacher"
    timed "$times" teacher mvqkd finetune-teacher --train-cuts "$(fbank_cuts train-clean-360)" \
      --dev-cuts "$(fbank_cuts dev-clean)" --out "$exp_root/teacher" --size "$teacher_size" \
      --max-steps "$teacher_steps" --num-epochs 1000 --num-threads "$nj" \
      --eval-cuts "test-clean=$(fbank_cuts test-clean)" "test-other=$(fbank_cuts test-other)"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: quantizer + codebook indexes (teacher layer $teacher_layer, $num_codebooks codebooks)"
  timed "$times" distill "$recipe/distill.sh" --data-dir "$data_dir" --vq-dir "$data_dir/vq" \
    --teacher-dir "$exp_root/teacher" --layer "$teacher_layer" --num-codebooks "$num_codebooks" \
    --quantizer-iters "$quantizer_iters" --train-parts train-clean-100
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ] && [[ " $systems " == *" l2"* ]]; then
  log "Stage 4: float16 teacher embeddings of train-clean-100 for the L2-KD baseline -> $data_dir/kd"
  timed "$times" embeddings mvqkd dump-embeddings --cuts "$(fbank_cuts train-clean-100)" \
    --teacher "$exp_root/teacher" --layer "$teacher_layer" --all --out-dir "$data_dir/kd" \
    --join-onto "$(fbank_cuts train-clean-100)" --out-manifest "$(vq_cuts "$data_dir/kd" train-clean-100)"
  if [[ " $systems " == *" l2-pca "* ]]; then
    pca_dims=$(( num_codebooks / 2 > 0 ? num_codebooks / 2 : 1 ))  # float16 values = bytes / 2
    key=$(input_key "$(vq_cuts "$data_dir/kd" train-clean-100)" "$pca_dims")
    if is_done "$data_dir/kd_pca/.done" "$key"; then
      log "Stage 4: PCA embeddings already done"
    else
      log "Stage 4: PCA to $pca_dims float16 values per frame ($num_codebooks bytes, as the indexes) -> $data_dir/kd_pca"
      rm -rf "$data_dir/kd_pca"
      timed "$times" pca mvqkd reduce-embeddings --cuts "$(vq_cuts "$data_dir/kd" train-clean-100)" \
        --dims "$pca_dims" --out-dir "$data_dir/kd_pca" --out-manifest "$(vq_cuts "$data_dir/kd_pca" train-clean-100)"
      mark_done "$data_dir/kd_pca/.done" "$key"
    fi
  fi
fi

train_one() {  # train_one SYSTEM SEED
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$recipe/train.sh" --systems "$1" \
    --data-dir "$data_dir" --vocab-size "$vocab_size" --exp-root "$exp_root/seed$2" \
    --model-size "$student_size" --num-epochs "$num_epochs" --max-duration "$max_duration" \
    --seed "$2" --extra-args "$student_args$averaging" --codebook-loss-scale "$codebook_loss_scale" \
    --codebook-label-smoothing "$codebook_label_smoothing" --mvq-dec-loss-scale "$mvq_dec_loss_scale" \
    --kd-loss-scale "$kd_loss_scale" --l2-pca-loss-scale "$l2_pca_loss_scale" \
    --codebook-smoothing-temperature "$codebook_smoothing_temperature" --codebook-head "$codebook_head" \
    --codebook-weighting "$codebook_weighting" --codebook-weighting-power "$codebook_weighting_power"
}
declare -A trained_by=()  # student dir -> pid of its training job, when this run trains it
train_students() {  # submits every student not yet trained to the job pool
  local dir
  for seed_ in $seeds; do
    for system in $systems; do
      dir="$exp_root/seed$seed_/$system"
      if [ -f "$dir/epoch-$num_epochs.pt" ]; then log "Stage 5: $dir already trained"; continue; fi
      mkdir -p "$dir"
      pool_submit "Stage 5: $system seed $seed_" "$dir/train.out" train_one "$system" "$seed_"
      trained_by[$dir]=$pool_last_pid
    done
  done
}
decode_one() {  # decode_one EXP_DIR
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$recipe/decode.sh" --exp-dir "$1" \
    --epoch "$num_epochs" --avg "$decode_avg" --method "$decode_method" --data-dir "$data_dir" \
    --use-averaged-model "$decode_averaged_model" --test-sets "test-clean test-other dev-clean"
}
decode_students() {  # submits every student's decode; one this run trains waits for its training
  local dir
  for seed_ in $seeds; do
    for system in $systems; do
      dir="$exp_root/seed$seed_/$system"
      if [ -n "${trained_by[$dir]:-}" ] && ! pool_wait_for "${trained_by[$dir]}"; then
        log "Stage 6: not decoding $dir: its training failed"; continue
      fi
      pool_submit "Stage 6: decode $system seed $seed_" "$dir/decode.out" decode_one "$dir"
    done
  done
}
in_pool() {  # in_pool WHAT STEP...: the steps submit into one job pool, then it is drained.
  # Stages 5 and 6 together: the decodes queue behind every training, so the slot a finished
  # training leaves at the end decodes instead of idling (the same models and WERs)
  local what=$1 step
  shift
  for step in "$@"; do "$step"; done
  pool_drain "$what"
}

decoding="decode ($decode_method, epoch $num_epochs, avg $decode_avg, averaged model: $decode_averaged_model)"
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 6 ]; then
  log "Stages 5-6: students ($systems) x seeds ($seeds), each then $decoding, $student_jobs jobs at a time"
  timed "$times" students+decode in_pool "stage 5 and 6" train_students decode_students
elif [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: students ($systems) x seeds ($seeds), $student_jobs at a time"
  timed "$times" students in_pool "stage 5" train_students
elif [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "Stage 6: $decoding, $student_jobs at a time"
  timed "$times" decode in_pool "stage 6" decode_students
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "Stage 7: results"
  read -r -a system_list <<< "$systems"
  read -r -a seed_list <<< "$seeds"
  indexes="$data_dir/vq/train-clean-100/shards"  # what mvq and mvq-dec read
  stores=(--store "mvq=$indexes" --store "l2=$data_dir/kd/shards" --store "l2-pca=$data_dir/kd_pca")
  [[ " $systems " != *" mvq-dec "* ]] || stores+=(--store "mvq-dec=$indexes")
  averaged=(); [ "$decode_averaged_model" != true ] || averaged=(--use-averaged-model)
  mvqkd summarize --exp-root "$exp_root" --systems "${system_list[@]}" --seeds "${seed_list[@]}" \
    --method "$decode_method" --checkpoints "epoch-$num_epochs-avg-$decode_avg" "${averaged[@]}" \
    "${stores[@]}"
fi
