"""The in-game decision probe table: game states whose correct action is known exactly and that isolate
one primitive (the register's `ingame` names point here).

A probe is a list of instances; an instance is a state of a shipped game (built by replaying an
action sequence from the root), the player to act, and the set of correct actions. Why each label is
right is a claim (`CLAIMS`) that `compose_rl.evals.ingame_probes.verify_probe` checks against OpenSpiel
in the tests; the scoring (the policy's exact probability of the correct actions) lives there too.

Kuhn Q facing a bet (fold) is NOT a probe: against the Nash policy folding and calling Q are
indifferent (values -1.000 vs -1.002 for player 1; the equilibrium mixes there), so no label is right.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from compose_rl.primitives.register import PRIMITIVES

CLAIMS = ("dominant", "weakly_dominant", "best_response_nash", "no_worse_than_floor", "immediate_win",
          "only_non_losing", "fork")

Step = int | str  # an action id (chance outcomes too) or a legal action's name at that point


@dataclass(frozen=True)
class Instance:
    history: tuple[Step, ...]
    """Action sequence from the root: chance outcomes as ids, player moves as ids or names."""
    correct: frozenset[str] | None = None
    """Names of the correct actions (give this or `wrong`)."""
    wrong: frozenset[str] | None = None
    """Names of the wrong actions; every other legal action is correct."""


@dataclass(frozen=True)
class InGameProbe:
    name: str
    game: str
    primitive: str
    why: str
    """One line: why the labelled action is correct."""
    claims: tuple[str, ...]
    """What `verify_probe` checks against OpenSpiel (see the module docstring)."""
    instances: tuple[Instance, ...]


def _inst(history, correct=None, wrong=None) -> Instance:
    return Instance(tuple(history), frozenset(correct) if correct else None, frozenset(wrong) if wrong else None)


# Kuhn chance outcomes: card ids J=0, Q=1, K=2, dealt to player 0 then player 1.
# Leduc card ids: rank = id // 2 (J, Q, K), suit = id % 2; deal P0, deal P1, round 1, public card, round 2.
# Bargaining: chance outcome 0 is instance 0: pool 1 book, 2 hats, 3 balls; values P0 (8, 1, 0), P1 (4, 0, 2).
_B_KEEP_ALL = "offer 1 2 3"
PROBES: dict[str, InGameProbe] = {p.name: p for p in (
    InGameProbe("kuhn_call_with_king", "kuhn_poker", "expected_value",
                "K beats any card at showdown: calling a bet wins +2, folding loses 1",
                ("dominant",),
                (_inst((0, 2, "bet"), {"bet"}), _inst((2, 1, "pass", "bet"), {"bet"}))),
    InGameProbe("kuhn_fold_jack", "kuhn_poker", "expected_value",
                "J loses to any card at showdown: calling a bet loses 2, folding loses 1",
                ("dominant",),
                (_inst((2, 0, "bet"), {"pass"}), _inst((0, 1, "pass", "bet"), {"pass"}))),
    InGameProbe("kuhn_king_bets_after_check", "kuhn_poker", "expected_value",
                "with K after a check a bet wins +1 if folded to and +2 if called; checking wins +1",
                ("weakly_dominant", "best_response_nash"),
                (_inst((1, 2, "pass"), {"bet"}),)),
    InGameProbe("kuhn_queen_first_checks", "kuhn_poker", "case_analysis",
                "Q first: if the opponent holds J a bet gains nothing over checking (J folds), if K it "
                "loses 2 instead of at most 1: check",
                ("best_response_nash",),
                (_inst((1, 0), {"pass"}),)),
    InGameProbe("kuhn_queen_checks_behind", "kuhn_poker", "theory_of_mind",
                "Q after a check: a bet is called only by K and folded by J, so it only loses more: check",
                ("best_response_nash",),
                (_inst((0, 1, "pass"), {"pass"}),)),
    InGameProbe("leduc_pair_never_folds", "leduc_poker", "case_analysis",
                "your card pairs the public card: the other card of that rank is on the board, so no "
                "opponent card wins; never fold a raise",
                ("dominant",),
                (_inst((2, 0, "call", "call", 3, "call", "raise"), {"call", "raise"}),
                 _inst((4, 2, "call", "call", 3, "raise"), {"call", "raise"}))),
    InGameProbe("ttt_win_in_one", "tic_tac_toe", "pattern_recognition",
                "two of your marks and an empty cell in a line: complete it and win",
                ("immediate_win",),
                (_inst(("a1", "a2", "b1", "b2"), {"c1"}), _inst(("a1", "b2", "c1", "b1", "a3"), {"b3"}))),
    InGameProbe("ttt_block_in_one", "tic_tac_toe", "theory_of_mind",
                "the opponent threatens to complete a line next move: take that cell",
                ("only_non_losing",),
                (_inst(("a1", "b2", "b1"), {"c1"}), _inst(("b2", "a1", "c3", "c1"), {"b1"}))),
    InGameProbe("ttt_fork", "tic_tac_toe", "subgoaling",
                "make two threats at once (a fork): the opponent can block only one",
                ("fork",),
                (_inst(("a1", "b1", "b2", "c3"), {"a2", "a3"}),)),
    InGameProbe("bargaining_accept_final_offer", "bargaining", "expected_value",
                "the last offer leaves you items of positive value; any counter-offer ends the game "
                "with no deal (0): agree",
                ("dominant",),
                (_inst((0,) + (_B_KEEP_ALL,) * 8 + ("offer 1 2 0",), {"agree"}),)),
    InGameProbe("bargaining_refuse_worthless_offer", "bargaining", "expected_value",
                "the offer leaves you nothing you value; agreeing scores 0 for sure, a counter-offer "
                "can only score as much or more",
                ("no_worse_than_floor",),
                (_inst((0, _B_KEEP_ALL), wrong={"agree"}),)),
)}


for _p in PROBES.values():  # a typo in the table above is a bug: fail at import
    if _p.primitive not in PRIMITIVES:
        raise ValueError(f"in-game probe {_p.name}: unknown primitive {_p.primitive!r}")
    bad = [c for c in _p.claims if c not in CLAIMS]
    if bad:
        raise ValueError(f"in-game probe {_p.name}: unknown claims {bad}")


def probes_for(games: Sequence[str] | None = None, names: Sequence[str] | None = None) -> list[InGameProbe]:
    """Probes of the given games (all when None), optionally only the named ones."""
    from games import GAMES

    for g in games or ():
        if g not in GAMES:
            raise ValueError(f"unknown game {g!r}; known games: {', '.join(GAMES)}")
    for n in names or ():
        if n not in PROBES:
            raise ValueError(f"unknown in-game probe {n!r}; known: {', '.join(PROBES)}")
    return [p for p in PROBES.values()
            if (games is None or p.game in games) and (names is None or p.name in names)]
