"""The frame-count rule and the per-cut audio policy."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from tests.indexes.indexes_helpers import REPO, write_tone
from lhotse import Recording

from mvqkd.indexes.audio import CutError, load_cut_audio
from mvqkd.conventions import fit_frames, num_frames


def test_num_frames_rounds_duration_over_20ms():
    # hand-computed: 1.0 s -> 50; 1.01 s -> 50.5 -> 51 (halves round up); 0.0299 s -> 1.495 -> 1
    assert [num_frames(d) for d in (1.0, 1.01, 1.009, 0.0299, 11.66)] == [50, 51, 50, 1, 583]


def test_fit_frames_pads_with_last_frame_and_trims():
    x = np.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(fit_frames(x, 8), np.vstack([x, [[10, 11], [10, 11]]]))
    np.testing.assert_array_equal(fit_frames(x, 5), x[:5])
    with pytest.raises(ValueError, match="more than 2 apart"):
        fit_frames(x, 9)


def _cut(path):
    return Recording.from_file(path).to_cut()


def test_resamples_wrong_rate_and_logs(tmp_path, caplog):
    path = write_tone(tmp_path / "a.wav", 0.5, sr=22050)
    caplog.set_level("INFO")
    audio = load_cut_audio(_cut(path))
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    assert "resampling 22050 Hz -> 16000 Hz" in caplog.text
    # the 180 Hz tone survives resampling: compare with the tone itself at 16 kHz
    ref = np.sin(2 * np.pi * 180 * np.arange(8000) / 16000) * 0.3
    assert np.corrcoef(audio[100:-100], ref[100:-100])[0, 1] > 0.9


def test_multichannel_is_downmixed_by_mean(tmp_path, caplog):
    path = write_tone(tmp_path / "st.wav", 0.4, channels=2)
    caplog.set_level("INFO")
    audio = load_cut_audio(_cut(path))
    ref, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(audio, ref.mean(axis=1), atol=1e-6)
    assert "downmixing 2 channels" in caplog.text


@pytest.mark.parametrize("name", ["common_voice_en_651325.mp3", "stereo.wav", "LJ002-0020.wav",
                                  "2412-153948-0000.flac"])
def test_real_recordings_load_as_16k_mono(name):
    cut = _cut(REPO / "tests" / "data" / name)
    audio = load_cut_audio(cut)
    assert audio.ndim == 1 and abs(audio.size - round(cut.duration * 16000)) <= 1


def test_bad_audio_raises_cut_errors(tmp_path):
    short = _cut(write_tone(tmp_path / "short.wav", 399 / 16000))
    with pytest.raises(CutError, match="fewer than") as e:
        load_cut_audio(short)
    assert e.value.kind == "too_short"
    corrupt = _cut(write_tone(tmp_path / "bad.wav", 0.5))
    (tmp_path / "bad.wav").write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(CutError) as e:
        load_cut_audio(corrupt)
    assert e.value.kind == "unreadable_audio"
    x = np.zeros(4000, np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(CutError) as e:
        load_cut_audio(_cut(tmp_path / "nan.wav"))
    assert e.value.kind == "nonfinite_audio"
