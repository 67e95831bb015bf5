"""Game evaluations of a language-model policy: exact action probabilities, exploitability, play.

Exact action probabilities (`lm_action_probs`)
----------------------------------------------
For a (state, player) and each legal action `a`, the model's log-likelihood of the completion
`game.answer_text(state, a)` followed by EOS, given the prompt
`policy.format_prompt(game.prompt(state, player))`, summed over the completion tokens. A softmax
over the legal actions gives the policy's action distribution; `exp(logsumexp)` of the same
scores is the *legal mass*: the probability that a sample from the model is exactly one of the
legal answers (strict form, token for token, then EOS).

- Tokenizer boundary: prompt and completion are tokenized *separately* (no special tokens added,
  as the rollout engines encode prompts) and the ids concatenated. This is what a sampler
  produces: it encodes the prompt, then emits completion tokens one by one. Tokenizing the joined
  string could merge tokens across the boundary (subword tokenizers) and score a different
  sequence. For the character tokenizer both give the same ids.
- Only the strict answer-only form counts. If the policy is trained with a reasoning-then-answer
  format, these numbers score the direct answer (the answer as the prompt's immediate
  continuation), i.e. the policy's answer distribution *without* reasoning; it is not the
  marginal over reasoning traces.
- Batching, under `torch.no_grad`, two equivalent paths (same numbers up to float rounding,
  both checked against an unbatched per-action loop in tests/test_game_evals.py):
  `sequence_logprobs` scores every (prompt, action) sequence in full, right-padded with an
  attention mask, one forward per batch, materialising logits only from the batch's earliest
  completion position (`logits_to_keep`); `shared_prefix_logprobs` (the default) encodes each
  prompt once for all its actions through the KV cache, and the batch's common prefix once
  (Leduc's 936 information states: ~5 s instead of ~40 s for the tiny model on one thread). Both
  live in compose_rl/rl/logprobs.py, beside the learner's log-probs.

Play (`play_vs`): the LM plays both seats against a scripted opponent, games advanced in
lockstep (one `engine.generate` per wave of LM turns); strict parsing; an invalid answer ends
the game with return -1 for the LM (eval convention) and counts as a loss.
"""
from __future__ import annotations

import dataclasses
import math
import random
import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pyspiel
import torch

from compose_rl.evals.exploitability import (  # noqa: F401  (re-exported)
    SMALL_GAMES,
    AveragePolicy,
    Tables,
    _normalized,
    InfoState,
    exact_value_vs,
    exploitability_of,
    exploitability_of_tables,
    infostates,
    is_small,
    own_reach,
    tabular_from_tables,
    tables_from_fn,
)
from compose_rl.types import SamplingParams
from games.base import private_line

if TYPE_CHECKING:
    from compose_rl.models import Policy
    from compose_rl.rollout.engine import Engine
    from games import Game

from compose_rl.rl.logprobs import sequence_logprobs, shared_prefix_logprobs  # noqa: E402

INVALID_RETURN = -1.0


# ----------------------------------------------------------------------------- exact probabilities

