"""Multi-turn self-play collection on text games (SPIRAL-style), batched in lockstep.

`play_games` plays `n_games` games drawn from a weighted mixture. At every wave it gathers the
prompt of every unfinished game whose mover is a language-model seat, calls `engine.generate`
once on that batch (n=1), and steps every game; bot seats move immediately between waves.

Seats:
* opponent="self": one shared policy plays every seat; every seat's turns become samples.
* opponent in ("random", "nash", "minimax", "mcts"): the learner plays seat `game_index % players`
  (so seats alternate), a `games.opponents` bot plays the others; only learner turns are samples.
* opponent="pool": the other seats are played by `opponent_engine` (e.g. a frozen past policy,
  batched once per wave too); only learner turns are samples.

Rewards. A sample's reward is its seat's final return (`GameEnv.returns()`, so an invalid move
that ends the game gives the offender `invalid.penalty` and the others `invalid.other`; a turn-cap
game is a draw). In retry mode an invalid attempt that is followed by a re-prompt is its own
sample with reward `invalid.penalty` and `Sample.retry = True` (it is not overwritten by the game's
outcome, and it does not feed the RAE baseline); the valid retry that follows gets the final return
as usual. Every sample of one game carries that game's index in the batch as `Sample.episode`. A truncated completion (finish_reason
"length") that does not parse is simply invalid; truncation is counted separately.

Seeding: the mixture draw and each game's chance/bot seeds come from `random.Random(seed)`. When
`sampling.seed` is set, wave w uses `sampling.seed + w` so waves do not replay one stream.
"""
from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from compose_rl.rollout.engine import Engine
from compose_rl.types import Sample, SamplingParams
from games.base import Game
from games.env import GameEnv, InvalidPolicy
from games.opponents import make_opponent

BOT_KINDS = ("random", "nash", "minimax", "mcts")


@dataclass
class RoleStats:
    turns: int = 0  # LLM turns (attempts, retries included)
    invalid: int = 0
    truncated: int = 0  # completions that hit max_new_tokens
    tokens: int = 0
    games: int = 0
    return_sum: float = 0.0
    wins: int = 0
    draws: int = 0
    losses: int = 0

    def add(self, other: "RoleStats") -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class SelfPlayStats:
    """Counts per (game, role) of the learner's seats, plus per-game counts."""

    roles: dict[tuple[str, int], RoleStats] = field(default_factory=lambda: defaultdict(RoleStats))
    games: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    moves: int = 0  # moves applied over all games (all seats, bots included)
    turn_cap: int = 0  # games ended by the turn cap (draws)
    invalid_ended: int = 0  # games ended by an invalid answer

    def merge(self, other: "SelfPlayStats") -> "SelfPlayStats":
        for k, v in other.roles.items():
            self.roles[k].add(v)
        for k, v in other.games.items():
            self.games[k] += v
        self.moves += other.moves
        self.turn_cap += other.turn_cap
        self.invalid_ended += other.invalid_ended
        return self

    def as_metrics(self) -> dict[str, float]:
        """Keys: rollout/<game>/p<role>/<metric>, rollout/<game>/games, rollout/<game>/sample_share
        (the game's share of the learner's LLM turns), rollout/<metric>.

        invalid_rate and truncation_rate (completions that hit max_new_tokens) are per LLM turn;
        win/draw/loss rates and mean_return per learner seat-game; rollout/turns is the mean
        number of moves per game (all seats); rollout/turn_cap_rate and rollout/invalid_end_rate
        are per game.
        """
        m: dict[str, float] = {}
        total = RoleStats()
        for (game, role), s in sorted(self.roles.items()):
            total.add(s)
            pre = f"rollout/{game}/p{role}"
            m.update(_rates(pre, s))
        for game, n in sorted(self.games.items()):
            m[f"rollout/{game}/games"] = float(n)
        all_turns = sum(s.turns for s in self.roles.values())
        for game in sorted({g for g, _ in self.roles}):  # what the mixture weights share out by default
            turns = sum(s.turns for (g, _), s in self.roles.items() if g == game)
            m[f"rollout/{game}/sample_share"] = turns / all_turns if all_turns else 0.0
        n_games = sum(self.games.values())
        m.update(_rates("rollout", total))
        m["rollout/games"] = float(n_games)
        m["rollout/llm_turns"] = float(total.turns)
        m["rollout/turns"] = self.moves / n_games if n_games else 0.0
        m["rollout/turn_cap_rate"] = self.turn_cap / n_games if n_games else 0.0
        m["rollout/invalid_end_rate"] = self.invalid_ended / n_games if n_games else 0.0
        return m


