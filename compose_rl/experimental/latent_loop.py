"""A policy that reasons in a recurrent latent loop instead of chain-of-thought tokens (Gap C).

After reading the prompt the model runs `steps` latent steps: the last layer's (normed) hidden state
h_k goes through a learned bridge (d x d linear map, initialised to the identity scaled to the
embedding table's size) and is fed back as the input embedding of the next position, e_k = B(h_k);
the model's output there is h_{k+1}. Only then does it decode answer tokens, from h_K. Nothing of
the loop is emitted: the response is the bare answer, so a task reward can reach the loop only
through the answer's likelihood.

Credit through the loop. The latent steps are deterministic functions of the parameters, so for a
sampled answer a the policy gradient is A * grad log pi(a | prompt, e_1..e_K(theta)), and its part
that flows through e_k is back-propagation through the loop (BPTT). `backprop_steps = N > 0`
truncates it (HRM-style): the recurrent path h -> B(h) is cut before the last N latent steps
(the positions still attend to the prompt and earlier latents through the KV cache with
gradient). `LoopPass.latents` keeps every e_k so a trainer can read how much gradient reaches each
step: ||dL/de_k|| is the credit the sparse reward assigns to loop step k.

`steps = 0` is the plain model (answer right after the prompt): the baseline. `active_steps`
(default `steps`) is how many of them run; the SFT curriculum ramps it from 0 to `steps`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn
from transformers import DynamicCache

from compose_rl.rollout.hf import completion, decode, encode, eos_pad, pad_left
from compose_rl.types import Completion, SamplingParams


@dataclass
class LoopPass:
    """State after the prompt and the latent steps: the hidden state the answer starts from, the KV
    cache, the attention mask and next position id per row, and the latent inputs e_1..e_K."""

    hidden: torch.Tensor  # (B, d)
    cache: DynamicCache
    attn: torch.Tensor  # (B, L)
    next_pos: torch.Tensor  # (B, 1)
    latents: list[torch.Tensor]  # K tensors (B, d)


class LatentLoop(nn.Module):
    def __init__(self, model, steps: int, backprop_steps: int = 0):
        super().__init__()
        if steps < 0 or backprop_steps < 0:
            raise ValueError("latent loop: steps and backprop_steps must be >= 0")
        self.model = model
        self.steps, self.backprop_steps = steps, backprop_steps
        self.active_steps = steps  # < steps during an SFT curriculum (trainer.latent_sft)
        d = model.config.hidden_size
        self.bridge = nn.Linear(d, d)
        emb = model.get_input_embeddings().weight
        with torch.no_grad():  # normed hidden states have RMS ~1; embeddings are much smaller
            self.bridge.weight.copy_(torch.eye(d, device=emb.device) * emb.detach().float().std())
            self.bridge.bias.zero_()
        self.bridge.to(device=emb.device, dtype=emb.dtype)

    @property
    def device(self) -> torch.device:
        return self.bridge.weight.device

    def _decoder(self):
        return self.model.get_decoder()

    def think(self, prompt_ids: Sequence[Sequence[int]], pad: int) -> LoopPass:
        """Encode left-padded prompts, then run the latent steps (with gradient unless in no_grad)."""
        ids, attn, pos = pad_left(prompt_ids, pad, self.device)
        dec = self._decoder()
        out = dec(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                  past_key_values=DynamicCache(config=self.model.config))
        h, cache, next_pos = out.last_hidden_state[:, -1], out.past_key_values, pos[:, -1:] + 1
        latents = []
        for k in range(self.active_steps):
            if self.backprop_steps and k == self.active_steps - self.backprop_steps:
                h = h.detach()  # truncated BPTT: the recurrent path carries no gradient past here
            e = self.bridge(h)
            latents.append(e)
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
            out = dec(inputs_embeds=e[:, None, :], attention_mask=attn, position_ids=next_pos,
                      past_key_values=cache, use_cache=True)
            h, cache, next_pos = out.last_hidden_state[:, -1], out.past_key_values, next_pos + 1
        return LoopPass(h, cache, attn, next_pos, latents)

    def answer_logprobs(self, prompt_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]],
                        pad: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """log pi(answer token t | prompt, loop, answer < t) for every answer token (teacher forcing).

        Returns (logp (B, T), mask (B, T), latents): answers are right-padded, mask marks real tokens."""
        lp = self.think(prompt_ids, pad)
        head = self.model.get_output_embeddings()
        dev = self.device
        t_max = max(len(a) for a in answer_ids)
        tgt = torch.full((len(answer_ids), t_max), pad, dtype=torch.long)
        mask = torch.zeros((len(answer_ids), t_max))
        for i, a in enumerate(answer_ids):
            tgt[i, : len(a)] = torch.tensor(list(a), dtype=torch.long)
            mask[i, : len(a)] = 1.0
        tgt, mask = tgt.to(dev), mask.to(dev)
        logits = [head(lp.hidden)[:, None, :]]  # predicts answer token 0
        if t_max > 1:  # feed tokens 0..T-2; their outputs predict tokens 1..T-1
            attn = torch.cat([lp.attn, torch.ones((len(answer_ids), t_max - 1), dtype=lp.attn.dtype, device=dev)], 1)
            pos = lp.next_pos + torch.arange(t_max - 1, device=dev)[None, :]
            out = self._decoder()(input_ids=tgt[:, :-1], attention_mask=attn, position_ids=pos,
                                  past_key_values=lp.cache, use_cache=True)
            logits.append(head(out.last_hidden_state))
        logp = torch.log_softmax(torch.cat(logits, 1).float(), dim=-1).gather(-1, tgt[..., None]).squeeze(-1)
        return logp * mask, mask, lp.latents

    @torch.no_grad()
    def sample(self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: SamplingParams, eos: int, pad: int):
        """n answers per prompt. The loop is deterministic: it runs once per prompt and its cache is
        copied to the n rows. Returns per row (prompt index, token ids, logprobs, stopped)."""
        lp = self.think(prompt_ids, pad)
        dev = self.device
        rows = torch.repeat_interleave(torch.arange(len(prompt_ids), device=dev), n)
        lp.cache.batch_select_indices(rows)
        head, dec = self.model.get_output_embeddings(), self._decoder()

        def forward(tok_t, attn, next_pos):  # the cache grows in place
            out = dec(input_ids=tok_t[:, None], attention_mask=attn, position_ids=next_pos,
                      past_key_values=lp.cache, use_cache=True)
            return head(out.last_hidden_state[:, -1]).float()

        tokens, logps, lengths, finished = decode(head(lp.hidden[rows]).float(), lp.attn[rows], lp.next_pos[rows],
                                                  sampling, eos, pad, forward)
        return [(int(rows[i]), tokens[i, : int(lengths[i])].tolist(), logps[i, : int(lengths[i])].tolist(),
                 bool(finished[i])) for i in range(len(rows))]


class LatentLoopEngine:
    """The Engine protocol over a LatentLoop in the learner's process (evals and collectors use it
    unchanged). Completions carry the answer tokens only; the loop's positions are not tokens."""

    def __init__(self, loop: LatentLoop, tokenizer, batch_size: int = 64):
        self.loop, self.tokenizer, self.batch_size = loop, tokenizer, batch_size
        self.policy_version = 0

    def load_weights(self, state: Mapping[str, torch.Tensor] | None, version: int) -> None:
        if state is not None:  # keys of LatentLoop.state_dict() (model.* and bridge.*)
            self.loop.load_state_dict(state)
        self.policy_version = version

    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        tok = self.tokenizer
        eos, pad = eos_pad(tok)
        ids = encode(tok, prompts)
        per_call = max(1, self.batch_size // max(sampling.n, 1))
        out: list[list[Completion]] = [[] for _ in prompts]
        was_training = self.loop.training
        self.loop.eval()
        try:
            for start in range(0, len(prompts), per_call):
                chunk = ids[start:start + per_call]
                for row, toks, lps, stopped in self.loop.sample(chunk, sampling.n, sampling, eos, pad):
                    out[start + row].append(completion(tok, chunk[row], toks, lps, stopped, self.policy_version))
        finally:
            self.loop.train(was_training)
        return out