def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def lm_action_logprobs(policy: "Policy", game: "Game", states: Sequence[tuple[pyspiel.State, int]],
                       batch_size: int = 64, share_prefix: bool = True) -> list[dict[int, float]]:
    """Raw sequence log-likelihood of each legal action's strict answer text (+ EOS), per state.

    Identical prompts (and identical (prompt, completion) pairs) are scored once.
    `share_prefix=True` encodes each prompt once for all its actions (`shared_prefix_logprobs`);
    `False` runs one full right-padded sequence per (prompt, action) (`sequence_logprobs`).
    Both give the same numbers up to float rounding.
    """
    tok = policy.tokenizer
    eos = tok.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer needs an eos_token_id")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    prompt_index: dict[str, int] = {}
    prompt_ids: list[list[int]] = []
    comp_index: list[dict[str, int]] = []  # per prompt: answer text -> position
    comp_ids: list[list[list[int]]] = []
    refs: list[dict[int, tuple[int, int]]] = []
    for state, player in states:
        text = policy.format_prompt(game.prompt(state, player))
        if text not in prompt_index:
            prompt_index[text] = len(prompt_ids)
            prompt_ids.append(_encode(tok, text))
            comp_index.append({})
            comp_ids.append([])
        pi = prompt_index[text]
        ref: dict[int, tuple[int, int]] = {}
        for a in state.legal_actions(player):
            answer = game.answer_text(state, a)
            if answer not in comp_index[pi]:
                comp_index[pi][answer] = len(comp_ids[pi])
                comp_ids[pi].append(_encode(tok, answer) + [eos])
            ref[int(a)] = (pi, comp_index[pi][answer])
        if not ref:
            raise ValueError(f"player {player} has no legal action in this state")
        refs.append(ref)
    scores = None
    if share_prefix and getattr(policy.model, "prefix_cache", True):  # a looped model has no HF KV cache
        try:
            scores = shared_prefix_logprobs(policy.model, prompt_ids, comp_ids, pad, batch_size)
        except (AttributeError, NotImplementedError) as err:  # a cache without batch reindexing
            warnings.warn(f"prefix sharing unavailable for this model ({err}); scoring full sequences")
    if scores is None:
        flat = [(prompt_ids[i], c) for i in range(len(prompt_ids)) for c in comp_ids[i]]
        flat_scores = sequence_logprobs(policy.model, flat, pad, batch_size)
        scores, k = [], 0
        for cs in comp_ids:
            scores.append(flat_scores[k:k + len(cs)])
            k += len(cs)
    return [{a: scores[pi][ci] for a, (pi, ci) in ref.items()} for ref in refs]


def _softmax(logps: Mapping[int, float]) -> tuple[dict[int, float], float]:
    m = max(logps.values())
    z = sum(math.exp(v - m) for v in logps.values())
    lse = m + math.log(z)
    return {a: math.exp(v - lse) for a, v in logps.items()}, math.exp(lse)


def lm_action_probs(policy: "Policy", game: "Game", states: Sequence[tuple[pyspiel.State, int]],
                    batch_size: int = 64, return_legal_mass: bool = False, share_prefix: bool = True):
    """Exact action distribution of the LM at each (state, player), renormalized over legal actions.

    Returns `list[dict[action, prob]]`, or `(probs, legal_mass)` with `return_legal_mass=True`,
    where `legal_mass[i]` = sum over legal actions of the probability of the exact answer text
    (+ EOS): the share of the model's distribution that falls on valid answers.
    """
    probs, masses = [], []
    for logps in lm_action_logprobs(policy, game, states, batch_size, share_prefix):
        p, mass = _softmax(logps)
        probs.append(p)
        masses.append(mass)
    return (probs, masses) if return_legal_mass else probs


def lm_policy_tables(policy: "Policy", game: "Game", batch_size: int = 64,
                     return_legal_mass: bool = False, share_prefix: bool = True):
    """The LM's exact policy at every information state of a small game (kuhn/leduc).

    Returns `{infostate_key: {action: prob}}` (keys = `information_state_string(player)`, the keys
    OpenSpiel's TabularPolicy uses), or `(tables, {infostate_key: legal_mass})`.
    The list of information states is enumerated once per game and cached.
    """
    infos = infostates(game)
    probs, masses = lm_action_probs(policy, game, [(i.state, i.player) for i in infos],
                                    batch_size, return_legal_mass=True, share_prefix=share_prefix)
    tables = {i.key: p for i, p in zip(infos, probs)}
    if return_legal_mass:
        return tables, {i.key: m for i, m in zip(infos, masses)}
    return tables


# ----------------------------------------------------------------------------- play

