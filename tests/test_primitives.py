"""Primitive register, trace detectors (rules and judge), calibration, CLI errors, pipeline tracking."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from compose_rl.primitives.calibrate import calibrate, judge_flags, score, table
from compose_rl.primitives.detectors import (
    DETECTORS,
    model_responses,
    rule_counts,
    rule_detector_metrics,
)
from compose_rl.primitives.judge import judge_counts, judge_prompt, parse_counts
from compose_rl.primitives.register import PRIMITIVES
from compose_rl.primitives.traces import TRACES
from compose_rl.types import Completion
from compose_rl.stats import wilson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What `compose-rl primitives calibrate` prints for the rules detectors (docs/results/primitives.md table): tp, fp, fn.
PRINTED = {"expected_value": (10, 0, 13), "case_analysis": (11, 0, 11), "backtracking": (11, 0, 7),
           "subgoaling": (5, 0, 16), "verification": (14, 9, 12), "deduction": (10, 5, 13),
           "theory_of_mind": (13, 1, 18), "pattern_recognition": (12, 1, 10)}


# ----------------------------------------------------------------------------- register and labelled set

def test_register_names_exist_in_their_modules():
    from compose_rl.primitives.ingame import PROBES
    from synthetic_tasks.probes import SUITES

    assert len(PRIMITIVES) == 8
    for p in PRIMITIVES.values():
        assert p.definition and p.probes
        assert all(s in SUITES for s in p.probes)
        assert all(n in PROBES for n in p.ingame)
        assert set(p.detectors) == {f"{p.name}/rules", f"{p.name}/judge"} <= set(DETECTORS)


def test_labelled_set_is_large_mixed_and_balanced_enough():
    assert len(TRACES) >= 150
    assert len({t.text for t in TRACES}) == len(TRACES)
    for p in PRIMITIVES:
        assert sum(p in t.labels for t in TRACES) >= 15, p
    sources = {t.source.split(":")[0] for t in TRACES}
    assert {"kuhn", "leduc", "ttt", "bargaining", "probe"} <= sources
    assert sum(not t.labels for t in TRACES) >= 20  # negatives too


# ----------------------------------------------------------------------------- rules detectors

def test_rules_detectors_reproduce_the_printed_table():
    scores, failures = calibrate()
    assert failures == 0
    got = {s.primitive: (s.tp, s.fp, s.fn) for s in scores}
    assert got == PRINTED
    for s in scores:
        assert s.tp + s.fp + s.fn + s.tn == len(TRACES)
    ev = next(s for s in scores if s.primitive == "expected_value")
    assert ev.precision == 1.0 and ev.recall == pytest.approx(10 / 23) and ev.f1 == pytest.approx(20 / 33)
    text = table(scores)
    assert "expected_value" in text and " 0.43 " in text  # recall as printed
    # not trivially perfect: every rules detector misses some positives
    assert all(s.fn > 0 for s in scores)


def test_rule_counts_ignore_the_answer_and_count_matches():
    c = rule_counts("Let me check it, then check again. \\boxed{check}")
    assert c["verification"] == 2
    assert rule_counts("\\boxed{therefore}")["deduction"] == 0
    assert rule_counts("Expected value: 0.3 * 50 = 15")["expected_value"] == 2


def test_rates_per_100_with_interval():
    texts = ["expected value is 3", "on average 4", "I bet", "pass"]
    m = rule_detector_metrics(texts, ["expected_value/rules", "deduction/rules"])
    key = "primitive/expected_value/detector/rules"
    lo, hi = wilson(2, 4)
    assert m[f"{key}/rate"] == 50.0 and m[f"{key}/lo"] == pytest.approx(100 * lo) and m[f"{key}/hi"] == pytest.approx(100 * hi)
    assert m["primitive/deduction/detector/rules/rate"] == 0.0 and m[f"{key}/n"] == 4
    with pytest.raises(ValueError, match="unknown detector"):
        rule_detector_metrics(texts, ["nope/rules"])
    with pytest.raises(ValueError, match="judge"):
        rule_detector_metrics(texts, ["deduction/judge"])


def test_model_responses_are_extracted_from_transcripts():
    selfplay = ("--- P0 (policy) sees:\nKuhn poker. pass: check, or fold to a bet.\n"
                "P0: On average betting wins.\\nSo: \\boxed{bet}  => bet\nP1 plays pass")
    assert model_responses(selfplay) == ["On average betting wins.\nSo: \\boxed{bet}"]
    play = "kuhn vs random: LM is player 1\nP0 (opponent): bet\nP1 (LM): 'wait, check\\n\\\\boxed{pass}' -> pass"
    assert model_responses(play) == ["wait, check\n\\boxed{pass}"]
    assert model_responses("plain text") == ["plain text"]
    # the rules text of the prompt ("check") is not counted
    assert rule_detector_metrics([selfplay], ["verification/rules"])["primitive/verification/detector/rules/rate"] == 0.0


# ----------------------------------------------------------------------------- judge

FULL = "<counts>" + ", ".join(f"{p}={i}" for i, p in enumerate(PRIMITIVES)) + "</counts>"


def test_judge_reply_parsing_is_strict():
    assert parse_counts("Sure. " + FULL) == {p: i for i, p in enumerate(PRIMITIVES)}
    assert parse_counts(FULL.replace(", ", ";\n")) is not None
    assert parse_counts("expected_value=1 and nothing else") is None  # no tag: a parse failure, not 0
    assert parse_counts("") is None and parse_counts(None) is None
    assert parse_counts(FULL.replace("deduction=5, ", "")) is None  # a name missing
    assert parse_counts(FULL.replace("deduction=5", "deduction=5, deduction=1")) is None  # twice
    assert parse_counts(FULL.replace("deduction=5", "deduction=-5")) is None
    assert parse_counts(FULL.replace("deduction=5", "deduction=five")) is None
    assert parse_counts(FULL.replace("deduction", "logic")) is None
    assert parse_counts(FULL.replace("</counts>", "")) is None  # unclosed
    assert parse_counts("<counts>x</counts> then " + FULL) is not None  # the last tag counts
    prompt = judge_prompt("I bet. \\boxed{bet}")
    assert all(p in prompt for p in PRIMITIVES) and "<counts>" in prompt and "I bet." in prompt


class _Judge:
    """A fake judge engine: the labelled counts for traces whose id is even, no tag for odd ones."""

    def __init__(self):
        self.by_text = {t.text: t for t in TRACES}

    def generate(self, prompts, sampling):
        out = []
        for p in prompts:
            t = next(t for text, t in self.by_text.items() if text.strip() in p)
            reply = ("I cannot tell." if t.id % 2 else
                     "<counts>" + ", ".join(f"{q}={int(q in t.labels)}" for q in PRIMITIVES) + "</counts>")
            out.append([Completion([], [], [], reply, "stop")])
        return out


def test_judge_calibration_counts_parse_failures_as_misses():
    scores, failures = calibrate(["theory_of_mind"], judge=(_Judge(), lambda s: s))
    assert failures == sum(t.id % 2 for t in TRACES)
    judge = next(s for s in scores if s.detector == "judge")
    pos = [t for t in TRACES if "theory_of_mind" in t.labels]
    assert judge.tp == sum(t.id % 2 == 0 for t in pos) and judge.fn == sum(t.id % 2 for t in pos)
    assert judge.fp == 0 and judge.precision == 1.0
    counts = judge_counts(_Judge(), lambda s: s, [TRACES[0].text, TRACES[1].text])
    assert counts[0] is not None and counts[1] is None
    flags = judge_flags(counts)
    assert flags[1] == {p: False for p in PRIMITIVES}
    assert score("judge", flags, TRACES[:2], ["case_analysis"])[0].fn == int("case_analysis" in TRACES[1].labels)


# ----------------------------------------------------------------------------- CLI and recipe errors

def _cli(*args, cwd=ROOT):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "compose_rl.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("args,msg", [
    (("--primitive", "intuition"), "unknown primitive 'intuition'"),
    (("--detector", "deduction/vibes"), "unknown detector 'deduction/vibes'"),
    (("--judge", "/no/such/model"), "--judge:"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, msg):
    env_root = str(tmp_path)
    r = _cli("primitives", "calibrate", *args, cwd=env_root)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and msg in lines[0]
    assert r.stdout == "" and not any(tmp_path.iterdir())


@pytest.mark.parametrize("override,msg", [("primitives.probes=[chess]", "primitives.probes: unknown ['chess']"),
                                          ("primitives.detectors=[luck/rules]", "primitives.detectors: unknown")])
def test_cli_validate_unknown_probe_or_detector_exits_2(override, msg):
    r = _cli("validate", "recipes/spiral-kuhn.yaml", "--set", override)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and msg in lines[0]


def test_cli_calibrate_prints_the_rules_table():
    r = _cli("primitives", "calibrate", "--detector", "backtracking/rules")
    assert r.returncode == 0, r.stderr
    assert "backtracking" in r.stdout and " 1.00  0.61 " in r.stdout and "deduction" not in r.stdout


def test_recipe_section_checks():
    from compose_rl.recipe import RecipeError, load_recipe

    kuhn = os.path.join(ROOT, "recipes", "spiral-kuhn.yaml")
    assert load_recipe(kuhn).primitives.ingame
    ok = load_recipe(kuhn, ["primitives.probes=[ev_lottery]", "primitives.detectors=[deduction/rules]",
                            "primitives.every=10"])
    assert ok.primitives.every == 10
    for override, msg in [("primitives.probes=[chess]", "unknown ['chess']"),
                          ("primitives.detectors=[deduction/judge]", "needs a judge model"),
                          ("primitives.detectors=[x/rules]", "unknown ['x/rules']"),
                          ("primitives.every=7", "multiple of rl.eval_every")]:
        with pytest.raises(RecipeError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            load_recipe(kuhn, [override])
    strcomp = os.path.join(ROOT, "recipes", "strcomp-two-stage.yaml")
    with pytest.raises(RecipeError, match="need `games`"):
        load_recipe(strcomp, ["primitives.ingame=true"])


# ----------------------------------------------------------------------------- tracking in the pipeline

def test_track_primitives_every_and_logged_samples(tmp_path, tiny_policy):
    from compose_rl.evals.probes import logged_texts, track_primitives
    from compose_rl.recipe import load_recipe

    samples = tmp_path / "rl.txt"
    with open(samples, "w") as f:
        for step in range(6):
            body = "P0: let me check this\\nok \\boxed{bet}  => bet" if step >= 3 else "P0: \\boxed{pass}  => pass"
            f.write(f"===== rl step {step} =====\n" + body + "\n---\n" + body + "\n")
    assert len(logged_texts(samples, 3, 4)) == 4 and logged_texts(samples, 9, 9) == []
    r = load_recipe(os.path.join(ROOT, "recipes", "spiral-kuhn.yaml"),
                    ["primitives.detectors=[verification/rules]", "primitives.every=5", "rl.eval_every=5"])
    assert track_primitives(r, tiny_policy, None, step=3, samples=samples) == {}  # (3 + 1) % 5 != 0
    m = track_primitives(r, tiny_policy, None, step=4, samples=samples)
    # window = every = 5: steps 4-5 .. 3 -> steps 0..3: 6 passes and 2 checks
    assert m["primitive/verification/detector/rules/rate"] == pytest.approx(25.0)
    assert m["primitive/verification/detector/rules/n"] == 8
    assert "primitive/expected_value/ingame/kuhn_call_with_king" in m
    assert not any("ttt" in k for k in m)  # only the recipe's games
