"""Scoring of the transfer matrix (the command that loads runs, rebuilds policies and writes the files:
compose_rl/commands/transfer.py).

Rows are checkpoints (base, after each training stage, best-by-exploitability), labelled by the
domain(s) their run trained on; columns are evaluation domains (domains/__init__.py SUITES), each a
score in [0, 1], higher is better (valid-action rate, 1/0.5/0 win-draw-loss score, accuracy,
probability mass on the right in-game action). A cell holds

  * the score with a 95% interval: Wilson for 0/1 items, else a t-interval of the item mean;
  * the delta vs the run's base model and vs its SFT checkpoint, with a 95% interval: a t-interval
    of the per-item differences where the items are paired (same problems, same states, same
    seeds), else the normal interval of a difference of two independent means (sampled play).

Transferability index of a column group g for a checkpoint: its normalized gain on g divided by its
normalized gain on the groups it trained on, where normalized gain = (score - base) / (1 - base),
the share of the base model's headroom closed (Hake's gain). We depart from a ratio to the base
score because the base model's score is often 0 (a randomly initialised model answers nothing
valid), where that ratio is undefined. The index is nan when the in-domain gain is not positive
(nothing to transfer) or the checkpoint trained on g itself. 1 = as much gain off-domain as in it;
0 = none.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from compose_rl.stats import mean_ci, paired_ci, wilson
from compose_rl.types import Column


# ----------------------------------------------------------------------------- statistics
def _binary(xs: list[float]) -> bool:
    return all(x in (0.0, 1.0) for x in xs)


def score_interval(xs: list[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): Wilson for 0/1 items, else the t-interval of the mean clipped to [0, 1]."""
    if not xs:
        return (math.nan,) * 3
    m = sum(xs) / len(xs)
    if _binary(xs):
        lo, hi = wilson(sum(xs), len(xs))
        return m, lo, hi
    m, h = mean_ci(xs)
    return m, max(0.0, m - h), min(1.0, m + h)  # scores live in [0, 1]


def delta_interval(a: Column, b: Column) -> tuple[float, float, float]:
    """(delta, lo, hi) of mean(a) - mean(b): paired over items when both columns are paired and
    equally long (t-interval of the differences), else two independent means (normal interval)."""
    if not a.items or not b.items:
        return (math.nan,) * 3
    if a.paired and b.paired and len(a.items) == len(b.items):
        d, h = paired_ci(a.items, b.items)
        return d, d - h, d + h

    def mv(xs):
        m = sum(xs) / len(xs)
        v = sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
        return m, v / len(xs)

    (ma, va), (mb, vb) = mv(a.items), mv(b.items)
    d, h = ma - mb, 1.96 * math.sqrt(va + vb)
    return d, d - h, d + h


def normalized_gain(score: float, base: float) -> float:
    """(score - base) / (1 - base): the share of the base's headroom closed; nan at base = 1."""
    return (score - base) / (1.0 - base) if base < 1.0 - 1e-12 else math.nan


# ----------------------------------------------------------------------------- the matrix
@dataclass
class Row:
    """One checkpoint's columns."""

    run: str
    label: str  # base, sft, rl, best-kuhn_poker, ...
    trained_on: list[str]  # column groups of its training domains ([] for base)
    columns: list[Column]
    base: "Row | None" = None
    sft: "Row | None" = None
    cells: list[dict] = field(default_factory=list)
    condition: str = ""  # the run's recipe name without its `-s<seed>` suffix: what seeds replicate
    seed: int | None = None

    @property
    def name(self) -> str:
        on = "+".join(self.trained_on) if self.trained_on else "-"
        return f"{self.run}:{self.label} [{on}]"


def fill_cells(row: Row) -> None:
    """Scores, intervals, deltas vs base and SFT, normalized gains and transferability indices."""
    cells = []
    for i, col in enumerate(row.columns):
        s, lo, hi = score_interval(col.items)
        c = {"group": col.group, "column": col.name, "score": s, "lo": lo, "hi": hi, "n": len(col.items),
             "paired": col.paired, "floor": col.floor}
        for ref_name, ref in (("base", row.base), ("sft", row.sft)):
            if ref is None or ref is row:
                c.update({f"d_{ref_name}": math.nan, f"d_{ref_name}_lo": math.nan, f"d_{ref_name}_hi": math.nan})
                continue
            d, dlo, dhi = delta_interval(col, ref.columns[i])
            c.update({f"d_{ref_name}": d, f"d_{ref_name}_lo": dlo, f"d_{ref_name}_hi": dhi})
        base_s = score_interval(row.base.columns[i].items)[0] if row.base is not None and row.base is not row else math.nan
        c["gain"] = normalized_gain(s, base_s) if base_s == base_s else math.nan
        cells.append(c)
    groups = list(dict.fromkeys(c["group"] for c in cells))
    gain = {g: _mean([c["gain"] for c in cells if c["group"] == g]) for g in groups}
    own = _mean([gain[g] for g in row.trained_on if g in gain])
    for c in cells:
        g = c["group"]
        ok = own == own and own > 1e-12 and g not in row.trained_on
        c["transfer_index"] = gain[g] / own if ok else math.nan
        c["group_gain"], c["in_domain_gain"] = gain[g], own
    row.cells = cells


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else math.nan


SEED_KEYS = ("score", "d_base", "d_sft", "transfer_index")


def seed_rows(rows: list[Row]) -> list[Row]:
    """One row per (condition, checkpoint) that 2 or more seeds replicate: each cell's score, delta vs
    base and delta vs SFT averaged over the seeds, with the 95% t-interval over seeds (the seed is the
    unit of replication: a training run's items are not independent trainings). Deltas are paired
    within each seed first (the per-seed delta of the single-run cell), then averaged. A key a seed
    lacks (nan) is left out of that key's mean; `n` is the number of seeds."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.condition or r.run, r.label), []).append(r)
    out = []
    for (cond, label), rs in groups.items():
        if len({r.seed for r in rs}) < 2:
            continue
        cells = []
        for j, c0 in enumerate(rs[0].cells):
            c = {"group": c0["group"], "column": c0["column"], "n": len(rs), "paired": True, "floor": c0["floor"]}
            for key in SEED_KEYS:
                xs = [r.cells[j][key] for r in rs if r.cells[j][key] == r.cells[j][key]]
                m, h = mean_ci(xs) if xs else (math.nan, math.nan)
                lo, hi = m - h, m + h
                if key == "score":
                    lo, hi = max(0.0, lo), min(1.0, hi)
                c.update({key: m, f"{key}_lo": lo, f"{key}_hi": hi})
            c["lo"], c["hi"] = c.pop("score_lo"), c.pop("score_hi")
            cells.append(c)
        seeds = ",".join(str(r.seed) for r in sorted(rs, key=lambda r: (r.seed is None, r.seed)))
        out.append(Row(f"{cond} (seeds {seeds})", label, rs[0].trained_on, [], cells=cells, condition=cond))
    return out
