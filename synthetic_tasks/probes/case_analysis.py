"""Case-by-case analysis: a hidden number takes one of a few values; a rule that depends on the case
(even or odd) gives a score; the answer, the sum of the scores over every possible value, needs every case.

Levels: the hidden number has level + 1 possible values (2, 3, 4).
"""
from __future__ import annotations

import random

from synthetic_tasks.probes.common import BOX, ProbeItem, Suite


def _score(x: int, a: int, b: int) -> int:
    return x // 2 + a if x % 2 == 0 else 3 * x - b


class CaseAnalysis(Suite):
    name = "case_analysis"
    primitive = "case_analysis"
    description = "sum of a parity-dependent score over every possible value of a hidden number"
    levels = (1, 2, 3)
    answer_pattern = r"-?[0-9]{1,6}"

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        while True:
            xs = sorted(rng.sample(range(1, 21), level + 1))
            if len({x % 2 for x in xs}) == 2:  # both rules are needed
                break
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        listed = ", ".join(map(str, xs[:-1])) + f" or {xs[-1]}"
        prompt = (f"A hidden number x is {listed}; you do not know which. Its score is x/2 + {a} if x is even "
                  f"and 3*x - {b} if x is odd. What is the sum of the scores of all the possible values of x? "
                  + BOX % "number")
        total = sum(_score(x, a, b) for x in xs)
        return ProbeItem(self.name, level, prompt, str(total), repr((xs, a, b)), (tuple(xs), a, b))

    def shortcuts(self):
        def rule(f):
            return lambda it: str(f(*it.data))
        return {
            "largest value's score only": rule(lambda xs, a, b: _score(xs[-1], a, b)),
            "first value's score times the count": rule(lambda xs, a, b: len(xs) * _score(xs[0], a, b)),
            "even rule for every value": rule(lambda xs, a, b: sum(x // 2 + a for x in xs)),
            "odd rule for every value": rule(lambda xs, a, b: sum(3 * x - b for x in xs)),
        }
