"""LLM-judge trace detector: a local model (its engine built by commands/judge.py) counts each primitive.

The judge sees the primitives' one-line definitions (register.py) and one trace, and must reply
with a fixed tag holding a count for every primitive:

    <counts>expected_value=1, case_analysis=0, backtracking=0, subgoaling=0, verification=2,
    deduction=0, theory_of_mind=1, pattern_recognition=0</counts>

`parse_counts` is strict: the last `<counts>...</counts>` must hold exactly the eight names, each
once, with a non-negative integer. Anything else is a parse failure (None), counted and reported
as such, never read as 0.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

from compose_rl.primitives.register import PRIMITIVES
from compose_rl.types import SamplingParams

TAG_OPEN, TAG_CLOSE = "<counts>", "</counts>"
_ITEM = re.compile(r"\s*([a-z_]+)\s*=\s*([0-9]{1,4})\s*")


def judge_prompt(trace: str) -> str:
    defs = "\n".join(f"- {p.name}: {p.definition}" for p in PRIMITIVES.values())
    example = ", ".join(f"{name}=0" for name in PRIMITIVES)
    return ("You label reasoning traces. Reasoning primitives:\n" + defs + "\n\nTrace:\n\"\"\"\n" + trace.strip()
            + "\n\"\"\"\n\nCount how many times the trace uses each primitive. Reply with one line in exactly this "
            f"form, every name once, a whole number after each:\n{TAG_OPEN}{example}{TAG_CLOSE}")


def parse_counts(reply: str) -> dict[str, int] | None:
    """Counts per primitive from the judge's reply, or None (a parse failure)."""
    if not isinstance(reply, str):
        return None
    end = reply.rfind(TAG_CLOSE)
    start = reply.rfind(TAG_OPEN, 0, end if end >= 0 else None)
    if start < 0 or end < 0:
        return None
    body = reply[start + len(TAG_OPEN):end]
    out: dict[str, int] = {}
    for part in re.split(r"[,;\n]", body):
        if not part.strip():
            continue
        m = _ITEM.fullmatch(part)
        if m is None or m.group(1) not in PRIMITIVES or m.group(1) in out:
            return None
        out[m.group(1)] = int(m.group(2))
    return out if set(out) == set(PRIMITIVES) else None


def judge_counts(engine, format_prompt: Callable[[str], str], traces: Sequence[str], max_new_tokens: int = 160,
                 seed: int = 0) -> list[dict[str, int] | None]:
    """Greedy judge replies for every trace, parsed strictly (None = parse failure)."""
    if not traces:
        return []
    outs = engine.generate([format_prompt(judge_prompt(t)) for t in traces],
                           SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, n=1, seed=seed))
    return [parse_counts(o[0].text) for o in outs]

