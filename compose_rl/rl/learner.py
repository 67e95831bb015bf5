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
                   async: each token weighted by min(pi_old / mu, rollout.is_trunc) (losses.py)
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
from compose_rl.rl.logprobs import completion_logprobs
from compose_rl.rl.losses import aggregate, kl_k2_seq, kl_k3, ppo_clip_loss, reinforce_loss, truncated_is_weights
from compose_rl.rollout.ray_workers import filter_stale
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


def _step_checked(opt, params, loss, max_grad_norm: float, run, stage: str, step: int) -> float:
    """backward, clip, Adam step; a non-finite loss or gradient norm raises NonFiniteError before the step."""
    if not torch.isfinite(loss):
        raise _non_finite(run, stage, step, "loss", float(loss))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if not torch.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        raise _non_finite(run, stage, step, "gradient norm", float(norm))
    opt.step()
    return float(norm)


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


def compute_advantages(samples: list[Sample], how: str, baselines: adv_lib.RoleBaselines | None) -> None:
    rewards = [s.reward for s in samples]
    if how in ("group", "group_unscaled"):
        a = adv_lib.group_normalized(rewards, [s.group for s in samples], scale=(how == "group"))
    elif how == "batch_mean":
        a = adv_lib.batch_mean(rewards)
    elif how == "rae":
        a = baselines.advantages(rewards, [s.game for s in samples], [s.role for s in samples],
                                 [s.episode for s in samples], [s.retry for s in samples])
    else:
        raise ValueError(f"unknown advantage estimator {how!r}")
    for s, v in zip(samples, a):
        s.advantage = float(v)


def _unique_pairs(samples: list[Sample]):
    index: dict[tuple, int] = {}
    owner = []
    for s in samples:
        key = (tuple(s.prompt_ids), tuple(s.completion_ids))
        owner.append(index.setdefault(key, len(index)))
    pairs = list(index)
    return [list(p) for p, _ in pairs], [list(c) for _, c in pairs], torch.tensor(owner, dtype=torch.long)


def policy_loss(model, ref_model, batch: list[Sample], cfg, pad: int, max_len: int, old_is_current: bool = False,
                temperature: float = 1.0, is_trunc: float = 2.0, logprobs: Callable | None = None):
    """Loss of one minibatch (its own mean) and its diagnostics; `loss/policy` is the policy-gradient term
    alone, the KL and entropy terms are logged separately. Old log-probs come from `s.old_logprobs` (learner-recomputed),
    or, when `old_is_current` (one epoch, one minibatch: pi_old is the current policy), from this forward pass."""
    prompts, comps, owner = _unique_pairs(batch)
    if logprobs is None:
        logp_u, mask_u, ent_u = completion_logprobs(model, prompts, comps, pad=pad, with_entropy=True, temperature=temperature)
        logp, mask, ent = logp_u[owner], mask_u[owner], ent_u[owner]
    else:  # the hook scores every sample itself (its log-prob may depend on more than prompt and completion)
        logp, mask, ent = logprobs(model, batch, pad, with_entropy=True, temperature=temperature)
    width = logp.shape[1]
    if old_is_current:
        old = logp.detach()
    else:
        old = torch.zeros_like(logp)
        for i, s in enumerate(batch):
            old[i, : len(s.old_logprobs)] = torch.tensor(s.old_logprobs[:width], dtype=old.dtype)
    advs = torch.tensor([s.advantage for s in batch], dtype=logp.dtype, device=logp.device)
    # decoupled objective for samples of an older policy (async): w = min(pi_old / mu, c) per token;
    # a sample of the current policy has mu = pi_old by definition, so w = 1 exactly (the engine's own
    # log-probs differ from the learner's only by numerics, which must not become a weight)
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
    if cfg.algorithm == "ppo":
        pg, clip_frac = ppo_clip_loss(logp, old, advs, mask, clip=cfg.clip, how=cfg.token_aggregation, max_len=max_len,
                                      weights=weights)
    else:
        pg, clip_frac = reinforce_loss(logp, advs, mask, how=cfg.token_aggregation, max_len=max_len,
                                       weights=weights), torch.tensor(0.0)
    loss = pg
    entropy = aggregate(ent, mask, "token_mean")
    kl = kl_term = torch.tensor(0.0)
    if ref_model is not None:
        with torch.no_grad():
            ref_u, _ = completion_logprobs(ref_model, prompts, comps, pad=pad, temperature=temperature)
        ref = ref_u[owner]
        kl_term = kl_k2_seq(logp, ref, mask, old).mean()  # gradient: grad KL(pi || ref) per completion
        loss = loss + cfg.kl_coef * kl_term
        kl = ((logp.detach() - ref) * mask).sum(-1).mean()  # value: log pi(y)/ref(y), unbiased on-policy
    if cfg.entropy_coef > 0 and not any(s.info.get("legal_answers") for s in batch):
        loss = loss - cfg.entropy_coef * entropy  # token entropy when the legal actions are not known
    approx_kl_old = aggregate(kl_k3(logp.detach(), old), mask, "token_mean")
    return loss, {**is_stats, "loss/policy": float(pg.detach()), "loss/clip_frac": float(clip_frac),
                  "loss/entropy": float(entropy.detach()), "loss/kl_ref": float(kl),
                  "loss/kl_term": float(kl_term.detach()),
                  "loss/approx_kl_old": float(approx_kl_old)}


