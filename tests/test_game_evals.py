"""LM game evaluations: exact action probabilities, the full exploitability path, play vs opponents."""
from __future__ import annotations

import math
import random

import pytest
import torch
from open_spiel.python import policy as os_policy
from open_spiel.python.algorithms import expected_game_score

from compose_rl.evals.games import (
    exact_value_vs,
    exploitability_of_tables,
    game_eval_suite,
    history_tv,
    infostate_rows,
    infostates,
    lm_action_logprobs,
    lm_action_probs,
    lm_policy_tables,
    play_vs,
    tables_from_fn,
    tabular_from_tables,
)
from compose_rl.domains.game_labels import label_code_map, label_policy_tables
from compose_rl.models import load_policy
from compose_rl.types import Completion, SamplingParams
from games import get_game

from .test_exploitability import _brute_force_best_response

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny", seed=0)


@pytest.fixture(scope="module")
def kuhn():
    return get_game("kuhn_poker")


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def reference_logprobs(policy, game, state, player):
    """Slow reference: one unpadded forward per action on prompt ids + completion ids + EOS."""
    tok = policy.tokenizer
    prompt = _ids(tok, policy.format_prompt(game.prompt(state, player)))
    out = {}
    for a in state.legal_actions(player):
        comp = _ids(tok, game.answer_text(state, a)) + [tok.eos_token_id]
        with torch.no_grad():
            logits = policy.model(torch.tensor([prompt + comp])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        out[a] = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(comp))
    return out


def test_exact_probs_match_reference(policy, kuhn):
    leduc = get_game("leduc_poker")
    cases = [(kuhn, [(i.state, i.player) for i in infostates(kuhn)]),
             (leduc, [(i.state, i.player) for i in random.Random(0).sample(infostates(leduc), 12)])]
    for game, states in cases:
        refs = [reference_logprobs(policy, game, s, p) for s, p in states]
        for share_prefix in (True, False):
            # small batches: several batches with mixed prompt lengths and action counts
            probs, mass = lm_action_probs(policy, game, states, batch_size=5,
                                          return_legal_mass=True, share_prefix=share_prefix)
            raw = lm_action_logprobs(policy, game, states, batch_size=5, share_prefix=share_prefix)
            for (s, p), pr, m, lp, ref in zip(states, probs, mass, raw, refs):
                assert set(pr) == set(s.legal_actions(p))
                assert sum(pr.values()) == pytest.approx(1.0, abs=1e-9)
                assert 0.0 < m <= 1.0
                lse = math.log(sum(math.exp(v) for v in ref.values()))
                for a in pr:
                    assert pr[a] == pytest.approx(math.exp(ref[a] - lse), abs=1e-5)
                    assert lp[a] == pytest.approx(ref[a], abs=1e-4)
                assert m == pytest.approx(math.exp(lse), rel=1e-3)


def test_policy_tables_keys(policy, kuhn):
    tables, mass = lm_policy_tables(policy, kuhn, return_legal_mass=True)
    assert set(tables) == {i.key for i in infostates(kuhn)} and len(tables) == 12
    assert set(mass) == set(tables)
    expl, nash_conv = exploitability_of_tables(kuhn, tables)
    # against an independent path: best responses by brute force over every pure strategy
    g = kuhn.openspiel_game
    tab = tabular_from_tables(g, tables)
    own = expected_game_score.policy_value(g.new_initial_state(), [tab, tab])
    brs = [_brute_force_best_response(g, tab, p) for p in (0, 1)]
    assert nash_conv == pytest.approx(sum(brs) - sum(own), abs=1e-9)
    assert expl == pytest.approx(nash_conv / 2, abs=1e-12)


