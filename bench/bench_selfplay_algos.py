"""Exploitability against wall-clock for two self-play learners from the same stage-1 weights, in one process.

Arms: `mmd` (recipes/spiral-kuhn.yaml as shipped) and `ppo_rae` (SPIRAL's PPO + RAE: the recipe with
rl.algorithm=ppo rl.advantage=rae rl.token_aggregation=seq_mean rl.entropy_coef=0.02 rl.lr=1e-4
rl.lr_schedule=constant). One stage 1 is trained (or loaded with --stage1 RUN_DIR, a run whose
stages/sft/state.pt exists), then each arm starts from exactly those weights; the arms run one after the
other on the same machine and thread count. Prints, per arm, exploitability of the current policy every
`--eval-every` steps beside the cumulative RL wall-clock, then games/s and the ratio of the two.

    OMP_NUM_THREADS=1 python bench/bench_selfplay_algos.py [--steps 100] [--stage1 runs/spiral-kuhn-...] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

ARMS = {
    "mmd": [],
    "ppo_rae": ["rl.algorithm=ppo", "rl.advantage=rae", "rl.token_aggregation=seq_mean", "rl.entropy_coef=0.02",
                "rl.lr=1e-4", "rl.lr_schedule=constant"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/spiral-kuhn.yaml")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--stage1", help="a run directory whose stages/sft/state.pt is the shared stage 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from compose_rl.domains import training_domains
    from compose_rl.pipeline import start_run
    from compose_rl.recipe import load_recipe
    from compose_rl.rundir import RunDir

    out = Path(tempfile.mkdtemp())
    common = [f"output={out}", f"seed={args.seed}", f"rl.steps={args.steps}", f"rl.eval_every={args.eval_every}",
              "primitives=null"]
    pipe = start_run(load_recipe(args.recipe, common + ["stages=[sft,rl]"]))
    pipe.build()
    if args.stage1:
        pipe.policy.model.load_state_dict(torch.load(Path(args.stage1) / "stages" / "sft" / "state.pt",
                                                     weights_only=False)["model"])
    else:
        pipe.stage_sft(0, "sft")
    stage1 = copy.deepcopy(pipe.policy.model.state_dict())
    results = {}
    for arm, overrides in ARMS.items():
        pipe.recipe = load_recipe(args.recipe, common + ["stages=[sft,rl]", f"name={arm}"] + overrides)
        pipe.run = RunDir.create(out, arm, "{}\n")
        pipe.domains = training_domains(pipe.recipe)
        pipe.policy.model.load_state_dict(stage1)
        pipe.engine.load_weights(pipe.sync(), 0)
        pipe.stage_rl(1, "rl", None)
        rows = [r for r in pipe.run.read_metrics() if r.get("stage") == "rl"]
        clock, curve = 0.0, []
        for r in rows:
            clock += r["perf/step_s"]
            if "eval/kuhn_poker/exploitability" in r:
                curve.append((r["step"] + 1, clock, r["eval/kuhn_poker/exploitability"]))
        games = sum(r["rollout/games"] for r in rows)
        results[arm] = {"curve": curve, "games_per_s": games / clock, "s": clock}
    print(f"\nexploitability vs RL wall-clock, kuhn_poker, tiny, same stage 1, {args.threads} thread(s), seed {args.seed}")
    print(f"{'step':>5} " + " ".join(f"{arm + ' s':>12} {arm + ' expl':>12}" for arm in results))
    for i in range(max(len(v["curve"]) for v in results.values())):
        cells = []
        for v in results.values():
            step, s, e = v["curve"][i] if i < len(v["curve"]) else ("", float("nan"), float("nan"))
            cells.append(f"{s:12.1f} {e:12.3f}")
        print(f"{results['mmd']['curve'][i][0] if i < len(results['mmd']['curve']) else '':>5} " + " ".join(cells))
    a, b = results["mmd"], results["ppo_rae"]
    print(f"games/s: mmd {a['games_per_s']:.1f}, ppo_rae {b['games_per_s']:.1f}, ratio mmd/ppo_rae "
          f"{a['games_per_s'] / b['games_per_s']:.2f}; last exploitability: mmd {a['curve'][-1][2]:.3f}, "
          f"ppo_rae {b['curve'][-1][2]:.3f}")


if __name__ == "__main__":
    main()
