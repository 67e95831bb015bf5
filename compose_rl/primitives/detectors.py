"""Trace detectors: does a reasoning trace show a primitive, and how often?

Rule-based detectors (`<primitive>/rules`): a few regular expressions per primitive, written from
the primitive's definition (not fitted to the labelled set); the count is the number of matches,
a trace is positive when the count is > 0. They are cheap and transparent and miss paraphrases;
their precision/recall on the hand-labelled set (traces.py) is what `compose-rl primitives
calibrate` prints. The LLM-judge detectors (`<primitive>/judge`) are in judge.py.

Rates over many traces are reported per 100 traces with a 95% Wilson interval (`rates_per_100`).
"""
from __future__ import annotations

import re
from typing import Sequence

from compose_rl.primitives.register import PRIMITIVES

_NUM = r"\d+(?:\.\d+)?"
RULES: dict[str, tuple[str, ...]] = {
    "expected_value": (
        r"\bexpected (?:value|payoff|return|points)\b", r"\bEV\b", r"\bon average\b",
        rf"\b{_NUM}\s*%\s*(?:of|chance)\b", rf"\b0?\.\d+\s*[*x×]\s*{_NUM}", r"\bweight(?:ed|ing)? (?:by|each)\b",
        r"\bbreak[- ]even\b", r"\bpot odds\b",
    ),
    "case_analysis": (
        r"\b(?:in )?(?:each|every|both|either) case\b", r"\bcases?\b\s*:", r"\bcase (?:x|\d|one|two)\b",
        r"\bif (?:they|the opponent|he|she) (?:has|have|holds?)\b", r"\bsuppose\b", r"\beither\b.{0,40}\bor\b",
        r"\bone by one\b", r"\bwhatever they hold\b",
    ),
    "backtracking": (
        r"\bback ?track", r"\b(?:go|going) back\b", r"\bback up\b", r"\bdead end\b", r"\bscrap (?:it|that)\b",
        r"\b(?:doesn't|does not|didn't|won't) work\b", r"\btry (?:again|another|\w+ instead)\b", r"\bstart over\b",
        r"\bno, wait\b", r"\battempt \d\b", r"\bredo\b",
    ),
    "subgoaling": (
        r"\bsub-?goals?\b", r"\bintermediate\b", r"\bfirst (?:I|we) (?:need|want|have|must)\b",
        r"\b(?:get|reach) (?:to )?\d+ first\b", r"\bbreak (?:it|this) (?:down|into)\b", r"\bsplit it\b",
        r"\bthen (?:I|we) can\b", r"\bplan:", r"\bfirst reach\b", r"\bto (?:get|reach) \w+,? (?:I|we) (?:need|must)\b",
    ),
    "verification": (
        r"\b(?:let me |to )?(?:check|verify|double-check|recheck|re-check|confirm)(?:ed|ing|s)?\b",
        r"\bsanity\b", r"\bplug(?:ging)? (?:it|the \w+) (?:back )?in\b", r"\bto be sure\b", r"\bmake sure\b",
        r"\bmatches\b", r"\brecompute\b", r"\bre-?trace\b",
    ),
    "deduction": (
        r"\btherefore\b", r"\bhence\b", r"\bthus\b", r"\bit follows\b", r"\bmust be\b", r"\bimplies\b",
        r"\bso (?:\w+ )?(?:is|are) an? \w+\b", r"\bwhich means\b", r"\bworking back\b", r"\bcannot\b|\bcan't\b",
    ),
    "theory_of_mind": (
        r"\b(?:they|opponent|he|she|[A-Z][a-z]+) (?:thinks?|believes?|knows?|expects?|wants?|will try)\b",
        r"\bbluff", r"\bpoint of view\b|\bperspective\b", r"\b(?:in his|in her|in their) mind\b",
        r"\b(?:didn't|did not|doesn't) (?:see|notice|know)\b", r"\bread (?:me|them)\b",
        r"\bthey (?:probably|likely|must) (?:have|want|hold)\b", r"\bthreatens?\b",
    ),
    "pattern_recognition": (
        r"\bpattern\b", r"\bclassic\b", r"\btextbook\b", r"\bstandard\b", r"\busual\b", r"\bsame (?:as|spot|picture|shape)\b",
        r"\blooks like\b", r"\brecogni[sz]e", r"\beach term\b|\bevery term\b", r"\btwo in a row\b",
    ),
}
_COMPILED = {p: [re.compile(r, re.IGNORECASE if p != "theory_of_mind" else 0) for r in rs] for p, rs in RULES.items()}
# theory of mind: the "[A-Z][a-z]+ thinks" pattern needs case; its keywords are lowercase in practice
_COMPILED["theory_of_mind"] = [re.compile(r) for r in RULES["theory_of_mind"]]

