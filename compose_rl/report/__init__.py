"""report.md and PNG plots, rebuilt from a run directory's metrics.jsonl and eval/*.json."""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from compose_rl.stats import wilson  # noqa: E402

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


def _md_table(header: list[str], rows: list[list]) -> str:
    def fmt(x):
        return f"{x:.3f}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ headline tables

def stage_name(label: str) -> str:
    """Reader-facing name of an eval label: eval-base -> untrained model, eval-sft -> after SFT, ..."""
    what = label.removeprefix("eval-")
    if what == "base":
        return "untrained model"
    if what.rstrip("0123456789") in ("sft", "rl"):
        return "after " + what.upper()  # after SFT, after RL2
    return label


def _f(x, fmt="{:.3f}") -> str:
    return "" if x is None or (isinstance(x, float) and x != x) else fmt.format(x)


def strcomp_headline(tables: dict[str, list[dict]]) -> list[str]:
    """Accuracy by depth per stage with its 95% Wilson interval, under the shortcut floor per depth."""
    first = next(iter(tables.values()))
    depths = [r["depth"] for r in first]
    out = []
    if "floor" in first[0]:
        out.append(["shortcut floor (baseline: best rule)"] + [f"{r['floor']:.3f} ({r['floor_rule']})" for r in first])
    if "eval-base" not in tables:
        out.append(["untrained model"] + ["not evaluated (add `eval` before `sft` in stages)"] + [""] * (len(depths) - 1))
    for label, rs in tables.items():
        cells = []
        for r in rs:
            n = r.get("n", 0)
            lo, hi = wilson(r["acc"] * n, n) if n > 0 else (math.nan, math.nan)  # no items: no interval
            cells.append(f"{r['acc']:.3f} [{_f(lo)}, {_f(hi)}]")
        out.append([stage_name(label)] + cells)
    return ["## Headline: string composition, held-out accuracy by depth (greedy; [95% Wilson interval])", "",
            _md_table(["policy"] + [f"d{d}" for d in depths], out), "",
            "Floor = the best of the shortcut rules (copy input, innermost only, outermost only, innermost then "
            "outermost, skip innermost/outermost, innermost/outermost two, reversed order) on the same items; "
            "the rule that attains it is in parentheses.", ""]


_REFERENCE_CACHE: dict[str, list[tuple[str, dict]]] = {}


def reference_policies(name: str) -> list[tuple[str, dict]]:
    """Exact scores of the fixed reference policies of an exact game: uniform random, and (Kuhn) Nash."""
    if name not in _REFERENCE_CACHE:
        from compose_rl.evals.games import policy_baseline_metrics, tables_from_fn, tabular_opponent
        from games import get_game

        game = get_game(name)
        opps = ("random", "nash") if name == "kuhn_poker" else ("random",)  # Leduc's CFR+ Nash is slow to build
        refs = [("uniform random (baseline)", policy_baseline_metrics(game, {}, opps))]
        if name == "kuhn_poker":
            nash = tabular_opponent(game, "nash")
            refs.append(("Nash, CFR+ (baseline)",
                         policy_baseline_metrics(game, tables_from_fn(game, lambda st, p: nash.action_probabilities(st)), opps)))
        _REFERENCE_CACHE[name] = refs
    return _REFERENCE_CACHE[name]


GAME_COLUMNS = ["policy", "exploitability", "exploitability (average policy)", "exact value vs random",
                "exact value vs Nash", "play return vs random [95%]", "valid-action rate (play)", "history_tv"]


def _game_row(name: str, label: str, m: dict) -> list[str]:
    g = f"eval/{name}/"
    ret, ci = m.get(g + "vs_random/mean_return"), m.get(g + "vs_random/ci95")
    inv = m.get(g + "vs_random/invalid_rate")
    return [label, _f(m.get(g + "exploitability")), _f(m.get(g + "exploitability_avg")),
            _f(m.get(g + "vs_random/exact_value"), "{:+.3f}"), _f(m.get(g + "vs_nash/exact_value"), "{:+.3f}"),
            "" if ret is None else f"{ret:+.3f} ± {_f(ci)}", "" if inv is None else f"{1 - inv:.3f}",
            _f(m.get(g + "history_tv"))]


