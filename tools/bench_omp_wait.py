#!/usr/bin/env python
"""Step time of the demo teacher on 2 threads, alone and next to a second 2-thread job,
with libgomp's default wait policy and with ``OMP_WAIT_POLICY=PASSIVE``.

Why: on a 2-core machine two 2-thread jobs whose OpenMP threads spin while they wait waste
each other's time slices (docs/RESULTS.md, "The loaded run"). Each of the four cases runs in
a fresh subprocess (the wait policy is read once, at start-up); the load is a 2-thread
``torch`` matmul loop, killed after each case.

    python tools/bench_omp_wait.py --steps 6
Prints one line per case: seconds per training step (forward + backward + AdamW on 4 x 6 s
of audio, the ``small`` demo teacher, after 2 warm-up steps).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

#: the children run from here, so that `python -c` imports this checkout's mvqkd (with the
#: working directory first on sys.path, a run from another checkout timed that one's)
REPO = Path(__file__).resolve().parents[1]

#: the demo teacher on 2 threads and its ``step()`` (also timed by tools/bench_kernels.py)
TEACHER_SETUP = r"""
from mvqkd.teacher.ctc import build_ctc_model
torch.set_num_threads(2)
model, _ = build_ctc_model("small", 0, None)
model.train()
audio = torch.randn(4, 96000)  # (batch, samples): 4 x 6 s at 16 kHz
opt = torch.optim.AdamW(model.parameters(), 1e-4)
def step():
    model(audio).logits.float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
"""
STEP = "import json, time, torch\n" + TEACHER_SETUP + r"""
for _ in range(2):
    step()
start = time.perf_counter()
for _ in range(STEPS):
    step()
print(json.dumps((time.perf_counter() - start) / STEPS))
"""
LOAD = "import torch\ntorch.set_num_threads(2)\na = torch.randn(1500, 1500)\nwhile True:\n    a = torch.tanh(a @ a / 40)\n"


def seconds_per_step(steps: int, policy: str | None, loaded: bool) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    load = subprocess.Popen([sys.executable, "-c", LOAD], env=env) if loaded else None
    try:
        if load:
            time.sleep(3)
        if policy:
            env = {**env, "OMP_WAIT_POLICY": policy}
        out = subprocess.run([sys.executable, "-c", STEP.replace("STEPS", str(steps))], env=env,
                             capture_output=True, text=True, check=True, cwd=REPO)
    finally:
        if load:
            load.kill()
            load.wait()
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case (default 6)")
    args = ap.parse_args()
    for loaded in (False, True):
        for policy in (None, "PASSIVE"):
            t = seconds_per_step(args.steps, policy, loaded)
            print(f"{'next to a 2-thread load' if loaded else 'alone':24s} "
                  f"OMP_WAIT_POLICY={policy or 'default':8s} {t:.3f} s/step", flush=True)


if __name__ == "__main__":
    main()
