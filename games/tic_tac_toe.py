"""Tic-tac-toe (OpenSpiel `tic_tac_toe`). Player 0 is x and moves first; player 1 is o.

Cells are named by column letter and row number: action id 3 * row + col is named
"abc"[col] + str(row + 1), so "a1" is the top-left cell (action 0) and "c3" the bottom-right (action 8). The board is shown
as a labelled grid and the player's mark is the last line.
"""
from __future__ import annotations

import pyspiel

from games.base import Game

COLS = "abc"
MARKS = ("x", "o")


def cell_name(action: int) -> str:
    row, col = divmod(action, 3)
    return f"{COLS[col]}{row + 1}"


class TicTacToe(Game):
    name = "tic_tac_toe"
    rules = (
        "Tic-tac-toe. Players take turns marking an empty cell; three marks in a row, column "
        "or diagonal win. Cells: column a-c, row 1-3 (a1 = top left)."
    )

    def _action_name(self, state: pyspiel.State, action: int) -> str:
        return cell_name(action)

    def render(self, state: pyspiel.State, player: int) -> str:
        rows = state.observation_string(player).strip().split("\n")
        grid = ["  a b c"] + [f"{i + 1} " + " ".join(r) for i, r in enumerate(rows)]
        return "\n".join(grid) + f"\nYou play {MARKS[player]}."


GAME = TicTacToe()