def _advance(game: "Game", state: pyspiel.State, lm_seat: int, opponent: Callable, rng,
             log: list[str] | None) -> None:
    """Resolve chance and play the opponent's moves until it is the LM's turn or the game ends."""
    while not state.is_terminal():
        if state.is_chance_node():
            game.resolve_chance(state, rng)
            continue
        if state.is_simultaneous_node():
            raise ValueError(f"{game.name}: simultaneous-move states are not supported by play_vs")
        player = state.current_player()
        if player == lm_seat:
            return
        action = opponent(state)
        if log is not None:
            log.append(f"P{player} (opponent): {game.action_names(state).get(action, action)}")
        state.apply_action(action)


def _sampling_for_wave(sampling: SamplingParams, seed: int, wave: int) -> SamplingParams:
    base = seed if sampling.seed is None else sampling.seed
    return dataclasses.replace(sampling, n=1, seed=(base * 1_000_003 + wave) % (2**31 - 1))


def play_vs(engine: "Engine", format_prompt: Callable[[str], str], game: "Game", opponent: str,
            n_games: int, seed: int, sampling: SamplingParams, n_transcripts: int = 3,
            invalid_return: float = INVALID_RETURN) -> dict[str, Any]:
    """The LM (through `engine`) plays `n_games` against `make_opponent(opponent, game, seed)`.

    Game i: the LM sits in seat i % num_players (half the games each in two-player games);
    chance is drawn from a `random.Random` seeded from (seed, i); sampling seeds derive from
    `sampling.seed` (or `seed`) and the wave number, so a run is reproducible. LM turns of all unfinished games are batched into one
    `engine.generate` call per wave. An answer the strict parser rejects ends that game with
    `invalid_return` for the LM (counted as invalid and as a loss). Win/draw/loss is the sign of
    the LM's return minus the opponent's: in the two-player zero-sum games that is the sign of the
    LM's return; in general-sum games (bargaining, where both can gain) it says who gained more.

    Returns rates `win`, `draw`, `loss` (sum to 1), counts `n_win`, `n_draw`, `n_loss` (sum to
    `n`), `mean_return`, `ci95` (half-width of a normal-approximation 95% CI of the mean return;
    nan for n < 2), `mean_return_seat{k}`, `invalid_rate` (invalid LM answers / LM turns),
    `invalid_games` (games ended by an invalid answer), `lm_turns`, `n`, and `transcripts`
    (up to `n_transcripts` strings).
    """
    if n_games <= 0:
        raise ValueError("n_games must be positive")
    # Engines may reseed torch's global generator (HFEngine does when sampling.seed is set):
    # keep the caller's (training) random stream untouched by evaluation.
    with torch.random.fork_rng():
        return _play_vs(engine, format_prompt, game, opponent, n_games, seed, sampling,
                        n_transcripts, invalid_return)