def run_rl(policy, engine, collector, cfg, run, stage: str, seed: int, max_new_tokens: int,
           hooks: LearnerHooks | None = None, resume: dict | None = None, sync: Callable | None = None,
           max_lag: int = 0, temperature: float = 1.0, rollouts=None, is_trunc: float = 2.0) -> dict:
    """Train for cfg.steps steps. `resume` = the checkpoint meta/tensors of this stage, if any.

    `rollouts` (rollout.mode async): an AsyncRollouts whose batches replace `collector.collect`; the
    learner's version while it trains step k is k, a sample's lag is k - its policy_version, samples
    with lag > max_lag are dropped and the others weighted by min(pi_old / mu, is_trunc).

    `temperature` is the rollout temperature: every log-prob of the policy (and of the reference) is
    taken of softmax(logits / temperature), the distribution the engine sampled from and reported
    log-probs of, so ratios and gradients are those of the sampled policy. The legal-action entropy
    bonus and the replay NLL stay at temperature 1 (the distribution the evaluations score)."""
    if not temperature > 0:
        raise ValueError(f"rollout.temperature: RL needs a sampling temperature > 0 (got {temperature})")
    hooks = hooks or LearnerHooks()
    model, pad = policy.model, policy.tokenizer.pad_token_id or 0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    ref_model = None
    if cfg.kl_coef > 0:
        ref_model = copy.deepcopy(model).eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
    baselines = adv_lib.RoleBaselines(cfg.rae_decay) if cfg.advantage == "rae" else None
    start = 0
    if resume is not None:
        tensors, meta = resume
        model.load_state_dict(tensors["model"])
        opt.load_state_dict(tensors["optimizer"])
        if ref_model is not None and "ref_model" in tensors:
            ref_model.load_state_dict(tensors["ref_model"])
        if baselines is not None:
            baselines.load_state_dict(meta["baselines"])
        if hooks.load_extra_state is not None:
            hooks.load_extra_state(meta.get("extra", {}))
        start = meta["step"] + 1
        run.truncate_metrics(stage, meta["step"])
        if rollouts is None:
            engine.load_weights(sync() if sync else None, start)
    if rollouts is not None:
        rollouts.start(start, sync())  # the workers get version `start` and begin generating ahead
    model.train()

    last: dict = {}
    t_stage = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"rl [{stage}]", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
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
        for s in samples:
            if s.policy_version != version:
                s.behaviour_logprobs = list(s.old_logprobs)
        n_all = len(samples)
        gen_tokens = sum(len(s.completion_ids) for s in samples)
        rewards = [s.reward for s in samples]
        bad = [r for r in rewards if not math.isfinite(r)]
        if bad:
            raise _non_finite(run, stage, step, f"reward in {len(bad)} of {n_all} samples", bad[0])

        # 2. advantages
        compute_advantages(samples, cfg.advantage, baselines)
        mixed = adv_lib.mixed_groups(rewards, [s.group for s in samples])
        n_groups = len({s.group for s in samples})

        # 3. keep only samples with signal
        if cfg.drop_uniform_groups and cfg.advantage in ("group", "group_unscaled"):
            samples = [s for s in samples if s.group in mixed]
        if cfg.drop_zero_advantage:
            samples = [s for s in samples if s.advantage != 0.0]
        samples = [s for s in samples if s.completion_ids]

        # 4. old log-probs recomputed on the learner (the engine's may differ numerically). With one
        #    epoch and one minibatch pi_old is the policy of the loss's own forward pass: no extra pass.
        t1 = time.perf_counter()
        single_pass = cfg.ppo_epochs == 1 and len(samples) <= cfg.minibatch
        with torch.no_grad():
            if samples and not single_pass and hooks.logprobs is not None:
                old, _ = hooks.logprobs(model, samples, pad, with_entropy=False, temperature=temperature)
                for i, s in enumerate(samples):
                    s.old_logprobs = old[i, : len(s.completion_ids)].tolist()
            elif samples and not single_pass:
                prompts, comps, owner = _unique_pairs(samples)
                old_u, mask_u = completion_logprobs(model, prompts, comps, pad=pad, temperature=temperature)
                for i, s in enumerate(samples):
                    s.old_logprobs = old_u[owner[i], : len(s.completion_ids)].tolist()

        # 5. gradient steps, PPO semantics (Schulman et al. 2017, Alg. 1): every minibatch is its own
        #    mean loss and its own clipped Adam step; the logged losses are means over the minibatches
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        rng = random.Random(seed * 31 + step)
        for _epoch in range(cfg.ppo_epochs):
            order = list(range(len(samples)))
            rng.shuffle(order)
            for i in range(0, len(order), cfg.minibatch):
                batch = [samples[j] for j in order[i: i + cfg.minibatch]]
                loss, stats = policy_loss(model, ref_model, batch, cfg, pad, max_new_tokens, old_is_current=single_pass,
                                          temperature=temperature, is_trunc=is_trunc, logprobs=hooks.logprobs)
                if cfg.entropy_coef > 0:
                    h = legal_action_entropy(model, policy.tokenizer, batch, pad)
                    if h is not None:
                        loss = loss - cfg.entropy_coef * h
                        stats["loss/legal_entropy"] = float(h.detach())
                if hooks.replay is not None:
                    replay = _replay_loss(model, hooks.replay(step), pad)
                    loss = loss + replay
                    stats["loss/replay"] = float(replay.detach())
                stats["loss/total"] = float(loss.detach())
                stats["loss/grad_norm"] = _step_checked(opt, params, loss, cfg.max_grad_norm, run, stage, step)
                for k, v in stats.items():
                    sums[k] += v
                    counts[k] += 1
        n_minibatches = counts["loss/total"]
        if not samples and hooks.replay is not None:
            # no RL signal this step, but replay still keeps the atomics alive
            loss = _replay_loss(model, hooks.replay(step), pad)
            _step_checked(opt, params, loss, cfg.max_grad_norm, run, stage, step)
            sums["loss/replay"], counts["loss/replay"] = float(loss.detach()), 1
        stats = {k: sums[k] / counts[k] for k in sums}
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
            "rollout/groups_with_signal": len(mixed) / max(n_groups, 1),
            "rollout/response_tokens": gen_tokens / max(n_all, 1),
            "perf/step_s": dt,
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


