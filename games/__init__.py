"""Text interfaces to OpenSpiel games for LLM self-play: `GAMES` registry and `get_game`."""
from __future__ import annotations

from games.bargaining import GAME as _bargaining
from games.base import Game, last_boxed
from games.kuhn_poker import GAME as _kuhn
from games.leduc_poker import GAME as _leduc
from games.liars_dice import GAME as _liars
from games.tic_tac_toe import GAME as _ttt

GAMES: dict[str, Game] = {g.name: g for g in (_kuhn, _leduc, _ttt, _liars, _bargaining)}


def get_game(name: str) -> Game:
    if isinstance(name, Game):
        return name
    if name not in GAMES:
        raise ValueError(f"unknown game {name!r}; known games: {', '.join(GAMES)}")
    return GAMES[name]


__all__ = ["GAMES", "Game", "get_game", "last_boxed"]
