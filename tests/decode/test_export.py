"""Deployment: a trained tiny student exported to ONNX runs in sherpa-onnx (the real client,
its own fbank) and gives mvqkd's greedy hypotheses; ``mvqkd transcribe`` reads every audio
format in tests/data, from a checkpoint and from the export alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf
from lhotse import CutSet

from mvqkd.cli import main as cli
from tests.conftest import TEST_AUDIO

sherpa_onnx = pytest.importorskip("sherpa_onnx")  # in the dev extra; CI installs it


@pytest.fixture(scope="module")
def student(prepared_data, tmp_path_factory):
    """A tiny student checkpoint written by mvqkd train (one step at a tiny learning rate: still
    close to its random init, so its hypotheses are long and varied, a demanding comparison),
    its export and its test set."""
    from mvqkd.training.student import train

    exp = tmp_path_factory.mktemp("export") / "exp"
    fbank = prepared_data / "fbank"
    train(dict(train_cuts=str(fbank / "librispeech_cuts_train-clean-100.jsonl.gz"),
               bpe_model=str(prepared_data / "lang_bpe_100" / "bpe.model"), exp_dir=str(exp), kd="none",
               model_size="tiny", num_epochs=1, max_steps=1, max_duration=20, num_workers=0,
               save_every_n=0, warmup_steps=1, lr=1e-6, tensorboard=False, device="cpu"))
    ckpt = exp / "checkpoint-1.pt"
    assert cli(["export-onnx", "--checkpoint", str(ckpt), "--out-dir", str(exp / "onnx"), "--int8"]) == 0
    return ckpt, exp / "onnx", fbank / "librispeech_cuts_test-clean.jsonl.gz"


def sherpa_decode(onnx_dir: Path, files, method="greedy_search"):
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(onnx_dir / "encoder.onnx"), decoder=str(onnx_dir / "decoder.onnx"),
        joiner=str(onnx_dir / "joiner.onnx"), tokens=str(onnx_dir / "tokens.txt"), num_threads=1,
        decoding_method=method)
    out = []
    for f in files:
        samples, sr = sf.read(f, dtype="float32", always_2d=True)
        stream = rec.create_stream()
        stream.accept_waveform(sr, samples.mean(1))
        rec.decode_stream(stream)
        out.append(stream.result.text.strip())
    return out


def test_sherpa_onnx_gives_mvqkd_greedy_hypotheses(student, tmp_path, capsys):
    from mvqkd.decode.decode import decode_dataset
    from mvqkd.decode.transcribe import load_recogniser

    ckpt, onnx_dir, test_cuts = student
    cuts = CutSet.from_file(test_cuts).subset(first=4)
    files = [c.recording.sources[0].source for c in cuts] + [str(TEST_AUDIO / "2412-153948-0000.flac")]
    model, sp = load_recogniser(ckpt)
    # mvqkd decode's greedy search on the test cuts (from their audio: the stored fbank is
    # lilcom-compressed, a small loss that a near-random model may notice) ...
    raw = CutSet.from_cuts(c.drop_features() for c in cuts)
    decoded = {cid: " ".join(hyp) for cid, _, hyp in decode_dataset(model, raw, sp)}
    mine = [decoded[c.id] for c in cuts]
    # ... and mvqkd transcribe on the FLAC files (16 kHz: no resampler in between)
    assert cli(["transcribe", "--model", str(ckpt), *files]) == 0
    transcribed = [line.split("\t", 1)[1] for line in capsys.readouterr().out.rstrip("\n").split("\n")]
    assert transcribed[:len(mine)] == mine
    assert any(t for t in transcribed)  # the model says something: a non-trivial comparison
    theirs = sherpa_decode(onnx_dir, files)
    assert theirs == transcribed
    # metadata sherpa-onnx and icefall's loaders read
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_dir / "decoder.onnx")).metadata_props}
    assert meta == {"context_size": "2", "vocab_size": str(sp.get_piece_size())}


def test_transcribe_reads_every_format_from_checkpoint_and_export(student, tmp_path, capsys):
    ckpt, onnx_dir, _ = student
    files = sorted(str(p) for p in TEST_AUDIO.iterdir() if p.suffix in (".flac", ".wav", ".mp3"))
    assert len(files) == 5  # 16 kHz FLAC, 22.05 kHz WAV, 48 kHz MP3, 8 kHz stereo WAV
    out = {}
    for model in (ckpt, onnx_dir):
        assert cli(["transcribe", "--model", str(model), *files]) == 0
        out[model] = capsys.readouterr().out.rstrip("\n").split("\n")
        assert [line.split("\t")[0] for line in out[model]] == files
    assert out[ckpt] == out[onnx_dir]  # onnxruntime and torch agree on the same features
    assert cli(["transcribe", "--model", str(ckpt), str(tmp_path / "missing.wav")]) == 2


def test_token_timestamps_match_sherpa_onnx(student, capsys):
    """transcribe --timestamps: the same pieces at the same times as sherpa-onnx's own
    greedy search reports for the export (``result.tokens`` / ``result.timestamps``)."""
    ckpt, onnx_dir, test_cuts = student
    cuts = CutSet.from_file(test_cuts).subset(first=3)
    files = [c.recording.sources[0].source for c in cuts] + [str(TEST_AUDIO / "2412-153948-0000.flac")]
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(onnx_dir / "encoder.onnx"), decoder=str(onnx_dir / "decoder.onnx"),
        joiner=str(onnx_dir / "joiner.onnx"), tokens=str(onnx_dir / "tokens.txt"), num_threads=1)
    assert cli(["transcribe", "--model", str(ckpt), "--timestamps", *files]) == 0
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert len(lines) == len(files)
    n_tokens = 0
    for f, line in zip(files, lines):
        samples, sr = sf.read(f, dtype="float32", always_2d=True)
        stream = rec.create_stream()
        stream.accept_waveform(sr, samples.mean(1))
        rec.decode_stream(stream)
        cols = line.split("\t")
        stamps = [s.rpartition("@") for s in cols[2].split()] if len(cols) > 2 else []
        # sherpa-onnx shows the word-start mark "\u2581" of a BPE piece as a space
        assert [p.replace("\u2581", " ") for p, _, _ in stamps] == list(stream.result.tokens)
        assert [float(t) for _, _, t in stamps] == pytest.approx(list(stream.result.timestamps), abs=0.006)
        times = [float(t) for _, _, t in stamps]
        assert times == sorted(times) and all(0 <= t < sf.info(f).duration for t in times)
        n_tokens += len(stamps)
    assert n_tokens > 10  # a non-trivial comparison
    assert cli(["transcribe", "--model", str(ckpt), "--timestamps", "--method", "modified_beam_search",
                files[0]]) == 2


def test_long_files_are_recognised_segment_by_segment(student, tmp_path, capsys):
    """A file longer than --max-segment-seconds: its text is its segments' texts, each segment
    recognised as a file of its own (written out, transcribed whole), joined by a space; its
    token times are the segments' plus their start times; the encoder never sees more than
    the limit. The same from the ONNX export."""
    import numpy as np

    from mvqkd.decode.segments import segment_bounds
    from mvqkd.decode.transcribe import load_audio, load_recogniser, transcribe

    ckpt, onnx_dir, test_cuts = student
    cuts = CutSet.from_file(test_cuts)
    gap = np.zeros(8000, dtype=np.float32)  # 0.5 s of silence between utterances
    samples = np.concatenate([x for c in cuts for x in (c.load_audio()[0].astype(np.float32), gap)])
    assert len(samples) > 3 * 4 * 16000  # several segments of at most 4 s
    long = tmp_path / "long.wav"
    sf.write(long, samples, 16000, subtype="FLOAT")
    bounds = segment_bounds(load_audio(long), 4)
    assert len(bounds) >= 3
    pieces = []
    for i, (start, end) in enumerate(bounds):
        pieces.append(str(tmp_path / f"piece{i}.wav"))
        sf.write(pieces[-1], samples[start:end], 16000, subtype="FLOAT")
    for model in (ckpt, onnx_dir):
        assert cli(["transcribe", "--model", str(model), "--timestamps", "--max-segment-seconds", "0", *pieces]) == 0
        parts = [line.split("\t") for line in capsys.readouterr().out.rstrip("\n").split("\n")]
        assert cli(["transcribe", "--model", str(model), "--timestamps", "--max-segment-seconds", "4", str(long)]) == 0
        whole = capsys.readouterr().out.rstrip("\n").split("\t")
        assert whole[1] == " ".join(p[1] for p in parts if p[1])
        assert any(p[1] for p in parts) and len({p[1] for p in parts}) > 1  # a non-trivial comparison
        expected = [(piece, float(t) + start / 16000) for p, (start, _) in zip(parts, bounds) if len(p) > 2
                    for piece, _, t in (s.rpartition("@") for s in p[2].split())]
        got = [s.rpartition("@") for s in whole[2].split()]
        assert [p for p, _, _ in got] == [p for p, _ in expected]
        assert [float(t) for _, _, t in got] == pytest.approx([t for _, t in expected], abs=0.006)
    model, sp = load_recogniser(ckpt)
    seen = []

    class Spy:  # the model, with the length of every encoder input recorded
        def __getattr__(self, name):
            return getattr(model, name)

        def encode(self, x, x_lens):
            seen.append(x.shape[1])
            return model.encode(x, x_lens)

    list(transcribe(Spy(), sp, [long], max_segment_seconds=4))
    assert len(seen) == len(bounds) and max(seen) <= 400  # 10 ms fbank frames


def test_decode_splits_long_cuts_like_transcribe(student, tmp_path):
    """mvqkd decode on a cut longer than --max-segment-seconds: its hypothesis is its
    segments' (each decoded as a cut of its own) joined, scored against the whole cut's
    reference; short cuts and --max-segment-seconds 0 decode whole, as before."""
    import numpy as np
    from lhotse import Recording, SupervisionSegment

    from mvqkd.decode.decode import decode_dataset
    from mvqkd.decode.segments import segment_bounds
    from mvqkd.decode.transcribe import load_recogniser

    ckpt, _, test_cuts = student
    model, sp = load_recogniser(ckpt)
    cuts = CutSet.from_file(test_cuts)
    gap = np.zeros(8000, dtype=np.float32)
    samples = np.concatenate([x for c in cuts for x in (c.load_audio()[0].astype(np.float32), gap)])
    sf.write(tmp_path / "long.wav", samples, 16000, subtype="FLOAT")
    text = " ".join(c.supervisions[0].text for c in cuts)
    rec = Recording.from_file(tmp_path / "long.wav", recording_id="long")
    long = rec.to_cut()
    long.supervisions = [SupervisionSegment("long", "long", 0, rec.duration, text=text)]
    short = [c.drop_features() for c in cuts if c.duration <= 4]
    assert short
    both = CutSet.from_cuts([long, *short])
    got = {cid: (ref, hyp) for cid, ref, hyp in decode_dataset(model, both, sp, max_segment_seconds=4)}
    pieces = []
    for k, (start, end) in enumerate(segment_bounds(samples, 4)):
        sf.write(tmp_path / f"p{k}.wav", samples[start:end], 16000, subtype="FLOAT")
        pieces.append(Recording.from_file(tmp_path / f"p{k}.wav", recording_id=f"p{k:03d}").to_cut())
    assert len(pieces) >= 3
    alone = {cid: hyp for cid, _, hyp in decode_dataset(model, CutSet.from_cuts(pieces), sp)}
    assert got["long"] == (text.split(), [w for k in range(len(pieces)) for w in alone[f"p{k:03d}"]])
    assert len({tuple(h) for h in alone.values()}) > 1 and got["long"][1]  # non-trivial
    whole = {cid: (ref, hyp) for cid, ref, hyp in decode_dataset(model, both, sp, max_segment_seconds=0)}
    assert whole["long"][0] == text.split() and whole["long"][1] != got["long"][1]
    assert set(got) == set(whole) == {"long", *(c.id for c in short)}
    from mvqkd.decode.decode import split_long_cuts

    split, parts = split_long_cuts(both, 4)  # short cuts are left as they are
    assert list(parts) == ["long"] and [c.id for c in split if not c.id.startswith("long")] == [c.id for c in short]


def test_int8_export_is_smaller_and_loads(student):
    _, onnx_dir, _ = student
    for k in ("encoder", "decoder", "joiner"):
        assert (onnx_dir / f"{k}.int8.onnx").stat().st_size < (onnx_dir / f"{k}.onnx").stat().st_size
    d = onnx_dir.parent / "int8"
    d.mkdir()
    for k in ("encoder", "decoder", "joiner"):
        shutil.copy(onnx_dir / f"{k}.int8.onnx", d / f"{k}.onnx")
    shutil.copy(onnx_dir / "tokens.txt", d / "tokens.txt")
    assert len(sherpa_decode(d, [str(TEST_AUDIO / "2412-153948-0000.flac")])) == 1



def test_export_of_a_checkpoint_without_its_tokenizer_takes_bpe_model(student, prepared_data, tmp_path, caplog):
    """A checkpoint that holds no BPE model (one upgraded from mvqkd < 0.2) is exported with
    --bpe-model; without it the error says so. tokens.txt is that model's pieces."""
    import sentencepiece as spm

    from mvqkd.student.checkpoint import load_checkpoint_file
    from mvqkd.training.checkpoint import save_checkpoint

    ckpt, _, _ = student
    bare = tmp_path / "bare.pt"
    save_checkpoint(bare, **{k: v for k, v in load_checkpoint_file(ckpt).items()
                             if k not in ("bpe_model", "format_version")})
    assert cli(["export-onnx", "--checkpoint", str(bare), "--out-dir", str(tmp_path / "a")]) == 2
    assert "holds no BPE model; pass --bpe-model" in caplog.text
    bpe = prepared_data / "lang_bpe_100" / "bpe.model"
    assert cli(["export-onnx", "--checkpoint", str(bare), "--bpe-model", str(bpe), "--out-dir",
                str(tmp_path / "b")]) == 0
    sp = spm.SentencePieceProcessor(model_file=str(bpe))
    lines = (tmp_path / "b" / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [f"{sp.id_to_piece(i)} {i}" for i in range(sp.get_piece_size())]
