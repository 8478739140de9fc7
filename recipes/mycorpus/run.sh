#!/usr/bin/env bash
# MVQ-KD on your own corpus, with no LibriSpeech naming (docs/new-corpus.md walks through it).
# Each part comes from a folder of audio files (any format / rate / channels lhotse reads;
# transcripts from its 'text' file, lines '<id> TEXT'), a Kaldi data dir (wav.scp, segments,
# text, utt2spk; pipe entries work) or an existing lhotse cuts manifest (.jsonl.gz).
#   stage 0: cuts of every part                 -> DATA/manifests/CORPUS_cuts_<part>.jsonl.gz
#   stage 1: fbank of every part (16 kHz mono)  -> DATA/fbank/CORPUS_cuts_<part>.jsonl.gz;
#            BPE on the train transcripts       -> DATA/lang_bpe_V/bpe.model
#   stage 2: ../librispeech/distill.sh: teacher -> quantizer (or --quantizer FILE reused) ->
#            codebook indexes of train          -> DATA/vq/CORPUS_cuts_train.jsonl.gz
#   stage 3: ../librispeech/train.sh: the students of --systems -> EXP/<system>
#   stage 4: ../librispeech/decode.sh: dev and every --test part -> EXP/<system>/<method>/
#            (the newest epoch; --decode-epoch E --decode-avg A [--use-averaged-model true])
# Stages 2-4 are the LibriSpeech recipe's own scripts with --corpus CORPUS. Done markers
# notice changed inputs; re-running resumes.
# Usage:
#   recipes/mycorpus/run.sh --corpus mycorpus --train /data/my/train --dev /data/kaldi/dev \
#     --test "eval=/data/my/eval" --teacher-dir /models/hubert-large-ll60k --layer 18
#   (plumbing check with a random teacher: --random-teacher true --layer 2)

set -euo pipefail

stage=0
stop_stage=4
corpus=mycorpus
train=""                  # train part: audio folder, Kaldi data dir or cuts manifest (required)
dev=""                    # dev part (required): validation during training, decoded in stage 4
test=""                   # more parts to decode: "NAME=SOURCE NAME2=SOURCE2" (SOURCE may hold spaces)
data_dir=data
exp_root=exp
vocab_size=500
teacher_dir=""
random_teacher=false
layer=""
quantizer=""              # reuse a quantizer (mvqkd or icefall's file) instead of training one
num_codebooks=8
codebook_size=""
quantizer_iters=""
quantizer_utts=1000
systems="mvq"             # any of: baseline mvq (and l1 l2 cosine after dump-embeddings --all)
num_epochs=""
max_duration=""
model_size=""
method="greedy_search"
decode_epoch=""           # stage 4: decode epoch-E.pt (default: the newest) ...
decode_avg=""             # ... averaged with the A-1 before it (default 1)
use_averaged_model=""     # true: decode icefall's averaged model over those epochs instead
                          # (kept by mvqkd train every 200 steps unless --student-args changes it)
student_args=""           # passed to every `mvqkd train`
num_jobs=2
portable_kernels=""       # true: the same models on every x86-64 CPU with AVX2 (as the LibriSpeech demo;
                          # 1.09-1.62x slower steps), false: this CPU's fastest kernels; empty: the
                          # environment's MVQKD_PORTABLE_KERNELS (unset: the fastest)

recipes=$(cd "$(dirname "$0")/.." && pwd)
. "$recipes/librispeech/parse_options.sh"
. "$recipes/librispeech/local/common.sh"

