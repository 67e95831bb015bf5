"""In-game decision probes (labels checked against OpenSpiel, scores pinned) and probe suites."""
from __future__ import annotations

import dataclasses

import pytest

from compose_rl.evals.ingame_probes import (
    _nash_action_values,
    build_state,
    indistinguishable_states,
    ingame_probe_metrics,
    resolve,
    verify_probe,
)
from compose_rl.primitives.ingame import PROBES, probes_for
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


# ----------------------------------------------------------------------------- probe suites

from compose_rl.stats import wilson  # noqa: E402
from synthetic_tasks.probes import SUITES, get_suite  # noqa: E402
from synthetic_tasks.probes.common import split_of  # noqa: E402
from synthetic_tasks.probes.backtracking import ExprError, evaluate  # noqa: E402
from synthetic_tasks.probes.deduction_chain import follows  # noqa: E402
from synthetic_tasks.probes.ev_lottery import ev100  # noqa: E402
from synthetic_tasks.probes.false_belief import ANSWERS  # noqa: E402

N = 60  # items per split and level in the generic tests


def _boxed(s: str) -> str:
    return "Let me think. \\boxed{" + s + "}"


def _perturbed(item) -> list[str]:
    """Answers that must be rejected: the other class, an off-by-one number, a wrong container, a
    sequence one step too long, an expression using a number that was not given."""
    a = item.answer
    if item.suite in ("verify_strcomp", "deduction_chain"):
        return [{"yes": "no", "no": "yes"}[a], "Yes", " yes"]
    if item.suite == "ev_lottery":
        return [{"A": "B", "B": "A"}[a], "a"]
    if item.suite == "false_belief":
        first, last, _ = item.data
        return [last if a == first else first, a.upper()]
    if item.suite == "subgoal_plan":
        return [a + "A", a[:-1]]
    if item.suite == "backtracking":
        return [f"({a})+1", f"({a})*1", a + "+"]
    return [str(int(a) + 1), str(int(a) - 1), a + ".0"]


@pytest.mark.parametrize("name", sorted(SUITES))
def test_checker_accepts_gold_and_rejects_perturbed(name):
    suite = SUITES[name]
    for level in suite.levels:
        for split in ("train", "eval"):
            for it in suite.items(split, level, N, seed=3):
                assert it.level == level and it.split == split
                assert suite.score(it, _boxed(it.answer)), (it.prompt, it.answer)
                for bad in _perturbed(it):
                    assert not suite.score(it, _boxed(bad)), (it.prompt, bad)
                assert not suite.score(it, it.answer)  # no box, no answer
                assert "\\boxed{" in it.prompt and it.prompt.isascii()


@pytest.mark.parametrize("name", sorted(SUITES))
def test_train_and_eval_questions_never_overlap_and_generation_is_seeded(name):
    suite = SUITES[name]
    for level in suite.levels:
        train = {it.key for seed in (0, 1) for it in suite.items("train", level, 200, seed)}
        evals = {it.key for seed in (0, 1) for it in suite.items("eval", level, 200, seed)}
        assert not train & evals
        fam = {s: {it.family for seed in (0, 1) for it in suite.items(s, level, 200, seed)} for s in ("train", "eval")}
        assert not (fam["train"] & fam["eval"]) - {None}  # a family (e.g. Countdown's numbers) sits in one split
        assert suite.items("eval", level, 5, seed=7) == suite.items("eval", level, 5, seed=7)
    assert suite.items("train", suite.levels[0], 20, 0) != suite.items("train", suite.levels[0], 20, 1)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_floors_are_computed_and_sane(name):
    suite = SUITES[name]
    items = [it for lv in suite.levels for it in suite.items("eval", lv, 150, seed=0)]
    floor, rule = suite.floor(items)
    assert 0.0 <= floor <= 1.0 and rule
    binary = name in ("ev_lottery", "verify_strcomp", "deduction_chain", "false_belief")
    if binary:  # a constant answer already gets the majority class: the floor is at least that, not far above
        assert 0.45 <= floor <= 0.62, (floor, rule)
    else:
        assert floor < 0.5, (floor, rule)
    # the floor is the best rule: recompute one rule by hand on one level
    if name == "verify_strcomp":
        lv1 = [it for it in items if it.level == 1]
        yes = sum(it.answer == "yes" for it in lv1) / len(lv1)
        assert suite.floor(lv1)[0] >= max(yes, 1 - yes)


def test_full_computation_rules_are_not_floors():
    seq = get_suite("sequence_pattern")
    lv1 = seq.items("eval", 1, 50)
    assert seq.floor(lv1) == (0.0, "none")  # "continue the last step" IS level 1's pattern
    lv2 = seq.items("eval", 2, 50)
    assert all(it.answer != str(2 * it.data[0][-1] - it.data[0][-2]) for it in lv2)