def games_headline(run, games: dict[str, dict], rows: list[dict]) -> list[str]:
    """Per exact game: reference policies, the stage-1 label policy, then every evaluated stage, the best
    and the average policy, side by side; then the per-information-state table (Kuhn)."""
    label_policy = run.read_json("eval/label-policy.json", {})
    names = sorted({k.split("/")[1] for m in games.values() for k in m if k.endswith("/exploitability")}
                   | set(label_policy))
    parts = []
    for name in names:
        g = f"eval/{name}/"
        table = [[lab] + _game_row(name, lab, {g + k: v for k, v in m.items()})[1:] for lab, m in reference_policies(name)]
        if name in label_policy:
            lp = label_policy[name]
            code = ", ".join(f"{line.split(': ')[-1]}->{'/'.join(a.values())}" for line, a in lp["code"].items())
            table.append(_game_row(name, f"stage-1 label policy (baseline; sharp {lp['sharp']}"
                                   + (f"; code {code})" if len(lp["code"]) <= 6 else ")"),
                                   {g + k: v for k, v in lp.items() if isinstance(v, float)}))
        for label, m in games.items():
            if g + "exploitability" in m:
                table.append(_game_row(name, stage_name(label), m))
        best = [r for r in rows if g + "best_step" in r]
        if best:
            b = best[-1]
            table.append(_game_row(name, f"best current policy (RL step {b[g + 'best_step']})",
                                   {k: v for k, v in b.items() if k != g + "exploitability_avg"}))
        avg = [r for r in rows if r.get("stage", "").startswith("rl") and g + "exploitability_avg" in r]
        if avg:
            table.append([f"average policy (RL step {avg[-1]['step']})", "", _f(avg[-1][g + "exploitability_avg"]),
                          "", "", "", "", ""])
        parts += [f"## Headline: {name} (exact numbers from the full game tree; both seats)", "",
                  _md_table(GAME_COLUMNS, table), "",
                  "exploitability: 0 = Nash, lower is better; exact value: expected return per game, both seats "
                  "averaged; play return: sampled games, mean ± 95% half-width; history_tv: mean over private "
                  "cards of the largest total-variation distance between the action distributions at that "
                  "card's histories (0 = ignores the history).", ""]
        parts += infostate_table(run, name)
    return parts


def held_out_table(games: dict[str, dict]) -> list[str]:
    """Held-out games (issue 10): valid-action rate on random states and play, per eval stage."""
    names = sorted({k.split("/")[1] for m in games.values() for k in m if k.endswith("/held_out_valid")})
    if not names:
        return []
    head = ["game", "policy", "valid-action rate (random states)", "valid (play vs random)", "win vs random",
            "return vs random [95%]", "win vs strongest bot"]
    body = []
    for name in names:
        g = f"eval/{name}/"
        for label, m in games.items():
            if g + "held_out_valid" not in m:
                continue
            bot = next((o for o in ("nash", "minimax", "mcts") if g + f"vs_{o}/win" in m), None)
            inv, ret, ci = m.get(g + "vs_random/invalid_rate"), m.get(g + "vs_random/mean_return"), m.get(g + "vs_random/ci95")
            body.append([name, stage_name(label), _f(m[g + "held_out_valid"]), "" if inv is None else f"{1 - inv:.3f}",
                         _f(m.get(g + "vs_random/win")), "" if ret is None else f"{ret:+.3f} ± {_f(ci)}",
                         "" if bot is None else f"{_f(m[g + f'vs_{bot}/win'])} ({bot})"])
    return ["## Held-out games (not trained by RL; stage 1 shows their format when games.held_out_format is set)", "",
            _md_table(head, body), ""]