def test_trained_always_bet_reaches_always_bet_exploitability(kuhn):
    """Teach a fresh tiny model "\\boxed{bet}" (action 1) at the 12 Kuhn prompts: its exact
    exploitability must approach that of "always bet" (1/3, see test_exploitability.py)."""
    pol = load_policy("tiny", seed=1)
    tok, model = pol.tokenizer, pol.model
    rows, labels = [], []
    for info in infostates(kuhn):
        prompt = _ids(tok, pol.format_prompt(kuhn.prompt(info.state, info.player)))
        comp = _ids(tok, kuhn.answer_text(info.state, 1)) + [tok.eos_token_id]
        rows.append(prompt + comp)
        labels.append([-100] * len(prompt) + comp)
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    torch.manual_seed(0)
    # lr 3e-3 + clipping: at 1e-2 this Llama learns bet-vs-pass but its loss plateaus (~1.8 per
    # token), so the exact answer form, hence the legal mass, stays ~1e-10.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        loss = model(input_ids=ids, attention_mask=attn, labels=lab).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    tables, mass = lm_policy_tables(pol, kuhn, return_legal_mass=True)
    assert min(t[1] for t in tables.values()) > 0.999
    assert min(mass.values()) > 0.05  # the exact answer form was learned too (untrained: ~1e-24)
    expl, nash_conv = exploitability_of_tables(kuhn, tables)
    assert expl == pytest.approx(1 / 3, abs=1e-3)
    assert nash_conv == pytest.approx(2 / 3, abs=2e-3)


# ----------------------------------------------------------------------------- play

class ScriptedEngine:
    """Answers from a table prompt -> text (a default for unknown prompts); counts calls."""

    policy_version = 0

    def __init__(self, answers: dict[str, str] | None = None, default: str = "garbage"):
        self.answers = answers or {}
        self.default = default
        self.calls = 0
        self.prompts = 0

    def generate(self, prompts, sampling):
        self.calls += 1
        self.prompts += len(prompts)
        out = []
        for p in prompts:
            text = self.answers.get(p, self.default)
            out.append([Completion(prompt_ids=[], token_ids=[], logprobs=[], text=text, finish_reason="stop")
                        for _ in range(sampling.n)])
        return out

    def load_weights(self, state, version):
        self.policy_version = version


def first_legal_engine(game):
    """Always the first legal action (Kuhn: always pass), keyed by the exact prompt text."""
    return ScriptedEngine({game.prompt(i.state, i.player): game.answer_text(i.state, i.legal[0])
                           for i in infostates(game)})


def first_legal(state, player):
    return {state.legal_actions(player)[0]: 1.0}


SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=16)


def test_play_first_legal(kuhn):
    engine = first_legal_engine(kuhn)
    n = 400
    res = play_vs(engine, lambda s: s, kuhn, "random", n_games=n, seed=3, sampling=SAMPLING)
    assert res["n"] == n and res["n_win"] + res["n_draw"] + res["n_loss"] == n
    assert res["win"] + res["draw"] + res["loss"] == pytest.approx(1.0)
    assert res["invalid_rate"] == 0.0 and res["invalid_games"] == 0
    assert engine.calls <= 2  # lockstep: at most 2 LM turns per Kuhn game -> at most 2 waves
    assert engine.prompts == res["lm_turns"] >= n
    assert not math.isnan(res["mean_return_seat0"]) and not math.isnan(res["mean_return_seat1"])
    assert 1 <= len(res["transcripts"]) <= 3 and "LM return" in res["transcripts"][0]
    # sampled play agrees with the exact value of the same policy (both seats averaged)
    exact = exact_value_vs(kuhn, tables_from_fn(kuhn, first_legal),
                           os_policy.UniformRandomPolicy(kuhn.openspiel_game))
    assert abs(res["mean_return"] - exact) < max(res["ci95"], 1e-9) * 1.5
    # reproducible
    again = play_vs(first_legal_engine(kuhn), lambda s: s, kuhn, "random", n_games=n, seed=3, sampling=SAMPLING)
    assert again["mean_return"] == res["mean_return"]


def test_play_garbage_loses_everything(kuhn):
    engine = ScriptedEngine(default="I think \\boxed{raise}")  # not a Kuhn action
    res = play_vs(engine, lambda s: s, kuhn, "random", n_games=10, seed=0, sampling=SAMPLING)
    assert res["loss"] == 1.0 and res["n_loss"] == 10
    assert res["invalid_rate"] == 1.0 and res["invalid_games"] == 10
    assert res["mean_return"] == -1.0
    assert engine.calls == 1


