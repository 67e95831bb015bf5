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

from compose_rl.kinds import PlainKind, register


class LatentKind(PlainKind):
    name = "latent"

    @staticmethod
    def check_recipe(recipe) -> None:
        """The `latent` section's checks across the recipe (recipe/schema.py via kinds.check_recipe)."""
        lt = recipe.latent
        if recipe.task is None or recipe.games is not None:
            raise ValueError("latent: the latent-loop trainer runs the string task only; remove `latent` or use `task` alone")
        if recipe.rollout.engine not in ("hf", "auto") or recipe.rollout.workers:  # auto -> hf here
            raise ValueError("latent: the latent loop generates in the learner's process; set rollout.engine: hf, rollout.workers: 0")
        if recipe.model.lora is not None:
            raise ValueError("latent: LoRA is not supported with the latent loop; remove model.lora")
        if lt.backprop_steps > lt.steps:
            raise ValueError(f"latent.backprop_steps: at most latent.steps ({lt.steps}); 0 = through every step")
        if recipe.rollout.temperature != 1.0:
            raise ValueError(f"rollout.temperature: the latent-loop trainer scores answers at temperature 1, so it "
                             f"must sample at 1.0 too (got {recipe.rollout.temperature}); set rollout.temperature: 1.0")
        for key, bad in (("rl.kl_coef", recipe.rl.kl_coef > 0), ("rl.entropy_coef", recipe.rl.entropy_coef > 0),
                         ("rl.ppo_epochs", recipe.rl.ppo_epochs > 1), ("rl.advantage", recipe.rl.advantage in ("rae", "state")),
                         ("rl.algorithm", recipe.rl.algorithm == "mmd")):
            if bad:
                raise ValueError(f"{key}: not supported by the latent-loop trainer (one on-policy update per batch, "
                                 "group or batch-mean advantages, no KL/entropy terms); use the default")
        if recipe.model.dtype == "bfloat16":
            raise ValueError("model.dtype: the experimental latent/recurrent trainers run in float32 only; "
                             "set model.dtype: auto or float32")

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

    @staticmethod
    def check_recipe(recipe) -> None:
        """The `recurrent` section's checks across the recipe (recipe/schema.py via kinds.check_recipe)."""
        if recipe.model.dtype == "bfloat16":
            raise ValueError("model.dtype: the experimental latent/recurrent trainers run in float32 only; "
                             "set model.dtype: auto or float32")
        rc, rl = recipe.recurrent, recipe.rl
        if recipe.latent is not None:
            raise ValueError("recurrent: give either `latent` (the Coconut loop) or `recurrent`, not both")
        if recipe.games is not None and recipe.games.opponent == "pool":
            raise ValueError("recurrent: games.opponent: pool snapshots the plain model, not the loop; use opponent: self "
                             "or a fixed bot")
        if recipe.rollout.engine not in ("hf", "auto") or recipe.rollout.workers or recipe.rollout.mode != "sync":  # auto -> hf
            raise ValueError("recurrent: the looped policy generates in the learner's process; set rollout.engine: hf, "
                             "rollout.workers: 0, rollout.mode: sync")
        if recipe.model.lora is not None:
            raise ValueError("recurrent: LoRA is not supported with the looped policy; remove model.lora")
        n = rc.prelude + rc.core + rc.coda
        if recipe.model.name == "tiny" and n != recipe.model.tiny.num_layers:
            raise ValueError(f"recurrent: prelude + core + coda = {n} but model.tiny.num_layers = "
                             f"{recipe.model.tiny.num_layers}; make them equal")
        deepest = rc.depth if rc.depth_sampling == "fixed" else rc.max_depth
        if rc.backprop_steps > deepest:
            raise ValueError(f"recurrent.backprop_steps: at most the deepest training depth ({deepest}); 0 = all iterations")
        if rc.depth_sampling == "poisson_lognormal" and rc.max_depth < rc.depth:
            raise ValueError(f"recurrent.max_depth: at least depth ({rc.depth}) so the sampled depth can reach its mean")
        if rc.credit == "per_loop" and (rl.ppo_epochs > 1 or rc.sft_readout != "all"):
            raise ValueError("recurrent.credit: per_loop is RLTT's on-policy surrogate over every iteration's readout; "
                             "it needs rl.ppo_epochs: 1 and recurrent.sft_readout: all (readouts trained at every iteration)")
        if rc.halting == "head" and rc.sft_readout != "all":
            raise ValueError("recurrent.halting: the head is trained on every iteration's correctness; set recurrent.sft_readout: all")
        if rc.explore == "dropout" and rc.dropout == 0 or rc.explore == "noise" and rc.noise_std == 0:
            raise ValueError(f"recurrent.explore: {rc.explore} with a zero {'dropout' if rc.explore == 'dropout' else 'noise_std'} "
                             "is temperature-only; set it > 0 or use explore: temperature")
        for key, bad in (("rl.kl_coef", rl.kl_coef > 0), ("rl.entropy_coef", rl.entropy_coef > 0)):
            if bad:
                raise ValueError(f"{key}: not supported with the recurrent-depth policy (its hook scores the policy only); set it to 0")

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
        import torch

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
