"""The primitive register: the single source of truth for the reasoning primitives we track.

Each entry names a primitive, defines it in one line, and lists what measures it:
  * `probes`: verifiable probe suites (seeded generators in synthetic_tasks/probes/),
  * `ingame`: in-game decision probes (compose_rl/primitives/ingame.py),
  * `detectors`: trace detectors (compose_rl/primitives/detectors.py).
Every other module takes primitive names from here; tests check that every name listed here
exists in its module and that every probe/detector names a registered primitive.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Primitive:
    name: str
    """Identifier used in metric keys: `primitive/<name>/...`."""
    title: str
    """Readable name."""
    definition: str
    """One line: what the primitive is."""
    probes: tuple[str, ...]
    """Probe suites (synthetic_tasks.probes.SUITES) that isolate it."""
    ingame: tuple[str, ...]
    """In-game decision probes (compose_rl.primitives.ingame.PROBES) that isolate it."""
    detectors: tuple[str, ...]
    """Trace detectors (compose_rl.primitives.detectors.DETECTORS) that look for it in reasoning text."""


PRIMITIVES: dict[str, Primitive] = {p.name: p for p in (
    Primitive("expected_value", "expected-value calculation",
              "weigh each outcome's payoff by its probability and pick the action with the larger sum",
              probes=("ev_lottery",),
              ingame=("kuhn_call_with_king", "kuhn_fold_jack", "kuhn_king_bets_after_check",
                      "bargaining_accept_final_offer", "bargaining_refuse_worthless_offer"),
              detectors=("expected_value/rules", "expected_value/judge")),
    Primitive("case_analysis", "case-by-case analysis",
              "split on the possible values of an unknown, settle each case, and combine the cases",
              probes=("case_analysis",),
              ingame=("kuhn_queen_first_checks", "leduc_pair_never_folds"),
              detectors=("case_analysis/rules", "case_analysis/judge")),
    Primitive("backtracking", "backtracking",
              "abandon a partial attempt that fails and return to an earlier choice point to try another",
              probes=("backtracking",),
              ingame=(),
              detectors=("backtracking/rules", "backtracking/judge")),
    Primitive("subgoaling", "sub-goaling (decomposition)",
              "set an intermediate goal that makes the final goal reachable, and reach it first",
              probes=("subgoal_plan", "multiplication"),
              ingame=("ttt_fork",),
              detectors=("subgoaling/rules", "subgoaling/judge")),
    Primitive("verification", "verification",
              "check a candidate answer or step against the problem before committing to it",
              probes=("verify_strcomp",),
              ingame=(),
              detectors=("verification/rules", "verification/judge")),
    Primitive("deduction", "deduction (incl. backward chaining)",
              "derive what must be true from given premises, forward or backward from the goal",
              probes=("deduction_chain",),
              ingame=(),
              detectors=("deduction/rules", "deduction/judge")),
    Primitive("theory_of_mind", "theory of mind (opponent modelling)",
              "infer what another agent knows, believes, holds or will do, and act on it",
              probes=("false_belief",),
              ingame=("kuhn_queen_checks_behind", "ttt_block_in_one"),
              detectors=("theory_of_mind/rules", "theory_of_mind/judge")),
    Primitive("pattern_recognition", "pattern recognition",
              "recognise a known configuration and the response it calls for without search",
              probes=("sequence_pattern",),
              ingame=("ttt_win_in_one",),
              detectors=("pattern_recognition/rules", "pattern_recognition/judge")),
)}


def get_primitive(name: str) -> Primitive:
    if name not in PRIMITIVES:
        raise ValueError(f"unknown primitive {name!r}; known: {', '.join(PRIMITIVES)}")
    return PRIMITIVES[name]


def probe_suite_names() -> list[str]:
    return [s for p in PRIMITIVES.values() for s in p.probes]


def detector_names() -> list[str]:
    return [d for p in PRIMITIVES.values() for d in p.detectors]


def check_tracking(cfg, games: bool, eval_every: int) -> None:
    """Cross-checks of a recipe's `primitives` section; raises ValueError with one line saying the fix."""
    for key, given, known in (("probes", cfg.probes, probe_suite_names()),
                              ("detectors", cfg.detectors, detector_names())):
        bad = [x for x in given if x not in known]
        if bad:
            raise ValueError(f"primitives.{key}: unknown {bad}; known: {', '.join(known)}")
    judges = [d for d in cfg.detectors if d.endswith("/judge")]
    if judges:
        raise ValueError(f"primitives.detectors: {judges[0]} needs a judge model; list <primitive>/rules here and run "
                         "`compose-rl primitives calibrate --judge MODEL` for the judge")
    if cfg.ingame and not games:
        raise ValueError("primitives.ingame: in-game probes need `games`; set ingame: false for the string task")
    if not (cfg.probes or cfg.ingame or cfg.detectors):
        raise ValueError("primitives: list probes or detectors, or set ingame: true (or remove the section)")
    if cfg.every:
        if not eval_every:
            raise ValueError("primitives.every: tracking runs inside the in-RL evaluation; set rl.eval_every too")
        if cfg.every % eval_every:
            raise ValueError(f"primitives.every: must be a multiple of rl.eval_every ({eval_every})")