[ -n "$train" ] || die "--train is required (audio folder, Kaldi data dir or cuts manifest)"
[ -n "$dev" ] || die "--dev is required (audio folder, Kaldi data dir or cuts manifest)"
# --test "NAME=SOURCE ...": an entry starts at white space followed by NAME= (letters, digits,
# . _ -), so a SOURCE may contain spaces ("eval=/data/my eval" is one entry)
test_parts=()
rest="${test%"${test##*[![:space:]]}"}" split_re='^(.*[^[:space:]])[[:space:]]+([A-Za-z0-9_.-]+=.*)$'
while [[ "$rest" =~ $split_re ]]; do
  test_parts=("${BASH_REMATCH[2]}" ${test_parts[@]+"${test_parts[@]}"})
  rest=${BASH_REMATCH[1]}
done
rest="${rest#"${rest%%[![:space:]]*}"}"
[ -z "$rest" ] || test_parts=("$rest" ${test_parts[@]+"${test_parts[@]}"})
parts=("train=$train" "dev=$dev")
for kv in ${test_parts[@]+"${test_parts[@]}"}; do
  [[ "$kv" =~ ^[A-Za-z0-9_.-]+=. ]] || die "--test entries are NAME=SOURCE (NAME: letters, digits, . _ -), got '$kv'"
  parts+=("$kv")
done
set_portable_kernels "$portable_kernels"
mkdir -p "$exp_root"
record_environment "$exp_root/environment.txt"  # what the run's floats depend on
done_dir="$data_dir/.done"
common=(--data-dir "$data_dir" --corpus "$corpus")

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  for kv in "${parts[@]}"; do
    part=${kv%%=*} src=${kv#*=} out=$(manifest_path cuts "${kv%%=*}")
    case $part in train|dev) opt="--$part" ;; *) opt="--test $part=..." ;; esac
    [ -e "$src" ] || die "$opt: not found: $src"
    key=$(input_key "$src")
    if is_done "$done_dir/mycorpus.0.$part" "$key"; then log "Stage 0: $part already done"; continue; fi
    if [ -f "$src" ]; then
      log "Stage 0: $part: cuts manifest $src"
      mkdir -p "$(dirname "$out")" && cp "$src" "$out"
    else
      log "Stage 0: $part: cuts from $src"
      mvqkd make-cuts "$src" --out "$out"
    fi
    mark_done "$done_dir/mycorpus.0.$part" "$key"
  done
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  for kv in "${parts[@]}"; do
    part=${kv%%=*}
    key=$(input_key "$(manifest_path cuts "$part")")
    if is_done "$done_dir/mycorpus.1.$part" "$key"; then log "Stage 1: fbank of $part already done"; continue; fi
    log "Stage 1: fbank of $part"
    rm -f "$(fbank_cuts "$part")"
    mvqkd compute-fbank --cuts "$(manifest_path cuts "$part")" --out-cuts "$(fbank_cuts "$part")" --num-jobs "$num_jobs"
    mark_done "$done_dir/mycorpus.1.$part" "$key"
  done
  key=$(input_key "$(fbank_cuts train)" "$vocab_size")
  if is_done "$done_dir/mycorpus.1.bpe" "$key"; then
    log "Stage 1: BPE already done"
  else
    log "Stage 1: BPE ($vocab_size pieces) on the train transcripts"
    mvqkd train-bpe --manifests "$(fbank_cuts train)" --out-dir "$data_dir/lang_bpe_$vocab_size" --vocab-size "$vocab_size"
    mark_done "$done_dir/mycorpus.1.bpe" "$key"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ] && [[ " $systems " == *" mvq "* ]]; then
  d_opts=("${common[@]}" --vq-dir "$data_dir/vq" --quantizer-part train --train-parts train
          --layer "$layer" --random-teacher "$random_teacher" --num-codebooks "$num_codebooks"
          --quantizer-utts "$quantizer_utts")
  add_opt d_opts --teacher-dir "$teacher_dir"
  add_opt d_opts --quantizer "$quantizer"
  add_opt d_opts --codebook-size "$codebook_size"
  add_opt d_opts --quantizer-iters "$quantizer_iters"
  log "Stage 2: distill.sh ${d_opts[*]}"
  "$recipes/librispeech/distill.sh" "${d_opts[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  t_opts=("${common[@]}" --systems "$systems" --train-part train --valid-part dev
          --vocab-size "$vocab_size" --exp-root "$exp_root")
  add_opt t_opts --num-epochs "$num_epochs"
  add_opt t_opts --max-duration "$max_duration"
  add_opt t_opts --model-size "$model_size"
  add_opt t_opts --extra-args "$student_args"
  log "Stage 3: train.sh ${t_opts[*]}"
  "$recipes/librispeech/train.sh" "${t_opts[@]}"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  sets="dev"
  for kv in ${test_parts[@]+"${test_parts[@]}"}; do sets="$sets ${kv%%=*}"; done
  for system in $systems; do
    log "Stage 4: decode $system on $sets"
    "$recipes/librispeech/decode.sh" "${common[@]}" --exp-dir "$exp_root/$system" --test-sets "$sets" \
      --method "$method" --epoch "$decode_epoch" --avg "$decode_avg" --use-averaged-model "$use_averaged_model"
  done
  log "Done: WER summaries in $exp_root/<system>/<method>/wer-summary-<set>-*.txt"
fi