def hms(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up (progress lines)."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def legal_action_entropy(model, tokenizer, batch: list[Sample], pad: int, max_actions: int = 16):
    """Entropy of the policy's exact distribution over the legal actions, averaged over the batch's turns.

    p(a | prompt) = softmax over legal a of log pi(answer_text(a) + EOS | prompt): the same quantity the
    exploitability evaluation scores. A token-level entropy bonus would also reward garbage tokens;
    this one only spreads mass between legal actions. Prompts with more than `max_actions` legal
    actions (bargaining offers) are skipped. None when no sample carries its legal answers.
    """
    weight: dict[tuple, int] = {}
    answers: dict[tuple, list[str]] = {}
    for s in batch:
        legal = s.info.get("legal_answers")
        if legal and 1 < len(legal) <= max_actions:
            key = tuple(s.prompt_ids)
            answers[key] = legal
            weight[key] = weight.get(key, 0) + 1
    if not answers:
        return None
    prompts, comps, owners = [], [], []
    for k, (key, legal) in enumerate(answers.items()):
        for text in legal:
            prompts.append(list(key))
            comps.append(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
            owners.append(k)
    logp, mask = completion_logprobs(model, prompts, comps, pad=pad)
    seq = (logp * mask).sum(-1)
    total, norm = seq.new_zeros(()), 0
    owners_t = torch.tensor(owners, device=seq.device)
    for k, key in enumerate(answers):
        lp = torch.log_softmax(seq[owners_t == k], dim=-1)
        total = total + weight[key] * -(lp.exp() * lp).sum()
        norm += weight[key]
    return total / norm


def _replay_loss(model, pairs, pad: int) -> torch.Tensor:
    """Supervised NLL on replayed atomic examples (limits forgetting of stage-1 skills)."""
    prompts = [p for p, _ in pairs]
    targets = [t for _, t in pairs]
    logp, mask = completion_logprobs(model, prompts, targets, pad=pad)
    return -(logp * mask).sum() / mask.sum().clamp(min=1.0)
