"""vLLM engine vs transformers engine, side by side (no assertions: it prints numbers and ratios).

1. Generation tokens/s on smollm2-135m-instruct: the same 16 chat prompts in one batch, greedy,
   up to 128 new tokens (greedy makes both engines produce the same tokens, so the work is equal).
2. Weight-sync time per engine and model size (tiny, smollm2): `engine.load_weights(
   policy.state_dict_for_inference(), v)` — HF: load_state_dict into the engine's own copy of the
   model; vLLM: in-place reload_weights + prefix-cache reset.

    OMP_NUM_THREADS=2 python bench/bench_engines.py            # both parts
    python bench/bench_engines.py --skip-gen --repeats 5       # only weight sync
    OMP_NUM_THREADS=1 python bench/bench_engines.py --profile  # where each engine's time goes
    OMP_NUM_THREADS=1 python bench/bench_engines.py --sweep    # vLLM knobs, ratio vs transformers each
    python bench/bench_engines.py --sweep --only base,bf16 --max-new-tokens 64

Generation is timed interleaved in one process (transformers, vLLM, vLLM, transformers, ...) and
every line carries the 1-minute load average: on a shared machine the ratio is the figure to trust,
not the absolute tokens/s.

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

from compose_rl.rollout.engine_choice import cpu_model, cpuinfo  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.", "Write a haiku about autumn.",
    "Explain what a prime number is.", "Give me a tip for learning to cook.", "What does a CPU do?",
    "Describe a cat in one sentence.", "Why is the sky blue?", "List four planets.",
    "What is 12 times 7? Explain.", "Suggest a name for a bakery.", "What is photosynthesis?",
    "How do I boil an egg?", "Tell me a fun fact about octopuses.", "What is the opposite of 'ancient'?",
    "Write one sentence about the sea.",
]


def prompts_for(policy, batch: int) -> list[str]:
    """`batch` distinct chat prompts (distinct, so that no engine can share a prefill between rows)."""
    qs = [QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" (variant {i // len(QUESTIONS)})")
          for i in range(batch)]
    return [policy.format_prompt(q) for q in qs]


def load_avg() -> str:
    return "load %.2f/%.2f" % os.getloadavg()[:2]


def load(name: str):
    from compose_rl.models import load_policy

    p = load_policy(name, seed=0)
    if p.folder is None:
        p.save(Path(tempfile.mkdtemp(prefix=f"bench-{name}-")))
    return p


def hf_engine(policy, dtype=None):
    """An HFEngine over its OWN copy of the weights (as a rollout worker would hold), cast to `dtype`
    when given (the `bf16-both` sweep row)."""
    from compose_rl.rollout.hf import HFEngine

    model = copy.deepcopy(policy.model).eval()
    return HFEngine(model if dtype is None else model.to(dtype), policy.tokenizer, batch_size=16)


def vllm_engine(policy, **kw):
    from compose_rl.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(policy.folder, seed=0, max_model_len=1024, **kw)


def run_once(engine, prompts, sampling):
    """(tokens/s, tokens, outputs) of one generate call."""
    t = time.perf_counter()
    out = engine.generate(prompts, sampling)
    dt = time.perf_counter() - t
    tokens = sum(len(c.token_ids) for comps in out for c in comps)
    return tokens / dt, tokens, out


def warm(engine, prompts, sampling):
    engine.generate(prompts[:2], type(sampling)(temperature=0.0, max_new_tokens=8))


def same_count(a, b) -> int:
    return sum(x[0].token_ids == y[0].token_ids for x, y in zip(a, b))


def interleaved(hf, ve, prompts, sampling, repeats: int, indent: str = "  "):
    """Time hf and ve alternately (hf ve, ve hf, ...), one line per run with the load average.
    Returns (median hf rate, median vLLM rate, median of the per-pair ratios, hf out, vLLM out)."""
    warm(hf, prompts, sampling)
    warm(ve, prompts, sampling)
    hr, vr, ratios, ho, vo = [], [], [], None, None
    for r in range(repeats):
        pair = {}
        for name in (("hf", "vllm") if r % 2 == 0 else ("vllm", "hf")):
            rate, tok, out = run_once(hf if name == "hf" else ve, prompts, sampling)
            pair[name] = rate
            if name == "hf":
                hr.append(rate)
                ho = out
            else:
                vr.append(rate)
                vo = out
            print(f"{indent}{'transformers' if name == 'hf' else 'vLLM':12s} {rate:7.1f} tok/s ({tok} tokens)  {load_avg()}",
                  flush=True)
        ratios.append(pair["vllm"] / pair["hf"])
    return statistics.median(hr), statistics.median(vr), statistics.median(ratios), ho, vo


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
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    has = [f for f in CPU_FLAGS if f in flags]
    lacks = [f for f in CPU_FLAGS if f not in flags]
    return (f"cpu: {cpu_model(info)} x {os.cpu_count()} logical; flags: {' '.join(has) or 'unknown'}"
            + (f"; lacks: {' '.join(lacks)}" if flags and lacks else ""))


# ------------------------------------------------------------------------------ --profile
TIMES: dict[str, float] = {}
CALLS: dict[str, int] = {}


def _timed(obj, attr: str, key: str) -> bool:
    """Wrap obj.attr (a method) so that its wall time and calls add up under `key`."""
    fn = getattr(obj, attr, None)
    if fn is None:
        return False

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            TIMES[key] = TIMES.get(key, 0.0) + time.perf_counter() - t
            CALLS[key] = CALLS.get(key, 0) + 1

    setattr(obj, attr, wrapper)
    return True


def _install_worker_timers(worker):
    """Runs inside vLLM's (in-process) worker through collective_rpc."""
    runner = getattr(worker, "model_runner", None) or worker.worker.model_runner
    _timed(runner, "execute_model", "execute_model")
    _timed(runner, "sample_tokens", "sample_tokens")
    _timed(runner.model, "forward", "model.forward")
    _timed(runner.model, "compute_logits", "compute_logits")
    return True


