"""Verification: is a candidate answer to a string-composition problem correct? (yes / no)

The problem is a chain of `level` atomic functions of synthetic_tasks/strcomp.py, with every
definition shown. Classes are balanced by a seeded coin. A wrong candidate is a plausible error:
the functions applied in the reverse order, one function skipped, or one character changed in
the correct answer, so spotting it needs re-doing (checking) the computation.
"""
from __future__ import annotations

import random
import string

from synthetic_tasks.probes.common import YES_NO, ProbeItem, Suite
from synthetic_tasks.strcomp import ALL_FUNCTIONS, apply_chain, format_expression

_NAMES = [f.name for f in ALL_FUNCTIONS]
_DEFS = {f.name: f.definition for f in ALL_FUNCTIONS}


def _chain(rng: random.Random, depth: int) -> list[str]:
    out: list[str] = []
    while len(out) < depth:
        f = rng.choice(_NAMES)
        if not out or f != out[-1]:
            out.append(f)
    return out


def _wrong(rng: random.Random, chain: list[str], x: str, right: str) -> str:
    for _ in range(20):
        kind = rng.choice(("reverse", "skip", "char") if len(chain) > 1 else ("char",))
        if kind == "reverse":
            cand = apply_chain(chain[::-1], x)[-1]
        elif kind == "skip":
            i = rng.randrange(len(chain))
            cand = apply_chain(chain[:i] + chain[i + 1:], x)[-1]
        else:
            i = rng.randrange(len(right))
            cand = right[:i] + rng.choice(string.ascii_lowercase) + right[i + 1:]
        if cand != right:
            return cand
    return right + "a"


class VerifyStrComp(Suite):
    name = "verify_strcomp"
    primitive = "verification"
    description = "is a candidate answer to a string-function composition correct (yes/no)"
    levels = (1, 2, 3)
    answer_pattern = r"yes|no"

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        chain = _chain(rng, level)
        x = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 7)))
        right = apply_chain(chain, x)[-1]
        correct = rng.random() < 0.5
        cand = right if correct else _wrong(rng, chain, x, right)
        defs = "\n".join(f"{f}: {_DEFS[f]}" for f in dict.fromkeys(chain))
        expr = format_expression(chain, x)
        prompt = (f"Definitions (s is the input string):\n{defs}\nProblem: {expr}\nCandidate answer: {cand}\n"
                  "Is the candidate answer correct? " + YES_NO % ("yes", "no"))
        return ProbeItem(self.name, level, prompt, "yes" if correct else "no", f"{expr}|{cand}", (x, cand))

    def shortcuts(self):
        return {
            "always yes": lambda it: "yes",
            "always no": lambda it: "no",
            "yes iff the candidate has the input's length": lambda it: "yes" if len(it.data[1]) == len(it.data[0]) else "no",
            "yes iff the candidate differs from the input": lambda it: "yes" if it.data[1] != it.data[0] else "no",
        }
