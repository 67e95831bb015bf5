"""Issue 20: the learner's positive control (RL raises the trained depth's reward; lr 0 does not),
the depth curriculum (rl.phases) and the unbiased pass@k estimator."""
import json
import math
from pathlib import Path

import pytest
import torch

from compose_rl.evals.strcomp import pass_at_k
from compose_rl.recipe import RecipeError, RlCfg, recipe_from_dict
from synthetic_tasks.strcomp import Problem, StrCompTask


# ------------------------------------------------------------------------------ pass@k
def test_pass_at_k_hand_computed():
    # 1 - C(n-c, k) / C(n, k)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)          # C(3,2)/C(4,2) = 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)         # C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - 35 / 210)      # C(7,4)/C(10,4)
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 5, 4) == 1.0                                # n - c = 3 < k: some correct in any 4
    # pass@1 is the plain success rate, and the estimate rises with k
    assert pass_at_k(64, 7, 1) == pytest.approx(7 / 64)
    assert pass_at_k(64, 7, 8) < pass_at_k(64, 7, 16) < pass_at_k(64, 7, 64) == 1.0


def test_pass_at_k_is_stable_where_binomials_overflow_floats():
    # C(256, 128) ~ 5.8e75: the product form must agree with exact integer arithmetic
    exact = 1 - math.comb(255, 128) / math.comb(256, 128)  # = 1 - 127/256 + ... exactly 128/256 here
    assert pass_at_k(256, 1, 128) == pytest.approx(exact) == pytest.approx(0.5)
    n, c, k = 1000, 3, 500
    ref = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(ref, rel=1e-12)


