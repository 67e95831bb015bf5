"""Trainer for the latent-loop policy (latent_loop.py): SFT through the loop, then RL whose sparse
reward must assign credit through it. One explicit loop each.

    SFT  for step:  loss = -mean log pi(target | prompt, loop)          (dense: every answer token;
                                                                         loop length ramps 0 -> K)
    RL   for step:
        samples = collector.collect(engine, step)     # answers sampled after the latent loop; verifier reward
        A       = group-normalized advantages          # (or batch mean)
        samples = drop samples with A == 0             # uniform groups carry no signal
        for minibatch (one epoch, in collection order):
            loss = -A * log pi(answer | prompt, loop)  # REINFORCE = PPO's gradient at ratio 1 (on-policy,
                                                      #   one epoch); backprop runs through the loop
                   + replay NLL (weight 1)            # the main learner's replay term, same weight and rule
            credit = per-sample ||dl_i / de_k|| for every latent step k  (see `latent_credit`)
            clip grad, Adam step
        log; eval every N; atomic checkpoint every N

The credit metrics (`latent/credit_step{k}`) are the Gap C probe: how much of a sample's gradient
reaches the k-th latent input. The loop positions have no targets of their own, so in both
stages the gradient reaches them only through the answer's likelihood: in SFT from the correct
answer's every token (dense), in RL from advantage-weighted sampled answers (a sparse outcome
reward). The probe is per sample (`latent_credit`), so SFT and RL steps, and RL steps with few or
many samples with signal, are on one scale; whether the reward still reaches the early loop steps,
and how that compares with SFT, is what they show.

Replay is the main learner's (compose_rl/rl/learner.py, `_replay_loss` and its use in `run_rl`):
the token-mean NLL of the replayed targets, added at weight 1 to every minibatch's mean loss (each
minibatch is its own optimizer step, as in run_rl), and on a step without any sample with signal
the optimizer still steps on the replay term alone.
`rl.replay_fraction` sets the number of replayed examples (in the pipeline's replay hook), never a
weight. Only the log-probs differ: here the targets are scored through the loop.
"""
from __future__ import annotations

import math
import random
import time

import torch
from tqdm.auto import tqdm

