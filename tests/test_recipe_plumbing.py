"""The recipe shell scripts' plumbing, with a fake ``mvqkd`` on PATH that records its calls.

What the real commands do is tested elsewhere; these tests check which commands the shell
stages run, with which options, how many at a time, and that a failing job fails the stage.
"""

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "librispeech"

# Appends "START|END <epoch ns> <pid> OMP=<threads> <args>" lines to $FAKE_LOG; `train`
# writes EXP_DIR/epoch-N.pt like the real one; exits 3 when $FAKE_FAIL occurs in the args.
FAKE_MVQKD = r"""#!/usr/bin/env bash
echo "START $(date +%s%N) $$ OMP=${OMP_NUM_THREADS:-} $*" >> "$FAKE_LOG"
sleep 0.3
args=" $* "
if [ -n "${FAKE_FAIL:-}" ] && [[ "$args" == *"$FAKE_FAIL"* ]]; then exit 3; fi
if [ "$1" = train ]; then
  exp=$(sed -E 's/.* --exp-dir ([^ ]+) .*/\1/' <<< "$args")
  n=$(sed -E 's/.* --num-epochs ([^ ]+) .*/\1/' <<< "$args")
  mkdir -p "$exp" && touch "$exp/epoch-$n.pt"
fi
echo "END $(date +%s%N) $$" >> "$FAKE_LOG"
"""


@pytest.fixture
def fake_env(tmp_path):
    """A work dir with the files the scripts check for, and the fake mvqkd first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mvqkd"
    fake.write_text(FAKE_MVQKD)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    work = tmp_path / "work"
    for rel in ["data/lang_bpe_256/bpe.model", "data/vq/librispeech_cuts_train-clean-100.jsonl.gz",
                "data/kd/librispeech_cuts_train-clean-100.jsonl.gz",
                "data/kd_pca/librispeech_cuts_train-clean-100.jsonl.gz"] + [
            f"data/fbank/librispeech_cuts_{p}.jsonl.gz"
            for p in ("train-clean-100", "dev-clean", "test-clean", "test-other")]:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(b"")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "calls.log"))
    return work, env, tmp_path / "calls.log"


def _calls(log: Path) -> list[dict]:
    """The fake's calls: pid, start / end times (ns), OMP threads and the argument string."""
    calls, ends = {}, {}
    for line in log.read_text().splitlines():
        kind, t, pid, *rest = line.split(" ", 4)
        if kind == "START":
            calls[pid] = {"start": int(t), "omp": rest[0].split("=")[1], "args": " " + rest[1] + " "}
        else:
            ends[pid] = int(t)
    for pid, c in calls.items():
        c["end"] = ends.get(pid)
    return list(calls.values())


def _exp_dir(call: dict) -> str:
    """The --exp-dir of one logged `mvqkd train` / `mvqkd decode` call."""
    return call["args"].split(" --exp-dir ")[1].split()[0]


def _run(script: str, args: list[str], work: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RECIPE / script), *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value, flag", [(None, None), ("true", " --kd-normalize "),
                                         ("false", " --no-kd-normalize ")])
def test_train_sh_l2_standardises_by_default_and_passes_only_overrides(fake_env, value, flag):
    from mvqkd.training.config import TrainConfig

    work, env, log = fake_env
    args = ["--systems", "l2", "--vocab-size", "256"]
    if value is not None:
        args += ["--kd-normalize", value]
    proc = _run("train.sh", args, work, env)
    assert proc.returncode == 0, proc.stderr
    (call,) = _calls(log)
    assert call["args"].startswith(" train ") and " --kd l2 " in call["args"]
    # nothing the user did not set: mvqkd train's own defaults apply (standardised targets)
    for opt in ("--kd-loss-scale", "--num-epochs", "--max-duration", "--model-size", "--seed"):
        assert opt not in call["args"]
    if flag is None:
        assert "kd-normalize" not in call["args"] and TrainConfig().kd_normalize is True
    else:
        assert flag in call["args"]


