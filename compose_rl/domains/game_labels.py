"""The game domain's stage-1 label code: SFT data, not evaluation (compose_rl/domains/games.py uses it).

Training games get a random code per seed from each private line to an action (`by="line"`, the
`code` labels) or from each whole information state, private line and public history (`by="infostate"`):
fitting the labels requires reading what the code is keyed on, and the code carries no knowledge of good
play. Its own exact score (`label_policy_tables` scored by evals.games.policy_baseline_metrics) is the
stage-1 baseline.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pyspiel

from compose_rl.evals.exploitability import Tables, infostates
from compose_rl.evals.games import policy_baseline_metrics  # noqa: F401 (the label policy's score: label_baseline)
from games.base import private_line

if TYPE_CHECKING:
    from games import Game


BY = ("line", "infostate")


def label_key(game: "Game", state: pyspiel.State, player: int, by: str = "line") -> str:
    """What the code is keyed on: the private line ("Your card: K"), or that line and the public history
    (OpenSpiel's information-state string, which holds both: one key per information state)."""
    if by == "line":
        return private_line(game, state, player)
    if by == "infostate":
        return private_line(game, state, player) + " | " + state.information_state_string(player)
    raise ValueError(f"label code keyed by {by!r}: use one of {BY}")


def label_index(game_name: str, line: str, seed: int, draw: int = 0) -> int:
    """The stage-1 code's random index for one private line, drawn from an RNG keyed on (seed, game, line).

    `random.Random(str)` seeds through SHA-512 of the string (not Python's salted `hash`), so the
    draw is the same in every process, whatever order states are visited in, and it says nothing
    about what the line means: which card is strong, or where its text sorts (the old code ranked
    lines by their text, which for Kuhn gave only two codes, one of them a value strategy).
    """
    # 720 is divisible by 1..6: the index mod any legal count up to 6 is exactly uniform
    key = f"stage1-code/{seed}/{game_name}/{line}" + (f"/draw{draw}" if draw else "")
    return random.Random(key).randrange(720)


_DRAWS: dict[tuple[str, int, str], int] = {}


def label_draw(game: "Game", seed: int, by: str = "line") -> int:
    """Which draw of the seed's code is used: the first under which the private lines do not all get
    the same action. A constant code (Kuhn: "always bet" or "always pass" whatever the card; 2 of
    the 8 maps) can be fitted without reading the private line, so stage 1 would not teach the
    model to read its card, and self-play then sits on the card-blind plateau. It is redrawn; the
    six non-constant Kuhn maps stay equally likely. Games whose information states are not
    enumerated (SMALL_GAMES only) use the first draw."""
    key = (game.name, seed, by)
    if key not in _DRAWS:
        try:
            infos = infostates(game)
        except ValueError:  # not a small game: no enumeration of its private lines
            _DRAWS[key] = 0
            return 0
        lines = sorted({label_key(game, i.state, i.player, by) for i in infos})
        n = min(len(i.legal) for i in infos)
        draw = 0
        while len(lines) > 1 and len({label_index(game.name, ln, seed, draw) % n for ln in lines}) == 1:
            draw += 1
            if draw > 1000:  # P(constant) <= 1/2 per draw: never reached by a real RNG
                raise RuntimeError(f"stage-1 code for {game.name}: no non-constant code in 1000 draws")
        _DRAWS[key] = draw
    return _DRAWS[key]


def label_action(game: "Game", state: pyspiel.State, player: int, seed: int, by: str = "line") -> int:
    """The code's action: legal action number label_index mod (number of legal actions).

    Where the legal set differs between states of the same private line (Leduc: no fold without a
    bet, no raise at the cap) the index is read modulo that state's own legal count; where every
    action is always legal (Kuhn: pass, bet) this is a fixed random map from line to action.
    """
    legal = state.legal_actions(player)
    index = label_index(game.name, label_key(game, state, player, by), seed, label_draw(game, seed, by))
    return legal[index % len(legal)]


def label_policy_tables(game: "Game", seed: int, sharp: float, by: str = "line") -> Tables:
    """The stage-1 label distribution as a tabular policy, at every information state of a small game.

    SFT labels are: with probability `sharp` the code's action, else a uniform legal action (which
    may be the code's action too), so P(code action) = sharp + (1 - sharp)/n and every other legal
    action gets (1 - sharp)/n. This is what a model that fits the labels perfectly would play.
    """
    if not 0.0 <= sharp <= 1.0:
        raise ValueError(f"sharp must be in [0, 1], got {sharp}")
    out: Tables = {}
    for info in infostates(game):
        legal = info.legal
        code = label_action(game, info.state, info.player, seed, by)
        out[info.key] = {int(a): (1.0 - sharp) / len(legal) + (sharp if a == code else 0.0) for a in legal}
    return out


def label_code_map(game: "Game", seed: int, by: str = "line") -> dict[str, dict[str, str]]:
    """Which action the code gives each key (private line, or line and history), per legal set:
    {line: {"pass,bet": "bet"}} (small games)."""
    out: dict[str, dict[str, str]] = {}
    for info in infostates(game):
        names = game.action_names(info.state)
        legal_key = ",".join(names[a] for a in info.legal)
        line = label_key(game, info.state, info.player, by)
        out.setdefault(line, {})[legal_key] = names[label_action(game, info.state, info.player, seed, by)]
    return {k: out[k] for k in sorted(out)}
