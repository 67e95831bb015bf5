"""A recurrent-depth policy (looped core, Huginn-style) for Gap C, and what RL needs to train it.

The model. A causal LM's decoder layers are split into prelude P, core C and coda K. For every
position (Geiping et al. 2025, "Scaling up test-time compute with latent reasoning", eq. 1):

    e   = P(embed(x))                                  # the embedded input, computed once
    s_0 ~ N(0, init_std^2)                             # seeded noise (see "Randomness")
    s_t = C(A([norm(s~_{t-1}), e]))   t = 1..r          # A: linear 2d -> d, the input re-injected every time
    p^(t)(y | x) = softmax(head(norm(K(s_t))))          # the coda's readout after iteration t

s~ is the state after the exploration perturbation (identity unless `explore` says otherwise). The
adapter A starts as [0 | I]: the state half is zero, so at initialisation every r gives the plain
model (prelude -> core -> coda), the retrofit start for a pretrained model; training moves it.
From a `model.tiny` config the split is by layer counts; for a pretrained HF Llama the same counts
declare which of its layers form the core (a retrofit: layers P..P+C-1 are iterated).

Depth. r is fixed, or drawn per training step from Huginn's Poisson-log-normal:
tau ~ N(log(r_mean - 1) - sigma^2 / 2, sigma), r = 1 + Poisson(e^tau), so E[r] = r_mean.
`backprop_steps = k` runs iterations 1..r-k under no_grad (gradient reaches exactly the last k
iterations: k = 1 is HRM's one-step gradient, 0 = all r); the coda readouts keep their gradient.

Generation keeps one KV cache per unrolled iteration (Huginn, sec. 5): every new token runs the
prelude, then iteration t of the core attends to the keys/values of iteration t at earlier
positions, then the coda. `LoopedEngine(use_cache=False)` recomputes the whole sequence for every
token instead (the reference the cached path is tested against, and the bench's comparison).

Credit (RLTT, arXiv 2602.10520). The learner's log-prob of a completion y is
    final:    log p^(r)(y | x)
    per_loop: sum_t w_t log p^(t)(y | x),  w uniform, progressive (w_t ~ t^alpha) or learned
              (softmax of one logit per iteration, trained by the same loss)
and the learner's group-normalized REINFORCE turns it into -A * that; `loop_logprobs` is the hook
(`LearnerHooks.logprobs`): one RL math (rl/learner.py), only the log-prob function differs. The
rollout samples from p^(r); per_loop is RLTT's surrogate, not the sampling distribution's log-prob,
so the recipe allows it with one on-policy epoch only.

Exploration (Dropout-GRPO, arXiv 2606.10184). With a deterministic latent phase, rollouts differ only
by token sampling (`temperature`). `dropout`: one Bernoulli mask per rollout on the state entering
the adapter, the same mask at every iteration and every position's draw fixed; `noise`: one
Gaussian sample added there likewise. The mask/noise is drawn from the rollout's seed (stored in
`Sample.info["loop_seed"]`), so the learner recomputes log p(y | x, mask) exactly.

Randomness. Every random tensor is a function of (seed, position): chunks of 64 positions per
seed, so a cached step at position p sees what the full recompute sees at p. s_0 uses a fixed
seed (0) outside SFT: rollouts and evaluation are deterministic given their exploration seed; SFT
draws a fresh s_0 seed per row (Huginn trains with random initial states).

Halting. A head q_t = sigmoid(w . s_t[last prompt position]) trained with BCE against "the readout
of iteration t answers correctly" (TRM's halting target; correct = every teacher-forced argmax is
the target, which is exactly "greedy decoding at that readout gives the target"). At inference a
row stops at the first t with q_t > threshold; the training-free baseline stops when the relative
latent change ||s_t - s_{t-1}|| / ||s_{t-1}|| < epsilon (Huginn's exit). Simplification: the depth
is chosen once per row at the prompt's last position and used for all its answer tokens
(Huginn decides per token).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn
from transformers import DynamicCache

from compose_rl.rl.logprobs import pad_right
from compose_rl.rollout.hf import completion, decode, encode, eos_pad, pad_left
from compose_rl.types import Completion, SamplingParams

INIT_SEED = 0  # s_0's seed outside SFT
_CHUNK = 64  # positions per random block: tables depend on (seed, position), never on the length asked for
_KIND_INIT, _KIND_DROPOUT, _KIND_NOISE = 1, 2, 3


@dataclass
class LoopSpec:
    """The looped policy's shape and its RL options (recipe section `recurrent`)."""

    prelude: int = 1
    core: int = 2
    coda: int = 1
    depth: int = 4  # r: the evaluation depth and the mean training depth
    depth_sampling: str = "fixed"  # fixed | poisson_lognormal
    depth_sigma: float = 0.5
    max_depth: int = 64  # cap on a sampled training depth
    backprop_steps: int = 0  # gradient through the last k iterations (0 = all)
    sft_warmup: float = 0.0  # stage-1 depth curriculum: cap 1 -> the training depth over this fraction of SFT
    credit: str = "final"  # final | per_loop
    loop_weights: str = "uniform"  # uniform | progressive | learned
    weight_alpha: float = 1.0
    explore: str = "temperature"  # temperature | dropout | noise
    dropout: float = 0.1
    noise_std: float = 0.1
    init_std: float = 1.0
    sft_readout: str = "all"  # final | all (deep supervision at every iteration; trains the halting head)
    halting: str = "none"  # none | head | latent_change
    halt_threshold: float = 0.5
    exit_epsilon: float = 0.05
    eval_multipliers: list[int] = field(default_factory=lambda: [1, 2, 4])


