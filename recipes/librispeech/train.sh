#!/usr/bin/env bash
# Train the transducer students on LibriSpeech train-clean-100.
#   stage 0: baseline, no distillation (--kd none)            -> EXP_ROOT/baseline
#   stage 1: MVQ-KD student on the extracted codebook indexes  -> EXP_ROOT/mvq
#   stage 2: L2-KD student regressing stored float teacher embeddings (--kd-cuts, written by
#            `mvqkd dump-embeddings --all`), each dimension standardised over the training
#            frames (--kd-normalize true; raw embeddings regress far worse, docs/RESULTS.md)
#                                                               -> EXP_ROOT/l2
# Stage 1 reads the manifest written by the extraction stage (--mvq-cuts, default
# data/vq/librispeech_cuts_train-clean-100.jsonl.gz); it refuses to start when the
# manifest's quantizer id / number of codebooks disagree with --quantizer-id / --num-codebooks.
# --world-size N > 1 runs each stage under torchrun with N processes (one per GPU on CUDA).
# Re-running a stage resumes from the newest checkpoint in its exp dir.
# (options are the variables below; parse_options.sh lists them with --help)
# Usage: recipes/librispeech/train.sh [--stage 0] [--stop-stage 1] [--num-epochs 30] ...

set -euo pipefail

stage=0
stop_stage=2
data_dir=data
vocab_size=500
train_part=train-clean-100
valid_part=dev-clean
mvq_cuts=data/vq/librispeech_cuts_train-clean-100.jsonl.gz
kd_cuts=data/kd/librispeech_cuts_train-clean-100.jsonl.gz
kd_mode=l2                # l1 | l2 | cosine for stage 2
kd_loss_scale=1.0
kd_normalize=true         # stage 2: standardise each embedding dimension (mvqkd train --kd-normalize)
exp_root=exp
num_epochs=30
max_duration=200
model_size=reference
world_size=1
device=""
codebook_loss_scale=0.1
quantizer_id=""
num_codebooks=""
num_workers=2
seed=42
extra_args=""   # passed to every `mvqkd train`, e.g. "--sigma-reparam --save-every-n 4000"

. "$(dirname "$0")/parse_options.sh"

case $kd_normalize in true | false) ;;
  *) echo "$0: --kd-normalize must be true or false, got '$kd_normalize'" >&2; exit 1 ;; esac

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (train.sh:${BASH_LINENO[0]}) $*"; }

declare bpe_model="$data_dir/lang_bpe_${vocab_size}/bpe.model"
declare train_cuts="$data_dir/fbank/librispeech_cuts_${train_part}.jsonl.gz"
declare valid_cuts="$data_dir/fbank/librispeech_cuts_${valid_part}.jsonl.gz"
[ -f "$bpe_model" ] || { echo "$0: BPE model not found: $bpe_model (run prepare.sh, or set --vocab-size)" >&2; exit 1; }

run_train() {
  # run_train EXP_DIR TRAIN_CUTS ARGS...
  local exp_dir=$1 cuts=$2
  shift 2
  declare -a common=(--train-cuts "$cuts" --bpe-model "$bpe_model" --exp-dir "$exp_dir"
    --num-epochs "$num_epochs" --max-duration "$max_duration" --model-size "$model_size"
    --num-workers "$num_workers" --seed "$seed")
  [ -f "$valid_cuts" ] && common+=(--valid-cuts "$valid_cuts")
  [ -n "$device" ] && common+=(--device "$device")
  # shellcheck disable=SC2206
  declare -a extra=($extra_args)
  if [ "$world_size" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$world_size" -m mvqkd.cli train \
      "${common[@]}" "$@" ${extra[@]+"${extra[@]}"}
  else
    mvqkd train "${common[@]}" "$@" ${extra[@]+"${extra[@]}"}
  fi
}

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: baseline transducer (--kd none) on $train_part -> $exp_root/baseline"
  [ -f "$train_cuts" ] || { echo "$0: cut manifest not found: $train_cuts (run prepare.sh)" >&2; exit 1; }
  run_train "$exp_root/baseline" "$train_cuts" --kd none
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: MVQ-KD student (--kd mvq, scale $codebook_loss_scale) on $mvq_cuts -> $exp_root/mvq"
  [ -f "$mvq_cuts" ] || { echo "$0: indexes manifest not found: $mvq_cuts (run the extraction stage, or set --mvq-cuts)" >&2; exit 1; }
  declare -a kd_args=(--kd mvq --codebook-loss-scale "$codebook_loss_scale")
  [ -n "$quantizer_id" ] && kd_args+=(--quantizer-id "$quantizer_id")
  [ -n "$num_codebooks" ] && kd_args+=(--num-codebooks "$num_codebooks")
  run_train "$exp_root/mvq" "$mvq_cuts" "${kd_args[@]}"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: $kd_mode-KD student (scale $kd_loss_scale, normalize $kd_normalize) on $kd_cuts -> $exp_root/$kd_mode"
  [ -f "$kd_cuts" ] || { echo "$0: embeddings manifest not found: $kd_cuts (run mvqkd dump-embeddings --all, or set --kd-cuts)" >&2; exit 1; }
  declare -a kd_args=(--kd "$kd_mode" --kd-loss-scale "$kd_loss_scale")
  [ "$kd_normalize" = true ] && kd_args+=(--kd-normalize)
  run_train "$exp_root/$kd_mode" "$kd_cuts" "${kd_args[@]}"
fi

log "train.sh: done (stages $stage..$stop_stage)"
