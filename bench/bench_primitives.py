"""Benchmark: probe-suite generation speed and in-game probe scoring of the tiny model.

Prints, side by side with the goals of issue 9: items/s generated per suite (both splits, every
level; the eval split rejects ~4 of 5 candidates, so it is the slower one) and the time to score every
in-game probe of every game with the tiny model's exact action probabilities.

    OMP_NUM_THREADS=1 python bench/bench_primitives.py [--items 2000]
"""
from __future__ import annotations

import argparse
import time

import torch


def generation(items: int) -> list[tuple[str, float]]:
    from synthetic_tasks.probes import SUITES

    rows = []
    for name, suite in SUITES.items():
        n = 0
        t = time.perf_counter()
        for level in suite.levels:
            for split in ("train", "eval"):
                n += len(suite.items(split, level, items // (2 * len(suite.levels)), seed=1))
        rows.append((name, n / (time.perf_counter() - t)))
    return rows


def ingame_scoring() -> tuple[float, int]:
    from compose_rl.evals.ingame_probes import ingame_probe_metrics
    from compose_rl.primitives.ingame import PROBES
    from compose_rl.models import load_policy

    policy = load_policy("tiny", seed=0)
    games = sorted({p.game for p in PROBES.values()})
    t = time.perf_counter()
    ingame_probe_metrics(policy, games)
    return time.perf_counter() - t, sum(len(p.instances) for p in PROBES.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000, help="items per suite (split over levels and splits)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = generation(args.items)
    print(f"{'probe suite':18s} {'items/s':>9s}   goal >= 10000")
    for name, rate in rows:
        print(f"{name:18s} {rate:9.0f}   {'ok' if rate >= 10_000 else 'below'}")
    hmean = len(rows) / sum(1 / r for _, r in rows)  # a mixed stream spends time in proportion to 1/rate
    print(f"{'all (mixed stream)':18s} {hmean:9.0f}   {'ok' if hmean >= 10_000 else 'below'}")
    secs, states = ingame_scoring()
    print(f"in-game probes, tiny model: {secs:.2f} s for all {states} probe states of all games   goal < 10 s: "
          f"{'ok' if secs < 10 else 'over'}")


if __name__ == "__main__":
    main()
