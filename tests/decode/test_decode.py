"""End-to-end decoding of tiny precomputed-feature cuts with a model whose output we control.

The features spell out the hypothesis: every feature frame is a one-hot vector over the
vocabulary, and the tiny model is wired so that encoder frame t (feature frames 2t, 2t+1)
puts a sharp peak on that token and ignores the decoder state. So greedy and beam search
must both return exactly the tokens we wrote, and the WER is known by hand.
"""

import types

import numpy as np
import pytest
import torch

from decode_tiny_model import TinyTransducer
from mvqkd.decode.decode import decode_and_score, decode_dataset

# (cut id, reference text, hypothesis text the features spell)
UTTS = [
    ("c1", "HELLO WORLD", "HELLO WORD"),  # WORLD->WORD: 1 substitution
    ("c2", "GOOD DAY SIR", "GOOD DAY"),  # SIR deleted: 1 deletion
    ("c3", "YES", "YES YES"),  # YES inserted: 1 insertion
    ("c4", "MAYBE NO", "NO"),  # MAYBE deleted: 1 deletion (and a shorter cut)
]
# By hand: 2 + 3 + 1 + 2 = 8 reference words, 1 sub + 2 del + 1 ins = 4 errors -> WER 50.00 %;
# correct: HELLO, GOOD, DAY, YES, NO = 5


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    from mvqkd.data.tokenizer import load_bpe, train_bpe

    d = tmp_path_factory.mktemp("bpe")
    text = d / "text.txt"
    text.write_text("\n".join(["HELLO WORLD WORD", "GOOD DAY SIR", "YES NO MAYBE"] * 20) + "\n")
    sp = load_bpe(train_bpe(text, d, 24))
    assert sp.piece_to_id("<blk>") == 0
    return sp


def spelling_model(V):
    """Tiny transducer whose encoder frame t emits the one-hot token of feature frame 2t."""
    m = TinyTransducer(feat_dim=V, vocab_size=V, enc_dim=V, dec_dim=4, joiner_dim=V, context_size=2)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.encoder.weight[:, :V] = torch.eye(V)  # first frame of each pair, tanh(1) = 0.76
        m.joiner.encoder_proj.weight.copy_(torch.eye(V) * 10)
        m.joiner.output_linear.weight.copy_(torch.eye(V) * 20)
    return m.eval()


def make_cuts(tmp_path, sp, utts):
    from lhotse import CutSet, LilcomChunkyWriter, MonoCut, SupervisionSegment
    from lhotse.features.base import Features

    V = sp.get_piece_size()
    cuts = []
    with LilcomChunkyWriter(tmp_path / "feats") as writer:
        for cut_id, ref, hyp in utts:
            tokens = []
            for tok in sp.encode(hyp, out_type=int):
                tokens += [tok, 0]  # token then a blank frame
            frames = np.repeat(np.eye(V, dtype=np.float32)[tokens], 2, axis=0)  # 2 feature frames each
            key = writer.write(cut_id, frames)
            dur = frames.shape[0] * 0.01
            feats = Features(type="onehot", num_frames=frames.shape[0], num_features=V, frame_shift=0.01,
                             sampling_rate=16000, start=0, duration=dur, storage_type=writer.name,
                             storage_path=str(writer.storage_path), storage_key=key, recording_id=cut_id,
                             channels=0)
            sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=dur, text=ref)
            cuts.append(MonoCut(id=cut_id, start=0, duration=dur, channel=0, features=feats,
                                supervisions=[sup]))
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


@pytest.mark.parametrize("method,beam", [("greedy_search", 4), ("modified_beam_search", 1),
                                         ("modified_beam_search", 4), ("fast_beam_search", 4)])
def test_decode_dataset_spells_hypotheses(tmp_path, bpe, method, beam):
    cuts = make_cuts(tmp_path, bpe, UTTS)
    model = spelling_model(bpe.get_piece_size())
    # c1..c3 last 0.32 s, c4 0.12 s; lhotse counts padded duration, so 0.7 s gives batches
    # [c1, c2] and [c3, c4], the latter padding c4 to 0.32 s
    results = decode_dataset(model, cuts, bpe, method=method, beam_size=beam, max_duration=0.7)
    assert results == [(cid, ref.split(), hyp.split()) for cid, ref, hyp in UTTS]


