"""Policy-gradient losses: pure functions on padded per-token tensors (B, T) with a 0/1 mask.

PPO clipped surrogate (Schulman et al. 2017, eq. 7), per token t of sample i:
    r = exp(logp - old_logp),  l = -min(r * A_i, clip(r, 1 - eps, 1 + eps) * A_i)
REINFORCE: l = -A_i * logp (the gradient of the PPO loss at r = 1 without clipping).
KL to a frozen reference uses the k3 estimator (Schulman 2020): exp(ref - logp) - (ref - logp) - 1,
which is non-negative and unbiased for KL(pi || ref) under samples from pi.

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


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the softmax over the vocabulary, (B, T, V) -> (B, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
