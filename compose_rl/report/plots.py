"""Plots of a run: curves over RL steps (with reference lines), accuracy by depth, primitives over RL steps."""
from __future__ import annotations

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


def plot_curves(run, rows, refs: dict[str, list[tuple[float, str]]] | None = None) -> list[str]:
    """One PNG per CURVES entry with data; `refs[fname]` adds horizontal reference lines (value, label)."""
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
            for k, (value, label) in enumerate((refs or {}).get(fname, [])):
                ax.axhline(value, color="k", alpha=0.6, lw=1, ls=("--", ":", "-.")[k % 3], label=label)
            ax.set_title(title)
            made.append(_save_rl_plot(fig, ax, run, fname))
        plt.close(fig)
    return made


def _save_rl_plot(fig, ax, run, fname: str) -> str:
    """x label, legend, layout, PNG into the run folder; returns the file name (the caller closes)."""
    ax.set_xlabel("RL step")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(run.path / fname, dpi=110)
    return fname


def plot_depth(run, tables: dict[str, list[dict]], path: Path | None = None, title="Accuracy by composition depth") -> str | None:
    if not tables:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    floor = None
    for label, rows in tables.items():
        xs = [r["depth"] for r in rows]
        ax.plot(xs, [r["acc"] for r in rows], marker="o", label=label)
        if "acc_lo" in rows[0]:
            ax.fill_between(xs, [r["acc_lo"] for r in rows], [r["acc_hi"] for r in rows], alpha=0.15)
        floor = rows
    if floor and "floor" in floor[0]:
        ax.plot([r["depth"] for r in floor], [r["floor"] for r in floor], "k--", label="shortcut floor (best rule)")
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


PRIMITIVE_PLOTS = [  # (file, title, key suffix after primitive/<p>/): tracked over RL steps (issue 9)
    ("rl_primitives_ingame.png", "In-game decision probes: P(correct action), mean per primitive", "ingame/mean"),
    ("rl_primitives_probes.png", "Probe suites: held-out accuracy per suite", "/acc"),
    ("rl_primitives_detectors.png", "Trace detectors (rules): traces showing the primitive, per 100", "detector/rules/rate"),
]


def _primitive_series(rows, suffix: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if not r.get("stage", "").startswith("rl"):
            continue
        for k, v in r.items():
            if k.startswith("primitive/") and k.endswith(suffix) and isinstance(v, (int, float)):
                out.setdefault(k.removeprefix("primitive/").removesuffix("/" + suffix.strip("/")), []).append((r["step"], v))
    return out


def plot_primitives(run, rows) -> list[str]:
    """Primitive scores over RL steps, each beside its baseline (dashed, same colour): the uniform
    policy's score for in-game probes, the shortcut floor for probe suites."""
    made = []
    for fname, title, suffix in PRIMITIVE_PLOTS:
        series = _primitive_series(rows, suffix)
        if not series:
            continue
        base_suffix = {"ingame/mean": "ingame/mean/uniform", "/acc": "/floor"}.get(suffix)
        bases = _primitive_series(rows, base_suffix) if base_suffix else {}
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for name, pts in sorted(series.items()):
            xs, ys = zip(*sorted(pts))
            line, = ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=name)
            base = bases.get(name.replace("/acc", "")) or bases.get(name)
            if base:
                ax.axhline(sorted(base)[-1][1], color=line.get_color(), ls="--", lw=1, alpha=0.7)
        ax.set_title(title + (" (dashed: baseline)" if bases else ""), fontsize=9)
        made.append(_save_rl_plot(fig, ax, run, fname))
        plt.close(fig)
    return made
