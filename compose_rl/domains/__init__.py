"""Domains: what a recipe trains or evaluates on (contract in domains/base.py).

`training_domains(recipe)` gives the domains a recipe trains on (the string task, the game mixture,
or both); `suite_domains(name, ...)` the named evaluation suites of `compose-rl transfer`.
"""
from __future__ import annotations

from compose_rl.domains.base import Column, Domain, DomainBase, DomainContext, MixedCollector

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


def domain_classes() -> list[type]:
    """Every domain kind, for what is read from a recipe alone (prompt rewrites, smoke budgets)."""
    from compose_rl.domains.games import GameDomain
    from compose_rl.domains.probes import InGameProbeDomain, ProbeDomain
    from compose_rl.domains.strcomp import StrCompDomain

    return [StrCompDomain, GameDomain, ProbeDomain, InGameProbeDomain]


def prompt_rewrites(recipe) -> tuple[tuple[str, str], ...]:
    """The policy's prompt rewrites for `recipe` (Policy.rewrites): each domain's, in order."""
    return tuple(rw for cls in domain_classes() for rw in cls.prompt_rewrites(recipe))


def smoke_budgets(data: dict) -> None:
    """`--smoke`: every domain shrinks its own budgets in the recipe dict `data` (in place)."""
    for cls in domain_classes():
        cls.smoke_budgets(data)


def trained_groups(recipe) -> list[str]:
    """Column groups of the transfer matrix a recipe trained on: strcomp, and/or each training game."""
    return [g for cls in domain_classes() for g in cls.trained_groups(recipe)]


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


__all__ = ["ALL_GAMES", "SUITES", "Column", "Domain", "DomainBase", "DomainContext", "MixedCollector",
           "domain_classes", "prompt_rewrites", "smoke_budgets", "suite_domains", "trained_groups", "training_domains"]