def test_train_sh_mvq_dec_regresses_the_decoded_indexes(fake_env):
    """mvq-dec: the MVQ-KD cuts, no codebook cross-entropy, the distill stage's quantizer."""
    work, env, log = fake_env
    args = ["--systems", "mvq-dec", "--vocab-size", "256", "--codebook-label-smoothing", "0.2"]
    proc = _run("train.sh", args, work, env)
    assert proc.returncode == 1 and "mvq-dec: quantizer not found: data/vq/quantizer.pt" in proc.stderr
    (work / "data/vq/quantizer.pt").write_bytes(b"")
    proc = _run("train.sh", args, work, env)
    assert proc.returncode == 0, proc.stderr
    (call,) = _calls(log)
    assert " --train-cuts data/vq/librispeech_cuts_train-clean-100.jsonl.gz " in call["args"]
    assert " --exp-dir exp/mvq-dec " in call["args"]
    assert " --kd mvq --codebook-loss-scale 0 --quantizer data/vq/quantizer.pt " in call["args"]
    assert "label-smoothing" not in call["args"]
    assert "--kd-loss-scale" not in call["args"]  # mvqkd train's default
    log.unlink()
    proc = _run("train.sh", args + ["--kd-loss-scale", "3", "--mvq-dec-loss-scale", "2.0"], work, env)
    (call,) = _calls(log)
    assert proc.returncode == 0 and " --kd-loss-scale 2.0 " in call["args"]  # its own scale wins


@pytest.mark.parametrize("extra, l2_scale, pca_scale", [
    ([], None, None),  # mvqkd train's default for both
    (["--kd-loss-scale", "3"], "3", "3"),  # l2-pca follows --kd-loss-scale
    (["--kd-loss-scale", "3", "--l2-pca-loss-scale", "0.25"], "3", "0.25"),  # its own scale wins
])
def test_train_sh_l2_pca_has_its_own_loss_scale(fake_env, extra, l2_scale, pca_scale):
    work, env, log = fake_env
    proc = _run("train.sh", ["--systems", "l2 l2-pca", "--vocab-size", "256", *extra], work, env)
    assert proc.returncode == 0, proc.stderr
    got = {_exp_dir(c).split("/")[-1]: c["args"] for c in _calls(log)}
    for system, scale in (("l2", l2_scale), ("l2-pca", pca_scale)):
        if scale is None:
            assert "--kd-loss-scale" not in got[system]
        else:
            assert got[system].count("--kd-loss-scale") == 1 and f" --kd-loss-scale {scale} " in got[system]


def test_train_sh_mvq_neighbour_smoothing_passes_the_quantizer(fake_env):
    """mvq with a smoothing temperature: the quantizer's codebooks, no decoded regression; with
    none (or 0), the plain MVQ-KD call."""
    work, env, log = fake_env
    args = ["--systems", "mvq", "--vocab-size", "256", "--codebook-label-smoothing", "0.2"]
    proc = _run("train.sh", args + ["--codebook-smoothing-temperature", "0.3"], work, env)
    assert proc.returncode == 1 and "needs the quantizer: not found: data/vq/quantizer.pt" in proc.stderr
    (work / "data/vq/quantizer.pt").write_bytes(b"")
    assert _run("train.sh", args + ["--codebook-smoothing-temperature", "0.3"], work, env).returncode == 0
    assert _run("train.sh", args + ["--codebook-smoothing-temperature", "0"], work, env).returncode == 0
    with_t, zero = (c["args"] for c in _calls(log))
    assert (" --codebook-label-smoothing 0.2 --codebook-smoothing-temperature 0.3 "
            "--quantizer data/vq/quantizer.pt --kd-loss-scale 0 ") in with_t
    assert "temperature" not in zero and "--quantizer" not in zero and "--kd-loss-scale" not in zero


