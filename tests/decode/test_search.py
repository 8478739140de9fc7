"""Greedy, modified beam and fast beam search against brute force and against each other."""

import itertools
import math

import pytest
import torch

from mvqkd.decode.search import fast_beam_search, greedy_search, modified_beam_search, search
from decode_tiny_model import TinyTransducer, peaked_model


def random_encoder_out(B=3, T=5, E=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, E, generator=g) * 2
    lens = torch.randint(1, T + 1, (B,), generator=g)
    lens[0] = T
    return enc, lens


def model(seed, vocab_size=3, context_size=2):
    torch.manual_seed(seed)
    m = TinyTransducer(vocab_size=vocab_size, context_size=context_size).eval()
    with torch.no_grad():
        m.joiner.output_linear.weight.mul_(3)  # make the distributions less flat
    return m


def all_paths(m, enc, T_b):
    """Every path with at most one symbol per frame over the first T_b frames of ``enc``
    (T, E): yields (token sequence incl. the context blanks, path log-prob)."""
    ctx, blank = m.decoder.context_size, m.blank_id
    enc_p = m.joiner.encoder_proj(enc)  # (T, J)
    for path in itertools.product(range(m.vocab_size), repeat=T_b):
        ys = [blank] * ctx
        lp = 0.0
        for t, tok in enumerate(path):
            dec = m.joiner.decoder_proj(m.decoder(torch.tensor([ys[-ctx:]]), need_pad=False)[:, 0])
            lp += float(m.joiner(enc_p[t], dec[0], project_input=False).log_softmax(-1)[tok])
            if tok != blank:
                ys.append(tok)
        yield tuple(ys), lp


def brute_force_best(m, enc, T_b, length_norm=True):
    """Exact modified-beam-search objective: path probabilities summed per token
    sequence, best by log-prob / len(ys)."""
    totals = {}
    for key, lp in all_paths(m, enc, T_b):
        totals[key] = math.log(math.exp(totals[key]) + math.exp(lp)) if key in totals else lp
    best = max(totals, key=lambda k: totals[k] / len(k) if length_norm else totals[k])
    return list(best[m.decoder.context_size:])


def brute_force_best_path(m, enc, T_b):
    """Exact fast-beam-search (one best) objective: the single best path; returns
    (tokens, log-prob)."""
    ys, lp = max(all_paths(m, enc, T_b), key=lambda p: p[1])
    return list(ys[m.decoder.context_size:]), lp


@torch.no_grad()
@pytest.mark.parametrize("seed", range(4))
def test_beam_search_exact_with_wide_beam(seed):
    # V=3, T<=4: at most 3**4 = 81 alignments, so a beam of 81 never prunes.
    m = model(seed)
    enc, lens = random_encoder_out(B=2, T=4, seed=seed)
    got = modified_beam_search(m, enc, lens, beam=81)
    want = [brute_force_best(m, enc[b], int(lens[b])) for b in range(2)]
    assert got == want


@torch.no_grad()
@pytest.mark.parametrize("seed", range(3))
def test_beam_one_equals_greedy(seed):
    # beam 1 keeps the single best (hyp, token) per frame: exactly greedy with 1 symbol/frame
    m = model(seed, vocab_size=6)
    enc, lens = random_encoder_out(B=4, T=12, seed=seed)
    assert modified_beam_search(m, enc, lens, beam=1) == greedy_search(m, enc, lens)


@torch.no_grad()
@pytest.mark.parametrize("beam", [1, 2, 4, 8])
def test_peaked_joiner_greedy_equals_beam(beam):
    m = peaked_model()
    enc, lens = random_encoder_out(B=4, T=10, seed=1)
    greedy = greedy_search(m, enc, lens)
    assert any(len(h) > 0 for h in greedy)
    assert modified_beam_search(m, enc, lens, beam=beam) == greedy
    # and greedy is the per-frame argmax, skipping blanks
    logits = m.joiner(m.joiner.encoder_proj(enc), torch.zeros(1, 1, 8), project_input=False)
    for b in range(4):
        am = logits[b, : int(lens[b])].argmax(-1).tolist()
        assert greedy[b] == [y for y in am if y != m.blank_id]


