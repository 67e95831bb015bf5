"""The recipe: a typed schema, YAML loading, `key.sub=value` overrides, and its checks.

A recipe is `stages` (an ordered list of `sft`, `rl`, `eval`) plus the sections they read:
`model`, `task` (string composition) or `games` (self-play), `rollout`, `ray`, `sft`, `rl`, `eval`.
Every field has a docstring; unknown keys are errors. `load_recipe` raises `RecipeError` whose
message is one line naming the YAML path and what is allowed.

Bad input stops here, before anything is written: types are strict (`true` is no integer, "3" no
number, NaN/inf no float), every count has bounds stated in its docstring, the file must be UTF-8,
at most MAX_BYTES and nested at most MAX_DEPTH (overrides too), and `name` is a safe folder name.
`check_environment` adds the checks that read this machine's files (model folder, chat template,
optional packages) without loading weights; `validate` and `recipe` both run it.

    schema.py       the sections and Recipe (types, bounds, docstrings); Recipe._cross_checks calls each
                    section owner's checks: domains/strcomp.py, domains/games.py, rollout/recipe_checks.py,
                    kinds.py (experimental kinds check their own section), primitives/register.py
    loading.py      YAML, overrides, depth limits, one-line errors; dump_recipe
    environment.py  check_environment: this machine's files, packages and memory (no weights)
    errors.py       RecipeError
Every name other code imports is re-exported here (`from compose_rl.recipe import X`).
"""
from compose_rl.recipe.environment import _check_placement, _check_plan, check_environment
from compose_rl.recipe.errors import RecipeError
from compose_rl.recipe.loading import (KEY_PART, MAX_BYTES, MAX_DEPTH, _check_depth, _format_error, _parse_yaml,
                                       _RecipeLoader, _section_at, apply_override, dump_recipe, load_recipe,
                                       read_recipe_text, recipe_from_dict)
from compose_rl.recipe.schema import (RUN_NAME, STAGES, AblateCfg, CheckpointCfg, EvalCfg, GameMixCfg, GamesCfg,
                                      InvalidCfg, LatentCfg, LoggingCfg, LoraCfg, MmdCfg, ModelCfg, PrimitivesCfg,
                                      RayCfg, Recipe, RecurrentCfg, RlCfg, RlPhaseCfg, RolloutCfg, RuntimeCfg, Section,
                                      Seed, SftCfg, TaskCfg, TinyCfg, VllmCfg)

__all__ = ["KEY_PART", "MAX_BYTES", "MAX_DEPTH", "RUN_NAME", "STAGES", "AblateCfg", "CheckpointCfg", "EvalCfg",
           "GameMixCfg", "GamesCfg", "InvalidCfg", "LatentCfg", "LoggingCfg", "LoraCfg", "MmdCfg", "ModelCfg",
           "PrimitivesCfg", "RayCfg", "Recipe", "RecipeError", "RecurrentCfg", "RlCfg", "RlPhaseCfg", "RolloutCfg",
           "RuntimeCfg", "Section", "Seed", "SftCfg", "TaskCfg", "TinyCfg", "VllmCfg", "_RecipeLoader", "_check_depth",
           "_check_placement", "_check_plan", "_format_error", "_parse_yaml", "_section_at", "apply_override", "check_environment",
           "dump_recipe", "load_recipe", "read_recipe_text", "recipe_from_dict"]
