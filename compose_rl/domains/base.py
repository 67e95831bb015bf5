"""The Domain contract: what a recipe trains or evaluates on (ARCHITECTURE.md, "Contracts").

A domain (the string task, a game mixture, a probe suite) provides
  * stage-1 examples (`sft_pairs`) and the label policy's own score where it has one (`label_baseline`),
  * a rollout collector for RL (`collector`, plus its in-RL tracking and checkpoint state),
  * the mastery gate's skill accuracies (`gate_skills`),
  * its eval suite (`evaluate`) and its shortcut/chance floors (`floors`),
  * per-item scores for the transfer matrix (`transfer_columns`, compose_rl/evals/transfer.py scores them),
  * its recipe checks (`check_recipe`), what it adds to the policy's prompts (`prompt_rewrites`), its
    transfer-matrix groups (`trained_groups`) and its smoke budgets (`smoke_budgets`), all read from the
    recipe alone (validation, a transfer or a plan builds no domain).
Its report section lives in compose_rl/report/<domain>.py (the report reads a run directory's files,
with no domain object). A domain reads the run through a `DomainContext`, never the whole pipeline.
The pipeline loops over a list of domains and never asks which kind it holds. Several training
domains are mixed in RL by `MixedCollector`: each contributes its own batch to every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from compose_rl.types import Column  # noqa: F401 (domains return it; it lives with the other typed records)
from compose_rl.types import SamplingParams


@dataclass(frozen=True)
class DomainContext:
    """What a domain reads of a run, built by the pipeline for each call (compose_rl/pipeline.py `ctx`)."""

    recipe: Any
    """The typed Recipe: its rl, sft, eval, rollout, seed and the domain's own section."""
    policy: Any
    """The trained policy (tokenizer, format_prompt, model)."""
    engine: Any
    """The rollout engine behind the policy (generate, load_weights)."""
    scorer: Any
    """The policy the exact evaluations score (the policy kind's module behind the policy's prompt)."""
    run: Any
    """The run directory (write_json, log, path)."""
    sampling: SamplingParams
    """Rollout sampling: rollout.temperature and top_p."""
    eval_sampling: SamplingParams
    """Evaluation sampling: rollout.eval_temperature, top_p 1."""
    save_best: Callable[[Path], None]
    """Writes the policy (and the kind's extra state) as a folder: a domain's best checkpoint."""

    @property
    def max_new_tokens(self) -> int:
        return self.recipe.rollout.max_new_tokens


class Domain(Protocol):
    name: str
    """Column group in the transfer matrix and label of a checkpoint trained on it."""

    def sft_pairs(self, n: int) -> list[tuple[str, str]]:
        """n stage-1 (prompt, target) pairs."""

    def label_baseline(self, ctx: DomainContext) -> dict:
        """The stage-1 label policy's own score (exact, no model), logged; {} when the labels are the task's answers."""

    def gate_skills(self, ctx: DomainContext) -> dict[str, float]:
        """Held-out accuracy per skill for the mastery gate."""

    def collector(self, ctx: DomainContext, label: str):
        """The RL rollout collector of this domain."""

    def track(self, ctx: DomainContext, step: int, label: str) -> dict:
        """In-RL evaluation (every rl.eval_every steps); keys eval/..."""

    def on_step_end(self, ctx: DomainContext, step: int) -> None:
        """After each learner step (e.g. snapshot the opponent pool)."""

    def replay(self, ctx: DomainContext, step: int) -> list:
        """Supervised (prompt ids, target ids) pairs mixed into this RL step; [] = none."""

    def evaluate(self, ctx: DomainContext, label: str) -> tuple[dict, list[str]]:
        """The eval suite: flat metrics and a few readable samples; writes eval/<label>-*.json."""

    def floors(self) -> dict[str, float]:
        """Chance/shortcut floor of each headline eval metric."""

    def extra_state(self) -> dict:
        """What checkpoints must keep beyond the weights (average policy, best step)."""

    def load_extra_state(self, state: dict) -> None: ...

    def transfer_columns(self, policy, engine, items: int, seed: int, max_new_tokens: int,
                         temperature: float = 1.0) -> list[Column]:
        """Per-item scores of a policy on this domain, for the transfer matrix (`temperature`: sampled play)."""

    @staticmethod
    def check_recipe(recipe) -> None:
        """This domain's checks across a recipe (compose_rl/recipe/schema.py calls them); ValueError = bad recipe."""

    @classmethod
    def prompt_rewrites(cls, recipe) -> tuple[tuple[str, str], ...]:
        """(old, new) replacements the policy applies to every prompt of this domain (Policy.rewrites)."""

    @classmethod
    def trained_groups(cls, recipe) -> list[str]:
        """Transfer-matrix column groups of this kind that `recipe` trains on ([] = none)."""

    @classmethod
    def smoke_budgets(cls, data: dict) -> None:
        """`--smoke`: shrink this domain's budgets in a recipe dict, in place."""


class DomainBase:
    """Defaults for the optional parts of the contract (one level of inheritance, no more)."""

    name = "domain"

    def label_baseline(self, ctx: DomainContext) -> dict:
        return {}

    def track(self, ctx: DomainContext, step: int, label: str) -> dict:
        return {}

    def on_step_end(self, ctx: DomainContext, step: int) -> None:
        return None

    def replay(self, ctx: DomainContext, step: int) -> list:
        return []

    def floors(self) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        return None

    @staticmethod
    def check_recipe(recipe) -> None:
        return None

    @classmethod
    def prompt_rewrites(cls, recipe) -> tuple[tuple[str, str], ...]:
        return ()

    @classmethod
    def trained_groups(cls, recipe) -> list[str]:
        return []

    @classmethod
    def smoke_budgets(cls, data: dict) -> None:
        return None


@dataclass
class MixedCollector:
    """Several domains' collectors in one RL step: every collector fills its own share of the batch.

    Group ids and game-instance ids are offset so that samples of different domains never share a
    group (group-normalized advantages stay per prompt) or an instance (RAE). A one-turn task sample
    (no game instance, episode -1) becomes its own instance of the pseudo-game named after its
    domain, so `rl.advantage: rae` gives it an EMA baseline of that domain's reward, one per domain,
    as SPIRAL's role-conditioned baselines do per game and role."""

    parts: list[tuple[str, Any]]

    def collect(self, engine, step: int):
        samples, metrics, texts = [], {}, []
        group_off = episode_off = 0
        for name, col in self.parts:
            ss, ms, ts = col.collect(engine, step)
            top = max((s.episode for s in ss), default=-1) + 1
            for s in ss:
                if s.episode < 0:  # each answer its own instance: RAE needs one return per instance
                    s.game, s.episode, top = s.game or name, top, top + 1
                s.group += group_off
                s.episode += episode_off
            if ss:
                group_off = max(s.group for s in ss) + 1
                episode_off = max(s.episode for s in ss) + 1
            samples += ss
            for k, v in ms.items():  # the same key from two domains is kept per domain
                metrics[k if k not in metrics else f"{k}/{name}"] = v
            metrics[f"rollout/share/{name}"] = float(len(ss))
            texts += [f"[{name}] {t}" for t in ts]
        n = max(len(samples), 1)
        for name, _ in self.parts:
            metrics[f"rollout/share/{name}"] /= n
        return samples, metrics, texts
