"""What sampled self-play MMD can reach on a table at a given budget: the ceiling for the language model.

The LM learner's self-play loss (rl/losses.py) trains a tabular softmax policy (rl/tabular.py
`train_sampled`) from sampled games — the same estimator the LM gets, with no function approximation.
For each games-per-step budget, magnet and table step size, it prints the last iterate's exploitability
after `--steps` steps (mean and 95% t-interval over `--seeds`, the worst seed) beside OpenSpiel's
outcome-sampling MCCFR average policy at the same number of sampled games. Not a timed benchmark.

    OMP_NUM_THREADS=1 python bench/tabular_selfplay_budget.py [--game kuhn_poker] [--steps 300] [--seeds 4]
        [--games 64 128 256] [--lrs 1 4]
"""
from __future__ import annotations

import argparse

import pyspiel

from compose_rl.rl.tabular import MMDConfig, TabularGame, train_sampled
from compose_rl.stats import mean_ci

MAGNETS = {
    # the magnets the recipes ship: uniform with a decaying alpha (biased towards a QRE while alpha > 0),
    # and a moving magnet (an EMA of the policy) with a constant alpha (converges in the last iterate)
    "uniform a=0.5/sqrt(1+t/50)": MMDConfig(alpha=0.5, alpha_schedule="inv_sqrt", alpha_horizon=50.0, magnet="uniform"),
    "moving a=0.5 rate 0.05": MMDConfig(alpha=0.5, alpha_schedule="constant", magnet="moving", magnet_rate=0.05),
}


def mccfr(game, games: int, seed: int) -> float:
    solver = pyspiel.OutcomeSamplingMCCFRSolver(game, seed=seed)
    for _ in range(games // 2):  # one iteration samples one trajectory per player
        solver.run_iteration()
    return float(pyspiel.exploitability(game, solver.average_policy()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--game", default="kuhn_poker")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--games", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--lr-schedule", default="linear_tail")
    args = ap.parse_args()
    game = pyspiel.load_game(args.game)
    tg = TabularGame.build(game)
    print(f"{args.game}: {args.steps} steps, last iterate, {args.seeds} seeds, lr schedule {args.lr_schedule}")
    print("| games/step | total games | magnet | table lr | exploitability (95% CI) | worst seed | MCCFR avg (95% CI) |")
    print("|---|---|---|---|---|---|---|")
    for g in args.games:
        total = g * args.steps
        ref = mean_ci([mccfr(game, total, s) for s in range(args.seeds)])
        for name, cfg in MAGNETS.items():
            for lr in args.lrs:
                xs = [train_sampled(tg, g, args.steps, cfg, seed=s, lr=lr, lr_schedule=args.lr_schedule)[1][-1][1]
                      for s in range(args.seeds)]
                m, h = mean_ci(xs)
                print(f"| {g} | {total} | {name} | {lr:g} | {m:.3f} ± {h:.3f} | {max(xs):.3f} | "
                      f"{ref[0]:.3f} ± {ref[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
