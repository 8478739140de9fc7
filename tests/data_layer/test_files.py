"""find_files: every file under a folder, through symlinked sub-folders (Path.rglob skips
them before Python 3.13), each folder read once; checked against the paths written, and
through the real clients: tensorboard's event files read by ``mvqkd summarize`` and a corpus
folder made into lhotse cuts."""

import os
from pathlib import Path

from mvqkd.data.files import find_files


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_follows_symlinked_folders_once_and_matches_the_pattern(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "other-disk"
    expected = {_touch(root / "a" / "1.flac"), _touch(root / "b.flac")}
    _touch(root / "a" / "1.txt")
    _touch(elsewhere / "spk" / "2.flac")
    os.symlink(elsewhere, root / "linked")
    expected.add(root / "linked" / "spk" / "2.flac")
    os.symlink(root, root / "a" / "loop")  # a cycle: must end, without reading root twice
    os.symlink(elsewhere / "spk" / "2.flac", root / "file-link.flac")  # a link to a file counts
    expected.add(root / "file-link.flac")
    os.symlink(tmp_path / "missing", root / "dangling.flac")  # a broken link is no file
    got = find_files(root, "*.flac")
    assert got == sorted(expected)
    assert [p for p in root.rglob("*.flac") if p.is_file()] != got  # what rglob missed
    assert find_files(root / "nope") == [] and find_files(root / "b.flac") == []
    assert find_files(root, "*.FLAC") == []  # case-sensitive, like rglob on Linux


def test_summarize_reads_a_symlinked_tensorboard_folder(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from mvqkd.decode.summary import read_scalars

    real = tmp_path / "scratch" / "tb"
    with SummaryWriter(str(real)) as w:
        for step, value in ((1, 3.0), (2, 2.5)):
            w.add_scalar("train/rnnt", value, step)
    exp = tmp_path / "exp" / "seed1" / "mvq"
    exp.mkdir(parents=True)
    os.symlink(real, exp / "tensorboard")
    assert read_scalars(exp) == {"train/rnnt": [(1, 3.0), (2, 2.5)]}


def test_cuts_from_a_corpus_with_a_symlinked_speaker_folder(tmp_path):
    import numpy as np
    import soundfile as sf

    from mvqkd.indexes.make_cuts import cuts_from_audio_dir

    corpus, disk2 = tmp_path / "corpus", tmp_path / "disk2"
    for folder, name in ((corpus / "spk1", "a.wav"), (disk2 / "spk2", "b.wav")):
        folder.mkdir(parents=True)
        sf.write(folder / name, np.zeros(8000, np.float32), 16000)
    os.symlink(disk2 / "spk2", corpus / "spk2")
    cuts = cuts_from_audio_dir(corpus)
    assert sorted(c.recording_id for c in cuts) == ["spk1_a", "spk2_b"]
    assert sorted(c.duration for c in cuts) == [0.5, 0.5]
