"""Wiring of the recurrent-depth policy (recurrent_depth.py) into the pipeline: building it, its SFT
stage, the RL plumbing into the main learner, and its probes and depth evaluations.

    SFT  for step:  r = fixed or Poisson-log-normal; s_0 seeds fresh per row (Huginn)
                    loss = mean_t NLL(readout t)   (sft_readout all: deep supervision, as looped LMs
                           or NLL(readout r)         with per-iteration exits are trained; else final only)
                         + BCE(halt_t, readout t answers exactly)          (TRM's halting target)
    RL   rl/learner.run_rl, unchanged: LoopCollector draws this step's r, the engine samples with one
         exploration seed per rollout, Sample.info carries (depth, seed), and LearnerHooks.logprobs =
         recurrent_depth.loop_logprobs scores every sample with its own depth and seed under the credit mode.
"""
from __future__ import annotations

import random
from dataclasses import replace

import torch
from tqdm.auto import tqdm

from compose_rl.experimental.recurrent_depth import (LoopedEngine, LoopedLM, LoopSpec, flops_per_answer,
                                                     participation_ratio, readout_scores, sample_depth)
from compose_rl.experimental.trainer import draw_batch, sft_setup
from compose_rl.rollout.hf import encode, eos_pad, pad_left


def spec_from_recipe(cfg) -> LoopSpec:
    """A LoopSpec from the recipe's `recurrent` section (same field names)."""
    return LoopSpec(**{k: v for k, v in cfg.model_dump().items() if k in LoopSpec.__dataclass_fields__})


def build_looped(policy, cfg, batch_size: int = 64) -> tuple[LoopedLM, LoopedEngine]:
    looped = LoopedLM(policy.model, spec_from_recipe(cfg))
    return looped, LoopedEngine(looped, policy.tokenizer, batch_size)


def train_depth(spec: LoopSpec, rng: random.Random) -> int:
    if spec.depth_sampling == "fixed":
        return spec.depth
    return sample_depth(rng, spec.depth, spec.depth_sigma, spec.max_depth)


def sft_loss(looped: LoopedLM, prompts, targets, pad: int, depth: int, init_seeds) -> tuple[torch.Tensor, dict]:
    """Teacher-forced NLL through the loop (+ the halting head's BCE when every iteration reads out)."""
    every = looped.spec.sft_readout == "all"
    sc = readout_scores(looped, prompts, targets, pad, depth, readouts="all" if every else "last", init_seeds=init_seeds)
    n_tok = sc.mask.sum().clamp(min=1.0)
    nll = [-(lp.sum() / n_tok) for lp in sc.token_logp]
    loss = sum(nll) / len(nll)
    stats = {"sft/nll_final": float(nll[-1].detach())}
    if every:
        # TRM: the halting head predicts "the answer at this iteration is correct"
        target = sc.exact.float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(looped.halt_logits(sc.states, sc.last_prompt), target)
        loss = loss + bce
        stats.update({"sft/halt_bce": float(bce.detach()), "sft/exact_final": float(target[:, -1].mean())})
    return loss, stats


def sft_depth(spec: LoopSpec, rng: random.Random, step: int, total: int) -> int:
    """The depth of SFT step `step` (0-based) of `total`: the training depth drawn from `rng`, capped by the
    curriculum (`sft_warmup`: 1 at the start, the cap growing linearly over that fraction of stage 1)."""
    from compose_rl.experimental.trainer import curriculum_steps

    r = train_depth(spec, rng)
    return min(r, 1 + curriculum_steps(step, total, r - 1, spec.sft_warmup))


def sft_step(looped: LoopedLM, opt, sched, batch, rng: random.Random, pad: int, step: int = 0, total: int = 1) -> dict:
    """One supervised update through the loop on `batch` ((prompt ids, answer ids) pairs) at SFT step `step`
    of `total`: this step's depth (sft_depth) and the rows' initial-state seeds drawn from `rng`, gradient
    clipped at 1. Returns the step's stats."""
    r = sft_depth(looped.spec, rng, step, total)
    looped.train_depth = r
    loss, stats = sft_loss(looped, [p for p, _ in batch], [c for _, c in batch], pad, r,
                           [rng.randrange(2 ** 31) for _ in batch])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(looped.parameters(), 1.0)
    opt.step()
    sched.step()
    return {"sft/loss": float(loss.detach()), "latent/depth": r, **stats}


def looped_sft(looped: LoopedLM, policy, pairs: list[tuple[str, str]], cfg, run, stage: str, seed: int) -> dict:
    """Supervised training through the loop on (prompt, answer) pairs (AdamW, linear or constant lr)."""
    pad, data, steps, opt, sched = sft_setup(looped, policy, pairs, cfg)
    rng = random.Random(seed)
    order: list[int] = []
    looped.train()
    window: list[dict] = []
    bar = tqdm(range(steps), desc=f"sft [{stage}] recurrent depth r={looped.spec.depth}", dynamic_ncols=True)
    for step in bar:
        window.append(sft_step(looped, opt, sched, draw_batch(data, order, rng, cfg.batch_size), rng, pad, step, steps))
        if (step + 1) % 10 == 0 or step + 1 == steps:
            out = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            out["sft/lr"] = sched.get_last_lr()[0]
            run.log(stage, step, out)
            bar.set_postfix(loss=f"{out['sft/loss']:.3f}")
            window = []
    bar.close()
    looped.train_depth = looped.spec.depth
    return {"sft/steps": steps}


