"""The RL learner: one explicit loop, readable top to bottom.

    for step:
        samples  = collector.collect(engine, step)        # rollouts + verifier/game rewards
                   (async: rollouts.collect(step), a batch generated ahead by at most max_lag versions;
                    older samples are dropped, the rest keep their behaviour log-probs mu)
        A        = advantages(samples)                     # group-normalized, batch mean or RAE
        samples  = drop samples that carry no signal      # uniform groups, A == 0
        old_logp = recompute on the learner (no grad)      # PPO's pi_old, same numerics as pi_theta
                                                           # (all log-probs of logits / rollout temperature)
        for epoch, minibatch:                              # each minibatch: its own mean loss and step
            loss = PPO-clip or REINFORCE (+ k2 KL to reference, - entropy bonus, + replay NLL)
                   async: each token weighted by min(pi_old / mu, rollout.is_trunc) (losses.py);
                   rollout.mismatch_correction: current samples too (mu = the engine's log-probs)
            backward, clip grad norm, Adam step            # NaN/inf reward, loss or grad norm: NonFiniteError, no step
        engine.load_weights(policy)                        # weight sync, policy_version = step + 1
                                                           # (async: sent without waiting for the workers)
        log metrics, samples; checkpoint atomically every N steps

Identical (prompt, completion) pairs are scored once per forward pass and shared: in Kuhn poker
most turns repeat one of 12 prompts with one of 2 answers.
"""
from __future__ import annotations

import copy
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from compose_rl.memory import return_freed_heap
from compose_rl.rl import advantages as adv_lib
from compose_rl.rl.logprobs import completion_logprobs, shared_prefix_sums
from compose_rl.rl.losses import (aggregate, kl_categorical, kl_k2_seq, kl_k3, legal_log_probs, lr_factor, mmd_alpha, mmd_state_terms,
                                  mmd_target, moving_magnet, ppo_clip_loss, reinforce_loss, truncated_is_weights, uniform_log_probs)
from compose_rl.rl.staleness import filter_stale
from compose_rl.types import Sample


class NonFiniteError(RuntimeError):
    """A NaN/inf reward, loss or gradient norm during RL. Raised before the optimizer step it would
    have corrupted (no step is ever taken on it); the one-line message names the stage, the step and
    the last good checkpoint to resume from."""


def _non_finite(run, stage: str, step: int, what: str, value) -> NonFiniteError:
    latest = run.path / "checkpoints" / "LATEST"
    if latest.is_file():
        where = (f"last good checkpoint: {run.path / 'checkpoints' / latest.read_text().strip()} "
                 f"(resume: compose-rl recipe --resume {run.path}, with key=value overrides to change e.g. rl.lr)")
    else:
        where = f"no checkpoint was written yet in {run.path}: start the run again (e.g. with a lower rl.lr)"
    return NonFiniteError(f"rl stage {stage!r}, step {step}: non-finite {what} ({value}); stopped before the "
                          f"optimizer step; {where}")


def _backward_checked(loss, run, stage: str, step: int) -> None:
    """backward of one (micro-)batch loss; a non-finite loss raises NonFiniteError (no step taken)."""
    if not torch.isfinite(loss):
        raise _non_finite(run, stage, step, "loss", float(loss.detach()))
    loss.backward()


