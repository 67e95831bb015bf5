"""GPU check (issue 4, part 7): a few learner steps of spiral-kuhn on a CUDA GPU, with the
transformers engine and, where vLLM is installed, the vLLM engine; prints step time and memory.

    python bench/gpu_check.py                                  # 5 RL steps, tiny model, every engine available
    python bench/gpu_check.py --steps 10 --model smollm2-135m-instruct
    python bench/gpu_check.py --device cpu --steps 2           # dry run of the script on a CPU machine
    python bench/gpu_check.py --engines hf,vllm,vllm@1         # + vLLM in 1 Ray worker (engine@workers)

Only the RL stage runs (no SFT, no evals): the numbers are learner steps (rollouts -> advantages ->
loss -> optimizer step -> weight sync). The policy is moved to the GPU after the pipeline builds it;
the transformers engine shares that module, the vLLM engine runs in process on the same GPU
(`gpu_memory_utilization` 0.3, 1 GiB KV cache) and receives the weights after every step.
Memory: peak torch allocations of this process (learner + in-process vLLM) and the device memory in
use at the end (includes vLLM's reservation). Where vLLM is not installed the vLLM row says so, with
the one-line validation error a recipe asking for it gets.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe_for(engine: str, args):
    """`engine` is hf | vllm, optionally @N for N Ray rollout workers (weights via rollout.weight_sync: auto)."""
    from compose_rl.recipe import recipe_from_dict

    engine, _, workers = engine.partition("@")

    d = yaml.safe_load((ROOT / "recipes" / "spiral-kuhn.yaml").read_text())
    d["name"] = f"{d['name']}-gpucheck-{engine}"
    d["output"] = args.output
    d["stages"] = ["rl"]
    d["model"]["name"] = args.model
    d["rollout"]["engine"] = engine
    d["rollout"]["workers"] = int(workers or 0)
    d["rl"].update(steps=args.steps, eval_every=0, checkpoint_every=max(args.steps, 1),
                   games_per_step=args.games_per_step)
    return recipe_from_dict(d, f"spiral-kuhn ({engine})")


def run_one(engine: str, args, device: str) -> dict:
    import torch

    from compose_rl.pipeline import start_run

    recipe = recipe_for(engine, args)
    pipe = start_run(recipe)
    t = time.perf_counter()
    pipe.build()
    pipe.policy.model.to(device)
    build_s = time.perf_counter() - t
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    pipe.stage_rl(0, "rl", None)
    wall = time.perf_counter() - t
    rows = [r for r in pipe.run.read_metrics() if r.get("stage") == "rl" and "perf/step_s" in r]
    steady = rows[1:] or rows  # the first step includes warm-up

    def med(key):
        vals = [r[key] for r in steady if key in r]
        return statistics.median(vals) if vals else float("nan")

    out = {"engine": engine, "build_s": build_s, "wall_s": wall, "steps": len(rows),
           "step_s": med("perf/step_s"), "gen_s": med("perf/gen_s"), "learn_s": med("perf/learn_s"),
           "sync_s": med("perf/sync_s"), "tok_s": med("perf/tokens_per_s")}
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        out["peak_alloc_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["in_use_gb"] = (total - free) / 2**30
        out["total_gb"] = total / 2**30
    if hasattr(pipe.engine, "shutdown"):  # Ray workers
        pipe.engine.shutdown()
    del pipe
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="a few spiral-kuhn learner steps on a GPU: step time and memory")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--games-per-step", type=int, default=64)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--engines", default="hf,vllm")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--output", default=str(Path(tempfile.gettempdir()) / "compose-rl-gpu-check"))
    args = ap.parse_args()

    import torch

    from compose_rl.recipe import RecipeError
    from compose_rl.rollout.vllm_engine import vllm_importable

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            print("no CUDA GPU here: nothing to check (use --device cpu for a dry run of this script)")
            return 0
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda but torch sees no CUDA GPU (a CPU-only torch build?)")
        return 1
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"device: {name}  torch {torch.__version__}  model: {args.model}  steps: {args.steps}  "
          f"games/step: {args.games_per_step}")

    results, notes = [], []
    for engine in [e for e in args.engines.split(",") if e]:
        if engine.startswith("vllm") and not vllm_importable():
            try:
                recipe_for("vllm", args)
                notes.append("vllm: not importable, but the recipe validated (unexpected)")
            except RecipeError as e:
                notes.append(f"vllm: skipped, not installed -> a recipe asking for it fails at validation: {e}")
            continue
        try:
            results.append(run_one(engine, args, device))
        except Exception as e:  # noqa: BLE001 - report and go on with the next engine
            notes.append(f"{engine}: FAILED: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")

    cols = ["engine", "steps", "step_s", "gen_s", "learn_s", "sync_s", "tok_s", "build_s"]
    if device == "cuda":
        cols += ["peak_alloc_gb", "in_use_gb"]
    print("\n" + "  ".join(f"{c:>13s}" for c in cols))
    for r in results:
        print("  ".join(f"{r[c]:>13.3f}" if isinstance(r[c], float) else f"{r[c]!s:>13s}" for c in cols))
    by = {r["engine"]: r for r in results}
    if "hf" in by and "vllm" in by:
        print(f"\nstep time hf / vllm: {by['hf']['step_s'] / by['vllm']['step_s']:.2f}x   "
              f"generation hf / vllm: {by['hf']['gen_s'] / by['vllm']['gen_s']:.2f}x")
    for n in notes:
        print(n)
    print("(median over steps after the first; times in seconds, tok_s = generated tokens per second)")
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