def test_parser_is_strict():
    s = get_suite("verify_strcomp")
    assert s.parse("\\boxed{yes}") == "yes"
    assert s.parse("\\boxed{no} then \\boxed{yes}") == "yes"  # the last box counts
    for bad in ("yes", "\\boxed{Yes}", "\\boxed{ yes}", "\\boxed{yes.}", "\\boxed{yes", "\\boxed{\\text{yes}}"):
        assert s.parse(bad) is None, bad
    m = get_suite("multiplication")
    assert m.parse("\\boxed{1,024}") is None and m.parse("\\boxed{1024}") == "1024"


def test_hand_computed_items():
    assert ev100(((30, 50), (70, 10))) == 1500 + 700  # 22 points on average
    assert evaluate("(25-3)*2+1") == (45, [25, 3, 2, 1])
    assert evaluate("2*3+4*5") == (26, [2, 3, 4, 5])  # precedence
    for bad in ("2**3", "-2+3", "(2+3", "2+3)", "02+3", "2 3"):
        with pytest.raises(ExprError):
            evaluate(bad)
    cd = get_suite("backtracking")
    it = cd.items("eval", 1, 1)[0]
    nums, target = it.data
    # every expression that uses the numbers once and hits the target is right, not only the generator's
    alt = "+".join(map(str, nums))
    assert cd.check(it, alt) == (sum(nums) == target)
    rules = (("a", "b"), ("b", "c"), ("x", "c"))
    assert follows(rules, "a", "c") and not follows(rules, "c", "a") and not follows(rules, "x", "b")
    # false belief: away -> both orders the first place; present -> the last; secret watch -> B knows, A thinks B does not
    assert ANSWERS == {"away": ("first", "first"), "present": ("last", "last"), "secret": ("last", "first")}
    ca = get_suite("case_analysis")
    it = ca.items("train", 1, 1, seed=5)[0]
    xs, a, b = it.data
    assert int(it.answer) == sum(x // 2 + a if x % 2 == 0 else 3 * x - b for x in xs)
    sp = get_suite("subgoal_plan")
    it = sp.items("eval", 2, 1)[0]
    start, target, ops, length = it.data
    assert length == 3 and sp.check(it, it.answer)


def test_wilson_interval_by_hand():
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.16113, abs=1e-5)
    lo, hi = wilson(10, 20)  # symmetric around 0.5
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.29929, abs=1e-4)


class _Echo:
    """A fake engine that answers every prompt with a fixed function of the prompt."""

    def __init__(self, answer):
        self.answer = answer

    def generate(self, prompts, sampling):
        from compose_rl.types import Completion

        assert sampling.temperature == 0.0
        return [[Completion([], [], [], self.answer(p), "stop")] for p in prompts]


def test_suite_metrics_scores_through_an_engine():
    from compose_rl.evals.probes import suite_metrics

    suite = get_suite("multiplication")
    gold = {it.prompt: it.answer for lv in suite.levels for it in suite.items("eval", lv, 3, seed=0)}
    m, rows = suite_metrics(_Echo(lambda p: _boxed(gold[p])), lambda s: s, ["multiplication"], 12, 32)
    key = "primitive/subgoaling/probe/multiplication"
    assert m[f"{key}/acc"] == 1.0 and m[f"{key}/n"] == 12 and m[f"{key}/L4/acc"] == 1.0
    assert m[f"{key}/ci_lo"] == pytest.approx(wilson(12, 12)[0])
    m, rows = suite_metrics(_Echo(lambda p: "I don't know"), lambda s: s, ["multiplication"], 12, 32)
    assert m[f"{key}/acc"] == 0.0 and m[f"{key}/parse_rate"] == 0.0 and rows[0]["floor"] == m[f"{key}/floor"]
    with pytest.raises(ValueError, match="unknown probe suite"):
        suite_metrics(_Echo(str), lambda s: s, ["nope"], 4, 8)


def test_register_lists_exactly_the_suites():
    listed = [s for p in PRIMITIVES.values() for s in p.probes]
    assert sorted(listed) == sorted(SUITES)
    for s in SUITES.values():
        assert s.name in PRIMITIVES[s.primitive].probes
    assert all(PRIMITIVES[p].probes for p in PRIMITIVES)  # at least one suite per primitive


def test_family_decides_the_split_and_is_part_of_the_key():
    """Suites that draw a family first (the costly generators) keep split = f(family), and the family is
    a function of the question (equal keys never carry different families)."""
    for name in ("backtracking", "subgoal_plan", "ev_lottery"):
        suite = SUITES[name]
        for level in suite.levels:
            family_of: dict[str, str] = {}
            for split in ("train", "eval"):
                for seed in range(4):
                    for it in suite.items(split, level, 300, seed=seed):
                        assert it.family is not None and split_of(name, level, it.family) == split
                        assert family_of.setdefault(it.key, it.family) == it.family
            assert len(family_of) > 300  # some keys repeat across seeds, most do not
