"""Collectors turn an engine into a batch of scored Samples for one learner step.

`StringTaskCollector`: one-turn verifiable tasks; `group_size` completions per prompt form a group.
`SelfPlayCollector`: multi-turn games (games/), every LLM turn is a sample (rollout/selfplay.py).
Each step's randomness is derived from (seed, step), so a resumed run samples what it would have.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

from compose_rl.types import Sample, SamplingParams


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


class StringTaskCollector:
    def __init__(self, task, format_prompt: Callable[[str], str], prompts_per_step: int, group_size: int,
                 sampling: SamplingParams, seed: int, max_depth_at: Callable[[int], int] | None = None):
        self.task, self.format_prompt = task, format_prompt
        self.prompts_per_step, self.group_size = prompts_per_step, group_size
        self.sampling, self.seed = sampling, seed
        self.max_depth_at = max_depth_at  # step -> depth cap (rl.phases, a depth curriculum); None = the task's

    def collect(self, engine, step: int):
        s = step_seed(self.seed, step)
        cap = self.max_depth_at(step) if self.max_depth_at is not None else None
        problems = self.task.rl_problems(self.prompts_per_step, seed=s, max_depth=cap)
        sampling = SamplingParams(temperature=self.sampling.temperature, top_p=self.sampling.top_p,
                                  max_new_tokens=self.sampling.max_new_tokens, n=self.group_size, seed=s)
        outs = engine.generate([self.format_prompt(p.prompt) for p in problems], sampling)
        samples: list[Sample] = []
        by_depth: dict[int, list[float]] = defaultdict(list)
        for g, (prob, comps) in enumerate(zip(problems, outs)):
            for c in comps:
                r = self.task.reward(prob, c.text, truncated=c.truncated)
                by_depth[prob.depth].append(r)
                samples.append(Sample(prompt_ids=c.prompt_ids, completion_ids=c.token_ids, old_logprobs=c.logprobs,
                                      reward=r, prompt=prob.prompt, completion=c.text, group=g,
                                      policy_version=c.policy_version, truncated=c.truncated,
                                      info={**c.info, "depth": prob.depth, "answer": prob.answer}))
        metrics = {}
        for d, rs in sorted(by_depth.items()):
            metrics[f"reward/depth{d}/mean"] = sum(rs) / len(rs)
            metrics[f"reward/depth{d}/correct"] = sum(r == 1.0 for r in rs) / len(rs)
            # a group carries signal iff its rewards differ (GRPO's advantage is 0 otherwise)
            groups = [rs[i: i + self.group_size] for i in range(0, len(rs), self.group_size)]
            metrics[f"rollout/depth{d}/groups_with_signal"] = sum(len(set(g)) > 1 for g in groups) / len(groups)
            # ... and iff some answers are right and some not: signal about correctness, not only about format
            metrics[f"rollout/depth{d}/groups_with_correct_signal"] = sum(
                any(r == 1.0 for r in g) and any(r != 1.0 for r in g) for g in groups) / len(groups)
        if cap is not None:
            metrics["rollout/max_depth"] = cap
        n = max(len(samples), 1)
        metrics["rollout/truncation_rate"] = sum(s.truncated for s in samples) / n
        # a task may reward a malformed answer like a wrong one (task.unparseable_reward 0): ask it, not the sign
        parseable = getattr(self.task, "parseable", None)
        metrics["rollout/unparseable_rate"] = sum((not parseable(s.completion, s.truncated)) if parseable else s.reward < 0
                                                  for s in samples) / n
        texts = [f"[depth {s.info['depth']}] reward {s.reward:+.0f} (answer {s.info['answer']})\n{s.prompt}{s.completion}"
                 for s in samples[:: self.group_size]]
        return samples, metrics, texts


class SelfPlayCollector:
    def __init__(self, mixture, format_prompt, games_per_step: int, sampling: SamplingParams, seed: int,
                 invalid, opponent: str = "self", max_turns: int = 50, lenient: bool = False):
        self.mixture, self.format_prompt = mixture, format_prompt
        self.games_per_step, self.sampling, self.seed = games_per_step, sampling, seed
        self.invalid, self.opponent, self.max_turns, self.lenient = invalid, opponent, max_turns, lenient
        self.opponent_engine = None  # set by the pipeline for opponent=pool

    def collect(self, engine, step: int):
        from compose_rl.rollout.selfplay import play_games

        s = step_seed(self.seed, step)
        sampling = SamplingParams(temperature=self.sampling.temperature, top_p=self.sampling.top_p,
                                  max_new_tokens=self.sampling.max_new_tokens, n=1, seed=s)
        samples, stats, transcripts = play_games(
            engine, self.format_prompt, self.mixture, self.games_per_step, sampling, seed=s,
            invalid=self.invalid, opponent=self.opponent, opponent_engine=self.opponent_engine,
            max_turns=self.max_turns, lenient=self.lenient, transcripts=2)
        return samples, stats.as_metrics(), transcripts

