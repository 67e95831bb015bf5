"""What the recurrent-depth policy costs: training-step time and generation time vs the depth r, with and
without the per-iteration KV cache, beside the analytic FLOPs per answer the study's FLOPs column uses
(no assertions: it prints times, FLOPs and the ratios to r = 1).

Model: the recipe's tiny Llama and loop split (default recipes/recurrent-depth-strcomp.yaml: d 128, 2 layers,
prelude 1 / core 1 / coda 0; --recipe to use another), its string-task functions and prompts. A training step is one SFT step through the loop on 32 (prompt, answer) pairs (every readout
supervised, as the recipe's sft_readout: all) and, in the `k=1` column, with the gradient through the
last iteration only (recurrent.backprop_steps = 1). Generation: 16 prompts x 2 samples, T = 1, 16 new
tokens forced (EOS suppressed, so every r decodes the same number of tokens). Calls are interleaved over
r per round so that load drifts hit every r alike; medians over rounds.

FLOPs (recurrent_depth.flops_per_answer, forward only, 2 per multiply-add): (prelude + r x core + coda)
layer passes per token (+ attention over the context, the 2d -> d adapter per iteration, the LM head), for
the mean prompt length and a 16-token answer; uncached = every token recomputes the whole sequence.

    OMP_NUM_THREADS=1 python bench/bench_recurrent_depth.py
    OMP_NUM_THREADS=1 python bench/bench_recurrent_depth.py --depths 1,2,4,8,16 --rounds 5
    OMP_NUM_THREADS=1 python bench/bench_recurrent_depth.py --recipe recipes/recurrent-depth-strcomp.yaml \
        model.tiny.num_layers=4 model.tiny.intermediate_size=256 recurrent.core=2 recurrent.coda=1   # last round's shape
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
    ap.add_argument("--depths", default="1,2,4,8", help="depths r to compare (comma-separated)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "recipes" / "recurrent-depth-strcomp.yaml"))
    ap.add_argument("overrides", nargs="*", help="key=value recipe overrides (model.tiny.*, recurrent.prelude/core/coda)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from compose_rl.cli import _load
    from compose_rl.experimental.recurrent_depth import LoopedEngine, LoopedLM, LoopSpec, flops_per_answer
    from compose_rl.experimental.recurrent_train import sft_loss
    from compose_rl.models import TinySpec, load_policy
    from compose_rl.sft.stage import encode_pair
    from compose_rl.types import SamplingParams
    from synthetic_tasks.strcomp import StrCompTask

    depths = [int(x) for x in args.depths.split(",")]
    recipe = _load(args.recipe, args.overrides)
    rc = recipe.recurrent
    policy = load_policy("tiny", seed=0, tiny=TinySpec(**recipe.model.tiny.model_dump()))
    task = StrCompTask(seed=0, only=tuple(recipe.task.functions), test_depths=(1, 2, 3, 4))
    pairs = [encode_pair(policy, p.prompt, p.target) for p in task.composite_examples(32, seed=0, depths=(1, 2))]
    prompts = [policy.format_prompt(p.prompt) for p in task.eval_problems(2, 16)]
    models = {(r, k): LoopedLM(policy.model, LoopSpec(prelude=rc.prelude, core=rc.core, coda=rc.coda, depth=r, backprop_steps=k))
              for r in depths for k in (0, 1)}
    eos = policy.tokenizer.eos_token_id
    head = policy.model.lm_head
    handle = head.register_forward_hook(lambda m, i, out: out.index_fill(-1, torch.tensor([eos]), -1e9))
    sampling = SamplingParams(temperature=1.0, max_new_tokens=args.tokens, n=2, seed=0)
    times: dict[str, dict[int, list[float]]] = {c: {r: [] for r in depths} for c in ("train", "train_k1", "gen_cache", "gen_nocache")}
    for _ in range(args.rounds):
        for r in depths:
            for col, k in (("train", 0), ("train_k1", 1)):
                lm = models[(r, k)]
                lm.train()
                t0 = time.perf_counter()
                loss, _ = sft_loss(lm, [p for p, _ in pairs], [c for _, c in pairs], 0, r, list(range(len(pairs))))
                loss.backward()
                times[col][r].append(time.perf_counter() - t0)
                policy.model.zero_grad(set_to_none=True)
            for col, cached in (("gen_cache", True), ("gen_nocache", False)):
                eng = LoopedEngine(models[(r, 0)], policy.tokenizer, batch_size=64, use_cache=cached)
                t0 = time.perf_counter()
                eng.generate(prompts, sampling)
                times[col][r].append(time.perf_counter() - t0)
    handle.remove()
    plen = round(sum(len(policy.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts) / len(prompts))
    cfg = models[(depths[0], 0)].config
    spec = models[(depths[0], 0)].spec
    med = {c: {r: statistics.median(v) for r, v in d.items()} for c, d in times.items()}
    r0 = depths[0]
    print(f"recurrent depth, d={cfg.hidden_size}, prelude/core/coda = {rc.prelude}/{rc.core}/{rc.coda}, prompt {plen} tokens, answer {args.tokens} tokens, "
          f"medians of {args.rounds} rounds (times in s; x = ratio to r={r0})")
    print(f"{'r':>3} | {'train step':>14} | {'train k=1':>14} | {'gen cached':>14} | {'gen no cache':>14} | "
          f"{'no cache/cache':>14} | {'GFLOP/answer':>12} | {'uncached':>12} | {'FLOPs x':>7}")
    f0 = flops_per_answer(cfg, spec, r0, plen, args.tokens)
    for r in depths:
        f = flops_per_answer(cfg, spec, r, plen, args.tokens)
        fu = flops_per_answer(cfg, spec, r, plen, args.tokens, cached=False)
        cells = [f"{med[c][r]:.3f} ({med[c][r] / med[c][r0]:4.1f}x)" for c in ("train", "train_k1", "gen_cache", "gen_nocache")]
        print(f"{r:>3} | " + " | ".join(f"{x:>14}" for x in cells) +
              f" | {med['gen_nocache'][r] / med['gen_cache'][r]:>13.1f}x | {f / 1e9:>12.4f} | {fu / 1e9:>12.4f} | {f / f0:>6.2f}x")
    print(f"plain model (all {cfg.num_hidden_layers} layers once) = r=1; a plain model matched in FLOPs at depth r has "
          f"{rc.prelude + rc.coda} + {rc.core}r layers.")


if __name__ == "__main__":
    main()
