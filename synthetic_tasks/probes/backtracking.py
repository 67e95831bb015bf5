"""Backtracking search: Countdown. Use every given number exactly once with +, - and * (and
parentheses) to make the target. Many answers can be right; the checker evaluates the expression.

Levels: 3, 4 or 5 numbers (level 1, 2, 3). Targets are made by a random expression over the numbers,
then items where the plain sum or product of all numbers already hits the target are dropped, so a
solution needs trying combinations and undoing the ones that fail.
"""
from __future__ import annotations

import random
import re
from collections import Counter

from synthetic_tasks.probes.common import BOX, ProbeItem, Suite


class ExprError(ValueError):
    pass


def evaluate(expr: str) -> tuple[int, list[int]]:
    """Value of an integer expression with + - * and parentheses, and the numbers it uses.

    A small recursive-descent parser (no eval): expr := term (('+'|'-') term)*,
    term := factor ('*' factor)*, factor := number | '(' expr ')'. Unary minus is not allowed.
    """
    tokens = re.findall(r"\s*([0-9]+|\S)", expr)  # numbers, or any other single character
    if re.search(r"[0-9]\s+[0-9]", expr):
        raise ExprError("two numbers with only a space between them")
    pos = 0
    used: list[int] = []

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def factor() -> int:
        nonlocal pos
        if peek() == "(":
            pos += 1
            v = parse_expr()
            if peek() != ")":
                raise ExprError("unbalanced parenthesis")
            pos += 1
            return v
        tok = peek()
        if not (tok.isascii() and tok.isdigit()):
            raise ExprError(f"expected a number, got {tok or 'the end'!r}")
        if tok[0] == "0" and len(tok) > 1:
            raise ExprError("leading zero")
        pos += 1
        used.append(int(tok))
        return used[-1]

    def term() -> int:
        nonlocal pos
        v = factor()
        while peek() == "*":
            pos += 1
            v *= factor()
        return v

    def parse_expr() -> int:
        nonlocal pos
        v = term()
        while peek() in ("+", "-"):
            op = peek()
            pos += 1
            v = v + term() if op == "+" else v - term()
        return v

    value = parse_expr()
    if pos != len(tokens):
        raise ExprError(f"unexpected {tokens[pos]!r}")
    return value, used


def _random_expr(rng: random.Random, nums: list[int]) -> str:
    parts = [str(n) for n in nums]
    while len(parts) > 1:
        i = rng.randrange(len(parts) - 1)
        op = rng.choice("+-*")
        parts[i:i + 2] = [f"({parts[i]}{op}{parts[i + 1]})"]
    return parts[0][1:-1] if parts[0].startswith("(") else parts[0]


class Countdown(Suite):
    name = "backtracking"
    primitive = "backtracking"
    description = "Countdown: make the target from every given number once with + - * ( )"
    levels = (1, 2, 3)
    answer_pattern = r"[0-9+\-*() ]{1,80}"

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        k = level + 2
        while True:
            nums = [rng.randint(1, 12) for _ in range(k)]
            shown = sorted(nums)
            if self.wrong_split(level, repr(shown), split):  # the family: the multiset of numbers
                continue
            expr = _random_expr(rng, nums)
            target = evaluate(expr)[0]
            prod = 1
            for n in nums:
                prod *= n
            if 1 <= target <= 500 and target not in (sum(nums), prod) and target not in nums:
                break
        prompt = (f"Numbers: {', '.join(map(str, shown))}. Target: {target}. Use every number exactly once, "
                  "with +, -, * and parentheses, to make the target. " + BOX % "expression")
        return ProbeItem(self.name, level, prompt, expr, repr((shown, target)), (tuple(shown), target), repr(shown))

    def check(self, item: ProbeItem, content: str) -> bool:
        nums, target = item.data
        try:
            value, used = evaluate(content)
        except ExprError:
            return False
        return value == target and Counter(used) == Counter(nums)

    def shortcuts(self):
        return {
            "sum of all numbers": lambda it: "+".join(map(str, it.data[0])),
            "product of all numbers": lambda it: "*".join(map(str, it.data[0])),
            "largest times second largest, minus the rest": lambda it: (
                f"{it.data[0][-1]}*{it.data[0][-2]}" + "".join(f"-{n}" for n in it.data[0][:-2])),
        }