def test_train_sh_mvq_geometry_head_passes_the_quantizer(fake_env):
    """mvq --codebook-head geometry: the quantizer once (also with a smoothing temperature),
    no decoded regression; linear: the plain call; anything else refused before training."""
    work, env, log = fake_env
    args = ["--systems", "mvq", "--vocab-size", "256"]
    proc = _run("train.sh", args + ["--codebook-head", "geometry"], work, env)
    assert proc.returncode == 1 and "--codebook-head geometry needs the quantizer: not found" in proc.stderr
    (work / "data/vq/quantizer.pt").write_bytes(b"")
    proc = _run("train.sh", args + ["--codebook-head", "nearest"], work, env)
    assert proc.returncode == 1 and "--codebook-head must be linear, geometry or residual, got 'nearest'" in proc.stderr
    for head in (["--codebook-head", "geometry"], ["--codebook-head", "linear"],
                 ["--codebook-head", "geometry", "--codebook-label-smoothing", "0.2",
                  "--codebook-smoothing-temperature", "0.3"], ["--codebook-head", "residual"]):
        assert _run("train.sh", args + head, work, env).returncode == 0
    geo, lin, both, res = (c["args"] for c in _calls(log))
    assert " --kd mvq --codebook-head residual --quantizer data/vq/quantizer.pt --kd-loss-scale 0 " in res
    assert " --kd mvq --codebook-head geometry --quantizer data/vq/quantizer.pt --kd-loss-scale 0 " in geo
    assert "--codebook-head" not in lin and "--quantizer" not in lin
    assert both.count("--quantizer ") == 1 and " --codebook-smoothing-temperature 0.3 --codebook-head geometry " in both


def test_train_sh_mvq_codebook_weighting(fake_env):
    """--codebook-weighting energy (and its --codebook-weighting-power) reaches mvqkd train with
    a geometry or residual head; with the linear head, an unknown weighting or a power without
    the energy weighting train.sh refuses before training; uniform (or unset) adds nothing."""
    work, env, log = fake_env
    (work / "data/vq").mkdir(parents=True, exist_ok=True)
    (work / "data/vq/quantizer.pt").write_bytes(b"")
    args = ["--systems", "mvq", "--vocab-size", "256"]
    for bad, why in ((["--codebook-weighting", "energy"], "it needs --codebook-head geometry or residual, got 'linear'"),
                     (["--codebook-head", "residual", "--codebook-weighting", "entropy"],
                      "--codebook-weighting must be uniform or energy, got 'entropy'"),
                     (["--codebook-head", "residual", "--codebook-weighting-power", "2"],
                      "--codebook-weighting-power raises the energy weights: it needs "
                      "--codebook-weighting energy, got 'uniform'")):
        proc = _run("train.sh", args + bad, work, env)
        assert proc.returncode == 1 and why in proc.stderr
    assert not log.exists()  # refused before anything ran
    for extra in (["--codebook-weighting", "energy"], ["--codebook-weighting", "uniform"], [],
                  ["--codebook-weighting", "energy", "--codebook-weighting-power", "2"]):
        assert _run("train.sh", args + ["--codebook-head", "residual"] + extra, work, env).returncode == 0
    energy, uniform, unset, power = (c["args"] for c in _calls(log))
    assert " --codebook-head residual --codebook-weighting energy --quantizer data/vq/quantizer.pt " in energy
    assert (" --codebook-head residual --codebook-weighting energy --codebook-weighting-power 2"
            " --quantizer data/vq/quantizer.pt ") in power
    assert "--codebook-weighting" not in uniform and uniform == unset


def test_train_sh_refuses_a_bad_kd_normalize(fake_env):
    work, env, log = fake_env
    proc = _run("train.sh", ["--systems", "l2", "--kd-normalize", "yes", "--vocab-size", "256"], work, env)
    assert proc.returncode == 1 and "--kd-normalize must be true or false, got 'yes'" in proc.stderr
    assert not log.exists()  # refused before anything ran


def test_train_sh_finds_the_one_bpe_model(fake_env):
    work, env, log = fake_env
    assert _run("train.sh", ["--systems", "baseline"], work, env).returncode == 0
    assert " --bpe-model data/lang_bpe_256/bpe.model " in _calls(log)[0]["args"]
    (work / "data/lang_bpe_500").mkdir()
    (work / "data/lang_bpe_500/bpe.model").write_bytes(b"")
    proc = _run("train.sh", ["--systems", "baseline"], work, env)
    assert proc.returncode == 1 and "several BPE models" in proc.stderr


def _max_overlap(calls: list[dict]) -> int:
    events = sorted([(c["start"], 1) for c in calls] + [(c["end"], -1) for c in calls])
    level = peak = 0
    for _, d in events:
        level += d
        peak = max(peak, level)
    return peak