def test_output_files(tmp_path, bpe):
    cuts = make_cuts(tmp_path, bpe, UTTS)
    model = spelling_model(bpe.get_piece_size())
    out = tmp_path / "out"
    wers = decode_and_score(model, {"test-clean": cuts}, bpe, out, method="modified_beam_search",
                            beam_size=4, max_duration=100)
    assert wers == {"test-clean": 50.0}
    assert (out / "recogs-test-clean.txt").read_text().splitlines() == [
        "c1:\tref=['HELLO', 'WORLD']", "c1:\thyp=['HELLO', 'WORD']",
        "c2:\tref=['GOOD', 'DAY', 'SIR']", "c2:\thyp=['GOOD', 'DAY']",
        "c3:\tref=['YES']", "c3:\thyp=['YES', 'YES']",
        "c4:\tref=['MAYBE', 'NO']", "c4:\thyp=['NO']",
    ]
    errs = (out / "errs-test-clean.txt").read_text()
    assert errs.startswith(
        "%WER = 50.00\nErrors: 1 insertions, 2 deletions, 1 substitutions, over 8 reference words (5 correct)\n"
    )
    assert "c1:\tHELLO (WORLD->WORD)\nc2:\tGOOD DAY (SIR->*)\n" in errs
    assert "SUBSTITUTIONS: count ref -> hyp\n1   WORLD -> WORD\n" in errs
    assert "DELETIONS: count ref\n1   SIR\n1   MAYBE\n\n" in errs
    assert "c3:\tYES (*->YES)\nc4:\t(MAYBE->*) NO\n" in errs
    assert "INSERTIONS: count hyp\n1   YES\n" in errs
    assert (out / "wer-summary-test-clean.txt").read_text() == (
        "settings\tWER\nbeam_size_4\t50.0\n"  # icefall's label
    )


def _fake_exp(monkeypatch, tmp_path, bpe, calls=None):
    """An experiment folder whose checkpoints "load" as the spelling model (BPE inside)."""
    import mvqkd.student.checkpoint as ckpt

    exp = tmp_path / "exp"
    exp.mkdir(exist_ok=True)
    for e in (1, 2, 3):
        (exp / f"epoch-{e}.pt").write_bytes(b"")
    proto = torch.frombuffer(bytearray(bpe.serialized_model_proto()), dtype=torch.uint8)

    def fake_load(exp_dir, epoch=None, avg=1, iteration=None, device="cpu", checkpoint=None,
                  return_checkpoint=False, use_averaged_model=False):
        assert not use_averaged_model  # these tests decode plain checkpoints
        if calls is not None:
            calls.append((str(exp_dir), epoch, avg, iteration, device))
        model = spelling_model(bpe.get_piece_size())
        return model, types.SimpleNamespace(context_size=2), {"bpe_model": {"proto": proto}}

    monkeypatch.setattr(ckpt, "load_model_for_decoding", fake_load)
    return exp


def test_cli_decode(tmp_path, bpe, monkeypatch, capsys):
    from mvqkd import cli

    cuts = make_cuts(tmp_path, bpe, UTTS)
    calls = []
    exp = _fake_exp(monkeypatch, tmp_path, bpe, calls)
    rc = cli.main(["decode", "--exp-dir", str(exp), "--epoch", "3", "--avg", "2",
                   "--cuts", f"set-a={cuts}", f"set-b={cuts}", "--method", "greedy_search"])
    assert rc == 0
    assert calls == [(str(exp), 3, 2, None, "cpu")]
    res = exp / "greedy_search"
    sfx = "epoch-3-avg-2-context-2-max-sym-per-frame-1"  # icefall's suffix for greedy search
    for name in ("set-a", "set-b"):
        assert (res / f"errs-{name}-{sfx}.txt").read_text().startswith("%WER = 50.00\n")
        assert (res / f"wer-summary-{name}-{sfx}.txt").read_text() == "settings\tWER\ngreedy_search\t50.0\n"
    logs = list(res.glob(f"log-decode-{sfx}-*.txt"))
    assert len(logs) == 1 and "set-a: WER 50.00%" in logs[0].read_text()
    assert "set-a\t50.00" in capsys.readouterr().out
    assert cli.main(["decode", "--exp-dir", str(exp), "--cuts", f"x={tmp_path / 'missing.jsonl.gz'}"]) == 2


