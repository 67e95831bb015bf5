"""Soak benchmark (issue 21): does a run that does stage 1 and RL in ONE process grow in memory?

For each game recipe it runs, each in its own fresh subprocess:
  in-process  stages [sft, rl] in one process (what `compose-rl recipe` does);
  resumed     stage 1 alone, then a new process `--resume`s it and runs the same RL steps.
Both record the resident set size (VmRSS) every `--every` RL steps (hooked on the metrics stream).
It prints, per recipe and side, the least-squares slope of RSS over RL steps in MB per 100 steps
(after the first `--warmup` fraction of steps: allocator and cache warm-up), its 95% interval (the
t interval of the regression slope; neighbouring samples are correlated, so it is optimistic), the
peak RSS, and the in-process / resumed peak ratio. Goal (issue 21): the in-process slope within noise
of the resumed one, peak within 25% of it.

    OMP_NUM_THREADS=1 nice -n 5 python bench/bench_soak.py                               # 500 RL steps each (the issue's length)
    OMP_NUM_THREADS=1 nice -n 5 python bench/bench_soak.py --rl-steps 150 --every 5      # what one shared core affords

Each side uses the shipped recipe with stages [sft, rl] and `--sft-steps` stage-1 steps (gate: warn);
every other key (evaluations every rl.eval_every steps included: a long run does them) is the recipe's.
`--code DIR` imports compose_rl from DIR instead of this checkout (e.g. to measure an older commit).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"kuhn_poker": "recipes/spiral-kuhn.yaml", "tic_tac_toe": "recipes/transfer-ttt.yaml"}


def rss_mb(key: str = "VmRSS") -> float:
    """This process's resident set (VmRSS) or its high-water mark so far (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ------------------------------------------------------------------------------------ worker
def worker(args) -> None:
    """One subprocess: run a recipe (or resume a run) and write (rl step, RSS MB) rows to --rss-out."""
    from compose_rl import cli
    from compose_rl.rundir import RunDir

    rows: list[tuple[int, float]] = []
    log = RunDir.log

    def logged(self, stage, step, metrics):
        log(self, stage, step, metrics)
        if stage == "rl" and "perf/step_s" in metrics and step % args.every == 0:
            rows.append((step, rss_mb()))
            Path(args.rss_out).write_text(json.dumps({"rows": rows, "sft_end_mb": sft_end[0], "hwm_mb": rss_mb("VmHWM")}))

    sft_end = [None]
    from compose_rl import pipeline

    stage_sft = pipeline.Pipeline.stage_sft

    def sft_then_rss(self, *a, **kw):
        stage_sft(self, *a, **kw)
        sft_end[0] = rss_mb()
        Path(args.rss_out).write_text(json.dumps({"rows": rows, "sft_end_mb": sft_end[0]}))

    RunDir.log = logged
    pipeline.Pipeline.stage_sft = sft_then_rss
    argv = ["recipe"] + ([args.recipe] if args.recipe else ["--resume", args.resume]) + args.overrides
    code = cli.main(argv)
    if code != 0:
        sys.exit(code)


def _spawn(code_dir: Path, *argv: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, cwd=str(code_dir),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"worker {' '.join(argv[:4])} failed ({r.returncode}): {r.stderr[-2000:]}")


