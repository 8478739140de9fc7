#!/usr/bin/env bash
# Teacher -> quantizer -> codebook indexes for the training parts (the offline MVQ-KD stage).
#   stage 0: check the teacher (--teacher-dir; or --random-teacher true makes a random-init
#            tiny one in VQ_DIR/teacher, for plumbing tests only: it knows nothing of speech)
#   stage 1: teacher embeddings of a random subset of --quantizer-part   -> VQ_DIR/embeddings.h5
#   stage 2: train the quantizer                                          -> VQ_DIR/quantizer.pt
#            (stages 1-2 are skipped with --quantizer FILE: a quantizer reused as it is)
#   stage 3: extract codebook indexes for --train-parts, joined onto the fbank cuts by cut id
#            -> VQ_DIR/CORPUS_cuts_<part>.jsonl.gz (+ VQ_DIR/<part>/shards, failed_cuts_<part>.jsonl)
#   stage 4: validate every extracted manifest against the quantizer
# Needs the fbank cuts DATA/fbank/CORPUS_cuts_<part>.jsonl.gz (prepare.sh; CORPUS = --corpus,
# librispeech by default; recipes/mycorpus/run.sh makes them for any corpus). Teachers:
# HuBERT / WavLM / wav2vec2 folders in save_pretrained layout (also *ForCTC); --layer L is
# the output of transformer layer L (1-based, icefall's --embedding-layer; 0 = the input
# to the first transformer layer). Budgets are counted (--quantizer-iters): the same command
# gives the same quantizer on any machine.
# Extraction resumes after a crash or kill: re-run the same command. Stages leave
# VQ_DIR/.done/distill.<stage>[.<part>] markers holding a fingerprint of their inputs; a
# finished stage is a no-op, one whose inputs changed is redone.
# Usage: recipes/librispeech/distill.sh --teacher-dir DIR --layer L [--stage 0] [--stop-stage 4] ...

set -euo pipefail

stage=0
stop_stage=4
data_dir=data
vq_dir=data/vq
teacher_dir=""            # the teacher (required unless --random-teacher true)
random_teacher=false      # true: make a random-init tiny teacher in VQ_DIR/teacher (plumbing tests)
layer=""                  # teacher layer to distil (1-based; required)
quantizer_part=train-clean-100
quantizer_utts=1000       # utterances whose embeddings train the quantizer (as in the paper)
num_codebooks=8
codebook_size=""          # mvqkd train-quantizer's default (256) unless set
quantizer_iters=""        # mvqkd train-quantizer's default (10 iterations) unless set
quantizer_time_budget=""  # opt-in wall-clock budget (not reproducible across machines)
quantizer_normalize=""    # global | per-dim (mvqkd train-quantizer --normalize)
train_parts="train-clean-100"
corpus=librispeech        # the manifests' name prefix (recipes/mycorpus sets it)
quantizer=""              # reuse this quantizer file (mvqkd or icefall's): stages 1-2 are skipped
max_duration=""           # seconds of audio per teacher batch (mvqkd extract's default unless set)
num_workers=""            # local extraction processes (per rank)
world_size=1              # > 1: run extraction under torchrun with this many ranks
device=auto
max_failed_cuts=0         # extraction fails the stage when more cuts than this fail
seed=0

. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/local/common.sh"

[ -n "$layer" ] || die "--layer is required (the teacher layer to distil, 1-based)"
if [ -z "$teacher_dir" ]; then
  [ "$random_teacher" = true ] || die "--teacher-dir is required (a HuBERT / WavLM / wav2vec2 folder); --random-teacher true makes a random-init one for plumbing tests"
  teacher_dir="$vq_dir/teacher"
fi
read -r -a train_part_list <<< "$train_parts"
done_dir="$vq_dir/.done"
mkdir -p "$done_dir"
reuse_quantizer=false
if [ -n "$quantizer" ]; then
  [ -f "$quantizer" ] || die "--quantizer not found: $quantizer"
  reuse_quantizer=true
else
  quantizer="$vq_dir/quantizer.pt"
