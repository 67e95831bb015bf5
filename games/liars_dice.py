"""Liar's dice (OpenSpiel `liars_dice`, default: 2 players, 1 six-sided die each, 6 is wild).

Held-out transfer game. OpenSpiel's observation_string is not implemented for it, so the player's
view is built from its information-state string (own dice) and the public bid history.
Action names: a bid of quantity q on face f (action (q - 1) * sides + (f - 1)) is "1 four" /
"2 fours" (face word, plural when q > 1); the last action is "liar". The own dice are the last
line of the prompt ("Your die: 3"); the opponent's dice are never printed.
"""
from __future__ import annotations

import pyspiel

from games.base import Game

FACE = ("one", "two", "three", "four", "five", "six")
FACES = ("ones", "twos", "threes", "fours", "fives", "sixes")


class LiarsDice(Game):
    name = "liars_dice"
    rules = (
        "Liar's dice. Each player rolls 1 hidden die; 6 is wild (counts as any face). "
        "A bid 'N fives' claims at least N of all dice show five. Each bid must be higher: "
        "more dice, or as many dice with a higher face. Or say liar: if the last bid is true "
        "the caller loses, otherwise the bidder loses."
    )

    @property
    def sides(self) -> int:
        return self.openspiel_game.get_parameters()["dice_sides"]

    @property
    def total_dice(self) -> int:
        p = self.openspiel_game.get_parameters()
        return p["numdice"] * p["players"]

    @property
    def liar_action(self) -> int:
        return self.total_dice * self.sides

    def bid_name(self, action: int) -> str:
        if action == self.liar_action:
            return "liar"
        q, f = divmod(action, self.sides)
        f += 1
        q += 1
        if self.sides <= len(FACE):
            return f"{q} {FACE[f - 1] if q == 1 else FACES[f - 1]}"
        return f"{q} x {f}"

    def own_dice(self, state: pyspiel.State, player: int) -> list[int]:
        # The information-state string starts with the player's own dice faces, e.g. "3" or "35".
        first = state.information_state_string(player).split(" ")[0]
        return [int(c) for c in first]

    def _action_name(self, state: pyspiel.State, action: int) -> str:
        return self.bid_name(action)

    def render(self, state: pyspiel.State, player: int) -> str:
        bids = [
            f"{'You' if p == player else 'Opponent'} "
            + ("called liar." if a == self.liar_action else f"bid {self.bid_name(a)}.")
            for p, a in self.player_actions(state)
        ]
        dice = self.own_dice(state, player)
        label = "Your die" if len(dice) == 1 else "Your dice"
        history = " ".join(bids) if bids else "none, you bid first."
        return f"Bids: {history}\n{label}: {' '.join(map(str, dice))}"


GAME = LiarsDice()