from compose_rl.rl.learner import compute_advantages
from compose_rl.rl.losses import aggregate, reinforce_loss
from compose_rl.rollout.hf import eos_pad


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def latent_credit(latents: list[torch.Tensor], logp: torch.Tensor, mask: torch.Tensor,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """The per-sample credit probe: a (B, K) tensor whose [i, k] is ||dl_i / de_k^(i)||, the gradient
    norm that sample i's own loss puts on its k-th latent input.

    l_i = -w_i * (mean over the sample's answer tokens of log pi(a_it | prompt, loop, a_<t)): the
    sample's loss as a batch of one, with w_i = 1 in SFT and w_i = A_i (its advantage) in RL. Rows
    of a batch never interact (each row attends to its own positions only), so one backward of
    sum_i l_i yields every sample's gradient at its own latent inputs; the graph is kept for the
    training backward. Unlike the gradient of the batch-mean training loss (which scales with
    1 / the number of samples or tokens in the batch), this does not change when the batch grows
    or when fewer RL samples carry signal: SFT and RL steps are comparable. Trainers log its mean
    over the samples."""
    if not latents:
        return torch.zeros((logp.shape[0], 0))
    w = torch.ones(logp.shape[0], device=logp.device) if weights is None else weights.to(logp.device)
    per_sample = -w * (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    grads = torch.autograd.grad(per_sample.sum(), latents, retain_graph=True, allow_unused=True)
    return torch.stack([g.detach().norm(dim=-1) if g is not None else torch.zeros(logp.shape[0], device=logp.device)
                        for g in grads], dim=1)


def replay_loss(loop, pairs: list[tuple[list[int], list[int]]], pad: int) -> torch.Tensor:
    """The learner's replay term (`rl.learner._replay_loss`: token-mean NLL over all replayed target
    tokens) with the targets scored through the loop; at 0 loop steps the two are equal (tested)."""
    logp, mask, _ = loop.answer_logprobs([p for p, _ in pairs], [t for _, t in pairs], pad)
    return aggregate(-logp, mask, "token_mean")


def curriculum_steps(step: int, total: int, max_steps: int, warmup_fraction: float) -> int:
    """Loop steps that run at SFT step `step` (0-based) of `total`: 0 at the start, growing linearly,
    all `max_steps` once `warmup_fraction * total` steps have passed (at once if warmup_fraction is 0)."""
    ramp = warmup_fraction * total
    if ramp <= 0:
        return max_steps
    return min(max_steps, int(max_steps * step / ramp))


def sft_optimizer(module, lr: float, steps: int, schedule: str = "linear"):
    """AdamW over `module`'s trainable parameters, the lr constant or decaying linearly to 0 over `steps`
    (the latent loop's and the recurrent-depth policy's stage 1)."""
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, (lambda s: 1.0 - s / steps) if schedule == "linear" else (lambda s: 1.0))


def sft_setup(module, policy, pairs: list[tuple[str, str]], cfg):
    """What both experimental stage 1s start from: the pad id, the encoded (prompt, answer) pairs, the number
    of steps (cfg.max_steps, or epochs over the data) and `sft_optimizer` over `module` for that many steps."""
    from compose_rl.sft.stage import encode_pair

    pad = eos_pad(policy.tokenizer)[1]
    data = [encode_pair(policy, p, c) for p, c in pairs]
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(len(data) * cfg.epochs / cfg.batch_size)
    opt, sched = sft_optimizer(module, cfg.lr, steps, cfg.schedule)
    return pad, data, steps, opt, sched


def draw_batch(data: list, order: list[int], rng: random.Random, size: int) -> list:
    """`size` examples without replacement within an epoch: `order` holds the rest of the current
    shuffled epoch and is refilled (and reshuffled with `rng`) whenever it runs out."""
    batch = []
    while len(batch) < size:
        if not order:
            order.extend(range(len(data)))
            rng.shuffle(order)
        batch.append(data[order.pop()])
    return batch


def latent_sft(loop, policy, pairs: list[tuple[str, str]], cfg, run, stage: str, seed: int,
               warmup_fraction: float = 0.0) -> dict:
    """Supervised training through the loop on (prompt, answer) pairs (teacher forcing, AdamW), with
    the loop-length curriculum of `curriculum_steps`."""
    pad, data, steps, opt, sched = sft_setup(loop, policy, pairs, cfg)
    rng = random.Random(seed)
    order: list[int] = []
    loop.train()
    losses: list[float] = []
    credit, logged = [0.0] * loop.steps, 0  # per-step sums of the batch-mean `latent_credit`, since the last log
    bar = tqdm(range(steps), desc=f"sft [{stage}] latent loop x{loop.steps}", dynamic_ncols=True)
    for step in bar:
        batch = draw_batch(data, order, rng, cfg.batch_size)
        loop.active_steps = curriculum_steps(step, steps, loop.steps, warmup_fraction)
        logp, mask, latents = loop.answer_logprobs([p for p, _ in batch], [c for _, c in batch], pad)
        loss = -logp.sum() / mask.sum().clamp(min=1.0)
        # the dense-supervision counterpart of RL's credit probe (loop steps not run this step log 0)
        for k, c in enumerate(latent_credit(latents, logp, mask).mean(0).tolist()):
            credit[k] += c
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(loop.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 10 == 0 or step + 1 == steps:
            n = len(losses) - logged
            mean = sum(losses[-n:]) / n
            out = {"sft/loss": mean, "sft/lr": sched.get_last_lr()[0], "latent/active_steps": loop.active_steps}
            out.update({f"latent/credit_step{k}": c / n for k, c in enumerate(credit)})
            run.log(stage, step, out)
            credit, logged = [0.0] * loop.steps, len(losses)
            bar.set_postfix(loss=f"{mean:.3f}")
    bar.close()
    loop.active_steps = loop.steps
    return {"sft/steps": steps, "sft/final_loss": sum(losses[-10:]) / max(len(losses[-10:]), 1)}


def run_latent_rl(loop, policy, engine, collector, cfg, run, stage: str,
                  evaluate=None, replay=None, resume=None) -> dict:
    """RL through the latent loop for cfg.steps steps (see the module docstring)."""
    tok = policy.tokenizer
    pad = eos_pad(tok)[1]
    opt = torch.optim.Adam([p for p in loop.parameters() if p.requires_grad], lr=cfg.lr)
    start = 0
    if resume is not None:
        tensors, meta = resume
        loop.load_state_dict(tensors["model"])
        opt.load_state_dict(tensors["optimizer"])
        start = meta["step"] + 1
        run.truncate_metrics(stage, meta["step"])
    else:  # a fresh start of this stage: rows of an attempt killed before its first checkpoint are stale
        run.truncate_metrics(stage, -1)
    engine.load_weights(None, start)
    loop.train()
    last: dict = {}
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"rl [{stage}] latent loop x{loop.steps}",
               dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        samples, metrics, texts = collector.collect(engine, step)
        t_gen = time.perf_counter() - t0
        rewards = [s.reward for s in samples]
        compute_advantages(samples, cfg.advantage, None, cfg.negative_weight)
        trained = [s for s in samples if not (cfg.drop_zero_advantage and s.advantage == 0.0)]
        credit = [0.0] * loop.steps  # sums over the trained samples of `latent_credit`
        sums: dict[str, float] = {"loss/policy": 0.0, "loss/replay": 0.0, "loss/grad_norm": 0.0}
        updates = 0
        # as run_rl: every minibatch its own mean loss + replay NLL at weight 1, its own clipped step;
        # a step with no sample with signal still steps on the replay term alone
        for chunk in list(_chunks(trained, cfg.minibatch)) or ([[]] if replay is not None else []):
            terms = []
            if chunk:
                logp, mask, latents = loop.answer_logprobs([s.prompt_ids for s in chunk], [s.completion_ids for s in chunk], pad)
                adv = torch.tensor([s.advantage for s in chunk], device=logp.device)
                for k, c in enumerate(latent_credit(latents, logp, mask, adv).sum(0).tolist()):
                    credit[k] += c
                terms.append(reinforce_loss(logp, adv, mask, cfg.token_aggregation))
                sums["loss/policy"] += terms[-1].item()
            if replay is not None:
                terms.append(replay_loss(loop, replay(step), pad))
                sums["loss/replay"] += terms[-1].item()
            loss = sum(terms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sums["loss/grad_norm"] += float(torch.nn.utils.clip_grad_norm_(loop.parameters(), cfg.max_grad_norm))
            opt.step()
            updates += 1
        n = max(len(trained), 1)
        metrics.update({k: v / max(updates, 1) for k, v in sums.items()})  # means over the optimizer steps
        if replay is None:
            del metrics["loss/replay"]
        engine.load_weights(None, step + 1)  # in process: the engine shares the loop's module
        dt = time.perf_counter() - t0
        mean = sum(rewards) / max(len(rewards), 1)
        metrics.update({
            "reward/mean": mean,
            "rollout/samples": len(samples),
            "rollout/samples_trained": len(trained),
            "rollout/groups_with_signal": len({s.group for s in trained}) / max(len({s.group for s in samples}), 1),
            "rollout/response_tokens": sum(len(s.completion_ids) for s in samples) / max(len(samples), 1),
            "loss/minibatches": math.ceil(len(trained) / cfg.minibatch),  # policy-gradient minibatches, as run_rl
            "perf/step_s": dt,
            "perf/gen_s": t_gen,
        })
        for k, c in enumerate(credit):
            metrics[f"latent/credit_step{k}"] = c / n
        if loop.steps and credit[-1] > 0:
            metrics["latent/credit_first_over_last"] = credit[0] / credit[-1]
        if evaluate is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            metrics.update(evaluate(step))
        run.log(stage, step, metrics)
        run.write_samples(stage, step, texts[: cfg.samples_logged])
        bar.set_postfix(reward=f"{mean:+.3f}", signal=f"{metrics['rollout/groups_with_signal']:.2f}")
        last = metrics
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            run.save_checkpoint(f"{stage}-{step:06d}", {"model": loop.state_dict(), "optimizer": opt.state_dict()},
                                {"stage": stage, "step": step, "extra": {}})
    bar.close()
    return last
