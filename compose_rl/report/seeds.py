"""One recipe over several seeds: the key numbers per stage, mean with a 95% t-interval over seeds,
and the paired difference after-RL minus after-SFT (the same seed's two checkpoints).

    compose-rl seeds runs/spiral-kuhn-*            # markdown on stdout
    compose-rl seeds runs/spiral-kuhn-* --out study.md

What a row means (per exact game g, read from each run's metrics.jsonl):
- label policy: the stage-1 label distribution scored exactly (stage `label-policy`), the baseline
  the after-SFT number is read against; untrained / after SFT / after RL: the `eval-base`,
  `eval-sft`, `eval-rl` stages; best: the lowest exploitability tracked during RL (the step is in
  the per-run table); average policy: the reach-weighted average of the RL policies at `eval-rl`;
- exact value vs random / vs Nash: the exact expected return over both seats;
- history_tv: does the policy read the betting history (0 = plays the same at every history);
- in-game probes: per primitive, the mean exact probability of the correct action at the probe
  states (`compose_rl/primitives/ingame.py`) beside uniform play's;
- for the string task, accuracy by depth per stage beside the shortcut floor.
A seed that lacks a number (an unfinished run) is left out of that row, and the row says how many
seeds it has. Uniform random play has Kuhn exploitability 0.458 and Nash 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from compose_rl.stats import mean_ci

STAGES = (("label policy", "label-policy"), ("untrained", "eval-base"), ("after SFT", "eval-sft"),
          ("after RL", "eval-rl"))


def _rows(path: Path) -> list[dict]:
    out = []
    for line in (path / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return out


def _at(rows: list[dict], stage: str, key: str):
    vals = [r[key] for r in rows if r.get("stage") == stage and key in r]
    return vals[-1] if vals else None


def summarize_run(path: str | Path) -> dict:
    """{quantity name: value} for one run directory (names are the table's row labels)."""
    path = Path(path)
    rows = _rows(path)
    resolved = yaml.safe_load((path / "recipe.resolved.yaml").read_text())
    out: dict = {"run": path.name, "seed": resolved.get("seed")}
    games = sorted({k.split("/")[1] for r in rows for k in r
                    if k.startswith("eval/") and k.endswith("/exploitability") and k.count("/") == 2})
    for g in games:
        pre = f"eval/{g}/"
        for name, stage in STAGES:
            out[f"{g} exploitability: {name}"] = _at(rows, stage, pre + "exploitability")
        rl = [(r["step"], r[pre + "exploitability"]) for r in rows if r.get("stage") == "rl" and pre + "exploitability" in r]
        if rl:
            step, best = min(rl, key=lambda t: t[1])
            out[f"{g} exploitability: best during RL"] = best
            out["best step"] = step
        out[f"{g} exploitability: average policy"] = _at(rows, "eval-rl", pre + "exploitability_avg")
        sft, after = out[f"{g} exploitability: after SFT"], out[f"{g} exploitability: after RL"]
        out[f"{g} exploitability: after RL − after SFT (paired)"] = None if sft is None or after is None else after - sft
        for opp in ("random", "nash"):
            for name, stage in STAGES:
                out[f"{g} exact value vs {opp}: {name}"] = _at(rows, stage, pre + f"vs_{opp}/exact_value")
        for name, stage in STAGES[2:]:
            out[f"{g} history_tv: {name}"] = _at(rows, stage, pre + "history_tv")
    prims = sorted({k for r in rows for k in r if k.startswith("primitive/") and k.endswith("/ingame/mean")})
    for k in prims:
        name = k.split("/")[1]
        out[f"in-game probes {name}: uniform play"] = _at(rows, "eval-sft", k + "/uniform")
        for label, stage in STAGES[1:]:
            out[f"in-game probes {name}: {label}"] = _at(rows, stage, k)
    # one table across domains: it reads the game and string-task keys (not yet split into their sections)
    depths = sorted({int(k.rsplit("acc_d", 1)[1]) for r in rows for k in r if k.startswith("eval/strcomp/acc_d")})
    for d in depths:
        out[f"strcomp depth {d}: shortcut floor"] = _at(rows, "eval-sft", f"eval/strcomp/floor_d{d}")
        for name, stage in STAGES[1:]:
            out[f"strcomp depth {d}: {name}"] = _at(rows, stage, f"eval/strcomp/acc_d{d}")
    return out


def seed_table(summaries: list[dict]) -> str:
    """Markdown: one row per quantity (mean ± 95% t half-width over the seeds that have it), then per seed."""
    names = [k for k in summaries[0] if k not in ("run", "seed", "best step")]
    for s in summaries[1:]:
        names += [k for k in s if k not in names and k not in ("run", "seed", "best step")]
    seeds = [s["seed"] for s in summaries]
    lines = ["| quantity | seeds | mean ± 95% CI | " + " | ".join(f"seed {x}" for x in seeds) + " |",
             "|---|---|---|" + "---|" * len(seeds)]
    for k in names:
        vals = [s.get(k) for s in summaries]
        have = [v for v in vals if v is not None]
        if not have:
            continue
        m, h = mean_ci(have)
        cell = f"{m:+.3f} ± {h:.3f}" if len(have) > 1 else f"{m:+.3f}"
        lines.append(f"| {k} | {len(have)} | {cell} | "
                     + " | ".join("—" if v is None else f"{v:+.3f}" for v in vals) + " |")
    if any("best step" in s for s in summaries):
        lines.append("| best step | | | " + " | ".join(str(s.get("best step", "—")) for s in summaries) + " |")
    lines.append("")
    lines.append("runs: " + ", ".join(s["run"] for s in summaries))
    return "\n".join(lines)
