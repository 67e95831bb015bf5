"""Loading a recipe the way every command does: a YAML file plus `key.sub=value` overrides."""
from __future__ import annotations


def load(path, overrides=()):
    """The typed Recipe of `path` with `overrides` applied (RecipeError, one line, on bad input)."""
    from compose_rl.recipe import load_recipe

    return load_recipe(path, list(overrides))
