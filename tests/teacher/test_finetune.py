"""The demo CTC teacher: decoding/scoring on crafted logits, tokenizer, training, loading."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from mvqkd.teacher.ctc import (
    WER_FILE, AudioCache, build_ctc_model as build_model, collate, ctc_greedy, encode_text,
    ids_to_words, labels_for, score, vocabulary, write_processor,
)
from mvqkd.training.finetune import STATE_FILE, finetune_teacher
from mvqkd.teacher.model import load_teacher

V = vocabulary()
ID2TOK = {i: t for t, i in V.items()}


def _logits(frames: list[str], noise_seed: int = 0) -> torch.Tensor:
    """(1, T, V) logits whose argmax per frame is the given token (``-`` = blank)."""
    g = torch.Generator().manual_seed(noise_seed)
    x = torch.rand(1, len(frames), len(V), generator=g)
    for t, tok in enumerate(frames):
        x[0, t, V["<pad>" if tok == "-" else tok]] = 5.0
    return x


def test_ctc_greedy_collapses_repeats_and_blanks():
    # A A - A B | | C - C ' S  (+ 2 padded frames beyond the length, which must be ignored)
    frames = ["A", "A", "-", "A", "B", "|", "|", "C", "-", "C", "'", "S", "Z", "Z"]
    ids = ctc_greedy(_logits(frames), torch.tensor([12]))[0]
    assert "".join(ID2TOK[i] for i in ids) == "AAB|CC'S"
    assert ids_to_words(ids, ID2TOK) == ["AAB", "CC'S"]


def test_score_matches_hand_count():
    # ref: THE CAT SAT ON THE MAT (6 words); hyp: THE CAT SAT IN MAT MAT THE
    # alignment: THE CAT SAT (ON->IN) (THE->MAT) MAT (+THE): 2 sub, 1 ins, 0 del -> 3/6 = 50 %
    # second pair: A B C vs "" -> 3 deletions; total 6 errors / 9 words
    refs = ["THE CAT SAT ON THE MAT".split(), "A B C".split()]
    hyps = ["THE CAT SAT IN MAT MAT THE".split(), []]
    res = score(refs, hyps)
    assert (res["sub"], res["ins"], res["del"], res["ref_words"]) == (2, 1, 3, 9)
    assert res["wer"] == pytest.approx(100 * 6 / 9)


def test_decode_then_score_end_to_end_on_logits():
    frames = ["H", "I", "|", "-", "Y", "O", "U"]  # -> "HI YOU" vs ref "HI THERE": 1 sub
    hyp = ids_to_words(ctc_greedy(_logits(frames, 1), torch.tensor([7]))[0], ID2TOK)
    assert score([["HI", "THERE"]], [hyp]) == {"wer": 50.0, "ins": 0, "del": 0, "sub": 1, "ref_words": 2}


def test_tokenizer_round_trip(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer

    write_processor(tmp_path, do_normalize=True, return_attention_mask=True)
    tok = Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))
    text = "IT'S A SMALL WORLD AFTER ALL"
    ids = tok(text).input_ids
    assert ids == encode_text(text, V)
    assert tok.decode(ids, group_tokens=False) == text
    assert tok.pad_token_id == V["<pad>"] == 0


def test_encode_text_rejects_unknown_character():
    with pytest.raises(ValueError, match="cut-7.*'3'"):
        encode_text("ROOM 3", V, "cut-7")


def _batch_loss(model, cuts) -> float:
    x, mask, _ = collate(cuts, AudioCache(), True, True)
    model.eval()
    with torch.no_grad():
        return float(model(x, attention_mask=mask, labels=labels_for(cuts, V)).loss)


@pytest.fixture(scope="module")
def trained(prepared_data, tmp_path_factory):
    from lhotse import CutSet

    train = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_train-clean-360.jsonl.gz")
    dev = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_dev-clean.jsonl.gz")
    out = tmp_path_factory.mktemp("ctc") / "teacher"
    torch.manual_seed(0)
    finetune_teacher(train, dev, out, size="tiny", max_duration=20, num_epochs=3, max_steps=12,
                     lr=3e-3, warmup_steps=3, seed=0, eval_cuts={"test-clean": dev})
    return train, dev, out


def test_training_lowers_ctc_loss(trained):
    from transformers import HubertForCTC

    train, _, out = trained
    cuts = list(train.subset(first=4))
    init, _ = build_model("tiny", seed=0, init_from=None)
    before = _batch_loss(init, cuts)
    after = _batch_loss(HubertForCTC.from_pretrained(str(out)), cuts)
    assert after < 0.8 * before, (before, after)


def test_saved_teacher_loads_and_extracts_at_50hz(trained):
    train, _, out = trained
    teacher = load_teacher(out, device="cpu")
    assert teacher.dim == 64 and teacher.num_layers == 3 and teacher.info.do_normalize
    cut = next(iter(train))
    wav = cut.load_audio()[0]
    emb = teacher.extract([wav], layer=2)[0]
    assert emb.shape == (teacher.num_frames(len(wav)), 64)
    assert abs(emb.shape[0] - cut.duration * 50) <= 1
    assert torch.isfinite(emb).all()


def test_wer_file_and_log(trained):
    _, dev, out = trained
    wers = json.loads((out / WER_FILE).read_text())
    n_words = sum(len(c.supervisions[0].text.split()) for c in dev)
    assert wers["dev"]["ref_words"] == n_words
    assert wers["dev"] == wers["test-clean"]  # same cuts, same model
    log = json.loads((out / "finetune_log.json").read_text())
    assert log[-1]["step"] == 12


def test_resume_continues_after_last_epoch(prepared_data, tmp_path):
    from lhotse import CutSet

    train = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_train-clean-360.jsonl.gz").subset(first=6)
    dev = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_dev-clean.jsonl.gz").subset(first=2)
    kw = dict(size="tiny", max_duration=30, seed=3, warmup_steps=1)
    finetune_teacher(train, dev, tmp_path, num_epochs=1, **kw)
    first = torch.load(tmp_path / STATE_FILE, weights_only=True)
    finetune_teacher(train, dev, tmp_path, num_epochs=2, **kw)
    second = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert (first["epoch"], second["epoch"]) == (1, 2)
    assert second["step"] > first["step"]
    assert [h["epoch"] for h in second["history"]] == [1, 2]


def test_cli_help_and_bad_input(tmp_path, capsys):
    from mvqkd.training import commands

    parser = argparse.ArgumentParser(prog="mvqkd")
    commands.register(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["finetune-teacher", "--help"])
    assert "--init-from" in capsys.readouterr().out
    args = parser.parse_args(["finetune-teacher", "--train-cuts", str(tmp_path / "nope.jsonl.gz"),
                              "--dev-cuts", str(tmp_path / "nope.jsonl.gz"), "--out", str(tmp_path / "o")])
    assert args.func(args) == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["finetune-teacher", "--train-cuts", "a", "--dev-cuts", "b", "--out", "c",
                           "--eval-cuts", "no-equals-sign"])


def test_rejects_cut_without_audio(prepared_data, tmp_path):
    from lhotse import CutSet

    cuts = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_dev-clean.jsonl.gz")
    bad = CutSet.from_cuts([c.drop_recording() for c in cuts])
    with pytest.raises(ValueError, match="has no recording"):
        finetune_teacher(bad, cuts, tmp_path, size="tiny", max_steps=1)


@pytest.mark.parametrize("size,dim,layers", [("small", 192, 4), ("wide", 1024, 2)])
def test_demo_sizes_have_their_documented_shapes(size, dim, layers):
    model, do_norm = build_model(size, seed=0, init_from=None)
    assert do_norm and model.config.feat_extract_norm == "layer" and model.config.do_stable_layer_norm
    with torch.no_grad():
        out = model(torch.randn(1, 16000), output_hidden_states=True)
    # 1 s at 16 kHz -> 49 frames of the 20 ms front-end; one hidden state per layer plus the input
    assert len(out.hidden_states) == layers + 1
    assert out.hidden_states[-1].shape == (1, 49, dim)
    assert out.logits.shape == (1, 49, len(V))


def test_cuts_longer_than_a_batch_are_left_out_by_name(prepared_data, tmp_path, caplog):
    """A cut longer than --max-duration would get a batch of its own, past the budget: it is
    left out with a warning naming it; with every cut too long, a clear error."""
    import logging

    from lhotse import CutSet

    from mvqkd.training.finetune import _fitting

    cuts = CutSet.from_file(prepared_data / "fbank/librispeech_cuts_dev-clean.jsonl.gz")
    durations = sorted(c.duration for c in cuts)
    limit = durations[-2]  # only the longest cut exceeds it
    longest = next(c for c in cuts if c.duration > limit)
    with caplog.at_level(logging.WARNING, logger="mvqkd"):
        kept = _fitting(cuts, limit)
    assert sorted(c.id for c in kept) == sorted(c.id for c in cuts if c.id != longest.id)
    assert longest.id in caplog.text and "--max-duration" in caplog.text
    assert _fitting(cuts, durations[-1]) is cuts  # nothing too long: the same set
    with pytest.raises(ValueError, match="every cut is longer than --max-duration"):
        finetune_teacher(cuts, cuts, tmp_path, size="tiny", max_steps=1, max_duration=durations[0] / 2)
