"""String-task RL positive control and pass@k by depth (issue 20).

    python -m compose_rl.commands.positive_control rl RECIPE --stage1 STATE.pt --seeds 0 1 2 --out DIR [key=value ...]
        RL from one saved stage-1 checkpoint (stages/<label>/state.pt of a run with stages [sft]), once per
        seed, each in its own run directory under DIR; held-out accuracy on one fixed item set per depth
        (task.eval_problems: unseen function pairs, unseen inputs) before and after; the training curve
        (reward and groups with signal per depth, gradient norms) is each run's metrics.jsonl.
        Writes DIR/control.json and DIR/control.md (mean and 95% t-interval over seeds, the shortcut floor).
        `--arm sft_only`: instead of RL, supervised training on the same problems per step with their correct
        targets, through the same optimizer, lr, clip, replay and step count (`compose-rl ablate`'s sft_only,
        commands/ablate.matched_sft): the matched SFT arm from the same stage-1 tensors.
    python -m compose_rl.commands.positive_control shapes RECIPE --stage1 STATE.pt --items 400 --out DIR
        Greedy depth-1 accuracy by the shape of the input (StrCompTask.shaped_problems): random letters, the
        output of a train-pair predecessor, the output of a held-out-pair predecessor. DIR/shapes.json.
    python -m compose_rl.commands.positive_control pair A_DIR B_DIR --out DIR
        Paired by seed: A's held-out accuracy minus B's at every depth (two `rl` outputs of the same stage 1,
        items and seeds, e.g. --arm rl vs --arm sft_only), mean and 95% t-interval; DIR/pair.md.
    python -m compose_rl.commands.positive_control gradcheck RECIPE --stage1 STATE.pt --prompts 64 256 --out DIR
        How much of one RL batch's policy gradient is signal: the cosine between the gradients of two halves
        of the batch (independent estimates of one expectation), the cosine of the gradient (and of its
        positive- and negative-advantage parts) with the gradient of log p(correct chain) on fresh training
        problems, and that log-likelihood after a step of norm eps along the batch's ascent direction.
        DIR/gradcheck.json and gradcheck.md.
    python -m compose_rl.commands.positive_control passk RECIPE --ckpt base=init --ckpt sft=STATE.pt --ckpt rl=STATE.pt
        --n 32 --k 1 4 16 32 --items 50 --depths 1 2 3 --out DIR
        pass@k per depth (the unbiased estimator, evals/strcomp.pass_at_k) for each checkpoint, mean and
        95% interval over problems; DIR/passk.md, passk.json, passk.png.

Stage 1 is trained once and read back from disk, so every RL seed starts from the same tensors.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from compose_rl.domains.strcomp import task_of  # the string task's positive control: its problems
from compose_rl.stats import mean_ci


def _pipe(recipe, run_dir: Path, name: str):
    from compose_rl.pipeline import Pipeline
    from compose_rl.recipe import dump_recipe
    from compose_rl.rundir import RunDir

    run = RunDir.create(run_dir, name, dump_recipe(recipe))
    pipe = Pipeline(recipe, run)
    pipe.build()
    return pipe


def _load_state(pipe, state: str | None) -> None:
    """Stage-1 weights from a stages/<label>/state.pt (None: keep the recipe's fresh initialisation)."""
    if state is None:
        return
    tensors = torch.load(state, map_location="cpu", weights_only=True)
    pipe.trainable.load_state_dict(tensors["model"])
    pipe.engine.load_weights(pipe.sync(), pipe.engine.policy_version + 1)


def heldout_accuracy(pipe, depths, items: int) -> dict[str, float]:
    """Greedy accuracy on task.eval_problems(d, items) (a fixed prefix: the same items at every call)."""
    from compose_rl.evals.strcomp import accuracy

    out = {}
    for d in depths:
        task = task_of(pipe.domains)
        probs = task.eval_problems(d, items)
        out[f"acc_d{d}"] = accuracy(pipe.engine, pipe.policy.format_prompt, task, probs, pipe.max_new_tokens)[0]
    return out


def floors(task, depths, items: int) -> dict[str, tuple[float, str]]:
    from synthetic_tasks.strcomp import floor_of, shortcut_accuracies

    return {f"acc_d{d}": floor_of(shortcut_accuracies(task.eval_problems(d, items))) for d in depths}


def _reused_start(path: str | None, stage1: str, items: int, depths) -> dict | None:
    """The start accuracies of an earlier `rl` output (its control.json) of the same stage 1 and item sets:
    greedy decoding of the same tensors gives the same numbers, so a second process need not re-evaluate."""
    if path is None:
        return None
    prev = json.loads(Path(path).read_text())
    if prev["stage1"] != stage1 or prev["items"] != items:
        raise ValueError(f"--start-from {path}: another stage 1 or item count ({prev['stage1']}, {prev['items']} items)")
    start = prev["rows"][0]["start"]
    missing = [d for d in depths if f"acc_d{d}" not in start]
    if missing:
        raise ValueError(f"--start-from {path}: no start accuracy at depth {missing[0]}")
    return {f"acc_d{d}": start[f"acc_d{d}"] for d in depths}


def run_rl_seeds(recipe_path: str, stage1: str, seeds: list[int], out: Path, overrides: list[str], depths: list[int],
                 items: int, log=print, track_items: int = 200, track_depths=(2,), start_from: str | None = None,
                 arm: str = "rl") -> dict:
    from compose_rl.commands.ablate import matched_sft
    from compose_rl.recipe import load_recipe

    if arm not in ARMS:
        raise ValueError(f"--arm {arm!r}: choose one of {', '.join(ARMS)}")

    start_cache = _reused_start(start_from, stage1, items, depths)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        recipe = load_recipe(recipe_path, list(overrides) + [f"seed={seed}", "stages=[rl]"])
        t0 = time.perf_counter()
        pipe = _pipe(recipe, out, f"{recipe.name}-s{seed}")
        _load_state(pipe, None if stage1 == "init" else stage1)
        pipe.policy.model.eval()
        # stage 1 is the same tensors for every seed and greedy decoding ignores the seed: evaluate once
        start = start_cache or heldout_accuracy(pipe, depths, items)
        start_cache = start
        if recipe.rl.eval_every:  # the in-RL curve: held-out accuracy on the first track_items of the same sets
            pipe.track = lambda step, label: {f"eval/strcomp/{k}": v for k, v in
                                              heldout_accuracy(pipe, track_depths, track_items).items()}
        t1 = time.perf_counter()
        if arm == "rl":
            pipe.stage_rl(0, "rl", None)
        else:  # the matched supervised arm: same problems per step, correct targets, same optimizer and steps
            matched_sft(pipe)
        t_rl = time.perf_counter() - t1
        pipe.policy.model.eval()
        end = heldout_accuracy(pipe, depths, items)
        curve = [x for x in pipe.run.read_metrics() if x.get("stage") == "rl" and "reward/mean" in x]
        if arm == "rl":  # the supervised arm logs no RL curve
            (out / f"curve-s{seed}.md").write_text(curve_table(curve))
        row = {"seed": seed, "arm": arm, "run": str(pipe.run.path), "start": start, "end": end, "rl_s": t_rl,
               "wall_s": time.perf_counter() - t0, "steps": recipe.rl.steps,
               "signal_mean": sum(x["rollout/groups_with_signal"] for x in curve) / max(len(curve), 1)}
        rows.append(row)
        log(f"seed {seed}: " + "  ".join(f"{k} {start[k]:.3f}->{end[k]:.3f}" for k in end) + f"  ({t_rl:.0f} s RL)")
        (out / "control.json").write_text(json.dumps({"recipe": recipe_path, "overrides": overrides, "stage1": stage1,
                                                      "items": items, "arm": arm, "rows": rows}, indent=1))
    task = task_of(pipe.domains)
    summary = {"recipe": recipe_path, "overrides": overrides, "stage1": stage1, "items": items, "arm": arm, "rows": rows,
               "floors": floors(task, depths, items)}
    (out / "control.json").write_text(json.dumps(summary, indent=1))
    (out / "control.md").write_text(control_table(summary, depths))
    return summary


ARMS = {"rl": "after RL", "sft_only": "after matched SFT"}  # the row label of each arm's table
ARM_SHORT = {"rl": "RL", "sft_only": "SFT"}


CURVE_KEYS = ["reward/mean", "reward/depth1/correct", "reward/depth2/correct", "rollout/unparseable_rate", "rollout/depth1/groups_with_signal",
              "rollout/depth2/groups_with_signal", "rollout/depth2/groups_with_correct_signal", "loss/grad_norm", "loss/grad_norm_policy", "loss/grad_norm_replay",
              "eval/strcomp/acc_d1", "eval/strcomp/acc_d2", "eval/strcomp/acc_d3"]


def curve_table(rows: list[dict], window: int = 25) -> str:
    """The training curve in windows of `window` steps: mean of each logged key (blank where never logged)."""
    keys = [k for k in CURVE_KEYS if any(k in r for r in rows)]
    short = [k.split("/", 1)[1].replace("/groups_with_signal", " signal").replace("/groups_with_correct_signal", " right-vs-not").replace("/correct", " train acc")
             for k in keys]
    lines = ["| steps | " + " | ".join(short) + " |", "|---|" + "---|" * len(keys)]
    for lo in range(0, len(rows), window):
        chunk = rows[lo: lo + window]
        cells = []
        for k in keys:
            v = [r[k] for r in chunk if k in r]
            cells.append(f"{sum(v) / len(v):.3f}" if v else "")
        lines.append(f"| {chunk[0]['step']}-{chunk[-1]['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def train_accuracy(run_dir: str | Path, depth: int, window: int = 100) -> tuple[float, float] | None:
    """Depth-`depth` accuracy of RL's own samples (reward/depth<d>/correct in the run's metrics.jsonl), mean over
    the first `window` steps and over the last `window` steps: the positive control's training-reward change.
    None when the run directory or the key is missing, or the run is shorter than two windows."""
    from compose_rl.rundir import RunDir

    rows = RunDir(Path(run_dir)).read_metrics()  # [] without the file; skips a line cut by a kill
    key = f"reward/depth{depth}/correct"
    pts = {x["step"]: x[key] for x in rows if x.get("stage") == "rl" and key in x}
    if not pts or max(pts) + 1 < 2 * window:
        return None
    last = max(pts) + 1 - window
    first_w = [v for k, v in pts.items() if k < window]
    last_w = [v for k, v in pts.items() if k >= last]
    return sum(first_w) / len(first_w), sum(last_w) / len(last_w)


def control_table(summary: dict, depths) -> str:
    rows = summary["rows"]
    lines = [f"seeds {[r['seed'] for r in rows]}, {summary['items']} held-out items per depth (unseen pairs), greedy; "
             + ("mean ± 95% t-interval over seeds" if len(rows) > 1 else "one seed: no interval over seeds"), "",
             "| | " + " | ".join(f"d{d}" for d in depths) + " |", "|---|" + "---|" * len(depths)]
    start = rows[0]["start"]
    lines.append("| stage 1 (start) | " + " | ".join(f"{start[f'acc_d{d}']:.3f}" for d in depths) + " |")
    cells = []
    # one seed has no interval over seeds: print the value alone, never "± 0.000"
    ci = (lambda v, sign="": f"{mean_ci(v)[0]:{sign}.3f} ± {mean_ci(v)[1]:.3f}") if len(rows) > 1 else \
        (lambda v, sign="": f"{v[0]:{sign}.3f} (1 seed)")
    for d in depths:
        cells.append(ci([r["end"][f"acc_d{d}"] for r in rows]))
    arm = summary.get("arm", "rl")  # outputs written before --arm existed are RL
    lines.append(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
    cells = []
    for d in depths:
        cells.append(ci([r["end"][f"acc_d{d}"] - r["start"][f"acc_d{d}"] for r in rows], "+"))
    lines.append(f"| {ARM_SHORT[arm]} − start | " + " | ".join(cells) + " |")
    if arm == "rl":  # the positive control proper: RL's own training reward, first vs last 100 steps, by seed
        tr = [train_accuracy(r["run"], 2) for r in rows]
        if all(t is not None for t in tr):
            lines.append("| train d2 (RL's samples), steps 0–99 → last 100 | "
                         + f"{sum(a for a, _ in tr) / len(tr):.3f} → {sum(b for _, b in tr) / len(tr):.3f}, paired "
                         + ci([b - a for a, b in tr], "+") + " |" + " |" * (len(depths) - 1))
    fl = summary["floors"]
    lines.append("| shortcut floor | " + " | ".join(f"{fl[f'acc_d{d}'][0]:.3f} ({fl[f'acc_d{d}'][1]})" for d in depths) + " |")
    lines += ["", "per seed: " + "; ".join(f"s{r['seed']} " + " ".join(f"d{d} {r['end'][f'acc_d{d}']:.3f}" for d in depths)
                                           + f" ({r['rl_s']:.0f} s {ARM_SHORT[arm]}"
                                           + (f", signal {r['signal_mean']:.2f})" if arm == "rl" else ")") for r in rows)]
    return "\n".join(lines) + "\n"


def merge_controls(dirs: list[Path], out: Path, depths) -> dict:
    """One table from several `rl` outputs (e.g. one seed per process): their rows must share the recipe,
    overrides (but the seed), stage 1 and items, so that the mean over seeds is of one setting."""
    parts = [json.loads((Path(d) / "control.json").read_text()) for d in dirs]
    first = parts[0]
    for p, d in zip(parts[1:], dirs[1:]):
        for k in ("recipe", "overrides", "stage1", "items", "arm"):
            if p.get(k, "rl" if k == "arm" else None) != first.get(k, "rl" if k == "arm" else None):
                raise ValueError(f"--merge {d}: {k} differs ({p[k]!r} vs {first[k]!r}); merge runs of one setting only")
    rows = [r for p in parts for r in p["rows"]]
    seeds = [r["seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--merge: seed repeated across the directories ({seeds})")
    if "floors" not in first:
        raise ValueError(f"--merge {dirs[0]}: no floors (the run did not finish)")
    summary = {**first, "rows": rows, "merged_from": [str(d) for d in dirs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "control.json").write_text(json.dumps(summary, indent=1))
    (out / "control.md").write_text(control_table(summary, depths))
    return summary


def input_shapes(recipe_path: str, stage1: str, out: Path, overrides: list[str], items: int, log=print) -> dict:
    """Greedy depth-1 accuracy of a checkpoint on each input shape of `StrCompTask.shaped_problems`."""
    from compose_rl.evals.strcomp import accuracy
    from compose_rl.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides) + ["stages=[rl]"])
    out.mkdir(parents=True, exist_ok=True)
    pipe = _pipe(recipe, out, f"{recipe.name}-shapes")
    _load_state(pipe, None if stage1 == "init" else stage1)
    pipe.policy.model.eval()
    task = task_of(pipe.domains)
    res = {"stage1": stage1, "items": items}
    for shape in task.SHAPES:
        probs = task.shaped_problems(shape, items)
        res[shape] = accuracy(pipe.engine, pipe.policy.format_prompt, task, probs, pipe.max_new_tokens)[0]
        log(f"d1 on {shape} inputs: {res[shape]:.3f} ({items} items)")
    (out / "shapes.json").write_text(json.dumps(res, indent=1))
    return res


def pair_controls(a_dir: Path, b_dir: Path, out: Path, depths) -> str:
    """A minus B per seed at every depth, mean and 95% t-interval over seeds: two `rl` outputs that must
    share the stage 1, held-out items and seeds (so every difference is of the same start and problems)."""
    a, b = (json.loads((Path(d) / "control.json").read_text()) for d in (a_dir, b_dir))
    for k in ("stage1", "items"):
        if a[k] != b[k]:
            raise ValueError(f"pair: {k} differs ({a[k]!r} vs {b[k]!r}); pair runs from one stage 1 and item set")
    by_a, by_b = ({r["seed"]: r for r in x["rows"]} for x in (a, b))
    if sorted(by_a) != sorted(by_b):
        raise ValueError(f"pair: the seeds differ ({sorted(by_a)} vs {sorted(by_b)}); pair the same seeds")
    missing = [d for d in depths if any(f"acc_d{d}" not in r["end"] for r in a["rows"] + b["rows"])]
    if missing:
        raise ValueError(f"pair: no accuracy at depth {missing[0]} in both; pass --depths that both evaluated")
    seeds = sorted(by_a)
    name = lambda x: ARMS[x.get("arm", "rl")]  # noqa: E731
    lines = [f"A = {a_dir} ({name(a)}), B = {b_dir} ({name(b)}); seeds {seeds}, {a['items']} held-out items per "
             f"depth, stage 1 {a['stage1']}", "", "| | " + " | ".join(f"d{d}" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for label, src in (("A", by_a), ("B", by_b)):
        lines.append(f"| {label}: {name(a if label == 'A' else b)} | " + " | ".join(
            "{:.3f} ± {:.3f}".format(*mean_ci([src[s]["end"][f"acc_d{d}"] for s in seeds])) for d in depths) + " |")
    lines.append("| A − B, paired by seed | " + " | ".join(
        "{:+.3f} ± {:.3f}".format(*mean_ci([by_a[s]["end"][f"acc_d{d}"] - by_b[s]["end"][f"acc_d{d}"] for s in seeds]))
        for d in depths) + " |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "pair.md").write_text(text)
    return text


def continue_sft(recipe_path: str, state: str, out: Path, overrides: list[str], depths, items: int, log=print) -> Path:
    """More stage-1 SFT from a saved state (sft.* from the recipe and overrides; `seed` picks fresh
    examples): writes its own run directory with stages/sft/state.pt and prints held-out accuracy."""
    from compose_rl.pipeline import GateFailed
    from compose_rl.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides) + ["stages=[sft]"])
    out.mkdir(parents=True, exist_ok=True)
    pipe = _pipe(recipe, out, f"{recipe.name}-sft-more")
    _load_state(pipe, None if state == "init" else state)  # init: a fresh stage 1 from the recipe's initialisation
    try:
        pipe.stage_sft(0, "sft")
    except GateFailed as e:
        log(f"(continues) {e}")
    pipe.policy.model.eval()
    acc = heldout_accuracy(pipe, depths, items)
    log("after more SFT: " + "  ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    (pipe.run.path / "heldout.json").write_text(json.dumps(acc))
    return pipe.run.path / "stages" / "sft" / "state.pt"


# ------------------------------------------------------------------------------------------ pass@k
def passk_rows(pipe, depths, items: int, n: int, ks: list[int], temperature: float, seed: int) -> dict:
    """{depth: {"correct": per-problem counts, "pass@k": (mean, half-width over problems)}}."""
    from compose_rl.evals.strcomp import accuracy, pass_at_k

    out = {}
    for d in depths:
        task = task_of(pipe.domains)
        probs = task.eval_problems(d, items)
        _, _, correct, _ = accuracy(pipe.engine, pipe.policy.format_prompt, task, probs, pipe.max_new_tokens,
                                    temperature=temperature, n=n, seed=seed + d)
        out[d] = {"correct": correct, **{f"pass@{k}": mean_ci([pass_at_k(n, c, k) for c in correct]) for k in ks}}
    return out


def run_passk(recipe_path: str, ckpts: list[tuple[str, str | None]], out: Path, overrides: list[str], depths: list[int],
              items: int, n: int, ks: list[int], log=print) -> dict:
    from compose_rl.recipe import load_recipe

    bad = [k for k in ks if k > n or k < 1]
    if bad:
        raise ValueError(f"--k {bad[0]}: each k must be in 1..n (n = --n = {n} samples drawn per problem)")
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(recipe_path, list(overrides) + ["stages=[eval]"])
    results = {}
    for label, state in ckpts:
        t0 = time.perf_counter()
        pipe = _pipe(recipe, out, f"passk-{label}")
        _load_state(pipe, state)
        pipe.policy.model.eval()
        results[label] = passk_rows(pipe, depths, items, n, ks, recipe.rollout.temperature, recipe.seed)
        log(f"{label}: " + "  ".join(f"d{d} " + " ".join(f"p@{k} {results[label][d][f'pass@{k}'][0]:.3f}" for k in ks)
                                     for d in depths) + f"  ({time.perf_counter() - t0:.0f} s)")
    fl = floors(task_of(pipe.domains), depths, items)
    summary = {"recipe": recipe_path, "overrides": overrides, "n": n, "ks": ks, "items": items,
               "temperature": recipe.rollout.temperature, "checkpoints": dict(ckpts),
               "results": {lab: {str(d): v for d, v in r.items()} for lab, r in results.items()}, "floors": fl}
    (out / "passk.json").write_text(json.dumps(summary, indent=1))
    lines = [f"pass@k (unbiased, n = {n} samples per problem at temperature {recipe.rollout.temperature}), "
             f"{items} held-out problems per depth, mean ± 95% interval over problems", "",
             "| checkpoint | depth | " + " | ".join(f"pass@{k}" for k in ks) + " | shortcut floor |",
             "|---|---|" + "---|" * len(ks) + "---|"]
    for lab, r in results.items():
        for d in depths:
            lines.append(f"| {lab} | {d} | " + " | ".join(f"{r[d][f'pass@{k}'][0]:.3f} ± {r[d][f'pass@{k}'][1]:.3f}"
                                                         for k in ks) + f" | {fl[f'acc_d{d}'][0]:.3f} |")
    (out / "passk.md").write_text("\n".join(lines) + "\n")
    _plot_passk(results, depths, ks, fl, out / "passk.png")
    return summary


def _plot_passk(results, depths, ks, fl, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(depths), figsize=(4 * len(depths), 3.4), squeeze=False)
    for ax, d in zip(axes[0], depths):
        for lab, r in results.items():
            m = [r[d][f"pass@{k}"][0] for k in ks]
            h = [r[d][f"pass@{k}"][1] for k in ks]
            ax.errorbar(ks, m, yerr=h, marker="o", capsize=3, label=lab)
        ax.axhline(fl[f"acc_d{d}"][0], color="grey", ls="--", lw=1, label="shortcut floor (greedy rule)")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"depth {d}")
        ax.set_xlabel("k")
    axes[0][0].set_ylabel("pass@k")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ gradcheck
def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) of two flat vectors (0 when either is zero)."""
    na, nb = float(a.norm()), float(b.norm())
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


def _flat_grad(params, loss) -> torch.Tensor:
    for p in params:
        p.grad = None
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]).detach().clone()


def _set_along(params, theta: list[torch.Tensor], direction: torch.Tensor, eps: float) -> None:
    """params <- theta + eps * direction (direction flat, in params' order)."""
    with torch.no_grad():
        i = 0
        for p, t0 in zip(params, theta):
            n = p.numel()
            p.copy_(t0 + eps * direction[i: i + n].view_as(p))
            i += n


def gradcheck(pipe, prompts_list: list[int], group_size: int, probe_items: int, eps: list[float], seed: int) -> dict:
    """The signal in one batch's policy gradient (see the module docstring); weights restored at the end."""
    from compose_rl.rl.learner import compute_advantages, policy_loss
    from compose_rl.rl.logprobs import completion_logprobs
    from compose_rl.rollout.collectors import StringTaskCollector
    from compose_rl.sft.stage import encode_pair
    from compose_rl.types import SamplingParams

    r, model, tok = pipe.recipe, pipe.policy.model, pipe.policy.tokenizer
    task, pad = task_of(pipe.domains), tok.pad_token_id or 0
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach().clone() for p in params]
    probe = task.rl_problems(probe_items, seed=seed + 424242)  # fresh training problems (train pairs and inputs)
    P, T = zip(*(encode_pair(pipe.policy, q.prompt, q.target) for q in probe))  # as stage 1 trains on them

    def probe_ll(grad: bool = False):
        with torch.set_grad_enabled(grad):
            lp, m = completion_logprobs(model, P, T, pad=pad)
            return (lp * m).sum(-1).mean()

    model.train()
    g_probe = _flat_grad(params, probe_ll(grad=True))  # ascent direction of mean log p(correct chain)
    base = float(probe_ll())
    out = {"probe_items": probe_items, "probe_logp": base, "rows": []}
    for n_prompts in prompts_list:
        col = StringTaskCollector(task, pipe.policy.format_prompt, n_prompts, group_size,
                                  SamplingParams(temperature=r.rollout.temperature, max_new_tokens=r.rollout.max_new_tokens), seed)
        samples, _, _ = col.collect(pipe.engine, 0)
        reward = sum(x.reward for x in samples) / len(samples)
        compute_advantages(samples, r.rl.advantage, None, r.rl.negative_weight)
        samples = [x for x in samples if x.advantage != 0.0]
        if not samples:
            raise ValueError(f"gradcheck: no sample of {n_prompts} prompts × {group_size} carries signal (every group's "
                             "rewards are equal); start from a trained stage 1 (--stage1) or give more --prompts")

        def ascent(batch):  # minus the learner's loss gradient: the direction RL moves the weights
            loss, _ = policy_loss(model, None, batch, r.rl, pad, r.rollout.max_new_tokens, old_is_current=True)
            return -_flat_grad(params, loss)

        g = ascent(samples)
        groups = sorted({x.group for x in samples})
        half = set(groups[::2])
        ga, gb = ascent([x for x in samples if x.group in half]), ascent([x for x in samples if x.group not in half])
        pos, neg = [x for x in samples if x.advantage > 0], [x for x in samples if x.advantage < 0]
        gp = ascent(pos) if pos else torch.zeros_like(g)
        gn = ascent(neg) if neg else torch.zeros_like(g)
        step = []
        unit = g / g.norm() if float(g.norm()) > 0 else g
        for e in eps:
            _set_along(params, theta, unit, e)
            step.append([e, float(probe_ll())])
        _set_along(params, theta, unit, 0.0)
        out["rows"].append({"prompts": n_prompts, "samples": n_prompts * group_size, "trained": len(samples), "reward": reward,
                            "cos_halves": cosine(ga, gb), "cos_probe": cosine(g, g_probe), "cos_probe_pos": cosine(gp, g_probe),
                            "cos_probe_neg": cosine(gn, g_probe), "norm": float(g.norm()), "norm_pos": float(gp.norm()),
                            "norm_neg": float(gn.norm()), "step_probe": step})
    return out


def gradcheck_table(res: dict) -> str:
    lines = [f"mean log p(correct chain) on {res['probe_items']} fresh training problems at the start: {res['probe_logp']:.4f}", "",
             "| prompts × group | samples trained | batch reward | cos(half A, half B) | cos(g, probe) | cos(g+, probe) | cos(g−, probe) "
             "| norm g | norm g+ | norm g− |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in res["rows"]:
        lines.append(f"| {x['prompts']} × {x['samples'] // x['prompts']} | {x['trained']} | {x['reward']:.3f} | {x['cos_halves']:.3f} "
                     f"| {x['cos_probe']:.3f} | {x['cos_probe_pos']:.3f} | {x['cos_probe_neg']:.3f} | {x['norm']:.3f} "
                     f"| {x['norm_pos']:.3f} | {x['norm_neg']:.3f} |")
    lines += ["", "log p(correct chain) after a step of norm eps along the batch's ascent direction:", "",
              "| prompts | " + " | ".join(f"eps {e:g}" for e, _ in res["rows"][0]["step_probe"]) + " |",
              "|---|" + "---|" * len(res["rows"][0]["step_probe"])]
    for x in res["rows"]:
        lines.append(f"| {x['prompts']} | " + " | ".join(f"{v:.4f}" for _, v in x["step_probe"]) + " |")
    return "\n".join(lines) + "\n"


def run_gradcheck(recipe_path: str, stage1: str, out: Path, overrides: list[str], prompts: list[int], probe_items: int,
                  eps: list[float]) -> dict:
    from compose_rl.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides) + ["stages=[rl]"])
    out.mkdir(parents=True, exist_ok=True)
    pipe = _pipe(recipe, out, f"{recipe.name}-gradcheck")
    _load_state(pipe, None if stage1 == "init" else stage1)
    res = gradcheck(pipe, prompts, recipe.rl.group_size, probe_items, eps, recipe.seed)
    res.update({"recipe": recipe_path, "overrides": overrides, "stage1": stage1})
    (out / "gradcheck.json").write_text(json.dumps(res, indent=1))
    (out / "gradcheck.md").write_text(gradcheck_table(res))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compose_rl.commands.positive_control")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("rl")
    a.add_argument("recipe")
    a.add_argument("--stage1", required=True, help="stages/<label>/state.pt of a finished stage 1")
    a.add_argument("--seeds", type=int, nargs="+", default=[0])
    a.add_argument("--out", required=True)
    a.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    a.add_argument("--items", type=int, default=400)
    a.add_argument("--track-items", type=int, default=200, help="items per depth of the in-RL curve (rl.eval_every)")
    a.add_argument("--track-depths", type=int, nargs="+", default=[2])
    a.add_argument("--start-from", help="control.json of an earlier rl output of the same stage 1: reuse its start accuracies")
    a.add_argument("--arm", default="rl", choices=list(ARMS),
                   help="rl (default), or sft_only: the matched supervised arm (same problems, optimizer, lr, steps)")
    a.add_argument("overrides", nargs="*")
    sh = sub.add_parser("shapes", help="depth-1 accuracy by input shape (random, train-pair and held-out-pair outputs)")
    sh.add_argument("recipe")
    sh.add_argument("--stage1", required=True, help="state.pt of a finished stage 1, or init")
    sh.add_argument("--out", required=True)
    sh.add_argument("--items", type=int, default=400)
    sh.add_argument("overrides", nargs="*")
    pr = sub.add_parser("pair", help="A minus B per seed and depth (two rl outputs of one stage 1, items and seeds)")
    pr.add_argument("a")
    pr.add_argument("b")
    pr.add_argument("--out", required=True)
    pr.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    c = sub.add_parser("sft")
    c.add_argument("recipe")
    c.add_argument("--stage1", required=True, help="state.pt to continue from, or init (a fresh stage 1)")
    c.add_argument("--out", required=True)
    c.add_argument("--depths", type=int, nargs="+", default=[1, 2])
    c.add_argument("--items", type=int, default=400)
    c.add_argument("overrides", nargs="*")
    m = sub.add_parser("merge", help="one table from several rl outputs of one setting (one seed per process)")
    m.add_argument("dirs", nargs="+")
    m.add_argument("--out", required=True)
    m.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    b = sub.add_parser("passk")
    b.add_argument("recipe")
    b.add_argument("--ckpt", action="append", required=True, help="LABEL=STATE.pt, or LABEL=init (fresh weights)")
    b.add_argument("--out", required=True)
    b.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    b.add_argument("--items", type=int, default=50)
    b.add_argument("--n", type=int, default=32)
    b.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 32])
    b.add_argument("overrides", nargs="*")
    g = sub.add_parser("gradcheck", help="how much of one RL batch's gradient is signal")
    g.add_argument("recipe")
    g.add_argument("--stage1", required=True, help="state.pt of a finished stage 1, or init")
    g.add_argument("--out", required=True)
    g.add_argument("--prompts", type=int, nargs="+", default=[16, 64])
    g.add_argument("--probe-items", type=int, default=256)
    g.add_argument("--eps", type=float, nargs="+", default=[-0.01, 0.003, 0.01, 0.03])
    g.add_argument("overrides", nargs="*")
    args, extra = p.parse_known_args(argv)  # key=value overrides may come after the options too
    bad = [x for x in extra if "=" not in x or x.startswith("-")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = list(getattr(args, "overrides", [])) + extra
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    from compose_rl.recipe import RecipeError

    try:
        if args.cmd == "rl":
            s = run_rl_seeds(args.recipe, args.stage1, args.seeds, Path(args.out), args.overrides, args.depths,
                             args.items, log, args.track_items, args.track_depths, args.start_from, args.arm)
            print(control_table(s, args.depths))
        elif args.cmd == "shapes":
            input_shapes(args.recipe, args.stage1, Path(args.out), args.overrides, args.items, log)
        elif args.cmd == "pair":
            print(pair_controls(Path(args.a), Path(args.b), Path(args.out), args.depths))
        elif args.cmd == "merge":
            print(control_table(merge_controls([Path(d) for d in args.dirs], Path(args.out), args.depths), args.depths))
        elif args.cmd == "gradcheck":
            run_gradcheck(args.recipe, args.stage1, Path(args.out), args.overrides, args.prompts, args.probe_items, args.eps)
            print((Path(args.out) / "gradcheck.md").read_text())
        elif args.cmd == "sft":
            print(continue_sft(args.recipe, args.stage1, Path(args.out), args.overrides, args.depths, args.items, log))
        else:
            ckpts = []
            for c in args.ckpt:
                label, _, state = c.partition("=")
                if not label or not state:
                    raise ValueError(f"--ckpt {c!r}: give LABEL=STATE.pt or LABEL=init")
                ckpts.append((label, None if state == "init" else state))
            bad = [k for k in args.k if not 1 <= k <= args.n]
            if bad:
                raise ValueError(f"--k {bad[0]}: each k must be in 1..n (n = --n = {args.n} samples drawn per problem)")
            run_passk(args.recipe, ckpts, Path(args.out), args.overrides, args.depths, args.items, args.n, args.k, log)
            print((Path(args.out) / "passk.md").read_text())
    except (RecipeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