def _play_vs(engine, format_prompt, game, opponent, n_games, seed, sampling, n_transcripts,
             invalid_return) -> dict[str, Any]:
    from games.opponents import make_opponent

    opp = make_opponent(opponent, game, seed)
    rngs = [random.Random(seed * 7919 + i) for i in range(n_games)]
    seats = [i % game.num_players for i in range(n_games)]
    states = [game.new_initial_state(rngs[i]) for i in range(n_games)]
    logs: list[list[str] | None] = [[] if i < n_transcripts else None for i in range(n_games)]
    for i, lg in enumerate(logs):
        if lg is not None:
            lg.append(f"{game.name} vs {opponent}: LM is player {seats[i]}")
    returns: list[float | None] = [None] * n_games
    margins: list[float] = [0.0] * n_games  # LM return minus the opponents' mean return
    invalid_games = 0
    invalid_turns = 0
    lm_turns = 0
    wave = 0
    while True:
        waiting = []
        for i in range(n_games):
            if returns[i] is not None:
                continue
            _advance(game, states[i], seats[i], opp, rngs[i], logs[i])
            if states[i].is_terminal():
                rs = states[i].returns()
                returns[i] = float(rs[seats[i]])
                others = [r for p, r in enumerate(rs) if p != seats[i]]
                margins[i] = returns[i] - sum(others) / len(others)
            else:
                waiting.append(i)
        if not waiting:
            break
        prompts = [format_prompt(game.prompt(states[i], seats[i])) for i in waiting]
        outs = engine.generate(prompts, _sampling_for_wave(sampling, seed, wave))
        wave += 1
        for i, comps in zip(waiting, outs):
            text = comps[0].text
            lm_turns += 1
            action = game.parse(text, states[i], lenient=False)
            legal = states[i].legal_actions(seats[i])
            if action is None or action not in legal:
                invalid_turns += 1
                invalid_games += 1
                returns[i] = float(invalid_return)
                margins[i] = -1.0  # a loss, whatever the game
                if logs[i] is not None:
                    logs[i].append(f"P{seats[i]} (LM): {text!r} -> INVALID")
                continue
            if logs[i] is not None:
                logs[i].append(f"P{seats[i]} (LM): {text!r} -> {game.action_names(states[i])[action]}")
            states[i].apply_action(action)
    rets = [float(r) for r in returns]  # type: ignore[arg-type]
    n = n_games
    n_win = sum(m > 0 for m in margins)
    n_loss = sum(m < 0 for m in margins)
    n_draw = n - n_win - n_loss
    mean = sum(rets) / n
    if n >= 2:
        var = sum((r - mean) ** 2 for r in rets) / (n - 1)
        ci95 = 1.96 * math.sqrt(var / n)
    else:
        ci95 = float("nan")
    by_seat = {}
    for s in range(game.num_players):
        rs = [r for r, seat in zip(rets, seats) if seat == s]
        by_seat[f"mean_return_seat{s}"] = sum(rs) / len(rs) if rs else float("nan")
    transcripts = []
    for i, lg in enumerate(logs):
        if lg is not None:
            lg.append(f"LM return: {rets[i]:+g}")
            transcripts.append("\n".join(lg))
    return {
        "win": n_win / n, "draw": n_draw / n, "loss": n_loss / n,
        "n_win": n_win, "n_draw": n_draw, "n_loss": n_loss,
        "mean_return": mean, "ci95": ci95, **by_seat,
        "invalid_rate": invalid_turns / lm_turns if lm_turns else 0.0,
        "invalid_games": invalid_games, "lm_turns": lm_turns, "n": n,
        "transcripts": transcripts,
    }


# ----------------------------------------------------------------------------- suite

def tabular_opponent(game: "Game", kind: str):
    """An exact tabular counterpart of an opponent kind, where one exists (poker games)."""
    from open_spiel.python import policy as os_policy

    if kind == "random":
        return os_policy.UniformRandomPolicy(game.openspiel_game)
    if kind == "nash":
        from games.opponents import nash_policy

        return nash_policy(game)
    return None


