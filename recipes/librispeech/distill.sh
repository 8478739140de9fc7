#!/usr/bin/env bash
# Teacher -> quantizer -> codebook indexes for the training parts (the offline MVQ-KD stage).
#   stage 0: the teacher: make a random-init tiny one when --teacher-dir is empty, then check it
#   stage 1: teacher embeddings of a random subset of --quantizer-part   -> VQ_DIR/embeddings.h5
#   stage 2: train the quantizer                                          -> VQ_DIR/quantizer.pt
#   stage 3: extract codebook indexes for --train-parts, joined onto the fbank cuts by cut id
#            -> VQ_DIR/librispeech_cuts_<part>.jsonl.gz (+ VQ_DIR/<part>/shards, failed_cuts.jsonl)
#   stage 4: validate every extracted manifest against the quantizer
# Needs prepare.sh's fbank cuts (DATA/fbank/librispeech_cuts_<part>.jsonl.gz). Runs out of the
# box on the synthetic corpus with a tiny random teacher; for a real teacher pass
# --teacher-dir /path/to/hubert (HuBERT / WavLM / wav2vec2, also *ForCTC) and --layer L
# (1-based, the output of transformer layer L; 0 = the input to the first transformer layer).
# Extraction resumes after a crash or kill: re-run the same command. Stages leave
# VQ_DIR/.done/distill.<stage>[.<part>] markers; a finished stage is a no-op.
# Usage: recipes/librispeech/distill.sh [--stage 0] [--stop-stage 4] [--teacher-dir DIR] [--layer L] ...

set -euo pipefail

stage=0
stop_stage=4
data_dir=data
vq_dir=data/vq
teacher_dir=""            # empty: make a random-init tiny teacher in VQ_DIR/teacher
teacher_size=tiny         # size of the teacher made when --teacher-dir is empty
layer=2                   # teacher layer to distil (1-based)
quantizer_part=train-clean-100
quantizer_utts=1000       # utterances whose embeddings train the quantizer (as in the paper)
num_codebooks=8
codebook_size=256
quantizer_iters=""        # empty: train for --quantizer-time-budget seconds
quantizer_time_budget=300
quantizer_normalize=global  # global | per-dim (mvqkd train-quantizer --normalize)
train_parts="train-clean-100"
max_duration=60           # seconds of audio per teacher batch
num_workers=1             # local extraction processes (per rank)
world_size=1              # > 1: run extraction under torchrun with this many ranks
device=auto
max_failed_cuts=0         # extraction fails the stage when more cuts than this fail
seed=0

. "$(dirname "$0")/parse_options.sh"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (distill.sh:${BASH_LINENO[0]}) $*"; }
done_dir="$vq_dir/.done"
mkdir -p "$done_dir"
[ -n "$teacher_dir" ] || teacher_dir="$vq_dir/teacher"
quantizer="$vq_dir/quantizer.pt"
fbank() { echo "$data_dir/fbank/librispeech_cuts_$1.jsonl.gz"; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: teacher $teacher_dir, layer $layer"
  if [ ! -f "$teacher_dir/config.json" ]; then
    if [ "$teacher_dir" != "$vq_dir/teacher" ]; then
      echo "$0: --teacher-dir $teacher_dir has no config.json" >&2; exit 1
    fi
    mvqkd make-teacher --out "$teacher_dir" --size "$teacher_size" --seed "$seed"
  fi
  mvqkd check-teacher --teacher "$teacher_dir" --layer "$layer" --device "$device"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: embeddings of $quantizer_utts utterances of $quantizer_part"
  if [ -f "$done_dir/distill.1" ]; then
    log "Stage 1: already done"
  else
    mvqkd dump-embeddings --cuts "$(fbank "$quantizer_part")" --teacher "$teacher_dir" --layer "$layer" \
      --out "$vq_dir/embeddings.h5" --max-utts "$quantizer_utts" --seed "$seed" \
      --max-duration "$max_duration" --device "$device"
    touch "$done_dir/distill.1"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: quantizer, $num_codebooks codebooks x $codebook_size entries"
  if [ -f "$done_dir/distill.2" ]; then
    log "Stage 2: already done"
  else
    budget=(--time-budget "$quantizer_time_budget")
    [ -z "$quantizer_iters" ] || budget=(--iters "$quantizer_iters")
    qdevice=$device; [ "$qdevice" != auto ] || qdevice=cpu
    mvqkd train-quantizer --embeddings "$vq_dir/embeddings.h5" --num-codebooks "$num_codebooks" \
      --codebook-size "$codebook_size" --out "$quantizer" --seed "$seed" --device "$qdevice" "${budget[@]}" \
      --normalize "$quantizer_normalize"
    touch "$done_dir/distill.2"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  for part in $train_parts; do
    log "Stage 3: codebook indexes for $part"
    if [ -f "$done_dir/distill.3.$part" ]; then
      log "Stage 3: $part already done"; continue
    fi
    launcher=(mvqkd)
    [ "$world_size" -le 1 ] || launcher=(torchrun --nproc_per_node "$world_size" -m mvqkd.cli)
    rc=0
    "${launcher[@]}" extract --cuts "$(fbank "$part")" --join-onto "$(fbank "$part")" \
      --teacher "$teacher_dir" --layer "$layer" --quantizer "$quantizer" --out-dir "$vq_dir/$part" \
      --out-manifest "$vq_dir/librispeech_cuts_$part.jsonl.gz" --report "$vq_dir/failed_cuts_$part.jsonl" \
      --num-workers "$num_workers" --max-duration "$max_duration" --device "$device" || rc=$?
    failed=$(wc -l < "$vq_dir/failed_cuts_$part.jsonl" 2>/dev/null || echo 0)
    if [ "$rc" -ne 0 ] && { [ "$rc" -ne 1 ] || [ "$failed" -gt "$max_failed_cuts" ]; }; then
      echo "$0: extraction of $part failed (exit $rc, $failed failed cuts; see $vq_dir/failed_cuts_$part.jsonl)" >&2
      exit 1
    fi
    [ "$failed" -eq 0 ] || log "Stage 3: $part: $failed cuts failed (<= --max-failed-cuts $max_failed_cuts), listed in $vq_dir/failed_cuts_$part.jsonl"
    touch "$done_dir/distill.3.$part"
  done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  for part in $train_parts; do
    log "Stage 4: validate $vq_dir/librispeech_cuts_$part.jsonl.gz"
    mvqkd validate --cuts "$vq_dir/librispeech_cuts_$part.jsonl.gz" --quantizer "$quantizer"
  done
  log "Done: quantizer $quantizer; manifests $vq_dir/librispeech_cuts_{${train_parts// /,}}.jsonl.gz"
fi
