"""String composition as a Domain: synthetic_tasks/strcomp.py behind the contract of domains/base.py.

Stage 1: atomic applications (half with the definition shown, half by name only) plus a share of
name-only composites; the labels are the verifier's answers, so there is no separate label policy.
RL: StringTaskCollector (groups of completions per prompt). Floors: the best shortcut rule per depth.
"""
from __future__ import annotations

import random

from compose_rl.domains.base import Column, DomainBase


class StrCompDomain(DomainBase):
    name = "strcomp"

    def __init__(self, task_cfg=None, seed: int = 0, composite_fraction: float = 0.0, depths=None):
        from synthetic_tasks.strcomp import StrCompTask

        t = task_cfg
        self.seed, self.composite_fraction = seed, composite_fraction
        if t is None:  # evaluation only: the default task of this seed
            self.task = StrCompTask(seed=seed, test_depths=tuple(depths or (1, 2, 3)))
        else:
            self.task = StrCompTask(seed=seed if t.split_seed is None else t.split_seed, n_functions=t.n_functions, train_max_depth=t.train_max_depth,
                                    test_depths=tuple(depths or t.test_depths), cot=t.cot,
                                    train_pair_fraction=t.train_pair_fraction,
                                    only=tuple(t.functions) if t.functions else None,
                                    unparseable_reward=t.unparseable_reward)

    # ---- stage 1
    def sft_pairs(self, n: int) -> list[tuple[str, str]]:
        seed = self.seed
        n_comp = int(round(n * self.composite_fraction))
        n_atom = n - n_comp
        # half the atomics show the definition (learn the function), half only the name (recall it
        # by name, which is all stage-2 prompts give)
        atom = self.task.atomic_examples(n_atom - n_atom // 2, seed=seed)
        named = self.task.composite_examples(n_atom // 2, seed=seed + 1, depths=(1,))
        comp = self.task.composite_examples(n_comp, seed=seed + 2,
                                            depths=tuple(range(2, self.task.train_max_depth + 1))) if n_comp else []
        items = atom + named + comp
        random.Random(seed).shuffle(items)
        return [(p.prompt, p.target) for p in items]

    def gate_skills(self, pipe) -> dict[str, float]:
        from compose_rl.evals.strcomp import skill_accuracy

        return skill_accuracy(pipe.engine, pipe.policy.format_prompt, self.task, pipe.recipe.sft.gate_items,
                              pipe.max_new_tokens)

    # ---- rl
    def collector(self, pipe, label: str):
        from compose_rl.rollout.collectors import StringTaskCollector

        r = pipe.recipe
        phases = (lambda step: r.rl.max_depth_at(step, self.task.train_max_depth)) if r.rl.phases else None
        return StringTaskCollector(self.task, pipe.policy.format_prompt, r.rl.prompts_per_step, r.rl.group_size,
                                   pipe.sampling(), r.seed, max_depth_at=phases)

    def replay(self, pipe, step: int) -> list:
        from compose_rl.sft.stage import encode_pair

        r = pipe.recipe
        if r.rl.replay_fraction <= 0:
            return []
        k = max(1, int(round(r.rl.prompts_per_step * r.rl.group_size * r.rl.replay_fraction)))
        items = self.task.composite_examples(k, seed=r.seed * 7 + step, depths=(1,))
        return [encode_pair(pipe.policy, p.prompt, p.target) for p in items]

    def track(self, pipe, step: int, label: str) -> dict:
        from compose_rl.evals.strcomp import accuracy

        out = {}
        for d in self.task.test_depths:
            probs = self.task.eval_problems(d, min(50, pipe.recipe.eval.items_per_depth))
            out[f"eval/strcomp/acc_d{d}"] = accuracy(pipe.engine, pipe.policy.format_prompt, self.task, probs,
                                                     pipe.max_new_tokens)[0]
        return out

    # ---- eval
    def evaluate(self, pipe, label: str) -> tuple[dict, list[str]]:
        from compose_rl.evals.strcomp import strcomp_suite

        r = pipe.recipe
        metrics, rows, samples = strcomp_suite(pipe.engine, pipe.policy.format_prompt, self.task, r.eval,
                                               pipe.max_new_tokens, r.rollout.temperature, r.seed)
        pipe.run.write_json(f"eval/{label}-strcomp.json", rows)
        return metrics, samples

    def floors(self) -> dict[str, float]:
        return {f"eval/strcomp/acc_d{d}": self.task.shortcut_floor(d)[0] for d in self.task.test_depths}

    def transfer_columns(self, policy, engine, items: int, seed: int, max_new_tokens: int) -> list[Column]:
        from compose_rl.evals.strcomp import accuracy
        from synthetic_tasks.strcomp import floor_of, shortcut_accuracies

        cols = []
        for d in self.task.test_depths:
            probs = self.task.eval_problems(d, items)  # the same held-out problems for every checkpoint
            _, _, correct, _ = accuracy(engine, policy.format_prompt, self.task, probs, max_new_tokens)
            cols.append(Column(self.name, f"acc_d{d}", [float(c) for c in correct],
                               floor=floor_of(shortcut_accuracies(probs))[0]))
        return cols
