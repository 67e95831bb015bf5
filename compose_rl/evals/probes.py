"""Primitive tracking: probe suites scored through an Engine, in-game decision probes, trace detectors.

`suite_metrics` scores a policy greedily on probe suites (synthetic_tasks/probes): accuracy per
suite and per level with a 95% Wilson interval, printed beside the suite's shortcut floor on the
same items. `track_primitives` is what the pipeline calls at each eval stage and at RL tracking
points; every key it returns starts with `primitive/<name>/`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

from compose_rl.types import SamplingParams


def suite_metrics(engine, format_prompt: Callable[[str], str], suites: Sequence[str], items: int,
                  max_new_tokens: int, seed: int = 0) -> tuple[dict[str, float], list[dict]]:
    """Greedy accuracy on `items` eval-split items per suite (spread evenly over its levels).

    Returns metrics `primitive/<primitive>/probe/<suite>/{acc,ci_lo,ci_hi,floor,parse_rate,n}` and
    `.../L<level>/acc`, and rows (one per suite) for a table: suite, primitive, acc, interval,
    floor with the rule that sets it.
    """
    from compose_rl.stats import wilson
    from synthetic_tasks.probes import get_suite

    chosen = [get_suite(s) for s in suites]  # unknown names fail before any generation
    metrics: dict[str, float] = {}
    rows = []
    for suite in chosen:
        per = [items // len(suite.levels) + (i < items % len(suite.levels)) for i in range(len(suite.levels))]
        batch = [it for lv, k in zip(suite.levels, per) for it in suite.items("eval", lv, k, seed)]
        if not batch:
            continue
        outs = engine.generate([format_prompt(it.prompt) for it in batch],
                               SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, n=1, seed=seed))
        texts = [o[0].text for o in outs]
        ok = [suite.score(it, t) for it, t in zip(batch, texts)]
        parsed = sum(suite.parse(t) is not None for t in texts)
        lo, hi = wilson(sum(ok), len(ok))
        floor, rule = suite.floor(batch)
        key = f"primitive/{suite.primitive}/probe/{suite.name}"
        acc = sum(ok) / len(ok)
        metrics.update({f"{key}/acc": acc, f"{key}/ci_lo": lo, f"{key}/ci_hi": hi, f"{key}/floor": floor,
                        f"{key}/parse_rate": parsed / len(ok), f"{key}/n": float(len(ok))})
        for lv in suite.levels:
            sel = [o for it, o in zip(batch, ok) if it.level == lv]
            if sel:
                metrics[f"{key}/L{lv}/acc"] = sum(sel) / len(sel)
        rows.append({"suite": suite.name, "primitive": suite.primitive, "n": len(ok), "acc": acc, "ci95": [lo, hi],
                     "floor": floor, "floor_rule": rule, "parse_rate": parsed / len(ok)})
    return metrics, rows


def recipe_game_names(recipe) -> list[str]:
    if recipe.games is None:
        return []
    return [g.name for g in recipe.games.train] + [g for g in recipe.games.held_out]


def logged_texts(path: Path, first_step: int, last_step: int) -> list[str]:
    """Sample texts the learner logged (RunDir.write_samples) for RL steps first_step..last_step, from
    samples/<stage>.txt and the rotated samples/<stage>.previous.txt before it (logging.samples_max_mb)."""
    older = path.with_name(path.name[: -len(".txt")] + ".previous.txt") if path.name.endswith(".txt") else None
    text = "".join(p.read_text() for p in (older, path) if p is not None and p.is_file())
    if not text:
        return []
    texts, keep, cur = [], False, []
    for line in text.splitlines():
        m = _HEADER.fullmatch(line)
        if m:
            if keep and cur:
                texts += _split_samples(cur)
            keep, cur = first_step <= int(m.group(1)) <= last_step, []
        elif keep:
            cur.append(line)
    if keep and cur:
        texts += _split_samples(cur)
    return texts


_HEADER = re.compile(r"===== \S+ step (\d+) =====")


def _split_samples(lines: list[str]) -> list[str]:
    return [t for t in "\n".join(lines).split("\n---\n") if t.strip()]


def track_primitives(recipe, policy: Any, engine: Any = None, step: int | None = None,
                     samples: Path | None = None, texts: Sequence[str] | None = None) -> dict[str, float]:
    """Primitive metrics for the recipe's `primitives` section (empty when it is off).

    `step`: the RL step of an in-RL evaluation (None at an eval stage); with `primitives.every` set,
    only steps where (step + 1) is a multiple of it are tracked. Detectors run on `texts`, or on the
    samples logged in `samples` (a run's samples/<stage>.txt) since the previous tracking point.
    """
    cfg = recipe.primitives
    if cfg is None:
        return {}
    if step is not None and cfg.every and (step + 1) % cfg.every:
        return {}
    out: dict[str, float] = {}
    if cfg.probes and engine is not None:
        out.update(suite_metrics(engine, policy.format_prompt, cfg.probes, cfg.items,
                                 recipe.rollout.max_new_tokens, recipe.seed)[0])
    if cfg.ingame:
        from compose_rl.evals.ingame_probes import ingame_probe_metrics
        from compose_rl.primitives.ingame import probes_for

        games = sorted({g for g in recipe_game_names(recipe) if probes_for([g])})
        if games:
            out.update(ingame_probe_metrics(policy, games))
    if cfg.detectors:
        from compose_rl.primitives.detectors import rule_detector_metrics

        if texts is None and samples is not None and step is not None:
            window = cfg.every or recipe.rl.eval_every or 1
            # the learner logs a step's samples after its evaluation hook: the samples since the last
            # tracking point are those of steps step-window .. step-1
            texts = logged_texts(Path(samples), step - window, step - 1)
        out.update(rule_detector_metrics(list(texts or []), cfg.detectors))
    return out
