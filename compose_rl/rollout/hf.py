"""Rollout engine on transformers `generate` (CPU or GPU).

Each distinct prompt is encoded once and its KV cache shared by every sample drawn from it: in
Kuhn poker there are 12 distinct prompts, so a batch of 140 turns costs 12 prompt encodings, and a
string-task group of 8 costs one. Decoding is a plain sampling loop over the model's KV cache.
Log-probabilities are those of the distribution each token was actually sampled from: softmax of
logits / temperature, restricted to the top-p nucleus and renormalised (vLLM's
`logprobs_mode="processed_logprobs"` reports the same quantity). The learner recomputes them with
the same temperature (RL rejects top_p < 1). Greedy decoding (temperature 0) reports the model's
own temperature-1 log-probs.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch
from transformers import DynamicCache

from compose_rl.types import Completion, SamplingParams


class HFEngine:
    """`dtype` (the resolved model.dtype): `bfloat16` samples under bf16 autocast, the learner's precision,
    so that its reported log-probs are of the distribution the learner scores; `float32` none."""

    def __init__(self, model, tokenizer, batch_size: int = 64, dtype: str = "float32"):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.dtype = dtype
        self.policy_version = 0

    def load_weights(self, state: Mapping[str, torch.Tensor], version: int) -> None:
        # In process the engine shares the learner's module: nothing to copy unless handed a
        # different state (e.g. a past checkpoint for an opponent pool).
        if state is not None:
            self.model.load_state_dict(state, strict=False)
        self.policy_version = version

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]:
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        unique: OrderedDict[str, list[int]] = OrderedDict()
        for i, p in enumerate(prompts):
            unique.setdefault(p, []).append(i)
        # each unique prompt needs n * (number of times it occurs) samples
        jobs = [(p, sampling.n * len(idx)) for p, idx in unique.items()]
        produced: dict[str, list[Completion]] = {}
        was_training = self.model.training
        self.model.eval()
        from compose_rl.precision import autocast

        try:
            with autocast(next(self.model.parameters()).device.type, self.dtype):
                batch: list[tuple[str, int]] = []
                size = 0
                for job in jobs:
                    batch.append(job)
                    size += job[1]
                    if size >= self.batch_size:
                        self._run(batch, sampling, produced)
                        batch, size = [], 0
                if batch:
                    self._run(batch, sampling, produced)
        finally:
            self.model.train(was_training)
        out: list[list[Completion]] = [[] for _ in prompts]
        for p, idx in unique.items():
            comps = produced[p]
            for k, i in enumerate(idx):
                out[i] = comps[k * sampling.n:(k + 1) * sampling.n]
        return out

    def _run(self, batch, sampling: SamplingParams, produced: dict) -> None:
        """Prefill each distinct prompt once, copy its KV cache to every sample drawn from it, then decode
        all rows together. `generate(num_return_sequences=k)` would prefill the same prompt k times."""
        tok, model = self.tokenizer, self.model
        eos, pad = eos_pad(tok)
        device = next(model.parameters()).device
        prompt_ids = encode(tok, [p for p, _ in batch])
        counts = torch.tensor([count for _, count in batch])
        ids, attn, pos = pad_left(prompt_ids, pad, device)
        # an explicit cache: a model whose config turned caching off (e.g. after training) still gets one
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                    past_key_values=DynamicCache(config=model.config))
        rows = torch.repeat_interleave(torch.arange(len(batch)), counts).to(device)
        cache = out.past_key_values
        cache.batch_select_indices(rows)
        logits = out.logits[rows, -1].float()
        attn = attn[rows]
        next_pos = pos[rows, -1:] + 1

        def forward(tok_t, attn, next_pos):
            nonlocal cache
            out = model(input_ids=tok_t[:, None], attention_mask=attn, position_ids=next_pos,
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            return out.logits[:, -1].float()

        tokens, logps, lengths, finished = decode(logits, attn, next_pos, sampling, eos, pad, forward)
        n = len(rows)
        owners = rows.tolist()
        for i in range(n):
            p, _ = batch[owners[i]]
            k = int(lengths[i])
            produced.setdefault(p, []).append(completion(
                tok, prompt_ids[owners[i]], tokens[i, :k].tolist(), logps[i, :k].tolist(), bool(finished[i]),
                self.policy_version))


def eos_pad(tokenizer) -> tuple[int, int]:
    """(eos id, pad id): the tokenizer's pad token, or eos where it has none."""
    eos = tokenizer.eos_token_id
    return eos, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos


