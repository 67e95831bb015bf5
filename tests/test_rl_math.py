"""Advantage and loss numerics pinned against values computed by hand."""
import math

import pytest
import torch

from compose_rl.rl.advantages import RoleBaselines, batch_mean, group_normalized, mixed_groups
from compose_rl.rl.losses import aggregate, kl_k2_seq, kl_k3, ppo_clip_loss, reinforce_loss


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


def _two_kuhn_games():
    """Two multi-turn games as play_games emits them (game 0's turns, then game 1's), as Samples.

    game 0: P0 moves twice and wins 2, P1 moves once and loses 2.
    game 1: P1's first attempt is invalid and re-prompted (retry sample, reward -3), then P1 moves
            twice and wins 1; P0 moves once and loses 1.
    """
    from compose_rl.types import Sample

    rows = [  # (episode, role, reward, retry)
        (0, 0, 2.0, False), (0, 1, -2.0, False), (0, 0, 2.0, False),
        (1, 0, -1.0, False), (1, 1, -3.0, True), (1, 1, 1.0, False), (1, 1, 1.0, False),
    ]
    return [Sample([1], [2], [0.0], r, game="kuhn", role=p, episode=e, group=e, retry=retry)
            for e, p, r, retry in rows]


def test_rae_two_multi_turn_games_by_hand():
    from compose_rl.rl.learner import compute_advantages

    rb = RoleBaselines(decay=0.9)
    rb.values = {"kuhn/p0": 0.5}  # p1 has no baseline yet: 0
    samples = _two_kuhn_games()
    compute_advantages(samples, "rae", rb)
    # every turn reads the batch-start baseline: p0 b = 0.5, p1 b = 0 (retry sample included)
    assert [s.advantage for s in samples] == pytest.approx([1.5, -2.0, 1.5, -1.5, -3.0, 1.0, 1.0])
    # one update per game and role, game 0 first; the retry's -3 never enters:
    # p0: 0.9*0.5 + 0.1*2 = 0.65 -> 0.9*0.65 + 0.1*(-1) = 0.485
    # p1: 0.9*0 + 0.1*(-2) = -0.2 -> 0.9*(-0.2) + 0.1*1 = -0.08
    assert rb.values == pytest.approx({"kuhn/p0": 0.485, "kuhn/p1": -0.08})
    # the next batch reads the updated baselines
    nxt = [s for s in _two_kuhn_games()[:2]]
    compute_advantages(nxt, "rae", rb)
    assert [s.advantage for s in nxt] == pytest.approx([2.0 - 0.485, -2.0 + 0.08])
    rb2 = RoleBaselines()
    rb2.load_state_dict(rb.state_dict())
    assert rb2.values == rb.values and rb2.decay == 0.9


def test_rae_update_order_is_game_order():
    # same two games with game 1 listed first: the EMA ends elsewhere (updates do not commute)
    rb = RoleBaselines(decay=0.9)
    rb.values = {"kuhn/p0": 0.5}
    samples = _two_kuhn_games()
    samples = samples[3:] + samples[:3]
    rb.advantages([s.reward for s in samples], [s.game for s in samples], [s.role for s in samples],
                  [s.episode for s in samples], [s.retry for s in samples])
    # p0: 0.9*0.5 - 0.1 = 0.35 -> 0.9*0.35 + 0.2 = 0.515; p1: 0.1 -> 0.09 - 0.2 = -0.11
    assert rb.values == pytest.approx({"kuhn/p0": 0.515, "kuhn/p1": -0.11})


def test_rae_separates_games_and_rejects_bad_input():
    rb = RoleBaselines(decay=0.5)
    rb.advantages([4.0], ["a"], [0], [0])
    assert rb.advantages([4.0, 4.0], ["a", "b"], [0, 0], [0, 1]) == pytest.approx([2.0, 4.0])
    with pytest.raises(ValueError, match="Sample.episode"):
        rb.advantages([1.0], ["a"], [0], [-1])
    with pytest.raises(ValueError, match="different returns"):
        rb.advantages([1.0, 0.0], ["a", "a"], [0, 0], [3, 3])


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


# ------------------------------------------------------------------ KL gradient (Tang & Munos 2025)
THETA = torch.tensor([0.3, -1.2, 0.8, 0.0])
REF = torch.tensor([-0.5, 0.4, 0.1, 1.0])


