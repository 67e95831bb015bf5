"""Every shipped recipe validates without building a model; malformed recipes fail with one line, exit 2."""
import glob
import os

import pytest

from compose_rl.cli import main
from compose_rl.recipe import RecipeError, apply_override, load_recipe, recipe_from_dict

from .conftest import ROOT

RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "*.yaml")))


def test_recipes_exist():
    names = {os.path.basename(p) for p in RECIPES}
    assert {"strcomp-two-stage.yaml", "strcomp-ablate.yaml", "spiral-kuhn.yaml", "spiral-multigame.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_shipped_recipe_validates(path):
    r = load_recipe(path)
    assert r.stages
    header = open(path).read().splitlines()[:12]
    assert any("compose-rl " in line for line in header), "each recipe's header shows the command that runs it"


def test_validate_command_accepts_all(capsys):
    assert main(["validate", *RECIPES]) == 0


GOOD = "name: x\nstages: [sft, rl]\ntask: {n_functions: 4}\n"
BAD = {
    "missing_name": ("stages: [sft]\ntask: {}\n", "name: required field is missing"),
    "missing_stages": ("name: x\ntask: {}\n", "stages: required field is missing"),
    "unknown_top": (GOOD + "optimiser: adam\n", "optimiser: unknown key; allowed here: name,"),
    "unknown_nested": (GOOD + "rl: {stepz: 3}\n", "rl.stepz: unknown key; allowed here: steps,"),
    "bad_type": (GOOD + "rl: {steps: many}\n", "rl.steps: Input should be a valid integer"),
    "negative": (GOOD + "rl: {steps: -1}\n", "rl.steps: Input should be greater than 0"),
    "bad_stage": ("name: x\nstages: [sft, dance]\ntask: {}\n", "stages.1: Input should be 'sft', 'rl' or 'eval'"),
    "no_env": ("name: x\nstages: [sft]\n", "give exactly one of `task`"),
    "both_envs": (GOOD + "games: {train: [{name: kuhn_poker}]}\n", "give exactly one of `task`"),
    "unknown_game": ("name: x\nstages: [rl]\ngames: {train: [{name: chess9}]}\n", "unknown game 'chess9'"),
    "rae_on_task": (GOOD + "rl: {advantage: rae}\n", "rl.advantage: `rae` needs games"),
    "head_dim": (GOOD + "model: {tiny: {hidden_size: 64, num_heads: 4}}\n", "head_dim 64"),
    "retry_zero": ("name: x\nstages: [rl]\ngames: {train: [{name: kuhn_poker}], invalid: {mode: retry}}\n", "retries >= 1"),
    "not_yaml": ("name: [unclosed\n", "not valid YAML"),
    "not_mapping": ("- 1\n- 2\n", "a recipe is a YAML mapping"),
    "ray_without_workers": (GOOD + "ray: {address: auto}\n", "ray.address: set rollout.workers >= 1"),
    "collective_without_workers": (GOOD + "rollout: {weight_sync: collective}\n",
                                   "rollout.weight_sync: `collective` sends weights to Ray workers"),
    "bad_weight_sync": (GOOD + "rollout: {weight_sync: nccl}\n", "rollout.weight_sync: Input should be 'auto'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_recipe_one_line_exit_2(case, tmp_path, capsys):
    text, expected = BAD[case]
    f = tmp_path / "r.yaml"
    f.write_text(text + f"output: {tmp_path / 'runs'}\n" if case not in ("not_yaml", "not_mapping") else text)
    code = main(["recipe", str(f)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "nothing is written for an invalid recipe"


@pytest.mark.parametrize("override,expected", [
    ("rl.steps", "expected key.sub=value"),
    ("rl.steps=abc", "rl.steps: Input should be a valid integer"),
    ("rl.nope=1", "rl.nope: unknown key"),
    ("name.sub=1", "name is not a section"),
    ("model.name=/does/not/exist", "neither a known model"),
])
def test_bad_overrides(override, expected, tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text(GOOD + f"output: {tmp_path / 'runs'}\n")
    assert main(["recipe", str(f), override]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_overrides_apply_and_parse_yaml():
    d = {"name": "x", "stages": ["rl"], "task": {}}
    apply_override(d, "rl.steps=50")
    apply_override(d, "task.test_depths=[1, 3]")
    apply_override(d, "model.lora.r=4")
    r = recipe_from_dict(d)
    assert r.rl.steps == 50 and r.task.test_depths == [1, 3] and r.model.lora.r == 4


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe("/nonexistent.yaml")


def test_every_field_has_a_docstring():
    from compose_rl import recipe as rec

    for cls in [rec.Recipe, rec.ModelCfg, rec.TaskCfg, rec.GamesCfg, rec.RolloutCfg, rec.SftCfg, rec.RlCfg, rec.EvalCfg]:
        for name, f in cls.model_fields.items():
            assert f.description, f"{cls.__name__}.{name} has no docstring"


def test_list_command(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "kuhn_poker" in out and "tiny" in out and "strcomp" in out and "recipes/spiral-kuhn.yaml" in out