class LoopCollector:
    """Wraps a collector (string task or self-play): draws this RL step's depth (the engine samples at it,
    the learner trains at it) and checks that every sample carries its rollout's (depth, exploration
    seed), which the engine puts in Completion.info and the collectors copy into Sample.info."""

    def __init__(self, inner, looped: LoopedLM, engine: LoopedEngine, seed: int):
        self.inner, self.looped, self.engine, self.seed = inner, looped, engine, seed

    def collect(self, engine, step: int):
        r = train_depth(self.looped.spec, random.Random(self.seed * 7_919 + step))
        self.engine.depth, self.looped.train_depth = r, r
        try:
            samples, metrics, texts = self.inner.collect(engine, step)
        finally:
            self.engine.depth = None  # evaluations run at the recipe's depth
        lost = sum("loop_depth" not in s.info for s in samples)
        if lost:
            raise RuntimeError(f"recurrent: {lost} of {len(samples)} samples lack their rollout's loop depth and seed; "
                               "the wrapped collector must copy Completion.info into Sample.info")
        metrics["latent/depth"] = r
        return samples, metrics, texts


def wire_rl(looped: LoopedLM, engine: LoopedEngine, collector, hooks, policy, seed: int):
    """(policy, collector, hooks) for rl.learner.run_rl: the learner trains the looped module (its
    parameters, checkpoints and replay go through LoopedLM.forward) with loop_logprobs as its log-prob."""
    from compose_rl.experimental.recurrent_depth import loop_logprobs

    hooks.logprobs = loop_logprobs
    return replace(policy, model=looped), LoopCollector(collector, looped, engine, seed), hooks


# ---------------------------------------------------------------------- probes and depth evaluations
@torch.no_grad()
def loop_probes(looped: LoopedLM, policy, task, depths, items: int, depth: int | None = None) -> dict:
    """What the loop does, on held-out items with their answers (teacher forcing, no sampling):
    per-iteration readout accuracy (does the answer appear at iteration t?), relative latent change
    ||s_t - s_{t-1}|| / ||s_{t-1}|| and the participation ratio of s_t, both at the last prompt position."""
    from compose_rl.sft.stage import encode_pair

    tok = policy.tokenizer
    pad = eos_pad(tok)[1]
    r = depth or looped.depth
    was = looped.training
    looped.eval()
    out: dict[str, float] = {}
    try:
        for dep in depths:
            pairs = [encode_pair(policy, p.prompt, p.target) for p in task.eval_problems(dep, items)]
            sc = readout_scores(looped, [p for p, _ in pairs], [c for _, c in pairs], pad, r, readouts="all")
            rows = torch.arange(len(pairs))
            z = [s[rows, sc.last_prompt] for s in sc.states]
            for t in range(r):
                out[f"probe/d{dep}/readout_acc_t{t + 1}"] = float(sc.exact[:, t].float().mean())
                out[f"probe/d{dep}/participation_t{t + 1}"] = participation_ratio(z[t])
                if t:
                    change = (z[t] - z[t - 1]).norm(dim=-1) / z[t - 1].norm(dim=-1).clamp(min=1e-8)
                    out[f"probe/d{dep}/latent_change_t{t + 1}"] = float(change.mean())
    finally:
        looped.train(was)
    return out


def depth_eval(looped: LoopedLM, engine: LoopedEngine, policy, task, depths, items: int, max_new_tokens: int,
               multipliers=(1, 2, 4)) -> dict:
    """Greedy accuracy by composition depth at r x m iterations (test-time depth scaling, no retraining),
    and under each exit rule at depth r (halting head, latent change), each with its mean iterations and
    forward FLOPs per answer (analytic, KV-cached: recurrent_depth.flops_per_answer)."""
    from compose_rl.evals.strcomp import accuracy

    r, spec0 = looped.depth, looped.spec
    probs = {d: task.eval_problems(d, items) for d in depths}
    out: dict[str, float] = {}
    variants = [(f"x{m}", r * m, "none") for m in multipliers] + [("halt_head", r, "head"), ("halt_change", r, "latent_change")]
    try:
        for name, depth, halting in variants:
            if halting != "none" and r == 1 and 1 in multipliers:  # an exit rule at r = 1 stops after the one
                # iteration: the x1 answers, already decoded
                out.update({k.replace("depth/x1/", f"depth/{name}/"): v for k, v in list(out.items()) if k.startswith("depth/x1/")})
                continue
            looped.spec = replace(spec0, halting=halting)
            engine.depth = depth
            used, flops = [], []
            for d, ps in probs.items():
                acc, _, _, firsts = accuracy(engine, policy.format_prompt, task, ps, max_new_tokens)
                out[f"depth/{name}/acc_d{d}"] = acc
                for c in firsts:  # each answer's own depth, as the engine reported it, and the tokens it decoded
                    used.append(c.info["loop_depth"])
                    flops.append(flops_per_answer(looped.config, looped.spec, c.info["loop_depth"], len(c.prompt_ids),
                                                  len(c.token_ids)))
            out[f"depth/{name}/mean_iterations"] = sum(used) / max(len(used), 1)
            out[f"depth/{name}/flops_per_answer"] = sum(flops) / max(len(flops), 1)
    finally:
        looped.spec, engine.depth = spec0, None
    return out


