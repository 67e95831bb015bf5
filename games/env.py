"""`GameEnv`: one OpenSpiel game played through text, with invalid-move and turn-cap handling.

Contract (shared with string tasks): `reset(seed)`, `current_player`, `observation(player)`,
`legal_actions()`, `step(text)`, `done`, `returns()`. Bots and opponents use `step_action(id)` and
read `state`.

* An invalid answer (no parseable `\\boxed{}` naming a legal action) is handled by
  `InvalidPolicy`: mode "penalty" ends the game at once, the offender gets `penalty` and every
  other player `other`; mode "retry" lets the same player answer again up to `retries` times per
  turn (the observation is unchanged) and then applies the penalty.
* `max_turns` caps the number of moves applied (all seats, bots included). A game that hits the
  cap is over and scored as a draw (all zeros); `truncated_turn_cap` is set.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import pyspiel

from games.base import Game


@dataclass(frozen=True)
class InvalidPolicy:
    mode: str = "penalty"  # "penalty" | "retry"
    penalty: float = -3.0  # must be worse than the worst game outcome (Kuhn: -2)
    other: float = 0.0
    retries: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("penalty", "retry"):
            raise ValueError(f"InvalidPolicy.mode must be 'penalty' or 'retry', got {self.mode!r}")


SPIRAL_INVALID = InvalidPolicy(penalty=-1.5, other=0.5)


@dataclass
class StepResult:
    valid: bool
    action: int | None
    action_name: str | None


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", "\\n")


class GameEnv:
    def __init__(
        self,
        game: Game,
        invalid: InvalidPolicy = InvalidPolicy(),
        max_turns: int = 50,
        lenient: bool = False,
    ) -> None:
        self.game = game
        self.invalid = invalid
        self.max_turns = max_turns
        self.lenient = lenient
        self.state: pyspiel.State | None = None
        self.done = True
        self.invalid_by: int | None = None
        self.truncated_turn_cap = False
        self.transcript: list[str] = []
        self.num_moves = 0
        self.retries_this_turn = 0
        self._rng = random.Random(0)

    # ------------------------------------------------------------------ lifecycle
    def reset(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self.state = self.game.new_initial_state(self._rng)
        self.invalid_by = None
        self.truncated_turn_cap = False
        self.transcript = []
        self.num_moves = 0
        self.retries_this_turn = 0
        self.done = self.state.is_terminal()

    @property
    def current_player(self) -> int:
        if self.done or self.state is None:
            return -1
        return self.state.current_player()

    def observation(self, player: int) -> str:
        return self.game.prompt(self.state, player)

    def legal_actions(self) -> list[str]:
        if self.done:
            return []
        return list(self.game.action_names(self.state).values())

    # ------------------------------------------------------------------ moves
    def _apply(self, action: int) -> None:
        self.state.apply_action(action)
        self.num_moves += 1
        self.retries_this_turn = 0
        self.game.resolve_chance(self.state, self._rng)
        if self.state.is_terminal():
            self.done = True
        elif self.num_moves >= self.max_turns:
            self.done = True
            self.truncated_turn_cap = True

    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("step() on a finished game; call reset()")
        player = self.current_player
        text = text if isinstance(text, str) else ""
        action = self.game.parse(text, self.state, lenient=self.lenient)
        if action is not None:
            name = self.game.action_names(self.state)[action]
            self.transcript.append(f"P{player}: {_one_line(text)}  => {name}")
            self._apply(action)
            return StepResult(True, action, name)
        if self.invalid.mode == "retry" and self.retries_this_turn < self.invalid.retries:
            self.retries_this_turn += 1
            self.transcript.append(
                f"P{player}: {_one_line(text)}  => invalid (retry {self.retries_this_turn})"
            )
            return StepResult(False, None, None)
        self.transcript.append(f"P{player}: {_one_line(text)}  => invalid, game over")
        self.invalid_by = player
        self.done = True
        return StepResult(False, None, None)

    def step_action(self, action: int) -> None:
        if self.done:
            raise RuntimeError("step_action() on a finished game; call reset()")
        player = self.current_player
        names = self.game.action_names(self.state)
        if action not in names:
            raise ValueError(f"illegal action {action} for P{player}; legal: {list(names)}")
        self.transcript.append(f"P{player} plays {names[action]}")
        self._apply(action)

    # ------------------------------------------------------------------ outcome
    def returns(self) -> list[float]:
        n = self.game.num_players
        if self.invalid_by is not None:
            out = [float(self.invalid.other)] * n
            out[self.invalid_by] = float(self.invalid.penalty)
            return out
        if self.truncated_turn_cap or self.state is None:
            return [0.0] * n
        return [float(r) for r in self.state.returns()]
