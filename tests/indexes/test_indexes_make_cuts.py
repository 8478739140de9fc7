"""make-cuts: folder of audio (+ transcripts) and Kaldi data dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import soundfile as sf

from mvqkd.indexes.make_cuts import make_cuts
from tests.indexes.indexes_helpers import REPO, write_tone


def test_audio_folder_with_transcripts(tmp_path):
    d = tmp_path / "corpus"
    (d / "spk1").mkdir(parents=True)
    write_tone(d / "spk1" / "a.wav", 0.5)
    shutil.copy(REPO / "tests" / "data" / "common_voice_en_651325.mp3", d / "b.mp3")
    (tmp_path / "text").write_text("spk1_a HELLO THERE\n")
    cuts = make_cuts(d, tmp_path / "cuts.jsonl.gz", transcripts=tmp_path / "text")
    by_id = {c.id: c for c in cuts}
    assert sorted(by_id) == ["b", "spk1_a"]
    assert by_id["spk1_a"].supervisions[0].text == "HELLO THERE" and by_id["b"].supervisions == []
    info = sf.info(d / "spk1" / "a.wav")
    assert by_id["spk1_a"].duration == pytest.approx(info.frames / info.samplerate)
    assert by_id["b"].sampling_rate == 48000
    (tmp_path / "bad").write_text("nosuchfile TEXT\n")
    with pytest.raises(ValueError, match="1 of 1 ids have no audio file"):
        make_cuts(d, tmp_path / "x.jsonl.gz", transcripts=tmp_path / "bad")


def test_every_unreadable_file_is_listed_at_once(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    write_tone(d / "good.wav", 0.5)
    (d / "bad1.wav").write_bytes(b"RIFF....garbage")
    (d / "bad2.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="2 of 3 audio files cannot be read") as err:
        make_cuts(d, tmp_path / "cuts.jsonl.gz")
    assert "bad1.wav" in str(err.value) and "bad2.flac" in str(err.value)
    assert not (tmp_path / "cuts.jsonl.gz").exists()


def test_kaldi_data_dir_gives_one_cut_per_segment(tmp_path):
    wav = REPO / "tests" / "data" / "LJ002-0020.wav"
    (tmp_path / "wav.scp").write_text(f"rec1 {wav}\n")
    (tmp_path / "segments").write_text("utt1 rec1 0.0 0.7\nutt2 rec1 0.7 1.5\n")
    (tmp_path / "text").write_text("utt1 HELLO\nutt2 WORLD\n")
    (tmp_path / "utt2spk").write_text("utt1 spk\nutt2 spk\n")
    cuts = make_cuts(tmp_path, tmp_path / "cuts.jsonl.gz")
    assert [(c.id, c.start, c.duration, c.supervisions[0].text) for c in cuts] == [
        ("utt1", 0.0, 0.7, "HELLO"), ("utt2", 0.7, 0.8, "WORLD")]


def test_kaldi_dir_reads_rates_from_the_audio_and_runs_pipes(tmp_path, monkeypatch):
    """A 22.05 kHz file, a 16 kHz FLAC behind a sox pipe and a stereo 8 kHz file: each cut
    gets its own rate, the pipe's audio equals the file's, and paths are absolute."""
    import numpy as np

    data = REPO / "tests" / "data"
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    flac = data / "2412-153948-0000.flac"
    (kaldi / "wav.scp").write_text(
        f"lj {data / 'LJ002-0020.wav'}\n"
        f"libri sox {flac} -t wav - |\n"
        f"st {data / 'stereo.wav'}\n")
    (kaldi / "text").write_text("lj IN EIGHTEEN THIRTEEN\nlibri IF THE READER\n")
    monkeypatch.chdir(tmp_path)
    cuts = {c.id: c for c in make_cuts(kaldi, "cuts.jsonl.gz")}
    assert cuts["lj"].sampling_rate == 22050 and cuts["libri"].sampling_rate == 16000
    assert cuts["st"].num_channels == 2 and cuts["st"].sampling_rate == 8000
    ref, rate = sf.read(flac, dtype="float32")
    assert cuts["libri"].duration == pytest.approx(len(ref) / rate)
    np.testing.assert_allclose(cuts["libri"].load_audio()[0], ref, atol=1e-4)
    assert cuts["lj"].supervisions[0].text == "IN EIGHTEEN THIRTEEN" and cuts["st"].supervisions == []
    from lhotse import CutSet

    for c in CutSet.from_file(tmp_path / "cuts.jsonl.gz"):
        src = c.recording.sources[0]
        assert src.type == "command" or src.source.startswith("/")


def test_kaldi_dir_lists_every_bad_entry(tmp_path):
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'missing.wav'}\nb false |\nc {REPO / 'tests/data/LJ002-0020.wav'}\n")
    with pytest.raises(ValueError, match="2 entries cannot be read") as err:
        make_cuts(tmp_path, tmp_path / "cuts.jsonl.gz")
    assert "wav.scp:1 a" in str(err.value) and "wav.scp:2 b" in str(err.value)
    (tmp_path / "wav.scp").write_text(f"c {REPO / 'tests/data/LJ002-0020.wav'}\n")
    (tmp_path / "segments").write_text("u1 nosuchrec 0 1\n")
    with pytest.raises(ValueError, match="segments:1"):
        make_cuts(tmp_path, tmp_path / "cuts.jsonl.gz")


def test_file_names_with_spaces_get_ids_a_text_file_can_name(tmp_path, caplog):
    """Kaldi's ``text`` splits at the first space, so ``spk 1/Track 01.wav`` must have an id
    without one; the files left without a line are named in the warning."""
    d = tmp_path / "corpus"
    (d / "spk 1").mkdir(parents=True)
    for name in ("Track 01.wav", "Track  02.wav", "t3.wav"):
        write_tone(d / "spk 1" / name, 0.3)
    (tmp_path / "text").write_text("spk_1_Track_01 HELLO\nspk_1_Track_02 THERE\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="mvqkd.indexes.make_cuts"):
        cuts = make_cuts(d, tmp_path / "cuts.jsonl.gz", transcripts=tmp_path / "text")
    by_id = {c.id: c for c in cuts}
    assert sorted(by_id) == ["spk_1_Track_01", "spk_1_Track_02", "spk_1_t3"]
    assert [by_id[i].supervisions[0].text for i in ("spk_1_Track_01", "spk_1_Track_02")] == ["HELLO", "THERE"]
    assert "1 of 3 files have no transcript line" in caplog.text and "'spk_1_t3'" in caplog.text
    write_tone(d / "spk 1" / "Track_01.wav", 0.3)  # the same id as "Track 01.wav"
    with pytest.raises(ValueError, match="both map to recording id 'spk_1_Track_01'"):
        make_cuts(d, tmp_path / "y.jsonl.gz")


def test_transcript_ids_without_audio_are_counted_and_explained(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    write_tone(d / "a.wav", 0.3)
    (tmp_path / "text").write_text("a HI\n" + "".join(f"x{i} NO\n" for i in range(7)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"7 of 8 ids have no audio file") as err:
        make_cuts(d, tmp_path / "cuts.jsonl.gz", transcripts=tmp_path / "text")
    assert "'x0'" in str(err.value) and "and 2 more" in str(err.value) and "'a' is" in str(err.value)


def test_transcripts_are_read_as_utf8_whatever_the_locale(tmp_path):
    """Under the C locale (no coercion, no UTF-8 mode) Python's default encoding is ASCII.
    (lhotse's manifest writer then fails on non-ASCII text itself, so the reader is run alone.)"""
    (tmp_path / "text").write_bytes("a ÇA VA ÜBER 北京\n".encode("utf-8"))
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    code = ("import sys; from mvqkd.indexes.make_cuts import read_transcripts; "
            "print(ascii(read_transcripts(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "text")], env=env, cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ascii({"a": "ÇA VA ÜBER 北京"})
