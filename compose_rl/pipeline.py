"""Runs a recipe's stages in order, owns the run directory, resumes after a crash.

    stages: [eval, sft, eval, rl, eval]
      eval -> labelled "base", then "sft", then "rl" (the stage it follows)
      sft  -> TRL SFTTrainer on atomic skills, then the mastery gate (may stop the run)
      rl   -> rl/learner.py's loop on a collector (string task or self-play)

Every finished training stage writes a checkpoint; progress.json lists finished stages. `--resume`
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

    # ---------------------------------------------------------------- building blocks
    def build(self) -> None:
        from compose_rl.models import LoraSpec, TinySpec, load_policy

        r = self.recipe
        torch.manual_seed(r.seed)
        random.seed(r.seed)
        m = r.model
        self.policy = load_policy(m.name, seed=r.seed, tiny=TinySpec(**m.tiny.model_dump()),
                                  lora=LoraSpec(**m.lora.model_dump()) if m.lora else None,
                                  chat_template=m.chat_template)
        if torch.cuda.is_available():  # the learner (and the in-process engine) on the GPU
            self.policy.model.to("cuda")
        if r.latent is not None:  # experimental (Gap C): the policy thinks in a latent loop
            from compose_rl.experimental.latent_loop import LatentLoop, LatentLoopEngine

            self.loop = LatentLoop(self.policy.model, r.latent.steps, r.latent.backprop_steps)
            self.engine, self.sync = LatentLoopEngine(self.loop, self.policy.tokenizer, r.rollout.batch_size), (lambda: None)
        elif r.recurrent is not None:  # experimental (Gap C, issue 11): prelude -> core x r -> coda
            from compose_rl.experimental.recurrent_train import build_looped

            self.loop, self.engine = build_looped(self.policy, r.recurrent, r.rollout.batch_size)
            self.sync = lambda: None
        else:
            self.engine, self.sync = make_engine(r, self.policy)
        if r.task is not None:
            from synthetic_tasks.strcomp import StrCompTask

            t = r.task
            self.task = StrCompTask(seed=r.seed, n_functions=t.n_functions, train_max_depth=t.train_max_depth,
                                    test_depths=tuple(t.test_depths), cot=t.cot,
                                    train_pair_fraction=t.train_pair_fraction,
                                    only=tuple(t.functions) if t.functions else None)
        else:
            from games import get_game

            self.mixture = [(get_game(g.name), g.weight) for g in r.games.train]
            self.held_out = [get_game(g) for g in r.games.held_out]
            from compose_rl.evals.games import AveragePolicy

            self.average = {g.name: AveragePolicy() for g, _ in self.mixture if g.name in EXACT_GAMES}
            self.best = {}

    @property
    def trainable(self) -> torch.nn.Module:
        """What training updates and checkpoints hold: the model, or the latent loop (model + bridge)."""
        return self.loop if (self.recipe.latent is not None or self.recipe.recurrent is not None) else self.policy.model

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
        self.run.save_checkpoint(f"{label}-final", {"model": self.trainable.state_dict()},
                                 {"stage": label, "step": step, "final": True, "version": self.engine.policy_version,
                                  "extra": self._extra()})

    # ---- sft
    def stage_sft(self, index: int, label: str) -> None:
        from compose_rl.sft.stage import mastery_gate, run_sft

        r = self.recipe
        pairs = self.sft_pairs()
        if r.games is not None:
            self.label_policy_baseline()
        if r.latent is not None:
            from compose_rl.experimental.trainer import latent_sft

            out = latent_sft(self.loop, self.policy, pairs, r.sft, self.run, label, r.seed, r.latent.warmup_fraction)
        elif r.recurrent is not None:
            from compose_rl.experimental.recurrent_train import looped_sft

            out = looped_sft(self.loop, self.policy, pairs, r.sft, self.run, label, r.seed)
        else:
            out = run_sft(self.policy, pairs, r.sft, self.run, label, r.seed,
                          gradient_checkpointing=r.model.gradient_checkpointing)
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
        r = self.recipe
        n = r.sft.examples
        if r.task is not None:
            n_comp = int(round(n * r.sft.composite_fraction))
            n_atom = n - n_comp
            # half the atomics show the definition (learn the function), half only the name (recall it
            # by name, which is all stage-2 prompts give)
            atom = self.task.atomic_examples(n_atom - n_atom // 2, seed=r.seed)
            named = self.task.composite_examples(n_atom // 2, seed=r.seed + 1, depths=(1,))
            comp = self.task.composite_examples(n_comp, seed=r.seed + 2,
                                                depths=tuple(range(2, r.task.train_max_depth + 1))) if n_comp else []
            items = atom + named + comp
            random.Random(r.seed).shuffle(items)
            return [(p.prompt, p.target) for p in items]
        # games: the action format on random reachable states, with labels that encode the player's
        # private information (the last line of every renderer: "Your card: K"), see
        # private_info_labels. Uniform labels teach the model to ignore the card, and self-play then
        # stalls in the card-blind "always bet/call" plateau; this skill teaches it to read the card.
        # The code is a random map drawn per seed, so on average it teaches nothing about play, but
        # a given seed's code can happen to be a good or a bad strategy: its exact score is the
        # stage-1 baseline (label_policy_baseline), and RL's effect is measured from after-SFT.
        rng = random.Random(r.seed)
        games = [g for g, _ in self.mixture]
        weights = [w for _, w in self.mixture]
        states = []
        while len(states) < n:
            game = rng.choices(games, weights)[0]
            states += [(game, st, pl) for st, pl in random_states(game, rng)]
        states = states[:n]
        return [(game.prompt(st, pl), game.answer_text(st, a))
                for (game, st, pl), a in zip(states, private_info_labels(states, r.seed, rng, LABEL_SHARP))]

    def label_policy_baseline(self) -> dict:
        """The stage-1 label policy's own score, exactly (a table, no model), per exact game: the
        baseline every after-SFT number is read against. Writes eval/label-policy.json, logs it as
        stage `label-policy` and prints the code each seed drew."""
        from compose_rl.evals.games import label_code_map, label_policy_tables, policy_baseline_metrics

        out, metrics = {}, {}
        for game, _ in self.mixture:
            if game.name not in EXACT_GAMES:
                continue
            tables = label_policy_tables(game, self.recipe.seed, LABEL_SHARP)
            m = policy_baseline_metrics(game, tables)
            code = label_code_map(game, self.recipe.seed)
            out[game.name] = {"seed": self.recipe.seed, "sharp": LABEL_SHARP, "code": code, **m}
            metrics.update({f"eval/{game.name}/{k}": v for k, v in m.items()})
            if len(code) <= 6:  # Kuhn: print the map; Leduc's (6 lines x legal sets) is in the file
                say(f"label code ({game.name}, seed {self.recipe.seed}): "
                    + ", ".join(f"{line.split(': ')[-1]}->{'/'.join(acts.values())}" for line, acts in code.items()))
            say(f"label policy ({game.name}, sharp {LABEL_SHARP}): exploitability {m['exploitability']:.3f}, "
                f"exact value vs random {m['vs_random/exact_value']:+.3f}, vs nash {m['vs_nash/exact_value']:+.3f}")
        if out:
            self.run.write_json("eval/label-policy.json", out)
            self.run.log("label-policy", 0, metrics)
        return out

    def skill_accuracy(self) -> dict[str, float]:
        r = self.recipe
        if r.task is not None:
            from compose_rl.evals.strcomp import skill_accuracy

            return skill_accuracy(self.engine, self.policy.format_prompt, self.task, r.sft.gate_items,
                                  self.max_new_tokens)
        # games: greedy valid-action rate on random states of each trained game
        rng = random.Random(r.seed + 17)
        out = {}
        for game, _ in self.mixture:
            states = []
            while len(states) < r.sft.gate_items:
                states += random_states(game, rng)
            states = states[: r.sft.gate_items]
            comps = self.engine.generate([self.policy.format_prompt(game.prompt(s, p)) for s, p in states],
                                         self.sampling(train=False))
            ok = sum(game.parse(c[0].text, s) is not None for (s, _), c in zip(states, comps))
            out[f"{game.name}/valid"] = ok / len(states)
        return out

    # ---- rl
    def stage_rl(self, index: int, label: str, partial) -> None:
        from compose_rl.rl.learner import LearnerHooks, run_rl
        from compose_rl.rollout.collectors import SelfPlayCollector, StringTaskCollector

        r = self.recipe
        hooks = LearnerHooks(extra_state=self._extra, load_extra_state=self._load_extra,
                             later_stages_s=lambda: self.later_stages_s(index))
        if r.task is not None:
            collector = StringTaskCollector(self.task, self.policy.format_prompt, r.rl.prompts_per_step,
                                            r.rl.group_size, self.sampling(), r.seed)
            if r.rl.replay_fraction > 0:
                hooks.replay = self._replay_fn()
            if r.rl.eval_every:
                hooks.evaluate = lambda step: self._quick_strcomp_eval(step)
        else:
            from games.env import InvalidPolicy

            inv = r.games.invalid
            collector = SelfPlayCollector(self.mixture, self.policy.format_prompt, r.rl.games_per_step,
                                          self.sampling(), r.seed,
                                          InvalidPolicy(mode=inv.mode, penalty=inv.penalty, other=inv.other,
                                                        retries=inv.retries),
                                          opponent=r.games.opponent, max_turns=r.games.max_turns,
                                          lenient=r.games.lenient)
            if r.games.opponent == "pool":
                self._setup_pool(collector)
                hooks.on_step_end = lambda step: self._pool_snapshot(step, collector)
            if r.rl.eval_every:
                hooks.evaluate = lambda step: self.track_policy(step, label)
        # the recipe's checkpointing state, whatever SFT (or a resumed checkpoint) left behind
        self.policy.set_gradient_checkpointing(r.model.gradient_checkpointing)
        if r.latent is not None:
            from compose_rl.experimental.trainer import run_latent_rl

            last = run_latent_rl(self.loop, self.policy, self.engine, collector, r.rl, self.run, label,
                                 evaluate=hooks.evaluate, replay=hooks.replay, resume=partial)
        else:
            rollouts, policy = None, self.policy
            if r.recurrent is not None:  # the main learner trains the looped module through its log-prob hook
                from compose_rl.experimental.recurrent_train import wire_rl

                policy, collector, hooks = wire_rl(self.loop, self.engine, collector, hooks, self.policy, r.seed)
            if r.rollout.mode == "async":  # the Ray workers generate ahead while the learner trains
                from compose_rl.rollout.async_rollouts import AsyncRollouts, PromptFormat

                rollouts = AsyncRollouts(self.engine, collector, r.rollout.max_lag, PromptFormat.of(self.policy),
                                         steps=r.rl.steps)
            last = run_rl(policy, self.engine, collector, r.rl, self.run, label, r.seed, self.max_new_tokens,
                          hooks=hooks, resume=partial, sync=self.sync, max_lag=r.rollout.max_lag,
                          temperature=r.rollout.temperature, rollouts=rollouts, is_trunc=r.rollout.is_trunc)
        self._final_checkpoint(label, r.rl.steps - 1)
        self.results[label] = last

    def _replay_fn(self):
        from compose_rl.sft.stage import encode_pair

        r = self.recipe
        k = max(1, int(round(r.rl.prompts_per_step * r.rl.group_size * r.rl.replay_fraction)))

        def replay(step: int):
            items = self.task.composite_examples(k, seed=r.seed * 7 + step, depths=(1,))
            return [encode_pair(self.policy, p.prompt, p.target) for p in items]
        return replay

    def _quick_strcomp_eval(self, step: int) -> dict:
        from compose_rl.evals.strcomp import accuracy

        out = {}
        for d in self.task.test_depths:
            probs = self.task.eval_problems(d, min(50, self.recipe.eval.items_per_depth))
            out[f"eval/strcomp/acc_d{d}"] = accuracy(self.engine, self.policy.format_prompt, self.task, probs,
                                                     self.max_new_tokens)[0]
        return out

    # ---- games: exploitability tracking, average policy, best checkpoint
    def track_policy(self, step: int, label: str) -> dict:
        from compose_rl.evals.exploitability import exploitability_of_tables, own_reach
        from compose_rl.evals.games import exact_value_vs, history_tv, infostate_rows, lm_policy_tables, tabular_opponent

        out = {}
        for name, avg in self.average.items():
            game = next(g for g, _ in self.mixture if g.name == name)
            tables = lm_policy_tables(self.policy, game)
            cur = exploitability_of_tables(game, tables)
            # reach-weighted: the average is the behaviour policy of the mixture of past policies (fictitious play)
            avg.update(tables, reach=own_reach(game, tables))
            av = avg.exploitability(game)
            rows = infostate_rows(game, tables)
            out[f"eval/{name}/exploitability"] = cur[0]
            out[f"eval/{name}/nash_conv"] = cur[1]
            out[f"eval/{name}/history_tv"] = history_tv(rows)
            out[f"eval/{name}/exploitability_avg"] = av[0]
            for opp in ("random", "nash"):  # exact expected return vs fixed opponents, both seats
                out[f"eval/{name}/vs_{opp}/exact_value"] = exact_value_vs(game, tables, tabular_opponent(game, opp))
            if cur[0] < self.best.get(name, (float("inf"),))[0]:
                self.best[name] = (cur[0], step)
                self.policy.save(self.run.path / "best" / name)
                out[f"eval/{name}/best_step"] = step
                self._write_infostates("best", {name: rows}, {"step": step, "exploitability": cur[0]})
        from compose_rl.evals.probes import track_primitives  # primitive/<name>/... when the recipe asks

        out.update(track_primitives(self.recipe, self.policy, self.engine, step=step,
                                    samples=self.run.path / "samples" / f"{label}.txt"))
        return out

    def _write_infostates(self, label: str, rows: dict, extra: dict | None = None) -> None:
        """eval/<label>-infostates.json: per game, the exact action probabilities at every information
        state (Kuhn: 12 rows) and history_tv, so one can see whether the policy reads the history."""
        from compose_rl.evals.games import history_tv

        path = self.run.path / "eval" / f"{label}-infostates.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        for name, rs in rows.items():
            data[name] = {**(extra or {}), "history_tv": history_tv(rs), "rows": rs}
        self.run.write_json(f"eval/{label}-infostates.json", data)

    def _setup_pool(self, collector) -> None:
        import copy

        from compose_rl.rollout.hf import HFEngine

        # the pool holds past learner weights (on CPU); one frozen copy of the model plays them
        self.pool = SnapshotPool(self.recipe.games.pool_size)
        self.pool.add(self.policy.model.state_dict())
        snapshot_model = copy.deepcopy(self.policy.model)
        collector.opponent_engine = HFEngine(snapshot_model, self.policy.tokenizer, self.recipe.rollout.batch_size)

    def _pool_snapshot(self, step: int, collector) -> None:
        if (step + 1) % self.recipe.games.pool_every == 0:
            self.pool.add(self.policy.model.state_dict())
            pick = self.pool.pick(random.Random(self.recipe.seed + step))
            collector.opponent_engine.model.load_state_dict(pick, strict=False)

    def _extra(self) -> dict:
        if self.recipe.games is None:
            return {}
        return {"average": {k: v.state_dict() for k, v in self.average.items()},
                "best": {k: list(v) for k, v in self.best.items()}}

    def _load_extra(self, extra: dict) -> None:
        for k, v in extra.get("average", {}).items():
            if k in self.average:
                self.average[k].load_state_dict(v)
        self.best = {k: tuple(v) for k, v in extra.get("best", {}).items()}

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, label: str) -> dict:
        r = self.recipe
        if r.task is not None:
            from compose_rl.evals.strcomp import strcomp_suite

            metrics, rows, samples = strcomp_suite(self.engine, self.policy.format_prompt, self.task, r.eval,
                                                   self.max_new_tokens, r.rollout.temperature, r.seed)
            self.run.write_json(f"eval/{label}-strcomp.json", rows)
        else:
            metrics, samples = self.game_eval(label)
        from compose_rl.evals.probes import track_primitives  # primitive/<name>/... when the recipe asks

        metrics.update(track_primitives(self.recipe, self.policy, self.engine, texts=samples))
        if r.recurrent is not None:  # depth scaling, exit rules and loop probes (experimental/recurrent_train.py)
            from compose_rl.experimental.recurrent_train import recurrent_eval

            metrics.update(recurrent_eval(self, label))
        self.run.log(label, 0, metrics)
        self.run.write_samples(label, 0, samples)
        say(summarize(label, metrics))
        return metrics

    def game_eval(self, label: str):
        from compose_rl.evals.games import game_eval_suite
        from games import get_game

        r = self.recipe
        names = [g.name for g, _ in self.mixture] + [g.name for g in self.held_out]
        from compose_rl.evals.games import infostate_rows

        tables: dict = {}
        metrics, transcripts = game_eval_suite(self.policy, self.engine, names, r.eval.opponents, r.eval.games,
                                               r.seed + 1000, self.sampling(train=False), tables_out=tables)
        if tables:
            self._write_infostates(label, {n: infostate_rows(get_game(n), t) for n, t in tables.items()})
        if r.eval.exploitability:
            for name, avg in self.average.items():
                if avg.updates:
                    game = next(g for g, _ in self.mixture if g.name == name)
                    metrics[f"eval/{name}/exploitability_avg"] = avg.exploitability(game)[0]
        if r.eval.transfer_strcomp:
            from compose_rl.evals.strcomp import strcomp_suite
            from synthetic_tasks.strcomp import StrCompTask

            m, rows, _ = strcomp_suite(self.engine, self.policy.format_prompt, StrCompTask(seed=r.seed), r.eval,
                                       self.max_new_tokens, r.rollout.temperature, r.seed)
            metrics.update({k.replace("eval/strcomp", "eval/transfer_strcomp"): v for k, v in m.items()})
        self.run.write_json(f"eval/{label}-games.json", metrics)
        texts = [f"[{key}]\n{t}" for key, ts in transcripts.items() for t in ts[:2]]
        return metrics, texts


class SnapshotPool:
    """Past policies for opponent=pool: at most `size` state dicts, oldest dropped first, each copied
    to CPU (a snapshot on the GPU would hold a full extra model there per entry)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.snapshots)

    def add(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()})
        del self.snapshots[:-self.size]

    def pick(self, rng: random.Random) -> dict[str, torch.Tensor]:
        return rng.choice(self.snapshots)


