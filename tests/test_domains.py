"""The Domain interface (compose_rl/domains): every shipped recipe maps onto domains, the pipeline's
stage-1 data and RL batches come from them, and a mixed batch keeps groups and game instances apart."""
import glob
import os
import random

import pytest

from compose_rl.domains import MixedCollector, suite_domains, training_domains
from compose_rl.recipe import load_recipe, recipe_from_dict
from compose_rl.rl.advantages import RoleBaselines
from compose_rl.rl.learner import compute_advantages
from compose_rl.types import Sample

from .conftest import ROOT

RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "*.yaml")))


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_every_shipped_recipe_maps_onto_its_domains(path):
    r = load_recipe(path)
    names = [d.name for d in training_domains(r)]
    expected = (["strcomp"] if r.task is not None else []) + (
        [r.games.train[0].name if len(r.games.train) == 1 else "games"] if r.games is not None else [])
    assert names == expected


def _s(reward, group, episode=-1, game="", role=0):
    return Sample(prompt_ids=[1], completion_ids=[2], old_logprobs=[0.0], reward=reward, group=group,
                  episode=episode, game=game, role=role)


class _Fixed:
    def __init__(self, samples, metrics):
        self.samples, self.metrics = samples, metrics

    def collect(self, engine, step):
        return list(self.samples), dict(self.metrics), ["t"]


def test_mixed_collector_offsets_groups_and_instances_and_rae_baselines_per_domain():
    text = _Fixed([_s(1.0, 0), _s(0.0, 0), _s(1.0, 1), _s(1.0, 1)], {"rollout/truncation_rate": 0.25})
    games = _Fixed([_s(2.0, 0, 0, "kuhn_poker"), _s(-2.0, 0, 0, "kuhn_poker", role=1), _s(1.0, 1, 1, "kuhn_poker")],
                   {"rollout/truncation_rate": 0.0})
    samples, metrics, texts = MixedCollector([("strcomp", text), ("kuhn_poker", games)]).collect(None, 0)
    assert [s.group for s in samples] == [0, 0, 1, 1, 2, 2, 3]
    # each one-turn answer is its own instance of the pseudo-game "strcomp"; game instances follow
    assert [s.episode for s in samples] == [0, 1, 2, 3, 4, 4, 5]
    assert [s.game for s in samples] == ["strcomp"] * 4 + ["kuhn_poker"] * 3
    assert metrics["rollout/share/strcomp"] == pytest.approx(4 / 7)
    assert metrics["rollout/truncation_rate"] == 0.25 and metrics["rollout/truncation_rate/kuhn_poker"] == 0.0
    assert texts == ["[strcomp] t", "[kuhn_poker] t"]
    # RAE: one EMA baseline per (domain, role); all start at 0, so A = R at the first step
    b = RoleBaselines(decay=0.5)
    compute_advantages(samples, "rae", b)
    assert [s.advantage for s in samples] == [1.0, 0.0, 1.0, 1.0, 2.0, -2.0, 1.0]
    # strcomp: 4 instances, returns 1, 0, 1, 1 folded in order: 0 -> .5 -> .25 -> .625 -> .8125
    assert b.values["strcomp/p0"] == pytest.approx(0.8125)


def _games_recipe(fmt):
    return recipe_from_dict({"name": "x", "stages": ["sft"], "games": {
        "train": [{"name": "kuhn_poker"}], "held_out": ["tic_tac_toe"], "held_out_format": fmt}})


def test_held_out_format_shows_held_out_states_with_legal_labels_only_when_asked():
    from games import get_game

    ttt = get_game("tic_tac_toe")
    (plain,) = training_domains(_games_recipe("none"))
    assert not any("tic" in p.lower() for p, _ in plain.sft_pairs(200))
    (fmt,) = training_domains(_games_recipe("uniform"))
    pairs = fmt.sft_pairs(400)
    held = [(p, a) for p, a in pairs if p.startswith(ttt.prompt(ttt.new_initial_state(random.Random(0)), 0)[:40])]
    # mean training weight each: about half the states (a TTT playthrough has more turns than Kuhn's)
    assert 0.3 < len(held) / len(pairs) < 0.9
    # every held-out label is a cell name in \boxed{} (a legal move of its board: checked by the env below)
    assert all(a.startswith("\\boxed{") and a[7] in "abc" and a[8] in "123" for _, a in held)


