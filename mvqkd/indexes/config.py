"""Options of ``mvqkd extract`` and ``mvqkd dump-embeddings`` (standard library only: the CLI
builds its parser from these dataclasses, and :func:`mvqkd.indexes.run.run_extraction`
takes the same names as keyword arguments)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mvqkd.conventions import CHUNK_MODES
from mvqkd.options import opt

DTYPES = ["auto", "float32", "float16", "bfloat16"]


@dataclass
class TeacherRunOptions:
    """Which cuts go through which teacher layer, and how."""

    cuts: str = opt("", required=True, help="lhotse cuts manifest with recordings (e.g. fbank cuts)")
    teacher: str = opt("", required=True,
                       help="teacher checkpoint directory (HuBERT/WavLM/wav2vec2, save_pretrained layout)")
    layer: int = opt(0, required=True, help="1-based transformer layer (its output; icefall's "
                                            "--embedding-layer); 0 = input to the first layer")
    max_duration: float = opt(60.0, "seconds of (padded) audio per teacher batch")
    device: str = opt("auto", "torch device: auto (cuda when torch sees a GPU, else cpu), cpu, cuda:0 ...")
    dtype: str = opt("auto", "teacher precision: auto = float32 (half precision changes ~6%% of the "
                             "additive quantizer's codes; bfloat16 / float16 on request)",
                     choices=DTYPES)
    chunk_seconds: float = opt(60.0, "utterances longer than this run through the teacher in chunks "
                                     "of this length (--chunk-mode), so that memory does not grow with "
                                     "the recording as a whole-file pass's does (hour-long files); "
                                     "shorter ones run whole")
    chunk_overlap: float = opt(5.0, "seconds of context on each side of a window, discarded at the "
                                    "seams (--chunk-mode windows)")
    chunk_mode: str = opt(CHUNK_MODES[0], "how utterances longer than --chunk-seconds run: windows = the "
                                     "whole teacher on overlapping windows (time linear in the length; "
                                     "frames close to, not equal to, a whole-file pass: attention cannot "
                                     "see past a window); front-end = only the CNN front-end in chunks "
                                     "and the transformer over the whole recording (frames equal to a "
                                     "whole-file pass; memory grows with frames x hidden size, attention "
                                     "time with the square of the length; not WavLM / Whisper)",
                          choices=list(CHUNK_MODES))


@dataclass
class StoreOptions:
    """Where and how a whole cut set is written (the resumable shard store)."""

    out_dir: str | None = opt(None, "store directory: shards/, plan.json, cuts.jsonl.gz, "
                                    "failed_cuts.jsonl")
    num_workers: int = opt(1, "local worker processes (each takes every W-th shard; on GPU, worker "
                              "g uses cuda:(g %% device count)). Under torchrun each rank runs this many")
    shard_size: int = opt(200, "cuts per shard: the unit of resume and of parallel work")
    join_onto: str | None = opt(None, "cuts manifest (e.g. fbank cuts) to attach the arrays to by cut "
                                      "id; the output then holds those cuts")
    out_manifest: str | None = opt(None, "output manifest (default: OUT_DIR/cuts.jsonl.gz)")
    report: str | None = opt(None, "per-cut failure report, JSON lines (default: "
                                   "OUT_DIR/failed_cuts.jsonl)")
    max_failed_cuts: int = opt(0, "exit status 0 while at most this many cuts failed (they are "
                                  "listed in the report and left out of the manifest); 1 above")
    retry_failed: bool = opt(False, "re-extract the shards that have failed cuts (e.g. after "
                                    "their audio became readable); the other shards are kept")


@dataclass
class ExtractConfig(TeacherRunOptions, StoreOptions):
    out_dir: str = opt("", required=True, help="store directory: shards/, plan.json, cuts.jsonl.gz, "
                                               "failed_cuts.jsonl")
    quantizer: str = opt("", required=True, help="quantizer file from train-quantizer")
    compression: str | None = opt(None, "lossless HDF5 compression of the shards", choices=["gzip", "lzf"])


@dataclass
class DumpConfig(TeacherRunOptions, StoreOptions):
    out: str | None = opt(None, "subset mode: output HDF5 file")
    max_utts: int | None = opt(None, "subset mode: at most this many cuts")
    max_frames: int | None = opt(None, "subset mode: stop after this many frames")
    seed: int = opt(0, "subset mode: random seed of the selection")
    all: bool = opt(False, "every cut, as float16 teacher_embeddings in a store (--out-dir)")


def store_kwargs(cfg) -> dict:
    """The keyword arguments of :func:`mvqkd.indexes.run.run_extraction` in ``cfg``."""
    names = {f.name for f in fields(StoreOptions)} | {"max_duration", "device", "dtype", "compression",
                                                      "chunk_seconds", "chunk_overlap",
                                                      "chunk_mode"}
    return {k: v for k, v in asdict(cfg).items() if k in names and k not in ("out_dir", "max_failed_cuts")}
