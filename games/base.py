"""The `Game` base class: an OpenSpiel game plus a text interface for a language model.

A game module defines a subclass and an instance `GAME`. The text interface has three parts:

* `render(state, player)`: the player's information state as readable text. It is built from the
  public action history plus that player's own private information only, never from `str(state)`
  (which prints every player's private cards). The player's private information comes last.
* `prompt(state, player)`: rules, the legal actions, the answer instruction, then `render(...)`,
  so the most decision-relevant private information (e.g. the card) is at the very end.
* `parse(text, state)`: the last `\\boxed{...}` in the text mapped to a legal action id, or None.
  `answer_text(state, a)` is the exact completion the strict parser accepts for action `a`.
"""
from __future__ import annotations

import random
import re

import pyspiel

BOX_OPEN = "\\boxed{"
INSTRUCTION = "Reply with \\boxed{<action>}."
# `games.answer: reason` (SPIRAL's prompt): reasoning first, the action in the last \boxed{}
REASON_INSTRUCTION = "Think step by step in a few short sentences, then give your final answer as \\boxed{<action>}."


def prompt_rewrites(answer: str, style: str, games) -> tuple[tuple[str, str], ...]:
    """The (old, new) text replacements a policy applies to every game prompt (`Policy.rewrites`), from the
    recipe's `games.answer` and `games.prompt`: `reason` swaps in SPIRAL's reasoning instruction;
    `compact` drops each game's rules line and, in `boxed` mode, the answer instruction (stage 1 teaches
    the format), leaving "Actions: ...", the public history and the private line last. Applied at
    formatting time, so the rollouts, the exact scorers and the evaluations all see the same prompt."""
    out: list[tuple[str, str]] = []
    if style == "compact":
        out += [(g.rules + "\n", "") for g in games if g.rules]
        if answer == "boxed":
            out.append((" " + INSTRUCTION, ""))
    if answer == "reason":
        out.append((INSTRUCTION, REASON_INSTRUCTION))
    return tuple(out)


def random_decision_states(game: "Game", n: int, seed: int, plies: tuple[int, int] = (2, 8)) -> list[tuple[pyspiel.State, int]]:
    """`n` distinct (state, player to move) pairs at decision nodes, each reached by a random number of
    uniformly random moves (chance and players alike) in `plies`: test and benchmark batches."""
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(1000 * (n + 1)):
        if len(out) == n:
            break
        state = game.openspiel_game.new_initial_state()
        for _ in range(rng.randint(*plies)):
            if state.is_terminal():
                break
            acts = [a for a, _ in state.chance_outcomes()] if state.is_chance_node() else state.legal_actions()
            state.apply_action(rng.choice(acts))
        if state.is_terminal() or state.is_chance_node():
            continue
        key = (str(state), state.current_player())
        if key not in seen:
            seen.add(key)
            out.append((state, state.current_player()))
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in `text`, braces balanced; None when absent or unclosed.

    "Last" is the last occurrence of the opening `\\boxed{`: for `\\boxed{a \\boxed{b}}` that is
    the inner box (`"b"`). An unclosed last box makes the answer invalid; the parser never falls
    back to an earlier box.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(BOX_OPEN)
    if start < 0:
        return None
    i = start + len(BOX_OPEN)
    depth = 1
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


_WRAPPER = re.compile(r"^\\(?:text|textbf|texttt|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.S)


def normalize_lenient(s: str) -> str:
    """Lenient form of an answer: unwrap `\\text{..}`-style wrappers, strip quotes, brackets and a
    trailing period, collapse whitespace, case-fold."""
    s = s.strip()
    for _ in range(3):
        m = _WRAPPER.match(s)
        if not m:
            break
        s = m.group(1).strip()
    s = s.strip(" \t\r\n\"'`[]().")
    s = re.sub(r"\s+", " ", s)
    return s.casefold()


def private_line(game: "Game", state: pyspiel.State, player: int) -> str:
    """The player's private information: every renderer puts it on the last line ("Your card: K")."""
    return game.render(state, player).rstrip().splitlines()[-1]


class Game:
    """Base class. Subclasses set `name`, `rules`, and implement `render` and `_action_name`."""

    name: str = ""
    rules: str = ""
    params: dict = {}

    def __init__(self) -> None:
        self._game: pyspiel.Game | None = None

    # ------------------------------------------------------------------ OpenSpiel plumbing
    @property
    def openspiel_game(self) -> pyspiel.Game:
        if self._game is None:
            self._game = pyspiel.load_game(self.name, dict(self.params))
        return self._game

    @property
    def num_players(self) -> int:
        return self.openspiel_game.num_players()

    def __getstate__(self):  # pickle without the C++ game; reloaded lazily
        d = dict(self.__dict__)
        d["_game"] = None
        return d

    def __repr__(self) -> str:
        return f"<Game {self.name}>"

    def new_initial_state(self, rng: random.Random) -> pyspiel.State:
        state = self.openspiel_game.new_initial_state()
        self.resolve_chance(state, rng)
        return state

    def resolve_chance(self, state: pyspiel.State, rng: random.Random) -> None:
        while state.is_chance_node():
            outcomes, probs = zip(*state.chance_outcomes())
            state.apply_action(rng.choices(outcomes, weights=probs)[0])

    @staticmethod
    def player_actions(state: pyspiel.State) -> list[tuple[int, int]]:
        """Public (player, action) moves so far, chance outcomes removed."""
        return [(pa.player, pa.action) for pa in state.full_history() if pa.player >= 0]

    # ------------------------------------------------------------------ text interface
    def render(self, state: pyspiel.State, player: int) -> str:
        raise NotImplementedError

    def _action_name(self, state: pyspiel.State, action: int) -> str:
        raise NotImplementedError

    def action_names(self, state: pyspiel.State) -> dict[int, str]:
        if state.is_terminal():
            return {}
        return {a: self._action_name(state, a) for a in state.legal_actions()}

    def actions_text(self, state: pyspiel.State) -> str:
        """The legal-action line and the answer instruction."""
        return "Actions: " + ", ".join(self.action_names(state).values()) + ". " + INSTRUCTION

    def prompt(self, state: pyspiel.State, player: int) -> str:
        return f"{self.rules}\n{self.actions_text(state)}\n{self.render(state, player)}"

    def answer_text(self, state: pyspiel.State, action: int) -> str:
        return BOX_OPEN + self.action_names(state)[action] + "}"

    def _lenient_key(self, s: str) -> str:
        return normalize_lenient(s)

    def parse(self, text: str, state: pyspiel.State, lenient: bool = False) -> int | None:
        content = last_boxed(text)
        if content is None or state.is_terminal() or state.is_chance_node():
            return None
        names = self.action_names(state)
        if not lenient:
            for a, n in names.items():
                if n == content:
                    return a
            return None
        key = self._lenient_key(content)
        if not key:
            return None
        for a, n in names.items():
            if self._lenient_key(n) == key:
                return a
        return None
