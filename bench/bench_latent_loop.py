"""What the latent loop costs: training-step time and generation tokens/s for latent.steps = 0 / 4 / 8,
side by side in one process (no assertions: it prints times and the ratios to steps = 0).
The `+probe` column is the same training step with the per-sample credit probe the trainer runs
(trainer.latent_credit: one extra backward to the latent inputs), as a ratio to the plain step.

Tiny model (the latent-loop-strcomp recipe's size), string-task prompts. A training step is the
trainer's forward + backward through the loop on a batch of 32 (prompt, answer) pairs; generation
is 64 prompts x 4 samples, T=1, <= 24 tokens. Calls are interleaved (K=0, 4, 8, K=0, ...) so that
load drifts hit every K alike; medians over rounds.

    OMP_NUM_THREADS=1 python bench/bench_latent_loop.py
    OMP_NUM_THREADS=1 python bench/bench_latent_loop.py --steps 0,2,4,8,16 --rounds 8
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="0,4,8", help="latent steps to compare (comma-separated)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from compose_rl.experimental.latent_loop import LatentLoop, LatentLoopEngine
    from compose_rl.experimental.trainer import latent_credit
    from compose_rl.models import TinySpec, load_policy
    from compose_rl.sft.stage import encode_pair
    from compose_rl.types import SamplingParams
    from synthetic_tasks.strcomp import StrCompTask

    ks = [int(k) for k in args.steps.split(",")]
    policy = load_policy("tiny", seed=0, tiny=TinySpec(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512))
    task = StrCompTask(seed=0, n_functions=12)
    items = task.composite_examples(32, seed=0, depths=(1, 2))
    pairs = [encode_pair(policy, p.prompt, p.target) for p in items]
    prompts = [policy.format_prompt(p.prompt) for p in task.rl_problems(64, seed=1)]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=24, n=4, seed=0)
    loops = {k: LatentLoop(policy.model, k) for k in ks}  # one model, K-specific bridges
    engines = {k: LatentLoopEngine(loops[k], policy.tokenizer) for k in ks}
    train_s = {k: [] for k in ks}
    probe_s = {k: [] for k in ks}
    gen = {k: [] for k in ks}
    for r in range(args.rounds + 1):  # round 0 is warm-up
        for k in ks:
            loop = loops[k]
            t = time.perf_counter()
            logp, mask, _ = loop.answer_logprobs([p for p, _ in pairs], [c for _, c in pairs], 0)
            (-logp.sum() / mask.sum()).backward()
            loop.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t
            t = time.perf_counter()
            logp, mask, latents = loop.answer_logprobs([p for p, _ in pairs], [c for _, c in pairs], 0)
            latent_credit(latents, logp, mask)
            (-logp.sum() / mask.sum()).backward()
            loop.zero_grad(set_to_none=True)
            dp = time.perf_counter() - t
            t = time.perf_counter()
            out = engines[k].generate(prompts, sampling)
            dg = time.perf_counter() - t
            if r:
                train_s[k].append(dt)
                probe_s[k].append(dp)
                gen[k].append(sum(len(c.token_ids) for cs in out for c in cs) / dg)
    base_t, base_g = statistics.median(train_s[ks[0]]), statistics.median(gen[ks[0]])
    print(f"latent loop cost, tiny model, median of {args.rounds} interleaved rounds (load avg {os.getloadavg()[0]:.2f})")
    print(f"  {'steps':>5s} {'train step':>11s} {'vs K=' + str(ks[0]):>8s} {'+probe':>7s} {'gen tok/s':>10s} {'vs K=' + str(ks[0]):>8s}")
    for k in ks:
        t, g, tp = statistics.median(train_s[k]), statistics.median(gen[k]), statistics.median(probe_s[k])
        print(f"  {k:5d} {t * 1e3:8.1f} ms {t / base_t:7.2f}x {tp / t:6.2f}x {g:10.0f} {g / base_g:7.2f}x")


if __name__ == "__main__":
    main()