def _clip_and_step(opt, params, max_grad_norm: float, run, stage: str, step: int) -> float:
    """clip the accumulated gradients, Adam step; a non-finite norm raises NonFiniteError before the step."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if not torch.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        raise _non_finite(run, stage, step, "gradient norm", float(norm))
    opt.step()
    return float(norm)


def _legal_count(batch: list[Sample], max_actions: int = 16) -> int:
    """Samples whose legal answers legal_action_entropy scores (its normaliser)."""
    return sum(1 for s in batch if s.info.get("legal_answers") and 1 < len(s.info["legal_answers"]) <= max_actions)


# diagnostics whose minibatch value weights micro-batches by samples (the rest: by tokens)
_PER_SEQUENCE = ("loss/kl_ref", "loss/kl_term")


def _merge_stats(into: dict, part: dict, shares: tuple[float, float] | None, legal_share: float,
                 pg_by_tokens: bool = True) -> None:
    """Fold one micro-batch's diagnostics into its minibatch's: means weighted by the micro-batch's
    share of their normaliser, minima/maxima as such (one micro-batch: copied unchanged)."""
    for k, v in part.items():
        if shares is None:
            into[k] = v
        elif k.endswith("_min"):
            into[k] = min(into.get(k, v), v)
        elif k.endswith("_max"):
            into[k] = max(into.get(k, v), v)
        else:
            if k == "loss/legal_entropy":
                w = legal_share
            elif k in _PER_SEQUENCE or (k == "loss/policy" and not pg_by_tokens):
                w = shares[1]
            else:
                w = shares[0]
            into[k] = into.get(k, 0.0) + w * v


def _logprob_mismatch(batch: list[Sample], learner: torch.Tensor, mask: torch.Tensor,
                      version: int | None = None) -> dict:
    """Sum and count of |engine log-prob - learner log-prob| over the tokens of samples generated by the
    current policy `version` (the engine's values: `s.behaviour_logprobs` when the mismatch correction kept
    them, else `s.old_logprobs`, not yet overwritten): the sampler/learner numerics gap (precision,
    kernels), which bf16 widens. Samples of an older policy (async) are left out (version None: those
    are the samples carrying behaviour log-probs)."""
    total, n, worst = 0.0, 0, 0.0
    for i, s in enumerate(batch):
        stale = s.policy_version != version if version is not None else s.behaviour_logprobs is not None
        engine_lp = s.behaviour_logprobs if s.behaviour_logprobs is not None else s.old_logprobs
        if stale or not engine_lp:
            continue
        k = min(len(engine_lp), int(mask[i].sum()))
        eng = torch.tensor(engine_lp[:k], dtype=torch.float32)
        d = (eng - learner[i, :k].detach().float().cpu()).abs()
        total, n, worst = total + float(d.sum()), n + k, max(worst, float(d.max()) if k else 0.0)
    return {"rollout/logprob_mismatch_sum": total, "rollout/logprob_mismatch_n": n,
            "rollout/logprob_mismatch_max": worst}


def _combine_mismatch(rows: list[dict]) -> dict:
    n = sum(r["rollout/logprob_mismatch_n"] for r in rows)
    return {"rollout/logprob_mismatch": sum(r["rollout/logprob_mismatch_sum"] for r in rows) / max(n, 1),
            "rollout/logprob_mismatch_max": max(r["rollout/logprob_mismatch_max"] for r in rows)}


def _step_checked(opt, params, loss, max_grad_norm: float, run, stage: str, step: int) -> float:
    """backward, clip, Adam step; a non-finite loss or gradient norm raises NonFiniteError before the step."""
    opt.zero_grad(set_to_none=True)
    _backward_checked(loss, run, stage, step)
    return _clip_and_step(opt, params, max_grad_norm, run, stage, step)


@dataclass
class LearnerHooks:
    """What the pipeline plugs in: periodic eval, extra state to checkpoint, replay examples."""

    evaluate: Callable[[int], dict] | None = None
    extra_state: Callable[[], dict] | None = None
    load_extra_state: Callable[[dict], None] | None = None
    replay: Callable[[int], list[tuple[list[int], list[int]]]] | None = None  # step -> (prompt ids, target ids)
    on_step_end: Callable[[int], None] | None = None
    # (seconds, count): expected time of the run's stages after this one, and how many are not yet
    # timed; the progress bar adds it to this stage's own ETA to show the whole run's
    later_stages_s: Callable[[], tuple[float, int]] | None = None
    # a policy with its own scoring (experimental/recurrent_depth.loop_logprobs: per-rollout latent noise,
    # per-loop credit): (model, samples, pad, with_entropy, temperature) -> (logp, mask[, entropy]) per
    # sample, replacing completion_logprobs for the policy's log-probs; None = completion_logprobs
    logprobs: Callable | None = None


def compute_advantages(samples: list[Sample], how: str, baselines: adv_lib.RoleBaselines | None,
                       negative_weight: float = 1.0) -> None:
    """Each sample's advantage (rl.advantage); negative ones are then scaled by `negative_weight`
    (rl.negative_weight, 1 = the unbiased estimator)."""
    rewards = [s.reward for s in samples]
    if how in ("group", "group_unscaled"):
        a = adv_lib.group_normalized(rewards, [s.group for s in samples], scale=(how == "group"))
    elif how == "batch_mean":
        a = adv_lib.batch_mean(rewards)
    elif how in ("rae", "state"):
        a = baselines.advantages(rewards, [s.game for s in samples], [s.role for s in samples],
                                 [s.episode for s in samples], [s.retry for s in samples],
                                 [s.prompt for s in samples] if how == "state" else None)
    else:
        raise ValueError(f"unknown advantage estimator {how!r}")
    for s, v in zip(samples, a):
        s.advantage = float(v) if v >= 0 else float(v) * negative_weight


def _unique_pairs(samples: list[Sample]):
    index: dict[tuple, int] = {}
    owner = []
    for s in samples:
        key = (tuple(s.prompt_ids), tuple(s.completion_ids))
        owner.append(index.setdefault(key, len(index)))
    pairs = list(index)
    return [list(p) for p, _ in pairs], [list(c) for _, c in pairs], torch.tensor(owner, dtype=torch.long)


def policy_loss(model, ref_model, batch: list[Sample], cfg, pad: int, max_len: int, old_is_current: bool = False,
                temperature: float = 1.0, is_trunc: float = 2.0, logprobs: Callable | None = None,
                mmd_sampled: tuple | None = None, shares: tuple[float, float] | None = None,
                token_entropy: bool | None = None, version: int | None = None):
    """Loss of one minibatch (its own mean) and its diagnostics; `loss/policy` is the policy-gradient term
    alone, the KL and entropy terms are logged separately. Old log-probs come from `s.old_logprobs` (learner-recomputed),
    or, when `old_is_current` (one epoch, one minibatch: pi_old is the current policy), from this forward pass.

    `mmd_sampled` = (alpha, magnet model or None for the uniform magnet, vocabulary size): MMD's magnet term
    where the legal answers are not scored exactly (reasoning before the box, the string task), alpha times
    the k2 sequence estimator whose on-policy gradient is grad KL(pi || rho) (`kl_k2_seq`; uniform rho over
    token sequences: log rho(y) = -|y| log V).

    `shares` = (tokens, sequences): `batch` is a micro-batch holding these fractions of its minibatch's
    completion tokens and samples (rl.micro_batch_size). Each term is then its micro-batch mean times the
    share of its own normaliser (tokens for token means, samples for sequence means, the KL and the
    `constant` aggregation), so the micro-batches' losses sum to the unsplit minibatch's loss. The
    returned diagnostics stay micro-batch means (the caller weights them). `token_entropy`: whether the
    token-entropy bonus applies, decided on the whole minibatch (None: on `batch`, i.e. when no sample
    carries its legal answers). `version`: the learner's policy version (which samples are current, for the
    log-prob mismatch metric)."""
    s_tok, s_seq = shares if shares is not None else (1.0, 1.0)
    s_pg = s_tok if cfg.token_aggregation == "token_mean" else s_seq
    prompts, comps, owner = _unique_pairs(batch)
    if logprobs is None:
        logp_u, mask_u, ent_u = completion_logprobs(model, prompts, comps, pad=pad, with_entropy=True, temperature=temperature)
        logp, mask, ent = logp_u[owner], mask_u[owner], ent_u[owner]
    else:  # the hook scores every sample itself (its log-prob may depend on more than prompt and completion)
        logp, mask, ent = logprobs(model, batch, pad, with_entropy=True, temperature=temperature)
    width = logp.shape[1]
    mismatch = {}
    if old_is_current:
        old = logp.detach()
        # the engine's log-probs of the same tokens (still in s.old_logprobs): how far the sampler's
        # numerics (precision, kernels) are from the learner's
        mismatch = _logprob_mismatch(batch, old, mask, version)
    else:
        old = torch.zeros_like(logp)
        for i, s in enumerate(batch):
            old[i, : len(s.old_logprobs)] = torch.tensor(s.old_logprobs[:width], dtype=old.dtype)
    advs = torch.tensor([s.advantage for s in batch], dtype=logp.dtype, device=logp.device)
    # decoupled objective for samples of an older policy (async): w = min(pi_old / mu, c) per token.
    # A sample of the current policy carries behaviour log-probs only under the sampler/learner mismatch
    # correction (rollout.mismatch_correction): then mu is the engine's log-prob of the token it sampled
    # and pi_old the learner's own (truncated IS, Yao et al. 2025); else mu = pi_old and w = 1 exactly
    weights, is_stats = None, {}
    if any(s.behaviour_logprobs is not None for s in batch):
        mu = old.clone()
        for i, s in enumerate(batch):
            if s.behaviour_logprobs is not None:
                mu[i, : len(s.behaviour_logprobs)] = torch.tensor(s.behaviour_logprobs[:width], dtype=mu.dtype)
        weights = truncated_is_weights(old, mu, mask, is_trunc)
        m = mask.to(weights.dtype)
        raw = torch.exp(old - mu)
        n_tok = m.sum().clamp(min=1.0)
        is_stats = {"loss/is_weight_mean": float(weights.sum() / n_tok),
                    "loss/is_weight_min": float(torch.where(m > 0, weights, torch.inf).min()),
                    "loss/is_weight_max": float((weights * m).max()),
                    "loss/is_truncated_frac": float(((raw > is_trunc).to(m.dtype) * m).sum() / n_tok)}
    if cfg.algorithm in ("ppo", "mmd"):  # MMD's policy-gradient term is the PPO surrogate (REINFORCE at ratio 1)
        pg, clip_frac = ppo_clip_loss(logp, old, advs, mask, clip=cfg.clip, how=cfg.token_aggregation, max_len=max_len,
                                      weights=weights)
    else:
        pg, clip_frac = reinforce_loss(logp, advs, mask, how=cfg.token_aggregation, max_len=max_len,
                                       weights=weights), torch.tensor(0.0)
    loss = pg * s_pg
    entropy = aggregate(ent, mask, "token_mean")
    kl = kl_term = torch.tensor(0.0)
    if ref_model is not None:
        with torch.no_grad():
            ref_u, _ = completion_logprobs(ref_model, prompts, comps, pad=pad, temperature=temperature)
        ref = ref_u[owner]
        kl_term = kl_k2_seq(logp, ref, mask, old).mean()  # gradient: grad KL(pi || ref) per completion
        loss = loss + cfg.kl_coef * kl_term * s_seq
        kl = ((logp.detach() - ref) * mask).sum(-1).mean()  # value: log pi(y)/ref(y), unbiased on-policy
    mmd_term = torch.tensor(0.0)
    if mmd_sampled is not None:
        alpha, magnet_model, vocab = mmd_sampled
        if magnet_model is None:
            rho = torch.full_like(logp, -math.log(vocab))
        else:
            with torch.no_grad():
                rho_u, _ = completion_logprobs(magnet_model, prompts, comps, pad=pad, temperature=temperature)
            rho = rho_u[owner]
        mmd_term = alpha * kl_k2_seq(logp, rho, mask, old).mean()
        loss = loss + mmd_term * s_seq
    if token_entropy is None:
        token_entropy = not any(s.info.get("legal_answers") for s in batch)
    if cfg.entropy_coef > 0 and token_entropy:
        loss = loss - cfg.entropy_coef * entropy * s_tok  # token entropy when the legal actions are not known
    approx_kl_old = aggregate(kl_k3(logp.detach(), old), mask, "token_mean")
    return loss, {**is_stats, **mismatch, "loss/policy": float(pg.detach()), "loss/clip_frac": float(clip_frac),
                  "loss/entropy": float(entropy.detach()), "loss/kl_ref": float(kl),
                  "loss/kl_term": float(kl_term.detach()), **({"loss/mmd_magnet": float(mmd_term.detach())}
                                                               if mmd_sampled is not None else {}),
                  "loss/approx_kl_old": float(approx_kl_old)}


def run_rl(policy, engine, collector, cfg, run, stage: str, seed: int, max_new_tokens: int,
           hooks: LearnerHooks | None = None, resume: dict | None = None, sync: Callable | None = None,
           max_lag: int = 0, temperature: float = 1.0, rollouts=None, is_trunc: float = 2.0,
           legal_exact: bool = True, dtype: str = "float32", correct_mismatch: bool = False) -> dict:
    """Train for cfg.steps steps. `resume` = the checkpoint meta/tensors of this stage, if any.

    `rollouts` (rollout.mode async): an AsyncRollouts whose batches replace `collector.collect`; the
    learner's version while it trains step k is k, a sample's lag is k - its policy_version, samples
    with lag > max_lag are dropped and the others weighted by min(pi_old / mu, is_trunc).

    `temperature` is the rollout temperature: every log-prob of the policy (and of the reference) is
    taken of softmax(logits / temperature), the distribution the engine sampled from and reported
    log-probs of, so ratios and gradients are those of the sampled policy. The legal-action entropy
    bonus and the replay NLL stay at temperature 1 (the distribution the evaluations score).

    `rl.algorithm: mmd` (magnetic mirror descent, rl/losses.py): where a turn's legal answers are known and
    `legal_exact` (the answer is the action itself, not reasoning then a box), the magnet and proximal KLs
    are exact over the legal answers at every distinct state of the minibatch, plus the validity term;
    elsewhere the magnet term is the sampled k2 sequence estimator.

    `dtype` (the resolved model.dtype, compose_rl/precision.py): `bfloat16` runs every learner forward
    pass under bf16 autocast (float32 weights, gradients and Adam state); `float32` none.

    `correct_mismatch` (rollout.mismatch_correction, resolved in compose_rl/precision.py): samples of the
    current policy are weighted too, by min(pi_old / mu, is_trunc) with mu the engine's log-probs of the
    tokens it sampled and pi_old the learner's recomputation (the same truncated importance weights as
    async; `loss/is_weight_*` logged every step). Off: those samples get weight 1."""
    if not temperature > 0:
        raise ValueError(f"rollout.temperature: RL needs a sampling temperature > 0 (got {temperature})")
    hooks = hooks or LearnerHooks()
    model, pad = policy.model, policy.tokenizer.pad_token_id or 0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]  # rl.lr_schedule scales these (a resumed optimizer's saved lr is not reused)
    switch = getattr(cfg, "switch", None)  # rl.switch: a fresh optimizer from switch.step on
    from compose_rl.precision import autocast

    device_type = next(model.parameters()).device.type
    amp = lambda: autocast(device_type, dtype)  # noqa: E731 - the learner's forward passes, one precision
    mmd = cfg.mmd if cfg.algorithm == "mmd" else None
    ref_model = magnet_model = None
    if cfg.kl_coef > 0 or (mmd is not None and mmd.magnet == "reference"):
        ref_model = _frozen_copy(model)  # the policy at the start of RL
    if mmd is not None:
        # reference: the stage-1 policy; moving: a parameter EMA of the policy, rho <- (1 - m) rho + m theta
        magnet_model = {"reference": ref_model, "moving": _frozen_copy(model) if mmd.magnet == "moving" else None,
                        "uniform": None, "moving_table": None}[mmd.magnet]
    # moving_table: one magnet distribution per information state (by prompt), uniform until the state's first
    # update, rho(s) <- rho(s)^(1 - m) p(s)^m after every step at the states it visited (MagnetTable)
    magnet_table = MagnetTable(mmd.magnet_rate) if mmd is not None and mmd.magnet == "moving_table" else None
    # rl.mmd.update: target: MMD's closed-form step per state from per-(state, answer) values (MMDTarget)
    target = MMDTarget(mmd) if mmd is not None and mmd.update == "target" and legal_exact else None
    baselines = adv_lib.RoleBaselines(cfg.rae_decay) if cfg.advantage in ("rae", "state") else None
    start = 0
    if resume is not None:
        tensors, meta = resume
        model.load_state_dict(tensors["model"])
        if switch is not None and meta["step"] >= switch.step:  # that checkpoint holds the switched optimizer
            opt, base_lrs = _switched(params, switch)
        opt.load_state_dict(tensors["optimizer"])
        if ref_model is not None and "ref_model" in tensors:
            ref_model.load_state_dict(tensors["ref_model"])
        if mmd is not None and mmd.magnet == "moving" and "magnet_model" in tensors:
            magnet_model.load_state_dict(tensors["magnet_model"])
        if magnet_table is not None and "magnet_table" in tensors:
            magnet_table.load_state_dict(tensors["magnet_table"])
        if target is not None and "q_table" in tensors:
            target.q.load_state_dict(tensors["q_table"])
        if baselines is not None:
            baselines.load_state_dict(meta["baselines"])
        if hooks.load_extra_state is not None:
            hooks.load_extra_state(meta.get("extra", {}))
        start = meta["step"] + 1
        run.truncate_metrics(stage, meta["step"])
        if rollouts is None:
            engine.load_weights(sync() if sync else None, start)
    else:  # a fresh start of this stage: rows of an attempt killed before its first checkpoint are stale
        run.truncate_metrics(stage, -1)
    if rollouts is not None:
        rollouts.start(start, sync())  # the workers get version `start` and begin generating ahead
    model.train()

    last: dict = {}
    t_stage = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"rl [{stage}]", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        if switch is not None and step == switch.step:
            opt, base_lrs = _switched(params, switch)
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * lr_factor(cfg.lr_schedule, step, cfg.steps, cfg.warmup_steps)
        # 1. rollouts: samples scored by the verifier or the game
        if rollouts is None:
            samples, metrics, texts = collector.collect(engine, step)
            version = engine.policy_version
        else:  # generated ahead, while the previous steps trained
            samples, metrics, texts = rollouts.collect(step)
            version = step
        t_gen = time.perf_counter() - t0
        # rollout.max_lag: samples from weights older than max_lag syncs are dropped; the others of an
        # older version keep their behaviour log-probs (mu) for the importance weight
        samples, metrics["rollout/stale_dropped"] = filter_stale(samples, version, max_lag)
        for s in samples:  # the engine's log-probs (mu), before the learner overwrites old_logprobs
            if s.policy_version != version or correct_mismatch:
                s.behaviour_logprobs = list(s.old_logprobs)
        n_all = len(samples)
        gen_tokens = sum(len(s.completion_ids) for s in samples)
        rewards = [s.reward for s in samples]
        bad = [r for r in rewards if not math.isfinite(r)]
        if bad:
            raise _non_finite(run, stage, step, f"reward in {len(bad)} of {n_all} samples", bad[0])

        # 2. advantages
        compute_advantages(samples, cfg.advantage, baselines, cfg.negative_weight)
        mixed = adv_lib.mixed_groups(rewards, [s.group for s in samples])
        n_groups = len({s.group for s in samples})

        # 3. keep only samples with signal
        if cfg.drop_uniform_groups and cfg.advantage in ("group", "group_unscaled"):
            samples = [s for s in samples if s.group in mixed]
        if cfg.drop_zero_advantage and target is None:  # the target's values need every turn
            samples = [s for s in samples if s.advantage != 0.0]
        samples = [s for s in samples if s.completion_ids]

        if rollouts is None and hasattr(engine, "sleep"):  # vLLM on the learner's GPU: free it (rollout.vllm.sleep)
            engine.sleep()  # load_weights (step 6) wakes it
        # 4. old log-probs recomputed on the learner (the engine's may differ numerically). With one
        #    epoch and one minibatch pi_old is the policy of the loss's own forward pass: no extra pass.
        t1 = time.perf_counter()
        single_pass = (cfg.ppo_epochs == 1 and len(samples) <= cfg.minibatch) or target is not None
        mismatch_rows: list[dict] = []
        # in micro-batches (rl.micro_batch_size) too: a whole batch's logits would not fit at scale
        chunk_n = cfg.micro_batch_size or max(len(samples), 1)
        with torch.no_grad(), amp():
            for c0 in range(0, len(samples) if not single_pass else 0, chunk_n):
                chunk = samples[c0: c0 + chunk_n]
                if hooks.logprobs is not None:
                    old, mask_c = hooks.logprobs(model, chunk, pad, with_entropy=False, temperature=temperature)
                else:
                    prompts, comps, owner = _unique_pairs(chunk)
                    old_u, mask_u = completion_logprobs(model, prompts, comps, pad=pad, temperature=temperature)
                    old, mask_c = old_u[owner], mask_u[owner]
                mismatch_rows.append(_logprob_mismatch(chunk, old, mask_c, version))
                for i, s in enumerate(chunk):
                    s.old_logprobs = old[i, : len(s.completion_ids)].tolist()

        # MMD's proximal term KL(p || p_old): p_old is the policy before this step's updates, at every
        # state of the batch (zero gradient on the first pass: it acts from the second minibatch/epoch on)
        alpha = mmd_alpha(mmd.alpha, step, mmd.alpha_schedule, mmd.alpha_horizon) if mmd is not None else 0.0
        old_legal: dict[tuple, torch.Tensor] = {}
        if mmd is not None and legal_exact and samples and not single_pass:
            with torch.no_grad():
                table = legal_answer_table(model, policy.tokenizer, samples, pad)
            if table is not None:
                old_lp, _ = legal_log_probs(table[1], table[2])
                old_legal = dict(zip(table[0], old_lp))

        # 5. gradient steps, PPO semantics (Schulman et al. 2017, Alg. 1): every minibatch is its own
        #    mean loss and its own clipped Adam step; the logged losses are means over the minibatches
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        rng = random.Random(seed * 31 + step)
        if target is not None and samples:  # MMD's closed-form step per state, then fit the policy to it
            for k, v in target.step(model, policy.tokenizer, samples, pad, alpha, magnet_table, opt, params, cfg, amp,
                                    run, stage, step).items():
                sums[k] += v
                counts[k] += 1
        for _epoch in range(cfg.ppo_epochs if target is None else 0):
            order = list(range(len(samples)))
            rng.shuffle(order)
            for i in range(0, len(order), cfg.minibatch):
                batch = [samples[j] for j in order[i: i + cfg.minibatch]]
                stats, total, rows = accumulate_gradients(
                    model, ref_model if cfg.kl_coef > 0 else None, batch, cfg, pad, max_new_tokens, policy.tokenizer, amp, run, stage, step,
                    old_is_current=single_pass, temperature=temperature, is_trunc=is_trunc, hooks=hooks, version=version,
                    mmd=MMDStep(mmd, alpha, magnet_model, old_legal, legal_exact, magnet_table) if mmd is not None else None)
                mismatch_rows += rows
                stats["loss/total"] = total
                stats["loss/grad_norm"] = _clip_and_step(opt, params, cfg.max_grad_norm, run, stage, step)
                for k, v in stats.items():
                    sums[k] += v
                    counts[k] += 1
        n_minibatches = counts["loss/total"]
        if mmd is not None and mmd.magnet == "moving" and n_minibatches:
            with torch.no_grad():  # the moving magnet follows the policy: rho <- (1 - m) rho + m theta
                for pm, p in zip(magnet_model.parameters(), model.parameters()):
                    pm.lerp_(p.detach(), mmd.magnet_rate)
        if magnet_table is not None and n_minibatches and legal_exact:
            with torch.no_grad(), amp():  # the per-state magnet follows the policy after this step's updates
                table = legal_answer_table(model, policy.tokenizer, samples, pad)
            if table is not None:
                now, _ = legal_log_probs(table[1].float(), table[2])
                magnet_table.update(table[0], now, table[2])
        if not samples and hooks.replay is not None:
            # no RL signal this step, but replay still keeps the atomics alive
            with amp():
                loss = _replay_loss(model, hooks.replay(step), pad)
            _step_checked(opt, params, loss, cfg.max_grad_norm, run, stage, step)
            sums["loss/replay"], counts["loss/replay"] = float(loss.detach()), 1
        stats = {k: sums[k] / counts[k] for k in sums}
        mismatch_rows = [m for m in mismatch_rows if m]
        if mismatch_rows:  # the engine's log-probs against the learner's (recomputed, or of the loss's pass)
            stats.update(_combine_mismatch(mismatch_rows))
        stats.setdefault("loss/policy", 0.0)  # no sample with signal: no policy-gradient term
        stats["loss/minibatches"] = n_minibatches
        t_learn = time.perf_counter() - t1

        # 6. weight sync: the engine generates with the new policy, stamped with its version
        t2 = time.perf_counter()
        (rollouts or engine).load_weights(sync() if sync else None, step + 1)
        t_sync = time.perf_counter() - t2

        # 7. metrics
        dt = time.perf_counter() - t0
        metrics.update(stats)
        metrics.update({
            "reward/mean": sum(rewards) / max(n_all, 1),
            "reward/std": (sum((r - sum(rewards) / max(n_all, 1)) ** 2 for r in rewards) / max(n_all, 1)) ** 0.5,
            "rollout/samples": n_all,
            "rollout/samples_trained": len(samples),
            "rollout/mismatch_corrected": float(correct_mismatch),
            "rollout/groups_with_signal": len(mixed) / max(n_groups, 1),
            "rollout/response_tokens": gen_tokens / max(n_all, 1),
            "perf/step_s": dt,
            "loss/lr": opt.param_groups[0]["lr"],
            "perf/gen_s": t_gen,
            "perf/learn_s": t_learn,
            "perf/sync_s": t_sync,
            "perf/samples_per_s": n_all / dt,
            "perf/tokens_per_s": gen_tokens / max(t_gen, 1e-9),
        })
        if hooks.evaluate is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            metrics.update(hooks.evaluate(step))
        run.log(stage, step, metrics)
        run.write_samples(stage, step, texts[: cfg.samples_logged])
        postfix = {"reward": f"{metrics['reward/mean']:+.3f}", "signal": f"{metrics['rollout/groups_with_signal']:.2f}"}
        if hooks.later_stages_s is not None:  # the whole run's ETA: this stage at its rate so far + the later stages
            rate = (time.perf_counter() - t_stage) / (step + 1 - start)
            later, unknown = hooks.later_stages_s()
            postfix["run_eta"] = hms(rate * (cfg.steps - step - 1) + later) + (f"+{unknown}?" if unknown else "")
        bar.set_postfix(postfix)
        last = metrics

        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            tensors = {"model": model.state_dict(), "optimizer": opt.state_dict()}
            if ref_model is not None:
                tensors["ref_model"] = ref_model.state_dict()
            if mmd is not None and mmd.magnet == "moving":
                tensors["magnet_model"] = magnet_model.state_dict()
            if magnet_table is not None:
                tensors["magnet_table"] = magnet_table.state_dict()
            if target is not None:
                tensors["q_table"] = target.q.state_dict()
            meta = {"stage": stage, "step": step,
                    "baselines": baselines.state_dict() if baselines else None,
                    "extra": hooks.extra_state() if hooks.extra_state else {}}
            run.save_checkpoint(f"{stage}-{step:06d}", tensors, meta)
        if hooks.on_step_end is not None:
            hooks.on_step_end(step)
        # hand this step's freed heap back to the OS (~10 ms): without it the resident set of a long
        # run climbs with every step although live memory is flat (compose_rl/memory.py)
        return_freed_heap(collect=False)
    bar.close()
    if rollouts is not None:
        rollouts.close()
        engine.load_weights(sync() if sync else None, cfg.steps)  # the evaluations use the final policy
    return last


def make_optimizer(params, cfg):
    """The RL learner's optimizer from `optimizer` and `lr` of rl (or of rl.switch); the ablation's matched SFT
    arm uses it too."""
    return torch.optim.SGD(params, lr=cfg.lr) if cfg.optimizer == "sgd" else torch.optim.Adam(params, lr=cfg.lr)


def _switched(params, switch):
    """rl.switch's optimizer, fresh, and its base learning rates."""
    opt = make_optimizer(params, switch)
    return opt, [g["lr"] for g in opt.param_groups]


