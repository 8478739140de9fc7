"""MKL's reproducibility mode on processors that are not Intel's (AMD), and which processors
the portable setting (``MVQKD_PORTABLE_KERNELS=1``, :func:`mvqkd.cli.portable_kernels`) can
apply to at all (:func:`unportable_reason`).

``MKL_CBWR=AVX2,STRICT`` pins MKL's GEMM to its AVX2 code branch, so that its sums round the
same on every processor. MKL honours it only where its vendor check answers "Intel": on an AMD
EPYC it silently keeps its ``AUTO`` branch (``mkl_serv_cbwr_get`` reports 2, not 10) and a
matrix product comes out different in the last bits, so a model trained with the same command
and seed differs from one trained on an Intel processor (docs/RESULTS.md, "Run AF").

:func:`pin_mkl_branch` answers that check with "Intel" for MKL: a one-function shared
library, compiled once with the system's C compiler into the user cache and loaded into the
global symbol scope *before* torch (whose ``libtorch_cpu.so`` carries MKL), so MKL's own
``mkl_serv_intel_cpu_true`` is interposed. MKL then runs the AVX2 branch, whose instructions
every AVX2 processor has. :func:`mkl_branch` reads back what MKL uses. ``MVQKD_MKL_SHIM=0``
leaves the shim out (MKL then keeps its own choice there; ``tools/bench_kernels.py`` measures
what the pinning costs).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

#: MKL's vendor check, answered "Intel" (the one symbol the shim defines)
SHIM_SOURCE = "int mkl_serv_intel_cpu_true(void) { return 1; }\n"
#: mkl_cbwr.h: the branch values ``mkl_cbwr_get(MKL_CBWR_ALL)`` returns, and its STRICT flag
CBWR_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2", 9: "AVX", 10: "AVX2",
                 12: "AVX512", 14: "AVX512_E1"}
CBWR_ALL, CBWR_STRICT = ~0, 0x10000


def _cpuinfo_field(key: str, cpuinfo: str) -> str | None:
    """The value of ``key`` for the first processor in ``cpuinfo``, or None where it cannot be
    read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The ``vendor_id`` of the first processor (``GenuineIntel``, ``AuthenticAMD``), or None
    where it cannot be read (not Linux, not x86)."""
    return _cpuinfo_field("vendor_id", cpuinfo)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The instruction-set ``flags`` of the first processor (``avx2``, ``fma``, ...), or None
    where they cannot be read (not Linux, not x86)."""
    flags = _cpuinfo_field("flags", cpuinfo)
    return None if flags is None else set(flags.split())


#: what the portable setting's kernels execute: torch's AVX2 kernels, MKL's AVX2 branch and
#: OpenBLAS's Haswell kernels all use AVX2 and FMA instructions
PORTABLE_FLAGS = ("avx2", "fma")


def unportable_reason(machine: str | None = None, flags: set[str] | None = None) -> str | None:
    """Why the portable setting cannot apply on this processor, or None where it can.

    It forces x86-64 kernels that use AVX2 and FMA (:data:`PORTABLE_FLAGS`): on a processor of
    another architecture (``machine``, default ``platform.machine()``) they do not exist, and
    on an x86-64 processor without those instructions (old parts, a VM's generic CPU model such
    as QEMU's ``qemu64``) torch and OpenBLAS, which take the forced choice on trust (torch's
    ``compute_cpu_capability`` returns AVX2 for ``ATEN_CPU_CAPABILITY=avx2`` unchecked), would
    stop with an illegal instruction. ``flags`` default to :func:`cpu_flags`; where they cannot
    be read, the processor is taken to have them.
    """
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64"):
        return f"it pins x86-64 kernels and this processor is {machine}"
    flags = cpu_flags() if flags is None else flags
    missing = [f for f in PORTABLE_FLAGS if flags is not None and f not in flags]
    if missing:
        return (f"it runs AVX2 kernels and this processor lacks {' and '.join(missing)} "
                "(/proc/cpuinfo flags)")
    return None


def needs_pinning(vendor: str | None = None) -> bool:
    """Whether MKL needs the shim to honour ``MKL_CBWR`` on this processor (``vendor``, default
    :func:`cpu_vendor`): an x86 processor that is not Intel's."""
    vendor = cpu_vendor() if vendor is None else vendor
    return vendor not in (None, "GenuineIntel")


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mvqkd"


def build_shim(cache_dir: Path | None = None) -> Path:
    """The shim library, compiled on first use (``$CC`` or ``cc``) into ``cache_dir``; written
    under a temporary name and renamed, so processes starting together never load half a file.
    Raises OSError (naming the compiler) where it cannot be built."""
    cache_dir = Path(cache_dir or _cache_dir())
    path = cache_dir / f"mkl_intel_cpu-{hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:12]}.so"
    if path.is_file():
        return path
    compiler = os.environ.get("CC") or "cc"
    if not shutil.which(compiler):
        raise OSError(f"no C compiler ({compiler}) to build MKL's vendor shim: install one "
                      "(apt-get install gcc) or set CC")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src, lib = Path(tmp) / "shim.c", Path(tmp) / "shim.so"
        src.write_text(SHIM_SOURCE)
        done = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"{compiler} could not build MKL's vendor shim: {done.stderr.strip()}")
        os.replace(lib, path)
    return path


def pin_mkl_branch(vendor: str | None = None, cache_dir: Path | None = None) -> Path | None:
    """On a processor that is not Intel's, load the shim so that ``MKL_CBWR`` is honoured
    (module docstring). Must run before torch is imported. Returns the loaded library, or None
    where nothing is needed (Intel, unknown vendor) or it could not be built (a warning then
    says that MKL's results will differ from an Intel processor's)."""
    vendor = cpu_vendor() if vendor is None else vendor
    if not needs_pinning(vendor) or os.environ.get("MVQKD_MKL_SHIM", "1") == "0":
        return None
    if "torch" in sys.modules:
        raise RuntimeError("pin_mkl_branch must run before torch is imported")
    try:
        path = build_shim(cache_dir)
    except OSError as e:
        logger.warning("%s processor: MKL ignores MKL_CBWR here and its products will differ in the "
                       "last bits from an Intel processor's (%s)", vendor, e)
        return None
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    return path


def mkl_branch() -> str | None:
    """The code branch torch's MKL runs (``AVX2 strict``, ``AUTO``, ``OFF``), read from MKL
    itself; None where torch carries no MKL."""
    import torch

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    code = get(CBWR_ALL)
    name = CBWR_BRANCHES.get(code & 0xFFFF, str(code))
    return name + (" strict" if code & CBWR_STRICT else "")
