"""Bargaining (OpenSpiel `bargaining`, Lewis et al. 2017 instances): split books, hats and balls.

Each instance fixes a pool and each player's private item values. Players alternate offers; an
offer is the bundle the PROPOSER keeps (the other player gets the rest of the pool). "agree"
accepts the opponent's last offer; then each scores its own values of what it holds. No deal
after `max_turns` (10) offers: both get 0. General-sum, not zero-sum.

Action names: "offer B H K" (books, hats, balls the proposer keeps) and "agree". The game has 121
distinct actions and up to ~120 legal offers, so the prompt does not list them: it states the form
and the ranges (0..pool count of each item); every in-range offer is legal. `action_names` still
returns every legal action. Lenient parsing also accepts commas / a colon ("Offer: 1, 0, 2").
"""
from __future__ import annotations

import re

import pyspiel

from games.base import INSTRUCTION, Game, normalize_lenient

ITEMS = ("book", "hat", "ball")
_OFFER = re.compile(r"Book: (\d+), Hat: (\d+), Basketball: (\d+)")


def _counts(text: str, label: str) -> tuple[int, int, int]:
    line = next(ln for ln in text.split("\n") if ln.startswith(label))
    m = _OFFER.search(line)
    return tuple(int(x) for x in m.groups())  # type: ignore[return-value]


def _items(counts) -> str:
    return ", ".join(f"{n} {it}{'' if n == 1 else 's'}" for n, it in zip(counts, ITEMS))


class Bargaining(Game):
    name = "bargaining"
    rules = (
        "Bargaining. Split a pool of books, hats and balls; each player has private values per "
        "item. Take turns: offer a split or agree to the opponent's last offer. On agreement each "
        "scores the total value of the items they get; no deal after 10 offers: both score 0."
    )

    def __init__(self) -> None:
        super().__init__()
        self._offers: dict[int, tuple[int, int, int]] | None = None

    @property
    def agree_action(self) -> int:
        return self.openspiel_game.num_distinct_actions() - 1

    @property
    def offers(self) -> dict[int, tuple[int, int, int]]:
        """Action id -> (books, hats, balls) the proposer keeps (static across instances)."""
        if self._offers is None:
            s = self.openspiel_game.new_initial_state()
            s.apply_action(0)
            self._offers = {
                a: tuple(int(x) for x in _OFFER.search(s.action_to_string(0, a)).groups())
                for a in range(self.agree_action)
            }
        return self._offers

    def __getstate__(self):
        d = super().__getstate__()
        d["_offers"] = None
        return d

    def pool(self, state: pyspiel.State, player: int) -> tuple[int, int, int]:
        return _counts(state.information_state_string(player), "Pool:")

    def values(self, state: pyspiel.State, player: int) -> tuple[int, int, int]:
        return _counts(state.information_state_string(player), "My values:")

    def _action_name(self, state: pyspiel.State, action: int) -> str:
        if action == self.agree_action:
            return "agree"
        return "offer " + " ".join(map(str, self.offers[action]))

    def _lenient_key(self, s: str) -> str:
        s = normalize_lenient(s).replace(",", " ").replace(":", " ")
        return re.sub(r"\s+", " ", s).strip()

    def actions_text(self, state: pyspiel.State) -> str:
        p = state.current_player()
        b, h, k = self.pool(state, p) if p >= 0 else (0, 0, 0)
        can_agree = self.agree_action in state.legal_actions()
        return (
            f"Actions: offer B H K = books, hats, balls you keep (0-{b}, 0-{h}, 0-{k}); "
            "the opponent gets the rest"
            + (", or agree to accept the last offer" if can_agree else "")
            + ". " + INSTRUCTION
        )

    def render(self, state: pyspiel.State, player: int) -> str:
        pool = self.pool(state, player)
        lines = [f"Pool: {_items(pool)}."]
        moves = self.player_actions(state)
        words = []
        for p, a in moves:
            if a == self.agree_action:
                words.append(f"{'You' if p == player else 'Opponent'} agreed.")
                continue
            keep = self.offers[a]
            rest = tuple(t - x for t, x in zip(pool, keep))
            if p == player:
                words.append(f"You offered to keep {' '.join(map(str, keep))}.")
            else:
                words.append(
                    f"Opponent offered to keep {' '.join(map(str, keep))} "
                    f"(you get {' '.join(map(str, rest))})."
                )
        n_offers = sum(1 for _, a in moves if a != self.agree_action)
        max_offers = self.openspiel_game.get_parameters().get("max_turns", 10)
        lines.append(
            f"Offers ({n_offers} of {max_offers}): " + (" ".join(words) if words else "none yet.")
        )
        vals = self.values(state, player)
        lines.append("Your values: " + ", ".join(f"{it} {v}" for it, v in zip(ITEMS, vals)) + ".")
        return "\n".join(lines)


GAME = Bargaining()