def _block(seed: int, kind: int, chunk: int, d: int, gen: str) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + chunk * 7_919 + kind * 104_729) % (2 ** 62))
    return torch.rand((_CHUNK, d), generator=g) if gen == "rand" else torch.randn((_CHUNK, d), generator=g)


def position_table(seeds: Sequence[int], pos: torch.Tensor, d: int, kind: int, gen: str = "randn") -> torch.Tensor:
    """(B, L, d): row b, position pos[b, l] of the random stream `seeds[b]` (depends on seed and position only)."""
    n_chunks = int(pos.max()) // _CHUNK + 1 if pos.numel() else 1
    out = []
    for b, s in enumerate(seeds):
        table = torch.cat([_block(int(s), kind, c, d, gen) for c in range(n_chunks)])
        out.append(table[pos[b].cpu()])
    return torch.stack(out).to(pos.device)


def sample_depth(rng: random.Random, mean: int, sigma: float, cap: int) -> int:
    """Huginn's training depth: r = 1 + Poisson(e^tau), tau ~ N(log(mean - 1) - sigma^2 / 2, sigma); E[r] = mean."""
    if mean <= 1:
        return 1
    tau = rng.gauss(math.log(mean - 1) - sigma ** 2 / 2, sigma)
    lam, k, p = math.exp(tau), 0, 1.0
    threshold = math.exp(-lam)  # Knuth's Poisson sampler (lam is small: tens at most)
    while True:
        p *= rng.random()
        if p <= threshold:
            break
        k += 1
    return min(1 + k, cap)


def loop_weights(depth: int, how: str, alpha: float = 1.0, logits: torch.Tensor | None = None) -> torch.Tensor:
    """RLTT's w_1..w_r (sum 1): uniform 1/r, progressive t^alpha / sum, learned softmax(logits[:r])."""
    if how == "uniform":
        return torch.full((depth,), 1.0 / depth)
    if how == "progressive":
        w = torch.arange(1, depth + 1, dtype=torch.float32) ** alpha
        return w / w.sum()
    if how == "learned":
        return torch.softmax(logits[:depth], dim=0)
    raise ValueError(f"loop weights: unknown {how!r}; use uniform, progressive or learned")


def participation_ratio(x: torch.Tensor) -> float:
    """(sum lambda)^2 / sum lambda^2 of the covariance of the rows of x (N, d): the effective dimension."""
    x = x.float() - x.float().mean(0, keepdim=True)
    lam = torch.linalg.eigvalsh(x.T @ x / max(x.shape[0] - 1, 1)).clamp(min=0)
    return float(lam.sum() ** 2 / (lam ** 2).sum().clamp(min=1e-12))


