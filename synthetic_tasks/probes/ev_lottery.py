"""Expected value: choose the lottery with the higher expected payoff (integer points, percentages).

Levels: 1 = a two-outcome lottery against a sure amount; 2 = a big prize at a small chance against
a smaller prize at a bigger chance; 3 = two three-prize lotteries over the same prizes. Expected values never tie. Seeded coins make the
rules that skip the computation ("compare the average prize", "the larger most likely prize")
right on about half the items; at levels 2-3 the prizes are the same, so only the chances decide.
"""
from __future__ import annotations

import random
from typing import Callable

from synthetic_tasks.probes.common import YES_NO, ProbeItem, Suite

Lottery = tuple[tuple[int, int], ...]  # (percent, points)


_PERMS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def _orders(c: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The distinct orderings of three chances, in a fixed order (deterministic draws)."""
    return sorted({(c[i], c[j], c[k]) for i, j, k in _PERMS})


def _chances(rng: random.Random) -> tuple[int, int, int]:
    """Three whole-ten percentages (each >= 10) summing to 100."""
    a, b = sorted(rng.sample(range(1, 10), 2))
    return 10 * a, 10 * (b - a), 10 * (10 - b)


def ev100(lot: Lottery) -> int:
    """100 x the expected points (an integer: probabilities are whole percentages)."""
    return sum(p * x for p, x in lot)


def _describe(lot: Lottery) -> str:
    if len(lot) == 1:
        return f"{lot[0][1]} points for sure"
    return ", ".join(f"{p}% chance of {x} points" for p, x in lot)


class EVLottery(Suite):
    name = "ev_lottery"
    primitive = "expected_value"
    description = "which of two lotteries has the higher expected payoff (A or B)"
    levels = (1, 2, 3)
    answer_pattern = r"[AB]"

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        def wrong(family: str) -> bool:
            return self.wrong_split(level, family, split)
        a, b, family = {1: self._vs_sure, 2: self._tradeoff, 3: self._same_prizes}[level](rng, wrong)
        if rng.random() < 0.5:
            a, b = b, a
        prompt = (f"Option A: {_describe(a)}. Option B: {_describe(b)}. "
                  "Which option gives more points on average (the higher expected value)? "
                  + YES_NO % ("A", "B"))
        return ProbeItem(self.name, level, prompt, "A" if ev100(a) > ev100(b) else "B", repr((a, b)), (a, b),
                         family)

    @staticmethod
    def _vs_sure(rng: random.Random, wrong: Callable[[str], bool]) -> tuple[Lottery, Lottery, str]:
        """A lottery against a sure amount Z, placed so that neither "compare Z with the average prize"
        nor "compare Z with the most likely prize" beats a coin. Family: the lottery's two prizes."""
        # When Z lies between the expected value and the average prize, the most likely prize always
        # points the right way; so one coin: Z in between (average-prize rule wrong, most-likely rule
        # right) or Z outside with the most-likely rule wrong. Each rule then scores ~50%.
        disagree = rng.random() < 0.5
        want_likely = disagree
        while True:
            pts = rng.sample(range(0, 101), 2)  # the family: the two prizes in shown order
            if wrong(repr(pts)):
                continue
            p = 10 * rng.randint(1, 9)
            lot = ((p, pts[0]), (100 - p, pts[1]))
            (p, x), (_, y) = sorted(lot, key=lambda o: -o[1])
            ev, mid, likely = ev100(lot), 50 * (x + y), 100 * max(lot)[1]  # all x 100
            lo, hi = sorted((ev, mid))
            zs = [z for z in range(y + 1, x) if 100 * z != ev
                  and (lo < 100 * z < hi) == disagree and ((ev > 100 * z) == (likely > 100 * z)) == want_likely]
            if zs:
                return lot, ((100, rng.choice(zs)),), repr(pts)

    @staticmethod
    def _tradeoff(rng: random.Random, wrong: Callable[[str], bool]) -> tuple[Lottery, Lottery, str]:
        """A bigger prize at a smaller chance against a smaller prize at a bigger chance (else 0 points);
        a seeded coin decides which has the higher expected value, so "bigger prize" and "bigger
        chance" each score ~50%. Family: the two prizes."""
        big_wins, want_likely = rng.random() < 0.5, rng.random() < 0.5
        # the most likely prize is the big one when p1 >= 50 (then both chances are >= 50), and B's
        # prize when p1 < 50 <= p2: so whether that rule is right fixes which of the two holds
        p1_range = range(50, 90, 10) if want_likely == big_wins else range(10, 50, 10)
        while True:
            x2, x1 = sorted(rng.sample(range(5, 101), 2))
            if wrong(repr((x2, x1))):
                continue
            p1 = rng.choice(p1_range)
            p2 = rng.randrange(max(p1 + 10, 50), 100, 10)
            a, b = ((p1, x1), (100 - p1, 0)), ((p2, x2), (100 - p2, 0))
            ea, eb, la, lb = ev100(a), ev100(b), max(a)[1], max(b)[1]
            if ea != eb and la != lb and (ea > eb) == big_wins and ((ea > eb) == (la > lb)) == want_likely:
                return a, b, repr((x2, x1))

    @staticmethod
    def _same_prizes(rng: random.Random, wrong: Callable[[str], bool]) -> tuple[Lottery, Lottery, str]:
        """Two three-prize lotteries over the same prizes with different chances: only the chances
        decide. Seeded coins decide whether the option whose most likely prize is larger, and the one
        with the larger chance of the top prize, is the better one. Family: the prizes in shown order."""
        want_likely, want_top = rng.random() < 0.5, rng.random() < 0.5
        while True:
            pts = rng.sample(range(0, 101), 3)
            if wrong(repr(pts)):
                continue
            top = pts.index(max(pts))
            ca, cb = _chances(rng), _chances(rng)
            # every ordering of both chance triples that meets the coins: one draw, not a redraw each
            x0, x1, x2 = pts
            bs = [(pb, pb[0] * x0 + pb[1] * x1 + pb[2] * x2, max(zip(pb, pts))[1]) for pb in _orders(cb)]
            ok = []
            for pa in _orders(ca):
                ea, la = pa[0] * x0 + pa[1] * x1 + pa[2] * x2, max(zip(pa, pts))[1]  # ev100, most likely prize
                for pb, eb, lb in bs:
                    if ea == eb or la == lb or pa[top] == pb[top]:
                        continue
                    if ((ea > eb) == (la > lb)) == want_likely and ((ea > eb) == (pa[top] > pb[top])) == want_top:
                        ok.append((pa, pb))
            if ok:
                pa, pb = ok[rng.randrange(len(ok))]
                return tuple(zip(pa, pts)), tuple(zip(pb, pts)), repr(pts)

    def shortcuts(self):
        def by(f):
            return lambda it: "A" if f(it.data[0]) > f(it.data[1]) else "B"
        return {
            "always A": lambda it: "A",
            "always B": lambda it: "B",
            "larger top prize": by(lambda lot: max(x for _, x in lot)),
            "larger most likely payoff": by(lambda lot: max(lot)[1]),
            "larger chance of the top prize": by(lambda lot: max(lot, key=lambda o: o[1])[0]),
            "larger mean of payoffs (ignores chances)": by(lambda lot: sum(x for _, x in lot) / len(lot)),
        }
