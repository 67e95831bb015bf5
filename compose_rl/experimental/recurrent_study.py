"""The Gap C study of the recurrent-depth policy (issue 11), on string composition or in self-play, at matched SFT.

Per seed: one SFT of the looped policy (shared by every RL condition of that seed, so that RL's effect
is a paired difference), then for each condition (credit x explore, see CONDITIONS) the same RL stage
from that checkpoint (same prompts, same optimizer, same replay) and the eval stage: greedy accuracy by
composition depth at r, 2r, 4r and under the two exit rules, with FLOPs per answer, and the loop
probes. Controls (--arms, each its own SFT and RL, final credit, temperature; see ARMS):
  plain  the same parameters at r = 1 (fewer FLOPs per answer)
  deep   a plain model with prelude + core x r + coda layers at r = 1: the same FLOPs per answer (more parameters)
  cot    the same parameters at r = 1 answering with a token chain of thought (task.cot: steps; more FLOPs,
         counted from the generated tokens)

    python -m compose_rl.experimental.recurrent_study recipes/recurrent-depth-strcomp.yaml \
        --seeds 0 1 2 --arms looped plain deep cot --out runs/recurrent-study [key=value overrides ...]
    python -m compose_rl.experimental.recurrent_study --summarize runs/recurrent-study

Every (seed, condition) writes `<out>/<condition>-s<seed>.json` as soon as it ends (a crash or a
deadline keeps what finished); --summarize prints the table: mean and 95% t-interval over seeds of
accuracy after SFT and after RL per depth, the paired RL - SFT difference, the fraction of RL groups
with signal, depth extrapolation (4r vs r) and the exit rules' mean iterations and FLOPs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONDITIONS = {  # name -> recurrent.* overrides of the RL stage (SFT is shared)
    "final-temp": {"credit": "final", "explore": "temperature"},
    "perloop-temp": {"credit": "per_loop", "explore": "temperature"},
    "final-dropout": {"credit": "final", "explore": "dropout"},
    "perloop-dropout": {"credit": "per_loop", "explore": "dropout"},
}


ARMS = {"looped": None, "plain": "plain (r=1)", "deep": "deep plain (r=1, FLOP-matched)", "cot": "token CoT (r=1)"}


def arm_recipe(base: dict, arm: str) -> dict:
    """The recipe (as a dict) of one arm of the study, from the looped recipe `base`: the controls run the loop
    once (r = 1, final credit, temperature); `deep` unrolls the core into r x core plain layers, so one answer
    token costs what the looped model's does; `cot` answers with the task's step-by-step chain of thought."""
    if arm == "looped":
        return base
    rc = base["recurrent"]
    one = {**rc, "depth": 1, "depth_sampling": "fixed", "credit": "final", "explore": "temperature", "backprop_steps": 0}
    out = {**base, "recurrent": one}
    if arm == "deep":
        core = rc["core"] * rc["depth"]
        out["recurrent"] = {**one, "core": core}
        out["model"] = {**base["model"], "tiny": {**base["model"]["tiny"], "num_layers": rc["prelude"] + core + rc["coda"]}}
    elif arm == "cot":
        if base.get("task") is None:
            raise ValueError("recurrent_study: --arms cot needs a string-task recipe (self-play answers are bare actions)")
        out["task"] = {**base["task"], "cot": "steps"}
        out["rollout"] = {**base["rollout"], "max_new_tokens": max(base["rollout"]["max_new_tokens"], 120)}
    elif arm != "plain":
        raise ValueError(f"recurrent_study: unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    return out


def run_seed(recipe_path: str, overrides: list[str], seed: int, out: Path, conditions: list[str], arm: str) -> None:
    from dataclasses import replace

    from compose_rl.commands.recipes import load as _load
    from compose_rl.pipeline import Pipeline
    from compose_rl.recipe import recipe_from_dict
    from compose_rl.rundir import RunDir

    base = arm_recipe(_load(recipe_path, [*overrides, f"seed={seed}"]).model_dump(mode="json"), arm)
    for d in [base]:
        recipe = recipe_from_dict({**d, "name": f"{d['name']}-{arm}-s{seed}", "output": str(out / "runs")}, "study")
        run = RunDir.create(recipe.output, recipe.name, json.dumps(d))
        pipe = Pipeline(recipe, run)
        pipe.build()
        pipe.stage_sft(0, "sft")
        after_sft = pipe.evaluate("eval-sft")
        sft_state = {k: v.clone() for k, v in pipe.kind.loop.state_dict().items()}
        spec0 = pipe.kind.loop.spec
        for cond in (conditions if arm == "looped" else ["final-temp"]):
            name = f"{cond}-s{seed}" if arm == "looped" else f"{arm}-s{seed}"
            if (out / f"{name}.json").exists():
                continue
            pipe.kind.loop.load_state_dict(sft_state)
            if recipe.games is not None:  # a fresh average policy and best-checkpoint record per condition
                from compose_rl.domains import training_domains

                pipe.domains = training_domains(recipe)
            opts = CONDITIONS[cond]
            pipe.recipe = recipe.model_copy(update={"recurrent": recipe.recurrent.model_copy(update=opts)})
            pipe.kind.loop.spec = replace(spec0, **opts)
            pipe.stage_rl(1, f"rl-{cond}", None)
            after_rl = pipe.evaluate(f"eval-rl-{cond}")
            rl_rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
            rl_rows = [r for r in rl_rows if r.get("stage") == f"rl-{cond}" and "rollout/groups_with_signal" in r]
            row = {"condition": ARMS[arm] or cond, "seed": seed,
                   "depth": recipe.recurrent.depth,
                   "depths": list(recipe.task.test_depths) if recipe.task is not None else [],
                   "games": [g.name for g in recipe.games.train] if recipe.games is not None else [],
                   "groups_with_signal": sum(r["rollout/groups_with_signal"] for r in rl_rows) / max(len(rl_rows), 1),
                   "reward_first": rl_rows[0]["reward/mean"] if rl_rows else None,
                   "reward_last": rl_rows[-1]["reward/mean"] if rl_rows else None,
                   "sft": after_sft, "rl": after_rl, "run": str(run.path)}
            (out / f"{name}.json").write_text(json.dumps(row, default=float))
            print(f"study: wrote {out / f'{name}.json'}", file=sys.stderr, flush=True)


def sft_curves(recipe_path: str, overrides: list[str], seeds: list[int], steps: int, every: int = 50) -> list[dict]:
    """Stage 1 alone, controlled: from the same initial weights, on the same batches in the same order (AdamW
    at sft.lr, linear decay over `steps`, clip 1, the recipe's sft_readout), train the plain model (the loop
    at r = 1 with the adapter held at [0 | I], so u = e: exactly the plain model), the loop at the recipe's r,
    and, when the recipe starts the state from noise, the loop at r with s_0 = 0. Per seed and variant: the
    final readout's answer NLL per token, averaged over each window of `every` steps."""
    import copy
    import random
    import tempfile
    from dataclasses import replace

    from compose_rl.commands.recipes import load as _load
    from compose_rl.experimental.recurrent_depth import LoopedLM
    from compose_rl.experimental.recurrent_train import sft_step
    from compose_rl.experimental.trainer import draw_batch, sft_optimizer
    from compose_rl.pipeline import Pipeline
    from compose_rl.rollout.hf import eos_pad
    from compose_rl.rundir import RunDir
    from compose_rl.sft.stage import encode_pair

    rows = []
    for seed in seeds:
        recipe = _load(recipe_path, [*overrides, f"seed={seed}"])
        with tempfile.TemporaryDirectory() as tmp:
            pipe = Pipeline(recipe, RunDir.create(tmp, "sft-curve", "{}"))
            pipe.build()
        pol, spec = pipe.policy, pipe.kind.loop.spec
        pad = eos_pad(pol.tokenizer)[1]
        data = [encode_pair(pol, p, c) for p, c in pipe.sft_pairs()]
        init = copy.deepcopy(pol.model.state_dict())
        variants = [("plain (r=1, adapter fixed)", replace(spec, depth=1), True),
                    (f"loop r={spec.depth}" + (f", s_0 noise {spec.init_std:g}" if spec.init_std else "")
                     + (f", depth curriculum over {spec.sft_warmup:g} of SFT" if spec.sft_warmup else ""), spec, False)]
        if spec.init_std:
            variants.append((f"loop r={spec.depth}, s_0 = 0", replace(spec, init_std=0.0), False))
        for name, vspec, fixed in variants:
            pol.model.load_state_dict(init)
            lm = LoopedLM(pol.model, vspec)
            if fixed:
                lm.adapter.requires_grad_(False)
                lm.state_norm.requires_grad_(False)
            opt, sched = sft_optimizer(lm, recipe.sft.lr, steps)
            rng, order = random.Random(seed), []
            lm.train()
            nll = [sft_step(lm, opt, sched, draw_batch(data, order, rng, recipe.sft.batch_size), rng, pad, k, steps)
                   ["sft/nll_final"] for k in range(steps)]
            curve = [sum(nll[i:i + every]) / len(nll[i:i + every]) for i in range(0, steps, every)]
            rows.append({"seed": seed, "variant": name, "every": every, "steps": steps, "curve": curve})
            print(f"sft-curve: seed {seed} {name}: " + " ".join(f"{x:.3f}" for x in curve), file=sys.stderr, flush=True)
    return rows


