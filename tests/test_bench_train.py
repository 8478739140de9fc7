"""tools/bench_train.py: the alternating timer, the override and the depthwise comparisons."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_train.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alternate_reverses_the_order_every_other_round_and_skips_the_warmup(bench):
    calls = []
    clock = iter(range(100))

    def step(name):
        calls.append(name)
        return next(clock)

    times = bench.alternate(step, ["a", "b"], warmup=1, steps=3)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    # round 0 (values 0, 1) is the warm-up; rounds 1-3 are timed: b=2 a=3, a=4 b=5, b=6 a=7
    assert times == {"a": [3, 4, 7], "b": [2, 5, 6]}


def run(*args, **env):
    """The tool in a subprocess, with ``env`` added to this process's environment."""
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **env))


def test_override_comparison_builds_the_overridden_student_and_prints_the_ratio():
    out = run("--compare", "override", "--model-size", "tiny", "--batch-size", "2", "--seconds", "1",
              "--vocab-size", "32", "--num-codebooks", "2", "--codebook-size", "8", "--steps", "2",
              "--warmup", "0", "--device", "cpu", "--override", "num_layers=1")
    assert out.returncode == 0, out.stderr
    params = [float(x) for x in re.findall(r"\(([\d.]+)M params\)", out.stdout)]
    assert len(params) == 2 and params[1] < params[0]  # one layer of two removed
    assert "num_layers=1" in out.stdout
    ratios = re.findall(r"ratio override / preset \((median|min)\): ([\d.]+)", out.stdout)
    assert [r[0] for r in ratios] == ["median", "min"] and all(float(r[1]) > 0 for r in ratios)


@pytest.mark.parametrize("extra, message", [
    ([], "needs at least one --override"),
    (["--override", "no_such_field=1"], "expected KEY=VALUE with KEY one of"),
])
def test_override_comparison_rejects_a_missing_or_unknown_field(extra, message):
    out = run("--compare", "override", "--model-size", "tiny", *extra)
    assert out.returncode != 0
    assert message in out.stderr


@pytest.mark.parametrize("portable", ["1", "0"])
def test_depthwise_comparison_prints_the_ratio_and_finds_the_same_weights(portable):
    """Portable: the tap loop runs and must leave the weights as nn.Conv1d's; otherwise both run
    nn.Conv1d (oneDNN on), which the line says."""
    out = run("--compare", "depthwise", "--model-size", "tiny", "--batch-size", "2", "--seconds", "1",
              "--vocab-size", "32", "--num-codebooks", "2", "--codebook-size", "8", "--steps", "2",
              "--warmup", "1", "--device", "cpu", MVQKD_PORTABLE_KERNELS=portable, OMP_NUM_THREADS="1")
    assert out.returncode == 0, out.stderr
    assert "nn.Conv1d" in out.stdout and "tap loop" in out.stdout
    ratios = re.findall(r"ratio loop / conv \((median|min)\): ([\d.]+)", out.stdout)
    assert [r[0] for r in ratios] == ["median", "min"]
    (same, total), = re.findall(r"weights after 3 steps each: (\d+) of (\d+) tensors identical", out.stdout)
    assert int(total) > 50 and int(same) == int(total)
    assert ("oneDNN on: both ran nn.Conv1d" in out.stdout) == (portable == "0")
