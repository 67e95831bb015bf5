"""Rollout engine on transformers `generate` (CPU or GPU).

Identical prompts are generated together (`num_return_sequences`): in Kuhn poker there are 12
distinct prompts, so a batch of 64 turns costs about 12 prompt encodings instead of 64.
Log-probabilities are those of the model's own distribution (temperature 1, no top-p), which is
what the learner recomputes; vLLM's default `raw_logprobs` mode reports the same quantity.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch

from compose_rl.types import Completion, SamplingParams


class HFEngine:
    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
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
        try:
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
        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p, _ in batch]
        # expand: one row per requested sample, left-padded
        rows, owners = [], []
        for (p, count), ids in zip(batch, prompt_ids):
            rows += [ids] * count
            owners += [(p, ids)] * count
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            attn[i, width - len(r):] = 1
        input_ids = input_ids.to(self.model.device)
        attn = attn.to(self.model.device)
        greedy = sampling.temperature <= 0
        gen = self.model.generate(
            input_ids=input_ids,
            attention_mask=attn,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = gen.sequences[:, width:]
        logits = torch.stack(gen.logits, dim=1).float()  # (rows, steps, vocab), unprocessed
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        for i, (p, ids) in enumerate(owners):
            toks = new[i].tolist()
            if eos in toks:
                cut = toks.index(eos)
                toks_kept, reason = toks[: cut + 1], "stop"
            else:
                toks_kept, reason = toks, "length"
            text_ids = toks_kept[:-1] if reason == "stop" else toks_kept
            produced.setdefault(p, []).append(
                Completion(
                    prompt_ids=list(ids),
                    token_ids=toks_kept,
                    logprobs=logp[i, : len(toks_kept)].tolist(),
                    text=tok.decode(text_ids, skip_special_tokens=True),
                    finish_reason=reason,
                    policy_version=self.policy_version,
                )
            )