def game_eval_suite(policy: "Policy | None", engine: "Engine", game_names: Sequence[str],
                    opponents: Sequence[str], n_games: int, seed: int, sampling: SamplingParams,
                    tables_out: dict | None = None) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Play and (for kuhn/leduc) exact metrics, flat and namespaced; transcripts separately.

    Metrics: `eval/{game}/vs_{opp}/{win,draw,loss,mean_return,ci95,invalid_rate,...}` from play;
    for small games and when `policy` is given, `eval/{game}/exploitability`, `.../nash_conv`,
    `.../legal_mass` (mean over information states), `.../legal_mass_min`, and
    `eval/{game}/vs_{opp}/exact_value` (exact expected return, both seats, for `random`/`nash`),
    `eval/{game}/history_tv` (does the policy read the history: `history_tv`).
    `tables_out`, if given, receives `{game: exact policy tables}` of the small games.
    Opponent kinds a game does not offer (`opponent_kinds(game)`) are skipped.
    Transcripts: `{"{game}/vs_{opp}": [str, ...]}`.
    """
    from games import get_game
    from games.opponents import opponent_kinds

    fmt = policy.format_prompt if policy is not None else (lambda s: s)
    metrics: dict[str, float] = {}
    transcripts: dict[str, list[str]] = {}
    for name in game_names:
        game = get_game(name)
        kinds = set(opponent_kinds(game))
        tables = None
        if policy is not None and is_small(game):
            tables, mass = lm_policy_tables(policy, game, return_legal_mass=True)
            expl, nash_conv = exploitability_of_tables(game, tables)
            metrics[f"eval/{name}/exploitability"] = expl
            metrics[f"eval/{name}/nash_conv"] = nash_conv
            metrics[f"eval/{name}/legal_mass"] = sum(mass.values()) / len(mass)
            metrics[f"eval/{name}/legal_mass_min"] = min(mass.values())
            metrics[f"eval/{name}/history_tv"] = history_tv(infostate_rows(game, tables))
            if tables_out is not None:
                tables_out[name] = tables
        for k, opp in enumerate(opponents):
            if opp not in kinds:
                continue
            res = play_vs(engine, fmt, game, opp, n_games, seed + 1000 * k, sampling)
            transcripts[f"{name}/vs_{opp}"] = res.pop("transcripts")
            for key, val in res.items():
                metrics[f"eval/{name}/vs_{opp}/{key}"] = float(val)
            if tables is not None:
                tab_opp = tabular_opponent(game, opp)
                if tab_opp is not None:
                    metrics[f"eval/{name}/vs_{opp}/exact_value"] = exact_value_vs(game, tables, tab_opp)
    return metrics, transcripts


def policy_baseline_metrics(game: "Game", tables: Mapping[str, Mapping[int, float]],
                            opponents: Sequence[str] = ("random", "nash")) -> dict[str, float]:
    """Exact exploitability and exact expected return vs each opponent (both seats) of a tabular policy."""
    expl, nash_conv = exploitability_of_tables(game, tables)
    out = {"exploitability": expl, "nash_conv": nash_conv}
    for opp in opponents:
        out[f"vs_{opp}/exact_value"] = exact_value_vs(game, tables, tabular_opponent(game, opp))
    return out


# ----------------------------------------------------------------------------- reading the history

def infostate_rows(game: "Game", tables: Mapping[str, Mapping[int, float]]) -> list[dict[str, Any]]:
    """One row per information state: the acting player's view in words, the private line, and
    P(action) by action name (legal actions only), in OpenSpiel's information-state order."""
    rows = []
    for info in infostates(game):
        names = game.action_names(info.state)
        probs = _normalized(tables.get(info.key, {}), info.legal) or [1.0 / len(info.legal)] * len(info.legal)
        view = " ".join(line.strip() for line in game.render(info.state, info.player).splitlines())
        rows.append({"infostate": view, "private": private_line(game, info.state, info.player), "key": info.key,
                     "probs": {names[a]: p for a, p in zip(info.legal, probs)}})
    return rows


def history_tv(rows: Sequence[Mapping[str, Any]]) -> float:
    """Does the policy read the betting history? Mean over private lines (cards) of the largest
    total-variation distance between the action distributions at that card's different
    information states. 0: the same distribution whatever happened before (history ignored);
    1: some two histories get disjoint actions. Actions absent from a row count as probability 0."""
    by_line: dict[str, list[Mapping[str, float]]] = {}
    for r in rows:
        by_line.setdefault(r["private"], []).append(r["probs"])
    if not by_line:
        raise ValueError("history_tv: no information-state rows")
    per_line = []
    for dists in by_line.values():
        worst = 0.0
        for i in range(len(dists)):
            for j in range(i + 1, len(dists)):
                acts = set(dists[i]) | set(dists[j])
                worst = max(worst, 0.5 * sum(abs(dists[i].get(a, 0.0) - dists[j].get(a, 0.0)) for a in acts))
        per_line.append(worst)
    return sum(per_line) / len(per_line)
