#!/usr/bin/env bash
# Data preparation for LibriSpeech (or the embedded synthetic corpus, same layout).
#   stage 0: check that --corpus-dir holds the parts; with --download true, fetch missing ones
#            with lhotse (never into a folder that holds other data)
#   stage 1: audit the corpus and write lhotse manifests      -> DATA/manifests/
#   stage 2: 80-bin fbank, 10 ms, LilcomChunkyWriter           -> DATA/fbank/librispeech_cuts_<part>.jsonl.gz
#   stage 3: sentencepiece BPE (<blk>=0, <sos/eos>=1, <unk>=2)  -> DATA/lang_bpe_<V>/bpe.model
# Each stage leaves DATA/.done/prepare.<stage>.<part> markers holding a fingerprint of its
# inputs: re-running a finished stage is a no-op, and a stage whose inputs changed (more
# audio, other options) is redone from scratch.
# Usage: recipes/librispeech/prepare.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--data-dir DIR] ...
#        (run from anywhere; paths are taken as given, spaces allowed)

set -euo pipefail

stage=0
stop_stage=100
corpus_dir=download          # folder holding LibriSpeech/ (or the LibriSpeech folder itself)
download=false               # true: download missing parts into --corpus-dir with lhotse
data_dir=data
parts="train-clean-100 dev-clean test-clean test-other"
bpe_parts="train-clean-100"  # parts whose transcripts train the BPE model
vocab_size=500
speed_perturb=false
nj=2

. "$(dirname "$0")/parse_options.sh"
. "$(dirname "$0")/local/common.sh"

read -r -a part_list <<< "$parts"
read -r -a bpe_part_list <<< "$bpe_parts"
done_dir="$data_dir/.done"
mkdir -p "$done_dir"
root="$corpus_dir"
[ -d "$corpus_dir/LibriSpeech" ] && root="$corpus_dir/LibriSpeech"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  missing=()
  for part in "${part_list[@]}"; do [ -d "$root/$part" ] || missing+=("$part"); done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "Stage 0: all parts present in $root"
  elif [ "$download" != true ]; then
    die "parts ${missing[*]} not found under '$root'. Point --corpus-dir at the folder holding LibriSpeech/ (or at the LibriSpeech folder), or pass --download true to fetch them with lhotse."
  else
    if [ -d "$corpus_dir" ] && [ ! -d "$corpus_dir/LibriSpeech" ] && [ -n "$(ls -A "$corpus_dir")" ]; then
      die "--corpus-dir '$corpus_dir' holds other data and no LibriSpeech/ folder: refusing to download into it; give an empty or new folder"
    fi
    log "Stage 0: downloading ${missing[*]} into $corpus_dir"
    mvqkd download-librispeech --target-dir "$corpus_dir" --parts "${missing[@]}"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: lhotse manifests for ${part_list[*]}"
  todo=0
  for part in "${part_list[@]}"; do
    key=$(input_key "$root/$part")
    marker="$done_dir/prepare.1.$part"
    is_done "$marker" "$key" && continue
    todo=1
    changed "$marker" "$key" && log "Stage 1: $part changed since its manifests were written: redoing them"
    rm -f "$(manifest_path recordings "$part")" "$(manifest_path supervisions "$part")"
    mvqkd prepare-manifests --corpus-dir "$corpus_dir" --parts "$part" --out-dir "$data_dir/manifests"
    mark_done "$marker" "$key"
  done
  [ "$todo" = 1 ] || log "Stage 1: already done"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: fbank for ${part_list[*]} (speed perturbation of train parts: $speed_perturb)"
  todo=0
  for part in "${part_list[@]}"; do
    key=$(input_key "$(manifest_path recordings "$part")" "$(manifest_path supervisions "$part")" "$speed_perturb")
    marker="$done_dir/prepare.2.$part"
    is_done "$marker" "$key" && continue
    todo=1
    changed "$marker" "$key" && log "Stage 2: $part changed since its fbank was computed: recomputing"
    rm -rf "$(fbank_cuts "$part")" "$data_dir/fbank/feats_$part"
    sp_flag=()
    [ "$speed_perturb" = true ] && [[ "$part" == train* ]] && sp_flag=(--speed-perturb)
    mvqkd compute-fbank --manifest-dir "$data_dir/manifests" --out-dir "$data_dir/fbank" \
      --parts "$part" --num-jobs "$nj" "${sp_flag[@]}"
    mark_done "$marker" "$key"
  done
  [ "$todo" = 1 ] || log "Stage 2: already done"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  lang_dir="$data_dir/lang_bpe_$vocab_size"
  log "Stage 3: BPE model with $vocab_size pieces on ${bpe_part_list[*]} -> $lang_dir"
  manifests=()
  for part in "${bpe_part_list[@]}"; do manifests+=("$(manifest_path supervisions "$part")"); done
  key=$(input_key "${manifests[@]}" "$vocab_size")
  marker="$done_dir/prepare.3.bpe_$vocab_size"
  if is_done "$marker" "$key"; then
    log "Stage 3: already done"
  else
    rm -rf "$lang_dir"
    mvqkd train-bpe --manifests "${manifests[@]}" --out-dir "$lang_dir" --vocab-size "$vocab_size"
    mark_done "$marker" "$key"
  fi
fi

log "prepare.sh: done (stages $stage..$stop_stage)"
