"""Rollout throughput of Ray workers, side by side (no assertions: it prints numbers and ratios).

Tiny model, a rollout batch like an RL step's: 256 prompts (64 distinct, each 4 times), sampled at
temperature 1, up to 64 new tokens. For each engine (transformers, vLLM):

    in-process (1 torch thread)   |   Ray, 1 worker   |   Ray, 2 workers

and the ratios "2 workers / 1 worker" (goal >= 1.6x on 2 cores) and "Ray 1 worker / in-process"
(overhead, goal <= 10%). It also prints how much CPU the engine processes actually got and the
tokens per CPU-second, which tell a scaling problem (efficiency drops) from a busy machine (the
workers get fewer cores than they ask for). Every worker runs 1 torch thread; the driver is pinned to 1 thread too so
that the in-process baseline does the same work per core. Also the weight-sync time of the pools
(ray.put once + every actor loads) for tiny and smollm2-135m-instruct.

    OMP_NUM_THREADS=1 python bench/bench_workers.py
    OMP_NUM_THREADS=1 python bench/bench_workers.py --engines hf --repeats 5

Machines are shared: check `uptime` first and rerun if the load average was above the core count.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu_seconds(pids) -> float:
    import psutil

    if pids is None:
        return time.process_time()
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def tokens_per_s(engine, prompts, sampling, repeats, pids=None):
    """Median tokens/s over `repeats` calls, and the CPU the engine's processes used meanwhile:
    cores busy on average (cpu-s / wall-s) and tokens per CPU-second. On a shared machine a low
    'cores' number means the workers did not get the CPUs (other processes had them)."""
    from compose_rl.types import SamplingParams

    engine.generate(prompts[:8], SamplingParams(temperature=1.0, max_new_tokens=8))  # warm-up
    rates, walls, cpus, toks = [], 0.0, 0.0, 0
    for _ in range(repeats):
        c, t = _cpu_seconds(pids), time.perf_counter()
        out = engine.generate(prompts, sampling)
        dt, dc = time.perf_counter() - t, _cpu_seconds(pids) - c
        n = sum(len(c.token_ids) for comps in out for c in comps)
        rates.append(n / dt)
        walls, cpus, toks = walls + dt, cpus + dc, toks + n
    return statistics.median(rates), cpus / walls, toks / max(cpus, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="hf,vllm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--skip-sync", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from compose_rl.models import load_policy
    from compose_rl.rollout.factory import HFWorkerEngine, VLLMWorkerEngine
    from compose_rl.rollout.ray_workers import RayRolloutPool, connect_ray
    from compose_rl.rollout.vllm_engine import vllm_importable
    from compose_rl.types import SamplingParams

    engines = [e for e in args.engines.split(",") if e]
    if "vllm" in engines and not vllm_importable():
        print("vllm is not importable: skipping the vLLM rows")
        engines.remove("vllm")
    print(f"driver torch threads: {torch.get_num_threads()}  cpus: {os.cpu_count()}  "
          f"load avg: {os.getloadavg()[0]:.2f}")

    policy = load_policy("tiny", seed=0)
    policy.save(Path(tempfile.mkdtemp(prefix="bench-tiny-")))
    folder = str(policy.folder)
    distinct = [f"Apply func_{i % 20} then func_{(7 * i) % 20} to the string 'q{i}x{i * i}'. Answer:"
                for i in range(args.prompts // 4)]
    prompts = [p for p in distinct for _ in range(4)]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens)
    factories = {"hf": HFWorkerEngine(folder, batch_size=64), "vllm": VLLMWorkerEngine(folder, max_model_len=512)}

    t = time.perf_counter()
    connect_ray(None, num_cpus=os.cpu_count())
    print(f"local Ray started in {time.perf_counter() - t:.1f} s")
    print(f"\n== rollout throughput: tiny, {len(prompts)} prompts ({len(distinct)} distinct), T=1, "
          f"<= {args.max_new_tokens} new tokens, median of {args.repeats}")
    print(f"  {'engine':7s} {'in-process':>12s} {'Ray x1':>12s} {'Ray x2':>12s} {'x2 / x1':>9s} {'x1 / in-proc':>13s}")
    cpu_rows = []
    for name in engines:
        local = factories[name](0)
        r0, c0, e0 = tokens_per_s(local, prompts, sampling, args.repeats)
        del local
        gc.collect()
        rates, cores, eff = {}, {}, {}
        for n in (1, 2):
            t = time.perf_counter()
            pool = RayRolloutPool(factories[name], n)
            start_s = time.perf_counter() - t
            rates[n], cores[n], eff[n] = tokens_per_s(pool, prompts, sampling, args.repeats, pids=pool.pids)
            pool.shutdown()
            print(f"    ({name}: {n} worker(s) started in {start_s:.1f} s)")
        print(f"  {name:7s} {r0:8.0f} tok/s {rates[1]:6.0f} tok/s {rates[2]:6.0f} tok/s "
              f"{rates[2] / rates[1]:8.2f}x {100 * (r0 - rates[1]) / r0:+11.1f}%")
        cpu_rows.append((name, (c0, e0), (cores[1], eff[1]), (cores[2], eff[2])))
    print("  (x2 / x1 goal >= 1.6x; x1 / in-proc = Ray overhead as % slower than in-process, goal <= 10%)")
    print("\n  CPU the engines got (cores busy on average) and tokens per CPU-second:")
    for name, a, b, c in cpu_rows:
        print(f"  {name:7s} {a[0]:5.2f} cores {a[1]:6.0f} tok/cpu-s | {b[0]:5.2f} cores {b[1]:6.0f} tok/cpu-s | "
              f"{c[0]:5.2f} cores {c[1]:6.0f} tok/cpu-s   (in-process | Ray x1 | Ray x2)")

    if not args.skip_sync:
        print(f"\n== weight sync of a pool: ray.put once + every actor loads (HF workers), median of {args.repeats}")
        print(f"  {'model':24s} {'1 worker':>10s} {'2 workers':>10s}")
        for model in ("tiny", "smollm2-135m-instruct"):
            p = policy if model == "tiny" else load_policy(model, seed=0)
            row = []
            for n in (1, 2):
                pool = RayRolloutPool(HFWorkerEngine(str(p.folder)), n)
                times = []
                for v in range(args.repeats):
                    t = time.perf_counter()
                    pool.load_weights(p.state_dict_for_inference(), v + 1)
                    times.append(time.perf_counter() - t)
                pool.shutdown()
                row.append(statistics.median(times))
            print(f"  {model:24s} {row[0] * 1e3:7.1f} ms {row[1] * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
