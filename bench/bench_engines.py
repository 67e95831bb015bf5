"""vLLM engine vs transformers engine, side by side (no assertions: it prints numbers and ratios).

1. Generation tokens/s on smollm2-135m-instruct: the same 16 chat prompts in one batch, greedy,
   up to 128 new tokens (greedy makes both engines produce the same tokens, so the work is equal).
2. Weight-sync time per engine and model size (tiny, smollm2): `engine.load_weights(
   policy.state_dict_for_inference(), v)` — HF: load_state_dict into the engine's own copy of the
   model; vLLM: in-place reload_weights + prefix-cache reset.

    OMP_NUM_THREADS=2 python bench/bench_engines.py            # both parts
    python bench/bench_engines.py --skip-gen --repeats 5       # only weight sync

Machines are shared: check `uptime` first and rerun if the load average was above the core count.
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Write a haiku about autumn.",
    "Explain what a prime number is.", "Give me a tip for learning to cook.", "What does a CPU do?",
    "Describe a cat in one sentence.", "Why is the sky blue?", "List four planets.",
    "What is 12 times 7? Explain.", "Suggest a name for a bakery.", "What is photosynthesis?",
    "How do I boil an egg?", "Tell me a fun fact about octopuses.", "What is the opposite of 'ancient'?",
    "Write one sentence about the sea.",
]


def load(name: str):
    from compose_rl.models import load_policy

    p = load_policy(name, seed=0)
    if p.folder is None:
        p.save(Path(tempfile.mkdtemp(prefix=f"bench-{name}-")))
    return p


def hf_engine(policy):
    """An HFEngine over its OWN copy of the weights (as a rollout worker would hold)."""
    from compose_rl.rollout.hf import HFEngine

    return HFEngine(copy.deepcopy(policy.model).eval(), policy.tokenizer, batch_size=16)


def vllm_engine(policy):
    from compose_rl.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(policy.folder, seed=0, max_model_len=1024)


def time_generate(engine, prompts, sampling, repeats):
    engine.generate(prompts[:2], type(sampling)(temperature=0.0, max_new_tokens=8))  # warm-up
    rates, tokens = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        out = engine.generate(prompts, sampling)
        dt = time.perf_counter() - t
        tokens = sum(len(c.token_ids) for comps in out for c in comps)
        rates.append(tokens / dt)
    return statistics.median(rates), tokens, out


def time_sync(engine, policy, repeats):
    times = []
    for v in range(repeats):
        t = time.perf_counter()
        engine.load_weights(policy.state_dict_for_inference(), v + 1)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# CPU features that decide which kernels torch and vLLM's CPU backend can use
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def machine() -> str:
    """One line: CPU model, logical CPUs, which of CPU_FLAGS the CPU has, and which it lacks (from
    /proc/cpuinfo; 'unknown' where that file does not exist)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())  # the first processor's entry
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    has = [f for f in CPU_FLAGS if f in flags]
    lacks = [f for f in CPU_FLAGS if f not in flags]
    return (f"cpu: {info.get('model name', 'unknown')} x {os.cpu_count()} logical; flags: {' '.join(has) or 'unknown'}"
            + (f"; lacks: {' '.join(lacks)}" if flags and lacks else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--skip-gen", action="store_true")
    ap.add_argument("--skip-sync", action="store_true")
    args = ap.parse_args()

    import torch

    from compose_rl.rollout.vllm_engine import vllm_importable
    from compose_rl.types import SamplingParams

    has_vllm = vllm_importable()
    print(machine())
    print(f"torch threads: {torch.get_num_threads()}  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}  "
          f"cpus: {os.cpu_count()}  load avg: {os.getloadavg()[0]:.2f}  vllm: {'yes' if has_vllm else 'NOT importable'}")

    if not args.skip_gen:
        policy = load("smollm2-135m-instruct")
        prompts = [policy.format_prompt(q) for q in QUESTIONS]
        sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
        print(f"\n== generation: smollm2-135m-instruct, batch {len(prompts)}, <= {args.max_new_tokens} new tokens, greedy, "
              f"median of {args.repeats}")
        hf = hf_engine(policy)
        hf_rate, hf_tok, hf_out = time_generate(hf, prompts, sampling, args.repeats)
        del hf
        gc.collect()
        print(f"  transformers : {hf_rate:8.1f} tok/s  ({hf_tok} tokens)")
        if has_vllm:
            ve = vllm_engine(policy)
            v_rate, v_tok, v_out = time_generate(ve, prompts, sampling, args.repeats)
            same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(hf_out, v_out))
            print(f"  vLLM         : {v_rate:8.1f} tok/s  ({v_tok} tokens)")
            print(f"  ratio vLLM / transformers: {v_rate / hf_rate:.2f}x   (goal >= 3x; identical greedy "
                  f"completions: {same}/{len(prompts)})")
            del ve
            gc.collect()
        del policy
        gc.collect()

    if not args.skip_sync:
        print(f"\n== weight sync: load_weights(policy.state_dict_for_inference()), median of {args.repeats}")
        print(f"  {'model':24s} {'params':>8s} {'transformers':>13s} {'vLLM':>10s} {'vLLM/HF':>8s}")
        for name in ("tiny", "smollm2-135m-instruct"):
            policy = load(name)
            n = sum(p.numel() for p in policy.model.parameters())
            hf = hf_engine(policy)
            t_hf = time_sync(hf, policy, args.repeats)
            del hf
            t_v = float("nan")
            if has_vllm:
                ve = vllm_engine(policy)
                t_v = time_sync(ve, policy, args.repeats)
                del ve
            gc.collect()
            print(f"  {name:24s} {n / 1e6:7.2f}M {t_hf * 1e3:10.1f} ms {t_v * 1e3:7.1f} ms {t_v / t_hf:7.2f}x")
            del policy
            gc.collect()


if __name__ == "__main__":
    main()