def _frozen_copy(model):
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def _vocab(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


class StateTable:
    """Rows of numbers per information state, keyed by the prompt's tokens, plus one scalar setting (named by
    `setting`); saved in RL checkpoints and loaded on resume (MagnetTable, QTable)."""

    setting = ""
    rows: dict[tuple, torch.Tensor]

    def state_dict(self) -> dict:
        return {self.setting: getattr(self, self.setting), "keys": [list(k) for k in self.rows],
                "rows": list(self.rows.values())}

    def load_state_dict(self, state: dict) -> None:
        setattr(self, self.setting, state[self.setting])
        self.rows = {tuple(k): r for k, r in zip(state["keys"], state["rows"])}

    def padded(self, keys: list[tuple], out: torch.Tensor) -> torch.Tensor:
        """`out` (S, A) with each known state's row written over the start of its line (the rest left as given)."""
        for i, k in enumerate(keys):
            row = self.rows.get(k)
            if row is not None:
                out[i, : row.numel()] = row.to(out.device, out.dtype)
        return out


class MagnetTable(StateTable):
    """`rl.mmd.magnet: moving_table`: MMD's moving magnet held per information state, as tabular MMD holds it
    (rl/tabular.py): rho(s) over the state's legal answers, keyed by the prompt's tokens, uniform until the
    state is first updated; after every learner step rho(s) <- rho(s)^(1 - m) p(s)^m (losses.moving_magnet)
    at each state the step visited. Unlike the parameter-average magnet (`moving`), it starts at uniform
    rather than at the stage-1 policy, and one state's update leaves every other state's magnet as it was."""

    setting = "rate"

    def __init__(self, rate: float):
        self.rate = rate
        self.rows: dict[tuple, torch.Tensor] = {}  # prompt tokens -> (n_legal,) log-probs, float32, CPU

    def log_probs(self, keys: list[tuple], legal: torch.Tensor) -> torch.Tensor:
        """(S, A) magnet log-probs of `keys` (rows padded like `legal`; uniform for states not seen yet)."""
        return self.padded(keys, uniform_log_probs(legal).clone())

    def update(self, keys: list[tuple], logp: torch.Tensor, legal: torch.Tensor) -> None:
        """One moving-magnet step at the given states, towards the policy's log-probs `logp` (S, A)."""
        new = moving_magnet(self.log_probs(keys, legal).to(logp.dtype), logp, legal, self.rate)
        for i, k in enumerate(keys):
            self.rows[k] = new[i, : int(legal[i].sum())].detach().float().cpu()


class QTable(StateTable):
    """Per (information state, legal answer) value estimates for `rl.mmd.update: target`: q(s, a) = the mean
    return of a step's turns that answered a at s (mixed with the previous estimate by `decay`), kept where a
    was not played that step; 0 before a's first turn. Keyed by the prompt's tokens, like MagnetTable."""

    setting = "decay"

    def __init__(self, decay: float = 0.0):
        self.decay = decay
        self.rows: dict[tuple, torch.Tensor] = {}  # prompt tokens -> (n_legal,) float64, CPU

    def update(self, samples: list[Sample]) -> int:
        """Fold in the valid turns of `samples` (reward = the mover's return); returns how many were used."""
        sums: dict[tuple, dict[int, list[float]]] = {}
        for s in samples:
            legal = s.info.get("legal_answers")
            action = s.info.get("action")
            if not legal or not s.info.get("valid") or s.retry or action is None:
                continue
            j = next((k for k, text in enumerate(legal) if text.endswith("{" + action + "}")), None)
            if j is None:
                continue
            key = tuple(s.prompt_ids)
            self.rows.setdefault(key, torch.zeros(len(legal), dtype=torch.float64))
            sums.setdefault(key, {}).setdefault(j, []).append(s.reward)
        for key, by_action in sums.items():
            row = self.rows[key]
            for j, rs in by_action.items():
                row[j] = self.decay * row[j] + (1 - self.decay) * (sum(rs) / len(rs))
        return sum(len(rs) for by_action in sums.values() for rs in by_action.values())

    def values(self, keys: list[tuple], legal: torch.Tensor) -> torch.Tensor:
        """(S, A) values of `keys`, rows padded like `legal` (0 where unknown or not legal)."""
        return self.padded(keys, torch.zeros(legal.shape, dtype=torch.float64)).to(legal.device)


class MMDTarget:
    """`rl.mmd.update: target`: at every state of the step's turns, MMD's closed-form step
    p*(s) = losses.mmd_target(p_old(s), q(s), rho(s)) from the QTable's values, then `target_steps` optimizer
    steps on mean_s KL(p*(s) || p(s)) - validity mean_s log m(s). How far the policy moves per RL step is set by
    eta (logged: `loss/mmd_target_step`, the mean KL(p* || p_old)), not by the optimizer's step size."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.q = QTable(cfg.q_decay)

    def step(self, model, tokenizer, samples, pad: int, alpha: float, magnet_table, opt, params, rl_cfg, amp, run,
             stage: str, step: int) -> dict[str, float]:
        out: dict[str, float] = {"loss/mmd_target_turns": self.q.update(samples)}
        goal = None
        for k in range(self.cfg.target_steps):
            opt.zero_grad(set_to_none=True)
            with amp():
                table = legal_answer_table(model, tokenizer, samples, pad)  # the same states, in the same order
                if table is None:
                    return {}
                keys, seq, legal, _ = table
                logp, log_mass = legal_log_probs(seq.float(), legal)
                if goal is None:  # the first pass is the policy before the step: p_old, and the target from it
                    old, _ = legal_log_probs(seq.detach().double(), legal)
                    rho = magnet_table.log_probs(keys, legal) if magnet_table is not None else uniform_log_probs(legal)
                    goal = mmd_target(old, self.q.values(keys, legal), rho.double(), legal, alpha, self.cfg.eta)
                    out["loss/mmd_target_step"] = float(kl_categorical(goal, old, legal).mean())
                kl = kl_categorical(goal.to(logp.dtype), logp, legal)
                loss = kl.mean() - self.cfg.validity * log_mass.mean()
            _backward_checked(loss, run, stage, step)
            grad = _clip_and_step(opt, params, rl_cfg.max_grad_norm, run, stage, step)
            if k == 0:
                out["loss/mmd_target_kl_first"] = float(kl.detach().mean())
        out.update({"loss/total": float(loss.detach()), "loss/grad_norm": grad, "loss/mmd_target_kl_last": float(kl.detach().mean()),
                    "rollout/legal_mass": float(log_mass.detach().exp().mean())})
        return out


def _mmd_exact(table, mmd, alpha: float, magnet_model, tokenizer, batch, pad: int, old_legal: dict, stats: dict,
               magnet_table: MagnetTable | None = None):
    """MMD's regulariser at the minibatch's distinct states, exact over the legal answers (rl/losses.py):
    mean over states of alpha KL(p || rho) + (1/eta) KL(p || p_old) - validity log m. Each state weighs
    the same (not by visits: more stable, tiny-scale-pitfalls.md)."""
    keys, seq, legal, _ = table
    logp, log_mass = legal_log_probs(seq, legal)
    if magnet_table is not None:
        rho = magnet_table.log_probs(keys, legal).to(logp.dtype)
    elif magnet_model is None:
        rho = uniform_log_probs(legal).to(logp.dtype)
    else:
        with torch.no_grad():
            m_table = legal_answer_table(magnet_model, tokenizer, batch, pad)
        rho, _ = legal_log_probs(m_table[1], m_table[2])
    # p_old rows were padded to the whole batch's widest legal set; this minibatch's may be narrower
    old = torch.stack([old_legal[k][: legal.shape[1]] for k in keys]) if old_legal else None
    terms = mmd_state_terms(logp, log_mass, legal, rho, alpha, mmd.eta, old, mmd.validity)
    stats.update({"loss/mmd_magnet": float(terms["magnet"].detach().mean()), "loss/mmd_prox": float(terms["prox"].detach().mean()),
                  "loss/mmd_validity": float(terms["validity"].detach().mean()),
                  "rollout/legal_mass": float(log_mass.detach().exp().mean())})
    return terms["loss"].mean()
@dataclass
class MMDStep:
    """What MMD needs in one learner step: its settings, this step's alpha, the magnet model (None: uniform),
    the legal-answer log-probs before the step's updates (the proximal term's p_old, by prompt), whether
    legal answers are scored exactly (`games.answer: boxed`), and the per-state magnet (`moving_table`)."""

    cfg: object
    alpha: float
    magnet_model: object
    old_legal: dict
    legal_exact: bool
    magnet_table: MagnetTable | None = None


def accumulate_gradients(model, ref_model, batch: list[Sample], cfg, pad: int, max_len: int, tokenizer, amp, run,
                         stage: str, step: int, old_is_current: bool = False, temperature: float = 1.0,
                         is_trunc: float = 2.0, hooks: LearnerHooks | None = None, mmd: MMDStep | None = None,
                         version: int | None = None):
    """Zero the gradients, then backward the minibatch's loss in micro-batches of rl.micro_batch_size
    (None: one pass). Every term is scaled by its micro-batch's share of the minibatch's normaliser
    (policy_loss's `shares`; the legal-action entropy by its share of the scored turns; MMD's per-state
    terms by the micro-batch's share of the distinct states — exact unless one state falls in two
    micro-batches), so the accumulated gradient is the unsplit minibatch's; the replay NLL is added once,
    unsplit. Returns (diagnostics, total loss, log-prob mismatch rows). `amp`: the learner's autocast
    context factory."""
    hooks = hooks or LearnerHooks()
    micro = cfg.micro_batch_size or len(batch)
    chunks = [batch[c: c + micro] for c in range(0, len(batch), micro)]
    n_tok = max(sum(len(s.completion_ids) for s in batch), 1)
    n_legal = max(_legal_count(batch), 1)
    # the states legal_answer_table scores (the same filter as _legal_count)
    n_states = max(len({tuple(s.prompt_ids) for s in batch
                        if s.info.get("legal_answers") and 1 < len(s.info["legal_answers"]) <= 16}), 1)
    token_entropy = not any(s.info.get("legal_answers") for s in batch)  # as for the unsplit minibatch
    exact = mmd is not None and mmd.legal_exact and not token_entropy
    sampled = (mmd.alpha, mmd.magnet_model, _vocab(model)) if mmd is not None and not exact else None
    model.zero_grad(set_to_none=True)
    stats, total, rows = {}, 0.0, []
    for c, chunk in enumerate(chunks):
        shares = None
        if len(chunks) > 1:
            shares = (sum(len(s.completion_ids) for s in chunk) / n_tok, len(chunk) / len(batch))
        with amp():
            loss, part = policy_loss(model, ref_model, chunk, cfg, pad, max_len, old_is_current=old_is_current,
                                     temperature=temperature, is_trunc=is_trunc, logprobs=hooks.logprobs,
                                     mmd_sampled=sampled, shares=shares, token_entropy=token_entropy,
                                     version=version)
            table = None
            if cfg.entropy_coef > 0 or exact:  # scored once for the entropy bonus and MMD
                table = legal_answer_table(model, tokenizer, chunk, pad)
            if cfg.entropy_coef > 0:
                h = legal_action_entropy(model, tokenizer, chunk, pad, table=table)
                if h is not None:
                    loss = loss - cfg.entropy_coef * h * (_legal_count(chunk) / n_legal if shares else 1.0)
                    part["loss/legal_entropy"] = float(h.detach())
            if exact and table is not None:
                term = _mmd_exact(table, mmd.cfg, mmd.alpha, mmd.magnet_model, tokenizer, chunk, pad, mmd.old_legal,
                                  part, mmd.magnet_table)
                loss = loss + term * (len(table[0]) / n_states if shares else 1.0)
            if mmd is not None:
                part["loss/mmd_alpha"] = mmd.alpha
            grad_parts = getattr(cfg, "log_grad_parts", False) and len(chunks) == 1
            params = [p for p in model.parameters() if p.requires_grad] if grad_parts else []
            if grad_parts:  # diagnostics: the policy term's own gradient norm (one pass only)
                part["loss/grad_norm_policy"] = _grad_norm(loss, params)
            if hooks.replay is not None and c == len(chunks) - 1:  # once per minibatch, unsplit
                replay = _replay_loss(model, hooks.replay(step), pad)
                if grad_parts:
                    stats["loss/grad_norm_replay"] = _grad_norm(replay, params)
                loss = loss + replay
                stats["loss/replay"] = float(replay.detach())
        rows.append({k: part.pop(k) for k in list(part) if k.startswith("rollout/logprob_mismatch")})
        _merge_stats(stats, part, shares, _legal_count(chunk) / n_legal,
                     pg_by_tokens=cfg.token_aggregation == "token_mean")
        total += float(loss.detach())
        _backward_checked(loss, run, stage, step)
    return stats, total, rows


def hms(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up (progress lines)."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def legal_answer_table(model, tokenizer, batch: list[Sample], pad: int, max_actions: int = 16,
                       share_prefix: bool = True):
    """The exact answer distribution at every distinct game state of the batch whose legal answers are known.

    Returns (keys, seq, legal, visits) or None: keys = the distinct prompts (token tuples, first-seen
    order), seq (S, A) = log pi(answer_text(a) + EOS | prompt) at temperature 1 (the quantity the
    exploitability evaluation scores), legal (S, A) bool (rows padded to the widest legal set), visits =
    how many of the batch's turns were at each state. States with more than `max_actions` legal answers
    (bargaining offers) are skipped. `share_prefix` (default): each state's prompt runs once for all its
    answers (`shared_prefix_sums`, graph kept); False, or a model training with gradient checkpointing:
    every (state, answer) row runs in full (same values and gradients; bench/bench_legal_table.py)."""
    visits: dict[tuple, int] = {}
    answers: dict[tuple, list[str]] = {}
    for s in batch:
        legal = s.info.get("legal_answers")
        if legal and 1 < len(legal) <= max_actions:
            key = tuple(s.prompt_ids)
            answers[key] = legal
            visits[key] = visits.get(key, 0) + 1
    if not answers:
        return None
    prompts, comps, where = [], [], []
    for k, (key, legal) in enumerate(answers.items()):
        prompts.append(list(key))
        comps.append([tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                      for text in legal])
        where.extend((k, j) for j in range(len(legal)))
    if not share_prefix or (model.training and getattr(model, "is_gradient_checkpointing", False)):
        # checkpointing turns the KV cache off: score every (state, answer) row in full
        logp, mask = completion_logprobs(model, [p for p, cs in zip(prompts, comps) for _ in cs],
                                         [c for cs in comps for c in cs], pad=pad)
        flat = (logp * mask).sum(-1)
    else:  # each state's prompt runs once for all its answers, the batch's common prefix once
        flat = shared_prefix_sums(model, prompts, comps, pad)
    width = max(len(v) for v in answers.values())
    rows = torch.tensor([k for k, _ in where], device=flat.device)
    cols = torch.tensor([j for _, j in where], device=flat.device)
    seq = flat.new_zeros(len(answers), width).index_put((rows, cols), flat)
    legal = torch.zeros(len(answers), width, dtype=torch.bool, device=flat.device)
    legal[rows, cols] = True
    return list(answers), seq, legal, [visits[k] for k in answers]


def legal_action_entropy(model, tokenizer, batch: list[Sample], pad: int, max_actions: int = 16, table=None):
    """Entropy of the policy's exact distribution over the legal actions, averaged over the batch's turns.

    p(a | prompt) = softmax over legal a of log pi(answer_text(a) + EOS | prompt): the same quantity the
    exploitability evaluation scores. A token-level entropy bonus would also reward garbage tokens;
    this one only spreads mass between legal actions. Prompts with more than `max_actions` legal
    actions (bargaining offers) are skipped. None when no sample carries its legal answers.
    `table`: a `legal_answer_table` of this batch already computed (scored once for entropy and MMD).
    """
    table = table if table is not None else legal_answer_table(model, tokenizer, batch, pad, max_actions)
    if table is None:
        return None
    _keys, seq, legal, visits = table
    lp, _ = legal_log_probs(seq, legal)
    h = -(lp.exp() * lp * legal.to(lp.dtype)).sum(-1)
    w = torch.tensor(visits, dtype=h.dtype, device=h.device)
    return (w * h).sum() / w.sum()


def _grad_norm(loss: torch.Tensor, params) -> float:
    """L2 norm of d loss / d params before clipping, the graph kept for the real backward (rl.log_grad_parts)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None) + 0.0))


def _replay_loss(model, pairs, pad: int) -> torch.Tensor:
    """Supervised NLL on replayed atomic examples (limits forgetting of stage-1 skills)."""
    prompts = [p for p, _ in pairs]
    targets = [t for _, t in pairs]
    logp, mask = completion_logprobs(model, prompts, targets, pad=pad)
    return -(logp * mask).sum() / mask.sum().clamp(min=1.0)