@dataclass
class Unrolled:
    logits: list[torch.Tensor]  # per readout: (B, L_keep, V); one (the final) unless readouts="all"
    states: list[torch.Tensor]  # s_1..s_r, (B, L, d)
    depth: torch.Tensor  # (B,) the depth each row's final readout used


class LoopCache:
    """One DynamicCache for the prelude and coda, one per unrolled core iteration (created on demand)."""

    def __init__(self, config):
        self.config, self.main, self.iters = config, DynamicCache(config=config), []

    def iteration(self, t: int) -> DynamicCache:
        while len(self.iters) <= t:
            self.iters.append(DynamicCache(config=self.config))
        return self.iters[t]


class LoopedLM(nn.Module):
    """prelude -> core x r -> coda over a transformers Llama-family causal LM (see the module docstring)."""

    prefix_cache = False  # evals.games scores full sequences through forward (no HF past_key_values)

    def __init__(self, model, spec: LoopSpec):
        super().__init__()
        inner = getattr(model, "model", None)
        if not all(hasattr(inner, a) for a in ("layers", "embed_tokens", "norm", "rotary_emb")):
            raise ValueError(f"recurrent: {type(model).__name__} is not a Llama-family causal LM (model.model.layers, "
                             "embed_tokens, norm, rotary_emb); use model.name tiny, smollm2-135m-instruct or a Llama folder")
        n = len(inner.layers)
        if spec.prelude + spec.core + spec.coda != n or spec.core < 1:
            raise ValueError(f"recurrent: prelude + core + coda = {spec.prelude}+{spec.core}+{spec.coda} must equal the "
                             f"model's {n} layers with core >= 1; set them to split its layers")
        self.model, self.spec = model, spec
        d = model.config.hidden_size
        p = next(model.parameters())
        self.adapter = nn.Linear(2 * d, d, bias=False)
        self.state_norm = nn.RMSNorm(d, eps=model.config.rms_norm_eps)
        self.halt_head = nn.Linear(d, 1)
        self.weight_logits = nn.Parameter(torch.zeros(max(spec.max_depth, spec.depth)))  # learned per-loop weights
        with torch.no_grad():  # [0 | I]: the plain model at any depth until training uses the state
            self.adapter.weight.zero_()
            self.adapter.weight[:, d:] = torch.eye(d)
            self.halt_head.bias.fill_(-2.0)
        for m in (self.adapter, self.state_norm, self.halt_head):
            m.to(device=p.device, dtype=p.dtype)
        self.weight_logits.data = self.weight_logits.data.to(p.device)
        self.depth = spec.depth  # evaluation depth (engines, probes); the recipe's r
        self.train_depth = spec.depth  # depth of the current training step (the collector draws it)

    # ------------------------------------------------------------------ pieces
    @property
    def device(self) -> torch.device:
        return self.adapter.weight.device

    @property
    def config(self):
        return self.model.config

    def layer_groups(self):
        layers, s = self.model.model.layers, self.spec
        return layers[: s.prelude], layers[s.prelude: s.prelude + s.core], layers[s.prelude + s.core:]

    def _run_layers(self, layers, h, mask, rope, pos, cache):
        for layer in layers:
            h = layer(h, attention_mask=mask, position_embeddings=rope, position_ids=pos, past_key_values=cache,
                      use_cache=cache is not None)
        return h

    def readout(self, s: torch.Tensor, mask, rope, pos, cache, keep: int = 0) -> torch.Tensor:
        _, _, coda = self.layer_groups()
        h = self.model.model.norm(self._run_layers(coda, s, mask, rope, pos, cache))
        return self.model.lm_head(h[:, -keep:] if keep else h)

    def perturbation(self, seeds, pos, d: int):
        """The rollout's fixed (mask, noise): one draw per row, the same at every iteration (Dropout-GRPO)."""
        s = self.spec
        if seeds is None or all(x is None for x in seeds) or s.explore == "temperature":
            return None, None
        off = torch.tensor([x is None for x in seeds], device=pos.device)[:, None, None]  # rows without a seed
        seeds = [0 if x is None else x for x in seeds]
        if s.explore == "dropout":
            keep = (position_table(seeds, pos, d, _KIND_DROPOUT, "rand") >= s.dropout).to(self.adapter.weight.dtype)
            return torch.where(off, torch.ones_like(keep), keep / (1.0 - s.dropout)), None
        noise = s.noise_std * position_table(seeds, pos, d, _KIND_NOISE)
        return None, torch.where(off, torch.zeros_like(noise), noise)

    # ------------------------------------------------------------------ the unrolled forward
    def unroll(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, depth: int,
               init_seeds: Sequence[int] | None = None, explore_seeds: Sequence[int | None] | None = None,
               readouts: str = "last", cache: LoopCache | None = None, keep: int = 0,
               row_depth: torch.Tensor | None = None) -> Unrolled:
        """One pass over `ids` (B, L) whose keys are `attn` (B, L_past + L) (past = what `cache` holds).

        `row_depth` (B,) gives each row its own final depth (<= depth; halting); `readouts="all"` reads
        out after every iteration (per-loop credit, deep supervision, probes)."""
        if depth < 1:
            raise ValueError(f"recurrent: depth must be >= 1 (got {depth})")
        b, q = ids.shape
        d = self.config.hidden_size
        prelude, core, _ = self.layer_groups()
        mask = self._mask(attn, q)
        e = self.model.model.embed_tokens(ids)
        rope = self.model.model.rotary_emb(e, position_ids=pos)
        main = cache.main if cache is not None else None
        e = self._run_layers(prelude, e, mask, rope, pos, main)
        seeds0 = list(init_seeds) if init_seeds is not None else [INIT_SEED] * b
        s = self.spec.init_std * position_table(seeds0, pos, d, _KIND_INIT).to(e.dtype)
        keep_mask, noise = self.perturbation(explore_seeds, pos, d)
        k = self.spec.backprop_steps
        states = []
        for t in range(depth):
            with torch.set_grad_enabled(torch.is_grad_enabled() and not (k and t < depth - k)):
                x = s
                if keep_mask is not None:
                    x = x * keep_mask
                if noise is not None:
                    x = x + noise
                u = self.adapter(torch.cat([self.state_norm(x), e], dim=-1))
                s = self._run_layers(core, u, mask, rope, pos, cache.iteration(t) if cache is not None else None)
            states.append(s)
        rd = torch.full((b,), depth, dtype=torch.long, device=ids.device) if row_depth is None else row_depth
        if readouts == "all":
            if cache is not None:
                raise ValueError("recurrent: per-iteration readouts are for full passes (no cache)")
            logits = [self.readout(st, mask, rope, pos, None, keep) for st in states]
        else:
            last = states[-1] if row_depth is None else torch.stack(states)[rd - 1, torch.arange(b)]
            logits = [self.readout(last, mask, rope, pos, main, keep)]
        return Unrolled(logits, states, rd)

    def _mask(self, attn: torch.Tensor, q: int) -> torch.Tensor:
        """Additive (B, 1, q, L_keys) mask: key k is visible to query i if it is a real token and not later."""
        kl = attn.shape[1]
        cols = torch.arange(kl, device=attn.device)
        qcols = torch.arange(kl - q, kl, device=attn.device)
        ok = attn.bool()[:, None, None, :] & (cols[None, :] <= qcols[:, None])[None, None]
        dtype = self.adapter.weight.dtype
        return torch.zeros(ok.shape, dtype=dtype, device=attn.device).masked_fill(~ok, torch.finfo(dtype).min)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, logits_to_keep: int = 0,
                **_):
        """The deterministic policy at the current depth (train_depth in training, depth otherwise), with the
        final readout: what `rl.logprobs.completion_logprobs` (replay, evals) scores."""
        attn = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        out = self.unroll(input_ids, attn, pos, self.train_depth if self.training else self.depth, keep=logits_to_keep)
        return _Out(out.logits[-1])

    # ------------------------------------------------------------------ halting
    def halt_logits(self, states: list[torch.Tensor], last_index: torch.Tensor) -> torch.Tensor:
        """(B, r) halting logits from each iteration's state at each row's last prompt position (detached:
        the head reads the loop, it does not shape it)."""
        rows = torch.arange(states[0].shape[0], device=states[0].device)
        return torch.stack([self.halt_head(s[rows, last_index].detach()).squeeze(-1) for s in states], dim=1)

    def choose_depth(self, states: list[torch.Tensor], last_index: torch.Tensor) -> torch.Tensor:
        """Per-row depth under the recipe's halting rule (the full depth if it never fires)."""
        s = self.spec
        r, b = len(states), states[0].shape[0]
        if s.halting == "none":
            return torch.full((b,), r, dtype=torch.long, device=states[0].device)
        if s.halting == "head":
            stop = torch.sigmoid(self.halt_logits(states, last_index)) > s.halt_threshold
        else:
            rows = torch.arange(b, device=states[0].device)
            z = [st[rows, last_index] for st in states]
            change = [torch.full((b,), float("inf"), device=z[0].device)] + [
                (z[t] - z[t - 1]).norm(dim=-1) / z[t - 1].norm(dim=-1).clamp(min=1e-8) for t in range(1, r)]
            stop = torch.stack(change, dim=1) < s.exit_epsilon
        stop[:, -1] = True
        return stop.float().argmax(dim=1) + 1  # first iteration that stops

    @torch.no_grad()
    def exit_depths(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, depth: int,
                    explore_seeds: Sequence[int | None] | None = None) -> torch.Tensor | None:
        """Each left-padded prompt's depth under the recipe's exit rule, decided by the loop over the prompt
        at its last position (None when halting is off: every row runs `depth`)."""
        if self.spec.halting == "none":
            return None
        states = self.unroll(ids, attn, pos, depth, explore_seeds=explore_seeds, keep=1).states
        return self.choose_depth(states, torch.full((ids.shape[0],), ids.shape[1] - 1, device=ids.device))


