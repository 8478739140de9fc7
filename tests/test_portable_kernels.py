"""MVQKD_PORTABLE_KERNELS=1: a small conv + linear model trained for three Adam steps comes out
bit for bit the same when each library is restricted to what an AVX2-only processor offers
(torch's kernels: ATEN_CPU_CAPABILITY, MKL: MKL_ENABLE_INSTRUCTIONS, oneDNN:
ONEDNN_MAX_CPU_ISA), while without it each restriction changes the weights on a processor
with AVX-512 (the dependence the setting removes). numpy's OpenBLAS (the PCA's float64 SVD)
runs its Haswell (AVX2) kernels under the setting: the same SVD as a process told so
explicitly, where the processor's own kernels round differently on AVX-512."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

TRAIN = r"""
import hashlib, sys
from mvqkd.cli import portable_kernels
applied = portable_kernels()
import torch
torch.manual_seed(0)
torch.set_num_threads(2)
conv = torch.nn.Sequential(torch.nn.Conv1d(1, 64, 10, stride=5), torch.nn.GELU(),
                           torch.nn.Conv1d(64, 64, 3, stride=2), torch.nn.GELU())
head = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.LayerNorm(256), torch.nn.Linear(256, 32))
params = list(conv.parameters()) + list(head.parameters())
opt = torch.optim.Adam(params, 1e-3)
x = torch.randn(4, 1, 16000)  # (batch, 1, samples)
for _ in range(3):
    loss = head(conv(x).transpose(1, 2)).log_softmax(-1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in params)).hexdigest()
print(digest, applied, torch.backends.cpu.get_cpu_capability(), torch.backends.mkldnn.enabled)
"""

RESTRICTIONS = [{}, {"ATEN_CPU_CAPABILITY": "avx2"}, {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                {"ONEDNN_MAX_CPU_ISA": "AVX2"}]


def train(portable: bool, **restrict) -> list[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
                        "MVQKD_PORTABLE_KERNELS")}
    env.update(restrict, MVQKD_PORTABLE_KERNELS="1" if portable else "0", OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_portable_kernels_give_the_same_weights_under_every_restriction():
    runs = [train(True, **r) for r in RESTRICTIONS]
    assert all(r[1:] == ["True", "AVX2", "False"] for r in runs), runs  # applied, AVX2 kernels, oneDNN off
    assert len({r[0] for r in runs}) == 1, runs


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                    reason="the restrictions change nothing on a processor without AVX-512")
def test_without_them_each_restriction_changes_the_weights():
    """Each restriction changes the weights, except MKL's on a processor that is not Intel's
    (an AMD EPYC with AVX-512, family 25 model 17): there MKL's own dispatch never takes its
    AVX-512 branch (mvqkd/mkl_vendor.py), so restricting it to AVX2 changes nothing."""
    from mvqkd.mkl_vendor import needs_pinning

    runs = [train(False, **r) for r in RESTRICTIONS]
    assert runs[0][1:3] == ["False", "AVX512"]
    mkl = RESTRICTIONS.index({"MKL_ENABLE_INSTRUCTIONS": "AVX2"})
    if needs_pinning():
        assert runs[mkl][0] == runs[0][0], runs
        runs.pop(mkl)
    assert len({r[0] for r in runs}) == len(runs), runs


SVD = r"""
import hashlib
from mvqkd.cli import portable_kernels
applied = portable_kernels()
import numpy as np
x = np.random.default_rng(0).standard_normal((3000, 64)) @ np.random.default_rng(1).standard_normal((64, 64))
_, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
print(hashlib.sha256(np.concatenate([s, vt.ravel()]).tobytes()).hexdigest(), applied)
"""


def svd_digest(portable: bool, **env_extra) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "MVQKD_PORTABLE_KERNELS")}
    env.update(env_extra, MVQKD_PORTABLE_KERNELS="1" if portable else "0")
    out = subprocess.run([sys.executable, "-c", SVD], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_portable_kernels_run_numpys_openblas_at_avx2():
    portable, haswell, native = svd_digest(True), svd_digest(False, OPENBLAS_CORETYPE="Haswell"), svd_digest(False)
    assert portable == [haswell[0], "True"]
    if torch.backends.cpu.get_cpu_capability() == "AVX512":  # OpenBLAS picks its SkylakeX kernels here
        assert native[0] != haswell[0]


def test_it_refuses_to_apply_after_torch_is_imported():
    code = ("import os, torch\nos.environ['MVQKD_PORTABLE_KERNELS'] = '1'\n"
            "from mvqkd.cli import portable_kernels\nportable_kernels()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "before torch is imported" in out.stderr
    code = code.replace("import os, torch", "import os, numpy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "before numpy is imported" in out.stderr


def test_a_second_call_in_the_same_process_is_a_no_op():
    # e.g. mvqkd.cli.main() called twice from Python: the first call imported torch
    code = ("import os\nos.environ['MVQKD_PORTABLE_KERNELS'] = '1'\n"
            "from mvqkd.cli import portable_kernels\nfirst = portable_kernels()\nimport torch\n"
            "print(first, portable_kernels(), torch.backends.mkldnn.enabled)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False"]


NNPACK = r"""
from mvqkd.cli import portable_kernels
applied = portable_kernels()
import torch
torch.manual_seed(0)
conv = torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)  # the student's second subsampling layer
x = torch.randn(16, 64, 50, 40)  # a batch of 16: where torch would pick NNPACK
with torch.no_grad():
    y = conv(x)
    with torch.backends.nnpack.flags(enabled=False), torch.backends.mkldnn.flags(enabled=False):
        im2col = conv(x)
print(applied, torch.backends.nnpack.is_available(), torch._C._get_nnpack_enabled(), torch.equal(y, im2col))
"""


def nnpack_run(portable: bool) -> list[str]:
    env = dict(os.environ, MVQKD_PORTABLE_KERNELS="1" if portable else "0")
    out = subprocess.run([sys.executable, "-c", NNPACK], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_portable_kernels_turn_nnpack_off():
    portable = nnpack_run(True)
    assert portable[0::2] == ["True", "False"] and portable[3] == "True"
    native = nnpack_run(False)
    if native[1] == "True":  # NNPACK's sums round differently from the im2col + GEMM path
        assert native[2:] == ["True", "False"], native
