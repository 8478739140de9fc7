"""The demo's budgets are counted, so its models repeat: the teacher fine-tuned twice for the
same number of steps, and the quantizer trained twice for the same number of iterations,
are identical bit for bit (same seed, same thread count) -- however busy the machine was."""

from __future__ import annotations

import torch
from safetensors.torch import load_file


def test_teacher_with_a_step_budget_repeats_bit_for_bit(prepared_data, tmp_path):
    from lhotse import CutSet

    from mvqkd.training.finetune import finetune_teacher

    train = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_train-clean-360.jsonl.gz").subset(first=8)
    dev = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_dev-clean.jsonl.gz").subset(first=2)
    states = []
    for run in ("a", "b"):
        out = finetune_teacher(train, dev, tmp_path / run, size="tiny", max_steps=6, num_epochs=100,
                               max_duration=15, warmup_steps=2, seed=3)
        states.append(load_file(out / "model.safetensors"))
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    # and the budget was the step count: 6 optimizer steps in the log, whatever the clock said
    import json

    assert json.loads((tmp_path / "a" / "finetune_log.json").read_text())[-1]["step"] == 6


def test_quantizer_with_an_iteration_budget_repeats_bit_for_bit():
    from mvqkd.quantizer import train_quantizer

    x = torch.randn(3000, 24, generator=torch.Generator().manual_seed(0))
    a = train_quantizer(x, 4, 32, iters=2, seed=5, progress=False)
    b = train_quantizer(x, 4, 32, iters=2, seed=5, progress=False)
    assert torch.equal(a.codebooks, b.codebooks) and torch.equal(a.mean, b.mean)
    assert torch.equal(a.encode(x), b.encode(x))
    assert a.history["args"]["iters_done"] == 2


def test_passive_openmp_waiting_trains_the_same_quantizer(tmp_path):
    """``OMP_WAIT_POLICY=PASSIVE`` (the advice for shared machines, docs/RESULTS.md) changes how
    idle threads wait, not what they compute: a quantizer trained in a fresh process with it
    and 2 threads equals one trained here."""
    import os
    import subprocess
    import sys

    from mvqkd.quantizer import load_quantizer, train_quantizer

    script = (
        "import sys, torch\n"
        "from mvqkd.quantizer import train_quantizer\n"
        "torch.set_num_threads(2)\n"
        "x = torch.randn(3000, 24, generator=torch.Generator().manual_seed(0))\n"
        "train_quantizer(x, 4, 32, iters=2, seed=5, progress=False).save(sys.argv[1])\n"
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "q.pt")], env=env, check=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(3000, 24, generator=torch.Generator().manual_seed(0))
        here = train_quantizer(x, 4, 32, iters=2, seed=5, progress=False)
    finally:
        torch.set_num_threads(threads)
    there = load_quantizer(tmp_path / "q.pt")
    assert torch.equal(here.codebooks, there.codebooks) and torch.equal(here.mean, there.mean)
    assert torch.equal(here.encode(x), there.encode(x))