@torch.no_grad()
def game_depth_eval(pipe, multipliers=(1, 2, 4), known: dict | None = None) -> dict:
    """Test-time depth in self-play, for each training game small enough to solve: the exact exploitability
    of the looped policy at r x m iterations (no retraining), at a fixed t < r iterations, and under each
    exit rule at depth r (each information state's depth chosen from its prompt, as generation does; the
    policy is then the table at that depth, state by state), with the forward FLOPs of one strict answer
    (+ EOS) and, for the exit rules, the iterations, both averaged over the game's information states.
    `known`: the game eval's metrics, whose `eval/<game>/exploitability` is the value at m = 1 (scored by
    the same looped module)."""
    from compose_rl.evals.exploitability import exploitability_of_tables, infostates, is_small
    from compose_rl.evals.games import lm_policy_tables

    looped, tok = pipe.loop, pipe.policy.tokenizer
    r0, spec0, out = looped.depth, looped.spec, {}
    games = [g for d in pipe.domains for g, _ in getattr(d, "mixture", []) if is_small(g)]
    try:
        for game in games:
            infos = infostates(game)
            prompts = [pipe.policy.format_prompt(game.prompt(i.state, i.player)) for i in infos]
            ids = encode(tok, prompts)
            lens = [(len(p), len(tok(game.answer_text(i.state, i.state.legal_actions(i.player)[0]),
                                     add_special_tokens=False)["input_ids"]) + 1) for p, i in zip(ids, infos)]
            tables: dict[int, dict] = {}

            def at(t: int) -> dict:  # the exact tables of the loop stopped after t iterations
                if t not in tables:
                    looped.depth = t
                    tables[t] = lm_policy_tables(pipe.scorer, game)
                return tables[t]

            def expl(t: int) -> float:
                return exploitability_of_tables(game, at(t))[0]

            def flops(depths) -> float:
                return sum(flops_per_answer(looped.config, spec0, d, p, a) for d, (p, a) in zip(depths, lens)) / len(lens)

            for m in multipliers:
                done = (known or {}).get(f"eval/{game.name}/exploitability") if m == 1 else None
                out[f"depth/x{m}/{game.name}/exploitability"] = done if done is not None else expl(r0 * m)
                out[f"depth/x{m}/{game.name}/flops_per_answer"] = flops([r0 * m] * len(infos))
            for t in range(1, r0):  # the equal-compute reference for the exit rules
                out[f"depth/t{t}/{game.name}/exploitability"] = expl(t)
            padded = pad_left(ids, eos_pad(tok)[1], looped.device)
            for rule, halting in (("halt_head", "head"), ("halt_change", "latent_change")):
                looped.spec = replace(spec0, halting=halting)
                rd = looped.exit_depths(*padded, r0).tolist()
                looped.spec = spec0
                mixed = {i.key: at(d)[i.key] for i, d in zip(infos, rd)}
                out[f"depth/{rule}/{game.name}/exploitability"] = exploitability_of_tables(game, mixed)[0]
                out[f"depth/{rule}/{game.name}/mean_iterations"] = sum(rd) / len(rd)
                out[f"depth/{rule}/{game.name}/flops_per_answer"] = flops(rd)
    finally:
        looped.depth, looped.spec = r0, spec0
    return out


def recurrent_eval(pipe, label: str, known: dict | None = None) -> dict:
    """The pipeline's eval-stage extras, written to eval/<label>-recurrent.json: on the string task depth
    scaling and exit rules (depth_eval) and the loop probes on the recipe's test depths; in self-play the
    exact exploitability at each depth multiplier (game_depth_eval)."""
    from compose_rl.domains.strcomp import task_of

    r = pipe.recipe
    out: dict[str, float] = {}
    task = task_of(pipe.domains)
    if task is not None:
        items = r.eval.items_per_depth
        out.update(depth_eval(pipe.loop, pipe.engine, pipe.policy, task, r.task.test_depths, items,
                              pipe.max_new_tokens, r.recurrent.eval_multipliers))
        out.update(loop_probes(pipe.loop, pipe.policy, task, r.task.test_depths, min(items, 100)))
    out.update(game_depth_eval(pipe, r.recurrent.eval_multipliers, known))
    pipe.run.write_json(f"eval/{label}-recurrent.json", out)
    return out