def test_play_tic_tac_toe_both_seats():
    game = get_game("tic_tac_toe")
    res = play_vs(ScriptedEngine(default="nope"), lambda s: s, game, "random", n_games=4, seed=0,
                  sampling=SAMPLING)
    assert res["n_loss"] == 4 and res["invalid_rate"] == 1.0


def test_game_eval_suite(policy, kuhn):
    engine = first_legal_engine(kuhn)
    tables_out = {}
    metrics, transcripts = game_eval_suite(policy, engine, ["kuhn_poker"], ["random", "nash", "minimax"],
                                           n_games=20, seed=0, sampling=SAMPLING, tables_out=tables_out)
    for key in ("exploitability", "nash_conv", "legal_mass", "vs_random/win", "vs_random/mean_return",
                "vs_random/ci95", "vs_random/invalid_rate", "vs_nash/mean_return", "vs_random/exact_value",
                "vs_nash/exact_value"):
        assert f"eval/kuhn_poker/{key}" in metrics, key
    assert not any("minimax" in k for k in metrics)  # not a Kuhn opponent: skipped
    assert all(isinstance(v, float) for v in metrics.values())
    assert set(transcripts) == {"kuhn_poker/vs_random", "kuhn_poker/vs_nash"}
    tables = lm_policy_tables(policy, kuhn)
    assert metrics["eval/kuhn_poker/exploitability"] == pytest.approx(exploitability_of_tables(kuhn, tables)[0])
    assert metrics["eval/kuhn_poker/vs_random/n"] == 20.0
    assert set(tables_out) == {"kuhn_poker"} and tables_out["kuhn_poker"].keys() == tables.keys()
    assert metrics["eval/kuhn_poker/history_tv"] == pytest.approx(history_tv(infostate_rows(kuhn, tables)))


def test_play_with_hf_engine_smoke(policy, kuhn):
    """The real transformers engine with the untrained tiny model: runs end to end (mostly invalid)."""
    from compose_rl.rollout.hf import HFEngine

    before = torch.get_rng_state()
    res = play_vs(HFEngine(policy.model, policy.tokenizer), policy.format_prompt, kuhn, "random",
                  n_games=4, seed=0, sampling=SamplingParams(temperature=1.0, max_new_tokens=12, seed=0))
    assert torch.equal(torch.get_rng_state(), before)  # evaluation leaves the training RNG alone
    assert res["n"] == 4 and res["n_win"] + res["n_draw"] + res["n_loss"] == 4
    assert res["lm_turns"] >= 4 and res["invalid_rate"] == res["invalid_games"] / res["lm_turns"]
    again = play_vs(HFEngine(policy.model, policy.tokenizer), policy.format_prompt, kuhn, "random",
                    n_games=4, seed=0, sampling=SamplingParams(temperature=1.0, max_new_tokens=12, seed=0))
    assert again == res  # seeded: the same games, the same samples


# ----------------------------------------------------------------------------- stage-1 label code

def test_label_code_is_random_per_seed_and_ignores_text_order(kuhn):
    """Over 200 seeds every card gets each action about half the time and all 6 non-constant
    card->action maps occur: the code depends neither on card strength nor on where the card's text sorts (the old
    rank-by-text code gave only two maps, J and Q always together)."""
    from collections import Counter

    pairs, maps = Counter(), Counter()
    for seed in range(200):
        code = {line[-1]: acts["pass,bet"] for line, acts in label_code_map(kuhn, seed).items()}
        assert set(code) == {"J", "Q", "K"}
        pairs.update(code.items())
        maps[tuple(sorted(code.items()))] += 1
    for card in "JQK":
        for action in ("pass", "bet"):
            assert 70 <= pairs[(card, action)] <= 130, pairs  # Binomial(200, 1/2): mean 100, sd ~7
    # constant maps (always pass / always bet: fittable without reading the card) are redrawn,
    # so exactly the six non-constant maps occur, each ~200/6 = 33 times (sd ~5.3)
    assert len(maps) == 6 and all(len({a for _, a in m}) == 2 for m in maps), maps
    assert min(maps.values()) >= 15 and max(maps.values()) <= 52, maps


