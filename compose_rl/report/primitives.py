"""The primitives' report section (primitives/register.py): probe scores beside their baselines per eval stage."""
from __future__ import annotations

from compose_rl.report.tables import _f, md_table as _md_table, stage_name


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
