#!/usr/bin/env bash
# Train transducer students on LibriSpeech train-clean-100, one per --systems entry:
#   baseline  no distillation (--kd none) on the fbank cuts          -> EXP_ROOT/baseline
#   mvq       MVQ-KD on the extracted codebook indexes (--mvq-cuts)  -> EXP_ROOT/mvq
#   mvq-dec   the same indexes, regressed through the quantizer's decoder (standardised L2
#             on quantizer.decode(indexes), no codebook cross-entropy; --quantizer, default
#             DATA/vq/quantizer.pt)                                   -> EXP_ROOT/mvq-dec
#   l2        L2-KD regressing stored float teacher embeddings (--kd-cuts, written by
#             `mvqkd dump-embeddings --all`), each dimension standardised over the
#             training frames (mvqkd train's default; --kd-normalize false: raw) -> EXP_ROOT/l2
#   l1, cosine  the same with an L1 / cosine loss                     -> EXP_ROOT/l1, EXP_ROOT/cosine
#   l2-pca    L2-KD at the storage of the MVQ indexes: the embeddings reduced by PCA to as
#             many float16 values per frame as the indexes have bytes / 2 (--kd-pca-cuts,
#             written by `mvqkd reduce-embeddings`)                  -> EXP_ROOT/l2-pca
# MVQ-KD refuses to start when the manifest's quantizer id / number of codebooks disagree
# with --quantizer-id / --num-codebooks. --world-size N > 1 runs under torchrun with N
# processes (one per GPU on CUDA). Re-running resumes from the newest checkpoint.
# Options left empty are not passed: `mvqkd train --help` shows their defaults. The BPE
# model is DATA/lang_bpe_<V>/bpe.model (the only one there when --vocab-size is empty).
# Usage: recipes/librispeech/train.sh [--systems "baseline mvq"] [--num-epochs 30] ...

set -euo pipefail

systems="baseline mvq l2"
data_dir=data
vocab_size=""
train_part=train-clean-100
valid_part=dev-clean
corpus=librispeech        # the manifests' name prefix (recipes/mycorpus sets it)
mvq_cuts=""               # default: DATA/vq/CORPUS_cuts_<train-part>.jsonl.gz (distill.sh's output)
kd_cuts=""                # default: DATA/kd/CORPUS_cuts_<train-part>.jsonl.gz
kd_pca_cuts=""            # default: DATA/kd_pca/CORPUS_cuts_<train-part>.jsonl.gz
kd_loss_scale=""          # l1 / l2 / cosine students (and mvq-dec / l2-pca without their own scale)
kd_normalize=""           # float KD: true / false (mvqkd train --kd-normalize / --no-kd-normalize)
exp_root=exp
num_epochs=""
max_duration=""
model_size=""
world_size=1
device=""
codebook_loss_scale=""
codebook_label_smoothing=""  # MVQ-KD: label smoothing of the codebook cross-entropy (mvqkd train's default 0)
codebook_smoothing_temperature=""  # MVQ-KD: > 0 spreads that smoothing over the target's nearest
                          # codewords in --quantizer's codebooks (empty or 0: uniform)
codebook_head=""          # MVQ-KD: linear (free weights, the paper's), geometry (scores the quantizer's
                          # codewords by their distance to a predicted embedding; reads --quantizer) or
                          # residual (geometry, each codebook given the frame's other target codewords)
codebook_weighting=""     # MVQ-KD with the geometry / residual head: uniform (mvqkd train's default) or
                          # energy (each codebook's CE weighed by its codewords' mean squared norm)
codebook_weighting_power=""  # with --codebook-weighting energy: that norm raised to this power (empty: 1)
quantizer_id=""
num_codebooks=""
quantizer=""              # mvq-dec, and mvq with a smoothing temperature or the geometry head: the
                          # quantizer that wrote the indexes (default DATA/vq/quantizer.pt)
mvq_dec_loss_scale=""     # mvq-dec: scale of its regression (default: --kd-loss-scale, else mvqkd train's 1.0)
l2_pca_loss_scale=""      # l2-pca: scale of its regression (default: --kd-loss-scale, else mvqkd train's 1.0)
num_workers=""
seed=""
extra_args=""   # passed to every `mvqkd train`, e.g. "--sigma-reparam --save-every-n 4000"

. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/local/common.sh"

case $kd_normalize in "" | true | false) ;; *) die "--kd-normalize must be true or false, got '$kd_normalize'" ;; esac
bpe_model=$(find_bpe_model "$vocab_size") || exit 1
train_cuts=$(fbank_cuts "$train_part")
[ -n "$mvq_cuts" ] || mvq_cuts=$(vq_cuts "$data_dir/vq" "$train_part")
[ -n "$kd_cuts" ] || kd_cuts=$(vq_cuts "$data_dir/kd" "$train_part")
[ -n "$kd_pca_cuts" ] || kd_pca_cuts=$(vq_cuts "$data_dir/kd_pca" "$train_part")
valid_cuts=$(fbank_cuts "$valid_part")
[ -n "$quantizer" ] || quantizer="$data_dir/vq/quantizer.pt"

