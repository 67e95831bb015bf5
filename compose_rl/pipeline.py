"""Runs a recipe's stages in order, owns the run directory, resumes after a crash.

    stages: [eval, sft, eval, rl, eval]
      eval -> labelled "base", then "sft", then "rl" (the stage it follows)
      sft  -> TRL SFTTrainer on atomic skills, then the mastery gate (may stop the run)
      rl   -> rl/learner.py's loop on the training domains' collectors (domains/: string task, games, both)

Every stage's data, gate, collector and eval come from the recipe's domains (compose_rl/domains),
looped over without asking their kind; each reads the run through a DomainContext (`ctx`). The
trainable module, its engine, the SFT step, the RL stage and any extra evals come from the recipe's
policy kind (compose_rl/kinds.py: plain; experimental/kinds.py: latent, recurrent), never from flags.
Every finished training stage writes a checkpoint (and
stages/<label>/ for `compose-rl transfer`); progress.json lists finished stages. `--resume`
reloads the newest complete checkpoint and continues with the first unfinished stage (an RL stage
continues from its last step checkpoint).
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from compose_rl.recipe import Recipe, dump_recipe
from compose_rl.rl.learner import hms as _hms
from compose_rl.rundir import RunDir
from compose_rl.types import SamplingParams


class GateFailed(RuntimeError):
    """The mastery gate stopped the run (the message lists every skill)."""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stage_labels(stages: list[str]) -> list[str]:
    """Metrics label of each stage: training stages by kind (numbered if repeated), evals by what they follow."""
    counts = Counter(s for s in stages if s != "eval")
    seen: Counter = Counter()
    labels, last = [], "base"
    for s in stages:
        if s == "eval":
            labels.append(f"eval-{last}")
        else:
            seen[s] += 1
            last = s if counts[s] == 1 else f"{s}{seen[s]}"
            labels.append(last)
    return labels


@dataclass
class Pipeline:
    recipe: Recipe
    run: RunDir
    results: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # what the run directory keeps over a long run: checkpoint.keep, logging.samples_max_mb
        if self.run is not None:  # (a pipeline without a run directory only plans or times stages)
            self.run.keep = self.recipe.checkpoint.keep
            self.run.samples_max_bytes = int(self.recipe.logging.samples_max_mb * (1 << 20))

    # ---------------------------------------------------------------- building blocks
    def build(self) -> None:
        from compose_rl.models import LoraSpec, TinySpec, load_policy

        r = self.recipe
        # precision and threads, resolved from the recipe before any model exists (never a library default)
        from compose_rl.precision import apply_threads, resolve

        self.precision = resolve(r)
        apply_threads(self.precision.threads)
        self.run.write_json("precision.json", self.precision.as_dict())
        say(self.precision.line())
        torch.manual_seed(r.seed)
        random.seed(r.seed)
        m = r.model
        self.policy = load_policy(m.name, seed=r.seed, tiny=TinySpec(**m.tiny.model_dump()),
                                  lora=LoraSpec(**m.lora.model_dump()) if m.lora else None,
                                  chat_template=m.chat_template)
        from compose_rl.domains import prompt_rewrites

        rewrites = prompt_rewrites(r)  # each domain's (games: SPIRAL's reasoning prompt, the compact prompt)
        if rewrites:
            self.policy.rewrites = rewrites
        if self.precision.device == "cpu" and torch.version.cuda and not torch.cuda.is_available():
            say(f"note: torch {torch.__version__} is a CUDA {torch.version.cuda} build but no GPU is usable "
                "(driver too old?): training on the CPU; `compose-rl doctor` says more")
        if self.precision.device == "cuda":  # the learner (and the in-process engine) on its reserved GPU
            torch.cuda.set_device(r.runtime.learner_gpu)
            self.policy.model.to("cuda")
        from compose_rl.kinds import kind_of

        # the policy kind: the trainable module, its engine and sync (plain; experimental/kinds.py beside it)
        self.kind = kind_of(r)(r, self.policy, self.precision)
        self.engine, self.sync = self.kind.engine, self.kind.sync
        from compose_rl.domains import training_domains

        # what the recipe trains on: the string task, the game mixture, or both (domains/base.py)
        self.domains = training_domains(r)

    @property
    def trainable(self) -> torch.nn.Module:
        """What training updates and checkpoints hold: the model, or the kind's module (model + loop)."""
        return self.kind.trainable

    @property
    def scorer(self):
        """The policy the exact evaluations score (exploitability, in-game tables): the kind's module
        behind the policy's tokenizer and prompt."""
        return self.kind.scorer

    def save_best(self, path) -> None:
        """The policy as a Hugging Face folder (+ the kind's own state)."""
        self.kind.save_best(path)

    def ctx(self):
        """What the domains read of this run (domains/base.py DomainContext), built afresh for each call:
        a study may swap the recipe or the domains between stages."""
        from compose_rl.domains import DomainContext

        return DomainContext(recipe=self.recipe, policy=self.policy, engine=self.engine, scorer=self.scorer,
                             run=self.run, sampling=self.sampling(), eval_sampling=self.sampling(train=False),
                             save_best=self.save_best)

    @property
    def checkpointing(self) -> bool:
        """model.gradient_checkpointing as resolved: true/false as given, auto as the plan decided (precision.json)."""
        gc = self.recipe.model.gradient_checkpointing
        return self.precision.gradient_checkpointing if gc == "auto" else bool(gc)

    @property
    def max_new_tokens(self) -> int:
        return self.recipe.rollout.max_new_tokens

    def sampling(self, train: bool = True, n: int = 1, seed: int | None = None) -> SamplingParams:
        ro = self.recipe.rollout
        t = ro.temperature if train else ro.eval_temperature
        return SamplingParams(temperature=t, top_p=ro.top_p if train else 1.0, max_new_tokens=ro.max_new_tokens,
                              n=n, seed=seed)

    # ---------------------------------------------------------------- stages
    def run_all(self, resume: bool = False) -> dict:
        r = self.recipe
        labels = stage_labels(r.stages)
        done = set(self.run.progress()["done"]) if resume else set()
        ck = self.run.latest_checkpoint() if resume else None
        if ck is not None:
            tensors, meta = ck
            self.trainable.load_state_dict(tensors["model"])
            self.engine.load_weights(self.sync(), meta.get("version", 0))
            if meta.get("extra"):
                self._load_extra(meta["extra"])
            say(f"resume: loaded checkpoint {meta.get('stage')} step {meta.get('step')} from {self.run.path}")
        self._t_run, self._stage_s = time.perf_counter(), {}
        for i, (kind, label) in enumerate(zip(r.stages, labels)):
            if i in done:
                continue
            later, unknown = self.later_stages_s(i)
            say(f"== stage {i + 1}/{len(r.stages)}: {label} (run: {_hms(time.perf_counter() - self._t_run)} so far; "
                f"stages after this one: {_hms(later)}{f' + {unknown} not yet timed' if unknown else ''})")
            t_stage = time.perf_counter()
            if kind == "eval":
                self.results[label] = self.evaluate(label)
            elif kind == "sft":
                self.stage_sft(i, label)
            else:
                partial = ck if (ck is not None and ck[1].get("stage") == label and not ck[1].get("final")) else None
                self.stage_rl(i, label, partial)
            self._stage_s.setdefault(kind, []).append(time.perf_counter() - t_stage)
            self.run.mark_done(i, label)
        from compose_rl.report import write_report

        write_report(self.run)
        return self.results

    def later_stages_s(self, index: int) -> tuple[float, int]:
        """(seconds, count): the expected time of the stages after `index` whose kind already ran in
        this process (its mean duration so far), and how many later stages have no timing yet. It
        feeds the whole-run ETA of the stage lines and of the RL progress bar."""
        total, unknown = 0.0, 0
        for kind in self.recipe.stages[index + 1:]:
            seen = getattr(self, "_stage_s", {}).get(kind)
            if seen:
                total += sum(seen) / len(seen)
            else:
                unknown += 1
        return total, unknown

    def _final_checkpoint(self, label: str, step: int) -> None:
        meta = {"stage": label, "step": step, "final": True, "version": self.engine.policy_version,
                "extra": self._extra()}
        ck = self.run.save_checkpoint(f"{label}-final", {"model": self.trainable.state_dict()}, meta)
        keep_stage_weights(ck, self.run.path / "stages" / label, meta)

    # ---- sft
    def stage_sft(self, index: int, label: str) -> None:
        from compose_rl.sft.stage import mastery_gate

        r = self.recipe
        pairs = self.sft_pairs()
        for d in self.domains:  # the label policy's own score, where the labels are not the task's answers
            d.label_baseline(self.ctx())
        out = self.kind.sft(self, pairs, label)
        self.engine.load_weights(self.sync(), self.engine.policy_version + 1)
        skills = self.skill_accuracy()
        passed, message = mastery_gate(skills, r.sft.mastery)
        out.update({f"gate/{k}": v for k, v in skills.items()})
        out["gate/passed"] = float(passed)
        self.run.log(label, out["sft/steps"], out)
        self.run.write_json(f"eval/{label}-gate.json", {"passed": passed, "skills": skills, "threshold": r.sft.mastery})
        self._final_checkpoint(label, out["sft/steps"])
        say(message)
        if not passed and r.sft.gate == "enforce":
            # not marked done: `--resume RUN sft.gate=warn` (or more SFT) redoes this stage, never skips it
            raise GateFailed(message)

    def sft_pairs(self) -> list[tuple[str, str]]:
        """Stage-1 examples: sft.examples split evenly over the training domains, shuffled together."""
        n, k = self.recipe.sft.examples, len(self.domains)
        parts = [d.sft_pairs(n // k + (i < n % k)) for i, d in enumerate(self.domains)]
        if k == 1:
            return parts[0]
        pairs = [p for part in parts for p in part]
        random.Random(self.recipe.seed).shuffle(pairs)
        return pairs

    def skill_accuracy(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in self.domains:
            out.update(d.gate_skills(self.ctx()))
        return out

    # ---- rl
    def stage_rl(self, index: int, label: str, partial) -> None:
        from compose_rl.domains import MixedCollector
        from compose_rl.rl.learner import LearnerHooks

        r = self.recipe
        hooks = LearnerHooks(extra_state=self._extra, load_extra_state=self._load_extra,
                             later_stages_s=lambda: self.later_stages_s(index))
        cols = [(d.name, d.collector(self.ctx(), label)) for d in self.domains]
        # several training domains: each fills its share of every RL batch (domains/base.py)
        collector = cols[0][1] if len(cols) == 1 else MixedCollector(cols)
        if r.rl.replay_fraction > 0:
            hooks.replay = self._replay_fn()
        if r.rl.eval_every:
            hooks.evaluate = lambda step: self.track(step, label)
        hooks.on_step_end = lambda step: [d.on_step_end(self.ctx(), step) for d in self.domains]
        # the recipe's checkpointing state, whatever SFT (or a resumed checkpoint) left behind
        self.policy.set_gradient_checkpointing(self.checkpointing)
        last = self.kind.rl(self, collector, hooks, label, partial)
        self._final_checkpoint(label, r.rl.steps - 1)
        self.results[label] = last

    def _replay_fn(self):
        return lambda step: [pair for d in self.domains for pair in d.replay(self.ctx(), step)]

    def track(self, step: int, label: str) -> dict:
        """In-RL evaluation every rl.eval_every steps: each domain's tracking, then primitives."""
        out: dict = {}
        for d in self.domains:
            out.update(d.track(self.ctx(), step, label))
        from compose_rl.evals.probes import track_primitives  # primitive/<name>/... when the recipe asks

        out.update(track_primitives(self.recipe, self.scorer, self.engine, step=step,
                                    samples=self.run.path / "samples" / f"{label}.txt"))
        return out

    def _extra(self) -> dict:
        out: dict = {}
        for d in self.domains:
            out.update(d.extra_state())
        return out

    def _load_extra(self, extra: dict) -> None:
        for d in self.domains:
            d.load_extra_state(extra)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, label: str) -> dict:
        metrics, samples = {}, []
        for d in self.domains:
            m, texts = d.evaluate(self.ctx(), label)
            metrics.update(m)
            samples += texts
        from compose_rl.evals.probes import track_primitives  # primitive/<name>/... when the recipe asks

        metrics.update(track_primitives(self.recipe, self.scorer, self.engine, texts=samples))
        metrics.update(self.kind.extra_evals(self, label, metrics))  # e.g. depth scaling (recurrent kind)
        self.run.log(label, 0, metrics)
        self.run.write_samples(label, 0, samples)
        say(summarize(label, metrics))
        return metrics


def keep_stage_weights(checkpoint, folder, meta: dict) -> None:
    """stages/<label>/: the weights at the end of a training stage, for `compose-rl transfer`.
    checkpoints/ keeps every stage's `-final` checkpoint too (rundir.save_checkpoint); a hard link
    shares the checkpoint's file at no extra space and survives the checkpoint's removal (copy where links fail)."""
    import os
    import shutil
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "state.pt"
    if target.exists():
        target.unlink()
    try:
        os.link(Path(checkpoint) / "state.pt", target)
    except OSError:
        shutil.copyfile(Path(checkpoint) / "state.pt", target)
    (folder / "meta.json").write_text(json.dumps(meta, default=float))


def summarize(label: str, metrics: dict) -> str:
    keys = [k for k in metrics if any(x in k for x in ("acc_d", "floor_d", "exploitability", "history_tv", "/win", "mean_return"))]
    return f"[{label}] " + "  ".join(f"{k.split('/', 1)[1]}={metrics[k]:.3f}" for k in keys[:14])


def start_run(recipe: Recipe) -> Pipeline:
    run = RunDir.create(recipe.output, recipe.name, dump_recipe(recipe), tensorboard=recipe.logging.tensorboard)
    return Pipeline(recipe, run)