def summarize_curves(rows: list[dict]) -> str:
    """Mean ± 95% t over seeds of each variant's windowed NLL, and each loop's paired gap to the plain model."""
    every, n, steps = rows[0]["every"], len(rows[0]["curve"]), rows[0]["steps"]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    head = ["variant", "seeds"] + [f"NLL steps {i * every + 1}-{min((i + 1) * every, steps)}" for i in range(n)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    plain = {r["seed"]: r["curve"] for r in next(iter(by.values()))}
    for name, rs in by.items():
        lines.append("| " + " | ".join([name, str(len(rs))] + [ci([r["curve"][i] for r in rs]) for i in range(n)]) + " |")
    for name, rs in list(by.items())[1:]:
        lines.append("| " + " | ".join([f"{name} − plain (paired)", str(len(rs))]
                                       + [ci([r["curve"][i] - plain[r["seed"]][i] for r in rs]) for i in range(n)]) + " |")
    return "\n".join(lines)


def ci(xs: list[float]) -> str:
    """Mean ± the 95% t half-width over seeds (the mean alone for one seed)."""
    from compose_rl.stats import mean_ci

    m, h = mean_ci(xs)
    return f"{m:.3f} ± {h:.3f}" if len(xs) > 1 else f"{m:.3f}"


def summarize_games(rows: list[dict]) -> str:
    """Self-play rows: exact exploitability (lower is better) after SFT and after RL, the paired RL - SFT
    difference, at 4r iterations, groups with signal and FLOPs per answer, per game; mean ± 95% t over seeds."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["condition"], []).append(r)
    first = next(iter(by))
    head = ["condition", "n", "game", "expl. after SFT", "expl. after RL", "RL - SFT", f"after RL - {first} (paired)",
            "after RL at 2r", "after RL at 4r", "groups w/ signal", "MFLOP/answer (r)", "halt head: expl. / iters",
            "latent exit: expl. / iters", "fixed depth t < r: expl."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cond, rs in by.items():
        for g in rs[0]["games"]:
            key = f"eval/{g}/exploitability"
            ref = {r["seed"]: r["rl"][key] for r in by[first]}
            paired = [r["rl"][key] - ref[r["seed"]] for r in rs if r["seed"] in ref]
            cells = [cond, str(len(rs)), g, ci([r["sft"][key] for r in rs]), ci([r["rl"][key] for r in rs]),
                     ci([r["rl"][key] - r["sft"][key] for r in rs]), "—" if cond == first or not paired else ci(paired),
                     ci([r["rl"][f"depth/x2/{g}/exploitability"] for r in rs]),
                     ci([r["rl"][f"depth/x4/{g}/exploitability"] for r in rs]),
                     ci([r["groups_with_signal"] for r in rs]),
                     ci([r["rl"][f"depth/x1/{g}/flops_per_answer"] / 1e6 for r in rs])]
            for rule in ("halt_head", "halt_change"):  # rows from before the exit rules were scored in games: —
                k = f"depth/{rule}/{g}/"
                cells.append(ci([r["rl"][k + "exploitability"] for r in rs]) + " / " + ci([r["rl"][k + "mean_iterations"] for r in rs])
                             if all(k + "exploitability" in r["rl"] for r in rs) else "—")
            fixed = [t for t in range(1, rs[0].get("depth", 1)) if all(f"depth/t{t}/{g}/exploitability" in r["rl"] for r in rs)]
            cells.append(" · ".join(f"t={t}: " + ci([r["rl"][f"depth/t{t}/{g}/exploitability"] for r in rs]) for t in fixed)
                         or "—")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize(out: Path) -> str:
    order = [*CONDITIONS, *(v for v in ARMS.values() if v)]  # tables list conditions in this order, then the arms
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "sft-curves.json"]
    rows.sort(key=lambda r: (order.index(r["condition"]) if r["condition"] in order else len(order), r["seed"]))
    if not rows:
        return f"no results in {out}"
    if rows[0].get("games"):
        return summarize_games(rows)
    depths = rows[0]["depths"]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["condition"], []).append(r)

    head = ["condition", "n"] + [f"RL d{d}" for d in depths] + [f"RL-SFT d{d}" for d in depths] + \
        ["groups w/ signal", "RL d3-4 at 4r", "GFLOP/ans (r)", "halt head: acc d1-2 / iters", "latent exit: acc d1-2 / iters",
         "fixed depth t = 1..r: acc d1-2"]
    shallow = [d for d in depths if d <= 2]
    first = next(iter(by))
    head[2 + 2 * len(depths):2 + 2 * len(depths)] = [f"RL - {first} (paired)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = {r["seed"]: r["rl"] for r in by[first]}  # the same seed's items, hence its shortcut floors
    for cond, rs in by.items():
        cells = [cond, str(len(rs))]
        cells += [ci([r["rl"][f"depth/x1/acc_d{d}"] for r in rs]) for d in depths]
        cells += [ci([r["rl"][f"depth/x1/acc_d{d}"] - r["sft"][f"depth/x1/acc_d{d}"] for r in rs]) for d in depths]
        cells.append("—" if cond == first else " · ".join(
            f"d{d} " + ci([r["rl"][f"depth/x1/acc_d{d}"] - ref[r["seed"]][f"depth/x1/acc_d{d}"] for r in rs if r["seed"] in ref])
            for d in shallow))
        cells.append(ci([r["groups_with_signal"] for r in rs]))
        deep = [d for d in depths if d >= 3]
        cells.append(ci([sum(r["rl"][f"depth/x4/acc_d{d}"] for d in deep) / max(len(deep), 1) for r in rs])
                     + " (r: " + ci([sum(r["rl"][f"depth/x1/acc_d{d}"] for d in deep) / max(len(deep), 1) for r in rs]) + ")"
                     if all(f"depth/x4/acc_d{d}" in r["rl"] for r in rs for d in deep) else "—")  # eval_multipliers without 4
        cells.append(ci([r["rl"]["depth/x1/flops_per_answer"] / 1e9 for r in rs]))
        for rule in ("halt_head", "halt_change"):
            cells.append(ci([sum(r["rl"][f"depth/{rule}/acc_d{d}"] for d in shallow) / len(shallow) for r in rs]) + " / "
                         + ci([r["rl"][f"depth/{rule}/mean_iterations"] for r in rs]))
        # the equal-compute reference for the exit rules: the readout after exactly t iterations (loop_probes,
        # teacher-forced exact match on the same items = greedy accuracy of the loop stopped at t)
        cells.append(" · ".join(f"t={t}: " + ci([sum(r["rl"][f"probe/d{d}/readout_acc_t{t}"] for d in shallow) / len(shallow)
                                                for r in rs]) for t in range(1, rs[0]["depth"] + 1))
                     if all(f"probe/d{d}/readout_acc_t1" in r["rl"] for r in rs for d in shallow) else "—")
        lines.append("| " + " | ".join(cells) + " |")
    sft = [r for r in rows if r["condition"] in CONDITIONS]
    seen, sft_cells = set(), []
    for r in sft:
        if r["seed"] not in seen:
            seen.add(r["seed"])
            sft_cells.append(r)
    groups = ([("looped, shared by the conditions", sft_cells)] if sft_cells else []) + \
        [(cond, rs) for cond, rs in by.items() if cond not in CONDITIONS]  # each arm trains its own stage 1
    if groups:
        lines.append("")
    for name, rs in groups:
        lines.append(f"after SFT ({name}): " + ", ".join(f"d{d} {ci([r['sft'][f'depth/x1/acc_d{d}'] for r in rs])}"
                                                         for d in depths))
    refs = by[first]
    if all(f"eval/strcomp/floor_d{d}" in r["rl"] for r in refs for d in depths):  # the same items for every row of a seed
        lines.append("best shortcut rule on the same items (the floor every row stands beside): " + ", ".join(
            f"d{d} {ci([r['rl'][f'eval/strcomp/floor_d{d}'] for r in refs])}" for d in depths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="recurrent-depth study (issue 11)")
    ap.add_argument("recipe", nargs="?")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/recurrent-study")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--arms", nargs="+", default=["looped"], choices=list(ARMS),
                    help="looped (the conditions) and/or the r=1 controls: plain, deep (FLOP-matched), cot")
    ap.add_argument("--plain", action="store_true", help="shorthand for adding the plain arm")
    ap.add_argument("--summarize", metavar="DIR")
    ap.add_argument("--sft-curve", type=int, metavar="STEPS",
                    help="stage 1 only: plain vs loop NLL on identical batches for STEPS steps (sft_curves)")
    args = ap.parse_args(argv)
    if args.summarize:
        curves = sorted(Path(args.summarize).rglob("sft-curves.json"))  # one per --sft-curve process, joined
        print(summarize_curves([r for c in curves for r in json.loads(c.read_text())]) if curves
              else summarize(Path(args.summarize)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arms = list(dict.fromkeys([*args.arms, *(["plain"] if args.plain else [])]))
    if args.recipe is None:
        ap.error("give a recipe (or --summarize DIR)")
    from compose_rl.commands.recipes import load as _load
    from compose_rl.recipe import RecipeError, recipe_from_dict

    try:  # every arm's recipe checked before any training: a bad recipe, override or arm is one line
        base = _load(args.recipe, args.overrides).model_dump(mode="json")
        for arm in arms:
            recipe_from_dict(arm_recipe(base, arm), arm)
    except (RecipeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.sft_curve:
        rows = sft_curves(args.recipe, args.overrides, args.seeds, args.sft_curve)
        (out / "sft-curves.json").write_text(json.dumps(rows))
        print(summarize_curves(rows))
        return 0
    for arm in arms:  # every seed of one arm before the next
        for seed in args.seeds:
            run_seed(args.recipe, args.overrides, seed, out, args.conditions, arm)
    print(summarize(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