def test_run_sh_trains_and_decodes_every_student_two_at_a_time(fake_env):
    work, env, log = fake_env
    (work / "data/vq").mkdir(parents=True, exist_ok=True)
    (work / "data/vq/quantizer.pt").write_bytes(b"")  # mvq-dec reads it at training time
    proc = _run("run.sh", ["--stage", "5", "--stop-stage", "6"], work, env)
    assert proc.returncode == 0, proc.stderr
    calls = _calls(log)
    train = [c for c in calls if c["args"].startswith(" train ")]
    decode = [c for c in calls if c["args"].startswith(" decode ")]
    assert len(train) == 10 and len(decode) == 10  # 5 systems x seeds 1 2
    assert all(c["end"] is not None and c["omp"] == "1" for c in calls)
    assert _max_overlap(calls) == 2  # trainings and decodes share one pool of two
    # each student is decoded after its own training, and the decodes queue behind every training
    trained = {_exp_dir(c): c["end"] for c in train}
    assert all(c["start"] > trained[_exp_dir(c)] for c in decode)
    assert max(c["start"] for c in train) < min(c["start"] for c in decode)
    assert (work / "exp/stage_times.tsv").read_text().split("\t")[0] == "students+decode"
    for seed in (1, 2):
        mine = {_exp_dir(c).split("/")[-1]: c["args"] for c in train
                if f" --exp-dir exp/seed{seed}/" in c["args"]}
        assert set(mine) == {"baseline", "mvq", "mvq-dec", "l2", "l2-pca"}
        assert " --kd none " in mine["baseline"] and " --kd mvq " in mine["mvq"]
        assert " --kd mvq " in mine["mvq-dec"] and " --codebook-loss-scale 0 " in mine["mvq-dec"]
        assert " --quantizer data/vq/quantizer.pt " in mine["mvq-dec"]
        assert (" --codebook-head residual --codebook-weighting energy --codebook-weighting-power 2"
                " --quantizer data/vq/quantizer.pt --kd-loss-scale 0 ") in mine["mvq"]
        assert " --kd-loss-scale 2.0 " in mine["mvq-dec"]  # its own scale, not the float systems'
        assert "--kd-loss-scale" not in mine["baseline"]
        assert " --kd-loss-scale 1.0 " in mine["l2"] and " --kd-loss-scale 0.25 " in mine["l2-pca"]
        # every student gets the demo's 32-channel front-end (table W), whatever its system
        assert all(" --model-override subsampling_channels=32 " in a for a in mine.values())
        assert not any("--codebook-head" in mine[m] or "--codebook-weighting" in mine[m]
                       for m in ("baseline", "mvq-dec", "l2", "l2-pca"))
        assert " --kd l2 " in mine["l2"] and " --kd l2 " in mine["l2-pca"] and "data/kd_pca/" in mine["l2-pca"]
        assert all(" --sigma-reparam " in a and " --no-spec-augment " in a for a in mine.values())
        assert all(" --valid-every 0 " in a for a in mine.values())  # dev loss after the last epoch
        assert "kd-normalize" not in mine["l2"]  # mvqkd train's default: standardised
        assert " --codebook-loss-scale 0.04 " in mine["mvq"] and " --codebook-label-smoothing 0.1 " in mine["mvq"]
        assert "label-smoothing" not in mine["l2"] + mine["baseline"]
        assert f" --seed {seed} " in mine["baseline"] and "data/kd/" in mine["l2"]
    dirs = sorted(_exp_dir(c) for c in decode)
    assert dirs == sorted(f"exp/seed{s}/{m}" for s in (1, 2) for m in ("baseline", "mvq", "mvq-dec", "l2", "l2-pca"))
    assert all(" --epoch 5 " in c["args"] and " --avg 1 " in c["args"] and " --use-averaged-model " in c["args"]
               for c in decode)
    assert all(" --average-period 10 " in c["args"] for c in train)
    assert all((work / d / "decode.out").is_file() for d in dirs)
    # a re-run skips the trained students
    log.unlink()
    proc = _run("run.sh", ["--stage", "5", "--stop-stage", "5"], work, env)
    assert proc.returncode == 0 and not log.exists()
    assert proc.stdout.count("already trained") == 10


