#!/usr/bin/env python
"""What ``MVQKD_PORTABLE_KERNELS=1`` (processor-independent floats: AVX2 kernels, MKL's
reproducibility mode, no oneDNN) costs: a training step of the demo teacher (2 threads, as
run.sh's stage 2) and of the demo student (1 thread, as each of run.sh's two student jobs),
with the processor's native kernels and with the portable ones, each case in a fresh process
(the setting is read once, before torch loads), alternating native / portable --rounds times.

    python tools/bench_kernels.py --steps 6 --rounds 2
    python tools/bench_kernels.py --steps 5 --rounds 2 --each   # also each setting alone
    python tools/bench_kernels.py --decode EXP/seed1/baseline data/fbank/librispeech_cuts_dev-clean.jsonl.gz \
        data/lang_bpe_256/bpe.model --decode-cuts 60 --steps 2 --rounds 2
Prints one line per case and round (best step of --steps after 2 warm-up steps) and the
case / native ratio of the medians; run it on an otherwise idle machine. ``--each`` adds one
case per part of the setting (torch's AVX2 kernels, MKL's reproducibility mode, numpy's
OpenBLAS at Haswell, oneDNN off), to show where the cost comes from. On a processor that is
not Intel's a case "portable, MKL unpinned" (``MVQKD_MKL_SHIM=0``) is added: what pinning MKL
to its AVX2 branch there costs or saves (mvqkd/mkl_vendor.py). ``--decode`` times
instead one modified beam search (beam 4, one thread, as run.sh's decoding jobs) of the first
--decode-cuts cuts with a trained student (its last epoch-N.pt): native, portable, and portable
as before commit 83daea1 (NNPACK on, torch's per-channel depthwise convolutions).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_omp_wait import TEACHER_SETUP  # tools/ is on the path of a script run from it

from mvqkd.mkl_vendor import needs_pinning

PRELUDE = ("import os\nfrom mvqkd.cli import portable_kernels\nportable_kernels()\nimport json, time, torch\n"
           "if os.environ.get('BENCH_ONEDNN_OFF'):\n    torch.backends.mkldnn.enabled = False\n")
TEACHER = PRELUDE + "torch.manual_seed(0)\n" + TEACHER_SETUP
STUDENT = PRELUDE + r"""
from mvqkd.student import build_model, preset_config
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model(preset_config("demo", 256, num_codebooks=8, codebook_size=256, dropout=0.0,
                                  rnnt_warmup_steps=0)).train()
opt = torch.optim.AdamW(model.parameters(), 1e-4)
g = torch.Generator().manual_seed(0)
feats, lens = torch.randn(6, 330, 80, generator=g), torch.full((6,), 330)  # 6 x 3.3 s: a 20 s batch
tokens = [torch.randint(3, 256, (12,), generator=g).tolist() for _ in range(6)]
idx = torch.randint(0, 256, (6, 165, 8), generator=g)
def step():
    model(feats, lens, tokens, codebook_indexes=idx)["loss"].backward()
    opt.step()
    opt.zero_grad()
"""
DECODE = PRELUDE + r"""
import sentencepiece as spm
from lhotse import load_manifest
from mvqkd.decode.decode import decode_dataset
from mvqkd.student.checkpoint import epoch_checkpoints, load_model_for_decoding
torch.set_num_threads(1)
if os.environ.get("BENCH_PER_CHANNEL_CONV"):  # the portable setting before 83daea1
    import mvqkd.student.depthwise as depthwise
    depthwise._uses_loop = lambda conv, x: False
    torch.backends.nnpack.set_flags(True)
exp, cuts, bpe, n = os.environ["BENCH_DECODE"].split("|")
model, _ = load_model_for_decoding(exp, epoch=epoch_checkpoints(exp)[-1][0])
sp = spm.SentencePieceProcessor(model_file=bpe)
cuts = load_manifest(cuts).subset(first=int(n)).to_eager()
def step():
    decode_dataset(model, cuts, sp, "modified_beam_search", 4, max_duration=300)
"""
TIMING = r"""
for _ in range(2):
    step()
times = []
for _ in range(STEPS):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
print(json.dumps(min(times)))
"""


REPO = Path(__file__).resolve().parents[1]

#: the cases: the processor's own kernels, the whole portable setting, and (--each) its parts alone
NATIVE, PORTABLE = {"MVQKD_PORTABLE_KERNELS": "0"}, {"MVQKD_PORTABLE_KERNELS": "1"}
PORTABLE_BEFORE_83DAEA1 = {**PORTABLE, "BENCH_PER_CHANNEL_CONV": "1"}  # --decode only
#: on a processor that is not Intel's: the portable setting without the shim that makes MKL
#: honour MKL_CBWR there (mvqkd/mkl_vendor.py), i.e. MKL's own (AUTO) branch
UNPINNED = {**PORTABLE, "MVQKD_MKL_SHIM": "0"}
PARTS = {"ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
         "MKL_CBWR=AVX2,STRICT": {"MKL_CBWR": "AVX2,STRICT"},
         "OPENBLAS_CORETYPE=Haswell": {"OPENBLAS_CORETYPE": "Haswell"},
         "oneDNN off": {"BENCH_ONEDNN_OFF": "1"}}


#: every variable a case may set, cleared from the inherited environment first
CASE_VARIABLES = {key for case in (NATIVE, PORTABLE, PORTABLE_BEFORE_83DAEA1, UNPINNED, *PARTS.values())
                  for key in case}


def seconds(code: str, steps: int, case: dict, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in CASE_VARIABLES}
    env.update(NATIVE, **case, OMP_NUM_THREADS=str(threads))
    # from the repository root: ``-c`` puts the working directory first on sys.path, and another
    # checkout's ``mvqkd/`` there would be timed instead of this one
    out = subprocess.run([sys.executable, "-c", code + TIMING.replace("STEPS", str(steps))], env=env,
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        sys.exit(f"bench_kernels: the case {case} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case (default 6)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the cases per model (default 2)")
    ap.add_argument("--each", action="store_true", help="also time each part of the setting alone")
    ap.add_argument("--decode", nargs=3, metavar=("EXP_DIR", "CUTS", "BPE_MODEL"),
                    help="time decoding with this student instead of training steps")
    ap.add_argument("--decode-cuts", type=int, default=60, help="cuts decoded per step (default 60)")
    args = ap.parse_args()
    cases = {"native": NATIVE, "portable": PORTABLE, **(PARTS if args.each else {})}
    if needs_pinning():
        cases["portable, MKL unpinned"] = UNPINNED
    models = (("demo teacher", TEACHER, 2), ("demo student", STUDENT, 1))
    if args.decode:
        os.environ["BENCH_DECODE"] = "|".join([*(str(Path(p).resolve()) for p in args.decode),
                                               str(args.decode_cuts)])
        cases["portable before 83daea1"] = PORTABLE_BEFORE_83DAEA1
        models = (("decode", DECODE, 1),)
    for name, code, threads in models:
        got = {case: [] for case in cases}
        for r in range(args.rounds):
            for case, env in cases.items():
                t = seconds(code, args.steps, env, threads)
                got[case].append(t)
                print(f"{name:13s} round {r + 1} {case:26s} {t:.3f} s/step", flush=True)  # decode: s/pass
        base = statistics.median(got["native"])
        for case in list(cases)[1:]:
            print(f"{name:13s} {case} / native: {statistics.median(got[case]) / base:.2f}x", flush=True)


if __name__ == "__main__":
    main()
