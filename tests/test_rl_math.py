"""Advantage and loss numerics pinned against values computed by hand."""
import math

import pytest
import torch

from compose_rl.rl.advantages import RoleBaselines, batch_mean, group_normalized, mixed_groups
from compose_rl.rl.losses import aggregate, kl_k3, ppo_clip_loss, reinforce_loss


def test_group_normalized_by_hand():
    # group 0: rewards 1, 0 -> mean 0.5, population std 0.5 -> +1, -1
    # group 1: rewards 1, 1, -1 -> mean 1/3, std sqrt(((2/3)^2*2 + (4/3)^2)/3) = sqrt(8/9) = 0.9428
    a = group_normalized([1, 0, 1, 1, -1], [0, 0, 1, 1, 1], eps=0.0)
    assert a[:2] == pytest.approx([1.0, -1.0])
    s = math.sqrt(8 / 9)
    assert a[2:] == pytest.approx([(2 / 3) / s, (2 / 3) / s, (-4 / 3) / s])


def test_group_unscaled_and_uniform_group_is_zero():
    assert group_normalized([1, 0, 0, 0], [0, 0, 1, 1], scale=False) == pytest.approx([0.5, -0.5, 0.0, 0.0])
    assert mixed_groups([1, 0, 0, 0], [0, 0, 1, 1]) == {0}


def test_batch_mean():
    assert batch_mean([1.0, 2.0, 6.0]) == pytest.approx([-2.0, -1.0, 3.0])
    assert batch_mean([]) == []


def test_rae_reads_baseline_before_update():
    rb = RoleBaselines(decay=0.9)
    # kuhn p0: returns 1, then 2 ; p1: -1
    a = rb.advantages([1.0, -1.0, 2.0], ["kuhn", "kuhn", "kuhn"], [0, 1, 0])
    # p0: b=0 -> A=1, b <- 0.1; p1: b=0 -> A=-1, b <- -0.1; p0: A = 2 - 0.1 = 1.9, b <- 0.09 + 0.2 = 0.29
    assert a == pytest.approx([1.0, -1.0, 1.9])
    assert rb.values == pytest.approx({"kuhn/p0": 0.29, "kuhn/p1": -0.1})
    rb2 = RoleBaselines()
    rb2.load_state_dict(rb.state_dict())
    assert rb2.values == rb.values and rb2.decay == 0.9


def test_rae_separates_games():
    rb = RoleBaselines(decay=0.5)
    rb.advantages([4.0], ["a"], [0])
    assert rb.advantages([4.0, 4.0], ["a", "b"], [0, 0]) == pytest.approx([2.0, 4.0])


def test_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert float(aggregate(x, m, "token_mean")) == pytest.approx(10 / 4)
    assert float(aggregate(x, m, "seq_mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate(x, m, "constant", max_len=5)) == pytest.approx(10 / (2 * 5))
    with pytest.raises(ValueError):
        aggregate(x, m, "nope")


def test_ppo_clip_by_hand():
    old = torch.zeros(1, 2)
    # ratios e^0.5 = 1.6487 (clipped to 1.2 for A > 0) and e^-0.5 = 0.6065 (unclipped for A > 0)
    logp = torch.tensor([[0.5, -0.5]])
    mask = torch.ones(1, 2)
    loss, frac = ppo_clip_loss(logp, old, torch.tensor([2.0]), mask, clip=0.2)
    assert float(loss) == pytest.approx(-(1.2 * 2 + math.exp(-0.5) * 2) / 2)
    assert float(frac) == pytest.approx(0.5)
    # negative advantage: min picks the larger penalty: token 0 unclipped (r=1.6487), token 1 clipped to 0.8
    loss, frac = ppo_clip_loss(logp, old, torch.tensor([-1.0]), mask, clip=0.2)
    assert float(loss) == pytest.approx((math.exp(0.5) + 0.8) / 2)
    assert float(frac) == pytest.approx(0.5)


def test_ppo_gradient_equals_reinforce_at_ratio_one():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0]])
    adv = torch.tensor([0.7])
    loss, _ = ppo_clip_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    g1 = logp.grad.clone()
    logp.grad = None
    reinforce_loss(logp, adv, mask).backward()
    # d/dlogp of -A*exp(logp-old) at logp=old is -A; REINFORCE: -A as well; token_mean divides by 2
    assert torch.allclose(g1, torch.tensor([[-0.35, -0.35]]))
    assert torch.allclose(logp.grad, g1)


def test_kl_k3_by_hand():
    logp = torch.tensor([0.0, -1.0])
    ref = torch.tensor([0.0, 0.0])
    # d = ref - logp = [0, 1] -> e^d - d - 1 = [0, e - 2]
    assert torch.allclose(kl_k3(logp, ref), torch.tensor([0.0, math.e - 2]))