def _rates(pre: str, s: RoleStats) -> dict[str, float]:
    t, g = max(s.turns, 1), max(s.games, 1)
    return {
        f"{pre}/invalid_rate": s.invalid / t,
        f"{pre}/truncation_rate": s.truncated / t,
        f"{pre}/response_tokens": s.tokens / t,
        f"{pre}/mean_return": s.return_sum / g,
        f"{pre}/win_rate": s.wins / g,
        f"{pre}/draw_rate": s.draws / g,
        f"{pre}/loss_rate": s.losses / g,
    }


@dataclass
class _Slot:
    index: int
    game: Game
    env: GameEnv
    seats: dict[int, str]  # seat -> "policy" | "pool" | bot kind
    bots: dict[int, Callable]
    samples: list[tuple[int, Sample]] = field(default_factory=list)
    turn_count: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    log: list[str] | None = None


def play_games(
    engine: Engine,
    format_prompt: Callable[[str], str],
    mixture: list[tuple[Game, float]],
    n_games: int,
    sampling: SamplingParams,
    seed: int,
    invalid: InvalidPolicy,
    opponent: str = "self",
    opponent_engine: Engine | None = None,
    max_turns: int = 50,
    lenient: bool = False,
    transcripts: int = 0,
) -> tuple[list[Sample], SelfPlayStats, list[str]]:
    if opponent not in ("self", "pool") + BOT_KINDS:
        raise ValueError(f"unknown opponent {opponent!r}; use self, pool, {', '.join(BOT_KINDS)}")
    if opponent == "pool" and opponent_engine is None:
        raise ValueError("opponent='pool' needs opponent_engine")
    if not mixture:
        raise ValueError("empty game mixture")
    rng = random.Random(seed)
    games = [g for g, _ in mixture]
    weights = [float(w) for _, w in mixture]

    slots: list[_Slot] = []
    for i in range(n_games):
        game = rng.choices(games, weights=weights)[0]
        env_seed = rng.randrange(2**31)
        env = GameEnv(game, invalid=invalid, max_turns=max_turns, lenient=lenient)
        env.reset(env_seed)
        n = game.num_players
        learner = i % n
        seats: dict[int, str] = {}
        bots: dict[int, Callable] = {}
        for p in range(n):
            if opponent == "self" or p == learner:
                seats[p] = "policy"
            elif opponent == "pool":
                seats[p] = "pool"
            else:
                seats[p] = opponent
                bots[p] = make_opponent(opponent, game, seed=env_seed + 1 + p)
        log = None
        if i < transcripts:
            who = ", ".join(f"P{p}={k}" for p, k in seats.items())
            log = [f"=== game {i}: {game.name} (env seed {env_seed}; {who}) ==="]
        slots.append(_Slot(i, game, env, seats, bots, log=log))

    stats = SelfPlayStats()
    wave = 0
    while True:
        # Bots move immediately until an LLM seat is to move or the game is over.
        for sl in slots:
            while not sl.env.done and sl.seats[sl.env.current_player] not in ("policy", "pool"):
                p = sl.env.current_player
                sl.env.step_action(sl.bots[p](sl.env.state))
                if sl.log is not None:
                    sl.log.append(f"{sl.env.transcript[-1]} ({sl.seats[p]})")
        requests: dict[str, list[tuple[_Slot, int, str, str]]] = {"policy": [], "pool": []}
        for sl in slots:
            if sl.env.done:
                continue
            p = sl.env.current_player
            obs = sl.env.observation(p)
            requests[sl.seats[p]].append((sl, p, obs, format_prompt(obs)))
        if not requests["policy"] and not requests["pool"]:
            break
        wave_sampling = dataclasses.replace(
            sampling, n=1, seed=None if sampling.seed is None else sampling.seed + wave
        )
        for kind, eng in (("policy", engine), ("pool", opponent_engine)):
            batch = requests[kind]
            if not batch:
                continue
            outs = eng.generate([r[3] for r in batch], wave_sampling)
            if len(outs) != len(batch):
                raise ValueError(f"engine returned {len(outs)} results for {len(batch)} prompts")
            for (sl, p, obs, text), comps in zip(batch, outs):
                comp = comps[0]
                attempt = sl.env.retries_this_turn
                # the exact answer texts of the legal actions, for the learner's legal-action entropy bonus
                legal = [sl.game.answer_text(sl.env.state, a) for a in sl.env.state.legal_actions()] \
                    if kind == "policy" else []
                res = sl.env.step(comp.text)
                if sl.log is not None:
                    sl.log.append(f"--- P{p} ({kind}) sees:\n{obs}")
                    sl.log.append(sl.env.transcript[-1])
                if kind != "policy":
                    continue
                rs = stats.roles[(sl.game.name, p)]
                rs.turns += 1
                rs.invalid += int(not res.valid)
                rs.truncated += int(comp.truncated)
                rs.tokens += len(comp.token_ids)
                retried = not res.valid and not sl.env.done
                sample = Sample(
                    prompt_ids=list(comp.prompt_ids),
                    completion_ids=list(comp.token_ids),
                    old_logprobs=list(comp.logprobs),
                    reward=float(invalid.penalty) if retried else 0.0,
                    prompt=text,
                    completion=comp.text,
                    group=sl.index,
                    game=sl.game.name,
                    role=p,
                    turn=sl.turn_count[p],
                    episode=sl.index,
                    retry=retried,
                    policy_version=comp.policy_version,
                    truncated=comp.truncated,
                    info={
                        **comp.info,  # engine facts the learner needs (a looped policy's depth and seed)
                        "valid": res.valid,
                        "action": res.action_name,
                        "attempt": attempt,
                        "legal_answers": legal,
                    },
                )
                sl.samples.append((p, sample))
                if res.valid:
                    sl.turn_count[p] += 1
        wave += 1

    samples: list[Sample] = []
    logs: list[str] = []
    for sl in slots:
        env = sl.env
        rets = env.returns()
        stats.games[sl.game.name] += 1
        stats.moves += env.num_moves
        stats.turn_cap += int(env.truncated_turn_cap)
        stats.invalid_ended += int(env.invalid_by is not None)
        for p, kind in sl.seats.items():
            if kind != "policy":
                continue
            rs = stats.roles[(sl.game.name, p)]
            rs.games += 1
            rs.return_sum += rets[p]
            best_other = max(r for q, r in enumerate(rets) if q != p)
            if rets[p] > best_other:
                rs.wins += 1
            elif rets[p] == best_other:
                rs.draws += 1
            else:
                rs.losses += 1
        for p, s in sl.samples:
            if not s.retry:
                s.reward = float(rets[p])
            samples.append(s)
        if sl.log is not None:
            end = "turn cap (draw)" if env.truncated_turn_cap else (
                f"invalid answer by P{env.invalid_by}" if env.invalid_by is not None else "terminal"
            )
            sl.log.append(f"=== end: {end}; returns {rets}")
            sl.log.append(f"Final state (all private info):\n{env.state}")
            logs.append("\n".join(sl.log))
    return samples, stats, logs