class _Out:
    def __init__(self, logits):
        self.logits = logits


# ---------------------------------------------------------------------- the learner's hook
@dataclass
class Scores:
    """Teacher-forced scores of completions through the loop, one entry per readout."""

    token_logp: list[torch.Tensor]  # per readout: (B, Tc) log p^(t)(y_j | ...) at `temperature`, 0 past the end
    exact: torch.Tensor  # (B, n_readouts): every argmax of that readout is the target (= greedy decoding gives it)
    mask: torch.Tensor  # (B, Tc)
    states: list[torch.Tensor]  # s_1..s_r (B, L, d)
    last_prompt: torch.Tensor  # (B,) column of each row's last prompt token
    depth: torch.Tensor  # (B,) each row's final depth
    final_logp_all: torch.Tensor | None = None  # (B, Tc, V) of the final readout (entropy)


def readout_scores(looped: LoopedLM, prompts, completions, pad: int, depth: int | torch.Tensor, explore_seeds=None,
                   readouts: str = "last", temperature: float = 1.0, init_seeds=None, keep_all: bool = False) -> Scores:
    """Concatenate prompt + completion (right-padded), unroll to the deepest row, score every completion token
    with each readout (`readouts="all"`: after every iteration; "last": each row's own final depth)."""
    full = [list(p) + list(c) for p, c in zip(prompts, completions)]
    ids, attn = pad_right(full, pad)
    dev = looped.device
    ids, attn = ids.to(dev), attn.to(dev)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    b = len(full)
    rd = (torch.full((b,), depth, dtype=torch.long) if isinstance(depth, int) else depth.long()).to(dev)
    out = looped.unroll(ids, attn, pos, int(rd.max()), init_seeds=init_seeds, explore_seeds=explore_seeds,
                        readouts=readouts, row_depth=None if readouts == "all" else rd)
    tc = max((len(c) for c in completions), default=0)
    where = torch.zeros((b, tc), dtype=torch.long)
    tgt = torch.zeros((b, tc), dtype=torch.long)
    cmask = torch.zeros((b, tc))
    for i, (p, c) in enumerate(zip(prompts, completions)):
        if c:
            where[i, : len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
            tgt[i, : len(c)] = torch.tensor(list(c))
            cmask[i, : len(c)] = 1.0
    where, tgt, cmask = where.to(dev), tgt.to(dev), cmask.to(dev)
    logps, exact, final_all = [], [], None
    for t, logits in enumerate(out.logits):
        picked = logits.gather(1, where[..., None].expand(-1, -1, logits.shape[-1])).float()
        lp = torch.log_softmax(picked / temperature, dim=-1)
        logps.append(lp.gather(-1, tgt[..., None]).squeeze(-1) * cmask)
        exact.append(((picked.argmax(-1) == tgt) | (cmask == 0)).all(-1))
        if keep_all and (readouts == "last" or t == len(out.logits) - 1):
            final_all = lp
    last = torch.tensor([len(p) - 1 for p in prompts], device=dev)
    return Scores(logps, torch.stack(exact, dim=1), cmask, out.states, last, rd, final_all)


def sequence_logprobs(looped: LoopedLM, prompts, completions, pad: int, depth: int | torch.Tensor,
                      explore_seeds=None, credit: str = "final", temperature: float = 1.0, with_entropy: bool = False,
                      init_seeds=None):
    """(logp (B, Tc), mask[, entropy]): the learner's log-prob of each completion token through the loop.

    credit "final": log p^(d_b)(y_j | ...) at each row's depth d_b; "per_loop": sum_t w_t log p^(t)(y_j | ...)
    over t <= d_b (RLTT; weights over each row's own iterations). Entropy: of the final readout (per_loop
    at a common depth only, as the learner's rollouts have)."""
    per_loop = credit == "per_loop"
    sc = readout_scores(looped, prompts, completions, pad, depth, explore_seeds, "all" if per_loop else "last",
                        temperature, init_seeds, keep_all=with_entropy)
    if per_loop:
        s, dev = looped.spec, looped.device
        r, b = len(sc.token_logp), len(prompts)
        w = torch.zeros((b, r), device=dev)
        for i in range(b):
            d = int(sc.depth[i])
            w[i, :d] = loop_weights(d, s.loop_weights, s.weight_alpha, looped.weight_logits).to(dev)
        logp = sum(w[:, t:t + 1] * sc.token_logp[t] for t in range(r))
    else:
        logp = sc.token_logp[0]
    if with_entropy:
        return logp, sc.mask, -(sc.final_logp_all.exp() * sc.final_logp_all).sum(-1) * sc.mask
    return logp, sc.mask


def loop_logprobs(model: LoopedLM, batch, pad: int, with_entropy: bool = False, temperature: float = 1.0):
    """`LearnerHooks.logprobs`: each sample scored with its own rollout's depth and exploration seed
    (`info["loop_depth"]`, `info["loop_seed"]`) under the recipe's credit mode."""
    depth = torch.tensor([s.info.get("loop_depth", model.train_depth) for s in batch])
    seeds = [s.info.get("loop_seed") for s in batch]
    return sequence_logprobs(model, [s.prompt_ids for s in batch], [s.completion_ids for s in batch], pad, depth,
                             explore_seeds=seeds, credit=model.spec.credit, temperature=temperature,
                             with_entropy=with_entropy)


# ---------------------------------------------------------------------- generation
class LoopedEngine:
    """The Engine protocol over a LoopedLM in the learner's process. Sampled rollouts (temperature > 0) get
    their own exploration seed; each Completion's `info` holds the depth and seed the learner needs (the
    collectors copy it into `Sample.info`; the evaluations read it there too)."""

    def __init__(self, looped: LoopedLM, tokenizer, batch_size: int = 64, use_cache: bool = True):
        self.looped, self.tokenizer, self.batch_size, self.use_cache = looped, tokenizer, batch_size, use_cache
        self.policy_version = 0
        self.depth: int | None = None  # None: the looped model's evaluation depth
        self._unseeded = 0  # calls without sampling.seed (self-play turns): each gets fresh exploration seeds

    def load_weights(self, state: Mapping[str, torch.Tensor] | None, version: int) -> None:
        if state is not None:
            self.looped.load_state_dict(state)
        self.policy_version = version

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]:
        if not prompts:
            return []
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        tok = self.tokenizer
        eos, pad = eos_pad(tok)
        depth = self.depth or self.looped.depth
        ids = encode(tok, prompts)
        rows = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        explore = sampling.temperature > 0 and self.looped.spec.explore != "temperature"
        if sampling.seed is None and explore:
            self._unseeded += 1
        base = (sampling.seed if sampling.seed is not None else -self._unseeded) * 1_000_003
        seeds = [base + k + 1 if explore else None for k in range(len(rows))]
        out: list[list[Completion]] = [[] for _ in prompts]
        was_training = self.looped.training
        self.looped.eval()
        try:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                res = self._run([ids[i] for i, _ in chunk], seeds[start:start + len(chunk)], depth, sampling, eos, pad)
                for (i, _), seed, (toks, lps, stopped, d) in zip(chunk, seeds[start:start + len(chunk)], res):
                    c = completion(tok, ids[i], toks, lps, stopped, self.policy_version)
                    c.info = {"loop_depth": d, "loop_seed": seed}  # collectors copy it into Sample.info
                    out[i].append(c)
        finally:
            self.looped.train(was_training)
        return out

    def _run(self, prompt_ids, seeds, depth: int, sampling: SamplingParams, eos: int, pad: int):
        lm = self.looped
        ids, attn, pos = pad_left(prompt_ids, pad, lm.device)
        rd = lm.exit_depths(ids, attn, pos, depth, seeds)
        cache = LoopCache(lm.config) if self.use_cache else None
        un = lm.unroll(ids, attn, pos, depth, explore_seeds=seeds, cache=cache, row_depth=rd)
        rd = un.depth
        seq = ids

        def forward(tok_t, attn_now, next_pos):
            nonlocal seq
            seq = torch.cat([seq, tok_t[:, None]], dim=1)
            if cache is not None:
                o = lm.unroll(tok_t[:, None], attn_now, next_pos, depth, explore_seeds=seeds, cache=cache, row_depth=rd)
            else:  # full recompute of the whole sequence (reference / bench)
                p = (attn_now.cumsum(-1) - 1).clamp(min=0)
                o = lm.unroll(seq, attn_now, p, depth, explore_seeds=seeds, row_depth=rd, keep=1)
            return o.logits[-1][:, -1].float()

        tokens, logps, lengths, finished = decode(un.logits[-1][:, -1].float(), attn, pos[:, -1:] + 1, sampling,
                                                  eos, pad, forward)
        return [(tokens[i, : int(lengths[i])].tolist(), logps[i, : int(lengths[i])].tolist(), bool(finished[i]),
                 int(rd[i])) for i in range(len(prompt_ids))]


