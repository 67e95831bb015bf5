"""Leduc poker (OpenSpiel `leduc_poker`, 2 players): six cards (Jack, Queen, King in two suits).

Card id c has rank c // 2 (Jack, Queen, King) and suit c % 2 (spades, hearts); suits never matter
for hand strength. Action names: 0 -> "fold", 1 -> "call" (also a check when nothing is owed),
2 -> "raise". The prompt ends with the public card then the player's own card.
"""
from __future__ import annotations

import re

import pyspiel

from games.base import Game

RANKS = ("Jack", "Queen", "King")
SUITS = ("spades", "hearts")
ACTIONS = ("fold", "call", "raise")
VERBS = ("folded", "called", "raised")


def card_name(card: int) -> str:
    return f"{RANKS[card // 2]} of {SUITS[card % 2]}"


def _field(text: str, key: str) -> str | None:
    m = re.search(r"\[" + key + r": ([^\]]*)\]", text)
    return m.group(1).strip() if m else None


class LeducPoker(Game):
    name = "leduc_poker"
    rules = (
        "Leduc poker. 6 cards: Jack<Queen<King in 2 suits. Both ante 1 and get a private card; "
        "a public card is shown after round 1. Max 2 raises per round; a raise is 2 chips in "
        "round 1, 4 in round 2. fold: give up the pot. call: match the bet (or check). "
        "Showdown: pairing the public card wins, else higher rank; equal ranks split."
    )

    def private_card(self, state: pyspiel.State, player: int) -> int:
        return int(_field(state.information_state_string(player), "Private"))

    def public_card(self, state: pyspiel.State, player: int) -> int | None:
        pub = _field(state.information_state_string(player), "Public")
        return int(pub) if pub not in (None, "") else None

    def _action_name(self, state: pyspiel.State, action: int) -> str:
        return ACTIONS[action]

    def render(self, state: pyspiel.State, player: int) -> str:
        n = self.num_players
        rounds: list[list[str]] = [[], []]
        chance_seen = 0
        for pa in state.full_history():
            if pa.player < 0:
                chance_seen += 1
                continue
            r = 0 if chance_seen <= n else 1
            who = "You" if pa.player == player else "Opponent"
            rounds[r].append(f"{who} {VERBS[pa.action]}.")
        obs = state.observation_string(player)  # contains only this player's private card
        ante = [int(x) for x in (_field(obs, "Ante") or "").split()]
        cur_round = 2 if chance_seen > n else 1
        lines = []
        if len(ante) == 2:
            lines.append(
                f"Round {cur_round}. Pot {sum(ante)}: you put in {ante[player]}, "
                f"opponent {ante[1 - player]}."
            )
        for r in range(cur_round):
            lines.append(f"Round {r + 1}: " + (" ".join(rounds[r]) or "no actions yet."))
        pub = self.public_card(state, player)
        lines.append("Public card: " + (card_name(pub) if pub is not None else "not shown yet."))
        lines.append("Your card: " + card_name(self.private_card(state, player)))
        return "\n".join(lines)


GAME = LeducPoker()
