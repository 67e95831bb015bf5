"""Summarise the latent-loop study (docs/results/latent-loop.md, Gap C) from its run directories: one row per condition,
means over seeds with a 95% Student-t interval (compose_rl.stats.mean_ci).

    python -m compose_rl.experimental.latent_study runs/latent-study-*

A run's condition comes from its recipe.resolved.yaml: `loop K` (latent.steps = K > 0), `no loop`
(latent.steps = 0: the same trainer and model, no loop) or `token CoT` (no latent section,
task.cot = steps). Per run it reads from metrics.jsonl:
- held-out greedy accuracy by depth after SFT (stage `eval-sft`) and after RL (`eval-rl`), and the
  shortcut floor per depth (the best shortcut rule on the same items, logged by the eval);
- the RL train reward, mean over the last 10 RL steps;
- the credit profile (latent runs): latent/credit_step0 / latent/credit_step{K-1}, at the end of SFT
  (its last logged window, when the whole loop runs) and in RL (mean over the RL steps that trained
  on any sample, first step over last); both are per-sample gradient norms (trainer.latent_credit),
  so the two magnitudes are on one scale and are printed too.
The paired difference is after-RL minus after-SFT depth-2 accuracy of the same seed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from compose_rl.stats import mean_ci

DEPTHS = (1, 2, 3)


def condition(resolved: dict) -> str:
    latent = resolved.get("latent")
    if latent is not None:
        return f"loop {latent['steps']}" if latent["steps"] else "no loop"
    cot = (resolved.get("task") or {}).get("cot", "none")
    return "token CoT" if cot != "none" else "plain (no latent trainer)"


def _last(rows: list[dict], stage: str, key: str | None = None) -> dict | None:
    """The stage's last row (that holds `key`, if given)."""
    found = [r for r in rows if r["stage"] == stage and (key is None or key in r)]
    return found[-1] if found else None


def summarize_run(path: str | Path) -> dict | None:
    """The study's numbers for one run directory, or None while it has no after-RL eval yet."""
    path = Path(path)
    resolved = yaml.safe_load((path / "recipe.resolved.yaml").read_text())
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    sft_eval, rl_eval = _last(rows, "eval-sft"), _last(rows, "eval-rl")
    if sft_eval is None or rl_eval is None:
        return None
    out = {"run": path.name, "condition": condition(resolved), "seed": resolved["seed"]}
    for d in DEPTHS:
        out[f"sft_d{d}"] = sft_eval[f"eval/strcomp/acc_d{d}"]
        out[f"rl_d{d}"] = rl_eval[f"eval/strcomp/acc_d{d}"]
        out[f"floor_d{d}"] = rl_eval.get(f"eval/strcomp/floor_d{d}")
    rl = [r for r in rows if r["stage"] == "rl"]
    out["rl_reward_last10"] = sum(r["reward/mean"] for r in rl[-10:]) / max(len(rl[-10:]), 1)
    k = (resolved.get("latent") or {}).get("steps", 0)
    if k:
        sft_end = _last(rows, "sft", "latent/credit_step0")  # the stage's last row is its summary
        trained = [r for r in rl if r.get("rollout/samples_trained")]
        first = sum(r["latent/credit_step0"] for r in trained) / max(len(trained), 1)
        last = sum(r[f"latent/credit_step{k - 1}"] for r in trained) / max(len(trained), 1)
        out.update({"credit_sft_first": sft_end["latent/credit_step0"], "credit_rl_first": first,
                    "credit_sft_ratio": sft_end["latent/credit_step0"] / sft_end[f"latent/credit_step{k - 1}"],
                    "credit_rl_ratio": first / last if last else float("nan")})
    return out


def _ci(xs: list[float]) -> str:
    m, h = mean_ci(xs)
    return f"{m:.3f} ± {h:.3f}" if len(xs) > 1 else f"{m:.3f}"


def study_table(summaries: list[dict]) -> str:
    """Markdown: one row per condition (means over seeds, 95% t-intervals), then one row per run."""
    by: dict[str, list[dict]] = {}
    for s in summaries:
        by.setdefault(s["condition"], []).append(s)
    head = ("| condition | seeds | after SFT d1 / d2 / d3 | after RL d1 / d2 / d3 | after RL d2 (95% CI) "
            "| RL − SFT d2, paired (95% CI) | RL reward, last 10 steps | credit first/last: SFT end → RL "
            "| credit at step 0: SFT end → RL | shortcut floor d1 / d2 / d3 (mean over seeds) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for cond, runs in by.items():
        runs = sorted(runs, key=lambda s: s["seed"])
        def mean(key: str) -> float:
            return sum(s[key] for s in runs) / len(runs)

        def accs(stage: str) -> str:
            return " / ".join(f"{mean(stage + '_d' + str(d)):.3f}" for d in DEPTHS)
        credit = credit0 = "—"
        if "credit_rl_ratio" in runs[0]:
            credit = f"{mean('credit_sft_ratio'):.2f} → {mean('credit_rl_ratio'):.2f}"
            credit0 = f"{mean('credit_sft_first'):.2g} → {mean('credit_rl_first'):.2g}"
        floors = " / ".join("—" if runs[0]["floor_d" + str(d)] is None else f"{mean('floor_d' + str(d)):.3f}"
                            for d in DEPTHS)
        lines.append(f"| {cond} | {', '.join(str(s['seed']) for s in runs)} | {accs('sft')} | {accs('rl')} "
                     f"| {_ci([s['rl_d2'] for s in runs])} | {_ci([s['rl_d2'] - s['sft_d2'] for s in runs])} "
                     f"| {_ci([s['rl_reward_last10'] for s in runs])} | {credit} | {credit0} | {floors} |")
    lines += ["", "| run | condition | seed | after SFT d1 / d2 / d3 | after RL d1 / d2 / d3 | RL reward, last 10 "
              "| credit first/last: SFT end → RL |", "|---|---|---|---|---|---|---|"]
    for s in sorted(summaries, key=lambda s: (s["condition"], s["seed"])):
        credit = f"{s['credit_sft_ratio']:.2f} → {s['credit_rl_ratio']:.2f}" if "credit_rl_ratio" in s else "—"
        accs = {stage: " / ".join(f"{s[stage + '_d' + str(d)]:.2f}" for d in DEPTHS) for stage in ("sft", "rl")}
        lines.append(f"| {s['run']} | {s['condition']} | {s['seed']} | {accs['sft']} | {accs['rl']} "
                     f"| {s['rl_reward_last10']:.3f} | {credit} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        print("usage: python -m compose_rl.experimental.latent_study RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    summaries, pending = [], []
    for p in paths:
        if not (Path(p) / "recipe.resolved.yaml").is_file():
            print(f"latent_study: {p}: not a run directory (no recipe.resolved.yaml)", file=sys.stderr)
            return 2
        s = summarize_run(p)
        if s is None:
            pending.append(p)
        else:
            summaries.append(s)
    print(study_table(summaries))
    if pending:
        print(f"\nnot finished (no after-RL eval yet): {', '.join(pending)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