def test_uniform_held_out_labels_are_legal_moves_and_not_a_fixed_code():
    from compose_rl.domains.games import random_states
    from games import get_game

    (fmt,) = training_domains(_games_recipe("uniform"))
    ttt = get_game("tic_tac_toe")
    rng = random.Random(3)
    states = [sp for _ in range(30) for sp in random_states(ttt, rng)]
    for st, pl in states:  # the answer text of every legal action parses back to that action
        for a in st.legal_actions():
            assert ttt.parse(ttt.answer_text(st, a), st) == a
    pairs = fmt.sft_pairs(2000)
    first = [a for p, a in pairs if "tic" in p.lower() and "Your" not in p.split("\n")[-1][:0]]
    # from the empty board the uniform label hits several cells, not one code's answer
    empty = ttt.prompt(ttt.new_initial_state(random.Random(0)), 0)
    opening = {a for p, a in pairs if p == empty}
    assert len(first) > 100 and len(opening) >= 3


def test_suites_list_their_domains_and_refuse_unknown_names():
    assert [d.name for d in suite_domains("smoke")] == ["games", "strcomp", "multiplication", "ingame_probes"]
    with pytest.raises(ValueError, match="unknown suite 'nope'; known: full, games"):
        suite_domains("nope")


def test_mixed_recipe_validates_and_trains_both_domains():
    r = recipe_from_dict({"name": "m", "stages": ["sft", "rl"], "task": {"n_functions": 4},
                          "games": {"train": [{"name": "kuhn_poker"}]}, "rl": {"advantage": "rae"}})
    assert [d.name for d in training_domains(r)] == ["strcomp", "kuhn_poker"]


def test_held_out_game_is_valid_after_a_format_only_stage_1(tmp_path):
    """Train tic-tac-toe; Kuhn poker held out, shown in stage 1 with uniform legal labels only (no
    knowledge of play). Its valid-action rate goes from ~0 (the base model never emits its format)
    to > 0.9 on fresh random states. ~60 SFT steps (about a minute on one thread)."""
    from compose_rl.domains.games import valid_rate_items
    from compose_rl.pipeline import start_run
    from games import get_game

    r = recipe_from_dict({
        "name": "fmt", "seed": 0, "output": str(tmp_path), "stages": ["sft"],
        "games": {"train": [{"name": "tic_tac_toe"}], "held_out": ["kuhn_poker"], "held_out_format": "uniform"},
        "rollout": {"max_new_tokens": 16, "eval_temperature": 0.0},
        "sft": {"examples": 960, "batch_size": 16, "lr": 2e-3, "gate": "warn", "gate_items": 50}})
    pipe = start_run(r)
    pipe.build()
    kuhn = get_game("kuhn_poker")

    def valid():
        items = valid_rate_items(pipe.engine, pipe.policy.format_prompt, kuhn, 60, 99, pipe.sampling(train=False))
        return sum(items) / len(items)

    assert valid() < 0.1
    pipe.run_all()
    assert valid() > 0.9
    gate = pipe.run.read_json("eval/sft-gate.json")["skills"]
    assert set(gate) == {"tic_tac_toe/valid", "kuhn_poker/valid"}  # the gate reports the held-out format too


def _shares(names):
    from collections import Counter

    c = Counter(names)
    return {k: v / len(names) for k, v in c.items()}


def test_mixture_weights_share_out_samples_not_games():
    """spiral-multigame's Kuhn starvation: with weights counting games, a 2-decision Kuhn hand got ~16% of
    the stage-1 examples beside 8-9-decision games; per-sample weights give each game its recipe share."""
    from compose_rl.domains.games import draw_weights, mean_decisions, sample_states
    from games import get_game

    kuhn, ttt, barg = get_game("kuhn_poker"), get_game("tic_tac_toe"), get_game("bargaining")
    assert mean_decisions(kuhn) == pytest.approx(2.28, abs=0.05)  # P0 acts, P1 acts, P0 again after check-bet (1/4)
    mix = [(kuhn, 1.0), (ttt, 1.0), (barg, 0.5)]
    by_games = _shares([g.name for g, _, _ in sample_states(draw_weights(mix, "games"), 6000, random.Random(0))])
    by_samples = _shares([g.name for g, _, _ in sample_states(draw_weights(mix, "samples"), 6000, random.Random(0))])
    assert by_games["kuhn_poker"] < 0.2
    for name, want in (("kuhn_poker", 0.4), ("tic_tac_toe", 0.4), ("bargaining", 0.2)):
        assert by_samples[name] == pytest.approx(want, abs=0.03), (name, by_samples)
    # one game: the draw is unchanged whatever the unit (single-game runs stay reproducible)
    assert draw_weights([(kuhn, 2.0)], "samples") == [(kuhn, 2.0)]
    one = {u: recipe_from_dict({"name": "x", "stages": ["sft"], "games": {
        "train": [{"name": "kuhn_poker"}], "weight_unit": u}}) for u in ("samples", "games")}
    assert training_domains(one["samples"])[0].sft_pairs(300) == training_domains(one["games"])[0].sft_pairs(300)


