"""Per-token log-probabilities of completions under a causal LM, for the learner and the evals.

Prompt and completion ids are concatenated (right-padded); the logits at position t predict token
t + 1, so completion token j (at absolute position p + j) is scored by the logits at p + j - 1.
"""
from __future__ import annotations

from typing import Sequence

import torch

from compose_rl.rl.losses import token_entropy


def pad_right(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def completion_logprobs(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                        pad: int = 0, with_entropy: bool = False, temperature: float = 1.0):
    """Returns (logp, mask[, entropy]) of shape (B, Tc): logp of each completion token, 0/1 mask.

    `temperature` T scores the distribution softmax(logits / T), the one an engine samples from at T
    (and reports log-probs of): the learner passes the rollout temperature so that its policy
    gradient and PPO ratios are of the sampled policy. T = 1 (the default) is the model's own
    distribution, which the evaluations score."""
    if not temperature > 0:
        raise ValueError(f"completion_logprobs: temperature must be > 0 (got {temperature}); greedy decoding has no log-probs to train on")
    full = [list(p) + list(c) for p, c in zip(prompts, completions)]
    ids, attn = pad_right(full, pad)
    device = next(model.parameters()).device
    # only positions from the shortest prompt's last token on predict completion tokens: skip the
    # LM head (vocabulary-sized) on the rest, which matters for 49k-token vocabularies
    first = max(min((len(p) for p in prompts), default=1) - 1, 0)
    keep = ids.shape[1] - first
    logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), logits_to_keep=keep).logits
    tc = max((len(c) for c in completions), default=0)
    b = len(full)
    # gather index of the logits that predict each completion token
    pos = torch.zeros((b, tc), dtype=torch.long)
    tgt = torch.zeros((b, tc), dtype=torch.long)
    cmask = torch.zeros((b, tc), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        n = len(c)
        if n == 0:
            continue
        pos[i, :n] = torch.arange(len(p) - 1 - first, len(p) - 1 - first + n)
        tgt[i, :n] = torch.tensor(list(c), dtype=torch.long)
        cmask[i, :n] = 1.0
    pos, tgt, cmask = pos.to(device), tgt.to(device), cmask.to(device)
    picked = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))  # (B, Tc, V)
    if temperature != 1.0:
        picked = picked.float() / temperature
    logp_all = torch.log_softmax(picked.float(), dim=-1)
    logp = logp_all.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) * cmask
    if with_entropy:
        return logp, cmask, token_entropy(picked) * cmask
    return logp, cmask
