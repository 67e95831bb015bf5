"""What sampled self-play MMD can reach on a table at a given budget: the ceiling for the language model.

The LM learner's self-play loss (rl/losses.py) trains a tabular softmax policy (rl/tabular.py
`train_sampled`) from sampled games — the same estimator the LM gets, with no function approximation.
For each games-per-step budget, magnet and table step size, it prints the last iterate's exploitability
after `--steps` steps (mean and 95% t-interval over `--seeds`, the worst seed) beside OpenSpiel's
outcome-sampling MCCFR average policy at the same number of sampled games. Not a timed benchmark.

    OMP_NUM_THREADS=1 python bench/tabular_selfplay_budget.py [--game kuhn_poker] [--steps 300] [--seeds 4]
        [--games 64 128 256] [--lrs 1 4] [--optimizer sgd|adam] [--rates 0.05] [--alpha 0.5]
        [--update gradient|target] [--eta 0.3]
"""
from __future__ import annotations

import argparse

import pyspiel

from compose_rl.rl.tabular import MMDConfig, TabularGame, train_sampled
from compose_rl.stats import mean_ci

# the shipped recipe's magnet: uniform with a decaying alpha (biased towards a QRE while alpha > 0); the moving
# magnets (--rates: rho <- rho^(1-m) p^m, constant alpha) converge in the last iterate
UNIFORM = MMDConfig(alpha=0.5, alpha_schedule="inv_sqrt", alpha_horizon=50.0, magnet="uniform")


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
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                    help="the table's optimizer (the LM learner's rl.optimizer); adam wants lrs ~0.01-0.1")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.05], help="moving-magnet rates m to try")
    ap.add_argument("--alpha", type=float, default=0.5, help="the moving magnet's (constant) alpha")
    ap.add_argument("--update", choices=["gradient", "target"], default="gradient",
                    help="target: the closed-form MMD step from sampled per-action values (rl.mmd.update), "
                         "step size --eta; --lrs are then ignored")
    ap.add_argument("--eta", type=float, default=0.3)
    args = ap.parse_args()
    extra = {"update": args.update, "eta": args.eta} if args.update == "target" else {}
    magnets = {"uniform a=0.5/sqrt(1+t/50)": MMDConfig(**{**UNIFORM.__dict__, **extra})}
    magnets.update({f"moving a={args.alpha:g} rate {m:g}": MMDConfig(alpha=args.alpha, alpha_schedule="constant",
                                                                      magnet="moving", magnet_rate=m, **extra)
                    for m in args.rates})
    if args.update == "target":
        args.lrs = [float("nan")]  # the target step has no table lr
        print(f"update: target, eta {args.eta}")
    game = pyspiel.load_game(args.game)
    tg = TabularGame.build(game)
    print(f"{args.game}: {args.steps} steps, last iterate, {args.seeds} seeds, lr schedule {args.lr_schedule}, "
          f"table optimizer {args.optimizer}")
    print("| games/step | total games | magnet | table lr | exploitability (95% CI) | worst seed | MCCFR avg (95% CI) |")
    print("|---|---|---|---|---|---|---|")
    for g in args.games:
        total = g * args.steps
        ref = mean_ci([mccfr(game, total, s) for s in range(args.seeds)])
        for name, cfg in magnets.items():
            for lr in args.lrs:
                xs = [train_sampled(tg, g, args.steps, cfg, seed=s, lr=lr, lr_schedule=args.lr_schedule,
                                    optimizer=args.optimizer)[1][-1][1]
                      for s in range(args.seeds)]
                m, h = mean_ci(xs)
                print(f"| {g} | {total} | {name} | {lr:g} | {m:.3f} ± {h:.3f} | {max(xs):.3f} | "
                      f"{ref[0]:.3f} ± {ref[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