def test_run_sh_results_read_the_decode_of_its_own_checkpoints(fake_env):
    """Stage 7 names the checkpoints stage 6 decoded (epoch, avg), so a folder that also holds
    a decode with other checkpoints (a re-run with another --decode-avg) is read right."""
    work, env, log = fake_env
    proc = _run("run.sh", ["--stage", "7", "--stop-stage", "7", "--decode-avg", "2",
                           "--decode-averaged-model", "false"], work, env)
    assert proc.returncode == 0, proc.stderr
    (summarize,) = [c["args"] for c in _calls(log) if c["args"].startswith(" summarize ")]
    assert " --checkpoints epoch-5-avg-2 " in summarize and " --method modified_beam_search " in summarize
    assert "averaged" not in summarize


def test_run_sh_decodes_and_reads_the_averaged_model_when_asked(fake_env):
    work, env, log = fake_env
    for s in (1, 2):
        for m in ("baseline", "mvq"):
            (work / f"exp/seed{s}/{m}").mkdir(parents=True)
    proc = _run("run.sh", ["--stage", "6", "--stop-stage", "7", "--systems", "baseline mvq",
                           "--decode-avg", "3", "--decode-averaged-model", "true"], work, env)
    assert proc.returncode == 0, proc.stderr
    calls = [c["args"] for c in _calls(log)]
    decode = [a for a in calls if a.startswith(" decode ")]
    assert len(decode) == 4 and all(" --avg 3 " in a and " --use-averaged-model " in a for a in decode)
    (summarize,) = [a for a in calls if a.startswith(" summarize ")]
    assert " --checkpoints epoch-5-avg-3 --use-averaged-model " in summarize


@pytest.mark.parametrize("flag, want", [(None, "1"), ("true", "1"), ("false", "0")])
def test_run_sh_portable_kernels_reach_every_command(fake_env, flag, want):
    work, env, log = fake_env
    seen = log.with_name("portable.log")
    fake = Path(env["PATH"].split(":")[0]) / "mvqkd"
    record = f'echo "[${{MVQKD_PORTABLE_KERNELS:-}}]" >> {seen}'
    fake.write_text(fake.read_text().replace("sleep 0.3", record))
    args = ["--stage", "7", "--stop-stage", "7"] + (["--portable-kernels", flag] if flag else [])
    proc = _run("run.sh", args, work, env)
    assert proc.returncode == 0, proc.stderr
    assert seen.read_text().split() == [f"[{want}]"]
    recorded = (work / "exp" / "environment.txt").read_text()  # what the run's floats depend on
    assert "cpu flags:" in recorded and f"MVQKD_PORTABLE_KERNELS={want} " in recorded and "packages:" in recorded
    bad = _run("run.sh", ["--stage", "7", "--stop-stage", "7", "--portable-kernels", "yes"], work, env)
    assert bad.returncode != 0 and "--portable-kernels must be true or false" in bad.stderr


@pytest.mark.parametrize("flag, inherited, want", [(None, "1", "1"), (None, None, ""), ("true", "0", "1"),
                                                   ("false", "1", "0")])
