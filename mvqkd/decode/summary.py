"""``mvqkd summarize``: a demo run's markdown WER table and a PNG with training curves and WER bars.

Reads, under ``--exp-root`` (``RUN`` = ``seed<K>/<system>`` for each ``--seeds K``, or
``<system>`` without ``--seeds``):
- ``RUN/<method>/wer-summary-<set>.txt`` (written by ``mvqkd decode``);
- ``RUN/tensorboard`` event files (``train/rnnt``, ``valid/rnnt``...);
- ``teacher/teacher_wer.json`` (``mvqkd finetune-teacher``), when present;
- ``stage_times.tsv`` (``run.sh`` writes ``stage<TAB>seconds``), when present;
and the teacher-label stores given by ``--store NAME=DIR`` (bytes on disk, hours of audio).

Usage: mvqkd summarize --exp-root exp [--systems baseline mvq l2] [--seeds 1 2]
           [--method greedy_search] [--store mvq=data/vq --store l2=data/kd] [--out exp/results]
Prints the markdown and writes OUT.md and OUT.png. WERs are the mean over the seeds (each
seed's value in brackets); "vs baseline" divides mean test-clean WERs, "vs L2-KD" too (on
test-clean and on dev-clean).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from mvqkd.data.files import find_files
from mvqkd.decode.results import read_wer

TEST_SETS = ("test-clean", "test-other", "dev-clean")
LABELS = {"baseline": "baseline (no KD)", "mvq": "MVQ-KD (codebook indexes)",
          "mvq-dec": "MVQ-KD, decoded regression (the same indexes)",
          "l2": "L2-KD (standardised float embeddings)",
          "l2-pca": "L2-KD at the indexes' storage (PCA, float16)"}


def read_scalars(exp_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All tensorboard scalars under ``exp_dir``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in find_files(exp_dir, "events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(v) for tag, v in out.items()}


def store_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in find_files(folder, "*.h5"))


def manifest_hours(folder: Path) -> float:
    from lhotse import load_manifest_lazy

    manifests = sorted(folder.glob("*cuts*.jsonl.gz"))
    return sum(c.duration for m in manifests for c in load_manifest_lazy(m)) / 3600 if manifests else 0.0


def run_dirs(exp_root: Path, system: str, seeds: list[str] | None) -> list[Path]:
    """The experiment folders of ``system``: one per seed, or ``exp_root/system``."""
    return [exp_root / f"seed{k}" / system for k in seeds] if seeds else [exp_root / system]


def find_summary(folder: Path, test_set: str, suffix: str | None = None,
                 checkpoints: str | None = None, averaged: bool = False) -> Path | None:
    """``wer-summary-<set>-<suffix>.txt`` in ``folder``; with ``checkpoints`` (the suffix's
    leading ``epoch-E-avg-A`` / ``iter-N-avg-A``) the only summary of the set decoded from
    those checkpoints, with the averaged model (suffix ending ``-use-averaged-model``) or
    without it as ``averaged`` says; with neither, the only summary of the set there.
    Several candidates: an error asking for the suffix. None when there is none."""
    if suffix:
        path = folder / f"wer-summary-{test_set}-{suffix}.txt"
        return path if path.is_file() else None
    if checkpoints:
        found = [p for p in sorted(folder.glob(f"wer-summary-{test_set}-{checkpoints}-*.txt"))
                 if p.stem.endswith("-use-averaged-model") == averaged]
    else:
        found = sorted(folder.glob(f"wer-summary-{test_set}-*.txt")) + sorted(
            folder.glob(f"wer-summary-{test_set}.txt"))
    if len(found) > 1:
        raise ValueError(f"{folder}: several decodes of {test_set} ({', '.join(p.name for p in found)}); "
                         "pass --suffix to choose one")
    return found[0] if found else None


def mean_wers(exp_root: Path, systems: list[str], seeds: list[str] | None, method: str,
              suffix: str | None = None, checkpoints: str | None = None,
              averaged: bool = False) -> dict[str, dict[str, list[float]]]:
    """system -> set -> [WER of each run that has one]."""
    out = {}
    for s in systems:
        out[s] = {}
        for t in TEST_SETS:
            paths = [find_summary(d / method, t, suffix, checkpoints, averaged)
                     for d in run_dirs(exp_root, s, seeds)]
            out[s][t] = [w for p in paths if p and (w := read_wer(p)) is not None]
    return out


def _cell(values: list[float], n_runs: int) -> str:
    if not values:
        return "-"
    text = f"{statistics.mean(values):.2f}"
    if n_runs > 1:
        text += " (" + ", ".join(f"{v:.2f}" for v in values) + ")"
    return text


def _ratio(wers: dict, a: str, b: str, test_set: str = "test-clean") -> str:
    x, y = wers.get(a, {}).get(test_set), wers.get(b, {}).get(test_set)
    return f"{statistics.mean(x) / statistics.mean(y):.3f}x" if x and y else "-"


def summarize(exp_root: Path, systems: list[str], method: str, stores: dict[str, Path],
              seeds: list[str] | None = None, suffix: str | None = None,
              checkpoints: str | None = None, averaged: bool = False) -> tuple[str, dict]:
    wers = mean_wers(exp_root, systems, seeds, method, suffix, checkpoints, averaged)
    n_runs = len(seeds) if seeds else 1
    runs = f", mean of seeds {' '.join(seeds)} (each seed)" if seeds and len(seeds) > 1 else ""
    lines = [f"| system ({method}{runs}) | " + " | ".join(TEST_SETS)
             + " | test-clean vs baseline | test-clean vs L2-KD | dev-clean vs L2-KD |",
             "|---|" + "---|" * (len(TEST_SETS) + 3)]
    for s in systems:
        cells = [_cell(wers[s][t], n_runs) for t in TEST_SETS]
        lines.append(f"| {LABELS.get(s, s)} | " + " | ".join(cells)
                     + f" | {_ratio(wers, s, 'baseline')} | {_ratio(wers, s, 'l2')} "
                     f"| {_ratio(wers, s, 'l2', 'dev-clean')} |")
    teacher = exp_root / "teacher" / "teacher_wer.json"
    if teacher.is_file():
        tw = json.loads(teacher.read_text())
        flat = {k: (v["wer"] if isinstance(v, dict) else v) for k, v in tw.items()}
        flat.setdefault("dev-clean", flat.get("dev"))  # finetune-teacher names its dev set "dev"
        lines.append("| teacher (CTC greedy) | " + " | ".join(
            f"{flat[t]:.2f}" if isinstance(flat.get(t), (int, float)) else "-" for t in TEST_SETS)
            + " | - | - | - |")
    md = "\n".join(lines) + "\n"
    missing = {name: folder for name, folder in stores.items() if not folder.exists()}
    stores = {name: folder for name, folder in stores.items() if name not in missing}
    if stores:
        md += "\n| teacher labels | bytes on disk | hours of audio | MB per hour |\n|---|---|---|---|\n"
        folders = set(stores.values())  # mvq and mvq-dec read the same indexes: measure them once
        size_of = {f: store_size(f) for f in folders}
        hours_of = {f: manifest_hours(f) for f in folders}
        sizes = {name: size_of[folder] for name, folder in stores.items()}
        for name, folder in stores.items():
            size, hours = sizes[name], hours_of[folder]
            md += f"| {name} ({folder}) | {size:,} | {hours:.2f} | {size / 1e6 / hours if hours else 0:.2f} |\n"
        if sizes.get("mvq"):
            md += "\n" + "".join(f"{name} labels take {sizes[name] / sizes['mvq']:.2f}x the bytes of the MVQ "
                                  "indexes.\n" for name in sizes if name != "mvq" and sizes[name])
    if missing:  # a store this run did not build (e.g. `run.sh --systems mvq`): no row of zeros
        md += "\n" + "".join(f"{name} labels: {folder} not found, not listed.\n"
                              for name, folder in missing.items())
    times = exp_root / "stage_times.tsv"
    if times.is_file():
        md += "\n| stage | wall time (min) |\n|---|---|\n"
        for line in times.read_text().splitlines():
            stage, sec = line.split("\t")
            md += f"| {stage} | {float(sec) / 60:.1f} |\n"
    return md, wers


def plot(exp_root: Path, systems: list[str], wers: dict, out_png: Path,
         seeds: list[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, s in enumerate(systems):
        for j, run in enumerate(run_dirs(exp_root, s, seeds)):
            scalars = read_scalars(run)
            for ax, tag in ((axes[0], "train/rnnt"), (axes[1], "valid/rnnt")):
                if tag in scalars:
                    steps, vals = zip(*scalars[tag])
                    ax.plot(steps, vals, color=f"C{i}", alpha=1.0 if j == 0 else 0.5,
                            label=LABELS.get(s, s) if j == 0 else None,
                            marker="." if tag.startswith("valid") else None)
    axes[0].set_title("training RNN-T loss (each seed)")
    axes[1].set_title("validation RNN-T loss (dev-clean)")
    for ax in axes[:2]:
        ax.set_xlabel("step")
        ax.legend()
    width = 0.8 / max(1, len(systems))
    top = 0.0
    for i, s in enumerate(systems):
        vals = [statistics.mean(wers[s][t]) if wers[s][t] else 0.0 for t in TEST_SETS[:2]]
        bars = axes[2].bar([x + i * width for x in range(2)], vals, width, label=LABELS.get(s, s))
        axes[2].bar_label(bars, fmt="%.1f", fontsize=8)
        top = max([top, *vals])
    axes[2].set_ylim(0, max(top, 1.0) * 1.45)  # headroom: the legend sits above the bars
    axes[2].set_xticks([x + width * (len(systems) - 1) / 2 for x in range(2)], TEST_SETS[:2])
    axes[2].set_ylabel("WER (%)")
    axes[2].set_title("WER (mean over seeds)" if seeds and len(seeds) > 1 else "WER")
    axes[2].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)


def write_summary(exp_root: Path, systems: list[str], method: str, stores: dict[str, Path],
                  seeds: list[str] | None = None, out: Path | None = None,
                  suffix: str | None = None, checkpoints: str | None = None,
                  averaged: bool = False) -> tuple[str, Path]:
    """Write ``OUT.md`` and ``OUT.png`` (default ``EXP_ROOT/results``); returns (markdown, OUT)."""
    out = out or exp_root / "results"
    md, wers = summarize(exp_root, systems, method, stores, seeds, suffix, checkpoints, averaged)
    out.with_suffix(".md").write_text(md)
    plot(exp_root, systems, wers, out.with_suffix(".png"), seeds)
    return md, out
