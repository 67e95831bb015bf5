"""The experimental policy kinds (compose_rl/kinds.py's contract), registered with the core on import.

    latent     (Gap C): the policy thinks in a latent loop (latent_loop.py); its own SFT and RL steps
    recurrent  (Gap C, issue 11): prelude -> core x r -> coda (recurrent_depth.py); the main learner
               trains the looped module through its log-prob hook; depth/exit/probe evals and a
               depth/FLOPs table in the report
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from compose_rl.kinds import PlainKind, register


class LatentKind(PlainKind):
    name = "latent"

    def __init__(self, recipe, policy, precision) -> None:
        from compose_rl.experimental.latent_loop import LatentLoop, LatentLoopEngine

        self.recipe, self.policy, self.precision = recipe, policy, precision
        self.loop = LatentLoop(policy.model, recipe.latent.steps, recipe.latent.backprop_steps)
        self.trainable = self.loop
        self.engine, self.sync = LatentLoopEngine(self.loop, policy.tokenizer, recipe.rollout.batch_size), (lambda: None)

    def sft(self, pipe, pairs, label: str) -> dict:
        from compose_rl.experimental.trainer import latent_sft

        r = pipe.recipe
        return latent_sft(self.loop, self.policy, pairs, r.sft, pipe.run, label, r.seed, r.latent.warmup_fraction)

    def rl(self, pipe, collector, hooks, label: str, partial) -> dict:
        from compose_rl.experimental.trainer import run_latent_rl

        return run_latent_rl(self.loop, self.policy, self.engine, collector, pipe.recipe.rl, pipe.run, label,
                             evaluate=hooks.evaluate, replay=hooks.replay, resume=partial)


class RecurrentKind(PlainKind):
    name = "recurrent"

    def __init__(self, recipe, policy, precision) -> None:
        from compose_rl.experimental.recurrent_train import build_looped

        self.recipe, self.policy, self.precision = recipe, policy, precision
        self.loop, self.engine = build_looped(policy, recipe.recurrent, recipe.rollout.batch_size)
        self.trainable = self.loop
        self.sync = lambda: None

    @property
    def scorer(self):
        """The looped module behind the policy's tokenizer and prompt."""
        return replace(self.policy, model=self.loop)

    def save_best(self, path) -> None:
        """The policy as a Hugging Face folder + the looped module's own state in loop_state.pt."""
        self.policy.save(path)
        torch.save({"model": self.loop.state_dict()}, Path(path) / "loop_state.pt")

    def sft(self, pipe, pairs, label: str) -> dict:
        from compose_rl.experimental.recurrent_train import looped_sft

        r = pipe.recipe
        return looped_sft(self.loop, self.policy, pairs, r.sft, pipe.run, label, r.seed)

    def wire_rl(self, pipe, collector, hooks):
        """The main learner trains the looped module through its log-prob hook."""
        from compose_rl.experimental.recurrent_train import wire_rl

        return wire_rl(self.loop, self.engine, collector, hooks, self.policy, pipe.recipe.seed)

    def extra_evals(self, pipe, label: str, metrics: dict) -> dict:
        """Depth scaling, exit rules and loop probes (recurrent_train.recurrent_eval)."""
        from compose_rl.experimental.recurrent_train import recurrent_eval

        view = SimpleNamespace(loop=self.loop, policy=self.policy, engine=self.engine, scorer=self.scorer,
                               domains=pipe.domains, recipe=pipe.recipe, run=pipe.run,
                               max_new_tokens=pipe.max_new_tokens)
        return recurrent_eval(view, label, metrics)

    @classmethod
    def report_section(cls, run, rows: list[dict]) -> list[str]:
        from compose_rl.experimental.recurrent_report import depth_section

        return depth_section(rows)


register("latent", LatentKind)
register("recurrent", RecurrentKind)