def test_two_decodes_with_other_settings_both_survive(tmp_path, bpe, monkeypatch):
    from mvqkd import cli

    cuts = make_cuts(tmp_path, bpe, UTTS)
    exp = _fake_exp(monkeypatch, tmp_path, bpe)
    base = ["decode", "--exp-dir", str(exp), "--epoch", "3", "--cuts", f"t={cuts}"]
    assert cli.main(base + ["--method", "modified_beam_search", "--beam-size", "4"]) == 0
    assert cli.main(base + ["--method", "modified_beam_search", "--beam-size", "2"]) == 0
    assert cli.main(base + ["--method", "all"]) == 0
    names = sorted(p.name for p in exp.rglob("wer-summary-*.txt"))
    assert names == ["wer-summary-t-epoch-3-avg-1-beam-4.0-max-contexts-4-max-states-8.txt",
                     "wer-summary-t-epoch-3-avg-1-context-2-max-sym-per-frame-1.txt",
                     "wer-summary-t-epoch-3-avg-1-modified_beam_search-beam-size-2.txt",
                     "wer-summary-t-epoch-3-avg-1-modified_beam_search-beam-size-4.txt"]


def test_cli_fast_beam_search(tmp_path, bpe, monkeypatch, caplog):
    from mvqkd import cli

    cuts = make_cuts(tmp_path, bpe, UTTS)
    exp = _fake_exp(monkeypatch, tmp_path, bpe)
    args = ["decode", "--exp-dir", str(exp), "--cuts", f"t={cuts}",
            "--method", "fast_beam_search", "--beam", "20", "--max-contexts", "8", "--max-states", "64"]
    assert cli.main(args) == 0
    sfx = "epoch-3-avg-1-beam-20.0-max-contexts-8-max-states-64"  # the newest epoch, resolved
    assert (exp / "fast_beam_search" / f"wer-summary-t-{sfx}.txt").read_text() == (
        "settings\tWER\nbeam_20.0_max_contexts_8_max_states_64\t50.0\n"
    )
    assert (exp / "fast_beam_search" / f"errs-t-{sfx}.txt").read_text().startswith("%WER = 50.00\n")
    assert cli.main(args[:-2] + ["--max-states", "0"]) == 2
    assert "--max-states" in caplog.text


def test_vocab_mismatch_is_an_error(tmp_path, bpe):
    cuts = make_cuts(tmp_path, bpe, UTTS)
    model = spelling_model(bpe.get_piece_size() + 1)
    with pytest.raises(ValueError, match="vocab_size"):
        decode_dataset(model, cuts, bpe)


def test_raw_audio_and_untranscribed_cuts(tmp_path):
    """Cuts with audio only are decoded from on-the-fly fbank exactly as from stored
    (lossless) fbank; cuts without a transcript give recognitions only."""
    from lhotse import CutSet, Fbank, FbankConfig
    from lhotse.features.io import NumpyHdf5Writer

    from mvqkd.data.synthetic import make_synthetic_cuts, train_tiny_bpe, WORDS
    from mvqkd.data.tokenizer import load_bpe
    from mvqkd.decode.results import write_results
    from mvqkd.student import build_model, preset_config

    raw = make_synthetic_cuts(tmp_path / "syn", num_cuts=4, with_indexes=False)
    raw = CutSet.from_cuts(c.drop_features() for c in raw)
    stored = raw.compute_and_store_features(Fbank(FbankConfig(num_mel_bins=80)), tmp_path / "f",
                                            storage_type=NumpyHdf5Writer, num_jobs=1)
    sp = load_bpe(train_tiny_bpe([" ".join(WORDS)] * 3, tmp_path / "bpe", 30))
    torch.manual_seed(0)
    model = build_model(preset_config("tiny", sp.get_piece_size())).eval()
    a = decode_dataset(model, raw, sp)
    b = decode_dataset(model, stored, sp)
    assert a == b and all(ref for _, ref, _ in a)
    untranscribed = CutSet.from_cuts(c.drop_supervisions() for c in raw)
    res = decode_dataset(model, untranscribed, sp)
    assert [r[1] for r in res] == [None] * 4 and [r[2] for r in res] == [r[2] for r in a]
    assert write_results(tmp_path / "out", "u", "greedy_search", res) is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["recogs-u.txt"]
