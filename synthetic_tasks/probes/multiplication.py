"""Multiplication as a composition-depth probe: two `level`-digit numbers (digits = depth of the
partial-product decomposition: each digit of the multiplier is a sub-result combined at the end)."""
from __future__ import annotations

import random

from synthetic_tasks.probes.common import BOX, ProbeItem, Suite


def _lead(n: int) -> int:
    """n rounded to its leading digit (47 -> 40)."""
    p = 10 ** (len(str(n)) - 1)
    return n // p * p


class Multiplication(Suite):
    name = "multiplication"
    primitive = "subgoaling"
    description = "product of two level-digit numbers (digits = depth)"
    levels = (1, 2, 3, 4)
    answer_pattern = r"[0-9]{1,9}"
    full_rule_at = {"leading digits only": (1,)}

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        lo, hi = (2 if level == 1 else 10 ** (level - 1)), 10 ** level - 1
        x, y = rng.randint(lo, hi), rng.randint(lo, hi)
        prompt = f"What is {x} times {y}? " + BOX % "number"
        return ProbeItem(self.name, level, prompt, str(x * y), f"{x}*{y}", (x, y))

    def shortcuts(self):
        return {
            "leading digits only": lambda it: str(_lead(it.data[0]) * _lead(it.data[1])),
            "last digits only": lambda it: str(it.data[0] % 10 * it.data[1] % 10),
            "sum instead of product": lambda it: str(it.data[0] + it.data[1]),
        }
