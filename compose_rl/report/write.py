"""report.md: the domains' sections, the primitives', the policy kind's, precision, the learner, plots."""
from __future__ import annotations

import json
from pathlib import Path

from compose_rl.report import games, strcomp
from compose_rl.report.plots import plot_curves, plot_primitives
from compose_rl.report.primitives import primitives_headline
from compose_rl.report.tables import md_table as _md_table

# each domain's report section (domains/base.py): headline(run, rows, refs) and details(run, rows), in this order
DOMAIN_SECTIONS = (strcomp, games)


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
    refs: dict[str, list[tuple[float, str]]] = {}
    for section in DOMAIN_SECTIONS:  # each domain's headline tables (and its plot reference lines)
        parts += section.headline(run, rows, refs)
    parts += primitives_headline(rows)
    from compose_rl.kinds import report_section as kind_section

    parts += kind_section(run, rows)  # the policy kind's own (recurrent depth: depth/FLOPs per eval stage)
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
    for section in DOMAIN_SECTIONS:
        parts += section.details(run, rows)
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
