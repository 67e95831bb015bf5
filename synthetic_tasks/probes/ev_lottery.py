"""Expected value: choose the lottery with the higher expected payoff (integer points, percentages).

Levels: 1 = a two-outcome lottery against a sure amount; 2 = a big prize at a small chance against
a smaller prize at a bigger chance; 3 = two three-prize lotteries over the same prizes. Expected values never tie. Seeded coins make the
rules that skip the computation ("compare the average prize", "the larger most likely prize")
right on about half the items; at levels 2-3 the prizes are the same, so only the chances decide.
"""
from __future__ import annotations

import random

from synthetic_tasks.probes.common import YES_NO, ProbeItem, Suite

Lottery = tuple[tuple[int, int], ...]  # (percent, points)


def _lottery(rng: random.Random, outcomes: int) -> Lottery:
    if outcomes == 1:
        return ((100, rng.randint(5, 60)),)
    cuts = sorted(rng.sample(range(1, 10), outcomes - 1))
    probs = [10 * (b - a) for a, b in zip([0] + cuts, cuts + [10])]
    pts = rng.sample(range(0, 101), outcomes)
    return tuple(zip(probs, pts))


_PERMS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


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

    def make(self, rng: random.Random, level: int) -> ProbeItem:
        a, b = {1: self._vs_sure, 2: self._tradeoff, 3: self._same_prizes}[level](rng)
        if rng.random() < 0.5:
            a, b = b, a
        prompt = (f"Option A: {_describe(a)}. Option B: {_describe(b)}. "
                  "Which option gives more points on average (the higher expected value)? "
                  + YES_NO % ("A", "B"))
        return ProbeItem(self.name, level, prompt, "A" if ev100(a) > ev100(b) else "B", repr((a, b)), (a, b))

    @staticmethod
    def _vs_sure(rng: random.Random) -> tuple[Lottery, Lottery]:
        """A lottery against a sure amount Z, placed so that neither "compare Z with the average prize"
        nor "compare Z with the most likely prize" beats a coin."""
        # When Z lies between the expected value and the average prize, the most likely prize always
        # points the right way; so one coin: Z in between (average-prize rule wrong, most-likely rule
        # right) or Z outside with the most-likely rule wrong. Each rule then scores ~50%.
        disagree = rng.random() < 0.5
        want_likely = disagree
        while True:
            lot = _lottery(rng, 2)
            (p, x), (_, y) = sorted(lot, key=lambda o: -o[1])
            ev, mid, likely = ev100(lot), 50 * (x + y), 100 * max(lot)[1]  # all x 100
            lo, hi = sorted((ev, mid))
            zs = [z for z in range(y + 1, x) if 100 * z != ev
                  and (lo < 100 * z < hi) == disagree and ((ev > 100 * z) == (likely > 100 * z)) == want_likely]
            if zs:
                return lot, ((100, rng.choice(zs)),)

    @staticmethod
    def _tradeoff(rng: random.Random) -> tuple[Lottery, Lottery]:
        """A bigger prize at a smaller chance against a smaller prize at a bigger chance (else 0 points);
        a seeded coin decides which has the higher expected value, so "bigger prize" and "bigger
        chance" each score ~50%."""
        big_wins, want_likely = rng.random() < 0.5, rng.random() < 0.5
        # the most likely prize is the big one when p1 >= 50 (then both chances are >= 50), and B's
        # prize when p1 < 50 <= p2: so whether that rule is right fixes which of the two holds
        p1_range = range(50, 90, 10) if want_likely == big_wins else range(10, 50, 10)
        while True:
            p1 = rng.choice(p1_range)
            p2 = rng.randrange(max(p1 + 10, 50), 100, 10)
            x2, x1 = sorted(rng.sample(range(5, 101), 2))
            a, b = ((p1, x1), (100 - p1, 0)), ((p2, x2), (100 - p2, 0))
            ea, eb, la, lb = ev100(a), ev100(b), max(a)[1], max(b)[1]
            if ea != eb and la != lb and (ea > eb) == big_wins and ((ea > eb) == (la > lb)) == want_likely:
                return a, b

    @staticmethod
    def _same_prizes(rng: random.Random) -> tuple[Lottery, Lottery]:
        """Two three-prize lotteries over the same prizes with different chances: only the chances
        decide. Seeded coins decide whether the option whose most likely prize is larger, and the one
        with the larger chance of the top prize, is the better one."""
        want_likely, want_top = rng.random() < 0.5, rng.random() < 0.5
        while True:
            pts = rng.sample(range(0, 101), 3)
            top = pts.index(max(pts))
            pa, chances_b = _chances(rng), _chances(rng)
            a = tuple(zip(pa, pts))
            ea = ev100(a)
            k = rng.randrange(6)
            for pb in _PERMS[k:] + _PERMS[:k]:  # B's chances in every order before a redraw
                pb = tuple(chances_b[i] for i in pb)
                b = tuple(zip(pb, pts))
                eb = ev100(b)
                if ea == eb or max(a)[1] == max(b)[1] or pa[top] == pb[top]:
                    continue
                if ((ea > eb) == (max(a)[1] > max(b)[1])) == want_likely and ((ea > eb) == (pa[top] > pb[top])) == want_top:
                    return a, b

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
