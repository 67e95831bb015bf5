"""report.md and PNG plots, rebuilt from a run directory's metrics.jsonl and eval/*.json."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (file, title, metric keys plotted over RL steps)
CURVES = [
    ("rl_reward.png", "RL reward", ["reward/mean", "rollout/groups_with_signal"]),
    ("rl_exploitability.png", "Exploitability (exact, lower is better)", ["exploitability", "exploitability_avg"]),
    ("rl_vs_opponents.png", "Exact expected return vs fixed opponents (both seats)", ["vs_random/exact_value", "vs_nash/exact_value"]),
    ("rl_invalid.png", "Invalid-action and truncation rate", ["rollout/invalid_rate", "rollout/truncation_rate"]),
    ("rl_length.png", "Response length (tokens)", ["rollout/response_tokens"]),
    ("rl_loss.png", "Loss diagnostics", ["loss/entropy", "loss/clip_frac", "loss/kl_ref"]),
    ("rl_latent_credit.png", "Latent loop: gradient norm reaching each loop step (credit)",
     [f"credit_step{k}" for k in range(16)]),
]


def _series(rows, stage_prefix: str, key_suffix: str):
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if not r.get("stage", "").startswith(stage_prefix):
            continue
        for k, v in r.items():
            if isinstance(v, (int, float)) and (k == key_suffix or k.endswith("/" + key_suffix)):
                out.setdefault(k, []).append((r["step"], v))
    return out


def plot_curves(run, rows) -> list[str]:
    made = []
    rl_stages = sorted({r["stage"] for r in rows if r.get("stage", "").startswith("rl")})
    for fname, title, keys in CURVES:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        n = 0
        for stage in rl_stages:
            for key in keys:
                for k, pts in _series(rows, stage, key).items():
                    if len(pts) < 1:
                        continue
                    xs, ys = zip(*sorted(pts))
                    ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=f"{stage}: {k}")
                    n += 1
        if n:
            ax.set_title(title)
            ax.set_xlabel("RL step")
            ax.legend(fontsize=6)
            fig.tight_layout()
            fig.savefig(run.path / fname, dpi=110)
            made.append(fname)
        plt.close(fig)
    return made


def plot_depth(run, tables: dict[str, list[dict]], path: Path | None = None, title="Accuracy by composition depth") -> str | None:
    if not tables:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    chance = None
    for label, rows in tables.items():
        xs = [r["depth"] for r in rows]
        ax.plot(xs, [r["acc"] for r in rows], marker="o", label=label)
        if "acc_lo" in rows[0]:
            ax.fill_between(xs, [r["acc_lo"] for r in rows], [r["acc_hi"] for r in rows], alpha=0.15)
        chance = rows
    if chance and "chance" in chance[0]:
        ax.plot([r["depth"] for r in chance], [r["chance"] for r in chance], "k--", label="chance (echo input)")
    ax.axvspan(0.5, 2.5, color="grey", alpha=0.08, label="training depths")
    ax.set_xlabel("composition depth")
    ax.set_ylabel("exact-match accuracy (greedy)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = path or (run.path / "accuracy_by_depth.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def _md_table(header: list[str], rows: list[list]) -> str:
    def fmt(x):
        return f"{x:.3f}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(run) -> Path:
    rows = run.read_metrics()
    parts = [f"# Run report: {run.path.name}", ""]
    resolved = run.path / "recipe.resolved.yaml"
    if resolved.exists():
        parts += ["Recipe: `recipe.resolved.yaml`.", ""]
    # gate
    for gate in sorted((run.path / "eval").glob("*-gate.json")):
        g = json.loads(gate.read_text())
        parts += [f"## Mastery gate ({gate.stem.replace('-gate', '')}): {'passed' if g['passed'] else 'FAILED'} "
                  f"(threshold {g['threshold']})", "",
                  _md_table(["skill", "held-out accuracy"], [[k, float(v)] for k, v in sorted(g["skills"].items())]), ""]
    # string composition by depth
    tables = {}
    for f in sorted((run.path / "eval").glob("*-strcomp.json"), key=lambda p: p.stat().st_mtime):
        tables[f.stem.replace("-strcomp", "")] = json.loads(f.read_text())
    if tables:
        depths = [r["depth"] for r in next(iter(tables.values()))]
        parts += ["## Accuracy by composition depth (held-out compositions, greedy)", "",
                  _md_table(["stage"] + [f"d{d}" for d in depths] + ["chance d1..", "parse d1"],
                            [[k] + [r["acc"] for r in v] + [v[0].get("chance", 0.0), v[0].get("parse", 0.0)]
                             for k, v in tables.items()]), ""]
        pk = [k for k in next(iter(tables.values()))[0] if k.startswith("pass@")]
        if pk:
            parts += [f"{pk[0]} by depth:", "",
                      _md_table(["stage"] + [f"d{d}" for d in depths], [[k] + [r[pk[0]] for r in v] for k, v in tables.items()]), ""]
        png = plot_depth(run, tables)
        parts += [f"![accuracy by depth]({png})", ""]
    # games
    games = {}
    for f in sorted((run.path / "eval").glob("*-games.json"), key=lambda p: p.stat().st_mtime):
        games[f.stem.replace("-games", "")] = json.loads(f.read_text())
    if games:
        keys = sorted({k for m in games.values() for k in m if isinstance(m[k], (int, float))})
        parts += ["## Game evaluation (both seats; exploitability exact)", "",
                  _md_table(["metric"] + list(games), [[k.removeprefix("eval/")] + [float(games[s].get(k, float("nan"))) for s in games] for k in keys]), ""]
    # RL summary + curves
    rl_rows = [r for r in rows if r.get("stage", "").startswith("rl") and "reward/mean" in r]
    if rl_rows:
        first, last = rl_rows[0], rl_rows[-1]
        show = [k for k in last if k.startswith(("reward/", "rollout/", "loss/", "perf/", "eval/"))]
        parts += ["## RL: first vs last step", "",
                  _md_table(["metric", f"step {first['step']}", f"step {last['step']}"],
                            [[k, float(first.get(k, float('nan'))), float(last[k])] for k in show]), ""]
        wall = sum(r.get("perf/step_s", 0.0) for r in rl_rows)
        parts += [f"RL wall-clock: {wall:.0f} s over {len(rl_rows)} steps.", ""]
    for png in plot_curves(run, rows):
        parts += [f"![{png}]({png})", ""]
    samples = sorted((run.path / "samples").glob("*.txt"))
    if samples:
        parts += ["Readable samples and transcripts: " + ", ".join(f"`samples/{p.name}`" for p in samples), ""]
    out = run.path / "report.md"
    out.write_text("\n".join(parts))
    return out
