"""Stage-1 (SFT) seconds per step of the main job's model: precision x threads x machine load.

The main job is recipes/spiral-kuhn.yaml (tiny model, batch 32). For every configuration a fresh
policy (same seed) runs `--steps` SFT steps through compose_rl.sft.stage.run_sft (TRL's
SFTTrainer, as in the pipeline); the first `--warmup` steps are discarded and the median step
time is reported. Configurations:

    before:  bf16 autocast (TRL's default bf16=True), torch's default threads (the CPUs we have)
    after:   float32 (model.dtype auto resolves to it for tiny on CPU), 1 thread (runtime.threads auto)
    and the two crossings (bf16 / 1 thread, float32 / default threads)

each with the machine as it is ("idle") and with one core held by a spinning process ("busy";
started and stopped by this script). Prints the CPU's bf16 flags with the table and the ratios
busy/idle and before/after. No assertions: numbers for docs/results/scale.md.

    OMP_NUM_THREADS=1 nice -n 5 python bench/bench_threads.py
    OMP_NUM_THREADS=1 nice -n 5 python bench/bench_threads.py --steps 30 --configs after before

Machines are shared: check `uptime` first; the "idle" rows are only idle if the machine is.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {"before": ("bfloat16", None), "after": ("float32", 1),
           "bf16-1thread": ("bfloat16", 1), "fp32-default-threads": ("float32", None)}


def sft_step_times(recipe_path: str, dtype: str, threads: int, steps: int) -> list[float]:
    import torch
    from transformers import TrainerCallback

    from compose_rl.pipeline import Pipeline
    from compose_rl.recipe import load_recipe
    from compose_rl.rundir import RunDir
    from compose_rl.sft.stage import run_sft

    torch.set_num_threads(threads)
    out = tempfile.mkdtemp(prefix="bench-threads-")
    recipe = load_recipe(recipe_path, [f"sft.max_steps={steps}", f"runtime.threads={threads}",
                                       f"model.dtype={dtype}", f"output={out}"])
    pipe = Pipeline(recipe, RunDir(Path(out) / "run"))
    pipe.build()
    torch.set_num_threads(threads)
    pairs = pipe.sft_pairs()
    stamps: list[float] = []

    class _Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    run_sft(pipe.policy, pairs, recipe.sft, pipe.run, "bench", recipe.seed, dtype=dtype, callbacks=(_Clock(),))
    return [b - a for a, b in zip([t0] + stamps[:-1], stamps)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/spiral-kuhn.yaml")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--configs", nargs="+", default=["after", "before"], choices=list(CONFIGS))
    ap.add_argument("--loads", nargs="+", default=["idle", "busy"], choices=["idle", "busy"])
    args = ap.parse_args()

    from compose_rl.precision import cpu_flags, cpu_native_bf16

    flags = cpu_flags()
    cores = len(os.sched_getaffinity(0))
    shown = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    print(f"CPU: {cores} cores; flags {' '.join(shown) or '(none of avx2/avx512/amx)'}; "
          f"native bf16: {cpu_native_bf16(flags)}; load average {os.getloadavg()[0]:.2f}")
    results: dict[tuple[str, str], float] = {}
    for load in args.loads:
        spinner = None
        if load == "busy":  # one core held, as a test run or another job would
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for name in args.configs:
                dtype, threads = CONFIGS[name]
                n = threads or cores
                # each configuration in its own process: torch's thread pool is sized once per process
                code = (f"import json,sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_threads as b; "
                        f"print('TIMES', json.dumps(b.sft_step_times({args.recipe!r}, {dtype!r}, {n}, {args.steps})))")
                env = {**os.environ, "OMP_NUM_THREADS": str(n)}
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("TIMES")), None)
                if line is None:
                    print(f"{name} {load}: failed\n{proc.stderr[-2000:]}")
                    continue
                import json

                times = json.loads(line.split(" ", 1)[1])[args.warmup:]
                med = statistics.median(times)
                results[(name, load)] = med
                print(f"{name:22s} dtype={dtype:8s} threads={n}  {load:4s}  {med:.3f} s/step "
                      f"(median of {len(times)}; min {min(times):.3f}, max {max(times):.3f})", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    for name in args.configs:
        if (name, "idle") in results and (name, "busy") in results:
            print(f"{name}: busy / idle = {results[(name, 'busy')] / results[(name, 'idle')]:.2f}x")
    for load in args.loads:
        if ("before", load) in results and ("after", load) in results:
            print(f"{load}: before / after = {results[('before', load)] / results[('after', load)]:.2f}x")


if __name__ == "__main__":
    main()
