"""The CPU half of tools/gpu_check.py: every check runs (device = CPU) and passes, so the
script is ready for a GPU; CI never needs one."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_half_passes():
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--device", "cpu", "--quick"],
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [line.split()[1].rstrip(":") for line in lines] == ["extract", "long", "quantizer", "losses", "train", "decode"]
    assert proc.returncode == 0 and all(line.startswith("PASS") for line in lines), proc.stdout + proc.stderr[-2000:]