def test_mycorpus_portable_kernels_reach_every_command(fake_env, flag, inherited, want):
    """recipes/mycorpus/run.sh --portable-kernels true|false; without it the environment's value."""
    work, env, log = fake_env
    env = {k: v for k, v in env.items() if k != "MVQKD_PORTABLE_KERNELS"}
    if inherited is not None:
        env["MVQKD_PORTABLE_KERNELS"] = inherited
    seen = log.with_name("portable.log")
    fake = Path(env["PATH"].split(":")[0]) / "mvqkd"
    fake.write_text(fake.read_text().replace("sleep 0.3", f'echo "$1 [${{MVQKD_PORTABLE_KERNELS:-}}]" >> {seen}'))
    (work / "train.jsonl.gz").write_bytes(b"")
    (work / "dev.jsonl.gz").write_bytes(b"")
    args = ["--stage", "0", "--stop-stage", "1", "--train", "train.jsonl.gz", "--dev", "dev.jsonl.gz"]
    proc = subprocess.run(["bash", str(RECIPE.parent / "mycorpus" / "run.sh"), *args,
                           *(["--portable-kernels", flag] if flag else [])],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert seen.read_text().splitlines() == [f"compute-fbank [{want}]"] * 2 + [f"train-bpe [{want}]"]
    assert f"MVQKD_PORTABLE_KERNELS={want} " in (work / "exp" / "environment.txt").read_text()
    bad = subprocess.run(["bash", str(RECIPE.parent / "mycorpus" / "run.sh"), *args, "--portable-kernels", "yes"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--portable-kernels must be true or false, got 'yes'" in bad.stderr


def test_run_sh_reports_a_failed_decode(fake_env):
    work, env, log = fake_env
    for s in (1, 2):
        for m in ("baseline", "mvq", "mvq-dec", "l2", "l2-pca"):
            (work / f"exp/seed{s}/{m}").mkdir(parents=True)
    env["FAKE_FAIL"] = "--exp-dir exp/seed2/mvq "
    proc = _run("run.sh", ["--stage", "6", "--stop-stage", "6"], work, env)
    assert proc.returncode != 0
    assert "stage 6 failed for Stage 6: decode mvq seed 2 (log: exp/seed2/mvq/decode.out)" in proc.stderr
    assert len([c for c in _calls(log) if c["args"].startswith(" decode ")]) == 10  # the rest ran


def test_run_sh_does_not_decode_a_student_whose_training_failed(fake_env):
    work, env, log = fake_env
    (work / "data/vq").mkdir(parents=True, exist_ok=True)
    (work / "data/vq/quantizer.pt").write_bytes(b"")
    env["FAKE_FAIL"] = "--exp-dir exp/seed1/l2 "
    proc = _run("run.sh", ["--stage", "5", "--stop-stage", "6"], work, env)
    assert proc.returncode != 0
    assert "stage 5 and 6 failed for Stage 5: l2 seed 1 (log: exp/seed1/l2/train.out)" in proc.stderr
    assert "not decoding exp/seed1/l2: its training failed" in proc.stdout
    calls = _calls(log)
    decoded = [_exp_dir(c) for c in calls if c["args"].startswith(" decode ")]
    assert len(decoded) == 9 and "exp/seed1/l2" not in decoded  # the other students ran on
    assert len([c for c in calls if c["args"].startswith(" train ")]) == 10


def test_run_sh_budgets_are_counts_not_seconds(fake_env):
    """No wall-clock budget in the recipe defaults: the teacher stops on --max-steps, the
    quantizer on --iters (issue: the same command gives the same models on any machine)."""
    work, env, log = fake_env
    (work / "exp/teacher").mkdir(parents=True)
    (work / "exp/teacher/config.json").write_text("{}")
    proc = _run("run.sh", ["--stage", "2", "--stop-stage", "4", "--teacher-steps", "30",
                           "--quantizer-iters", "2"], work, env)
    assert proc.returncode == 0, proc.stderr
    calls = [c["args"] for c in _calls(log)]
    assert not any("--time-budget" in c for c in calls)
    (teacher,) = [c for c in calls if c.startswith(" finetune-teacher ")]
    assert " --max-steps 30 " in teacher and " --num-threads 2 " in teacher
    (quantizer,) = [c for c in calls if c.startswith(" train-quantizer ")]
    assert " --iters 2 " in quantizer
    (pca,) = [c for c in calls if c.startswith(" reduce-embeddings ")]  # the equal-storage control
    assert " --dims 4 " in pca and " --out-dir data/kd_pca " in pca  # 8 codebooks = 8 bytes = 4 float16
    assert (work / "exp/stage_times.tsv").read_text().split("\n")[0].split("\t")[0] == "teacher"


def test_run_sh_needs_the_running_mean_it_decodes(fake_env):
    work, env, log = fake_env
    proc = _run("run.sh", ["--stage", "5", "--stop-stage", "6", "--average-period", "0"], work, env)
    assert proc.returncode != 0 and "--average-period N (> 0)" in proc.stderr
    assert not log.exists() or not [c for c in _calls(log) if c["args"].startswith(" train ")]
    proc = _run("run.sh", ["--stage", "5", "--stop-stage", "5", "--systems", "baseline", "--seeds", "1",
                           "--average-period", "0", "--decode-averaged-model", "false"], work, env)
    assert proc.returncode == 0, proc.stderr
    (train,) = [c["args"] for c in _calls(log) if c["args"].startswith(" train ")]
    assert " --average-period 0" in train  # explicit: mvqkd train's own default averages