assert set(RULES) == set(PRIMITIVES), "every registered primitive needs rules"


def strip_answer(text: str) -> str:
    """The reasoning part of a trace: everything before the last `\\boxed{` (the answer is not reasoning)."""
    i = text.rfind("\\boxed{")
    return text if i < 0 else text[:i]


def rule_counts(text: str) -> dict[str, int]:
    """Number of rule matches per primitive in one trace."""
    body = strip_answer(text)
    return {p: sum(len(rx.findall(body)) for rx in rxs) for p, rxs in _COMPILED.items()}


DETECTORS: tuple[str, ...] = tuple(f"{p}/{kind}" for p in PRIMITIVES for kind in ("rules", "judge"))


def split_detector(name: str) -> tuple[str, str]:
    """'expected_value/rules' -> ('expected_value', 'rules'); ValueError naming the known ones otherwise."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: <primitive>/rules or <primitive>/judge with primitive "
                         f"one of {', '.join(PRIMITIVES)}")
    prim, kind = name.split("/")
    return prim, kind


def rates_per_100(flags: Sequence[bool]) -> tuple[float, float, float]:
    """(rate, lo, hi) per 100 traces, with a 95% Wilson interval."""
    from compose_rl.stats import wilson

    k, n = sum(bool(f) for f in flags), len(flags)
    lo, hi = wilson(k, n)
    return (100.0 * k / n if n else 0.0), 100.0 * lo, 100.0 * hi


_SELFPLAY_TURN = re.compile(r"^P\d+: (.*?)  => ", re.M)  # games/env.py transcript: the model's text, one-lined
_EVAL_TURN = re.compile(r"^P\d+ \(LM\): (.*) -> ", re.M)  # evals/games.py play_vs: repr of the model's text


def model_responses(text: str) -> list[str]:
    """The model's own responses in a logged transcript (one trace each), without prompts and rules
    text (which would match the rules: "pass: check, or fold"). A text with no turn markers is one
    trace as it is."""
    import ast

    turns = [t.replace("\\n", "\n") for t in _SELFPLAY_TURN.findall(text)]
    for r in _EVAL_TURN.findall(text):
        try:
            turns.append(str(ast.literal_eval(r)))
        except (ValueError, SyntaxError):
            turns.append(r)
    return turns if turns else [text]


def rule_detector_metrics(texts: Sequence[str], detectors: Sequence[str]) -> dict[str, float]:
    """`primitive/<p>/detector/rules/{rate,lo,hi,n}` (per 100 traces) for the listed rules detectors;
    the traces are the model responses in `texts` (`model_responses`)."""
    texts = [r for t in texts for r in model_responses(t)]
    counts = [rule_counts(t) for t in texts]
    out: dict[str, float] = {}
    for name in detectors:
        prim, kind = split_detector(name)
        if kind != "rules":
            raise ValueError(f"{name}: only rules detectors run here; the judge runs through judge.py")
        if not texts:
            continue
        rate, lo, hi = rates_per_100([c[prim] > 0 for c in counts])
        key = f"primitive/{prim}/detector/rules"
        out.update({f"{key}/rate": rate, f"{key}/lo": lo, f"{key}/hi": hi, f"{key}/n": float(len(texts))})
    return out
