"""Policy-gradient losses: pure functions on padded per-token tensors (B, T) with a 0/1 mask.

PPO clipped surrogate (Schulman et al. 2017, eq. 7), per token t of sample i:
    r = exp(logp - old_logp),  l = -min(r * A_i, clip(r, 1 - eps, 1 + eps) * A_i)
REINFORCE: l = -A_i * logp (the gradient of the PPO loss at r = 1 without clipping).

KL penalty to a frozen reference (`kl_k2_seq`): the k2 estimator 1/2 (log pi(y) - log ref(y))^2 of
the whole completion y (Tang & Munos 2025, "On a few pitfalls in KL divergence gradient estimation
for RL"). Its gradient is (log pi(y)/ref(y)) grad log pi(y), whose expectation under y ~ pi is
exactly grad KL(pi || ref), since E_pi[grad log pi] = 0. Two pitfalls it avoids: k3 used as a loss
has, in expectation, the gradient of KL(ref || pi), not KL(pi || ref); and summing per-token k2
terms drops the cross terms (a later token's log-ratio times an earlier token's score), i.e. the
effect of a token on the KL of everything after it. Samples drawn by pi_old (PPO epochs after the
first) get the stop-gradient weight pi(y) / pi_old(y), which keeps the expectation exact.
`kl_k3` stays as a value estimate for diagnostics (non-negative, unbiased for KL(pi || ref)).

Token aggregation (how per-token losses become one number) matters for length bias:
- "token_mean": sum over all tokens / number of tokens in the batch (DAPO); long answers weigh more.
- "seq_mean":   mean over each sample's tokens, then mean over samples (original GRPO); short
                answers weigh more per token.
- "constant":   sum over all tokens / (B * max_len) (Dr.GRPO; SPIRAL): no length bias.
"""
from __future__ import annotations

import torch


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str, max_len: int | None = None) -> torch.Tensor:
    mask = mask.to(per_token.dtype)
    if how == "token_mean":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if how == "seq_mean":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.mean()
    if how == "constant":
        length = max_len if max_len is not None else per_token.shape[-1]
        return (per_token * mask).sum() / (per_token.shape[0] * length)
    raise ValueError(f"unknown token aggregation {how!r}: use token_mean, seq_mean or constant")


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                  clip: float = 0.2, how: str = "token_mean", max_len: int | None = None):
    """Returns (loss, clip_fraction). `advantages` is (B,), broadcast over tokens."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv
    per_token = -torch.minimum(unclipped, clipped)
    was_clipped = (clipped < unclipped).to(logp.dtype)
    m = mask.to(logp.dtype)
    clip_frac = (was_clipped * m).sum() / m.sum().clamp(min=1.0)
    return aggregate(per_token, mask, how, max_len), clip_frac.detach()


def reinforce_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                   how: str = "token_mean", max_len: int | None = None) -> torch.Tensor:
    return aggregate(-advantages.unsqueeze(-1) * logp, mask, how, max_len)


def kl_k2_seq(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
              old_logp: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample KL loss (B,): w * 1/2 (sum_t log pi(y_t|.) - log ref(y_t|.))^2, w = sg(pi(y) / pi_old(y))
    (w = 1 when `old_logp` is None). Its expected gradient over y ~ pi_old is grad KL(pi || ref) of the
    completion distribution (see the module docstring); average it over the samples."""
    m = mask.to(logp.dtype)
    log_r = ((logp - ref_logp) * m).sum(-1)
    k2 = 0.5 * log_r ** 2
    if old_logp is not None:
        k2 = torch.exp(((logp - old_logp) * m).sum(-1)).detach() * k2
    return k2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref): a value estimate only; as a loss its gradient is wrong."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the softmax over the vocabulary, (B, T, V) -> (B, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