EXACT_GAMES = ("kuhn_poker", "leduc_poker")
LABEL_SHARP = 0.75  # stage-1 game labels: P(the code's action) before the uniform share


def private_line(game, state, player: int) -> str:
    from compose_rl.evals.games import private_line as line

    return line(game, state, player)


def private_info_labels(states, seed: int, rng: random.Random, sharp: float = 0.75) -> list[int]:
    """An arbitrary code from private information to actions, as SFT labels: with probability `sharp`
    the label is the code's action for the state's private line (`evals.games.label_action`: a
    random map drawn per seed, independent of what the line means and of its text order), else a
    uniform legal action. Different private lines may get different labels, so fitting them
    requires reading them; the code is random, so it carries no knowledge of good play (its own
    score is reported exactly as the stage-1 baseline: `label_policy_baseline`)."""
    from compose_rl.evals.games import label_action

    labels = []
    for game, st, pl in states:
        legal = st.legal_actions()
        labels.append(label_action(game, st, pl, seed) if rng.random() < sharp else rng.choice(legal))
    return labels


def random_states(game, rng: random.Random):
    """(state, player) pairs along one uniformly random playthrough of `game`."""
    state = game.new_initial_state(rng)
    out = []
    while not state.is_terminal():
        if state.is_chance_node():
            game.resolve_chance(state, rng)
            continue
        player = state.current_player()
        out.append((state.clone(), player))
        state.apply_action(rng.choice(state.legal_actions()))
    return out


def summarize(label: str, metrics: dict) -> str:
    keys = [k for k in metrics if any(x in k for x in ("acc_d", "floor_d", "exploitability", "history_tv", "/win", "mean_return"))]
    return f"[{label}] " + "  ".join(f"{k.split('/', 1)[1]}={metrics[k]:.3f}" for k in keys[:14])


def make_engine(recipe: Recipe, policy):
    """The rollout engine for `rollout.engine`/`rollout.workers`, and a `sync()` giving its weights."""
    ro = recipe.rollout
    if ro.engine == "hf" and ro.workers == 0:
        from compose_rl.rollout.hf import HFEngine

        # in process the engine shares the learner's module: sync hands over nothing
        return HFEngine(policy.model, policy.tokenizer, ro.batch_size), (lambda: None)
    from compose_rl.rollout.factory import make_distributed_engine  # vLLM / Ray workers

    return make_distributed_engine(recipe, policy)


def start_run(recipe: Recipe) -> Pipeline:
    run = RunDir.create(recipe.output, recipe.name, dump_recipe(recipe), tensorboard=recipe.logging.tensorboard)
    return Pipeline(recipe, run)
