"""Intervals used by every table in the project: one home each (the ground floor: imports nothing of ours).

- `mean_ci`: mean and the half-width of the two-sided 95% Student-t interval (seeds, items).
- `wilson`: the 95% Wilson score interval of a proportion (Wilson 1927), from a success count.
- `paired_ci`: mean and t half-width of the differences of two paired samples (same seed or item).
"""
from __future__ import annotations

import math
from typing import Sequence

# two-sided 95% Student t quantiles by degrees of freedom; beyond 10 the normal 1.96 (the tables here
# have at most a handful of seeds, so the table only has to be exact where it is used)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (0 for a single value)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    sd = (sum((x - m) ** 2 for x in xs) / (n - 1)) ** 0.5
    return m, T95.get(n - 1, 1.96) * sd / n ** 0.5


def paired_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% t half-width of a - b, paired element by element (equal lengths required)."""
    if len(a) != len(b):
        raise ValueError(f"paired_ci needs equal lengths, got {len(a)} and {len(b)}")
    return mean_ci([x - y for x, y in zip(a, b)])


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of the proportion k/n, k successes of n (k may be a float count,
    e.g. accuracy x n). Stays inside [0, 1] at 0 and n; n = 0 carries no information: (0, 1)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)