fi
teacher_opts=(--teacher "$teacher_dir" --layer "$layer" --device "$device")
add_opt teacher_opts --max-duration "$max_duration"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: teacher $teacher_dir, layer $layer"
  if [ ! -f "$teacher_dir/config.json" ]; then
    [ "$random_teacher" = true ] || die "--teacher-dir '$teacher_dir' has no config.json"
    log "Stage 0: making a RANDOM-INIT tiny teacher in $teacher_dir (plumbing only)"
    mvqkd make-teacher --out "$teacher_dir" --size tiny --seed "$seed"
  fi
  mvqkd check-teacher --teacher "$teacher_dir" --layer "$layer" --device "$device"
fi

if [ "$reuse_quantizer" = true ] && [ "$stage" -le 2 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stages 1-2: reusing the quantizer $quantizer (no embeddings, no training)"
fi

if [ "$reuse_quantizer" = false ] && [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  key=$(input_key "$(fbank_cuts "$quantizer_part")" "$teacher_dir" "$layer" "$quantizer_utts" "$seed" "$max_duration")
  if is_done "$done_dir/distill.1" "$key"; then
    log "Stage 1: already done"
  else
    log "Stage 1: embeddings of $quantizer_utts utterances of $quantizer_part"
    mvqkd dump-embeddings --cuts "$(fbank_cuts "$quantizer_part")" "${teacher_opts[@]}" \
      --out "$vq_dir/embeddings.h5" --max-utts "$quantizer_utts" --seed "$seed"
    mark_done "$done_dir/distill.1" "$key"
  fi
fi

if [ "$reuse_quantizer" = false ] && [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  q_opts=(--num-codebooks "$num_codebooks" --seed "$seed")
  add_opt q_opts --codebook-size "$codebook_size"
  add_opt q_opts --iters "$quantizer_iters"
  add_opt q_opts --time-budget "$quantizer_time_budget"
  add_opt q_opts --normalize "$quantizer_normalize"
  qdevice=$device; [ "$qdevice" != auto ] || qdevice=cpu
  key=$(input_key "$vq_dir/embeddings.h5" "${q_opts[@]}")
  if is_done "$done_dir/distill.2" "$key"; then
    log "Stage 2: already done"
  else
    log "Stage 2: quantizer (${q_opts[*]})"
    mvqkd train-quantizer --embeddings "$vq_dir/embeddings.h5" --out "$quantizer" --device "$qdevice" "${q_opts[@]}"
    mark_done "$done_dir/distill.2" "$key"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  for part in "${train_part_list[@]}"; do
    key=$(input_key "$(fbank_cuts "$part")" "$teacher_dir" "$layer" "$quantizer")
    marker="$done_dir/distill.3.$part"
    if is_done "$marker" "$key"; then log "Stage 3: $part already done"; continue; fi
    if changed "$marker" "$key"; then
      log "Stage 3: the inputs of $part changed: extracting again from scratch"
      rm -rf "$vq_dir/$part"
    fi
    log "Stage 3: codebook indexes for $part"
    launcher=(mvqkd)
    [ "$world_size" -le 1 ] || launcher=(torchrun --nproc_per_node "$world_size" -m mvqkd.cli)
    x_opts=(--max-failed-cuts "$max_failed_cuts")
    add_opt x_opts --num-workers "$num_workers"
    "${launcher[@]}" extract --cuts "$(fbank_cuts "$part")" --join-onto "$(fbank_cuts "$part")" \
      "${teacher_opts[@]}" --quantizer "$quantizer" --out-dir "$vq_dir/$part" \
      --out-manifest "$(vq_cuts "$vq_dir" "$part")" --report "$vq_dir/failed_cuts_$part.jsonl" \
      "${x_opts[@]}" || die "extraction of $part failed (see $vq_dir/failed_cuts_$part.jsonl and the log above)"
    mark_done "$marker" "$key"
  done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  for part in "${train_part_list[@]}"; do
    log "Stage 4: validate $(vq_cuts "$vq_dir" "$part")"
    mvqkd validate --cuts "$(vq_cuts "$vq_dir" "$part")" --quantizer "$quantizer"
  done
  log "Done: quantizer $quantizer; manifests $(vq_cuts "$vq_dir" "{${train_parts// /,}}")"
fi
