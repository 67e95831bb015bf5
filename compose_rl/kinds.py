"""Policy kinds: what the pipeline trains and how (ARCHITECTURE.md, "Contracts": Policy kind).

A kind is built from the recipe and the loaded policy, and provides
  * the trainable module (`trainable`: what training updates and checkpoints hold),
  * the rollout engine behind it and its weight sync (`engine`, `sync`),
  * the policy the exact evaluations score (`scorer`) and a folder for a best checkpoint (`save_best`),
  * its SFT step (`sft`) and its RL stage (`rl`: the main learner, or the kind's own),
  * extra evals after the domains' (`extra_evals`) and its report section (`report_section`, read from
    a run directory's files).

`plain` (the model itself) lives here. The kinds beside the core (latent loop, looped core) live in
compose_rl/experimental/kinds.py and register themselves on import; `kind_of(recipe)` imports that
module by name the first time a recipe selects one, so the core never imports experimental/ (the
import-linter contract in pyproject.toml). A kind is selected by the recipe section of its name.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol


class PolicyKind(Protocol):
    name: str
    trainable: Any
    engine: Any
    sync: Any

    @property
    def scorer(self): ...

    def save_best(self, path) -> None: ...

    def sft(self, pipe, pairs: list[tuple[str, str]], label: str) -> dict: ...

    @staticmethod
    def check_recipe(recipe) -> None: ...

    def rl(self, pipe, collector, hooks, label: str, partial) -> dict: ...

    def extra_evals(self, pipe, label: str, metrics: dict) -> dict: ...

    @classmethod
    def report_section(cls, run, rows: list[dict]) -> list[str]: ...


class PlainKind:
    """The model itself: the recipe's engine (hf, vLLM, Ray workers), TRL SFT, rl/learner.run_rl."""

    name = "plain"

    @staticmethod
    def check_recipe(recipe) -> None:
        """The kind's checks across a recipe (ValueError = bad recipe); the plain kind has none."""

    def __init__(self, recipe, policy, precision) -> None:
        from compose_rl.rollout.factory import make_engine

        self.recipe, self.policy, self.precision = recipe, policy, precision
        self.trainable = policy.model
        self.engine, self.sync = make_engine(recipe, policy)

    @property
    def scorer(self):
        return self.policy

    def save_best(self, path) -> None:
        self.policy.save(path)

    def sft(self, pipe, pairs: list[tuple[str, str]], label: str) -> dict:
        from compose_rl.sft.stage import run_sft

        r = pipe.recipe
        return run_sft(self.policy, pairs, r.sft, pipe.run, label, r.seed,
                       gradient_checkpointing=pipe.checkpointing, dtype=self.precision.dtype)

    def wire_rl(self, pipe, collector, hooks):
        """(the policy the learner trains, the collector, the hooks): the kind's plumbing into run_rl."""
        return self.policy, collector, hooks

    def rl(self, pipe, collector, hooks, label: str, partial) -> dict:
        from compose_rl.rl.learner import run_rl

        r = pipe.recipe
        rollouts = None
        policy, collector, hooks = self.wire_rl(pipe, collector, hooks)
        if r.rollout.mode == "async":  # the Ray workers generate ahead while the learner trains
            from compose_rl.rollout.async_rollouts import AsyncRollouts, PromptFormat

            rollouts = AsyncRollouts(self.engine, collector, r.rollout.max_lag, PromptFormat.of(self.policy),
                                     steps=r.rl.steps)
        return run_rl(policy, self.engine, collector, r.rl, pipe.run, label, r.seed, pipe.max_new_tokens,
                      hooks=hooks, resume=partial, sync=self.sync, max_lag=r.rollout.max_lag,
                      temperature=r.rollout.temperature, rollouts=rollouts, is_trunc=r.rollout.is_trunc,
                      legal_exact=r.games is None or r.games.answer == "boxed",
                      dtype=self.precision.dtype, correct_mismatch=self.precision.mismatch_correction)

    def extra_evals(self, pipe, label: str, metrics: dict) -> dict:
        return {}

    @classmethod
    def report_section(cls, run, rows: list[dict]) -> list[str]:
        return []


_KINDS: dict[str, type] = {"plain": PlainKind}
# kinds beside the core, by recipe section: the module that registers them, imported by name on first use
BESIDE = {"latent": "compose_rl.experimental.kinds", "recurrent": "compose_rl.experimental.kinds"}


def register(name: str, cls: type) -> None:
    """Make policy kind `name` (selected by the recipe section of that name) available to the pipeline."""
    _KINDS[name] = cls


def kind_name(sections) -> str:
    """The kind a recipe selects: the first of BESIDE's sections it sets, else plain. `sections`: a Recipe,
    or the dict of a run's recipe.resolved.yaml (the report reads the file)."""
    get = sections.get if isinstance(sections, dict) else (lambda k: getattr(sections, k, None))
    return next((n for n in BESIDE if get(n) is not None), "plain")


def kind_class(name: str) -> type:
    if name not in _KINDS and name in BESIDE:
        importlib.import_module(BESIDE[name])
    return _KINDS[name]


def kind_of(recipe) -> type:
    """The policy kind class of `recipe` (call it with (recipe, policy, precision) to build it)."""
    return kind_class(kind_name(recipe))


def check_recipe(recipe) -> None:
    """Each kind whose section the recipe sets checks it (recipe/schema.py; in BESIDE's order)."""
    for name in BESIDE:
        if getattr(recipe, name, None) is not None:
            kind_class(name).check_recipe(recipe)


def report_section(run, rows: list[dict]) -> list[str]:
    """The report section of the kind a run directory's recipe.resolved.yaml selects ([] for plain)."""
    import yaml

    p = Path(run.path) / "recipe.resolved.yaml"
    try:
        data = yaml.safe_load(p.read_text()) if p.exists() else {}
    except yaml.YAMLError:
        return []
    name = kind_name(data if isinstance(data, dict) else {})
    return kind_class(name).report_section(run, rows) if name != "plain" else []
