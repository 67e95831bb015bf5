"""A probe suite (synthetic_tasks/probes) as a Domain: English reasoning problems with a strict `\\boxed{}` answer.

Stage 1: gold answers of the train split, `\\boxed{<answer>}` (the suites' train and eval splits are
hash-disjoint, so evaluation never sees a trained item). RL: the same one-turn collector as the
string task, reward 1 for an exact answer, 0 for a wrong one, -1 for an unparseable one. Floors: the
suite's best shortcut rule on the evaluated items.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from compose_rl.domains.base import Column, DomainBase


@dataclass
class _Problem:
    prompt: str
    item: object
    depth: int = 1  # StringTaskCollector's per-depth metrics: the probe level
    answer: str = ""


class ProbeTask:
    """The interface StringTaskCollector needs (rl_problems, reward) over probe suites' train items."""

    def __init__(self, suites):
        self.suites = suites

    def rl_problems(self, n: int, seed: int) -> list[_Problem]:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            s = rng.choice(self.suites)
            lv = rng.choice(s.levels)
            it = s.items("train", lv, 1, seed=rng.randrange(2**31))[0]
            out.append(_Problem(it.prompt, it, depth=lv, answer=it.answer))
        return out

    def reward(self, problem: _Problem, completion: str, truncated: bool = False) -> float:
        suite = next(s for s in self.suites if s.name == problem.item.suite)
        if suite.parse(completion) is None:
            return -1.0
        return 1.0 if suite.score(problem.item, completion) else 0.0


class ProbeDomain(DomainBase):
    def __init__(self, suites: list[str], seed: int = 0):
        from synthetic_tasks.probes import get_suite

        self.suites = [get_suite(s) for s in suites]
        self.seed = seed
        self.name = "probes" if len(self.suites) > 1 else self.suites[0].name

    def _items(self, split: str, n: int, seed: int, suite):
        per = [n // len(suite.levels) + (i < n % len(suite.levels)) for i in range(len(suite.levels))]
        return [it for lv, k in zip(suite.levels, per) for it in suite.items(split, lv, k, seed)]

    def sft_pairs(self, n: int) -> list[tuple[str, str]]:
        k = len(self.suites)
        items = [it for i, s in enumerate(self.suites) for it in self._items("train", n // k + (i < n % k), self.seed, s)]
        random.Random(self.seed).shuffle(items)
        return [(it.prompt, f"\\boxed{{{it.answer}}}") for it in items]

    def gate_skills(self, ctx) -> dict[str, float]:
        cols = self.transfer_columns(ctx.policy, ctx.engine, ctx.recipe.sft.gate_items, ctx.recipe.seed,
                                     ctx.max_new_tokens)
        return {f"{c.name}/acc": sum(c.items) / len(c.items) for c in cols}

    def collector(self, ctx, label: str):
        from compose_rl.rollout.collectors import StringTaskCollector

        r = ctx.recipe
        return StringTaskCollector(ProbeTask(self.suites), ctx.policy.format_prompt, r.rl.prompts_per_step,
                                   r.rl.group_size, ctx.sampling, r.seed)

    def evaluate(self, ctx, label: str) -> tuple[dict, list[str]]:
        from compose_rl.evals.probes import suite_metrics

        m, rows = suite_metrics(ctx.engine, ctx.policy.format_prompt, [s.name for s in self.suites],
                                ctx.recipe.primitives.items if ctx.recipe.primitives else 100,
                                ctx.max_new_tokens, ctx.recipe.seed)
        ctx.run.write_json(f"eval/{label}-probes.json", rows)
        return m, []

    def transfer_columns(self, policy, engine, items: int, seed: int, max_new_tokens: int,
                         temperature: float = 1.0) -> list[Column]:
        from compose_rl.types import SamplingParams

        cols = []
        for suite in self.suites:
            batch = self._items("eval", items, seed, suite)
            outs = engine.generate([policy.format_prompt(it.prompt) for it in batch],
                                   SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, n=1, seed=seed))
            ok = [float(suite.score(it, o[0].text)) for it, o in zip(batch, outs)]
            cols.append(Column(self.name, suite.name, ok, floor=suite.floor(batch)[0]))
        return cols


class InGameProbeDomain(DomainBase):
    """The in-game decision probes (compose_rl/primitives/ingame.py) of some games, eval only:
    each probe is an item scored by the exact probability mass the policy puts on its right actions."""

    name = "ingame_probes"

    def __init__(self, games: list[str]):
        self.games = games

    def transfer_columns(self, policy, engine, items: int, seed: int, max_new_tokens: int,
                         temperature: float = 1.0) -> list[Column]:
        from compose_rl.evals.ingame_probes import lm_probs, probe_scores
        from compose_rl.primitives.ingame import probes_for

        probes = probes_for(self.games)[:max(items, 1)]
        scores = probe_scores(lm_probs(policy), probes)
        return [Column(self.name, "mass_on_correct", [scores[p.name][0] for p in probes],
                       floor=sum(scores[p.name][1] for p in probes) / len(probes))]
