"""Calibration of the trace detectors on the hand-labelled set (traces.py): precision, recall and F1
per detector and primitive, and the detector's positive rate per 100 traces with a 95% interval.

For the judge, a trace whose reply fails to parse counts as a miss for every primitive (it cannot
be a true positive) and the number of parse failures is printed beside the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from compose_rl.primitives.detectors import rates_per_100, rule_counts
from compose_rl.primitives.register import PRIMITIVES
from compose_rl.primitives.traces import TRACES, Trace


@dataclass(frozen=True)
class Score:
    detector: str
    primitive: str
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def rate(self) -> tuple[float, float, float]:
        n = self.tp + self.fp + self.fn + self.tn
        return rates_per_100([True] * (self.tp + self.fp) + [False] * (n - self.tp - self.fp))


def score(detector: str, flags: Sequence[dict[str, bool]], traces: Sequence[Trace],
          primitives: Sequence[str]) -> list[Score]:
    out = []
    for p in primitives:
        tp = fp = fn = tn = 0
        for f, t in zip(flags, traces):
            d, y = f[p], p in t.labels
            tp += d and y
            fp += d and not y
            fn += (not d) and y
            tn += (not d) and not y
        out.append(Score(detector, p, tp, fp, fn, tn))
    return out


def rules_flags(traces: Sequence[Trace]) -> list[dict[str, bool]]:
    return [{p: c > 0 for p, c in rule_counts(t.text).items()} for t in traces]


def judge_flags(counts: Sequence[dict[str, int] | None]) -> list[dict[str, bool]]:
    return [{p: bool(c and c[p] > 0) for p in PRIMITIVES} for c in counts]


def table(scores: Sequence[Score]) -> str:
    lines = [f"{'detector':8s} {'primitive':20s} {'pos':>4s} {'prec':>5s} {'rec':>5s} {'F1':>5s}  rate/100 [95% CI]"]
    for s in scores:
        r, lo, hi = s.rate()
        lines.append(f"{s.detector:8s} {s.primitive:20s} {s.tp + s.fn:4d} {s.precision:5.2f} {s.recall:5.2f} "
                     f"{s.f1:5.2f}  {r:5.1f} [{lo:4.1f}, {hi:4.1f}]")
    return "\n".join(lines)


def calibrate(primitives: Sequence[str] | None = None, judge: "tuple | None" = None,
              traces: Sequence[Trace] = TRACES) -> tuple[list[Score], int]:
    """Scores of the rules detectors, and of the judge when one is given (an `(engine, format_prompt)`
    pair: compose_rl/commands/judge.py builds it from a model name); second value: the judge's parse failures."""
    prims = list(primitives) if primitives else list(PRIMITIVES)
    scores = score("rules", rules_flags(traces), traces, prims)
    failures = 0
    if judge is not None:
        from compose_rl.primitives.judge import judge_counts

        engine, fmt = judge
        counts = judge_counts(engine, fmt, [t.text for t in traces])
        failures = sum(c is None for c in counts)
        scores += score("judge", judge_flags(counts), traces, prims)
    return scores, failures
