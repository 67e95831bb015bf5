"""Sub-goaling: the shortest sequence of operations from a start number to a target.

Three operations per item (add a, multiply by m, subtract c). The target is exactly `level + 1`
operations away (breadth-first search); any shortest sequence is accepted. Reaching the target
usually needs an intermediate number first (e.g. get to 11, then double), which greedy
"closest-next" play misses: that greedy rule is one of the floor's shortcuts.
"""
from __future__ import annotations

import random

from synthetic_tasks.probes.common import BOX, ProbeItem, Suite

Ops = tuple[tuple[str, int], ...]  # ("add"|"mul"|"sub", k) for letters A, B, C
LETTERS = "ABC"


def apply_op(x: int, op: tuple[str, int]) -> int:
    kind, k = op
    return x + k if kind == "add" else x * k if kind == "mul" else x - k


def distance(start: int, target: int, ops: Ops, limit: int) -> int | None:
    """Fewest operations from start to target (None if more than `limit`)."""
    frontier, seen = {start}, {start}
    for d in range(limit + 1):
        if target in frontier:
            return d
        nxt = set()
        for x in frontier:
            for op in ops:
                y = apply_op(x, op)
                if y not in seen:
                    seen.add(y)
                    nxt.add(y)
        frontier = nxt
    return None


def run(start: int, ops: Ops, letters: str) -> int:
    x = start
    for c in letters:
        x = apply_op(x, ops[LETTERS.index(c)])
    return x


def _describe(op: tuple[str, int]) -> str:
    kind, k = op
    return {"add": f"add {k}", "mul": f"multiply by {k}", "sub": f"subtract {k}"}[kind]


class SubgoalPlan(Suite):
    name = "subgoal_plan"
    primitive = "subgoaling"
    description = "shortest sequence of operations (letters) from a start number to a target"
    levels = (1, 2, 3, 4)
    answer_pattern = r"[ABC]{1,12}"

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        length = level + 1
        while True:
            ops = (("add", rng.randint(1, 9)), ("mul", rng.choice((2, 3))), ("sub", rng.randint(1, 9)))
            start = rng.randint(1, 12)
            family = repr((start, ops))  # start and operations decide the split; the BFS below is the cost
            if self.wrong_split(level, family, split):
                continue
            walk = "".join(rng.choice(LETTERS) for _ in range(length))
            target = run(start, ops, walk)
            if target != start and 0 < target < 1000 and distance(start, target, ops, length) == length:
                break
        prompt = (f"Start at {start} and reach {target}. Operations: "
                  + ", ".join(f"{c} = {_describe(op)}" for c, op in zip(LETTERS, ops))
                  + ". Give the shortest sequence of operations as letters in order (e.g. ABA). "
                  + BOX % "letters")
        return ProbeItem(self.name, level, prompt, walk, repr((start, target, ops)), (start, target, ops, length),
                         family)

    def check(self, item: ProbeItem, content: str) -> bool:
        start, target, ops, length = item.data
        return len(content) == length and run(start, ops, content) == target

    def shortcuts(self):
        def greedy(it: ProbeItem) -> str:
            start, target, ops, length = it.data
            x, out = start, ""
            for _ in range(length + 2):
                if x == target:
                    break
                i = min(range(3), key=lambda j: abs(apply_op(x, ops[j]) - target))
                x = apply_op(x, ops[i])
                out += LETTERS[i]
            return out or "A"

        def one_op(it: ProbeItem) -> str:
            start, target, ops, length = it.data
            up = "A" if target > start else "C"
            return up * length
        return {"greedy closest-next": greedy, "repeat add or subtract": one_op}
