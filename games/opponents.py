"""Fixed opponents for games: random, CFR+ Nash (poker), minimax (tic-tac-toe), MCTS.

`make_opponent(kind, game, seed)` returns a callable `state -> action id` for the state's current
player. Kinds per game (`opponent_kinds`):

* "random": uniform over legal actions (every game).
* "nash": samples the CFR+ average policy (`nash_policy`), kuhn_poker (1000 iterations,
  exploitability ~1e-4) and leduc_poker (300 iterations, ~2 s, exploitability ~2e-3). Solved once
  per process and cached.
* "minimax": perfect play for tic_tac_toe from a memoized full-tree solver (ties between
  optimal moves broken by the seeded rng).
* "mcts": `pyspiel.MCTSBot` with a random-rollout evaluator for perfect-information games
  (tic_tac_toe); `pyspiel.ISMCTSBot` (information-set MCTS, which samples worlds consistent with
  the bot's own information and so never sees hidden cards) for kuhn_poker, leduc_poker and
  bargaining. liars_dice has no mcts: OpenSpiel does not implement ResampleFromInfostate for it,
  and plain MCTS on the true state would see the opponent's dice.
"""
from __future__ import annotations

import random
from typing import Callable

import pyspiel
from open_spiel.python import policy as policy_lib

from games.base import Game

NASH_ITERATIONS = {"kuhn_poker": 1000, "leduc_poker": 300}
MINIMAX_GAMES = ("tic_tac_toe",)
ISMCTS_GAMES = ("kuhn_poker", "leduc_poker", "bargaining")
MCTS_SIMULATIONS = 200

_NASH_CACHE: dict[str, policy_lib.TabularPolicy] = {}
_MINIMAX_CACHE: dict[str, "_Minimax"] = {}


def _as_game(game) -> Game:
    if isinstance(game, Game):
        return game
    from games import get_game

    return get_game(game)


def _is_perfect_info(game: Game) -> bool:
    info = game.openspiel_game.get_type().information
    return info == pyspiel.GameType.Information.PERFECT_INFORMATION


def opponent_kinds(game) -> list[str]:
    game = _as_game(game)
    kinds = ["random"]
    if game.name in NASH_ITERATIONS:
        kinds.append("nash")
    if game.name in MINIMAX_GAMES:
        kinds.append("minimax")
    if _is_perfect_info(game) or game.name in ISMCTS_GAMES:
        kinds.append("mcts")
    return kinds


def nash_policy(game) -> policy_lib.TabularPolicy:
    """CFR+ average policy (a python `TabularPolicy`, shared and cached: do not mutate it)."""
    game = _as_game(game)
    if game.name not in NASH_ITERATIONS:
        raise ValueError(
            f"no Nash policy for {game.name!r}; available for: {', '.join(NASH_ITERATIONS)}"
        )
    if game.name not in _NASH_CACHE:
        solver = pyspiel.CFRPlusSolver(game.openspiel_game)
        for _ in range(NASH_ITERATIONS[game.name]):
            solver.evaluate_and_update_policy()
        _NASH_CACHE[game.name] = policy_lib.pyspiel_policy_to_python_policy(
            game.openspiel_game, solver.tabular_average_policy()
        )
    return _NASH_CACHE[game.name]


def _sample(probs: dict[int, float], legal: list[int], rng: random.Random) -> int:
    weights = [max(0.0, float(probs.get(a, 0.0))) for a in legal]
    if sum(weights) <= 0:
        return rng.choice(legal)
    return rng.choices(legal, weights=weights)[0]


class _Minimax:
    """Memoized minimax for 2-player zero-sum deterministic perfect-information games."""

    def __init__(self, og: pyspiel.Game) -> None:
        self.og = og
        self.memo: dict[tuple[str, int], float] = {}

    def value(self, state: pyspiel.State) -> float:
        """Return for player 0 under optimal play from `state`."""
        if state.is_terminal():
            return state.returns()[0]
        key = (str(state), state.current_player())
        if key not in self.memo:
            vals = [self.value(state.child(a)) for a in state.legal_actions()]
            self.memo[key] = max(vals) if state.current_player() == 0 else min(vals)
        return self.memo[key]

    def best_actions(self, state: pyspiel.State) -> list[int]:
        p = state.current_player()
        sign = 1.0 if p == 0 else -1.0
        scored = [(sign * self.value(state.child(a)), a) for a in state.legal_actions()]
        best = max(s for s, _ in scored)
        return [a for s, a in scored if s >= best - 1e-9]


def make_opponent(kind: str, game, seed: int) -> Callable[[pyspiel.State], int]:
    game = _as_game(game)
    kinds = opponent_kinds(game)
    if kind not in kinds:
        raise ValueError(
            f"opponent {kind!r} not available for {game.name}; supported: {', '.join(kinds)}"
        )
    rng = random.Random(seed)

    if kind == "random":
        return lambda state: rng.choice(state.legal_actions())

    if kind == "nash":
        pol = nash_policy(game)

        def nash(state: pyspiel.State) -> int:
            probs = pol.action_probabilities(state, state.current_player())
            return _sample(probs, state.legal_actions(), rng)

        return nash

    if kind == "minimax":
        if game.name not in _MINIMAX_CACHE:
            _MINIMAX_CACHE[game.name] = _Minimax(game.openspiel_game)
        solver = _MINIMAX_CACHE[game.name]
        return lambda state: rng.choice(solver.best_actions(state))

    # kind == "mcts"
    bot_seed = seed % (2**31)
    evaluator = pyspiel.RandomRolloutEvaluator(1, bot_seed)
    if _is_perfect_info(game):
        bot = pyspiel.MCTSBot(
            game.openspiel_game, evaluator, 2.0, MCTS_SIMULATIONS, 100, True, bot_seed, False
        )
    else:
        bot = pyspiel.ISMCTSBot(
            bot_seed, evaluator, 2.0, MCTS_SIMULATIONS, -1,
            pyspiel.ISMCTSFinalPolicyType.MAX_VISIT_COUNT, False, False,
        )

    def mcts(state: pyspiel.State) -> int:
        _ = evaluator  # keep the evaluator alive as long as the bot
        return int(bot.step(state))

    return mcts
