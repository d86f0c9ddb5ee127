"""The RLP update's math against values computed by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.training.rl_math import (
    clipped_surrogate,
    ema_update_,
    guarded_advantages,
    kl_k3,
    normalise_loss,
    relative_drift,
    rloo_advantages,
)


def test_rloo_advantage_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    # mean 3; G/(G-1) = 4/3  ->  (-2, -1, 0, 3) * 4/3
    expected = torch.tensor([[-8 / 3, -4 / 3, 0.0, 4.0]])
    assert torch.allclose(rloo_advantages(r), expected)
    # = r_i minus the mean of the other three (leave-one-out)
    loo = torch.tensor([[1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2]])
    assert torch.allclose(rloo_advantages(r), loo)
    assert torch.equal(rloo_advantages(torch.tensor([[5.0]])), torch.zeros(1, 1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=8), st.floats(-5, 5))
def test_rloo_is_leave_one_out_and_shift_invariant(values, shift):
    r = torch.tensor([values], dtype=torch.float64)
    adv = rloo_advantages(r)
    g = len(values)
    for i in range(g):
        others = (sum(values) - values[i]) / (g - 1)
        assert adv[0, i].item() == pytest.approx(values[i] - others, abs=1e-9)
    assert torch.allclose(rloo_advantages(r + shift), adv, atol=1e-9)  # no std scaling, only centring


def test_guarded_advantages_by_hand():
    r = torch.tensor([[-6.0, -6.0, -6.0, 0.0]])  # the last thought is empty and scores 0
    empty = torch.tensor([[False, False, False, True]])
    plain = guarded_advantages(r, empty)
    assert torch.allclose(plain, torch.tensor([[-2.0, -2.0, -2.0, 6.0]]))
    # penalty 8: the empty one's reward becomes -8 -> mean -6.5; advantages (0.5, 0.5, 0.5, -1.5) * 4/3
    pen = guarded_advantages(r, empty, empty_penalty=8.0)
    assert torch.allclose(pen, torch.tensor([[2 / 3, 2 / 3, 2 / 3, -2.0]]))
    capped = guarded_advantages(r, empty, empty_cap=0.0)
    assert torch.allclose(capped, torch.tensor([[-2.0, -2.0, -2.0, 0.0]]))


def test_clipped_surrogate_by_hand():
    new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1]))
    old = torch.zeros(5)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    loss, clipped = clipped_surrogate(new, old, adv, eps_low=0.2, eps_high=0.2)
    # ratio 1.5, A=+1: min(1.5, 1.2) = 1.2 (clipped); A=-1: min(-1.5, -1.2) = -1.5
    # ratio 0.5, A=+1: min(0.5, 0.8) = 0.5; A=-1: min(-0.5, -0.8) = -0.8 (clipped); ratio 1.1 inside
    assert torch.allclose(loss, torch.tensor([-1.2, 1.5, -0.5, 0.8, -2.2]), atol=1e-6)
    assert clipped.tolist() == [True, False, False, True, False]
    # asymmetric range: eps_high 0.6 lets ratio 1.5 through
    loss2, clipped2 = clipped_surrogate(new, old, adv, eps_low=0.2, eps_high=0.6)
    assert loss2[0].item() == pytest.approx(-1.5) and not clipped2[0]


def test_gradient_at_ratio_one_is_the_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([[2.0], [-1.0]]).expand(2, 3)
    per_token, _ = clipped_surrogate(logp, logp.detach(), adv)
    normalise_loss(per_token, mask, "sequence", denominator=2).backward()
    # d/d logp = -A / |c_i| / N  on the thought's tokens
    assert torch.allclose(logp.grad, torch.tensor([[-0.5, -0.5, 0.0], [0.5, 0.0, 0.0]]))


def test_normalisation_modes_by_hand():
    per_token = torch.tensor([[1.0, 3.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # sequence: (mean(1,3) + mean(4)) / 2 = (2 + 4) / 2
    assert normalise_loss(per_token, mask, "sequence", 2).item() == pytest.approx(3.0)
    # token: (1 + 3 + 4) / 3
    assert normalise_loss(per_token, mask, "token", 3).item() == pytest.approx(8 / 3)
    with pytest.raises(ValueError):
        normalise_loss(per_token, mask, "median", 1)


def test_kl_k3_by_hand():
    assert kl_k3(torch.tensor(0.0), torch.tensor(0.0)).item() == 0.0
    d = math.log(0.5)  # reference half as likely as the policy
    assert kl_k3(torch.tensor(0.0), torch.tensor(d)).item() == pytest.approx(0.5 - d - 1)


def test_ema_update_by_hand():
    teacher = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    policy = [torch.tensor([3.0, 2.0]), torch.tensor([[10.0]])]
    ema_update_(teacher, policy, tau=0.9)
    assert torch.allclose(teacher[0], torch.tensor([1.2, 2.0]))
    assert torch.allclose(teacher[1], torch.tensor([[1.0]]))
    ema_update_(teacher, policy, tau=1.0)  # tau = 1: a frozen teacher
    assert torch.allclose(teacher[0], torch.tensor([1.2, 2.0]))
    assert relative_drift([torch.tensor([3.0, 4.0])], [torch.tensor([3.0, 4.0])]) == 0.0
    assert relative_drift([torch.tensor([0.0, 0.0])], [torch.tensor([3.0, 4.0])]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ema_update_(teacher, policy[:1], 0.9)


def test_drift_by_group_names_the_part_that_moved():
    from workbench.training.rl_math import drift_by_group, module_group

    assert [
        module_group(n)
        for n in (
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.norm.weight",
        )
    ] == ["embedding", "attention", "mlp", "norm"]
    teacher = [torch.ones(4), torch.ones(4)]
    policy = [("model.embed_tokens.weight", torch.ones(4)), ("model.layers.0.mlp.up_proj.weight", 2 * torch.ones(4))]
    out = drift_by_group(teacher, policy)
    assert out["embedding"] == 0.0 and out["mlp"] == pytest.approx(0.5)
    assert out["all"] == pytest.approx(relative_drift(teacher, [p for _, p in policy]))