run_train() {  # run_train SYSTEM CUTS ARGS...: train EXP_ROOT/SYSTEM
  local exp_dir="$exp_root/$1" cuts=$2
  shift 2
  [ -f "$cuts" ] || die "$1: cut manifest not found: $cuts"
  local common=(--train-cuts "$cuts" --bpe-model "$bpe_model" --exp-dir "$exp_dir")
  [ -f "$valid_cuts" ] && common+=(--valid-cuts "$valid_cuts")
  add_opt common --num-epochs "$num_epochs"
  add_opt common --max-duration "$max_duration"
  add_opt common --model-size "$model_size"
  add_opt common --num-workers "$num_workers"
  add_opt common --seed "$seed"
  add_opt common --device "$device"
  local extra
  read -r -a extra <<< "$extra_args"
  if [ "$world_size" -gt 1 ]; then
    torchrun --standalone --nproc_per_node "$world_size" -m mvqkd.cli train \
      "${common[@]}" "$@" "${extra[@]}"
  else
    mvqkd train "${common[@]}" "$@" "${extra[@]}"
  fi
}

for system in $systems; do
  args=()
  case $system in
    baseline)
      log "baseline transducer (--kd none) on $train_part -> $exp_root/baseline"
      run_train baseline "$train_cuts" --kd none ;;
    mvq)
      args=(--kd mvq)
      add_opt args --codebook-loss-scale "$codebook_loss_scale"
      add_opt args --codebook-label-smoothing "$codebook_label_smoothing"
      reads_quantizer=""
      if [ -n "$codebook_smoothing_temperature" ] && [ "$codebook_smoothing_temperature" != 0 ]; then
        args+=(--codebook-smoothing-temperature "$codebook_smoothing_temperature")
        reads_quantizer="--codebook-smoothing-temperature"
      fi
      case $codebook_head in
        "" | linear) ;;
        geometry | residual) args+=(--codebook-head "$codebook_head"); reads_quantizer="--codebook-head $codebook_head" ;;
        *) die "--codebook-head must be linear, geometry or residual, got '$codebook_head'" ;;
      esac
      case $codebook_weighting in
        "" | uniform) ;;
        energy) [[ "$codebook_head" == geometry || "$codebook_head" == residual ]] ||
                  die "--codebook-weighting energy weighs the codebooks by the quantizer's codewords: it needs --codebook-head geometry or residual, got '${codebook_head:-linear}'"
                args+=(--codebook-weighting energy) ;;
        *) die "--codebook-weighting must be uniform or energy, got '$codebook_weighting'" ;;
      esac
      if [ -n "$codebook_weighting_power" ]; then
        [ "$codebook_weighting" = energy ] ||
          die "--codebook-weighting-power raises the energy weights: it needs --codebook-weighting energy, got '${codebook_weighting:-uniform}'"
        args+=(--codebook-weighting-power "$codebook_weighting_power")
      fi
      if [ -n "$reads_quantizer" ]; then
        [ -f "$quantizer" ] || die "mvq: $reads_quantizer needs the quantizer: not found: $quantizer (distill.sh writes it; or pass --quantizer)"
        args+=(--quantizer "$quantizer" --kd-loss-scale 0)
      fi
      add_opt args --quantizer-id "$quantizer_id"
      add_opt args --num-codebooks "$num_codebooks"
      log "MVQ-KD student (${args[*]}) on $mvq_cuts -> $exp_root/mvq"
      run_train mvq "$mvq_cuts" "${args[@]}" ;;
    mvq-dec)
      [ -f "$quantizer" ] || die "mvq-dec: quantizer not found: $quantizer (distill.sh writes it; or pass --quantizer)"
      args=(--kd mvq --codebook-loss-scale 0 --quantizer "$quantizer")
      add_opt args --kd-loss-scale "${mvq_dec_loss_scale:-$kd_loss_scale}"
      add_opt args --quantizer-id "$quantizer_id"
      add_opt args --num-codebooks "$num_codebooks"
      log "MVQ-KD, decoded regression (${args[*]}) on $mvq_cuts -> $exp_root/mvq-dec"
      run_train mvq-dec "$mvq_cuts" "${args[@]}" ;;
    l1 | l2 | cosine)
      args=(--kd "$system")
      add_opt args --kd-loss-scale "$kd_loss_scale"
      add_flag args --kd-normalize "$kd_normalize"
      log "$system-KD student (${args[*]}) on $kd_cuts -> $exp_root/$system"
      run_train "$system" "$kd_cuts" "${args[@]}" ;;
    l2-pca)
      args=(--kd l2)
      add_opt args --kd-loss-scale "${l2_pca_loss_scale:-$kd_loss_scale}"
      add_flag args --kd-normalize "$kd_normalize"
      log "L2-KD at the indexes' storage (${args[*]}) on $kd_pca_cuts -> $exp_root/l2-pca"
      run_train l2-pca "$kd_pca_cuts" "${args[@]}" ;;
    *) die "unknown system '$system' (baseline, mvq, mvq-dec, l1, l2, cosine, l2-pca)" ;;
  esac
done

log "train.sh: done ($systems)"
