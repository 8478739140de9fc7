#!/usr/bin/env bash
# Data preparation for LibriSpeech (or the embedded synthetic corpus, same layout).
#   stage 0: download LibriSpeech with lhotse (skipped when --corpus-dir already holds it)
#   stage 1: audit the corpus and write lhotse manifests      -> DATA/manifests/
#   stage 2: 80-bin fbank, 10 ms, LilcomChunkyWriter           -> DATA/fbank/librispeech_cuts_<part>.jsonl.gz
#   stage 3: sentencepiece BPE (<blk>=0, <sos/eos>=1, <unk>=2)  -> DATA/lang_bpe_<V>/bpe.model
# Each stage leaves DATA/.done/prepare.<stage>.<part> markers; re-running a finished stage is a no-op.
# Usage: recipes/librispeech/prepare.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--data-dir DIR] ...
#        (run from the repository root or anywhere; paths are taken as given)

set -euo pipefail

stage=0
stop_stage=100
corpus_dir=download          # folder holding LibriSpeech/
data_dir=data
parts="train-clean-100 dev-clean test-clean test-other"
bpe_parts="train-clean-100"  # parts whose transcripts train the BPE model
vocab_size=500
speed_perturb=false
nj=2

. "$(dirname "$0")/parse_options.sh"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (prepare.sh:${BASH_LINENO[0]}) $*"; }
done_dir="$data_dir/.done"
mkdir -p "$done_dir"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: download LibriSpeech parts ($parts) into $corpus_dir"
  missing=""
  for part in $parts; do
    [ -d "$corpus_dir/LibriSpeech/$part" ] || missing="$missing $part"
  done
  if [ -z "$missing" ]; then
    log "Stage 0: all parts present in $corpus_dir/LibriSpeech, skipping download"
  else
    mvqkd download-librispeech --target-dir "$corpus_dir" --parts $missing
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: lhotse manifests for $parts"
  todo=""
  for part in $parts; do [ -f "$done_dir/prepare.1.$part" ] || todo="$todo $part"; done
  if [ -n "$todo" ]; then
    mvqkd prepare-manifests --corpus-dir "$corpus_dir" --parts $todo --out-dir "$data_dir/manifests"
    for part in $todo; do touch "$done_dir/prepare.1.$part"; done
  else
    log "Stage 1: already done"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: fbank for $parts (speed perturbation of train parts: $speed_perturb)"
  sp_flag=""; [ "$speed_perturb" = true ] && sp_flag="--speed-perturb"
  todo=""
  for part in $parts; do [ -f "$done_dir/prepare.2.$part" ] || todo="$todo $part"; done
  if [ -n "$todo" ]; then
    mvqkd compute-fbank --manifest-dir "$data_dir/manifests" --out-dir "$data_dir/fbank" \
      --parts $todo --num-jobs "$nj" $sp_flag
    for part in $todo; do touch "$done_dir/prepare.2.$part"; done
  else
    log "Stage 2: already done"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  lang_dir="$data_dir/lang_bpe_$vocab_size"
  log "Stage 3: BPE model with $vocab_size pieces on $bpe_parts -> $lang_dir"
  if [ ! -f "$done_dir/prepare.3.bpe_$vocab_size" ]; then
    manifests=""
    for part in $bpe_parts; do manifests="$manifests $data_dir/manifests/librispeech_supervisions_$part.jsonl.gz"; done
    mvqkd train-bpe --manifests $manifests --out-dir "$lang_dir" --vocab-size "$vocab_size"
    touch "$done_dir/prepare.3.bpe_$vocab_size"
  else
    log "Stage 3: already done"
  fi
fi

log "prepare.sh: done (stages $stage..$stop_stage)"