def test_rl_turn_shares_follow_the_weights_and_are_logged():
    from compose_rl.domains.games import draw_weights
    from compose_rl.rollout.selfplay import play_games
    from compose_rl.types import SamplingParams
    from games import get_game
    from games.env import InvalidPolicy

    from .test_selfplay import FakeEngine

    def random_legal(prompt, i):
        import re

        names = re.search(r"^Actions: (.*?)\. Reply with", prompt, re.M).group(1).split(", ")
        return f"\\boxed{{{random.Random(i).choice(names)}}}", "stop"

    kuhn, ttt = get_game("kuhn_poker"), get_game("tic_tac_toe")
    mix = [(kuhn, 1.0), (ttt, 1.0)]
    sp = SamplingParams(temperature=1.0, max_new_tokens=16, n=1)
    out = {}
    for unit in ("games", "samples"):
        samples, stats, _ = play_games(FakeEngine(random_legal), lambda o: o, draw_weights(mix, unit), 400, sp,
                                       seed=1, invalid=InvalidPolicy(penalty=-3.0))
        m = stats.as_metrics()
        got = _shares([s.game for s in samples])
        # the logged share is the share of the learner's turns, i.e. of the samples
        assert m["rollout/kuhn_poker/sample_share"] == pytest.approx(got["kuhn_poker"])
        assert m["rollout/kuhn_poker/sample_share"] + m["rollout/tic_tac_toe/sample_share"] == pytest.approx(1.0)
        out[unit] = got["kuhn_poker"]
    assert out["games"] < 0.32 and out["samples"] == pytest.approx(0.5, abs=0.06)


class _CharPolicy:
    """encode_pair's view of a policy: one token per character, EOS 0, no chat wrapping."""

    class tokenizer:  # noqa: N801 - a stand-in for the tokenizer object
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    tokenizer = tokenizer()

    @staticmethod
    def format_prompt(p):
        return p


def test_games_replay_shows_only_held_out_formats_fresh_each_step_and_needs_them():
    from types import SimpleNamespace

    from games import get_game

    def recipe(fmt, fraction):
        return recipe_from_dict({"name": "x", "stages": ["sft", "rl"], "rl": {"games_per_step": 16,
                                 "replay_fraction": fraction}, "games": {"train": [{"name": "kuhn_poker"}],
                                 "held_out": ["tic_tac_toe"], "held_out_format": fmt}})

    r = recipe("uniform", 0.25)
    (dom,) = training_domains(r)
    ctx = SimpleNamespace(recipe=r, policy=_CharPolicy())
    a, again, nxt = dom.replay(ctx, 3), dom.replay(ctx, 3), dom.replay(ctx, 4)
    assert len(a) == 4 and a == again and a != nxt  # round(16 x 0.25); a function of (seed, step)
    ttt = get_game("tic_tac_toe")
    board = ttt.prompt(ttt.new_initial_state(random.Random(0)), 0)[:40]
    for prompt_ids, completion_ids in a + nxt:
        prompt, answer = "".join(map(chr, prompt_ids)), "".join(map(chr, completion_ids[:-1]))
        assert prompt.startswith(board) and completion_ids[-1] == 0  # tic-tac-toe only, never Kuhn
        assert answer.startswith("\\boxed{") and answer[7] in "abc" and answer[8] in "123"
    assert dom.replay(SimpleNamespace(recipe=recipe("uniform", 0.0), policy=_CharPolicy()), 3) == []
    with pytest.raises(Exception, match="rl.replay_fraction: a games recipe replays"):
        recipe("none", 0.25)
