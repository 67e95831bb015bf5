"""Rollout throughput of Ray workers, side by side (no assertions: it prints numbers and ratios).

Tiny model, a rollout batch like an RL step's: 256 prompts (64 distinct, each 4 times), sampled at
temperature 1, up to 64 new tokens. For each engine (transformers, vLLM):

    in-process (1 torch thread)   |   Ray, 1 worker   |   Ray, 2 workers

all three alive at once and called in a rotating order each round (so load drifts hit all alike),
and the ratios "2 workers / 1 worker" (goal >= 1.6x on 2 cores) and "Ray 1 worker / in-process"
(overhead, goal <= 10%). It also prints how much CPU the engine processes actually got and the
tokens per CPU-second, which tell a scaling problem (efficiency drops) from a busy machine (the
workers get fewer cores than they ask for). Every worker runs 1 torch thread; the driver is pinned to 1 thread too so
that the in-process baseline does the same work per core. Also the weight-sync time of the pools
for tiny and smollm2-135m-instruct, object store (ray.put once + every actor loads) vs collective
(`rollout.weight_sync: collective`, gloo broadcast from the learner + every actor loads).

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


def interleaved_tokens_per_s(engines: dict, prompts, sampling, repeats) -> dict:
    """Median tokens/s per engine over `repeats` rounds; each round calls every engine once, in a
    rotating order, so that a drift in machine load hits all of them alike. Also the CPU each
    engine's processes used meanwhile: cores busy on average (cpu-s / wall-s) and tokens per
    CPU-second. On a shared machine a low 'cores' number means the workers did not get the CPUs
    (other processes had them). `engines`: name -> (engine, pids or None for this process)."""
    from compose_rl.types import SamplingParams

    for eng, _ in engines.values():  # warm-up
        eng.generate(prompts[:8], SamplingParams(temperature=1.0, max_new_tokens=8))
    names = list(engines)
    rates = {n: [] for n in names}
    walls, cpus, toks = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    for k in range(repeats):
        for n in names[k % len(names):] + names[: k % len(names)]:
            eng, pids = engines[n]
            c, t = _cpu_seconds(pids), time.perf_counter()
            out = eng.generate(prompts, sampling)
            dt, dc = time.perf_counter() - t, _cpu_seconds(pids) - c
            m = sum(len(c.token_ids) for comps in out for c in comps)
            rates[n].append(m / dt)
            walls[n] += dt
            cpus[n] += dc
            toks[n] += m
    return {n: (statistics.median(rates[n]), cpus[n] / walls[n], toks[n] / max(cpus[n], 1e-9)) for n in names}


def _timed_generate(worker, prompts, sampling):
    """Runs inside the actor: its engine's generate, timed there (seconds, and the output)."""
    t = time.perf_counter()
    out = worker.engine.generate(prompts, sampling)
    return time.perf_counter() - t, out


def ray_call_cost(pool, prompts, sampling, repeats: int) -> tuple[float, float]:
    """Ray's own cost per generate call on a 1-worker pool: driver round trip minus the time the
    engine spent inside the actor (task submission, argument/result serialisation, scheduling).
    Returns (median cost in s, median round trip in s). Independent of how fast the process is."""
    import ray

    actor = pool._actors[0]
    costs, trips = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        inner, _ = ray.get(actor.__ray_call__.remote(_timed_generate, prompts, sampling))
        trip = time.perf_counter() - t
        costs.append(trip - inner)
        trips.append(trip)
    return statistics.median(costs), statistics.median(trips)


def _plain_worker(factory, prompts, sampling, repeats, barrier, queue) -> None:
    """A plain process (no Ray): build the engine, then time `repeats` generate calls started
    together with the other processes (barrier before each)."""
    import torch

    torch.set_num_threads(1)
    from compose_rl.types import SamplingParams

    engine = factory(0)
    engine.generate(prompts[:8], SamplingParams(temperature=1.0, max_new_tokens=8))
    out = []
    for _ in range(repeats):
        barrier.wait()
        t = time.perf_counter()
        res = engine.generate(prompts, sampling)
        out.append((t, time.perf_counter(), sum(len(c.token_ids) for comps in res for c in comps)))
    queue.put(out)