@torch.no_grad()
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("context_size", [1, 2])
def test_fast_beam_search_exact_without_pruning(seed, context_size):
    # V=3: at most 3**2 = 9 contexts, so max_states 9 and an infinite beam never prune and
    # the Viterbi merge by context must find the best of all 3**5 paths
    m = model(seed, context_size=context_size)
    enc, lens = random_encoder_out(B=3, T=5, seed=seed)
    got = fast_beam_search(m, enc, lens, beam=math.inf, max_contexts=9, max_states=9)
    want = [brute_force_best_path(m, enc[b], int(lens[b]))[0] for b in range(3)]
    assert got == want


@torch.no_grad()
def test_fast_beam_search_best_path_differs_from_best_sequence():
    # the two beam searches optimise different things (best path vs summed, length-
    # normalised sequence probability); find a case where the exact answers differ and
    # check that each search returns its own
    for seed in range(40):
        m = model(seed)
        enc, lens = random_encoder_out(B=1, T=4, seed=seed)
        path, _ = brute_force_best_path(m, enc[0], int(lens[0]))
        seq = brute_force_best(m, enc[0], int(lens[0]))
        if path != seq:
            assert fast_beam_search(m, enc, lens, beam=math.inf, max_contexts=9, max_states=9) == [path]
            assert modified_beam_search(m, enc, lens, beam=81) == [seq]
            return
    pytest.fail("no seed where the best path and the best sequence differ")


@torch.no_grad()
@pytest.mark.parametrize("seed", range(3))
def test_fast_beam_search_one_state_equals_greedy(seed):
    # one surviving state per frame: the best (state, token) extension, i.e. the argmax
    m = model(seed, vocab_size=6)
    enc, lens = random_encoder_out(B=4, T=12, seed=seed)
    greedy = greedy_search(m, enc, lens)
    assert fast_beam_search(m, enc, lens, max_states=1) == greedy
    assert fast_beam_search(m, enc, lens, max_contexts=1, max_states=8) == greedy
    # a tiny log-prob beam also keeps only the best state
    assert fast_beam_search(m, enc, lens, beam=1e-6, max_states=8) == greedy


@torch.no_grad()
@pytest.mark.parametrize("beam", [0.5, 4.0, 20.0])
def test_fast_beam_search_peaked_joiner_equals_greedy(beam):
    m = peaked_model()
    enc, lens = random_encoder_out(B=4, T=10, seed=1)
    assert fast_beam_search(m, enc, lens, beam=beam, max_contexts=8, max_states=64) == \
        greedy_search(m, enc, lens)


@torch.no_grad()
@pytest.mark.parametrize("method", ["greedy_search", "modified_beam_search", "fast_beam_search"])
def test_batched_equals_one_by_one(method):
    m = model(5, vocab_size=6)
    enc, lens = random_encoder_out(B=4, T=9, seed=5)
    batched = search(method, m, enc, lens, beam_size=3)
    single = [search(method, m, enc[b:b + 1, : int(lens[b])], lens[b:b + 1], beam_size=3)[0] for b in range(4)]
    assert batched == single


@torch.no_grad()
def test_greedy_max_sym_per_frame():
    m = peaked_model()
    with torch.no_grad():  # make blank never the argmax
        m.joiner.output_linear.bias[m.blank_id] = -1e4
    enc, lens = random_encoder_out(B=3, T=6, seed=2)
    for k in (1, 3):
        hyps = greedy_search(m, enc, lens, max_sym_per_frame=k)
        assert [len(h) for h in hyps] == [k * int(n) for n in lens]


def test_unk_is_not_emitted():
    m = peaked_model()
    enc, lens = random_encoder_out(B=3, T=10, seed=1)
    greedy = greedy_search(m, enc, lens)
    frequent = max(set(sum(greedy, [])), key=sum(greedy, []).count)
    m.unk_id = frequent
    for method in ("greedy_search", "modified_beam_search", "fast_beam_search"):
        hyps = search(method, m, enc, lens, beam_size=2)
        assert hyps == [[y for y in h if y != frequent] for h in greedy]


def test_bad_arguments():
    m = peaked_model()
    enc, lens = random_encoder_out()
    with pytest.raises(ValueError, match="encoder_out_lens"):
        greedy_search(m, enc, lens[:-1])
    with pytest.raises(ValueError, match="beam"):
        modified_beam_search(m, enc, lens, beam=0)
    with pytest.raises(ValueError, match="beam"):
        fast_beam_search(m, enc, lens, beam=0.0)
    with pytest.raises(ValueError, match="max_states"):
        fast_beam_search(m, enc, lens, max_states=0)
    with pytest.raises(ValueError, match="unknown decoding method"):
        search("viterbi", m, enc, lens)