def encode(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt as is (chat formatting is the caller's: no special tokens added)."""
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def completion(tokenizer, prompt_ids: Sequence[int], token_ids: list[int], logprobs: list[float], stopped: bool,
               version: int) -> Completion:
    """One sampled completion; a stop token ends it and is kept in `token_ids` but not in `text`."""
    return Completion(prompt_ids=list(prompt_ids), token_ids=token_ids, logprobs=logprobs,
                      text=tokenizer.decode(token_ids[:-1] if stopped else token_ids, skip_special_tokens=True),
                      finish_reason="stop" if stopped else "length", policy_version=version)


def pad_left(rows: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids) of left-padded rows: every row ends at the same column, so
    the next token of every row goes to one new column; positions count real tokens only."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        attn[i, width - len(r):] = 1
    ids, attn = ids.to(device), attn.to(device)
    return ids, attn, (attn.cumsum(-1) - 1).clamp(min=0)


def decode(logits: torch.Tensor, attn: torch.Tensor, next_pos: torch.Tensor, sampling: SamplingParams,
           eos: int, pad: int, forward):
    """The sampling loop shared by the engines that decode on a transformers KV cache.

    `logits` (rows, V) predict the first token; `forward(tokens, attn, next_pos)` feeds one token per
    row (the cache lives in its closure) and returns the next logits. Log-probs are of the distribution
    sampled from (`processed_logprobs`). Returns (tokens, logps, lengths, finished): lengths count the EOS."""
    n, dev = logits.shape[0], logits.device
    tokens = torch.full((n, sampling.max_new_tokens), pad, dtype=torch.long, device=dev)
    logps = torch.zeros((n, sampling.max_new_tokens), device=dev)
    finished = torch.zeros(n, dtype=torch.bool, device=dev)
    lengths = torch.full((n,), sampling.max_new_tokens, dtype=torch.long, device=dev)
    for t in range(sampling.max_new_tokens):
        tok_t = _sample(logits, sampling)
        tok_t = torch.where(finished, torch.full_like(tok_t, pad), tok_t)
        tokens[:, t] = tok_t
        logps[:, t] = processed_logprobs(logits, sampling).gather(-1, tok_t[:, None]).squeeze(-1)
        just = (~finished) & (tok_t == eos)
        lengths = torch.where(just, torch.full_like(lengths, t + 1), lengths)
        finished |= just
        if bool(finished.all()) or t + 1 == sampling.max_new_tokens:
            break
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
        logits = forward(tok_t, attn, next_pos)
        next_pos = next_pos + 1
    return tokens, logps, lengths, finished


def processed_logprobs(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """Log-probs of the distribution `_sample` draws from: log_softmax(logits / T), then the top-p nucleus
    (the most probable tokens whose mass before them is < top_p; the top token always stays)
    renormalised, -inf outside it. Temperature 0 (greedy): the model's own log_softmax(logits)."""
    if sampling.temperature <= 0:
        return torch.log_softmax(logits, dim=-1)
    logp = torch.log_softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = logp.exp().sort(dim=-1, descending=True)
        keep_sorted = sorted_p.cumsum(-1) - sorted_p < sampling.top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
        logp = torch.log_softmax(logp.masked_fill(~keep, float("-inf")), dim=-1)
    return logp


def _sample(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """Greedy at temperature 0; else temperature, then nucleus (top-p) truncation, then a draw."""
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < sampling.top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return torch.multinomial(probs, 1).squeeze(-1)