# ---------------------------------------------------------------------- FLOPs accounting
def flops_per_token(config, spec: LoopSpec | None, depth: int, context: int) -> float:
    """Forward FLOPs of one token (2 per multiply-add): every layer pass (attention projections, MLP,
    attention over `context` keys), the adapter once per iteration, the LM head once. `spec=None`: the
    plain model (all layers once)."""
    d, inter, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    layer = 2 * (2 * d * d + 2 * d * kv + 3 * d * inter) + 2 * 2 * context * d
    if spec is None:
        return config.num_hidden_layers * layer + 2 * d * v
    return (spec.prelude + spec.core * depth + spec.coda) * layer + depth * 2 * (2 * d) * d + 2 * d * v


def flops_per_answer(config, spec: LoopSpec | None, depth: int, prompt_len: int, answer_len: int,
                     cached: bool = True) -> float:
    """Forward FLOPs to produce an answer: prefill the prompt, then one token at a time. With a KV cache a
    token costs one pass over its own position; without, the whole sequence is recomputed per token."""
    def pass_over(n):  # n positions, position i attends to i + 1 keys
        return sum(flops_per_token(config, spec, depth, i + 1) for i in range(n))
    total = pass_over(prompt_len)
    for j in range(1, answer_len):
        total += flops_per_token(config, spec, depth, prompt_len + j) if cached else pass_over(prompt_len + j)
    return float(total)