def infostate_table(run, name: str, max_rows: int = 24) -> list[str]:
    """The exact action probabilities at every information state, after SFT / after RL / best (small games)."""
    files = [("after SFT", "eval-sft"), ("after RL", "eval-rl"), ("best", "best")]
    found = [(title, run.read_json(f"eval/{stem}-infostates.json", {}).get(name)) for title, stem in files]
    found = [(t, d) for t, d in found if d]
    if not found or len(found[0][1]["rows"]) > max_rows:
        return []
    actions = list(found[0][1]["rows"][0]["probs"])
    header = ["information state"] + [f"{t}: P({a})" for t, _ in found for a in actions]
    body = []
    for i, r in enumerate(found[0][1]["rows"]):
        body.append([r["infostate"]] + [f"{d['rows'][i]['probs'].get(a, 0.0):.2f}" for _, d in found for a in actions])
    return [f"### {name}: action probabilities per information state (exact)", "",
            _md_table(header, body), "",
            "history_tv: " + ", ".join(f"{t} {d['history_tv']:.3f}" for t, d in found), ""]


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


def primitives_headline(rows) -> list[str]:
    """Per primitive and eval stage: in-game probe score beside the uniform policy's, probe accuracy beside its floor."""
    evals = [r for r in rows if r.get("stage", "").startswith("eval") and any(k.startswith("primitive/") for k in r)]
    if not evals:
        return []
    stages = list(dict.fromkeys(r["stage"] for r in evals))
    last = {st: [r for r in evals if r["stage"] == st][-1] for st in stages}
    keys = sorted({k for r in evals for k in r if k.startswith("primitive/")
                   and (k.endswith("/ingame/mean") or k.endswith("/acc") or k.endswith("/detector/rules/rate"))})
    out = []
    for k in keys:
        base = (last[stages[0]].get(k + "/uniform") if k.endswith("/ingame/mean")
                else last[stages[0]].get(k.removesuffix("/acc") + "/floor") if k.endswith("/acc") else None)
        out.append([k.removeprefix("primitive/"), _f(base)] + [_f(last[st].get(k)) for st in stages])
    return ["## Reasoning primitives (compose_rl/primitives/register.py)", "",
            "In-game probes: the policy's exact probability of the correct action at states that isolate one "
            "primitive (baseline: uniform play); probe suites: held-out accuracy (baseline: best shortcut floor); "
            "detectors: traces per 100 (no baseline).", "",
            _md_table(["primitive / measure", "baseline"] + [stage_name(s) for s in stages], out), ""]


