"""A tabular softmax policy trained with the learner's own loss functions: the reference that tells how
far a language-model policy is from what the algorithm itself does with the same experience.

One logit vector per information state of a small two-player zero-sum OpenSpiel game (Kuhn: 12 states,
Leduc: 936, turn-based matching pennies: 2). Two ways to train it, both through `rl/losses.py`:

- `exact_step`: the full-information update. q(s, a) are counterfactual action values (Zinkevich et
  al. 2007: the other player's and chance's reach times the expected return after a), the
  policy-gradient term is -sum_a p(a|s) q(s, a) at every state, and MMD adds alpha KL(p || rho) +
  (1/eta) KL(p || p_t) per state (Sokota et al. 2023, eq. 5 in behavioural form with counterfactual
  values). This is what the unit tests drive to Nash.
- `sampled_step`: what the LM learner sees. `games` self-play games are sampled with the current
  policy; every turn gets A = R - b(s) (an EMA baseline per information state, read before the batch);
  the loss is -mean A log p(a|s) (`seq_sum` units: one term per turn) plus the same MMD terms over
  the visited states, one Adam step. Counting sampled games makes its exploitability curve the
  sample-efficiency reference drawn beside the LM's.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pyspiel
import torch

from compose_rl.rl.losses import (legal_log_probs, lr_factor, mmd_alpha, mmd_state_terms, mmd_target, moving_magnet,
                                  uniform_log_probs)


@dataclass
class TabularGame:
    """Every information state of a small game: its key, player and legal actions, in a fixed order."""

    game: pyspiel.Game
    keys: list[str] = field(default_factory=list)
    legal: torch.Tensor | None = None  # (S, A) bool
    actions: list[list[int]] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, game: pyspiel.Game) -> "TabularGame":
        t = cls(game)
        found: dict[str, list[int]] = {}

        def walk(state):
            if state.is_terminal():
                return
            if state.is_chance_node():
                for a, _ in state.chance_outcomes():
                    walk(state.child(a))
                return
            key = state.information_state_string(state.current_player())
            found.setdefault(key, list(state.legal_actions()))
            for a in state.legal_actions():
                walk(state.child(a))

        walk(game.new_initial_state())
        t.keys = sorted(found)
        t.index = {k: i for i, k in enumerate(t.keys)}
        t.actions = [found[k] for k in t.keys]
        width = max(len(a) for a in t.actions)
        t.legal = torch.zeros(len(t.keys), width, dtype=torch.bool)
        for i, acts in enumerate(t.actions):
            t.legal[i, : len(acts)] = True
        return t

    def tables(self, probs: torch.Tensor) -> dict[str, dict[int, float]]:
        """{info state: {action: prob}}, the form `evals.exploitability` scores."""
        return {k: {a: float(probs[i, j]) for j, a in enumerate(acts)}
                for i, (k, acts) in enumerate(zip(self.keys, self.actions))}


def counterfactual_values(tg: TabularGame, probs: torch.Tensor) -> torch.Tensor:
    """q(s, a), (S, A): for the player p acting at s, the sum over histories h in s of the reach of h by
    chance and the other player, times p's expected return after playing a at h (then `probs`)."""
    q = torch.zeros(probs.shape, dtype=torch.float64)
    p = probs.detach().to(torch.float64)

    def value(state, reach_other: list[float]) -> list[float]:
        if state.is_terminal():
            return list(state.returns())
        if state.is_chance_node():
            total = [0.0, 0.0]
            for a, pr in state.chance_outcomes():
                v = value(state.child(a), [r * pr for r in reach_other])
                total = [t + pr * x for t, x in zip(total, v)]
            return total
        pl = state.current_player()
        i = tg.index[state.information_state_string(pl)]
        total = [0.0, 0.0]
        for j, a in enumerate(tg.actions[i]):
            pa = float(p[i, j])
            child_reach = list(reach_other)
            child_reach[1 - pl] *= pa  # for the other player, this move is "other" reach
            v = value(state.child(a), child_reach)
            q[i, j] += reach_other[pl] * v[pl]
            total = [t + pa * x for t, x in zip(total, v)]
        return total

    value(tg.game.new_initial_state(), [1.0, 1.0])
    return q.to(probs.dtype)


@dataclass
class MMDConfig:
    alpha: float = 0.1
    alpha_schedule: str = "constant"
    alpha_horizon: float = 100.0
    eta: float | None = None
    magnet: str = "uniform"  # uniform | moving
    magnet_rate: float = 0.05  # moving magnet: rho <- rho^(1-m) p^m
    update: str = "gradient"  # gradient | target (the closed-form step from sampled per-action values)
    validity: float = 0.0  # a tabular policy has no illegal mass; kept for the shared loss


