"""MKL's reproducibility mode on every vendor's processor (mvqkd.mkl_vendor): what MKL itself
reports as its code branch, read back through its own ``mkl_cbwr_get``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mvqkd.mkl_vendor import build_shim, cpu_flags, cpu_vendor, needs_pinning, pin_mkl_branch, unportable_reason

BRANCH = r"""
import sys
from mvqkd.cli import portable_kernels
from mvqkd.mkl_vendor import mkl_branch, pin_mkl_branch
if sys.argv[1] == "portable":
    portable_kernels()
elif sys.argv[1] == "shim":
    pin_mkl_branch(vendor="AuthenticAMD", cache_dir=sys.argv[2])
print(mkl_branch())
"""


def branch(mode: str, cache: str = "", **env_extra) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MVQKD_PORTABLE_KERNELS", "MVQKD_MKL_SHIM")}
    env.update(env_extra, MVQKD_PORTABLE_KERNELS="1" if mode == "portable" else "0")
    out = subprocess.run([sys.executable, "-c", BRANCH, mode, cache], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def mkl_present():
    if branch("plain") == "None":
        pytest.skip("this torch carries no MKL")


def test_portable_kernels_run_mkls_avx2_branch_on_this_processor(mkl_present):
    """On an Intel processor MKL_CBWR does it; on an AMD one only with the vendor shim."""
    assert branch("plain") == "OFF"  # MKL's default: no reproducibility mode
    assert branch("portable") == "AVX2 strict"
    assert branch("portable", MKL_CBWR="COMPATIBLE") == "COMPATIBLE"  # a value of the user's wins


def test_the_shim_is_what_makes_mkl_honour_its_mode_off_intel(mkl_present, tmp_path):
    assert branch("shim", str(tmp_path), MKL_CBWR="AVX2,STRICT") == "AVX2 strict"
    alone = branch("plain", MKL_CBWR="AVX2,STRICT")
    if not needs_pinning():
        assert alone == "AVX2 strict"
    else:  # measured on an AMD EPYC: MKL keeps its AUTO branch, whose products round differently
        assert alone != "AVX2 strict"
        assert branch("portable", MVQKD_MKL_SHIM="0") == alone


def test_cpu_vendor_reads_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\n")
    assert cpu_vendor(str(info)) == "AuthenticAMD"
    assert cpu_vendor(str(tmp_path / "missing")) is None
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    assert cpu_vendor(str(tmp_path / "arm")) is None
    assert needs_pinning("AuthenticAMD") and not needs_pinning("GenuineIntel")


def test_which_processors_the_portable_setting_can_apply_to(tmp_path):
    info = tmp_path / "cpuinfo"  # a QEMU guest with its generic "qemu64" CPU model: no AVX2, no FMA
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 sse4_1 popcnt\n")
    assert cpu_flags(str(info)) == {"fpu", "sse", "sse2", "sse4_1", "popcnt"}
    assert cpu_flags(str(tmp_path / "missing")) is None
    assert unportable_reason("x86_64", cpu_flags(str(info))) == (
        "it runs AVX2 kernels and this processor lacks avx2 and fma (/proc/cpuinfo flags)")
    assert "lacks fma " in unportable_reason("x86_64", {"avx", "avx2"})
    assert unportable_reason("x86_64", {"avx2", "fma", "avx512f"}) is None
    assert unportable_reason("AMD64", None) is None  # flags unknown (not Linux): taken as present
    assert unportable_reason("aarch64", {"fp", "asimd"}) == "it pins x86-64 kernels and this processor is aarch64"


def test_portable_kernels_stand_aside_where_they_would_crash():
    """On an x86-64 processor without AVX2 torch's forced AVX2 kernels would stop the process with
    an illegal instruction: the setting warns, sets nothing and the run goes on natively."""
    code = ("import logging, os\nlogging.basicConfig()\nimport mvqkd.mkl_vendor as v\n"
            "v.cpu_flags = lambda *a: {'sse2', 'avx'}\nfrom mvqkd.cli import portable_kernels\n"
            "applied = portable_kernels()\nimport torch\n"
            "print(applied, [k for k in ('ATEN_CPU_CAPABILITY', 'MKL_CBWR', 'OPENBLAS_CORETYPE') if k in os.environ],"
            " torch.backends.mkldnn.enabled)")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OPENBLAS_CORETYPE")}
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, MVQKD_PORTABLE_KERNELS="1"),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "[]", "True"]
    assert "MVQKD_PORTABLE_KERNELS=1 not applied: it runs AVX2 kernels and this processor lacks avx2 and fma" in out.stderr
    assert "run.sh --portable-kernels false" in out.stderr


def test_intel_processors_and_mvqkd_mkl_shim_0_load_nothing(tmp_path, monkeypatch):
    assert pin_mkl_branch(vendor="GenuineIntel", cache_dir=tmp_path) is None
    monkeypatch.setenv("MVQKD_MKL_SHIM", "0")
    assert pin_mkl_branch(vendor="AuthenticAMD", cache_dir=tmp_path) is None
    assert not any(tmp_path.iterdir())


def test_the_shim_is_built_once_and_reused(tmp_path):
    first = build_shim(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build_shim(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind


def test_without_a_compiler_it_warns_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(OSError, match=r"no C compiler \(no-such-cc\)"):
        build_shim(tmp_path)
    code = ("import logging, sys\nlogging.basicConfig()\nfrom mvqkd.mkl_vendor import pin_mkl_branch\n"
            f"print(pin_mkl_branch(vendor='AuthenticAMD', cache_dir={str(tmp_path)!r}))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, CC="no-such-cc"),
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "None"
    assert "AuthenticAMD processor: MKL ignores MKL_CBWR" in out.stderr and "no-such-cc" in out.stderr


GEMM = r"""
import hashlib
from mvqkd.cli import portable_kernels
portable_kernels()
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
h = hashlib.sha256()
for m, k, n in [(63, 192, 768), (500, 80, 192), (17, 333, 129), (8, 512, 512)]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    h.update((a @ b).numpy().tobytes())
    h.update(torch.nn.functional.linear(a, b.t()).numpy().tobytes())
print(torch.__version__, torch.__config__.show().count("Math Kernel Library Version 2024.2"), h.hexdigest()[:16])
"""
#: the products above under MKL 2024.2's AVX2 branch (torch 2.13.0+cpu), recorded on an AMD EPYC
#: (family 25) with the shim, where the demo's teacher, quantizer and labels then came out equal
#: to those of two Intel Xeons (docs/RESULTS.md, "Run AF"); without the shim it gave 9b75e3a4b769cbc5
AVX2_GEMM_DIGEST = "83fd022c8dc4bff1"


def test_portable_matrix_products_equal_the_recorded_avx2_ones(mkl_present):
    env = dict(os.environ, MVQKD_PORTABLE_KERNELS="1")
    env.pop("MKL_CBWR", None)
    out = subprocess.run([sys.executable, "-c", GEMM], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    version, mkl_2024_2, digest = out.stdout.split()
    if not (version.startswith("2.13.0") and mkl_2024_2 == "1"):
        pytest.skip(f"the digest was recorded with torch 2.13.0's MKL 2024.2, not torch {version}'s")
    assert digest == AVX2_GEMM_DIGEST
