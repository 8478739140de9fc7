"""The students' and the teacher's AdamW: the multi-tensor update is torch's per-parameter
loop, bit for bit, and a resumed optimiser keeps it."""

import torch

from mvqkd.training.optim import adamw, build_optimizer, load_optimizer_state


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,), (16, 16)]
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]


def _run(make, steps=6):
    params = _params(0)
    opt = make([{"params": params[:3], "weight_decay": 0.01},
                {"params": params[3:], "weight_decay": 0.0}])
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 10 ** float(torch.randint(-3, 3, (1,), generator=g))
        opt.step()
    return params, opt


def test_foreach_adamw_equals_the_per_parameter_loop_bit_for_bit():
    kw = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-8)
    ref, ref_opt = _run(lambda groups: torch.optim.AdamW(groups, foreach=False, **kw))
    got, got_opt = _run(lambda groups: adamw(groups, **kw))
    assert all(g["foreach"] is True for g in got_opt.param_groups)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    for a, b in zip(ref, got):
        sa, sb = ref_opt.state[a], got_opt.state[b]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_a_resumed_optimizer_keeps_foreach_from_an_older_state_dict():
    old = torch.optim.AdamW(_params(0), lr=1e-3)  # as checkpoints written before adamw() have it
    assert old.state_dict()["param_groups"][0]["foreach"] is None
    model = torch.nn.Linear(5, 7)
    new, _ = build_optimizer(model, 1e-3, 0.01, 10, 100.0)
    state = new.state_dict()
    for group in state["param_groups"]:
        group["foreach"] = None
    load_optimizer_state(new, state)
    assert [g["foreach"] for g in new.param_groups] == [True, True]
    assert [g["weight_decay"] for g in new.param_groups] == [0.01, 0.0]