def _hook_timer(module, key):
    def pre(*_):
        module._bench_t = time.perf_counter()

    def post(*_):
        TIMES[key] = TIMES.get(key, 0.0) + time.perf_counter() - module._bench_t
        CALLS[key] = CALLS.get(key, 0) + 1

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def profile(policy, prompts, sampling, cprofile_top: int):
    """Split each engine's wall time: model forward (decoder layers), logits (lm_head), and the rest
    (vLLM: scheduler, input preparation, sampler, output processing; transformers: cache bookkeeping,
    log_softmax + sampling in the decode loop, python). One untimed warm-up, then one timed run each."""
    print(f"\n== profile: batch {len(prompts)}, <= {sampling.max_new_tokens} new tokens, greedy  {load_avg()}")
    hf = hf_engine(policy)
    model = hf.model
    _hook_timer(model.model, "hf.decoder")
    _hook_timer(model.lm_head, "hf.lm_head")
    warm(hf, prompts, sampling)
    TIMES.clear(), CALLS.clear()
    rate, tok, ho = run_once(hf, prompts, sampling)
    wall = tok / rate
    steps = CALLS.get("hf.decoder", 0)
    dec, head = TIMES.get("hf.decoder", 0.0), TIMES.get("hf.lm_head", 0.0)
    print(f"  transformers: {rate:6.1f} tok/s, {wall:6.2f} s, {steps} forward calls ({wall / max(steps, 1) * 1e3:.1f} ms/step)  {load_avg()}")
    print(f"    decoder layers {dec:6.2f} s ({dec / wall:4.0%})  lm_head {head:6.2f} s ({head / wall:4.0%})  "
          f"rest {wall - dec - head:6.2f} s ({(wall - dec - head) / wall:4.0%})")
    hf_wall = wall
    del hf, model
    gc.collect()
    from compose_rl.rollout.vllm_engine import vllm_importable

    if not vllm_importable():
        print("  vLLM not importable: nothing more to profile")
        return
    ve = vllm_engine(policy)
    ve.llm.collective_rpc(_install_worker_timers)
    core = getattr(getattr(ve.llm.llm_engine, "engine_core", None), "engine_core", None)
    sched = getattr(core, "scheduler", None)
    if sched is not None:
        _timed(sched, "schedule", "scheduler.schedule")
        _timed(sched, "update_from_output", "scheduler.update_from_output")
    warm(ve, prompts, sampling)
    TIMES.clear(), CALLS.clear()
    rate, tok, vo = run_once(ve, prompts, sampling)
    wall = tok / rate
    steps = CALLS.get("execute_model", 0)
    print(f"  vLLM        : {rate:6.1f} tok/s, {wall:6.2f} s, {steps} engine steps ({wall / max(steps, 1) * 1e3:.1f} ms/step)  {load_avg()}")
    fwd, logits = TIMES.get("model.forward", 0.0), TIMES.get("compute_logits", 0.0)
    ex, samp = TIMES.get("execute_model", 0.0), TIMES.get("sample_tokens", 0.0)
    sch = TIMES.get("scheduler.schedule", 0.0) + TIMES.get("scheduler.update_from_output", 0.0)
    rest = wall - ex - samp - sch
    print(f"    model forward {fwd:6.2f} s ({fwd / wall:4.0%})  logits {logits:6.2f} s ({logits / wall:4.0%})  "
          f"input prep etc. (execute_model - forward - logits) {ex - fwd - logits:6.2f} s ({(ex - fwd - logits) / wall:4.0%})")
    print(f"    sampler {samp:6.2f} s ({samp / wall:4.0%})  scheduler {sch:6.2f} s ({sch / wall:4.0%})  "
          f"rest (engine loop, output processing, python) {rest:6.2f} s ({rest / wall:4.0%})")
    print(f"  wall ratio transformers / vLLM: {hf_wall / wall:.2f}x; identical greedy completions: {same_count(ho, vo)}/{len(prompts)}")
    if cprofile_top:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        ve.generate(prompts, sampling)
        pr.disable()
        print(f"  cProfile of one vLLM generate (top {cprofile_top} by own time; profiling inflates python-heavy code):")
        pstats.Stats(pr, stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(cprofile_top)
    del ve
    gc.collect()


# ------------------------------------------------------------------------------ --sweep
# (label, VLLMEngine kwargs, env set while the engine is built, batch, torch threads for both engines)
# VLLM_CPU_OMP_THREADS_BIND (thread pinning) only acts in vLLM's multiprocess executor
# (vllm/utils/ompmultiprocessing.py): the in-process engine runs on the caller's torch threads, so the
# thread knob in process is `threads`; the bind knob is swept with the multiprocess engine.
SWEEP = [
    ("base", {}, {}, 16, 1),
    ("bf16", {"dtype": "bfloat16"}, {}, 16, 1),
    ("bf16-both", {"dtype": "bfloat16"}, {}, 16, 1),  # transformers in bfloat16 too: the same dtype on both sides
    ("kv4g", {"kv_cache_gb": 4.0}, {}, 16, 1),
    ("chunk256", {"engine_args": {"max_num_batched_tokens": 256}}, {}, 16, 1),
    ("chunk4096", {"engine_args": {"max_num_batched_tokens": 4096}}, {}, 16, 1),
    ("batch4", {}, {}, 4, 1),
    ("batch64", {}, {}, 64, 1),
    ("threads2", {}, {}, 16, 2),
    ("multiproc", {"in_process": False}, {}, 16, 1),
    ("multiproc-nobind", {"in_process": False}, {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, 16, 1),
    ("compiled", {"enforce_eager": False}, {}, 16, 1),
]


def sweep(policy, sampling, only: set[str] | None, repeats: int):
    import torch

    print(f"\n== sweep: vLLM settings vs transformers (fp32; bf16 in the bf16-both row), <= {sampling.max_new_tokens} new tokens, greedy; "
          f"{repeats} interleaved pair(s) per setting")
    hf_fp32 = hf_engine(policy)
    base_threads = torch.get_num_threads()
    rows = []
    for label, kw, env, batch, threads in SWEEP:
        if only and label not in only:
            continue
        hf = hf_engine(policy, torch.bfloat16) if label == "bf16-both" else hf_fp32
        prompts = prompts_for(policy, batch)
        hf.batch_size = batch
        torch.set_num_threads(threads)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        t = time.perf_counter()
        try:
            ve = vllm_engine(policy, **kw)
        except Exception as e:  # noqa: BLE001 - a setting that does not start is a result too
            print(f"  [{label}] failed to start: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            rows.append((label, batch, threads, float("nan"), "-", load_avg()))
            continue
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        start = time.perf_counter() - t
        print(f"  [{label}] batch {batch}, threads {threads}, {kw or 'defaults'} {env or ''}: start-up {start:.1f} s", flush=True)
        h, v, ratio, ho, vo = interleaved(hf, ve, prompts, sampling, repeats, indent="    ")
        same = same_count(ho, vo)
        rows.append((label, batch, threads, ratio, f"{same}/{batch}", load_avg()))
        print(f"    -> ratio {ratio:.2f}x, identical greedy completions {same}/{batch}", flush=True)
        del ve
        gc.collect()
    torch.set_num_threads(base_threads)
    print(f"\n  {'setting':18s} {'batch':>5s} {'thr':>3s} {'vLLM/HF':>8s} {'same':>6s}  load after")
    for label, batch, threads, ratio, same, ld in rows:
        print(f"  {label:18s} {batch:5d} {threads:3d} {ratio:7.2f}x {same:>6s}  {ld}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--skip-gen", action="store_true")
    ap.add_argument("--skip-sync", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--profile", action="store_true", help="split each engine's time (then exit)")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="with --profile: cProfile's top N of vLLM")
    ap.add_argument("--sweep", action="store_true", help="vLLM knobs, ratio vs transformers each (then exit)")
    ap.add_argument("--only", default="", help="with --sweep: comma-separated setting labels")
    args = ap.parse_args()

    import torch

    from compose_rl.rollout.vllm_engine import vllm_importable
    from compose_rl.types import SamplingParams

    has_vllm = vllm_importable()
    print(machine())
    print(f"torch threads: {torch.get_num_threads()}  OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}  "
          f"cpus: {os.cpu_count()}  load avg: {os.getloadavg()[0]:.2f}  vllm: {'yes' if has_vllm else 'NOT importable'}")

    if args.profile or args.sweep:
        policy = load("smollm2-135m-instruct")
        sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
        if args.profile:
            profile(policy, prompts_for(policy, args.batch), sampling, args.cprofile)
        if args.sweep and has_vllm:
            sweep(policy, sampling, set(filter(None, args.only.split(","))), max(1, args.repeats))
        return

    if not args.skip_gen:
        policy = load("smollm2-135m-instruct")
        prompts = prompts_for(policy, args.batch)
        sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
        print(f"\n== generation: smollm2-135m-instruct, batch {len(prompts)}, <= {args.max_new_tokens} new tokens, greedy, "
              f"{args.repeats} interleaved runs each")
        hf = hf_engine(policy)
        hf.batch_size = len(prompts)
        if has_vllm:
            ve = vllm_engine(policy)
            hf_rate, v_rate, ratio, hf_out, v_out = interleaved(hf, ve, prompts, sampling, args.repeats)
            print(f"  medians: transformers {hf_rate:.1f} tok/s, vLLM {v_rate:.1f} tok/s")
            print(f"  ratio vLLM / transformers (median of pairs): {ratio:.2f}x   (goal >= 3x; identical greedy "
                  f"completions: {same_count(hf_out, v_out)}/{len(prompts)})  {load_avg()}")
            del ve
        else:
            hf_rate, hf_tok, _ = time_generate(hf, prompts, sampling, args.repeats)
            print(f"  transformers : {hf_rate:8.1f} tok/s  ({hf_tok} tokens)  {load_avg()}")
        del hf
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