def test_pass_at_k_rejects_k_above_n_and_bad_counts():
    with pytest.raises(ValueError, match="larger than the n=4 samples"):
        pass_at_k(4, 1, 5)
    for n, c, k in ((4, 5, 1), (4, -1, 1), (4, 1, 0)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_passk_cli_k_above_n_exits_2_one_line_nothing_written(tmp_path, capsys):
    from compose_rl.commands.positive_control import main

    out = tmp_path / "o"
    rc = main(["passk", "recipes/strcomp-positive-control.yaml", "--ckpt", "base=init", "--n", "4", "--k", "1", "8",
               "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--k 8" in err[0] and "n = --n = 4" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------ rl.phases
def _rl_recipe(**rl):
    return {"name": "x", "stages": ["rl"], "task": {"n_functions": 4, "train_max_depth": 2}, "rl": rl}


def test_phases_set_the_step_count_and_the_cap_per_step():
    r = recipe_from_dict(_rl_recipe(phases=[{"max_depth": 2, "steps": 3}, {"max_depth": 4, "steps": 2}]))
    assert r.rl.steps == 5
    assert [r.rl.max_depth_at(s, 9) for s in range(6)] == [2, 2, 2, 4, 4, 4]
    assert RlCfg().max_depth_at(7, 3) == 3  # no phases: the task's train_max_depth
    # the resolved recipe (steps written out) loads again unchanged
    again = recipe_from_dict(r.model_dump(mode="json"))
    assert again.rl.steps == 5 and again.rl.phases == r.rl.phases


@pytest.mark.parametrize("phases, steps, msg", [
    ([], None, "rl.phases: give at least one phase"),
    ([{"max_depth": 3, "steps": 2}, {"max_depth": 2, "steps": 2}], None, "max_depth must strictly increase"),
    ([{"max_depth": 2, "steps": 2}, {"max_depth": 2, "steps": 2}], None, "max_depth must strictly increase"),
    ([{"max_depth": 2, "steps": 2}], 5, "rl.steps: 5 but rl.phases sum to 2"),
    ([{"max_depth": 0, "steps": 2}], None, "rl.phases.0.max_depth"),
    ([{"max_depth": 2}], None, "rl.phases.0.steps"),
])
def test_bad_phases_are_one_line_errors(phases, steps, msg):
    rl = {"phases": phases} if steps is None else {"phases": phases, "steps": steps}
    with pytest.raises(RecipeError, match=msg.replace(".", r"\.")) as e:
        recipe_from_dict(_rl_recipe(**rl))
    assert "\n" not in str(e.value)


def test_bad_phases_exit_2_one_line_nothing_written(tmp_path, capsys, monkeypatch):
    import yaml

    from compose_rl.cli import main

    monkeypatch.chdir(tmp_path)
    for phases in ([], [{"max_depth": 3, "steps": 1}, {"max_depth": 3, "steps": 1}]):
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump({**_rl_recipe(phases=phases), "output": str(tmp_path / "runs")}))
        for cmd in (["validate", str(path)], ["recipe", str(path)]):
            assert main(cmd) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "rl.phases" in err[0]
        assert not (tmp_path / "runs").exists()


def test_rl_problems_follow_the_phase_cap_on_train_pairs_only():
    task = StrCompTask(seed=0, n_functions=6, train_max_depth=2)
    probs = task.rl_problems(40, seed=1, max_depth=3)
    assert {p.depth for p in probs} <= {1, 2, 3} and sum(p.depth == 3 for p in probs) == 30
    for p in probs:  # deeper than stage 1's data, still only train pairs: held-out pairs stay unseen
        assert all(pair in task.train_pairs for pair in task.pairs_of(p.functions))
    # the default cap keeps the stream of runs made before rl.phases existed
    assert task.rl_problems(8, seed=1) == task.rl_problems(8, seed=1, max_depth=2)


def test_collector_logs_cap_and_signal_per_depth(tiny_policy):
    from compose_rl.rollout.collectors import StringTaskCollector
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.types import SamplingParams

    task = StrCompTask(seed=0, n_functions=4, train_max_depth=2)
    col = StringTaskCollector(task, tiny_policy.format_prompt, 4, 2, SamplingParams(temperature=1.0, max_new_tokens=4),
                              seed=0, max_depth_at=lambda step: 3)
    samples, metrics, _ = col.collect(HFEngine(tiny_policy.model, tiny_policy.tokenizer), 0)
    assert metrics["rollout/max_depth"] == 3 and max(s.info["depth"] for s in samples) == 3
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k.endswith("groups_with_signal"))


# ------------------------------------------------------------------------------ the positive control
class _PickTask:
    """A unit-scale stand-in for the string task: every prompt is 'depth 2', the answer is one token,
    and a sample is correct iff it is one of a few letters. The untrained tiny model hits them now and
    then (some groups carry signal), so a working learner must raise the rate within a few dozen steps."""

    letters = set("abcd")

    def rl_problems(self, n, seed, max_depth=None):
        return [Problem(functions=("f", "g"), input=str(i), answer="a", depth=2, prompt=f"q{(seed + i) % 5}:",
                        target="a", skill="depth2") for i in range(n)]

    def reward(self, problem, completion, truncated=False):
        return 1.0 if completion[:1] in self.letters else 0.0


def _control(tmp_path, tiny_policy, lr: float, steps: int = 30):
    from compose_rl.rl.learner import run_rl
    from compose_rl.rollout.collectors import StringTaskCollector
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.rundir import RunDir
    from compose_rl.types import SamplingParams

    torch.manual_seed(0)
    cfg = RlCfg(steps=steps, prompts_per_step=8, group_size=8, lr=1e-3, checkpoint_every=1000, samples_logged=0,
                log_grad_parts=True)
    cfg = cfg.model_copy(update={"lr": lr})  # lr 0 is below the schema's range on purpose: the broken learner
    engine = HFEngine(tiny_policy.model, tiny_policy.tokenizer)
    col = StringTaskCollector(_PickTask(), lambda p: p, 8, 8, SamplingParams(temperature=1.0, max_new_tokens=1), seed=0)
    run = RunDir.create(tmp_path, f"pc-{lr}", "")
    run_rl(tiny_policy, engine, col, cfg, run, "rl", seed=0, max_new_tokens=1)
    rows = [r for r in run.read_metrics() if r["stage"] == "rl"]
    for r in rows:  # the diagnostic is the policy term's own norm: the clipped total equals it without replay
        if r["loss/minibatches"]:
            assert r["loss/grad_norm_policy"] == pytest.approx(r["loss/grad_norm"], rel=1e-4)
    return [r["reward/depth2/mean"] for r in rows]


@pytest.mark.parametrize("lr, learns", [(1e-3, True), (0.0, False)])
def test_rl_raises_the_trained_depths_reward_and_lr_zero_does_not(tmp_path, tiny_policy, lr, learns):
    curve = _control(tmp_path, tiny_policy, lr)
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert 0.0 < first < 0.5  # the start has signal but is far from solved
    if learns:
        assert last > first + 0.4, curve
    else:
        assert abs(last - first) < 0.15, curve


def test_split_seed_fixes_the_held_out_set_while_the_seed_varies():
    from compose_rl.domains import training_domains

    def task_of(seed, split):
        r = recipe_from_dict({"name": "x", "stages": ["rl"], "seed": seed,
                              "task": {"n_functions": 6, "split_seed": split}})
        return training_domains(r)[0]

    a, b, c = task_of(0, None), task_of(5, 0), task_of(5, None)
    assert b.task.heldout_pairs == a.task.heldout_pairs and b.task.eval_problems(2, 20) == a.task.eval_problems(2, 20)
    assert c.task.heldout_pairs != a.task.heldout_pairs  # without it the seed moves the held-out set
    # the recipe seed still draws fresh stage-1 examples on the fixed split
    assert b.sft_pairs(20) != a.sft_pairs(20)


def _control_json(tmp_path, name, seeds, stage1="s1.pt", overrides=("rl.lr=5e-5",)):
    rows = [{"seed": s, "run": f"r{s}", "start": {"acc_d1": 0.9, "acc_d2": 0.7}, "end": {"acc_d1": 0.9, "acc_d2": 0.7 + 0.1 * s},
             "rl_s": 10.0, "wall_s": 12.0, "steps": 200, "signal_mean": 0.5} for s in seeds]
    d = tmp_path / name
    d.mkdir()
    (d / "control.json").write_text(json.dumps({"recipe": "r.yaml", "overrides": list(overrides), "stage1": stage1,
                                                "items": 400, "rows": rows,
                                                "floors": {"acc_d1": [0.0, "copy_input"], "acc_d2": [0.2, "rev"]}}))
    return d


def test_merge_one_setting_over_processes(tmp_path, capsys):
    from compose_rl.commands.positive_control import main

    a, b = _control_json(tmp_path, "a", [0]), _control_json(tmp_path, "b", [1, 2])
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m"), "--depths", "1", "2"]) == 0
    merged = json.loads((tmp_path / "m" / "control.json").read_text())
    assert [r["seed"] for r in merged["rows"]] == [0, 1, 2]
    table = (tmp_path / "m" / "control.md").read_text()
    assert "0.800 ± 0.248" in table  # mean of 0.7, 0.8, 0.9 and its t-interval (4.303 * 0.1 / sqrt 3)
    assert "+0.100 ± 0.248" in table
    one = json.loads((a / "control.json").read_text())
    from compose_rl.commands.positive_control import control_table
    assert "0.700 (1 seed)" in control_table(one, [1, 2]) and "±" not in control_table(one, [1, 2])
    # another setting or a repeated seed: exit 2, one line
    c = _control_json(tmp_path, "c", [3], overrides=("rl.lr=1e-4",))
    assert main(["merge", str(a), str(c), "--out", str(tmp_path / "x")]) == 2
    assert main(["merge", str(a), str(_control_json(tmp_path, "d", [0])), "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_start_from_reuses_only_the_same_stage1_and_items(tmp_path):
    from compose_rl.commands.positive_control import _reused_start

    d = _control_json(tmp_path, "a", [0])
    assert _reused_start(str(d / "control.json"), "s1.pt", 400, [1, 2]) == {"acc_d1": 0.9, "acc_d2": 0.7}
    for stage1, items, depths in [("other.pt", 400, [2]), ("s1.pt", 200, [2]), ("s1.pt", 400, [3])]:
        with pytest.raises(ValueError, match="--start-from"):
            _reused_start(str(d / "control.json"), stage1, items, depths)


# ------------------------------------------------------------------------------ gradcheck
def test_gradcheck_cosine_and_step_by_hand():
    from compose_rl.commands.positive_control import _set_along, cosine

    assert cosine(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert cosine(torch.tensor([1.0, 2.0]), torch.tensor([-2.0, 1.0])) == 0.0
    assert cosine(torch.zeros(2), torch.tensor([1.0, 1.0])) == 0.0
    lin = torch.nn.Linear(2, 1)
    params = list(lin.parameters())
    theta = [p.detach().clone() for p in params]
    direction = torch.tensor([1.0, -1.0, 2.0])  # weight (1x2) then bias, flat
    _set_along(params, theta, direction, 0.5)
    assert torch.allclose(lin.weight, theta[0] + torch.tensor([[0.5, -0.5]]))
    assert torch.allclose(lin.bias, theta[1] + 1.0)
    _set_along(params, theta, direction, 0.0)  # back to the start, bit for bit
    assert all(torch.equal(p, t) for p, t in zip(params, theta))


def test_gradcheck_without_signal_exits_2_one_line(tmp_path, capsys):
    # an untrained model answers nothing right: every group's rewards are equal, so no gradient to inspect
    from compose_rl.commands.positive_control import main

    rc = main(["gradcheck", "recipes/strcomp-positive-control.yaml", "--stage1", "init", "--prompts", "2",
               "--probe-items", "2", "--out", str(tmp_path / "g"), "rl.group_size=2", "rollout.max_new_tokens=8"])
    err = capsys.readouterr().err.strip().splitlines()  # the build's precision line comes first
    errors = [line for line in err if line.startswith("error:")]
    assert rc == 2 and errors == [err[-1]] and "no sample of 2 prompts × 2 carries signal" in err[-1]


# ------------------------------------------------------------------------------ the matched SFT arm, paired
def test_pair_is_a_minus_b_by_seed_by_hand(tmp_path, capsys):
    from compose_rl.commands.positive_control import main

    a = _control_json(tmp_path, "a", [0, 1, 2])  # end d2: 0.7, 0.8, 0.9
    b = _control_json(tmp_path, "b", [0, 1, 2])
    data = json.loads((b / "control.json").read_text())
    data["arm"] = "sft_only"
    for r in data["rows"]:
        r["end"]["acc_d2"] = 0.7
    (b / "control.json").write_text(json.dumps(data))
    assert main(["pair", str(a), str(b), "--out", str(tmp_path / "p"), "--depths", "1", "2"]) == 0
    table = (tmp_path / "p" / "pair.md").read_text()
    # differences 0, 0.1, 0.2 at d2: mean 0.1, t-interval 4.303 * 0.1 / sqrt 3 = 0.248; d1 equal everywhere
    assert "| A − B, paired by seed | +0.000 ± 0.000 | +0.100 ± 0.248 |" in table
    assert "after matched SFT" in table and "after RL" in table
    # other seeds, or a depth one side did not evaluate: exit 2, one line, nothing written
    c = _control_json(tmp_path, "c", [0, 1])
    assert main(["pair", str(a), str(c), "--out", str(tmp_path / "x")]) == 2
    assert main(["pair", str(a), str(b), "--out", str(tmp_path / "y"), "--depths", "3"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_sft_only_arm_trains_the_matched_steps_from_the_same_start(tmp_path):
    from compose_rl.commands.positive_control import main

    out = tmp_path / "o"
    rc = main(["rl", "recipes/strcomp-positive-control.yaml", "--stage1", "init", "--arm", "sft_only", "--seeds", "0",
               "--depths", "1", "--items", "2", "--out", str(out), "rl.steps=3", "rl.eval_every=0",
               "rollout.max_new_tokens=8", "rl.lr=1e-3"])
    assert rc == 0
    res = json.loads((out / "control.json").read_text())
    assert res["arm"] == "sft_only" and [r["arm"] for r in res["rows"]] == ["sft_only"]
    rows = [json.loads(x) for x in open(Path(res["rows"][0]["run"]) / "metrics.jsonl")]
    sft = [x for x in rows if x.get("stage") == "sft_only"]
    assert [x["step"] for x in sft] == [0, 1, 2] and not any(x.get("stage") == "rl" for x in rows)
    # supervised steps on the same problems lower the task loss (lr 1e-3 on a fresh tiny model)
    assert sft[-1]["sft/loss_task"] < sft[0]["sft/loss_task"]
    assert "after matched SFT" in (out / "control.md").read_text()


def test_train_accuracy_first_and_last_window_by_hand(tmp_path):
    from compose_rl.commands.positive_control import train_accuracy
    from compose_rl.rundir import RunDir

    run = RunDir.create(tmp_path, "t", "")
    for step in range(6):  # window 2: steps 0-1 -> (0.5 + 0.7) / 2, steps 4-5 -> (0.8 + 1.0) / 2
        run.log("rl", step, {"reward/depth2/correct": [0.5, 0.7, 0.0, 0.0, 0.8, 1.0][step]})
    run.log("eval-rl", 0, {"reward/depth2/correct": 9.0})  # other stages are not RL's samples
    first, last = train_accuracy(run.path, 2, window=2)
    assert first == pytest.approx(0.6) and last == pytest.approx(0.9)
    assert train_accuracy(run.path, 2, window=4) is None  # shorter than two windows
    assert train_accuracy(run.path, 3, window=2) is None and train_accuracy(tmp_path / "none", 2) is None
