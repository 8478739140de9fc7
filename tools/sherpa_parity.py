#!/usr/bin/env python
"""Parity of a trained student with sherpa-onnx, the deployment client.

Exports the checkpoint (float32 and int8), decodes a test set with sherpa-onnx's
``OfflineRecognizer`` from the audio files (its own kaldi-native-fbank features) by greedy
and modified beam search, and decodes the same cuts with mvqkd from their audio (lhotse
Fbank); prints, per method and export, the share of utterances whose word sequences are
identical, both WERs, and the export's size.

    python tools/sherpa_parity.py --exp-dir exp/seed1/mvq --epoch 5 --use-averaged-model \\
        --cuts data/fbank/librispeech_cuts_test-clean.jsonl.gz --out-dir exp/seed1/mvq/onnx

(``--use-averaged-model``: the model the demo's table decodes.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def sherpa_decode(onnx_dir: Path, cuts, method: str, threads: int, suffix: str = "") -> dict[str, list[str]]:
    import sherpa_onnx

    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(onnx_dir / f"encoder{suffix}.onnx"), decoder=str(onnx_dir / f"decoder{suffix}.onnx"),
        joiner=str(onnx_dir / f"joiner{suffix}.onnx"), tokens=str(onnx_dir / "tokens.txt"), num_threads=threads,
        decoding_method=method, max_active_paths=4)
    out = {}
    for cut in cuts:
        audio = cut.load_audio().astype(np.float32)  # the cut's samples (16 kHz), channels averaged
        stream = rec.create_stream()
        stream.accept_waveform(cut.sampling_rate, audio.mean(0))
        rec.decode_stream(stream)
        out[cut.id] = stream.result.text.split()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp-dir", required=True)
    ap.add_argument("--epoch", type=int, required=True)
    ap.add_argument("--avg", type=int, default=1)
    ap.add_argument("--use-averaged-model", action="store_true",
                    help="icefall's averaged model (mvqkd decode --use-averaged-model), as the demo")
    ap.add_argument("--cuts", required=True, help="test cuts with recordings and transcripts")
    ap.add_argument("--out-dir", required=True, help="where the export goes (float32 and int8 files)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from lhotse import CutSet

    from mvqkd.data.dataset import cut_text
    from mvqkd.data.wer import compute_error_stats
    from mvqkd.decode.decode import decode_dataset
    from mvqkd.decode.export import export_onnx
    from mvqkd.student.checkpoint import checkpoint_bpe, load_model_for_decoding

    model, _, last = load_model_for_decoding(args.exp_dir, epoch=args.epoch, avg=args.avg, return_checkpoint=True,
                                             use_averaged_model=args.use_averaged_model)
    sp = checkpoint_bpe(last)
    cuts = CutSet.from_file(args.cuts).to_eager()
    raw = CutSet.from_cuts(c.drop_features() for c in cuts)  # mvqkd from the audio too
    refs = {c.id: cut_text(c).split() for c in cuts}
    out = Path(args.out_dir)
    files = export_onnx(model, sp, out, int8=True)
    sizes = {kind: sum(p.stat().st_size for k, p in files.items() if k != "tokens" and k.endswith(".int8") == (kind == "int8"))
             for kind in ("fp32", "int8")}
    averaged = ", averaged model" if args.use_averaged_model else ""
    print(f"sherpa-onnx parity: {args.exp_dir} epoch {args.epoch} avg {args.avg}{averaged}, {len(cuts)} cuts "
          f"of {args.cuts}")
    print("| method | export (size) | identical hypotheses | WER sherpa-onnx | WER mvqkd |")
    print("|---|---|---|---|---|")

    def wer(hyps):
        return compute_error_stats([(cid, refs[cid], hyps[cid]) for cid in refs]).wer

    for method in ("greedy_search", "modified_beam_search"):
        mine = {cid: hyp for cid, _, hyp in decode_dataset(model, raw, sp, method=method)}
        for kind in ("fp32", "int8"):
            theirs = sherpa_decode(out, cuts, method, args.threads, ".int8" if kind == "int8" else "")
            same = np.mean([theirs[cid] == mine[cid] for cid in refs]) * 100
            print(f"| {method} | {kind} ({sizes[kind] / 2 ** 20:.1f} MiB) | {same:.1f}% | {wer(theirs):.2f} | "
                  f"{wer(mine):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
