"""Pattern recognition: the next number of a sequence.

Level 1: arithmetic (constant step). Level 2: geometric (x2 or x3) or alternating steps (+a, +b).
Level 3: second-order (the step grows by a constant) or two interleaved arithmetic sequences.
"Continue the last step" is the level-1 pattern itself, so it is a shortcut only at levels 2-3.
"""
from __future__ import annotations

import random

from synthetic_tasks.probes.common import BOX, ProbeItem, Suite

TERMS = 6


def _sequence(rng: random.Random, level: int) -> tuple[str, list[int]]:
    x0 = rng.randint(1, 20)
    if level == 1:
        d = rng.choice([k for k in range(-9, 10) if k])
        return "arithmetic", [x0 + d * i for i in range(TERMS + 1)]
    if level == 2:
        if rng.random() < 0.5:
            r = rng.choice((2, 3))
            x0 = rng.randint(1, 6)
            return "geometric", [x0 * r ** i for i in range(TERMS + 1)]
        a, b = rng.sample([k for k in range(-6, 10) if k], 2)
        out = [x0]
        for i in range(TERMS):
            out.append(out[-1] + (a if i % 2 == 0 else b))
        return "alternating steps", out
    if rng.random() < 0.5:
        d, dd = rng.randint(1, 6), rng.randint(1, 4)
        out = [x0]
        for i in range(TERMS):
            out.append(out[-1] + d + dd * i)
        return "second order", out
    y0 = rng.randint(1, 30)
    a, b = rng.choice((-3, -2, 2, 3, 4, 5)), rng.choice((-4, -1, 1, 6, 7))
    return "interleaved", [(x0 + a * (i // 2)) if i % 2 == 0 else (y0 + b * (i // 2)) for i in range(TERMS + 1)]


class SequencePattern(Suite):
    name = "sequence_pattern"
    primitive = "pattern_recognition"
    description = "next number of an arithmetic / geometric / alternating / second-order / interleaved sequence"
    levels = (1, 2, 3)
    answer_pattern = r"-?[0-9]{1,7}"
    full_rule_at = {"continue the last step": (1,), "continue the first step": (1,)}

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        while True:
            kind, seq = _sequence(rng, level)
            shown, nxt = seq[:TERMS], seq[TERMS]
            if level == 1 or nxt != 2 * shown[-1] - shown[-2]:  # the last step alone must not suffice
                break
        prompt = f"What number comes next: {', '.join(map(str, shown))}, ...? " + BOX % "number"
        return ProbeItem(self.name, level, prompt, str(nxt), ",".join(map(str, shown)), (tuple(shown), kind))

    def shortcuts(self):
        return {
            "continue the last step": lambda it: str(2 * it.data[0][-1] - it.data[0][-2]),
            "repeat the last number": lambda it: str(it.data[0][-1]),
            "continue the first step": lambda it: str(it.data[0][-1] + it.data[0][1] - it.data[0][0]),
        }
