"""The string task's report section (domains/strcomp.py): held-out accuracy by depth under the shortcut floor."""
from __future__ import annotations

import json
import math

from compose_rl.report.plots import plot_depth
from compose_rl.report.tables import _f, md_table as _md_table, stage_name
from compose_rl.stats import wilson


def tables_of(run) -> dict[str, list[dict]]:
    """eval/<label>-strcomp.json per eval stage, in the order they were written."""
    out = {}
    for f in sorted((run.path / "eval").glob("*-strcomp.json"), key=lambda p: p.stat().st_mtime):
        out[f.stem.replace("-strcomp", "")] = json.loads(f.read_text())
    return out


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


def headline(run, rows: list[dict], refs: dict) -> list[str]:
    tables = tables_of(run)
    return strcomp_headline(tables) if tables else []


def details(run, rows: list[dict]) -> list[str]:
    parts: list[str] = []
    tables = tables_of(run)
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
    return parts
