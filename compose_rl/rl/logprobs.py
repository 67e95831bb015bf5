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


# ----------------------------------------------------------------------------- scoring fixed answers
# Summed log-probs of given completions (no sampling): the exact action distributions of the game
# evaluations (evals/games.py lm_action_logprobs) are built on these.

def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sequence_logprobs(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                      batch_size: int = 64) -> list[float]:
    """sum_t log p(completion_t | prompt, completion_<t) for every (prompt_ids, completion_ids).

    Batched with right padding and an attention mask; rows are sorted by prompt length so that a
    batch shares similar boundaries and `logits_to_keep` stays small.
    """
    for p, c in pairs:
        if len(p) == 0 or len(c) == 0:
            raise ValueError("need a non-empty prompt and completion to score")
    out = [0.0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            logp, mask = completion_logprobs(model, [pairs[i][0] for i in idx], [pairs[i][1] for i in idx], pad=pad_id)
            sums = (logp * mask).sum(dim=1).tolist()
            for r, i in enumerate(idx):
                out[i] = float(sums[r])
    finally:
        model.train(was_training)
    return out


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(x) for x in seqs)
    for j in range(n):
        t = first[j]
        if any(x[j] != t for x in seqs):
            return j
    return n


def _prefix_batches(prompts, completions, batch_size: int | None) -> list[list[int]]:
    """Prompt indices grouped into batches of at most `batch_size` completion rows, prompts sorted by
    length (None: one batch)."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    if batch_size is None:
        return [order] if order else []
    batches, cur, rows = [], [], 0
    for i in order:
        k = len(completions[i])
        if cur and rows + k > batch_size:
            batches.append(cur)
            cur, rows = [], 0
        cur.append(i)
        rows += k
    if cur:
        batches.append(cur)
    return batches


def shared_prefix_sums(model, prompts: Sequence[Sequence[int]],
                       completions: Sequence[Sequence[Sequence[int]]], pad_id: int,
                       batch_size: int | None = None) -> torch.Tensor:
    """Summed log-probability of every completion, each prompt encoded once for all of its completions.

    `completions[i]` are the completions of `prompts[i]`; returns a (sum of len(completions[i]),)
    tensor in that order (prompt 0's completions first), **with the graph kept**: the learner's exact
    legal-answer table (rl/learner.py) takes gradients through it. The model's train/eval mode and the
    grad mode are the caller's. Per batch (prompts sorted by length, at most `batch_size` completion
    rows; None: all in one batch):
      A. the prefix common to the batch's prompts (rules text, ...) runs once, batch size 1;
      B. its KV cache is repeated for every prompt, and the rest of each prompt runs right-padded;
      C. the cache is gathered for every completion row, and the completions run right-padded.
    Explicit `position_ids` keep every real token at its true position, and the attention mask
    hides the padding left inside the cache after stage B, so each row sees exactly
    `prompt + completion` as in an unpadded forward (checked against a per-sequence loop and against
    `completion_logprobs`' values and gradients in the tests). Several times cheaper than scoring
    every (prompt, completion) row in full when prompts are long and share text (Leduc: ~600-character
    prompts, ~350 of them the same rules). The cache needs `use_cache`, so a model training with
    gradient checkpointing (which turns the cache off) must use `completion_logprobs` instead.
    """
    for p, cs in zip(prompts, completions):
        if len(p) == 0 or any(len(c) == 0 for c in cs):
            raise ValueError("need a non-empty prompt and completions to score")
    device = _model_device(model)
    offsets, n = [], 0
    for cs in completions:
        offsets.append(n)
        n += len(cs)
    parts, where = [], []
    for idx in _prefix_batches(prompts, completions, batch_size):
        ps = [list(prompts[i]) for i in idx]
        plen = torch.tensor([len(p) for p in ps], device=device)
        c = min(_common_prefix_len(ps), min(len(p) for p in ps) - 1)
        cache = None
        if c > 0:  # A
            prefix = torch.tensor([ps[0][:c]], dtype=torch.long, device=device)
            cache = model(input_ids=prefix, use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(ps))
        # B: the rest of every prompt; we need the logits at each prompt's last token
        ids_b, mask_b = pad_right([p[c:] for p in ps], pad_id)
        ids_b, mask_b = ids_b.to(device), mask_b.to(device)
        wb = ids_b.shape[1]
        pos_b = (c + torch.arange(wb, device=device)).unsqueeze(0).expand(len(ps), -1)
        attn_b = torch.cat([torch.ones(len(ps), c, dtype=torch.long, device=device), mask_b], dim=1)
        out_b = model(input_ids=ids_b, attention_mask=attn_b, position_ids=pos_b,
                      past_key_values=cache, use_cache=True)
        last = out_b.logits[torch.arange(len(ps), device=device), plen - c - 1].float()
        first_logp = torch.log_softmax(last, dim=-1)  # (prompts, vocab)
        cache = out_b.past_key_values
        # C: every completion after its prompt
        owner = [r for r, i in enumerate(idx) for _ in completions[i]]
        comps = [list(cc) for i in idx for cc in completions[i]]
        owner_t = torch.tensor(owner, device=device)
        cache.batch_select_indices(owner_t)
        ids_c, mask_c = pad_right(comps, pad_id)
        ids_c, mask_c = ids_c.to(device), mask_c.to(device)
        wc = ids_c.shape[1]
        pos_c = plen[owner_t].unsqueeze(1) + torch.arange(wc, device=device).unsqueeze(0)
        attn_c = torch.cat([torch.ones(len(comps), c, dtype=torch.long, device=device),
                            mask_b[owner_t], mask_c], dim=1)
        first = first_logp[owner_t, ids_c[:, 0]]
        if wc > 1:
            logits_c = model(input_ids=ids_c[:, :-1], attention_mask=attn_c[:, :-1],
                             position_ids=pos_c[:, :-1], past_key_values=cache,
                             use_cache=True).logits.float()
            logp_c = torch.log_softmax(logits_c, dim=-1).gather(
                -1, ids_c[:, 1:].unsqueeze(-1)).squeeze(-1) * mask_c[:, 1:]
            first = first + logp_c.sum(dim=1)
        parts.append(first)
        where.extend(offsets[i] + j for i in idx for j in range(len(completions[i])))
    if not parts:
        return torch.zeros(0, device=device)
    flat = torch.cat(parts)
    return flat.new_zeros(n).index_put((torch.tensor(where, device=device),), flat)


@torch.no_grad()
def shared_prefix_logprobs(model, prompts: Sequence[Sequence[int]],
                           completions: Sequence[Sequence[Sequence[int]]], pad_id: int,
                           batch_size: int = 64) -> list[list[float]]:
    """Like `sequence_logprobs`, but each prompt is encoded once for all of its completions
    (`shared_prefix_sums` in eval mode, no graph): `completions[i]` are the completions of
    `prompts[i]`; returns the summed log-probability of each, as floats."""
    was_training = model.training
    model.eval()
    try:
        flat = shared_prefix_sums(model, prompts, completions, pad_id, batch_size).tolist()
    finally:
        model.train(was_training)
    out, r = [], 0
    for cs in completions:
        out.append([float(x) for x in flat[r: r + len(cs)]])
        r += len(cs)
    return out
