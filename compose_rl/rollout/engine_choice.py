"""`rollout.engine: auto`: pick transformers (`hf`) or vLLM for the model and machine at hand.

Which engine is faster depends on the machine, its load, the model and the batch more than on the
code (bench/bench_engines.py on 2-vCPU AMD EPYC machines, smollm2-135m, greedy, fp32: vLLM 1.4x
transformers at batch 4, 1.9-2.5x at batch 16, 3.0x on another machine of the same kind; vLLM's weight
sync 1.4 s vs 0.2 s), so `auto` measures instead of guessing:

1. `hf` without measuring when vLLM cannot be imported, or when the recipe generates in the
   learner's process with a policy vLLM cannot run (`latent`, `recurrent`).
2. Otherwise a short calibration: both engines generate the same `batch_size` prompts (at most 32),
   `CAL_TOKENS` new tokens, greedy, timed interleaved (hf, vLLM, vLLM, hf) so that load from other
   processes hits both alike; plus one vLLM weight sync (transformers in the learner's process syncs
   for free; in Ray workers its sync is timed too). The decision estimates one RL step's rollout
   time for each engine, `batch_size * max_new_tokens / rate + sync`, and takes the smaller.
3. The measurement is cached in a JSON file (`COMPOSE_RL_CACHE`/engine-choice.json, default
   ~/.cache/compose-rl/engine-choice.json) keyed by model architecture (or name), the CPU model or GPU
   name, the device, the torch thread count and the batch size: it runs once per machine and model.
   Delete the file (or the entry) to calibrate again.

One line says which engine was picked and why, with the numbers.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

CAL_TOKENS = 16
CAL_MAX_BATCH = 32
CAL_PROMPTS = ("Hello, how are you?", "What is the capital of France?", "Name three colors.",
               "Write a short poem about the sea.", "Explain what a prime number is.", "What does a CPU do?",
               "Give me a tip for cooking rice.", "Why is the sky blue?")
ARCH_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size")


# ------------------------------------------------------------------------------ cache
def cache_file() -> Path:
    """$COMPOSE_RL_CACHE/engine-choice.json, else ~/.cache/compose-rl/engine-choice.json."""
    root = os.environ.get("COMPOSE_RL_CACHE") or Path.home() / ".cache" / "compose-rl"
    return Path(root).expanduser() / "engine-choice.json"


def load_cache(path: str | Path) -> dict:
    """The cache's entries ({} when the file is missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_entry(path: str | Path, key: str, entry: Mapping) -> None:
    """Add or replace one entry, written atomically (a temp file renamed over the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = load_cache(path)
    data[key] = dict(entry)
    fd, tmp = tempfile.mkstemp(prefix=".engine-choice-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ key
def cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo ({} where that file does not exist)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_model(info: Mapping[str, str] | None = None) -> str:
    """The CPU's model name, from `info` (cpuinfo()'s dict) when given, else read now."""
    name = (cpuinfo() if info is None else info).get("model name")
    if name:
        return name
    import platform

    return platform.processor() or platform.machine() or "unknown-cpu"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_model()} x{os.cpu_count()}"


def arch_fingerprint(config: Mapping) -> str:
    """The architecture fields that decide generation speed, e.g. `llama-L30-H576-I1536-A9/3-D64-V49152`."""
    c = dict(config)
    heads = c.get("num_attention_heads")
    head_dim = c.get("head_dim") or (c.get("hidden_size") // heads if heads and c.get("hidden_size") else None)
    return (f"{c.get('model_type', '?')}-L{c.get('num_hidden_layers')}-H{c.get('hidden_size')}-"
            f"I{c.get('intermediate_size')}-A{heads}/{c.get('num_key_value_heads', heads)}-D{head_dim}-"
            f"V{c.get('vocab_size')}")


def cache_key(model: str, device: str, threads: int, batch_size: int, dev_name: str | None = None) -> str:
    return f"{model}|{device}:{dev_name or device_name(device)}|threads={threads}|batch={batch_size}"


# ------------------------------------------------------------------------------ decision
def estimate(entry: Mapping, sequences: int, max_new_tokens: int, hf_in_process: bool) -> tuple[float, float]:
    """(transformers, vLLM) estimated seconds per rollout step of `sequences` completions of
    `max_new_tokens` (an upper bound: completions can stop early): generation + one weight sync."""
    tokens = sequences * max_new_tokens
    t_hf = tokens / entry["hf_tok_s"] + (0.0 if hf_in_process else entry.get("hf_sync_s", 0.0))
    t_v = tokens / entry["vllm_tok_s"] + entry.get("vllm_sync_s", 0.0)
    return t_hf, t_v


def calibrate(folder: str | Path, device: str, batch_size: int, tokens: int = CAL_TOKENS) -> dict:
    """Time both engines on the same prompts (greedy, `tokens` new tokens, interleaved) and one
    weight sync each. Returns {hf_tok_s, vllm_tok_s, hf_sync_s, vllm_sync_s, identical, batch, tokens}."""
    import gc

    import torch

    from compose_rl.models.hf import load_folder
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.rollout.vllm_engine import VLLMEngine
    from compose_rl.types import SamplingParams

    folder = Path(folder)
    model, tokenizer = load_folder(folder)
    model = model.to(device).eval()
    batch = max(1, min(batch_size, CAL_MAX_BATCH))
    # distinct prompts, so that neither engine shares a prefill between rows
    prompts = [CAL_PROMPTS[i % len(CAL_PROMPTS)] + (f" ({i})" if i >= len(CAL_PROMPTS) else "") for i in range(batch)]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=tokens)
    hf = HFEngine(model, tokenizer, batch_size=batch)
    ve = VLLMEngine(folder, seed=0, max_model_len=256 + tokens)
    try:
        for e in (hf, ve):  # warm-up
            e.generate(prompts[:2], SamplingParams(temperature=0.0, max_new_tokens=2))
        spent = {"hf": 0.0, "vllm": 0.0}
        made = {"hf": 0, "vllm": 0}
        outs = {}
        for name in ("hf", "vllm", "vllm", "hf"):
            t = time.perf_counter()
            out = (hf if name == "hf" else ve).generate(prompts, greedy)
            spent[name] += time.perf_counter() - t
            made[name] += sum(len(c[0].token_ids) for c in out)
            outs[name] = out
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        syncs = {}
        for name, e in (("hf", hf), ("vllm", ve)):
            times = []
            for v in (1, 2):
                t = time.perf_counter()
                e.load_weights(state, v)
                times.append(time.perf_counter() - t)
            syncs[name] = statistics.median(times)
        identical = sum(a[0].token_ids == b[0].token_ids for a, b in zip(outs["hf"], outs["vllm"]))
    finally:
        del ve, hf, model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {"hf_tok_s": made["hf"] / spent["hf"], "vllm_tok_s": made["vllm"] / spent["vllm"],
            "hf_sync_s": syncs["hf"], "vllm_sync_s": syncs["vllm"], "identical": identical, "batch": batch,
            "tokens": tokens, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def choose_engine(folder: str | Path | None, *, model: str, device: str = "cpu", threads: int | None = None,
                  batch_size: int = 16, max_new_tokens: int = 32, step_sequences: int | None = None,
                  hf_in_process: bool = True,
                  forbidden: str | None = None, cache: str | Path | None = None,
                  calibrate_fn: Callable[..., dict] | None = None,
                  folder_fn: Callable[[], str | Path] | None = None, log: Callable[[str], None] = print) -> str:
    """"hf" or "vllm" for `model` (an architecture fingerprint or a name) on `device` (see the module docstring).

    `step_sequences`: completions per training step (default `batch_size`), for the estimate;
    `folder` (or `folder_fn()`, called only when a calibration must run) is the HF folder both
    engines load; `forbidden` is the reason vLLM cannot be used, if any; `calibrate_fn` replaces
    `calibrate` (tests)."""
    from compose_rl.rollout.vllm_engine import vllm_importable

    if forbidden:
        log(f"rollout.engine: auto -> hf ({forbidden})")
        return "hf"
    if not vllm_importable():
        log("rollout.engine: auto -> hf (vllm is not importable)")
        return "hf"
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    path = Path(cache) if cache is not None else cache_file()
    key = cache_key(model, device, threads, batch_size)
    entry = load_cache(path).get(key)
    how = "cached"
    if not (isinstance(entry, dict) and entry.get("hf_tok_s", 0) > 0 and entry.get("vllm_tok_s", 0) > 0):
        if folder is None:
            folder = folder_fn() if folder_fn is not None else None
        if folder is None:
            raise ValueError("rollout.engine: auto needs the policy's HF folder to calibrate")
        log(f"rollout.engine: auto: calibrating transformers vs vLLM for {model} on {device} "
            f"({threads} threads, batch {batch_size}; once per machine and model, cached in {path})")
        entry = (calibrate_fn or calibrate)(folder, device, batch_size)
        how = "calibrated"
    seqs = step_sequences or batch_size
    t_hf, t_v = estimate(entry, seqs, max_new_tokens, hf_in_process)
    choice = "vllm" if t_v < t_hf else "hf"
    if how == "calibrated":
        save_entry(path, key, {**entry, "engine": choice})
    log(f"rollout.engine: auto -> {choice} ({how}: transformers {entry['hf_tok_s']:.1f} tok/s, vLLM "
        f"{entry['vllm_tok_s']:.1f} tok/s = {entry['vllm_tok_s'] / entry['hf_tok_s']:.2f}x at batch {entry.get('batch', batch_size)}; "
        f"vLLM weight sync {entry.get('vllm_sync_s', 0.0):.2f} s; est. {seqs}x{max_new_tokens} tokens + sync per step: "
        f"transformers {t_hf:.2f} s, vLLM {t_v:.2f} s)")
    return choice


# ------------------------------------------------------------------------------ recipes
def forbidden_reason(recipe) -> str | None:
    """Why a recipe must generate with transformers whatever the machine (None: vLLM is allowed)."""
    # the engine chooser sits below the policy kinds (compose_rl/kinds.py): it reads their sections by name
    if getattr(recipe, "latent", None) is not None:
        return "latent: the latent loop generates in the learner's process"
    if getattr(recipe, "recurrent", None) is not None:
        return "recurrent: the looped policy generates in the learner's process"
    return None


def step_sequences(recipe) -> int:
    """Completions one RL step generates (games: one per game, a lower bound: a game has several turns)."""
    rl = recipe.rl
    if getattr(recipe, "games", None) is not None:
        return rl.games_per_step
    return rl.prompts_per_step * rl.group_size


def resolve_auto(recipe, policy, *, cache: str | Path | None = None, calibrate_fn=None, log=print):
    """`recipe` with `rollout.engine: auto` replaced by the chosen engine (other recipes as they are)."""
    ro = recipe.rollout
    if ro.engine != "auto":
        return recipe
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = policy.model.config.to_dict()

    def folder_fn():
        from compose_rl.models.folder import policy_folder

        return policy_folder(policy)

    choice = choose_engine(None, model=arch_fingerprint(cfg), device=device, batch_size=ro.batch_size,
                           max_new_tokens=ro.max_new_tokens, step_sequences=step_sequences(recipe),
                           hf_in_process=ro.workers == 0,
                           forbidden=forbidden_reason(recipe), cache=cache, calibrate_fn=calibrate_fn,
                           folder_fn=folder_fn, log=log)
    return recipe.model_copy(update={"rollout": ro.model_copy(update={"engine": choice})})