class TabularPolicy:
    """Softmax over logits per information state, trained with the learner's losses."""

    def __init__(self, tg: TabularGame, lr: float, optimizer: str = "sgd", seed: int = 0):
        self.tg = tg
        gen = torch.Generator().manual_seed(seed)
        self.logits = (0.01 * torch.randn(tg.legal.shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
        self.opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)([self.logits], lr=lr)
        self.magnet = uniform_log_probs(tg.legal).to(torch.float64)
        self.baseline: dict[int, float] = {}
        self.q: torch.Tensor | None = None  # per (state, action) values of the target update
        self.t = 0

    def log_probs(self):
        """(log p over the legal actions, log mass), through the same function the LM learner uses."""
        return legal_log_probs(self.logits, self.tg.legal)

    def probs(self) -> torch.Tensor:
        return self.log_probs()[0].exp().detach() * self.tg.legal

    def _regulariser(self, logp, log_mass, rows, mmd: MMDConfig | None, old):
        if mmd is None:
            return logp.new_zeros(())
        alpha = mmd_alpha(mmd.alpha, self.t, mmd.alpha_schedule, mmd.alpha_horizon)
        terms = mmd_state_terms(logp[rows], log_mass[rows], self.tg.legal[rows], self.magnet[rows], alpha,
                                mmd.eta, None if old is None else old[rows], mmd.validity)
        return terms["loss"].mean()

    def _after(self, mmd: MMDConfig | None):
        if mmd is not None and mmd.magnet == "moving":
            with torch.no_grad():
                logp, _ = self.log_probs()
                self.magnet = moving_magnet(self.magnet, logp, self.tg.legal, mmd.magnet_rate)
        self.t += 1

    def exact_step(self, mmd: MMDConfig | None, inner_steps: int = 1) -> None:
        """One MMD iteration on exact counterfactual values (`inner_steps` gradient steps on the same
        q and p_t, so the proximal term acts from the second one on)."""
        q = counterfactual_values(self.tg, self.probs())
        with torch.no_grad():
            old = self.log_probs()[0].clone()
        rows = torch.arange(len(self.tg.keys))
        for _ in range(inner_steps):
            logp, log_mass = self.log_probs()
            pg = -(logp.exp() * q * self.tg.legal).sum(-1).sum()
            loss = pg + self._regulariser(logp, log_mass, rows, mmd, old) * len(self.tg.keys)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self._after(mmd)

    def sampled_step(self, games: int, rng: random.Random, mmd: MMDConfig | None, baseline_decay: float = 0.9) -> None:
        """Self-play `games` games with the current policy, then one step of -mean A log p + MMD terms
        (`mmd.update == "target"`: `target_step` instead)."""
        turns = self._sample_turns(games, rng)
        if mmd is not None and mmd.update == "target":
            self.target_step(turns, mmd)
            return
        adv = [r - self.baseline.get(i, 0.0) for i, _, r in turns]
        for i, _, r in turns:
            self.baseline[i] = baseline_decay * self.baseline.get(i, 0.0) + (1 - baseline_decay) * r
        logp, log_mass = self.log_probs()
        rows = torch.tensor([i for i, _, _ in turns])
        cols = torch.tensor([j for _, j, _ in turns])
        pg = -(torch.tensor(adv, dtype=logp.dtype) * logp[rows, cols]).mean()
        visited = torch.tensor(sorted({i for i, _, _ in turns}))
        loss = pg + self._regulariser(logp, log_mass, visited, mmd, None)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self._after(mmd)

    def target_step(self, turns: list[tuple[int, int, float]], mmd: MMDConfig) -> None:
        """The LM learner's `rl.mmd.update: target` on the table: q(s, a) = the mean return of the turns that
        played a at s (kept where a was not played), then the logits become MMD's closed-form step
        (losses.mmd_target) at every visited state — an exact fit, where the LM takes optimizer steps."""
        if self.q is None:
            self.q = torch.zeros(self.tg.legal.shape, dtype=torch.float64)
        sums, counts = torch.zeros_like(self.q), torch.zeros_like(self.q)
        for i, j, r in turns:
            sums[i, j] += r
            counts[i, j] += 1
        self.q = torch.where(counts > 0, sums / counts.clamp(min=1), self.q)
        visited = torch.tensor(sorted({i for i, _, _ in turns}))
        alpha = mmd_alpha(mmd.alpha, self.t, mmd.alpha_schedule, mmd.alpha_horizon)
        with torch.no_grad():
            logp, _ = self.log_probs()
            goal = mmd_target(logp[visited], self.q[visited], self.magnet[visited], self.tg.legal[visited], alpha,
                              mmd.eta if mmd.eta is not None else 1.0)
            self.logits[visited] = goal.to(self.logits.dtype)
        self._after(mmd)

    def _sample_turns(self, games: int, rng: random.Random) -> list[tuple[int, int, float]]:
        """`games` self-play games of the current policy: (state row, action column, return of the mover) per turn."""
        p = self.probs()
        turns: list[tuple[int, int, float]] = []
        for _ in range(games):
            state = self.tg.game.new_initial_state()
            moves = []
            while not state.is_terminal():
                if state.is_chance_node():
                    outs, prs = zip(*state.chance_outcomes())
                    state.apply_action(rng.choices(outs, weights=prs)[0])
                    continue
                pl = state.current_player()
                i = self.tg.index[state.information_state_string(pl)]
                acts = self.tg.actions[i]
                j = rng.choices(range(len(acts)), weights=[float(p[i, k]) for k in range(len(acts))])[0]
                moves.append((i, j, pl))
                state.apply_action(acts[j])
            rets = state.returns()
            turns += [(i, j, rets[pl]) for i, j, pl in moves]
        return turns


def exploitability(tg: TabularGame, probs: torch.Tensor) -> float:
    """OpenSpiel's exact exploitability of the tabular policy `probs` (S, A)."""
    from open_spiel.python import policy as os_policy
    from open_spiel.python.algorithms import exploitability as os_expl

    tab = os_policy.TabularPolicy(tg.game)
    for key, row in tg.tables(probs).items():
        i = tab.state_lookup[key]
        for a, p in row.items():
            tab.action_probability_array[i][a] = p
    return float(os_expl.exploitability(tg.game, tab))


# plain SGD on the table's logits: the step size `bench/tabular_selfplay_budget.py` found best at the shipped
# budgets (64-256 games x 300 steps, Kuhn), with the recipe's lr schedule on top
TABLE_LR = 4.0


def train_sampled(tg: TabularGame, games_per_step: int, steps: int, mmd: MMDConfig | None, seed: int = 0,
                  lr: float = TABLE_LR, lr_schedule: str = "constant", every: int = 0, optimizer: str = "sgd"):
    """Sampled self-play MMD on a table: `steps` x `sampled_step(games_per_step)`, SGD (or `optimizer`
    "adam") at `lr` times `lr_factor(lr_schedule)` (the LM learner's schedule). Returns (policy,
    [[games, exploitability], ...] every `every` steps (0: only the start and the end), last iterate)."""
    pol = TabularPolicy(tg, lr=lr, optimizer=optimizer, seed=seed)
    rng = random.Random(seed)
    curve = [[0.0, exploitability(tg, pol.probs())]]
    for step in range(steps):
        for group in pol.opt.param_groups:
            group["lr"] = lr * lr_factor(lr_schedule, step, steps)
        pol.sampled_step(games_per_step, rng, mmd)
        if (every and (step + 1) % every == 0) or step + 1 == steps:
            curve.append([float((step + 1) * games_per_step), exploitability(tg, pol.probs())])
    return pol, curve


def reference_curves(game_name: str, games_per_step: int, steps: int, mmd: MMDConfig, seed: int = 0,
                     points: int = 20, lr: float = TABLE_LR, lr_schedule: str = "constant") -> dict[str, list[list[float]]]:
    """Exploitability against the number of sampled games, for the algorithms themselves at the LM's budget:
    `tabular_mmd` (`train_sampled`: `games_per_step` games a step, plain SGD at `lr` on the logits — the
    step size tuned for the table, not the LM's — under the LM's `lr_schedule`) and `mccfr_outcome_sampling`
    (OpenSpiel's outcome-sampling MCCFR average policy; one iteration samples one trajectory per player =
    2 games). Each curve: [[games sampled, exploitability], ...] at `points` evenly spaced steps, last iterate."""
    game = pyspiel.load_game(game_name)
    tg = TabularGame.build(game)
    _, mmd_curve = train_sampled(tg, games_per_step, steps, mmd, seed=seed, lr=lr, lr_schedule=lr_schedule,
                                 every=max(1, steps // points))
    solver = pyspiel.OutcomeSamplingMCCFRSolver(game, seed=seed)
    cfr_curve, done = [], 0
    for games in [g for g, _ in mmd_curve[1:]]:
        while done < games:
            solver.run_iteration()
            done += 2
        cfr_curve.append([float(done), float(pyspiel.exploitability(game, solver.average_policy()))])
    return {"tabular_mmd": mmd_curve, "mccfr_outcome_sampling": cfr_curve}