def _expected_grad(per_outcome_loss, theta, weights):
    """sum_y weights[y] * d loss(y) / d theta, enumerating every outcome y."""
    th = theta.clone().requires_grad_(True)
    total = sum(weights[y] * per_outcome_loss(th, y) for y in range(len(weights)))
    (g,) = torch.autograd.grad(total, th)
    return g


def test_k2_expected_gradient_is_the_exact_kl_gradient_on_a_categorical():
    ref_lp = torch.log_softmax(REF, -1)
    th = THETA.clone().requires_grad_(True)
    lp = torch.log_softmax(th, -1)
    (exact,) = torch.autograd.grad((lp.exp() * (lp - ref_lp)).sum(), th)  # grad KL(pi || ref)
    pi = torch.softmax(THETA, -1).tolist()
    one = torch.ones(1, 1)

    def k2(t, y):
        return kl_k2_seq(torch.log_softmax(t, -1)[y].view(1, 1), ref_lp[y].view(1, 1), one)[0]

    def k3(t, y):
        return kl_k3(torch.log_softmax(t, -1)[y], ref_lp[y])

    assert torch.allclose(_expected_grad(k2, THETA, pi), exact, atol=1e-6)
    # k3 as a loss gives the gradient of KL(ref || pi) instead: a different vector here
    rev = torch.softmax(REF, -1) - torch.softmax(THETA, -1)  # -grad KL(ref || pi) wrt logits = ref - pi
    assert torch.allclose(_expected_grad(k3, THETA, pi), -rev, atol=1e-6)
    assert (_expected_grad(k3, THETA, pi) - exact).abs().max() > 0.05
    # off-policy (samples from pi_old, weight sg(pi / pi_old)): still the exact gradient
    old_lp = torch.log_softmax(torch.tensor([0.0, 0.5, -0.5, 0.2]), -1)

    def k2_off(t, y):
        return kl_k2_seq(torch.log_softmax(t, -1)[y].view(1, 1), ref_lp[y].view(1, 1), one, old_lp[y].view(1, 1))[0]

    assert torch.allclose(_expected_grad(k2_off, THETA, old_lp.exp().tolist()), exact, atol=1e-6)


def test_k2_of_the_whole_completion_is_exact_for_two_tokens():
    """A two-token policy pi(a, b) = p(a) q(b | a) (3 x 3 outcomes): the expected gradient of the
    sequence k2 equals grad KL(pi || ref) of the joint; the sum of per-token k2 terms does not."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3 + 9, generator=g)  # first-token logits, then 3 rows of second-token logits
    ref_theta = torch.randn(3 + 9, generator=g)

    def token_lps(t, a, b):
        return torch.stack([torch.log_softmax(t[:3], -1)[a], torch.log_softmax(t[3:].view(3, 3)[a], -1)[b]]).view(1, 2)

    outcomes = [(a, b) for a in range(3) for b in range(3)]
    th = theta.clone().requires_grad_(True)
    kl = sum(token_lps(th, a, b).sum().exp() * (token_lps(th, a, b) - token_lps(ref_theta, a, b)).sum()
             for a, b in outcomes)
    (exact,) = torch.autograd.grad(kl, th)
    pi = [float(token_lps(theta, a, b).sum().exp()) for a, b in outcomes]
    mask = torch.ones(1, 2)

    def seq_k2(t, y):
        a, b = outcomes[y]
        return kl_k2_seq(token_lps(t, a, b), token_lps(ref_theta, a, b), mask)[0]

    def per_token_k2(t, y):
        a, b = outcomes[y]
        return (0.5 * (token_lps(t, a, b) - token_lps(ref_theta, a, b)) ** 2).sum()

    assert torch.allclose(_expected_grad(seq_k2, theta, pi), exact, atol=1e-5)
    assert (_expected_grad(per_token_k2, theta, pi) - exact).abs().max() > 1e-2


def test_k2_value_and_mask_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the padded third token is ignored
    # log r = 0.5 - 1.0 = -0.5 -> 1/2 * 0.25
    assert float(kl_k2_seq(logp, ref, mask)[0]) == pytest.approx(0.125)
    # pi / pi_old = exp(0.3) weights it
    old = logp - torch.tensor([[0.1, 0.2, 5.0]])
    assert float(kl_k2_seq(logp, ref, mask, old)[0]) == pytest.approx(0.125 * math.exp(0.3))
