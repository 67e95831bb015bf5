"""Tests for the lockstep self-play collector with a scripted fake engine."""
from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from compose_rl.rollout.selfplay import SelfPlayStats, play_games
from compose_rl.types import Completion, SamplingParams
from games import GAMES
from games.env import InvalidPolicy

KUHN = GAMES["kuhn_poker"]
TTT = GAMES["tic_tac_toe"]
LEDUC = GAMES["leduc_poker"]
SP = SamplingParams(temperature=1.0, max_new_tokens=32, n=4)


class FakeEngine:
    """Implements the Engine protocol; `script(prompt, call_index) -> (text, finish_reason)`."""

    def __init__(self, script, version: int = 7):
        self.script = script
        self.policy_version = version
        self.batch_sizes: list[int] = []
        self.calls = 0

    def generate(self, prompts, sampling):
        assert sampling.n == 1
        self.batch_sizes.append(len(prompts))
        out = []
        for p in prompts:
            text, finish = self.script(p, self.calls)
            self.calls += 1
            out.append([Completion(
                prompt_ids=list(range(len(p))), token_ids=list(range(len(text))),
                logprobs=[0.0] * len(text), text=text, finish_reason=finish,
                policy_version=self.policy_version)])
        return out

    def load_weights(self, state, version):
        self.policy_version = version


def first_legal(prompt, _i):
    names = re.search(r"^Actions: (.*?)\. Reply with", prompt, re.M).group(1).split(", ")
    return f"I pick the first. \\boxed{{{names[0]}}}", "stop"


def garbage(_prompt, i):
    return ["", "}{\\boxed{", "\\boxed{fold everything}", "lorem ipsum " * 3][i % 4], "stop"


def fmt(obs: str) -> str:
    return f"<user>{obs}</user>"


def key(samples):
    return [(s.group, s.game, s.role, s.turn, s.reward, s.prompt, s.completion) for s in samples]


def test_garbage_model_every_game_ends_with_penalty():
    inv = InvalidPolicy(penalty=-3.0, other=0.0)
    eng = FakeEngine(garbage)
    samples, stats, logs = play_games(eng, fmt, [(KUHN, 1.0)], 12, SP, seed=0, invalid=inv,
                                      transcripts=2)
    assert len(samples) == 12  # P0's first answer ends each game
    assert all(s.reward == -3.0 and s.role == 0 and not s.info["valid"] for s in samples)
    assert eng.batch_sizes == [12]
    m = stats.as_metrics()
    assert m["rollout/invalid_rate"] == 1.0 and m["rollout/kuhn_poker/p0/invalid_rate"] == 1.0
    assert m["rollout/invalid_end_rate"] == 1.0 and m["rollout/truncation_rate"] == 0.0
    assert len(logs) == 2 and "invalid answer by P0" in logs[0]
    # against a bot the learner alternates seats; a bot win never hides the penalty
    samples, stats, _ = play_games(FakeEngine(garbage), fmt, [(KUHN, 1.0)], 10, SP, seed=1,
                                   invalid=inv, opponent="random")
    assert sorted({s.role for s in samples}) == [0, 1]
    assert all(s.reward == -3.0 and s.role == s.group % 2 for s in samples)
    assert stats.as_metrics()["rollout/invalid_rate"] == 1.0


def test_truncated_unparseable_counts_invalid_and_truncated():
    eng = FakeEngine(lambda p, i: ("\\boxed{pa", "length"))
    samples, stats, _ = play_games(eng, fmt, [(KUHN, 1.0)], 4, SP, seed=0,
                                   invalid=InvalidPolicy())
    m = stats.as_metrics()
    assert m["rollout/invalid_rate"] == 1.0 and m["rollout/truncation_rate"] == 1.0
    assert all(s.truncated for s in samples)


def test_first_legal_model_self_play_kuhn():
    eng = FakeEngine(first_legal)
    samples, stats, logs = play_games(eng, fmt, [(KUHN, 1.0)], 16, SP, seed=3,
                                      invalid=InvalidPolicy(), transcripts=1)
    # always "pass": pass-pass showdown, one turn per seat, lockstep = two waves of 16
    assert eng.batch_sizes == [16, 16]
    by_game = defaultdict(list)
    for s in samples:
        by_game[s.group].append(s)
        assert s.info["valid"] and s.completion.endswith("\\boxed{pass}")
        assert s.prompt.startswith("<user>") and s.policy_version == 7
        assert len(s.completion_ids) == len(s.old_logprobs) == len(s.completion)
        assert s.prompt_ids == list(range(len(s.prompt)))
    assert len(by_game) == 16
    assert all(s.episode == s.group for s in samples) and not any(s.retry for s in samples)
    for group in by_game.values():
        assert sorted(s.role for s in group) == [0, 1]
        assert sum(s.reward for s in group) == 0 and {abs(s.reward) for s in group} == {1.0}
    m = stats.as_metrics()
    assert m["rollout/invalid_rate"] == 0.0 and m["rollout/turns"] == 2.0
    assert m["rollout/kuhn_poker/p0/win_rate"] + m["rollout/kuhn_poker/p1/win_rate"] == 1.0
    assert "Final state" in logs[0]