def plain_processes_tokens_per_s(factory, prompts, sampling, n: int, repeats: int) -> float:
    """The machine's own ceiling for this workload: n plain processes (multiprocessing, no Ray),
    each with its own engine and 1/n of the prompts, started together; median tokens/s over
    rounds (tokens of all processes / time from the first start to the last finish)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    shards = [prompts[k * len(prompts) // n:(k + 1) * len(prompts) // n] for k in range(n)]
    procs = [ctx.Process(target=_plain_worker, args=(factory, shards[k], sampling, repeats, barrier, queue))
             for k in range(n)]
    for pr in procs:
        pr.start()
    per_proc = [queue.get() for _ in procs]
    for pr in procs:
        pr.join()
    rates = []
    for r in range(repeats):
        starts, ends, toks = zip(*(pp[r] for pp in per_proc))
        rates.append(sum(toks) / (max(ends) - min(starts)))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="hf,vllm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--skip-sync", action="store_true")
    ap.add_argument("--skip-ceiling", action="store_true",
                    help="skip the plain-process (no Ray) 1 vs 2 ceiling measurement")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from compose_rl.models import load_policy
    from compose_rl.rollout.factory import HFWorkerEngine, VLLMWorkerEngine
    from compose_rl.rollout.ray_connect import connect_ray
    from compose_rl.rollout.ray_workers import RayRolloutPool
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
    # 3 actors are alive at once (1 + 2), one logical CPU each; only one pool works at a time
    connect_ray(None, num_cpus=2 * (os.cpu_count() or 1))
    print(f"local Ray started in {time.perf_counter() - t:.1f} s")
    print(f"\n== rollout throughput: tiny, {len(prompts)} prompts ({len(distinct)} distinct), T=1, "
          f"<= {args.max_new_tokens} new tokens, median of {args.repeats}")
    print(f"  {'engine':7s} {'in-process':>12s} {'Ray x1':>12s} {'Ray x2':>12s} {'x2 / x1':>9s} {'x1 / in-proc':>13s}")
    cpu_rows = []
    for name in engines:
        local = factories[name](0)
        pools, starts = {}, {}
        for n in (1, 2):
            t = time.perf_counter()
            pools[n] = RayRolloutPool(factories[name], n)
            starts[n] = time.perf_counter() - t
            print(f"    ({name}: {n} worker(s) started in {starts[n]:.1f} s)")
        res = interleaved_tokens_per_s({"in": (local, None), 1: (pools[1], pools[1].pids), 2: (pools[2], pools[2].pids)},
                                       prompts, sampling, args.repeats)
        cost, trip = ray_call_cost(pools[1], prompts, sampling, args.repeats)
        for pool in pools.values():
            pool.shutdown()
        del local
        gc.collect()
        (r0, c0, e0), (r1, c1, e1), (r2, c2, e2) = res["in"], res[1], res[2]
        print(f"  {name:7s} {r0:8.0f} tok/s {r1:6.0f} tok/s {r2:6.0f} tok/s "
              f"{r2 / r1:8.2f}x {100 * (r0 - r1) / r0:+11.1f}%")
        cpu_rows.append((name, (c0, e0), (c1, e1), (c2, e2)))
        print(f"  {'':7s} Ray's own cost per call (round trip - time inside the actor): {cost * 1e3:.1f} ms "
              f"of {trip * 1e3:.0f} ms = {100 * cost / trip:.1f}%")
    print("  (x2 / x1 goal >= 1.6x; x1 / in-proc = Ray overhead as % slower than in-process, goal <= 10%)")
    if not args.skip_ceiling:
        print(f"\n== the machine's ceiling for the same work without Ray: 1 vs 2 plain processes "
              f"(each its own engine, half the prompts each), median of {args.repeats}")
        for name in engines:
            one = plain_processes_tokens_per_s(factories[name], prompts, sampling, 1, args.repeats)
            two = plain_processes_tokens_per_s(factories[name], prompts, sampling, 2, args.repeats)
            print(f"  {name:7s} 1 process {one:6.0f} tok/s   2 processes {two:6.0f} tok/s   {two / one:5.2f}x")
    print("\n  CPU the engines got (cores busy on average) and tokens per CPU-second:")
    for name, a, b, c in cpu_rows:
        print(f"  {name:7s} {a[0]:5.2f} cores {a[1]:6.0f} tok/cpu-s | {b[0]:5.2f} cores {b[1]:6.0f} tok/cpu-s | "
              f"{c[0]:5.2f} cores {c[1]:6.0f} tok/cpu-s   (in-process | Ray x1 | Ray x2)")

    if not args.skip_sync:
        print(f"\n== weight sync of a pool (HF workers), median of {args.repeats}: object store (ray.put once + "
              f"every actor loads) vs collective (gloo broadcast of flat buffers from the learner + every actor loads)")
        print(f"  {'model':24s} {'store x1':>10s} {'store x2':>10s} {'gloo x1':>10s} {'gloo x2':>10s}")
        for model in ("tiny", "smollm2-135m-instruct"):
            p = policy if model == "tiny" else load_policy(model, seed=0)
            row = []
            for mode in ("object_store", "collective"):
                for n in (1, 2):
                    pool = RayRolloutPool(HFWorkerEngine(str(p.folder)), n, weight_sync=mode)
                    pool.load_weights(p.state_dict_for_inference(), 0)  # forms the group (collective)
                    times = []
                    for v in range(args.repeats):
                        t = time.perf_counter()
                        pool.load_weights(p.state_dict_for_inference(), v + 1)
                        times.append(time.perf_counter() - t)
                    pool.shutdown()
                    row.append(statistics.median(times))
            print(f"  {model:24s} " + " ".join(f"{x * 1e3:7.1f} ms" for x in row))


if __name__ == "__main__":
    main()
