"""Benchmark: the full tiny transfer matrix of one run, beside issue 10's goal (< 5 min on 2 cores).

Times `compose-rl transfer RUN --suite full` on a run directory (or, without one, on a toy run with
two checkpoints of the tiny model, built here in seconds) and breaks one checkpoint's evaluation
down per domain, so the slow column is visible.

    OMP_NUM_THREADS=2 python bench/bench_transfer.py [--run RUN_DIR] [--items 100] [--suite full]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 300.0  # issue 10: the full tiny matrix of one run in under 5 minutes on 2 cores


def toy_run(root: Path) -> Path:
    """A run directory with stages/sft and stages/rl: the tiny model's weights nudged twice."""
    import torch

    from compose_rl.models import TinySpec, load_policy
    from compose_rl.recipe import dump_recipe, load_recipe

    r = load_recipe(Path(__file__).resolve().parent.parent / "recipes" / "transfer-kuhn.yaml")
    path = root / "bench-toy"
    path.mkdir(parents=True)
    (path / "recipe.resolved.yaml").write_text(dump_recipe(r))
    policy = load_policy("tiny", seed=r.seed, tiny=TinySpec(**r.model.tiny.model_dump()))
    g = torch.Generator().manual_seed(0)
    for label in ("sft", "rl"):
        with torch.no_grad():
            for p in policy.model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        (path / "stages" / label).mkdir(parents=True)
        torch.save({"model": policy.model.state_dict()}, path / "stages" / label / "state.pt")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a run directory (default: a toy tiny run with two checkpoints)")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--suite", default="full")
    a = ap.parse_args()
    from compose_rl.domains import suite_domains
    from compose_rl.commands.transfer import build_policy, evaluate_policy, load_run, transfer_matrix

    run = Path(a.run) if a.run else toy_run(Path(tempfile.mkdtemp()))
    recipe, cks = load_run(run)
    ro = recipe.rollout
    policy = build_policy(recipe)
    print(f"one checkpoint, per domain ({a.items} items per column):")
    for d in suite_domains(a.suite):
        t = time.perf_counter()
        cols = evaluate_policy(policy, [d], a.items, ro.max_new_tokens, ro.eval_temperature, ro.batch_size)
        print(f"  {d.name:16s} {len(cols):2d} columns  {time.perf_counter() - t:7.1f} s")
    t = time.perf_counter()
    rows = transfer_matrix([run], a.suite, a.items, log=lambda m: print(m, file=sys.stderr))
    total = time.perf_counter() - t
    print(f"full matrix: {len(rows)} checkpoints (base + {len(cks)}) x {len(rows[0].cells)} columns: "
          f"{total:.1f} s   goal < {GOAL_S:.0f} s   ratio {total / GOAL_S:.2f}")


if __name__ == "__main__":
    main()
