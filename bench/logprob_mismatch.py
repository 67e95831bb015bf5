"""Sampler/learner log-prob gap by precision, tiny model (what `rollout/logprob_mismatch` logs in RL).

The in-process transformers engine samples 48 completions (12 prompts x 4, temperature 1, up to 16
tokens) in float32 or under bf16 autocast and reports each token's log-prob; the learner's
`completion_logprobs` re-scores the same tokens in float32 and under bf16 autocast. Prints the mean and max
|engine - learner| per token for each. No assertions.

    OMP_NUM_THREADS=1 python bench/logprob_mismatch.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from compose_rl.models import load_policy
    from compose_rl.precision import autocast
    from compose_rl.rl.logprobs import completion_logprobs
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.types import SamplingParams

    torch.set_num_threads(1)
    p = load_policy("tiny", seed=0)
    for engine_dtype in ("float32", "bfloat16"):
        engine = HFEngine(p.model, p.tokenizer, dtype=engine_dtype)
        outs = engine.generate(["K\n", "Q\n", "J\n"] * 4, SamplingParams(temperature=1.0, max_new_tokens=16, n=4, seed=0))
        flat = [c for o in outs for c in o]
        for dtype in ("float32", "bfloat16"):
            with torch.no_grad(), autocast("cpu", dtype):
                lp, _ = completion_logprobs(p.model, [c.prompt_ids for c in flat], [c.token_ids for c in flat], pad=0)
            d = [abs(a - b) for i, c in enumerate(flat) for a, b in zip(c.logprobs, lp[i, : len(c.token_ids)].tolist())]
            print(f"engine {engine_dtype:8s} learner {dtype:8s}: {len(d)} tokens, mean |engine - learner| "
                  f"{sum(d) / len(d):.2e}, max {max(d):.2e}")

if __name__ == "__main__":
    main()
