"""`compose-rl plan`'s estimate against measured peak memory on CPU (tiny and SmolLM2-135M).

Each model runs in its own fresh process: the stack is imported (torch, transformers, TRL as the
pipeline does), the policy loaded in float32, and one RL learner step taken on a synthetic
minibatch of B distinct sequences (prompt P + completion C tokens, so nothing is deduplicated)
through compose_rl.rl.learner.accumulate_gradients + an Adam step: the learner phase the plan
estimates (float32 weights, gradients, Adam moments, activations and log-prob head of one
micro-batch, the process runtime). Peak memory = the process's peak RSS (getrusage ru_maxrss).
The plan is computed for a recipe with the same shape (rl.micro_batch_size = B, max_new_tokens = C,
--prompt-tokens P, stages [rl], hf engine with a 1-sequence rollout batch so the learner phase is
the peak). Prints measured, estimated and their ratio; the goal is within 20%.

    OMP_NUM_THREADS=1 nice -n 5 python bench/plan_check.py
    OMP_NUM_THREADS=1 nice -n 5 python bench/plan_check.py --models tiny
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {"tiny": (64, 200, 56), "smollm2-135m-instruct": (4, 192, 64)}  # B, P, C


def measure(model: str, b: int, p: int, c: int) -> float:
    """Peak RSS in GiB of one learner step (run in a fresh process by main())."""
    import contextlib
    import random
    import resource

    import torch
    import trl  # noqa: F401 - the pipeline's process has it imported

    from compose_rl.models import load_policy
    from compose_rl.recipe import RlCfg
    from compose_rl.rl.learner import _clip_and_step, accumulate_gradients
    from compose_rl.types import Sample

    torch.set_num_threads(1)
    policy = load_policy(model, seed=0)
    vocab = policy.model.config.vocab_size
    rng = random.Random(0)
    samples = []
    for i in range(b):
        s = Sample([rng.randrange(3, vocab) for _ in range(p)], [rng.randrange(3, vocab) for _ in range(c)],
                   [-1.0] * c, 0.0)
        s.advantage = 1.0 if i % 2 else -1.0
        samples.append(s)
    cfg = RlCfg(minibatch=b, micro_batch_size=b)
    params = [q for q in policy.model.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)
    policy.model.train()
    for _ in range(2):  # the second step runs with Adam's moments allocated
        accumulate_gradients(policy.model, None, samples, cfg, 0, c, policy.tokenizer, contextlib.nullcontext,
                             None, "rl", 0, old_is_current=True)
        _clip_and_step(opt, params, 1.0, None, "rl", 0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def estimate(model: str, b: int, p: int, c: int) -> float:
    from compose_rl.plan import estimate as plan_estimate
    from compose_rl.plan import model_config
    from compose_rl.recipe import recipe_from_dict

    r = recipe_from_dict({"name": "check", "stages": ["rl"], "model": {"name": model, "dtype": "float32"},
                          "task": {"n_functions": 4}, "rollout": {"max_new_tokens": c, "batch_size": 1},
                          "rl": {"minibatch": b, "micro_batch_size": b}})
    cfg, _ = model_config(r)
    return plan_estimate(r, cfg, "cpu", 1024.0, prompt_tokens=p).peak_gib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = ap.parse_args()
    for model in args.models:
        b, p, c = SHAPES[model]
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                f"import plan_check as m; print('PEAK', m.measure({model!r}, {b}, {p}, {c}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("PEAK")), None)
        if line is None:
            print(f"{model}: failed\n{out.stderr[-2000:]}")
            continue
        measured = float(line.split()[1])
        est = estimate(model, b, p, c)
        print(json.dumps({"model": model, "batch": b, "prompt": p, "completion": c, "measured_peak_rss_gib": round(measured, 3),
                          "plan_gib": round(est, 3), "plan/measured": round(est / measured, 3)}), flush=True)


if __name__ == "__main__":
    main()