def _resolved(run) -> dict:
    import yaml

    p = run.path / "recipe.resolved.yaml"
    try:
        data = yaml.safe_load(p.read_text()) if p.exists() else {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def write_report(run) -> Path:
    rows = run.read_metrics()
    parts = [f"# Run report: {run.path.name}", ""]
    resolved = run.path / "recipe.resolved.yaml"
    if resolved.exists():
        parts += ["Recipe: `recipe.resolved.yaml`.", ""]
    strcomp_tables = {}
    for f in sorted((run.path / "eval").glob("*-strcomp.json"), key=lambda p: p.stat().st_mtime):
        strcomp_tables[f.stem.replace("-strcomp", "")] = json.loads(f.read_text())
    if strcomp_tables:
        parts += strcomp_headline(strcomp_tables)
    game_metrics = {}
    for f in sorted((run.path / "eval").glob("*-games.json"), key=lambda p: p.stat().st_mtime):
        game_metrics[f.stem.replace("-games", "")] = json.loads(f.read_text())
    refs: dict[str, list[tuple[float, str]]] = {}
    if game_metrics or (run.path / "eval" / "label-policy.json").exists():
        parts += games_headline(run, game_metrics, rows)
        parts += held_out_table(game_metrics)
        for name, lp in run.read_json("eval/label-policy.json", {}).items():
            refs.setdefault("rl_exploitability.png", []).append((lp["exploitability"], f"{name}: label policy"))
        for name in sorted({k.split("/")[1] for m in game_metrics.values() for k in m if k.endswith("/exploitability")}):
            uni = reference_policies(name)[0][1]["exploitability"]
            refs.setdefault("rl_exploitability.png", []).extend([(uni, f"{name}: uniform random"), (0.0, "Nash")])
    parts += primitives_headline(rows)
    gc = _resolved(run).get("model", {}).get("gradient_checkpointing")
    if gc == "auto":  # as the plan decided at the start (precision.json)
        gc = run.read_json("precision.json", {}).get("gradient_checkpointing", False)
    if gc is not None:
        parts += [f"Gradient checkpointing (model.gradient_checkpointing, SFT and RL alike): {'on' if gc else 'off'}.", ""]
    prec = run.read_json("precision.json", None)  # written by Pipeline.build (compose_rl/precision.py)
    if prec:
        mode = ("bf16 autocast (float32 weights, gradients and Adam state)" if prec["dtype"] == "bfloat16"
                else "float32")
        parts += [f"Precision (model.dtype {prec['requested_dtype']} on {prec['device']}; CPU bf16 instructions: "
                  f"{'yes' if prec['cpu_native_bf16'] else 'no'}): SFT, RL learner and vLLM {mode}; tf32 "
                  f"{'on' if prec['tf32'] else 'off'}; SFT max_length {prec['sft_max_length'] or 'none (no truncation)'}, "
                  f"packing {'on' if prec['sft_packing'] else 'off'}, padding-free {'on' if prec['sft_padding_free'] else 'off'}; "
                  f"RL micro-batch {prec['rl_micro_batch_size'] or 'the whole minibatch'}; "
                  f"{prec['threads']} intra-op thread(s) (runtime.threads {prec['requested_threads'] or 'auto'}).", ""]
    from compose_rl.report.reference import learner_line, reference_plot

    parts += learner_line(_resolved(run), rows)
    parts += reference_plot(run, rows)
    parts += ["# Details", ""]
    # gate
    for gate in sorted((run.path / "eval").glob("*-gate.json")):
        g = json.loads(gate.read_text())
        parts += [f"## Mastery gate ({gate.stem.replace('-gate', '')}): {'passed' if g['passed'] else 'FAILED'} "
                  f"(threshold {g['threshold']})", "",
                  _md_table(["skill", "held-out accuracy"], [[k, float(v)] for k, v in sorted(g["skills"].items())]), ""]
    # string composition by depth
    tables = strcomp_tables
    if tables:
        depths = [r["depth"] for r in next(iter(tables.values()))]
        parts += ["## Accuracy by composition depth (held-out compositions, greedy)", "",
                  _md_table(["stage"] + [f"d{d}" for d in depths] + ["parse d1"],
                            [[k] + [r["acc"] for r in v] + [v[0].get("parse", 0.0)] for k, v in tables.items()]), ""]
        if "shortcuts" in next(iter(tables.values()))[0]:
            first = next(iter(tables.values()))
            rules = list(dict.fromkeys(k for r in first for k in r["shortcuts"]))
            parts += ["Shortcut rules (accuracy on the eval items; blank = not a shortcut at that depth):", "",
                      _md_table(["rule"] + [f"d{d}" for d in depths],
                                [[k] + [_f(r["shortcuts"].get(k)) for r in first] for k in rules]), ""]
        pk = [k for k in next(iter(tables.values()))[0] if k.startswith("pass@")]
        if pk:
            parts += [f"{pk[0]} by depth:", "",
                      _md_table(["stage"] + [f"d{d}" for d in depths], [[k] + [r[pk[0]] for r in v] for k, v in tables.items()]), ""]
        png = plot_depth(run, tables)
        parts += [f"![accuracy by depth]({png})", ""]
    # games
    games = game_metrics
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
    for png in plot_curves(run, rows, refs) + plot_primitives(run, rows):
        parts += [f"![{png}]({png})", ""]
    samples = sorted((run.path / "samples").glob("*.txt"))
    if samples:
        parts += ["Readable samples and transcripts: " + ", ".join(f"`samples/{p.name}`" for p in samples), ""]
    out = run.path / "report.md"
    out.write_text("\n".join(parts))
    return out
