"""The recurrent-depth kind's report section: test-time depth against compute, per eval stage.

The eval stage scores the looped policy at r x m iterations (recurrent.eval_multipliers, default 1, 2, 4),
under each exit rule at depth r, and (games) at fixed t < r; metrics.jsonl keeps each as
depth/<variant>/<metric> with its mean iterations and forward FLOPs per answer (recurrent_train.depth_eval,
game_depth_eval). This turns them into one table per eval stage.
"""
from __future__ import annotations


def _variant_name(v: str) -> str:
    if v.startswith("x") and v[1:].isdigit():
        return "r" if v == "x1" else f"{v[1:]}r"
    if v.startswith("t") and v[1:].isdigit():
        return f"t = {v[1:]} (fixed)"
    return {"halt_head": "exit: halting head (at r)", "halt_change": "exit: latent change (at r)"}.get(v, v)


def _fmt(x) -> str:
    if x is None:
        return ""
    if abs(x) >= 1e4:
        return f"{x:.3g}"
    return f"{x:.3f}"


def depth_section(rows: list[dict]) -> list[str]:
    """## Recurrent depth: one table per eval stage (rows: depth variants; columns: accuracy or exact
    exploitability, mean iterations, FLOPs per answer). [] when no eval stage logged depth metrics."""
    from compose_rl.report.tables import md_table, stage_name

    evals = [r for r in rows if r.get("stage", "").startswith("eval") and any(k.startswith("depth/") for k in r)]
    if not evals:
        return []
    parts = ["## Recurrent depth: test-time iterations against compute (eval stage; r = recurrent.depth)", ""]
    for stage in dict.fromkeys(r["stage"] for r in evals):
        last = [r for r in evals if r["stage"] == stage][-1]
        variants, columns = {}, {}
        for k, v in last.items():
            if not k.startswith("depth/") or not isinstance(v, (int, float)):
                continue
            _, variant, rest = k.split("/", 2)
            variants.setdefault(variant, {})[rest] = v
            columns.setdefault(rest, None)
        # accuracy / exploitability first, then iterations, then FLOPs
        order = sorted(columns, key=lambda c: (c.endswith("flops_per_answer"), c.endswith("mean_iterations")))
        body = [[_variant_name(v)] + [_fmt(vals.get(c)) for c in order] for v, vals in variants.items()]
        header = ["depth"] + [c.replace("flops_per_answer", "FLOPs per answer").replace("mean_iterations",
                                                                                      "mean iterations") for c in order]
        parts += [f"### {stage_name(stage)}", "", md_table(header, body), ""]
    parts += ["FLOPs: analytic forward FLOPs of one answer with the KV cache (recurrent_depth.flops_per_answer); "
              "exploitability exact (0 = Nash).", ""]
    return parts