def test_determinism_by_seed():
    def run(seed):
        return key(play_games(FakeEngine(first_legal), fmt, [(KUHN, 1.0), (LEDUC, 1.0)], 20,
                              SP, seed=seed, invalid=InvalidPolicy())[0])

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_mixture_weights_respected():
    samples, stats, _ = play_games(FakeEngine(first_legal), fmt, [(KUHN, 3.0), (TTT, 1.0)],
                                   200, SP, seed=0, invalid=InvalidPolicy())
    frac = stats.games["kuhn_poker"] / 200
    assert 0.65 <= frac <= 0.85 and stats.games["tic_tac_toe"] > 0
    assert {s.game for s in samples} == {"kuhn_poker", "tic_tac_toe"}
    # first-legal tic-tac-toe self-play ends by a win (x completes the top row) well before the cap
    m = stats.as_metrics()
    assert m["rollout/turn_cap_rate"] == 0.0 and m["rollout/tic_tac_toe/games"] > 0


def test_bot_opponents_and_pool():
    samples, stats, _ = play_games(FakeEngine(first_legal), fmt, [(TTT, 1.0)], 10, SP, seed=0,
                                   invalid=InvalidPolicy(), opponent="minimax")
    assert all(s.role == s.group % 2 for s in samples)
    m = stats.as_metrics()
    assert m["rollout/win_rate"] == 0.0  # nobody beats minimax
    with pytest.raises(ValueError):
        play_games(FakeEngine(first_legal), fmt, [(KUHN, 1.0)], 2, SP, seed=0,
                   invalid=InvalidPolicy(), opponent="minimax")
    with pytest.raises(ValueError):
        play_games(FakeEngine(first_legal), fmt, [(KUHN, 1.0)], 2, SP, seed=0,
                   invalid=InvalidPolicy(), opponent="pool")
    pool = FakeEngine(garbage)
    samples, stats, _ = play_games(FakeEngine(first_legal), fmt, [(KUHN, 1.0)], 8, SP, seed=0,
                                   invalid=InvalidPolicy(penalty=-3.0, other=0.5),
                                   opponent="pool", opponent_engine=pool)
    assert pool.calls > 0 and all(s.info["valid"] for s in samples)
    assert all(s.role == s.group % 2 for s in samples)
    # learner as P0 passes, then the pool's garbage ends the game (learner gets `other`); as P1
    # the pool's garbage ends the game before the learner moves, so no samples come from it
    assert {s.group % 2 for s in samples} == {0}
    assert all(s.reward == 0.5 for s in samples)


def test_retry_mode_samples():
    # alternate garbage / valid answers: every turn needs exactly one retry
    def flaky(prompt, i):
        return ("nonsense", "stop") if i % 2 == 0 else first_legal(prompt, i)

    inv = InvalidPolicy(mode="retry", retries=1, penalty=-3.0)
    eng = FakeEngine(flaky)
    samples, stats, _ = play_games(eng, fmt, [(KUHN, 1.0)], 1, SP, seed=0, invalid=inv)
    assert [s.info["valid"] for s in samples] == [False, True, False, True]
    assert [s.turn for s in samples] == [0, 0, 0, 0]
    assert [s.info["attempt"] for s in samples] == [0, 1, 0, 1]
    assert [s.retry for s in samples] == [True, False, True, False]  # RAE skips these in the baseline
    assert [s.episode for s in samples] == [0, 0, 0, 0]
    bad = [s for s in samples if not s.info["valid"]]
    good = [s for s in samples if s.info["valid"]]
    assert all(s.reward == -3.0 for s in bad)
    assert sorted(s.reward for s in good) == [-1.0, 1.0]
    assert stats.as_metrics()["rollout/invalid_rate"] == 0.5


def test_turn_cap_counts_as_draw():
    samples, stats, _ = play_games(FakeEngine(first_legal), fmt, [(TTT, 1.0)], 4, SP, seed=0,
                                   invalid=InvalidPolicy(), max_turns=2)
    assert all(s.reward == 0.0 for s in samples)
    m = stats.as_metrics()
    assert m["rollout/turn_cap_rate"] == 1.0 and m["rollout/tic_tac_toe/p0/draw_rate"] == 1.0


def test_stats_merge():
    a = play_games(FakeEngine(first_legal), fmt, [(KUHN, 1.0)], 3, SP, seed=0,
                   invalid=InvalidPolicy())[1]
    b = play_games(FakeEngine(garbage), fmt, [(KUHN, 1.0)], 3, SP, seed=1,
                   invalid=InvalidPolicy())[1]
    m = SelfPlayStats().merge(a).merge(b).as_metrics()
    assert m["rollout/games"] == 6.0
    assert m["rollout/invalid_rate"] == pytest.approx(3 / 9)
    assert Counter({"kuhn_poker": 6}) == Counter(SelfPlayStats().merge(a).merge(b).games)