def test_private_info_labels_follow_the_code_whatever_the_visit_order(kuhn):
    from compose_rl.domains.games import private_info_labels, random_states
    from compose_rl.domains.game_labels import private_line

    rng = random.Random(0)
    states = [(kuhn, s, p) for _ in range(60) for s, p in random_states(kuhn, rng)]
    code = {line: acts["pass,bet"] for line, acts in label_code_map(kuhn, 3).items()}
    labels = private_info_labels(states, seed=3, rng=random.Random(1), sharp=1.0)
    names = ("pass", "bet")
    assert [names[a] for a in labels] == [code[private_line(g, s, p)] for g, s, p in states]
    backwards = private_info_labels(states[::-1], seed=3, rng=random.Random(1), sharp=1.0)
    assert backwards == labels[::-1]
    # sharp < 1: the rest is uniform, so the code's share is sharp + (1 - sharp) / 2
    soft = private_info_labels(states * 20, seed=3, rng=random.Random(2), sharp=0.5)
    hit = sum(names[a] == code[private_line(g, s, p)] for (g, s, p), a in zip(states * 20, soft)) / len(soft)
    assert hit == pytest.approx(0.75, abs=0.03)


def test_label_policy_always_bet_matches_hand_values(kuhn, monkeypatch):
    """sharp=1 with the map {J, Q, K} -> bet at every history is "always bet": exploitability 1/3
    and exact value 0.375 vs uniform random (both derived by hand in test_exploitability.py);
    sharp=0 is the uniform policy (11/24 = 0.4583)."""
    import compose_rl.domains.game_labels as ge

    monkeypatch.setattr(ge, "label_index", lambda game, line, seed, draw=0: 1)  # legal[1 % 2] = bet
    monkeypatch.setattr(ge, "label_draw", lambda game, seed, by="line": 0)  # (the real one would redraw a constant code)
    bet = label_policy_tables(kuhn, seed=0, sharp=1.0)
    m = ge.policy_baseline_metrics(kuhn, bet)
    assert m["exploitability"] == pytest.approx(1 / 3, abs=1e-12)
    assert m["vs_random/exact_value"] == pytest.approx(0.375, abs=1e-12)
    assert ge.policy_baseline_metrics(kuhn, label_policy_tables(kuhn, 0, 0.0))["exploitability"] == pytest.approx(11 / 24)
    soft = label_policy_tables(kuhn, seed=0, sharp=0.75)
    assert all(t == pytest.approx({0: 0.125, 1: 0.875}) for t in soft.values())
    with pytest.raises(ValueError, match="sharp"):
        label_policy_tables(kuhn, 0, 1.5)


# ----------------------------------------------------------------------------- reading the history

def test_infostate_rows_and_history_tv_on_hand_built_tables(kuhn):
    rows = infostate_rows(kuhn, {})  # missing -> uniform
    assert len(rows) == 12 and all(r["probs"] == {"pass": 0.5, "bet": 0.5} for r in rows)
    assert {r["private"] for r in rows} == {"Your card: J", "Your card: Q", "Your card: K"}
    assert all(sum(r["private"] == f"Your card: {c}" for r in rows) == 4 for c in "JQK")
    assert history_tv(rows) == 0.0  # the same distribution at every history
    # J: passes first, but bets when facing a bet -> max TV 1; Q: 0.5/0.5 except 0.8/0.2 facing a
    # bet -> 0.3; K: always bets -> 0. Mean (1 + 0.3 + 0) / 3.
    tables = {}
    for info in infostates(kuhn):
        card, facing_bet = info.key[0], info.key.endswith("b")
        if card == "0":
            tables[info.key] = {0: 0.0, 1: 1.0} if facing_bet else {0: 1.0, 1: 0.0}
        elif card == "1":
            tables[info.key] = {0: 0.8, 1: 0.2} if facing_bet else {0: 0.5, 1: 0.5}
        else:
            tables[info.key] = {1: 1.0}
    rows = infostate_rows(kuhn, tables)
    assert history_tv(rows) == pytest.approx((1.0 + 0.3 + 0.0) / 3)
    first = next(r for r in rows if r["key"] == "0")
    assert first["infostate"] == "History: none, you act first. Pot: 2. Your card: J"
    assert first["probs"] == {"pass": 1.0, "bet": 0.0}
