"""Domains: what a recipe trains or evaluates on (contract in domains/base.py).

`training_domains(recipe)` gives the domains a recipe trains on (the string task, the game mixture,
or both); `suite_domains(name, ...)` the named evaluation suites of `compose-rl transfer`.
"""
from __future__ import annotations

from compose_rl.domains.base import Column, Domain, DomainBase, MixedCollector

ALL_GAMES = ("kuhn_poker", "leduc_poker", "tic_tac_toe", "liars_dice", "bargaining")
SUITES: dict[str, dict] = {
    # every evaluation domain of the issue-10 study
    "full": {"games": ALL_GAMES, "strcomp": (1, 2, 3), "probes": None, "ingame": ("kuhn_poker", "tic_tac_toe")},
    "games": {"games": ALL_GAMES, "ingame": ("kuhn_poker", "tic_tac_toe")},
    "strcomp": {"strcomp": (1, 2, 3)},
    "probes": {"probes": None},
    # a handful of cheap columns across the three kinds, for --smoke and tests
    "smoke": {"games": ("kuhn_poker", "tic_tac_toe"), "strcomp": (1, 2), "probes": ("multiplication",),
              "ingame": ("kuhn_poker",)},
}


def training_domains(recipe) -> list:
    """The domains `recipe` trains on, in a fixed order (string task first)."""
    out = []
    if recipe.task is not None:
        from compose_rl.domains.strcomp import StrCompDomain

        out.append(StrCompDomain(recipe.task, recipe.seed, recipe.sft.composite_fraction))
    if recipe.games is not None:
        from compose_rl.domains.games import GameDomain

        out.append(GameDomain(recipe.games, recipe.seed))
    return out


def suite_domains(name: str, seed: int = 0) -> list:
    """The evaluation domains of suite `name` (ValueError naming the known suites otherwise)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    spec = SUITES[name]
    out = []
    if "games" in spec:
        from compose_rl.domains.games import GameDomain

        out.append(GameDomain(None, seed, eval_names=list(spec["games"])))
    if "strcomp" in spec:
        from compose_rl.domains.strcomp import StrCompDomain

        out.append(StrCompDomain(None, seed, depths=spec["strcomp"]))
    if "probes" in spec:
        from compose_rl.domains.probes import ProbeDomain
        from synthetic_tasks.probes import SUITES as PROBE_SUITES

        out.append(ProbeDomain(list(spec["probes"] or PROBE_SUITES), seed))
    if "ingame" in spec:
        from compose_rl.domains.probes import InGameProbeDomain

        out.append(InGameProbeDomain(list(spec["ingame"])))
    return out


__all__ = ["ALL_GAMES", "SUITES", "Column", "Domain", "DomainBase", "MixedCollector", "suite_domains",
           "training_domains"]
