"""Asynchronous vs synchronous rollouts (rollout.mode), side by side: samples/s and what the policy
reached after the same number of steps (same games or prompts per step, so ~the same samples).

Both sides: 1 Ray rollout worker + the learner, on a local Ray of `--cpus` CPUs (default 2: the
machine), one torch thread each. The two modes start from ONE stage-1 (SFT) checkpoint trained
once at the start, so only the RL stage differs; each seed is one RL run per mode, run in
alternating order (sync first for even seeds, async first for odd) so that a drift in machine load
hits both. Evaluations are off during RL (async workers would keep generating through them, a free
overlap) and are run once at the end:
- kuhn    (recipes/spiral-kuhn.yaml's RL settings): exact exploitability of the final current policy
          (0 = Nash; uniform play 0.458), and the after-SFT value for reference.
- strcomp (recipes/strcomp-two-stage.yaml's RL settings): greedy held-out accuracy at depths 1 and 2
          (50 items each) and the mean training reward of the last 5 steps.

samples/s = all samples of the stage / the stage's wall time (Ray and worker start-up excluded;
the final weight sync included). The mean of per-seed async/sync ratios is printed with a 95%
t-interval, and the paired quality difference (async - sync) likewise.

    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_async.py --domain kuhn --seeds 0,1,2 --steps 40
    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_async.py --domain strcomp --seeds 0 --steps 20

On a shared 2-core machine the ratio is noisy (another process on either core changes it); check
`uptime` first and read the per-run lines, not only the means.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RECIPES = {"kuhn": ROOT / "recipes" / "spiral-kuhn.yaml", "strcomp": ROOT / "recipes" / "strcomp-two-stage.yaml"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def interval(xs: list[float]) -> str:
    from compose_rl.stats import mean_ci

    m, h = mean_ci(xs)
    if len(xs) < 2:
        return f"{m:.3f} (1 seed, no interval)"
    return f"{m:.3f} ± {h:.3f}"


def recipe(domain: str, out: str, stages: list[str], seed: int, steps: int, sft_steps: int,
           mode: str = "sync", max_lag: int = 0, workers: int = 0):
    from compose_rl.recipe import load_recipe

    over = [f"output={out}", f"stages={json.dumps(stages)}", f"seed={seed}", f"name=bench-async-{domain}",
            f"sft.max_steps={sft_steps}", "sft.gate=warn", f"rl.steps={steps}", "rl.eval_every=0",
            "rl.checkpoint_every=100000", "rl.samples_logged=0", f"rollout.workers={workers}",
            f"rollout.mode={mode}", f"rollout.max_lag={max_lag}"]
    if domain == "strcomp":
        over.append("task.test_depths=[1,2]")
    return load_recipe(RECIPES[domain], over)


def quality(domain: str, pipe) -> dict:
    if domain == "kuhn":
        from compose_rl.evals.exploitability import exploitability_of_tables
        from compose_rl.evals.games import lm_policy_tables
        from games import get_game

        game = get_game("kuhn_poker")
        return {"exploitability": exploitability_of_tables(game, lm_policy_tables(pipe.policy, game))[0]}
    from compose_rl.domains.strcomp import task_of
    from compose_rl.evals.strcomp import accuracy

    task = task_of(pipe.domains)
    return {f"acc_d{d}": accuracy(pipe.engine, pipe.policy.format_prompt, task, task.eval_problems(d, 50),
                                  pipe.recipe.rollout.max_new_tokens)[0] for d in (1, 2)}


def train_stage1(domain: str, sft_steps: int, tmp: str) -> tuple[dict, dict, float]:
    from compose_rl.pipeline import start_run

    pipe = start_run(recipe(domain, tmp, ["sft"], 0, 1, sft_steps))
    pipe.build()
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # TRL prints its logs to stdout: keep it for the table
        pipe.stage_sft(0, "sft")
    secs = time.perf_counter() - t
    return copy.deepcopy(pipe.policy.model.state_dict()), quality(domain, pipe), secs


def run_rl(domain: str, mode: str, seed: int, steps: int, max_lag: int, stage1: dict, tmp: str) -> dict:
    from compose_rl.pipeline import start_run

    pipe = start_run(recipe(domain, tmp, ["rl"], seed, steps, 1, mode, max_lag if mode == "async" else 0, workers=1))
    pipe.build()  # starts the worker (excluded from the timing)
    try:
        pipe.policy.model.load_state_dict(stage1)
        pipe.engine.load_weights(pipe.sync(), 0)
        t = time.perf_counter()
        pipe.stage_rl(0, "rl", None)
        wall = time.perf_counter() - t
        rows = [r for r in pipe.run.read_metrics() if r["stage"] == "rl" and "perf/step_s" in r]
        samples = sum(r["rollout/samples"] for r in rows)
        res = {"mode": mode, "seed": seed, "steps": len(rows), "samples": samples, "wall_s": wall,
               "samples_per_s": samples / wall,
               "gen_or_wait_s": statistics.fmean(r["perf/gen_s"] for r in rows),  # sync: generation; async: waiting
               "learn_s": statistics.fmean(r["perf/learn_s"] for r in rows),
               "sync_s": statistics.fmean(r["perf/sync_s"] for r in rows),
               "lag_mean": statistics.fmean(r.get("rollout/lag_mean", 0.0) for r in rows),
               "stale_dropped": sum(r["rollout/stale_dropped"] for r in rows),
               "reward_last5": statistics.fmean(r["reward/mean"] for r in rows[-5:])}
        ws = [r["loss/is_weight_mean"] for r in rows if "loss/is_weight_mean" in r]
        if ws:
            res["is_weight_mean"] = statistics.fmean(ws)
            res["is_truncated_frac"] = statistics.fmean(r["loss/is_truncated_frac"] for r in rows if "loss/is_truncated_frac" in r)
        res.update(quality(domain, pipe))
        return res
    finally:
        pipe.engine.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", choices=sorted(RECIPES), default="kuhn")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated RL seeds (one run per mode each)")
    ap.add_argument("--steps", type=int, default=40, help="RL steps per run")
    ap.add_argument("--sft-steps", type=int, default=None, help="stage-1 SFT steps, trained once (default kuhn 150, strcomp 400)")
    ap.add_argument("--max-lag", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    ap.add_argument("--json", default=None, help="also write every run's numbers here")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    sft_steps = a.sft_steps or {"kuhn": 150, "strcomp": 400}[a.domain]

    import torch

    from bench_engines import machine
    from compose_rl.rollout.ray_connect import connect_ray

    torch.set_num_threads(1)
    print(machine())
    print(f"load avg at start: {os.getloadavg()[0]:.2f}  torch threads: {torch.get_num_threads()}  ray cpus: {a.cpus}")
    connect_ray(None, num_cpus=a.cpus)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
        log(f"[{a.domain}] stage 1: {sft_steps} SFT steps (shared by every run)")
        stage1, q0, sft_s = train_stage1(a.domain, sft_steps, tmp)
        log(f"    after SFT: {q0} ({sft_s:.0f} s)")
        for k, seed in enumerate(seeds):
            for mode in (("sync", "async") if k % 2 == 0 else ("async", "sync")):
                log(f"[{a.domain}] seed {seed}: {mode} (max_lag {a.max_lag if mode == 'async' else 0}), {a.steps} steps")
                r = run_rl(a.domain, mode, seed, a.steps, a.max_lag, stage1, tmp)
                log("    " + json.dumps({k2: round(v, 4) if isinstance(v, float) else v for k2, v in r.items()}))
                runs.append(r)
    print(f"load avg at end: {os.getloadavg()[0]:.2f}")

    qkey = "exploitability" if a.domain == "kuhn" else "acc_d2"
    print(f"\n{a.domain}: async (1 worker + learner, max_lag {a.max_lag}) vs sync, {a.steps} RL steps from one "
          f"SFT checkpoint ({sft_steps} steps; after SFT: {', '.join(f'{k} {v:.3f}' for k, v in q0.items())})")
    hdr = f"{'seed':>4} {'mode':>5} {'samples':>7} {'wall s':>7} {'smp/s':>7} {'gen|wait s':>10} {'learn s':>7} {'lag':>4} {qkey:>14}"
    print(hdr)
    print("-" * len(hdr))
    for r in runs:
        print(f"{r['seed']:>4} {r['mode']:>5} {r['samples']:>7} {r['wall_s']:>7.1f} {r['samples_per_s']:>7.1f} "
              f"{r['gen_or_wait_s']:>10.3f} {r['learn_s']:>7.3f} {r['lag_mean']:>4.2f} {r[qkey]:>14.3f}")
    by = {(r["seed"], r["mode"]): r for r in runs}
    ratio = [by[(s, "async")]["samples_per_s"] / by[(s, "sync")]["samples_per_s"] for s in seeds]
    diff = [by[(s, "async")][qkey] - by[(s, "sync")][qkey] for s in seeds]
    print(f"\nsamples/s async / sync (per-seed ratio): {interval(ratio)}")
    for mode in ("sync", "async"):
        print(f"{qkey} {mode:>5}: {interval([by[(s, mode)][qkey] for s in seeds])}")
    print(f"{qkey} async - sync (paired): {interval(diff)}")
    if a.domain == "strcomp":
        print(f"acc_d1 async - sync (paired): {interval([by[(s, 'async')]['acc_d1'] - by[(s, 'sync')]['acc_d1'] for s in seeds])}")
    if a.json:
        Path(a.json).write_text(json.dumps({"after_sft": q0, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
