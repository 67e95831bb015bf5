"""`compose-rl ablate`: SFT-only vs SFT->RL vs RL-only, matched, branching from one stage-1 checkpoint.

Per seed, stage 1 (atomic SFT + the mastery gate) is trained ONCE, in its own run directory
(`stage1-s<seed>`), and its final checkpoint is read back from disk by every variant that uses it:
the variants of a seed start from the same tensors (their fingerprints are recorded and compared).
Then, for `rl.steps` steps:
- `sft_rl`:  RL (rl/learner.py) on the recipe's RL problems.
- `sft_only`: supervised training on the SAME problems RL sees at each step (task.rl_problems with
  the collector's step seed), with their correct targets, through the same optimizer the learner
  builds (Adam, `rl.lr`, constant), the same gradient clip, the same replay (the pipeline's replay
  function: the same depth-1 examples at the same steps, loss weight 1, as the learner adds it) and
  one gradient step per RL gradient step.
- `rl_only`: RL from the untrained model (no stage 1), same steps.
What is matched, and each difference with its reason, is listed in the report header (`MATCHED`,
`DIFFERENCES`); the gradient steps each variant actually took are counted, not assumed.
Output: one table (mean and 95% t-interval over seeds per depth, beside the shortcut floor) and a plot.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from compose_rl.pipeline import Pipeline, say
from compose_rl.recipe import AblateCfg, recipe_from_dict
from compose_rl.rollout.collectors import step_seed
from compose_rl.rundir import RunDir
from compose_rl.stats import mean_ci


MATCHED = [
    "optimizer: rl.optimizer (Adam, torch defaults, unless the recipe says sgd), the one rl/learner.py builds, fresh at the start of stage 2",
    "learning rate and schedule: rl.lr, constant, for every variant's stage 2",
    "gradient clip: rl.max_grad_norm",
    "problems: the same rl.prompts_per_step problems per step (task.rl_problems with the collector's step seed)",
    "replay: the same depth-1 examples at the same steps (the pipeline's replay function), loss weight 1",
    "gradient steps: one per RL gradient step (counted per variant in the table)",
    "stage 1: one checkpoint per seed, trained once; sft_only and sft_rl load it from disk",
    "evaluation: the same held-out items, greedy, the same pass@k samples",
]
DIFFERENCES = [
    "examples per problem: RL samples rl.group_size completions of each problem and weights them by "
    "advantage; SFT-only trains on the one correct completion (its supervised counterpart). "
    "Problems and replay examples seen are equal; sampled completions are RL's own cost.",
    "rl_only starts from the untrained model (no stage 1): that is the variant's point.",
]


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's tensors (names, dtypes, shapes, bytes): equal iff the weights are."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _variant_recipe(recipe, seed: int, name: str, stages: list[str]):
    data = recipe.model_dump(mode="json")
    data.update(seed=seed, name=name, ablate=None, stages=stages)
    return recipe_from_dict(data, "ablate"), data


def run_ablation(recipe) -> Path:
    if recipe.task is None:
        raise ValueError("ablate: needs a string-composition recipe (`task`); games ablations: run recipes with rl.advantage switched")
    if recipe.latent is not None:  # a refusal names the section it refuses (the matched SFT trains the plain model)
        raise ValueError("ablate: not for latent-loop recipes; compare latent.steps=0 with latent.steps=K as two `recipe` runs")
    ab = recipe.ablate or AblateCfg()
    root = Path(recipe.output) / f"{recipe.name}-ablate-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True)
    results: dict[str, dict[int, dict]] = {v: {} for v in ab.variants}
    stage1: dict[int, dict] = {}
    for seed in ab.seeds:
        if any(v != "rl_only" for v in ab.variants):
            stage1[seed] = _train_stage1(recipe, seed, root)
        untrained_start = None
        for variant in ab.variants:
            say(f"== ablation: {variant}, seed {seed}")
            r, data = _variant_recipe(recipe, seed, f"{variant}-s{seed}", ["rl"])
            run = RunDir.create(root, r.name, json.dumps(data))
            pipe = Pipeline(r, run)
            pipe.build()
            if variant != "rl_only":
                tensors, _ = RunDir(Path(stage1[seed]["run"])).latest_checkpoint()
                pipe.policy.model.load_state_dict(tensors["model"])
                pipe.engine.load_weights(pipe.sync(), 1)
                start = stage1[seed]["start"]
            else:
                untrained_start = untrained_start or pipe.evaluate("start")
                start = untrained_start
            start_fp = fingerprint(pipe.policy.model.state_dict())
            if variant == "sft_only":
                grad_steps = matched_sft(pipe)
            else:
                pipe.stage_rl(0, "rl", None)
                grad_steps = _rl_grad_steps(run.read_metrics())
            end = pipe.evaluate("end")
            rl_rows = [x for x in run.read_metrics() if x.get("stage") == "rl" and "rollout/groups_with_signal" in x]
            signal = sum(x["rollout/groups_with_signal"] for x in rl_rows) / len(rl_rows) if rl_rows else float("nan")
            results[variant][seed] = {"start": start, "end": end, "groups_with_signal": signal, "run": str(run.path),
                                      "start_fingerprint": start_fp, "grad_steps": grad_steps}
    return _write(root, recipe, ab, results, stage1)


def _rl_grad_steps(rows: list[dict]) -> int:
    """Optimizer steps the learner took: its minibatches per step, or the replay-only step of a step
    with no sample carrying signal (rows without `loss/minibatches` count one step)."""
    n = 0
    for x in rows:
        if x.get("stage") != "rl" or "reward/mean" not in x:
            continue
        mb = int(x.get("loss/minibatches", 1))
        n += mb if mb else int("loss/replay" in x)
    return n


def _train_stage1(recipe, seed: int, root: Path) -> dict:
    """Stage 1 of one seed, trained once: SFT + gate, its checkpoint on disk, and its evaluation."""
    from compose_rl.pipeline import GateFailed

    say(f"== ablation: stage 1 (shared), seed {seed}")
    r, data = _variant_recipe(recipe, seed, f"stage1-s{seed}", ["sft"])
    run = RunDir.create(root, r.name, json.dumps(data))
    pipe = Pipeline(r, run)
    pipe.build()
    try:
        pipe.stage_sft(0, "sft")
    except GateFailed as e:  # the ablation reports every variant; the gate result is in the table
        say(f"(ablation continues) {e}")
    gate = run.read_json("eval/sft-gate.json", {})
    start = pipe.evaluate("start")
    tensors, _ = run.latest_checkpoint()
    return {"run": str(run.path), "fingerprint": fingerprint(tensors["model"]), "gate_passed": bool(gate.get("passed")),
            "start": start}


def matched_sft(pipe) -> int:
    """SFT-only stage 2, matched to the RL learner (see MATCHED); returns the gradient steps taken."""
    from compose_rl.domains.strcomp import task_of
    from compose_rl.rl.learner import _replay_loss, make_optimizer
    from compose_rl.sft.stage import encode_pair

    r = pipe.recipe
    model, pad = pipe.policy.model, pipe.policy.tokenizer.pad_token_id or 0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, r.rl)  # as run_rl: same optimizer, same constant lr
    replay = pipe._replay_fn() if r.rl.replay_fraction > 0 else None
    model.train()
    bar = tqdm(range(r.rl.steps), desc="sft_only (matched)", dynamic_ncols=True)
    for step in bar:
        probs = task_of(pipe.domains).rl_problems(r.rl.prompts_per_step, seed=step_seed(r.seed, step))
        loss = _replay_loss(model, [encode_pair(pipe.policy, p.prompt, p.target) for p in probs], pad)
        stats = {"sft/loss_task": float(loss.detach())}
        if replay is not None:
            rep = _replay_loss(model, replay(step), pad)
            loss = loss + rep  # weight 1, as the learner adds replay to each minibatch loss
            stats["loss/replay"] = float(rep.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        stats["loss/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, r.rl.max_grad_norm))
        opt.step()
        stats["loss/total"] = float(loss.detach())
        pipe.run.log("sft_only", step, stats)
        bar.set_postfix(loss=f"{stats['sft/loss_task']:.3f}")
    model.eval()
    pipe.engine.load_weights(pipe.sync(), pipe.engine.policy_version + 1)
    return r.rl.steps


def merge_ablations(recipe, roots: list[Path]) -> Path:
    """One table from ablations of the same recipe run separately (e.g. one seed per machine or process:
    `compose-rl ablate R.yaml 'ablate.seeds=[1]'`): their results.json are joined by variant and seed."""
    results: dict[str, dict] = {}
    stage1: dict = {}
    for r in roots:
        f = Path(r) / "results.json"
        if not f.is_file():
            raise ValueError(f"ablate --merge: {r} has no results.json (an ablation root that finished?)")
        data = json.loads(f.read_text())
        for seed, v in data["stage1"].items():
            if seed in stage1:
                raise ValueError(f"ablate --merge: seed {seed} appears in two ablations; merge each seed once")
            stage1[seed] = v
        for variant, by_seed in data["variants"].items():
            results.setdefault(variant, {}).update(by_seed)
    seeds = sorted({int(s) for by in results.values() for s in by})
    ab = (recipe.ablate or AblateCfg()).model_copy(update={"seeds": seeds})
    root = Path(recipe.output) / f"{recipe.name}-ablate-merged-{time.strftime('%Y%m%d-%H%M%S')}"
    root.mkdir(parents=True)
    return _write(root, recipe, ab, results, stage1)


def _write(root: Path, recipe, ab, results, stage1) -> Path:
    from compose_rl.domains.strcomp import acc_key, floor_key, pass_key  # ablate runs string-task recipes only
    from compose_rl.report.plots import plot_depth
    from compose_rl.report.tables import md_table as _md_table

    depths = recipe.task.test_depths
    k = recipe.eval.pass_k
    tables, rows = {}, []
    floor = None
    for variant, by_seed in results.items():
        if not by_seed:
            continue
        drows = []
        for d in depths:
            accs = [v["end"][acc_key(d)] for v in by_seed.values()]
            m, h = mean_ci(accs)
            fl = next(iter(by_seed.values()))["end"][floor_key(d)]
            drows.append({"depth": d, "acc": m, "acc_lo": m - h, "acc_hi": m + h, "floor": fl})
        tables[variant] = drows
        floor = drows
        start_pk = mean_ci([v["start"].get(pass_key(k, 2), 0.0) for v in by_seed.values()])
        sig = [v["groups_with_signal"] for v in by_seed.values() if v["groups_with_signal"] == v["groups_with_signal"]]
        d1_start = mean_ci([v["start"][acc_key(1)] for v in by_seed.values()])
        steps = sorted({v["grad_steps"] for v in by_seed.values()})
        rows.append([variant] + [f"{r['acc']:.3f} ± {r['acc_hi'] - r['acc']:.3f}" for r in drows]
                    + [f"{start_pk[0]:.3f}", f"{mean_ci(sig)[0]:.3f}" if sig else "", f"{d1_start[0]:.3f} → {drows[0]['acc']:.3f}",
                       "/".join(map(str, steps))])
    floor_row = ["shortcut floor (best rule)"] + [f"{r['floor']:.3f}" for r in floor] + ["", "", "", ""]
    header = (["variant"] + [f"d{d}" for d in depths]
              + [f"start pass@{k} d2", "RL groups w/ signal", "d1 before → after", "gradient steps"])
    shared = all(results[v][s]["start_fingerprint"] == stage1[s]["fingerprint"]
                 for v in results if v != "rl_only" for s in results[v])
    png = plot_depth(None, tables, path=root / "ablation.png", title="Ablation: accuracy by depth (mean, 95% CI over seeds)")
    text = [f"# Ablation: {recipe.name}", "",
            f"Seeds: {list(ab.seeds)}; stage 2: {recipe.rl.steps} steps x {recipe.rl.prompts_per_step} problems "
            f"(RL: x {recipe.rl.group_size} samples); replay fraction {recipe.rl.replay_fraction}.", "",
            "Matched between the variants:", ""] + [f"- {m}" for m in MATCHED] + [
            "", "Differences, and why:", ""] + [f"- {d}" for d in DIFFERENCES] + [
            "", "Stage 1 per seed (shared by sft_only and sft_rl; checkpoint loaded from disk): "
            + "; ".join(f"seed {s}: gate {'passed' if v['gate_passed'] else 'FAILED'}, weights {v['fingerprint'][:12]}"
                        for s, v in stage1.items())
            + (f" — the variants' starting weights {'match' if shared else 'DO NOT match'} it." if stage1 else ""), "",
            "Accuracy on held-out compositions after stage 2 (greedy), mean ± 95% t-interval half-width over seeds:", "",
            _md_table(header, rows + [floor_row]), "", f"![ablation]({png})", "",
            "Per-run directories: " + ", ".join(f"`{Path(v['run']).name}`" for v in stage1.values())
            + (", " if stage1 else "") + ", ".join(f"`{Path(v['run']).name}`" for by in results.values() for v in by.values())]
    (root / "report.md").write_text("\n".join(text) + "\n")
    (root / "results.json").write_text(json.dumps({"stage1": stage1, "variants": results}, indent=2, default=float))
    return root
