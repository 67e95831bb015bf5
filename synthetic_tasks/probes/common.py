"""What every probe suite shares: the item record, strict `\\boxed{}` parsing, seeded generation with
disjoint train/eval splits, and the shortcut floor.

Splits: an item belongs to the eval split iff crc32(suite/level/family) % 5 == 0, where `family` is
a part of the item's canonical content `key` (what makes two items the same question) — the whole key
unless a suite names a smaller part, e.g. the numbers of a Countdown item. A split's generator draws
candidates from its own seeded stream and keeps those of its split, so no question (and no family:
no near-duplicate either) is ever in both splits, whichever seeds are used (train ~80%, eval ~20%).
Suites whose candidates are costly draw the family first and redraw it at once when it belongs to the
other split (`Suite.wrong_split`), so the eval split costs about as much as the train split.

Floor: the best accuracy, on the same items, of the suite's shortcut rules (answer rules that skip
the primitive: always "yes", pick the larger prize, ...), with the rule's name. Computed, never assumed.
"""
from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

from games.base import last_boxed

SPLITS = ("train", "eval")
EVAL_BUCKET = 5  # 1 in 5 questions is an eval question
MAX_DRAWS = 1000


@dataclass(frozen=True)
class ProbeItem:
    suite: str
    level: int
    prompt: str
    answer: str
    """A gold answer: the exact `\\boxed{}` content the checker accepts (one of several where several are right)."""
    key: str
    """Canonical content: two items with the same key are the same question."""
    data: tuple = ()
    """What the checker needs beyond `answer` (numbers, target, ...)."""
    family: str | None = None
    """The part of `key` that decides the split (None: the whole key). Equal keys give equal families."""

    @property
    def split(self) -> str:
        return split_of(self.suite, self.level, self.key if self.family is None else self.family)


def split_of(suite: str, level: int, key: str) -> str:
    return "eval" if zlib.crc32(f"{suite}/{level}/{key}".encode()) % EVAL_BUCKET == 0 else "train"


class Suite:
    """A probe suite: subclasses set the class attributes and implement `make` (and `check` when more
    than one answer is right, `shortcuts` for the floor)."""

    name: str = ""
    primitive: str = ""
    description: str = ""
    levels: tuple[int, ...] = (1,)
    answer_pattern: str = r".+"
    """What a well-formed answer looks like; the parser accepts nothing else (no spaces around it)."""
    full_rule_at: dict[str, tuple[int, ...]] = {}
    """Shortcut rules that are the full computation at some levels (not a shortcut there, so left out)."""

    def __init__(self) -> None:
        self._answer_re = re.compile(self.answer_pattern)
        self._salt = zlib.crc32(self.name.encode())

    # ---- to implement
    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        """One candidate item. `split` is only a hint: a suite that sets `ProbeItem.family` may use
        `wrong_split` to redraw a family of the other split before the costly part; `items` keeps
        only candidates of the requested split either way."""
        raise NotImplementedError

    def check(self, item: ProbeItem, content: str) -> bool:
        """Exact check of a parsed answer."""
        return content == item.answer

    def shortcuts(self) -> dict[str, Callable[[ProbeItem], str]]:
        return {}

    # ---- shared
    def wrong_split(self, level: int, family: str, split: str | None) -> bool:
        """True when `split` is given and `family` belongs to the other split (redraw it)."""
        return split is not None and split_of(self.name, level, family) != split

    def parse(self, text: str) -> str | None:
        """Content of the last `\\boxed{}` if it is a well-formed answer, else None."""
        content = last_boxed(text)
        if content is None or not self._answer_re.fullmatch(content):
            return None
        return content

    def score(self, item: ProbeItem, completion: str) -> bool:
        content = self.parse(completion)
        return content is not None and self.check(item, content)

    def items(self, split: str, level: int, n: int, seed: int = 0) -> list[ProbeItem]:
        """`n` items of `split` at `level`, deterministic in (suite, split, level, seed)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use train or eval")
        if level not in self.levels:
            raise ValueError(f"{self.name}: unknown level {level}; levels: {list(self.levels)}")
        if n < 0:
            raise ValueError("n must be >= 0")
        rng = random.Random((((self._salt * 1_000_003) + level) * 1_000_003 + seed) * 2 + SPLITS.index(split))
        out = []
        for _ in range(n):
            for _draw in range(MAX_DRAWS):
                item = self.make(rng, level, split)
                if item.split == split:
                    out.append(item)
                    break
            else:  # pragma: no cover - the question spaces are large
                raise RuntimeError(f"{self.name}: no {split} item found at level {level}")
        return out

    def floor(self, items: Sequence[ProbeItem]) -> tuple[float, str]:
        """(accuracy, rule) of the best shortcut rule on `items`, chosen per level (a rule that is the
        full computation at a level is left out there) and weighted by each level's item count;
        (0, "none") without rules."""
        by_level: dict[int, list[ProbeItem]] = {}
        for it in items:
            by_level.setdefault(it.level, []).append(it)
        total, names = 0.0, []
        for level in sorted(by_level):
            its = by_level[level]
            best = (0.0, "none")
            for rule, fn in self.shortcuts().items():
                if level in self.full_rule_at.get(rule, ()):
                    continue
                acc = sum(self.check(it, fn(it)) for it in its) / len(its)
                if acc > best[0]:
                    best = (acc, rule)
            total += best[0] * len(its)
            names.append(best[1] if len(by_level) == 1 else f"L{level}: {best[1]}")
        if not items:
            return 0.0, "none"
        return total / len(items), "; ".join(names)


BOX = "Answer with \\boxed{%s}."
YES_NO = "Answer with \\boxed{%s} or \\boxed{%s}."


