"""Primitive tracking for the pipeline: probe suites, in-game decision probes, trace detectors.

`track_primitives` is what the pipeline calls at each eval stage and at RL tracking points; every
key it returns starts with `primitive/<name>/`.
"""
from __future__ import annotations

from typing import Any


def recipe_game_names(recipe) -> list[str]:
    if recipe.games is None:
        return []
    return [g.name for g in recipe.games.train] + [g for g in recipe.games.held_out]


def track_primitives(recipe, policy: Any, engine: Any = None, step: int | None = None) -> dict[str, float]:
    """Primitive metrics for the recipe's `primitives` section (empty when it is off).

    `step`: the RL step of an in-RL evaluation (None at an eval stage); with `primitives.every` set,
    only steps where (step + 1) is a multiple of it are tracked.
    """
    cfg = recipe.primitives
    if cfg is None:
        return {}
    if step is not None and cfg.every and (step + 1) % cfg.every:
        return {}
    out: dict[str, float] = {}
    if cfg.ingame:
        from compose_rl.evals.ingame_probes import ingame_probe_metrics, probes_for

        games = sorted({g for g in recipe_game_names(recipe) if probes_for([g])})
        if games:
            out.update(ingame_probe_metrics(policy, games))
    return out
