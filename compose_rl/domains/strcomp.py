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
                                    unparseable_reward=t.unparseable_reward,
                                    atomic_chained_fraction=t.atomic_chained_fraction)

    @staticmethod
    def check_recipe(recipe) -> None:
        """The `task` section's checks across the recipe (recipe/schema.py calls them; ValueError = bad recipe)."""
        if recipe.task is not None:
            bad = [d for d in recipe.task.test_depths if d < 1]
            if bad:
                raise ValueError(f"task.test_depths: depths start at 1 (got {bad})")
            from synthetic_tasks.strcomp import ALL_FUNCTIONS

            if recipe.task.functions is not None:
                known = {f.name for f in ALL_FUNCTIONS}
                bad = [f for f in recipe.task.functions if f not in known]
                if bad or len(recipe.task.functions) < 2:
                    raise ValueError(f"task.functions: unknown {bad} or fewer than 2; use func_0..func_{len(known) - 1}")
            elif recipe.task.n_functions > len(ALL_FUNCTIONS):
                raise ValueError(f"task.n_functions: at most {len(ALL_FUNCTIONS)} atomic functions are defined "
                                 f"(got {recipe.task.n_functions})")
            if recipe.rl.advantage in ("rae", "state") and recipe.games is None:
                raise ValueError(f"rl.advantage: `{recipe.rl.advantage}` needs games (baselines per game, role and state); "
                                 "use group, group_unscaled or batch_mean")
        if recipe.rl.phases is not None and (recipe.task is None or recipe.games is not None):
            raise ValueError("rl.phases: depth caps apply to the string task alone; remove rl.phases or use `task` without `games`")

    @classmethod
    def trained_groups(cls, recipe) -> list[str]:
        return [cls.name] if recipe.task is not None else []

    @classmethod
    def smoke_budgets(cls, data: dict) -> None:
        data["rl"].update(prompts_per_step=4, group_size=4)
        data["eval"].update(items_per_depth=4, pass_k=2, pass_k_items=2)
        if data["rl"].get("phases"):  # a depth curriculum: one step per phase, rl.steps their sum
            for p in data["rl"]["phases"]:
                p["steps"] = 1
            data["rl"]["steps"] = len(data["rl"]["phases"])

    # ---- stage 1
    def sft_pairs(self, n: int) -> list[tuple[str, str]]:
        seed = self.seed
        n_comp = int(round(n * self.composite_fraction))
        n_atom = n - n_comp
        # half the atomics show the definition (learn the function), half only the name (recall it
        # by name, which is all stage-2 prompts give)
        atom = self.task.chained_inputs(self.task.atomic_examples(n_atom - n_atom // 2, seed=seed), seed)
        named = self.task.chained_inputs(self.task.composite_examples(n_atom // 2, seed=seed + 1, depths=(1,)), seed + 1)
        comp = self.task.composite_examples(n_comp, seed=seed + 2,
                                            depths=tuple(range(2, self.task.train_max_depth + 1))) if n_comp else []
        items = atom + named + comp
        random.Random(seed).shuffle(items)
        return [(p.prompt, p.target) for p in items]

    def gate_skills(self, ctx) -> dict[str, float]:
        from compose_rl.evals.strcomp import skill_accuracy

        return skill_accuracy(ctx.engine, ctx.policy.format_prompt, self.task, ctx.recipe.sft.gate_items,
                              ctx.max_new_tokens)

    # ---- rl
    def collector(self, ctx, label: str):
        from compose_rl.rollout.collectors import StringTaskCollector

        r = ctx.recipe
        phases = (lambda step: r.rl.max_depth_at(step, self.task.train_max_depth)) if r.rl.phases else None
        return StringTaskCollector(self.task, ctx.policy.format_prompt, r.rl.prompts_per_step, r.rl.group_size,
                                   ctx.sampling, r.seed, max_depth_at=phases)

    def replay(self, ctx, step: int) -> list:
        from compose_rl.sft.stage import encode_pair

        r = ctx.recipe
        if r.rl.replay_fraction <= 0:
            return []
        k = max(1, int(round(r.rl.prompts_per_step * r.rl.group_size * r.rl.replay_fraction)))
        items = self.task.composite_examples(k, seed=r.seed * 7 + step, depths=(1,))
        return [encode_pair(ctx.policy, p.prompt, p.target) for p in items]

    def track(self, ctx, step: int, label: str) -> dict:
        from compose_rl.evals.strcomp import accuracy

        out = {}
        for d in self.task.test_depths:
            probs = self.task.eval_problems(d, min(50, ctx.recipe.eval.items_per_depth))
            out[f"eval/strcomp/acc_d{d}"] = accuracy(ctx.engine, ctx.policy.format_prompt, self.task, probs,
                                                     ctx.max_new_tokens)[0]
        return out

    # ---- eval
    def evaluate(self, ctx, label: str) -> tuple[dict, list[str]]:
        from compose_rl.evals.strcomp import strcomp_suite

        r = ctx.recipe
        metrics, rows, samples = strcomp_suite(ctx.engine, ctx.policy.format_prompt, self.task, r.eval,
                                               ctx.max_new_tokens, r.rollout.temperature, r.seed)
        ctx.run.write_json(f"eval/{label}-strcomp.json", rows)
        return metrics, samples

    def floors(self) -> dict[str, float]:
        return {f"eval/strcomp/acc_d{d}": self.task.shortcut_floor(d)[0] for d in self.task.test_depths}

    def transfer_columns(self, policy, engine, items: int, seed: int, max_new_tokens: int,
                         temperature: float = 1.0) -> list[Column]:
        from compose_rl.evals.strcomp import accuracy
        from synthetic_tasks.strcomp import floor_of, shortcut_accuracies

        cols = []
        for d in self.task.test_depths:
            probs = self.task.eval_problems(d, items)  # the same held-out problems for every checkpoint
            _, _, correct, _ = accuracy(engine, policy.format_prompt, self.task, probs, max_new_tokens)
            cols.append(Column(self.name, f"acc_d{d}", [float(c) for c in correct],
                               floor=floor_of(shortcut_accuracies(probs))[0]))
        return cols


def acc_key(depth: int) -> str:
    """The eval metric of held-out accuracy at a composition depth (and its floor, pass@k): this domain's names."""
    return f"eval/strcomp/acc_d{depth}"


def floor_key(depth: int) -> str:
    return f"eval/strcomp/floor_d{depth}"


def pass_key(k: int, depth: int) -> str:
    return f"eval/strcomp/pass@{k}_d{depth}"


def task_of(domains):
    """The string task among `domains` (None without one): what commands (ablate, positive control) and
    experimental evals read problems from."""
    return next((d.task for d in domains if isinstance(d, StrCompDomain)), None)
