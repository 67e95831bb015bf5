"""Kuhn poker (OpenSpiel `kuhn_poker`): three cards J<Q<K, one card each, ante 1, one bet of 1.

Action names: 0 -> "pass", 1 -> "bet" (both are legal at every decision). Facing a bet, "bet"
calls and "pass" folds. The rendered history uses the same words ("You passed. Opponent bet.").
The player's own card is the last line of the prompt ("Your card: K").
"""
from __future__ import annotations

import pyspiel

from games.base import Game

CARDS = "JQK"
ACTIONS = ("pass", "bet")


class KuhnPoker(Game):
    name = "kuhn_poker"
    rules = (
        "Kuhn poker. Cards J<Q<K, one each; both ante 1. "
        "pass: check, or fold to a bet. bet: add 1 chip, or call a bet. "
        "Showdown: higher card wins the pot."
    )

    def own_card(self, state: pyspiel.State, player: int) -> str:
        # The information-state string starts with the player's own card id (0, 1, 2).
        return CARDS[int(state.information_state_string(player)[0])]

    def _action_name(self, state: pyspiel.State, action: int) -> str:
        return ACTIONS[action]

    def render(self, state: pyspiel.State, player: int) -> str:
        moves = self.player_actions(state)
        words = [
            f"{'You' if p == player else 'Opponent'} {'passed' if a == 0 else 'bet'}."
            for p, a in moves
        ]
        pot = 2 + sum(a for _, a in moves)
        history = " ".join(words) if words else "none, you act first."
        return f"History: {history} Pot: {pot}.\nYour card: {self.own_card(state, player)}"


GAME = KuhnPoker()
