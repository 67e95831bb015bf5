"""`compose-rl ablate`: SFT-only vs SFT->RL vs RL-only on matched data and compute.

Per seed, stage 1 (atomic SFT) is trained once and shared by the variants that use it. Then:
- `sft_rl`:  RL for rl.steps steps on the recipe's RL problems.
- `sft_only`: supervised training on the SAME problems RL sees (step s uses RL's prompts of step s,
  with their correct targets), one optimizer step per RL step, batch = rl.prompts_per_step, plus
  the same share of depth-1 replay RL gets: matched problems and gradient steps.
- `rl_only`: RL from the untrained model (no stage 1), same steps.
Each variant logs the pass@k of its starting policy, the share of RL groups with mixed rewards,
depth-1 accuracy after stage 2 (forgetting) and depths 3-6 against the chance baseline.
Output: one table (mean and 95% t-interval over seeds per depth) and one plot.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from compose_rl.pipeline import Pipeline, say
from compose_rl.recipe import recipe_from_dict
from compose_rl.rollout.collectors import step_seed
from compose_rl.rundir import RunDir

# two-sided 95% Student t quantiles by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(xs: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (0 for a single value)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    sd = (sum((x - m) ** 2 for x in xs) / (n - 1)) ** 0.5
    return m, _T95.get(n - 1, 1.96) * sd / n ** 0.5


def run_ablation(recipe) -> Path:
    if recipe.task is None:
        raise ValueError("ablate: needs a string-composition recipe (`task`); games ablations: run recipes with rl.advantage switched")
    if recipe.latent is not None:
        raise ValueError("ablate: not for latent-loop recipes; compare latent.steps=0 with latent.steps=K as two `recipe` runs")
    ab = recipe.ablate or __import__("compose_rl.recipe", fromlist=["AblateCfg"]).AblateCfg()
    root = Path(recipe.output) / f"{recipe.name}-ablate-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True)
    results: dict[str, dict[int, dict]] = {v: {} for v in ab.variants}
    for seed in ab.seeds:
        stage1 = None
        for variant in ab.variants:
            say(f"== ablation: {variant}, seed {seed}")
            data = recipe.model_dump(mode="json")
            data.update(seed=seed, name=f"{variant}-s{seed}", ablate=None)
            r = recipe_from_dict(data, "ablate")
            run = RunDir.create(root, r.name, json.dumps(data))
            pipe = Pipeline(r, run)
            pipe.build()
            if variant != "rl_only":
                if stage1 is None:
                    _sft_warn(pipe)
                    stage1 = {k: v.detach().clone() for k, v in pipe.policy.model.state_dict().items()}
                else:
                    pipe.policy.model.load_state_dict(stage1)
                pipe.engine.load_weights(pipe.sync(), 1)
            start = pipe.evaluate("start")
            if variant == "sft_only":
                _matched_sft(pipe)
            else:
                pipe.stage_rl(1, "rl", None)
            end = pipe.evaluate("end")
            rl_rows = [x for x in run.read_metrics() if x.get("stage") == "rl"]
            signal = sum(x["rollout/groups_with_signal"] for x in rl_rows) / len(rl_rows) if rl_rows else float("nan")
            results[variant][seed] = {"start": start, "end": end, "groups_with_signal": signal, "run": str(run.path)}
    return _write(root, recipe, ab, results)


def _sft_warn(pipe) -> None:
    from compose_rl.pipeline import GateFailed

    try:
        pipe.stage_sft(0, "sft")
    except GateFailed as e:  # the ablation reports every variant; the gate result is in the table
        say(f"(ablation continues) {e}")


def _matched_sft(pipe) -> None:
    from compose_rl.sft.stage import run_sft

    r = pipe.recipe
    pairs = []
    n_replay = int(round(r.rl.prompts_per_step * r.rl.replay_fraction))
    for step in range(r.rl.steps):
        probs = pipe.task.rl_problems(r.rl.prompts_per_step, seed=step_seed(r.seed, step))
        if n_replay:
            probs = probs[n_replay:] + pipe.task.composite_examples(n_replay, seed=r.seed * 7 + step, depths=(1,))
        pairs += [(p.prompt, p.target) for p in probs]
    cfg = r.sft.model_copy(update={"batch_size": r.rl.prompts_per_step, "max_steps": r.rl.steps, "epochs": 1.0})
    out = run_sft(pipe.policy, pairs, cfg, pipe.run, "sft_only", r.seed)
    pipe.run.log("sft_only", r.rl.steps, out)
    pipe.engine.load_weights(pipe.sync(), pipe.engine.policy_version + 1)


def _write(root: Path, recipe, ab, results) -> Path:
    from compose_rl.report import _md_table, plot_depth

    depths = recipe.task.test_depths
    k = recipe.eval.pass_k
    tables, rows = {}, []
    for variant, by_seed in results.items():
        if not by_seed:
            continue
        drows = []
        for d in depths:
            accs = [v["end"][f"eval/strcomp/acc_d{d}"] for v in by_seed.values()]
            m, h = mean_ci(accs)
            chance = next(iter(by_seed.values()))["end"][f"eval/strcomp/floor_d{d}"]
            drows.append({"depth": d, "acc": m, "acc_lo": m - h, "acc_hi": m + h, "chance": chance})
        tables[variant] = drows
        start_pk = mean_ci([v["start"].get(f"eval/strcomp/pass@{k}_d2", 0.0) for v in by_seed.values()])
        signal = mean_ci([v["groups_with_signal"] for v in by_seed.values() if v["groups_with_signal"] == v["groups_with_signal"]] or [float("nan")])
        d1_start = mean_ci([v["start"]["eval/strcomp/acc_d1"] for v in by_seed.values()])
        rows.append([variant] + [f"{r['acc']:.3f} ± {r['acc_hi'] - r['acc']:.3f}" for r in drows]
                    + [f"{start_pk[0]:.3f}", f"{signal[0]:.3f}", f"{d1_start[0]:.3f} → {drows[0]['acc']:.3f}"])
    chance_row = ["chance (echo input)"] + [f"{r['chance']:.3f}" for r in next(iter(tables.values()))] + ["", "", ""]
    header = ["variant"] + [f"d{d}" for d in depths] + [f"start pass@{k} d2", "RL groups w/ signal", "d1 before → after"]
    png = plot_depth(None, tables, path=root / "ablation.png", title="Ablation: accuracy by depth (mean, 95% CI over seeds)")
    text = [f"# Ablation: {recipe.name}", "",
            f"Seeds: {list(ab.seeds)}; RL steps: {recipe.rl.steps} x {recipe.rl.prompts_per_step} prompts x "
            f"{recipe.rl.group_size} samples; SFT-only: {recipe.rl.steps} steps on the same prompts with correct targets.",
            "Accuracy on held-out compositions after stage 2 (greedy), mean ± 95% t-interval half-width over seeds:", "",
            _md_table(header, rows + [chance_row]), "", f"![ablation]({png})", "",
            "Per-run directories: " + ", ".join(f"`{Path(v['run']).name}`" for by in results.values() for v in by.values())]
    (root / "report.md").write_text("\n".join(text) + "\n")
    (root / "results.json").write_text(json.dumps(results, indent=2, default=float))
    return root
