"""GPU check (issue 4, part 7; issue 19, item 10): two modes.

`--memory` (issue 19): the scale check for a lent GPU (torch with CUDA, no vLLM, no model hub).
Asserts CUDA, builds a randomly initialised model of the GPU recipe's shape from its config.json
(default: recipes/gpu/spiral-kuhn-qwen3-4b.yaml with tests/fixtures/qwen3-4b-base/config.json), and
takes one SFT step (sft.batch_size sequences of prompt + 64 tokens, cross-entropy on every position,
AdamW) and one RL learner step (compose_rl.rl.learner.accumulate_gradients: micro-batches of
rl.micro_batch_size sequences of prompt + rollout.max_new_tokens tokens) in the resolved precision
(bf16 autocast on a bf16 GPU), with the recipe's gradient checkpointing. It prints one summary line:
peak torch memory beside `compose-rl plan`'s learner-phase estimate for the same shape (vLLM's share
left out: it is not installed there) and exits non-zero when CUDA is not usable or the ratio leaves
[0.8, 1.2]. NEVER RUN ON A GPU YET (no GPU was lent while it was written); `--device cpu --shape
small` dry-runs the same code on a CPU with a scaled-down config (what the tests do). It needs
pydantic and open-spiel on the lent machine (the recipe's validation imports them): carry their
wheels in the working tree and `pip install --no-index --find-links <dir> pydantic open-spiel`.

    python bench/gpu_check.py --memory                                 # Qwen3-4B shape, 8 RL samples
    python bench/gpu_check.py --memory --rl-samples 128                # the recipe's whole minibatch
    python bench/gpu_check.py --memory --device cpu --shape small      # dry run here

Default mode: a few learner steps of spiral-kuhn on a CUDA GPU, with the
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


def memory_check(args) -> int:
    """--memory: one SFT step and one RL learner step at the GPU recipe's shape; peak memory vs plan."""
    import json
    import random

    import torch

    from compose_rl.precision import autocast, cuda_usable, resolve_dtype

    device = args.device if args.device != "auto" else "cuda"
    if device == "cuda" and not cuda_usable():
        print(f"gpu_check: CUDA is not usable (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "nothing checked")
        return 1
    from compose_rl.plan import GIB, Shape, estimate
    from compose_rl.recipe import load_recipe
    from compose_rl.rl.learner import _clip_and_step, accumulate_gradients
    from compose_rl.types import Sample
    from transformers import AutoConfig, AutoModelForCausalLM

    recipe = load_recipe(args.recipe, ["stages=[sft,rl]", "rollout.engine=hf", "rollout.batch_size=1"])
    cfg = json.loads(Path(args.config).read_text())
    prompt = args.prompt_tokens
    if args.shape == "small":  # the dry run: same code, a model a CPU can step through
        cfg.update(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64, vocab_size=4096, bos_token_id=1, eos_token_id=2)
        prompt = 32
        recipe = load_recipe(args.recipe, ["stages=[sft,rl]", "rollout.engine=hf", "rollout.batch_size=1",
                                           "rollout.max_new_tokens=64"])
    # gradient checkpointing as a run of the recipe would resolve it on this device (auto: from the plan)
    from compose_rl.plan import checkpointing_decision, host_memory_gib

    mem = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else host_memory_gib()
    gc_on, gc_why = checkpointing_decision(load_recipe(args.recipe), device, mem, config=cfg)
    recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"gradient_checkpointing": gc_on})})
    print(f"gpu_check: gradient checkpointing {'on' if gc_on else 'off'} ({gc_why})")
    dtype = resolve_dtype(recipe.model.dtype, "gpu-check", device)
    plan = estimate(recipe, cfg, device, 1e6, prompt_tokens=prompt, dtype=dtype, engine="hf")
    runtime = next(v for k, v in plan.lines if k.startswith("runtime"))
    plan_gib = plan.peak_gib - runtime  # torch's own allocations: no CUDA context, no interpreter
    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")})
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    gc = plan.settings["gradient_checkpointing"].startswith("on")  # as the plan resolved it (auto included)
    if gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    amp = lambda: autocast(device, dtype)  # noqa: E731
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    rng = random.Random(0)
    vocab = cfg["vocab_size"]
    # SFT step (what TRL's SFTTrainer computes: logits at every position, cross-entropy, AdamW)
    ids = torch.randint(3, vocab, (recipe.sft.batch_size, prompt + 64), device=device)
    with amp():
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sft_loss = float(loss.detach())
    del ids, loss
    # RL learner step at the recipe's micro-batch (rl.minibatch samples, or --rl-samples of them)
    n = args.rl_samples or recipe.rl.minibatch
    new = recipe.rollout.max_new_tokens
    samples = []
    for i in range(n):
        s = Sample([rng.randrange(3, vocab) for _ in range(prompt)], [rng.randrange(3, vocab) for _ in range(new)],
                   [-1.0] * new, 0.0)
        s.advantage = 1.0 if i % 2 else -1.0
        samples.append(s)
    stats, total, _ = accumulate_gradients(model, None, samples, recipe.rl, 0, new, None, amp, None, "rl", 0,
                                           old_is_current=True, temperature=recipe.rollout.temperature)
    _clip_and_step(opt, params, recipe.rl.max_grad_norm, None, "rl", 0)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / GIB
        where = torch.cuda.get_device_name(0)
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - runtime  # RSS less the interpreter
        where = "cpu"
    ratio = peak / plan_gib
    finite = all(map(lambda x: x == x and abs(x) != float("inf"), [sft_loss, total]))
    # on a CPU the peak is RSS less a fixed interpreter share: the ratio is printed, not judged (dry run)
    ok = finite and (device == "cpu" or 0.8 <= ratio <= 1.2)
    verdict = ("DRY RUN" if device == "cpu" else "PASS") if ok else "FAIL"
    print(f"gpu_check {verdict}: {where}, {Shape.from_config(cfg).params() / 1e6:,.1f}M params "
          f"({args.shape}), {dtype}, gradient checkpointing {'on' if gc else 'off'}, "
          f"SFT batch {recipe.sft.batch_size} (loss {sft_loss:.3f}) + RL {n} samples in micro-batches of "
          f"{recipe.rl.micro_batch_size or n} x {prompt + new} tokens (loss {total:.4f}): peak {peak:.2f} GiB vs "
          f"plan {plan_gib:.2f} GiB (ratio {ratio:.2f}, goal 0.8-1.2)")
    return 0 if ok else 1


def main() -> int:
    if "--memory" in sys.argv:
        mp = argparse.ArgumentParser(description="issue 19: one SFT + one RL learner step at a GPU recipe's shape")
        mp.add_argument("--memory", action="store_true")
        mp.add_argument("--recipe", default=str(ROOT / "recipes" / "gpu" / "spiral-kuhn-qwen3-4b.yaml"))
        mp.add_argument("--config", default=str(ROOT / "tests" / "fixtures" / "qwen3-4b-base" / "config.json"))
        mp.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
        mp.add_argument("--shape", choices=["full", "small"], default="full")
        mp.add_argument("--rl-samples", type=int, default=8, help="RL samples in the step (0 = rl.minibatch)")
        mp.add_argument("--prompt-tokens", type=int, default=256)
        return memory_check(mp.parse_args())
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
