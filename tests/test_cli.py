"""The `mvqkd` command lists every sub-command, and its help stays fast (no torch import)."""

import subprocess
import sys

from tests.conftest import run_cli

COMMANDS = ["synth-corpus", "download-librispeech", "prepare-manifests", "compute-fbank", "train-bpe",
            "make-teacher", "check-teacher", "finetune-teacher", "train-quantizer", "quantize",
            "quantizer-report", "make-cuts", "dump-embeddings", "extract", "validate", "train",
            "average-checkpoints", "decode"]


def test_help_lists_every_command():
    out = run_cli("--help").stdout
    for name in COMMANDS:
        assert f"    {name}" in out, name
    for name in COMMANDS:  # every command has its own --help
        assert "usage: mvqkd " + name in run_cli(name, "--help").stdout


def test_building_the_parser_imports_no_heavy_package():
    code = ("import sys, mvqkd.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'lhotse', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_command_prints_help_and_fails():
    proc = run_cli(check=False)
    assert proc.returncode == 2 and "COMMAND" in proc.stdout
