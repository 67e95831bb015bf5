"""In-game decision probes (labels checked against OpenSpiel, scores pinned) and probe suites."""
from __future__ import annotations

import dataclasses

import pytest

from compose_rl.evals.ingame_probes import (
    PROBES,
    _nash_action_values,
    build_state,
    indistinguishable_states,
    ingame_probe_metrics,
    probes_for,
    resolve,
    verify_probe,
)
from compose_rl.primitives.register import PRIMITIVES
from games import get_game


# ----------------------------------------------------------------------------- in-game probes: labels

@pytest.mark.parametrize("name", sorted(PROBES))
def test_ingame_label_holds_in_openspiel(name):
    verify_probe(PROBES[name])


@pytest.mark.parametrize("name", sorted(PROBES))
def test_flipped_label_fails_verification(name):
    """The checks can fail: swapping correct and wrong actions breaks every probe's claim."""
    p = PROBES[name]
    game = get_game(p.game)
    flipped = []
    for inst in p.instances:
        r = resolve(game, inst)
        names = game.action_names(r.state)
        flipped.append(dataclasses.replace(inst, correct=frozenset(names[a] for a in r.legal if a not in r.correct),
                                           wrong=None))
    with pytest.raises(AssertionError):
        verify_probe(dataclasses.replace(p, instances=tuple(flipped)))


def test_kuhn_hand_facts():
    kuhn = get_game("kuhn_poker")
    # player 1 holds K facing a bet: two histories (P0 holds J or Q) it cannot tell apart
    inst = PROBES["kuhn_call_with_king"].instances[0]
    states = indistinguishable_states(kuhn, inst)
    assert sorted(s.history() for s in states) == [[0, 2, 1], [1, 2, 1]]
    s = build_state(kuhn, inst.history)
    assert s.child(1).returns()[1] == 2.0 and s.child(0).returns()[1] == -1.0
    # Q facing a bet is indifferent against Nash (so it is not a probe): fold -1, call ~ -1
    q = _nash_action_values(kuhn, build_state(kuhn, (0, 1, "bet")), 1)
    assert q[0] == pytest.approx(-1.0, abs=1e-9) and q[1] == pytest.approx(-1.0, abs=1e-2)
    # Q first to act: check -1/3 vs bet -1/2 against Nash (hand-computed: J folds to a bet, K calls)
    q = _nash_action_values(kuhn, build_state(kuhn, (1, 0)), 0)
    assert q[1] == pytest.approx(-0.5, abs=1e-3) and q[0] == pytest.approx(-1 / 3, abs=2e-3)


def test_every_probe_names_a_registered_primitive_and_is_listed_there():
    for p in PROBES.values():
        assert p.name in PRIMITIVES[p.primitive].ingame
    listed = {n for prim in PRIMITIVES.values() for n in prim.ingame}
    assert listed == set(PROBES)


# ----------------------------------------------------------------------------- in-game probes: scores

def test_scores_of_a_hand_built_kuhn_table_are_pinned():
    # every Kuhn information state: pass 0.25, bet 0.75
    keys = ["0", "1", "2", "0p", "1p", "2p", "0b", "1b", "2b", "0pb", "1pb", "2pb"]
    tables = {k: {0: 0.25, 1: 0.75} for k in keys}
    tables["2b"] = {0: 0.1, 1: 0.9}   # K facing a bet (player 1)
    tables["2pb"] = {0: 0.3, 1: 0.7}  # K facing a bet after checking (player 0)
    m = ingame_probe_metrics(tables, ["kuhn_poker"])
    ev = "primitive/expected_value/ingame"
    assert m[f"{ev}/kuhn_call_with_king"] == pytest.approx((0.9 + 0.7) / 2)
    assert m[f"{ev}/kuhn_fold_jack"] == pytest.approx(0.25)
    assert m[f"{ev}/kuhn_king_bets_after_check"] == pytest.approx(0.75)
    assert m[f"{ev}/mean"] == pytest.approx((0.8 + 0.25 + 0.75) / 3)
    assert m[f"{ev}/kuhn_call_with_king/uniform"] == 0.5
    assert m["primitive/case_analysis/ingame/kuhn_queen_first_checks"] == pytest.approx(0.25)
    assert m["primitive/theory_of_mind/ingame/kuhn_queen_checks_behind"] == pytest.approx(0.25)
    assert m["primitive/theory_of_mind/ingame/mean/uniform"] == 0.5
    assert not any("ttt" in k or "leduc" in k for k in m)


def test_uniform_policy_scores_its_baseline_and_tic_tac_toe_baseline_by_hand():
    def uniform(game, states):
        return [{a: 1.0 for a in s.legal_actions(p)} for s, p in states]  # unnormalized on purpose

    names = ["kuhn_poker", "leduc_poker", "tic_tac_toe", "bargaining"]
    m = ingame_probe_metrics(uniform, names)
    for p in probes_for(names):
        key = f"primitive/{p.primitive}/ingame/{p.name}"
        assert m[key] == pytest.approx(m[key + "/uniform"])
    # win in one: 1 of 5 empty cells, then 1 of 4; fork: 2 of 5; leduc pair facing a raise: 2 of 3
    assert m["primitive/pattern_recognition/ingame/ttt_win_in_one/uniform"] == pytest.approx((1 / 5 + 1 / 4) / 2)
    assert m["primitive/subgoaling/ingame/ttt_fork/uniform"] == pytest.approx(2 / 5)
    assert m["primitive/case_analysis/ingame/leduc_pair_never_folds/uniform"] == pytest.approx(2 / 3)
    # bargaining instance 0: pool 1 book, 2 hats, 3 balls -> 2*3*4 offers + agree = 25 legal actions
    assert m["primitive/expected_value/ingame/bargaining_accept_final_offer/uniform"] == pytest.approx(1 / 25)


def test_lm_scores_match_its_exact_policy_tables(tiny_policy):
    from compose_rl.evals.games import lm_policy_tables

    kuhn = get_game("kuhn_poker")
    via_lm = ingame_probe_metrics(tiny_policy, ["kuhn_poker"])
    via_tables = ingame_probe_metrics(lm_policy_tables(tiny_policy, kuhn), ["kuhn_poker"])
    assert via_lm.keys() == via_tables.keys()
    for k in via_lm:
        assert via_lm[k] == pytest.approx(via_tables[k], abs=1e-6)
        assert 0.0 <= via_lm[k] <= 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown game"):
        ingame_probe_metrics({}, ["chess"])
    with pytest.raises(ValueError, match="unknown in-game probe"):
        probes_for(["kuhn_poker"], ["kuhn_nope"])
    with pytest.raises(KeyError, match="no entry"):
        ingame_probe_metrics({}, ["kuhn_poker"])
    with pytest.raises(ValueError, match="not legal"):
        build_state(get_game("kuhn_poker"), (0, 1, "raise"))
    everything = dataclasses.replace(PROBES["kuhn_fold_jack"].instances[0], correct=frozenset({"pass", "bet"}))
    with pytest.raises(ValueError, match="some correct and some wrong"):
        resolve(get_game("kuhn_poker"), everything)
