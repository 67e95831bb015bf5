"""String-composition suite: accuracy by depth on held-out compositions, pass@k, the shortcut floor.

The floor per depth is the best shortcut rule's accuracy on the same eval items
(`synthetic_tasks.strcomp.SHORTCUTS`: copy the input, innermost only, reversed order, ...), with the
rule's name: a model below it has not beaten a trivial answer rule.

pass@k uses the unbiased estimator of Chen et al. 2021 (eq. 1): 1 - C(n-c, k) / C(n, k) with n = k
samples here, i.e. "any of k samples correct".
"""
from __future__ import annotations

from compose_rl.types import SamplingParams
from synthetic_tasks.strcomp import floor_of, shortcut_accuracies


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, eq. 1):
    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the
    binomials (C(128, 64) ~ 2e37 would lose every digit in floating point)."""
    if not (0 <= c <= n and 1 <= k):
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@k: k={k} is larger than the n={n} samples drawn; draw at least k samples")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def accuracy(engine, format_prompt, task, problems, max_new_tokens: int, temperature: float = 0.0,
             n: int = 1, seed: int = 0):
    """Greedy (or sampled) accuracy; returns (acc, parse_rate, per-problem correct counts, each problem's first
    Completion)."""
    if not problems:
        return 0.0, 0.0, [], []
    outs = engine.generate([format_prompt(p.prompt) for p in problems],
                           SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, n=n, seed=seed))
    correct, parsed, firsts = [], 0, []
    for p, comps in zip(problems, outs):
        rs = [task.reward(p, c.text, truncated=c.truncated) for c in comps]
        correct.append(sum(r == 1.0 for r in rs))
        parsed += (sum(task.parseable(c.text, c.truncated) for c in comps) if hasattr(task, "parseable")
                   else sum(r >= 0 for r in rs))
        firsts.append(comps[0])
    total = len(problems) * n
    return sum(correct) / total, parsed / total, correct, firsts


def skill_accuracy(engine, format_prompt, task, items_per_skill: int, max_new_tokens: int) -> dict[str, float]:
    items = task.skill_problems(items_per_skill)
    flat = [(k, p) for k, ps in items.items() for p in ps]
    _, _, correct, _ = accuracy(engine, format_prompt, task, [p for _, p in flat], max_new_tokens)
    acc: dict[str, list[int]] = {}
    for (k, _), c in zip(flat, correct):
        acc.setdefault(k, []).append(c)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def strcomp_suite(engine, format_prompt, task, cfg_eval, max_new_tokens: int, temperature: float, seed: int):
    """Returns (flat metrics `eval/strcomp/...`, rows per depth for the report, a few samples)."""
    metrics, rows, samples = {}, [], []
    for d in task.test_depths:
        probs = task.eval_problems(d, cfg_eval.items_per_depth)
        acc, parse, _, firsts = accuracy(engine, format_prompt, task, probs, max_new_tokens)
        k = cfg_eval.pass_k
        sub = probs[: cfg_eval.pass_k_items]
        pk = 0.0
        if sub and k > 1:
            _, _, correct, _ = accuracy(engine, format_prompt, task, sub, max_new_tokens,
                                        temperature=max(temperature, 1e-3) if temperature > 0 else 1.0, n=k, seed=seed + d)
            pk = sum(pass_at_k(k, c, k) for c in correct) / len(sub)
        shortcuts = shortcut_accuracies(probs)
        floor, rule = floor_of(shortcuts)
        metrics.update({f"eval/strcomp/acc_d{d}": acc, f"eval/strcomp/pass@{k}_d{d}": pk,
                        f"eval/strcomp/parse_d{d}": parse, f"eval/strcomp/floor_d{d}": floor})
        rows.append({"depth": d, "acc": acc, f"pass@{k}": pk, "parse": parse, "floor": floor, "floor_rule": rule,
                     "shortcuts": shortcuts, "n": len(probs)})
        samples += [f"[depth {d}] expected {p.answer!r}\n{p.prompt}{c.text}" for p, c in list(zip(probs, firsts))[:2]]
    return metrics, rows, samples