def slope(rows: list[tuple[int, float]], warmup: float, steps: int) -> tuple[float, float, int]:
    """(MB per 100 steps, 95% half-width, points) of RSS vs step after the warm-up fraction."""
    pts = [(s, m) for s, m in rows if s >= warmup * steps]
    n = len(pts)
    if n < 3:
        return float("nan"), float("nan"), n
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    resid = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys))
    se = math.sqrt(resid / (n - 2) / sxx)
    from scipy.stats import t

    return 100 * b, 100 * se * float(t.ppf(0.975, n - 2)), n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--recipe", help=argparse.SUPPRESS)
    p.add_argument("--resume", help=argparse.SUPPRESS)
    p.add_argument("--rss-out", help=argparse.SUPPRESS)
    p.add_argument("--games", default="kuhn_poker,tic_tac_toe", help="comma-separated: kuhn_poker, tic_tac_toe")
    p.add_argument("--rl-steps", type=int, default=500, help="RL steps per run (the issue asks for >= 500)")
    p.add_argument("--sft-steps", type=int, default=200, help="stage-1 optimizer steps")
    p.add_argument("--every", type=int, default=5, help="record RSS every this many RL steps")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of RL steps left out of the slope")
    p.add_argument("--out", help="folder for the run directories (default: a temporary one)")
    p.add_argument("--code", default=str(ROOT), help="checkout whose compose_rl is imported")
    p.add_argument("--sides", default="in-process,resumed", help="which sides to run (e.g. in-process only for --code)")
    p.add_argument("--parallel", action="store_true", help="run the in-process and the resumed side at once")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.worker:
        return worker(args)

    out = Path(args.out or tempfile.mkdtemp(prefix="soak-"))
    code_dir = Path(args.code).resolve()
    print(f"soak: {args.rl_steps} RL steps after {args.sft_steps} stage-1 steps, RSS every {args.every} steps; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, code {code_dir}, runs in {out}", flush=True)
    results = {}
    for game in args.games.split(","):
        recipe = str(code_dir / RECIPES[game])
        common = [f"rl.steps={args.rl_steps}", f"sft.max_steps={args.sft_steps}", "sft.gate=warn",
                  f"rl.checkpoint_every={max(args.rl_steps // 4, 1)}", *args.overrides]
        res = {}
        t0 = time.time()
        sides = args.sides.split(",")
        def in_process():
            f = out / f"{game}-inprocess.json"
            _spawn(code_dir, "--worker", "--recipe", recipe, "--rss-out", str(f), "--every", str(args.every),
                   "stages=[sft,rl]", f"output={out / 'inprocess'}", f"name=soak-{game}", *common)
            res["in-process"] = json.loads(f.read_text())
            return round(time.time() - t0)

        def resumed():
            _resumed(args, code_dir, out, game, recipe, common, res)
            return round(time.time() - t0)

        jobs = {"in-process": in_process, "resumed (both processes)": resumed}
        jobs = {k: v for k, v in jobs.items() if k.split()[0] in sides}
        if args.parallel:  # the two sides at once (two cores); RSS is per process, so unaffected
            with ThreadPoolExecutor(2) as pool:
                futures = {k: pool.submit(f) for k, f in jobs.items()}
                res["seconds"] = {k: f.result() for k, f in futures.items()}
        else:
            res["seconds"] = {}
            for k, f in jobs.items():
                t0 = time.time()
                res["seconds"][k] = f()
        results[game] = res
        _table(args, game, res, sides)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _resumed(args, code_dir, out, game, recipe, common, res) -> None:
    _spawn(code_dir, "--worker", "--recipe", recipe, "--rss-out", str(out / f"{game}-stage1.json"),
           "--every", str(args.every), "stages=[sft]", f"output={out / 'resumed'}", f"name=soak-{game}", *common)
    run = max((out / "resumed").glob(f"soak-{game}-*"), key=lambda q: q.stat().st_mtime)
    f = out / f"{game}-resumed.json"
    _spawn(code_dir, "--worker", "--resume", str(run), "--rss-out", str(f), "--every", str(args.every),
           "stages=[sft,rl]", *common)
    res["resumed"] = json.loads(f.read_text())


def _table(args, game, res, sides) -> None:
    print(f"\n## {game}  ({RECIPES[game]}, wall: {res['seconds']})")
    print(f"{'side':<12} {'MB/100 steps':>14} {'95% +-':>8} {'points':>7} {'after SFT MB':>13} {'first MB':>9} "
          f"{'last MB':>8} {'peak MB':>10} {'HWM MB':>12}")
    peaks = {}
    for side in sides:
        rows = [tuple(r) for r in res[side]["rows"]]
        b, hw, n = slope(rows, args.warmup, args.rl_steps)
        peaks[side] = max(m for _, m in rows)
        after = res[side].get("sft_end_mb")
        print(f"{side:<12} {b:>14.1f} {hw:>8.1f} {n:>7d} {after if after else float('nan'):>13.0f} "
              f"{rows[0][1]:>9.0f} {rows[-1][1]:>8.0f} {peaks[side]:>10.0f} {res[side].get('hwm_mb', float('nan')):>12.0f}")
        res[side]["slope_mb_per_100"], res[side]["slope_hw95"], res[side]["peak_mb"] = b, hw, peaks[side]
    if len(peaks) == 2:
        ratio = peaks["in-process"] / peaks["resumed"]
        res["peak_ratio"] = ratio
        print(f"RL peak in-process / resumed: {ratio:.2f} (goal <= 1.25)", flush=True)


if __name__ == "__main__":
    main()
