"""Options of ``mvqkd decode`` (standard library only: the CLI builds its parser from this
dataclass; :func:`mvqkd.decode.decode.run_decode` takes it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvqkd.options import USE_AVERAGED_MODEL_HELP, name_path, opt

#: the search methods of :mod:`mvqkd.decode.search` (checked against it by a test)
METHODS = ("greedy_search", "modified_beam_search", "fast_beam_search")
#: modified_beam_search's beam, and fast_beam_search's limits (icefall's recipes decode with
#: --beam 4 --max-contexts 4 --max-states 8 without an LM graph); the search functions take
#: their defaults from here
BEAM_SIZE = 4
FAST_BEAM_DEFAULTS = {"beam": 4.0, "max_contexts": 4, "max_states": 8}
#: ``mvqkd transcribe``: the longest stretch of a file the encoder sees at once (seconds); a
#: longer file is cut at its quietest moments (:func:`mvqkd.decode.transcribe.segment_bounds`),
#: so memory stays bounded (self-attention grows with the square of the length) and the model
#: sees utterance-like inputs, as in training (LibriSpeech's are at most 35 s)
MAX_SEGMENT_SECONDS = 30.0
#: ``mvqkd decode``: the same for a cut (a test set's cuts are utterances, and LibriSpeech's,
#: at most 35 s, are never cut; a cut of a whole lecture or meeting is)
DECODE_MAX_SEGMENT_SECONDS = 60.0


def method_list(values) -> list[str]:
    """``--method`` values, with ``all`` expanded; unknown names are an error naming them."""
    out = []
    for v in values:
        for m in (METHODS if v == "all" else (v,)):
            if m not in METHODS:
                raise ValueError(f"--method {m!r}: choose from {', '.join(METHODS)} or all")
            if m not in out:
                out.append(m)
    return out


@dataclass
class DecodeConfig:
    cuts: list = opt(default_factory=list, required=True, nargs="+", type=name_path, metavar="NAME=PATH",
                     help="test sets: a name (used in output file names) and a feature-cut manifest, "
                          "e.g. test-clean=data/fbank/librispeech_cuts_test-clean.jsonl.gz")
    exp_dir: str = opt("", help="training directory holding epoch-E.pt / checkpoint-STEP.pt (or give "
                               "--checkpoint)")
    checkpoint: str | None = opt(None, "decode this one checkpoint file (e.g. from "
                                       "average-checkpoints) instead of selecting in --exp-dir")
    epoch: int | None = opt(None, "decode with epoch files epoch-(E-avg+1).pt ... epoch-E.pt averaged "
                                  "(default: the newest)")
    iteration: int | None = opt(None, "decode with the --avg newest checkpoint-STEP.pt with STEP <= "
                                      "ITER averaged", flag="--iter")
    avg: int = opt(1, "number of checkpoints to average")
    use_averaged_model: bool = opt(False, f"decode {USE_AVERAGED_MODEL_HELP}; the file suffix ends "
                                          "in -use-averaged-model")
    bpe_model: str = opt("", help="sentencepiece model (default: the one stored in the checkpoint "
                                  "by mvqkd train; needed for checkpoints of mvqkd < 0.2)")
    method: list = opt(default_factory=lambda: ["greedy_search"], nargs="+", metavar="METHOD",
                       help=f"one or more of {', '.join(METHODS)}, or all: greedy_search (1 symbol "
                            "per frame), modified_beam_search (icefall's, --beam-size) or "
                            "fast_beam_search (icefall's with the trivial graph, one best, in "
                            "PyTorch: --beam, --max-contexts, --max-states)")
    beam_size: int = opt(BEAM_SIZE, "beam of modified_beam_search")
    beam: float = opt(FAST_BEAM_DEFAULTS["beam"], "fast_beam_search: log-prob beam; states further "
                      "below the best are pruned after each frame")
    max_contexts: int = opt(FAST_BEAM_DEFAULTS["max_contexts"],
                            "fast_beam_search: decoder contexts kept per frame")
    max_states: int = opt(FAST_BEAM_DEFAULTS["max_states"], "fast_beam_search: states kept per "
                          "frame; with the trivial graph a state is a context, so "
                          "min(--max-contexts, --max-states) applies")
    max_duration: float = opt(300.0, "seconds of audio per decoding batch")
    max_segment_seconds: float = opt(DECODE_MAX_SEGMENT_SECONDS,
                                     "a cut with audio longer than this is cut at its pauses into "
                                     "segments of at most this length, decoded one by one and joined "
                                     "(bounded memory for hour-long cuts); 0: every cut whole")
    device: str = opt("cpu", "torch device, e.g. cpu or cuda:0")
    out_dir: str | None = opt(None, "where the result files go (default: EXP_DIR/METHOD)")
    cer: bool = opt(False, "also write the character error rate (errs-cer-*, cer-summary-*)")

    def check(self) -> None:
        """Usage errors, before any model is loaded (ValueError / FileNotFoundError)."""
        if not self.exp_dir and not self.checkpoint:
            raise ValueError("give --exp-dir (checkpoints selected by --epoch / --iter / --avg) or "
                             "--checkpoint FILE")
        if self.use_averaged_model and self.checkpoint:
            raise ValueError("--use-averaged-model reads two checkpoints of --exp-dir (their running "
                             "means); it cannot be used with --checkpoint")
        from mvqkd.decode.segments import check_max_segment_seconds

        check_max_segment_seconds(self.max_segment_seconds)
        if self.checkpoint and not Path(self.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint not found: {self.checkpoint}")
        names = [n for n, _ in self.cuts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"--cuts: set name(s) given twice: {', '.join(dup)}")
        if not self.beam > 0 or self.max_contexts < 1 or self.max_states < 1:
            raise ValueError(f"--beam must be > 0 and --max-contexts / --max-states >= 1, got "
                             f"{self.beam}, {self.max_contexts}, {self.max_states}")
        self.method = method_list(self.method)
        for name, path in self.cuts:
            if not Path(path).is_file():
                raise FileNotFoundError(f"--cuts {name}: manifest not found: {path}")
        if self.bpe_model and not Path(self.bpe_model).is_file():
            raise FileNotFoundError(f"--bpe-model not found: {self.bpe_model}")

    def search_opts(self) -> dict:
        return dict(beam=self.beam, max_contexts=self.max_contexts, max_states=self.max_states)
