"""Verifiable probe suites, at least one per reasoning primitive (compose_rl/primitives/register.py).

Each suite is a seeded generator with difficulty levels, English prompts, a strict `\\boxed{}`
parser, an exact checker, a computed shortcut floor and disjoint train/eval splits
(synthetic_tasks/probes/common.py). `SUITES` maps a suite's name to its instance; `get_suite` raises a
one-line error for an unknown name.
"""
from __future__ import annotations

from synthetic_tasks.probes.backtracking import Countdown
from synthetic_tasks.probes.case_analysis import CaseAnalysis
from synthetic_tasks.probes.common import ProbeItem, Suite
from synthetic_tasks.probes.deduction_chain import DeductionChain
from synthetic_tasks.probes.ev_lottery import EVLottery
from synthetic_tasks.probes.false_belief import FalseBelief
from synthetic_tasks.probes.multiplication import Multiplication
from synthetic_tasks.probes.sequence_pattern import SequencePattern
from synthetic_tasks.probes.subgoal_plan import SubgoalPlan
from synthetic_tasks.probes.verify_strcomp import VerifyStrComp

SUITES: dict[str, Suite] = {s.name: s for s in (
    EVLottery(), CaseAnalysis(), Countdown(), SubgoalPlan(), VerifyStrComp(), DeductionChain(), FalseBelief(),
    SequencePattern(), Multiplication(),
)}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown probe suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES[name]


__all__ = ["SUITES", "ProbeItem", "Suite", "get_suite"]
