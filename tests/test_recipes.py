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
    "no_env": ("name: x\nstages: [sft]\n", "give `task` (string composition), `games`"),
    "both_envs_latent": (GOOD + "games: {train: [{name: kuhn_poker}]}\nlatent: {}\n", "use `task` alone"),
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

    sections = [c for c in vars(rec).values() if isinstance(c, type) and issubclass(c, rec.Section) and c is not rec.Section]
    assert len(sections) >= 14 and rec.LoggingCfg in sections
    for cls in sections:
        for name, f in cls.model_fields.items():
            assert f.description, f"{cls.__name__}.{name} has no docstring"


def test_list_command(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "kuhn_poker" in out and "tiny" in out and "strcomp" in out and "recipes/spiral-kuhn.yaml" in out


# ---------------------------------------------------------------- strict types: what is still accepted
def test_exponent_floats_and_yaml_ints_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-3` as a string; the recipe loader reads it as YAML 1.2 does."""
    f = tmp_path / "r.yaml"
    f.write_text(GOOD + "sft: {lr: 1e-3, epochs: 2}\nrl: {clip: 1}\n")
    r = load_recipe(f, ["rl.lr=1e-6", "rollout.temperature=+2.5E+0"])
    assert r.sft.lr == 1e-3 and r.rl.lr == 1e-6 and r.rollout.temperature == 2.5
    assert isinstance(r.sft.epochs, float) and r.sft.epochs == 2.0 and r.rl.clip == 1.0


@pytest.mark.parametrize("override", ["sft.max_steps=-1", "sft.max_steps=1", "sft.max_steps=1000000",
                                      "rl.steps=1000000", "seed=4294967295", "name=" + "x" * 64, "name=run_1.2-b",
                                      "name=_x", "games.invalid.penalty=-1000000.0"])
def test_bounds_are_inclusive_where_documented(override):
    d = {"name": "x", "stages": ["rl"], "games": {"train": [{"name": "kuhn_poker"}]}}
    apply_override(d, override)
    recipe_from_dict(d)  # does not raise


def test_nesting_limit_is_20_and_counted_without_recursion():
    from compose_rl.recipe import MAX_DEPTH, _check_depth, _parse_yaml

    assert MAX_DEPTH == 20
    assert _parse_yaml("a: " + "[" * 19 + "]" * 19, "t") == {"a": eval("[" * 19 + "]" * 19)}
    with pytest.raises(RecipeError, match="nested deeper than 20"):
        _parse_yaml("a: " + "[" * 20 + "]" * 20, "t")
    deep: list = []
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    with pytest.raises(RecipeError, match="nested deeper than 20"):
        _check_depth({"a": deep}, "t")
    d = {"name": "x", "stages": ["rl"], "task": {}}
    apply_override(d, "task." + ".".join(f"k{i}" for i in range(10)) + "=" + "[" * 12 + "]" * 12)
    with pytest.raises(RecipeError, match="nested deeper than 20"):
        _check_depth(d, "t")


def test_run_dir_stays_inside_output(tmp_path):
    from compose_rl.rundir import RunDir

    run = RunDir.create(tmp_path / "runs", "ok.name-1", "name: x\n")
    assert run.path.parent == tmp_path / "runs" and (run.path / "recipe.resolved.yaml").is_file()
    for bad in ("../escape", "a/../../b", "/abs"):
        with pytest.raises(ValueError, match="would leave the output folder"):
            RunDir.create(tmp_path / "runs", bad, "name: x\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_validate_runs_the_environment_checks(tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text(GOOD)
    assert main(["validate", str(f), "--set", "model.chat_template=true"]) == 2
    err = capsys.readouterr().err
    assert f"{f}: model.chat_template: 'tiny' has no chat template" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- logging.tensorboard
def test_tensorboard_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    f = tmp_path / "r.yaml"
    f.write_text(GOOD + f"output: {tmp_path / 'runs'}\nlogging: {{tensorboard: true}}\n")
    assert main(["recipe", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "logging.tensorboard: the tensorboard package is not installed" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


class _Writer:
    """Stands in for torch.utils.tensorboard.SummaryWriter: records what RunDir hands it."""

    made: list = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.flushes = log_dir, [], 0
        _Writer.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1


def test_tensorboard_rows_mirror_the_metrics_stream(tmp_path, monkeypatch):
    """Every numeric key of a row (numpy scalars too) goes to TensorBoard as `<stage>/<key>` at the
    row's step, flushed per row; strings and booleans stay in metrics.jsonl only."""
    import sys
    import types

    import numpy as np

    from compose_rl.rundir import RunDir

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=_Writer))
    _Writer.made.clear()
    off = RunDir.create(tmp_path, "off", "name: off\n")
    off.log("rl", 1, {"reward/mean": 1.0})
    assert _Writer.made == [], "tensorboard off writes no events"
    run = RunDir.create(tmp_path, "on", "name: on\n", tensorboard=True)
    run.log("rl", 3, {"reward/mean": 0.5, "loss/policy": np.float32(0.25), "perf/steps": 7, "note": "x", "flag": True})
    run.log("eval-sft", 0, {"eval/kuhn_poker/exploitability": 0.125})
    (w,) = _Writer.made
    assert w.log_dir == str(run.path / "tensorboard")
    assert w.scalars == [("rl/reward/mean", 0.5, 3), ("rl/loss/policy", 0.25, 3), ("rl/perf/steps", 7.0, 3),
                         ("eval-sft/eval/kuhn_poker/exploitability", 0.125, 0)]
    assert w.flushes == 2
    assert [r["stage"] for r in run.read_metrics()] == ["rl", "eval-sft"]


def test_tensorboard_event_file_holds_the_logged_key(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from compose_rl.rundir import RunDir

    run = RunDir.create(tmp_path, "tb", "name: tb\n", tensorboard=True)
    run.log("rl", 3, {"reward/mean": 0.5})
    run.log("rl", 4, {"reward/mean": -1.5})
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("rl/reward/mean")] == [(3, 0.5), (4, -1.5)]


def test_start_run_passes_the_tensorboard_switch(tmp_path):
    from compose_rl.pipeline import start_run

    r = recipe_from_dict({"name": "x", "stages": ["rl"], "task": {}, "output": str(tmp_path),
                          "logging": {"tensorboard": True}})
    assert start_run(r).run.tensorboard is True


# ---------------------------------------------------------------- context window (compose_rl/fit.py)
def test_tiny_prompt_count_is_the_char_tokenizers():
    """validate counts a tiny model's prompt in characters without importing transformers: that is
    exactly the character tokenizer's token count, on every prompt source (strcomp and a game)."""
    from compose_rl.fit import _prompt_sources
    from compose_rl.models import char_tokenizer

    tok = char_tokenizer()
    r = recipe_from_dict({"name": "x", "stages": ["sft", "rl"], "task": {"n_functions": 4},
                          "games": {"train": [{"name": "tic_tac_toe"}], "held_out": ["bargaining"]},
                          "eval": {"opponents": ["random"]}})
    seen = set()
    for where, prompt, target in _prompt_sources(r):
        seen.add(where.split()[0])
        for text in (prompt, target or ""):
            assert len(tok(text, add_special_tokens=False)["input_ids"]) == len(text), where
    assert {"strcomp", "tic_tac_toe", "bargaining"} <= seen


def test_context_window_boundary_is_exact(tmp_path, capsys):
    """The window must hold the longest prompt + max_new_tokens: that many positions pass, one fewer
    fails with one line naming the window, the prompt length and max_new_tokens."""
    from compose_rl.fit import longest_prompt

    f = tmp_path / "r.yaml"
    f.write_text(GOOD + "rollout: {max_new_tokens: 40}\n")
    best = longest_prompt(load_recipe(f), len)
    # the strcomp prompts shown in stage 1 with the function's definition are the longest
    assert best.prompt_where == "strcomp stage 1" and 60 < best.prompt_tokens < 200
    need = best.prompt_tokens + 40
    assert main(["validate", str(f), f"model.tiny.max_position_embeddings={need}"]) == 0
    capsys.readouterr()
    assert main(["validate", str(f), f"model.tiny.max_position_embeddings={need - 1}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (f"model.tiny.max_position_embeddings is {need - 1} tokens, shorter than the longest prompt "
            f"({best.prompt_tokens} tokens, strcomp stage 1) + rollout.max_new_tokens (40) = {need}") in err


def test_context_window_of_a_model_folder_is_read_from_its_files(tmp_path, capsys):
    """A Hugging Face folder: positions from config.json, tokens counted with its own tokenizer files
    (here the character tokenizer saved to the folder; the weights file is never read)."""
    import json

    from compose_rl.models import char_tokenizer

    folder = tmp_path / "model"
    char_tokenizer().save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 64}))
    (folder / "model.safetensors").write_text("")
    f = tmp_path / "r.yaml"
    f.write_text(GOOD + f"model: {{name: {folder}}}\n")
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"max_position_embeddings of {folder / 'config.json'} is 64 tokens, shorter than the longest prompt" in err
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 4096}))
    assert main(["validate", str(f)]) == 0


def test_validate_takes_overrides_after_the_files(tmp_path, capsys):
    """`validate R key=value` as `recipe` reads it: overrides apply to every file; no file: exit 2."""
    f = tmp_path / "r.yaml"
    f.write_text(GOOD)
    assert main(["validate", str(f), "rl.steps=5", "--set", "rl.lr=0.001"]) == 0
    assert main(["validate", str(f), "rl.steps=0"]) == 2
    assert "rl.steps" in capsys.readouterr().err
    assert main(["validate", "rl.steps=5"]) == 2
    assert "give a recipe file before the key=value overrides" in capsys.readouterr().err
