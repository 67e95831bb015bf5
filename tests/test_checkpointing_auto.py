"""model.gradient_checkpointing: auto (issue 19): on exactly where `plan` says the learner device does not fit
without it. Fixtures: the Qwen3-4B SPIRAL recipe on one 141 GiB GPU (auto turns it on: 136 GiB without it),
the Qwen3-8B LoRA string recipe on the same GPU and the tiny CPU recipe (auto leaves it off)."""
import json
import os

import pytest

from compose_rl.plan import checkpointing_decision, estimate
from compose_rl.recipe import RecipeError, load_recipe, recipe_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")


def _cfg(name):
    with open(os.path.join(FIX, name, "config.json")) as f:
        return json.load(f)


def test_auto_turns_checkpointing_on_for_the_4b_recipe_on_141_gib():
    r = load_recipe(os.path.join(ROOT, "recipes/gpu/spiral-kuhn-qwen3-4b.yaml"))
    assert r.model.gradient_checkpointing == "auto"
    on, why = checkpointing_decision(r, "cuda", 141.0, config=_cfg("qwen3-4b-base"))
    assert on and why.startswith("auto: on")
    plan = estimate(r, _cfg("qwen3-4b-base"), "cuda", 141.0)
    assert plan.fits and plan.settings["gradient_checkpointing"].startswith("on (auto")
    # the reason auto gives: the same recipe with checkpointing off does not fit, with it on it does
    off = estimate(r.model_copy(update={"model": r.model.model_copy(update={"gradient_checkpointing": False})}),
                   _cfg("qwen3-4b-base"), "cuda", 141.0)
    assert not off.fits and f"{off.peak_gib:.1f} GiB without it" in why
    assert plan.peak_gib < off.peak_gib


def test_auto_leaves_checkpointing_off_where_the_plan_fits_without_it():
    r8 = load_recipe(os.path.join(ROOT, "recipes/gpu/strcomp-qwen3-8b-lora.yaml"))
    on, why = checkpointing_decision(r8, "cuda", 141.0, config=_cfg("qwen3-8b-base"))
    assert not on and why.startswith("auto: off")
    assert estimate(r8, _cfg("qwen3-8b-base"), "cuda", 141.0).settings["gradient_checkpointing"] == \
        "off (auto: fits without)"
    tiny = load_recipe(os.path.join(ROOT, "recipes/spiral-kuhn.yaml"))
    on, why = checkpointing_decision(tiny, "cpu", 24.0)
    assert not on and "fits" in why


def test_explicit_values_are_taken_as_given():
    base = {"name": "t", "stages": ["sft"], "games": {"train": [{"name": "kuhn_poker"}]}}
    for v in (True, False):
        r = recipe_from_dict({**base, "model": {"gradient_checkpointing": v}})
        assert checkpointing_decision(r, "cpu", 1.0)[0] is v  # even where it would not fit
    with pytest.raises(RecipeError) as e:
        recipe_from_dict({**base, "model": {"gradient_checkpointing": "maybe"}})
    assert "model.gradient_checkpointing" in str(e.value) and "\n" not in str(e.value)


def test_the_decision_is_printed_and_recorded(tmp_path):
    """Precision (precision.json, the start line) carries the decision and why; the pipeline applies it."""
    from compose_rl.precision import resolve

    r = recipe_from_dict({"name": "t", "stages": ["sft"], "games": {"train": [{"name": "kuhn_poker"}]}})
    p = resolve(r, device="cpu")
    assert p.gradient_checkpointing is False and p.gradient_checkpointing_why.startswith("auto: off")
    assert "gradient checkpointing off (auto: off" in p.line()
    assert p.as_dict()["gradient_checkpointing_why"] == p.gradient_checkpointing_why


def test_pipeline_applies_auto_as_the_plan_decided(tmp_path, monkeypatch):
    """With `auto`, the RL stage puts the model in the state precision.json records (here forced on by a plan
    that says the device is too small), whatever an earlier stage left."""
    import compose_rl.plan as plan
    import compose_rl.rl.learner as learner
    from compose_rl.pipeline import start_run
    from tests.test_learner import _strcomp_recipe

    seen = []
    monkeypatch.setattr(learner, "run_rl", lambda policy, *a, **kw: seen.append(policy.model.is_gradient_checkpointing) or {})
    for decided in (False, True):
        monkeypatch.setattr(plan, "checkpointing_decision", lambda *a, d=decided, **k: (d, f"auto: {'on' if d else 'off'} (test)"))
        r = _strcomp_recipe(tmp_path / str(decided))
        assert r.model.gradient_checkpointing == "auto"
        pipe = start_run(r)
        pipe.build()
        assert pipe.run.read_json("precision.json")["gradient_checkpointing"] is decided
        pipe.policy.set_gradient_checkpointing(not decided)
        pipe.stage_rl(1, "rl", None)
    assert seen == [False, True]
