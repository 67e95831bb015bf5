"""Scoring of the in-game decision probes (the table itself: compose_rl/primitives/ingame.py).

A probe is a list of instances; an instance is a state of a shipped game (built by replaying an
action sequence from the root), the player to act, and the set of correct actions. Its score is
the policy's exact probability mass on the correct actions, averaged over the instances. For a
language model that is the softmax over the legal actions of the answer sequences' log-probs
(`compose_rl.evals.games.lm_action_probs`, the same numbers exploitability uses), so the probes
work for a policy that answers in one word as well as for one that reasons first (they then score
the direct answer, not the marginal over reasoning traces; see evals/games.py). Each probe also
reports the uniform-random baseline: the mean share of legal actions that are correct.

Why each label is right is a claim checked against OpenSpiel by `verify_probe` (run in the tests):
  * `dominant`: in every history the player cannot tell apart from this one, the worst return after
    a correct action beats the best return after a wrong one (whatever anyone does next);
  * `weakly_dominant`: the same with >=;
  * `best_response_nash`: the correct actions are strictly better than the wrong ones (margin
    `NASH_MARGIN`) for a best response to the CFR+ Nash policy (games.opponents.nash_policy),
    action values summed over the information set with counterfactual reach weights;
  * `no_worse_than_floor`: every wrong action returns the lowest return the player can get in this
    game (bargaining: 0, as item values are >= 0), so a correct action can never do worse;
  * `immediate_win`: the correct cells are exactly those that win on the spot;
  * `only_non_losing`: the correct cells are exactly those whose minimax value is not a loss, the
    player has no immediate win, and the opponent threatens one (a block);
  * `fork`: the correct cells are exactly the minimax-winning ones, none wins on the spot, the
    opponent threatens nothing, and each creates two or more immediate threats (a fork).

Kuhn Q facing a bet (fold) is NOT a probe: against the Nash policy folding and calling Q are
indifferent (values -1.000 vs -1.002 for player 1; the equilibrium mixes there), so no label is right.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pyspiel

from compose_rl.primitives.ingame import InGameProbe, Instance, Step, probes_for

if TYPE_CHECKING:
    from games import Game

NASH_MARGIN = 1e-2


# ----------------------------------------------------------------------------- states

def build_state(game: "Game", history: Sequence[Step]) -> pyspiel.State:
    """Replay `history` from the root. Names are looked up among the legal actions at that point."""
    state = game.openspiel_game.new_initial_state()
    for step in history:
        if isinstance(step, str):
            if state.is_chance_node():
                raise ValueError(f"{game.name}: a name ({step!r}) at a chance node; give the outcome id")
            by_name = {n: a for a, n in game.action_names(state).items()}
            if step not in by_name:
                raise ValueError(f"{game.name}: {step!r} is not legal after {state.history()}")
            step = by_name[step]
        legal = ([a for a, _ in state.chance_outcomes()] if state.is_chance_node() else state.legal_actions())
        if step not in legal:
            raise ValueError(f"{game.name}: action {step} is not legal after {state.history()}")
        state.apply_action(step)
    if state.is_terminal() or state.is_chance_node():
        raise ValueError(f"{game.name}: history {list(history)} does not end at a player's decision")
    return state


@dataclass(frozen=True)
class Resolved:
    state: pyspiel.State
    player: int
    legal: tuple[int, ...]
    correct: frozenset[int]


def resolve(game: "Game", inst: Instance) -> Resolved:
    state = build_state(game, inst.history)
    player = state.current_player()
    names = game.action_names(state)
    by_name = {n: a for a, n in names.items()}
    given = inst.correct if inst.correct is not None else inst.wrong
    if given is None or (inst.correct is not None and inst.wrong is not None):
        raise ValueError("an instance gives exactly one of `correct` or `wrong`")
    unknown = [n for n in given if n not in by_name]
    if unknown:
        raise ValueError(f"{game.name}: {unknown} are not legal at {state.history()}")
    ids = {by_name[n] for n in given}
    correct = frozenset(ids) if inst.correct is not None else frozenset(set(names) - ids)
    if not correct or len(correct) == len(names):
        raise ValueError(f"{game.name}: a probe needs some correct and some wrong actions at {state.history()}")
    return Resolved(state, player, tuple(state.legal_actions(player)), correct)


# ----------------------------------------------------------------------------- scoring

ActionProbs = Callable[["Game", Sequence[tuple[pyspiel.State, int]]], list[Mapping[int, float]]]


def table_action_probs(tables: Mapping[str, Mapping[int, float]]) -> ActionProbs:
    """Action probabilities from tables keyed by `state.information_state_string(player)`."""
    def probs(game, states):
        out = []
        for state, player in states:
            key = state.information_state_string(player)
            if key not in tables:
                raise KeyError(f"{game.name}: the policy table has no entry for information state {key!r}")
            out.append(tables[key])
        return out
    return probs


def lm_probs(policy) -> ActionProbs:
    from compose_rl.evals.games import lm_action_probs

    return lambda game, states: lm_action_probs(policy, game, states)


def probe_scores(action_probs: ActionProbs, probes: Sequence[InGameProbe]) -> dict[str, tuple[float, float]]:
    """{probe name: (score, uniform baseline)}; one `action_probs` call per game."""
    from games import get_game

    by_game: dict[str, list[InGameProbe]] = {}
    for p in probes:
        by_game.setdefault(p.game, []).append(p)
    out: dict[str, tuple[float, float]] = {}
    for name, ps in by_game.items():
        game = get_game(name)
        resolved = [[resolve(game, i) for i in p.instances] for p in ps]
        flat = [r for rs in resolved for r in rs]
        dists = action_probs(game, [(r.state, r.player) for r in flat])
        k = 0
        for p, rs in zip(ps, resolved):
            scores, uniform = [], []
            for r in rs:
                d = dists[k]
                k += 1
                legal_mass = sum(max(0.0, float(d.get(a, 0.0))) for a in r.legal)
                if not math.isfinite(legal_mass) or legal_mass <= 0:
                    raise ValueError(f"{p.name}: the policy puts no probability on a legal action")
                scores.append(sum(max(0.0, float(d.get(a, 0.0))) for a in r.correct) / legal_mass)
                uniform.append(len(r.correct) / len(r.legal))
            out[p.name] = (sum(scores) / len(scores), sum(uniform) / len(uniform))
    return out


def ingame_probe_metrics(policy: Any, games: Sequence[str], names: Sequence[str] | None = None
                         ) -> dict[str, float]:
    """Scores of the in-game probes of `games` (optionally only `names`).

    `policy`: a language-model `Policy` (exact probabilities of its answers), tables
    `{information_state_string: {action: prob}}`, or a callable `(game, [(state, player)]) -> [probs]`.
    Keys: `primitive/<primitive>/ingame/<probe>` (probability mass on the correct actions),
    `.../<probe>/uniform` (the uniform-random policy's score), and per primitive
    `primitive/<primitive>/ingame/mean` and `.../mean/uniform` over its probes.
    """
    probes = probes_for(games, names)
    if isinstance(policy, Mapping):
        fn = table_action_probs(policy)
    elif callable(policy):
        fn = policy
    else:
        fn = lm_probs(policy)
    scores = probe_scores(fn, probes)
    out: dict[str, float] = {}
    per_prim: dict[str, list[tuple[float, float]]] = {}
    for p in probes:
        s, u = scores[p.name]
        out[f"primitive/{p.primitive}/ingame/{p.name}"] = s
        out[f"primitive/{p.primitive}/ingame/{p.name}/uniform"] = u
        per_prim.setdefault(p.primitive, []).append((s, u))
    for prim, su in per_prim.items():
        out[f"primitive/{prim}/ingame/mean"] = sum(s for s, _ in su) / len(su)
        out[f"primitive/{prim}/ingame/mean/uniform"] = sum(u for _, u in su) / len(su)
    return out


# ----------------------------------------------------------------------------- label checks (OpenSpiel)

def _chance_positions(game: "Game", history: Sequence[Step]) -> list[tuple[int, list[int]]]:
    state = game.openspiel_game.new_initial_state()
    out = []
    for i, step in enumerate(history):
        if state.is_chance_node():
            out.append((i, [a for a, _ in state.chance_outcomes()]))
        if isinstance(step, str):
            step = {n: a for a, n in game.action_names(state).items()}[step]
        state.apply_action(step)
    return out


def indistinguishable_states(game: "Game", inst: Instance) -> list[pyspiel.State]:
    """Every state reached by changing the chance outcomes of the history that the acting player
    cannot tell apart from the probe's state (same information-state string, same legal actions)."""
    ref = build_state(game, inst.history)
    player = ref.current_player()
    key = ref.information_state_string(player)
    # resolve names once, against the probe's own history, so replays use ids
    ids: list[int] = []
    st = game.openspiel_game.new_initial_state()
    for step in inst.history:
        if isinstance(step, str):
            step = {n: a for a, n in game.action_names(st).items()}[step]
        ids.append(step)
        st.apply_action(step)
    positions = _chance_positions(game, ids)
    out = []
    for outcomes in itertools.product(*[o for _, o in positions]):
        h = list(ids)
        for (i, _), a in zip(positions, outcomes):
            h[i] = a
        s = game.openspiel_game.new_initial_state()
        ok = True
        for a in h:
            legal = [x for x, _ in s.chance_outcomes()] if s.is_chance_node() else s.legal_actions()
            if a not in legal:
                ok = False
                break
            s.apply_action(a)
        if ok and not s.is_terminal() and s.current_player() == player and s.information_state_string(player) == key:
            out.append(s)
    return out


def _return_range(state: pyspiel.State, player: int) -> tuple[float, float]:
    """(min, max) of `player`'s return over every continuation (every move of every player, every chance outcome)."""
    if state.is_terminal():
        r = state.returns()[player]
        return r, r
    actions = [a for a, _ in state.chance_outcomes()] if state.is_chance_node() else state.legal_actions()
    lo, hi = math.inf, -math.inf
    for a in actions:
        a_lo, a_hi = _return_range(state.child(a), player)
        lo, hi = min(lo, a_lo), max(hi, a_hi)
    return lo, hi


def _nash_action_values(game: "Game", state: pyspiel.State, player: int) -> dict[int, float]:
    """Best response to Nash: counterfactual action values at the player's information set (reach-normalised)."""
    from open_spiel.python.algorithms import best_response

    from games.opponents import nash_policy

    br = best_response.BestResponsePolicy(game.openspiel_game, player, nash_policy(game))
    key = state.information_state_string(player)
    members = br.infosets[key]
    total = sum(cf for _, cf in members)
    return {a: sum(cf * br.q_value(s, a) for s, cf in members) / total for a in state.legal_actions(player)}


def _ttt_winning_cells(state: pyspiel.State) -> set[int]:
    p = state.current_player()
    return {a for a in state.legal_actions() if state.child(a).is_terminal() and state.child(a).returns()[p] > 0}


def _ttt_threats(state: pyspiel.State, player: int) -> set[int]:
    """Cells where `player` would win immediately if it were their move."""
    board = state.observation_string(0).strip().split("\n")
    cells = "".join(board)
    mark = "xo"[player]
    lines = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
    out = set()
    for line in lines:
        vals = [cells[i] for i in line]
        if vals.count(mark) == 2 and vals.count(".") == 1:
            out.add(line[vals.index(".")])
    return out


def _require(ok: bool, msg: str) -> None:
    if not ok:  # explicit, so the checks still run under `python -O`
        raise AssertionError(msg)


def verify_probe(probe: InGameProbe) -> None:
    """Check every claim of `probe` against OpenSpiel; raise AssertionError saying which one fails."""
    from games import get_game
    from games.opponents import _Minimax

    game = get_game(probe.game)
    for inst in probe.instances:
        r = resolve(game, inst)
        wrong = [a for a in r.legal if a not in r.correct]
        where = f"{probe.name} at {r.state.history()}"
        for claim in probe.claims:
            if claim in ("dominant", "weakly_dominant"):
                for s in indistinguishable_states(game, inst):
                    worst_ok = min(_return_range(s.child(a), r.player)[0] for a in r.correct)
                    best_bad = max(_return_range(s.child(a), r.player)[1] for a in wrong)
                    ok = worst_ok > best_bad if claim == "dominant" else worst_ok >= best_bad
                    _require(ok, f"{where}: not {claim} (worst correct {worst_ok} vs best wrong {best_bad}) "
                                 f"in {s.history()}")
            elif claim == "best_response_nash":
                q = _nash_action_values(game, r.state, r.player)
                lo = min(q[a] for a in r.correct)
                hi = max(q[a] for a in wrong)
                _require(lo > hi + NASH_MARGIN, f"{where}: vs Nash correct {lo:.4f} not above wrong {hi:.4f}")
            elif claim == "no_worse_than_floor":
                _require(probe.game == "bargaining", f"{where}: floor known for bargaining only")
                for s in indistinguishable_states(game, inst):
                    _require(min(game.values(s, r.player)) >= 0, "negative item values: the floor is not 0")
                    for a in wrong:  # agreeing ends the game: its return is known
                        child = s.child(a)
                        _require(child.is_terminal() and child.returns()[r.player] <= 0.0,
                                 f"{where}: wrong action {a} can return more than the floor 0")
            elif claim == "immediate_win":
                _require(_ttt_winning_cells(r.state) == set(r.correct), f"{where}: correct != immediate wins")
            elif claim in ("only_non_losing", "fork"):
                mm = _Minimax(game.openspiel_game)
                sign = 1.0 if r.player == 0 else -1.0
                vals = {a: sign * mm.value(r.state.child(a)) for a in r.legal}
                _require(not _ttt_winning_cells(r.state), f"{where}: an immediate win exists")
                opp_threats = _ttt_threats(r.state, 1 - r.player)
                if claim == "only_non_losing":
                    _require(opp_threats, f"{where}: nothing to block")
                    _require({a for a, v in vals.items() if v >= 0} == set(r.correct),
                             f"{where}: non-losing set differs")
                else:
                    _require(not opp_threats, f"{where}: the opponent threatens a win (a block, not a fork)")
                    _require({a for a, v in vals.items() if v > 0} == set(r.correct), f"{where}: winning set differs")
                    for a in r.correct:
                        _require(len(_ttt_threats(r.state.child(a), r.player)) >= 2, f"{where}: {a} is not a fork")
            else:  # pragma: no cover - primitives/ingame.py checks CLAIMS at import
                raise AssertionError(f"{where}: unknown claim {claim}")
