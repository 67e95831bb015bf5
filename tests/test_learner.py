"""The learner's numerics and a few real steps on the tiny model."""
import pytest
import torch

from compose_rl.recipe import recipe_from_dict
from compose_rl.rl.learner import _unique_pairs, compute_advantages
from compose_rl.rl.logprobs import completion_logprobs
from compose_rl.rollout.hf import HFEngine
from compose_rl.types import Sample, SamplingParams


def test_completion_logprobs_match_a_slow_loop(tiny_policy):
    model, tok = tiny_policy.model, tiny_policy.tokenizer
    prompts = [tok("ab(", add_special_tokens=False)["input_ids"], tok("x", add_special_tokens=False)["input_ids"]]
    comps = [tok("cd", add_special_tokens=False)["input_ids"], tok("yz!", add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logp, mask = completion_logprobs(model, prompts, comps, pad=tok.pad_token_id)
        for i, (p, c) in enumerate(zip(prompts, comps)):
            ids = torch.tensor([p + c])
            lp = torch.log_softmax(model(ids).logits[0], -1)
            ref = [lp[len(p) - 1 + j, c[j]].item() for j in range(len(c))]
            assert torch.allclose(logp[i, : len(c)], torch.tensor(ref), atol=1e-5)
            assert mask[i].sum() == len(c)
            assert torch.all(logp[i, len(c):] == 0)


def test_engine_logprobs_match_learner(tiny_policy):
    engine = HFEngine(tiny_policy.model, tiny_policy.tokenizer)
    outs = engine.generate(["abc\n", "abc\n", "q\n"], SamplingParams(temperature=1.0, max_new_tokens=6, n=2, seed=3))
    assert [len(o) for o in outs] == [2, 2, 2]
    flat = [c for o in outs for c in o]
    with torch.no_grad():
        logp, _ = completion_logprobs(tiny_policy.model, [c.prompt_ids for c in flat], [c.token_ids for c in flat])
    eos = tiny_policy.tokenizer.eos_token_id
    for i, c in enumerate(flat):
        assert len(c.logprobs) == len(c.token_ids)
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1]
        else:
            assert c.finish_reason == "length" and len(c.token_ids) == 6 and eos not in c.token_ids
        assert torch.allclose(logp[i, : len(c.token_ids)], torch.tensor(c.logprobs), atol=1e-4)


def test_unique_pairs_share_forward():
    s = [Sample([1, 2], [3], [0.0], 1.0), Sample([1, 2], [3], [0.0], 0.0), Sample([1], [3], [0.0], 0.0)]
    prompts, comps, owner = _unique_pairs(s)
    assert prompts == [[1, 2], [1]] and comps == [[3], [3]] and owner.tolist() == [0, 0, 1]


def test_compute_advantages_dispatch():
    s = [Sample([1], [2], [0.0], r, group=g) for r, g in [(1, 0), (0, 0), (1, 1), (1, 1)]]
    compute_advantages(s, "group_unscaled", None)
    assert [x.advantage for x in s] == [0.5, -0.5, 0.0, 0.0]
    # rl.negative_weight scales only the negative advantages: group 0 of rewards (1, 0, 0, 0) has mean 0.25
    s = [Sample([1], [2], [0.0], r, group=0) for r in (1, 0, 0, 0)]
    compute_advantages(s, "group_unscaled", None, negative_weight=0.2)
    assert [x.advantage for x in s] == pytest.approx([0.75, -0.05, -0.05, -0.05])


def _strcomp_recipe(tmp_path, **rl):
    return recipe_from_dict({
        "name": "t", "output": str(tmp_path), "stages": ["sft", "rl"],
        "task": {"n_functions": 4, "test_depths": [1, 2]},
        "rollout": {"max_new_tokens": 12},
        "sft": {"examples": 64, "max_steps": 3, "batch_size": 16, "gate": "off", "gate_items": 1},
        "rl": {"steps": 3, "prompts_per_step": 4, "group_size": 4, "lr": 1e-2, "drop_uniform_groups": False,
               "drop_zero_advantage": False, "advantage": "batch_mean", "checkpoint_every": 2, **rl},
        "eval": {"items_per_depth": 2, "pass_k": 2, "pass_k_items": 1},
    })


def test_rl_steps_change_parameters_and_log_finite_loss(tmp_path):
    from compose_rl.pipeline import start_run

    pipe = start_run(_strcomp_recipe(tmp_path, kl_coef=0.1, replay_fraction=0.25, warmup_steps=2))
    pipe.build()
    before = {k: v.clone() for k, v in pipe.policy.model.state_dict().items()}
    pipe.stage_rl(1, "rl", None)
    after = pipe.policy.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [r for r in pipe.run.read_metrics() if r["stage"] == "rl"]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert [r["loss/lr"] for r in rows] == pytest.approx([5e-3, 1e-2, 1e-2])  # rl.warmup_steps 2: lr (s + 1) / 2
    for r in rows:
        assert torch.isfinite(torch.tensor(r["loss/policy"]))
        assert r["rollout/samples"] == 16
        # 4 groups of 4: the share of groups with mixed rewards is a multiple of 1/4
        assert r["rollout/groups_with_signal"] * 4 == pytest.approx(round(r["rollout/groups_with_signal"] * 4))
    ck = sorted(p.name for p in (pipe.run.path / "checkpoints").iterdir() if not p.name.startswith("."))
    assert "rl-000002" in ck and "rl-final" in ck


def test_sft_stage_lowers_loss_and_gate_reports(tmp_path):
    from compose_rl.pipeline import start_run

    r = _strcomp_recipe(tmp_path)
    r = r.model_copy(update={"sft": r.sft.model_copy(update={"max_steps": 8, "lr": 3e-3, "gate": "warn"})})
    pipe = start_run(r)
    pipe.build()
    before = {k: v.clone() for k, v in pipe.policy.model.state_dict().items()}
    pipe.stage_sft(0, "sft")
    rows = [x for x in pipe.run.read_metrics() if x["stage"] == "sft" and "sft/loss" in x]
    assert rows and rows[-1]["sft/loss"] < rows[0]["sft/loss"]
    assert any(not torch.equal(before[k], v) for k, v in pipe.policy.model.state_dict().items())
    gate = pipe.run.read_json("eval/sft-gate.json")
    assert set(gate["skills"]) == {f"func_{i}" for i in range(4)}
    assert gate["passed"] is all(v >= gate["threshold"] for v in gate["skills"].values())


def test_engine_greedy_equals_transformers_generate(tiny_policy):
    import torch

    model, tok = tiny_policy.model, tiny_policy.tokenizer
    prompts = ["func_1(\"abc\")\n", "Your card: K\n", "x"]
    engine = HFEngine(model, tok)
    outs = engine.generate(prompts + prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=8))
    for p, o in zip(prompts + prompts[:1], outs):
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        ref = model.generate(ids, do_sample=False, max_new_tokens=8, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in ref:
            ref = ref[: ref.index(tok.eos_token_id) + 1]
        assert o[0].token_ids == ref


def test_legal_action_entropy_matches_exact_action_probs(tiny_policy):
    """The learner's entropy bonus scores the same distribution the exploitability evaluation uses."""
    import math
    import random

    from compose_rl.evals.games import lm_action_probs
    from compose_rl.domains.games import random_states
    from compose_rl.rl.learner import legal_action_entropy
    from games import get_game

    game = get_game("kuhn_poker")
    state, player = random_states(game, random.Random(1))[0]
    tok = tiny_policy.tokenizer
    prompt = tiny_policy.format_prompt(game.prompt(state, player))
    legal = [game.answer_text(state, a) for a in state.legal_actions()]
    s = Sample(tok(prompt, add_special_tokens=False)["input_ids"], [1], [0.0], 0.0, info={"legal_answers": legal})
    with torch.no_grad():
        h = float(legal_action_entropy(tiny_policy.model, tok, [s, s], pad=tok.pad_token_id))
        probs = lm_action_probs(tiny_policy, game, [(state, player)])[0]
    ref = -sum(p * math.log(p) for p in probs.values() if p > 0)
    assert abs(h - ref) < 1e-4
    assert legal_action_entropy(tiny_policy.model, tok, [Sample([1], [2], [0.0], 0.0)], pad=0) is None


# ------------------------------------------------------------------ run_rl on fixed batches
class StubEngine:
    """The Engine members run_rl uses; the collector below does not generate."""

    def __init__(self):
        self.policy_version = 0

    def load_weights(self, state, version):
        self.policy_version = version


class FixedCollector:
    """Returns the same scored (prompt, completion) pairs every step (rewards[step] if a list of lists)."""

    def __init__(self, tok, pairs, rewards):
        self.tok, self.pairs, self.rewards = tok, pairs, rewards

    def collect(self, engine, step):
        enc = lambda t: self.tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
        rewards = self.rewards[step] if isinstance(self.rewards[0], list) else self.rewards
        samples = [Sample(enc(p), enc(c), [0.0] * len(enc(c)), r, group=0, policy_version=engine.policy_version)
                   for (p, c), r in zip(self.pairs, rewards)]
        return samples, {}, []


PAIRS = [("ab(", "cd"), ("x", "yz!"), ("func_1(", "abc"), ("K", "bet"), ("Q", "pass")]


def _rl_cfg(**kw):
    from compose_rl.recipe import RlCfg

    base = dict(steps=1, advantage="batch_mean", drop_zero_advantage=False, drop_uniform_groups=False,
                checkpoint_every=100, samples_logged=0)
    return RlCfg(**{**base, **kw})


def _run(tmp_path, policy, collector, cfg, **kw):
    from compose_rl.rl.learner import run_rl
    from compose_rl.rundir import RunDir

    run = RunDir.create(tmp_path, "t", "")
    last = run_rl(policy, StubEngine(), collector, cfg, run, "rl", seed=0, max_new_tokens=8, **kw)
    return run, last


def test_ppo_epochs_and_minibatches_step_per_minibatch_with_fixed_old_logprobs(tmp_path, tiny_policy, monkeypatch):
    """3 epochs x 5 samples in minibatches of 2: 9 Adam steps, each on its own minibatch mean; pi_old is
    the policy before the first step for every epoch; the ratio leaves [0.8, 1.2] so clipping engages."""
    import math

    import compose_rl.rl.learner as learner

    tok = tiny_policy.tokenizer
    collector = FixedCollector(tok, PAIRS, [1.0, 0.0, 2.0, -1.0, 3.0])  # batch mean 1: A = 0, -1, 1, -2, 2
    samples, _, _ = collector.collect(StubEngine(), 0)
    with torch.no_grad():
        start, _ = completion_logprobs(tiny_policy.model, [s.prompt_ids for s in samples],
                                       [s.completion_ids for s in samples], pad=tok.pad_token_id)
    start_by_adv = {a: start[i, : len(samples[i].completion_ids)] for i, a in enumerate([0.0, -1.0, 1.0, -2.0, 2.0])}
    calls = []
    real = learner.ppo_clip_loss

    def spy(logp, old, adv, mask, **kw):
        loss, frac = real(logp, old, adv, mask, **kw)
        calls.append((logp.detach().clone(), old.clone(), adv.tolist(), float(loss.detach()), float(frac)))
        return loss, frac

    monkeypatch.setattr(learner, "ppo_clip_loss", spy)
    run, last = _run(tmp_path, tiny_policy, collector, _rl_cfg(ppo_epochs=3, minibatch=2, lr=0.05))
    assert len(calls) == 3 * math.ceil(5 / 2) and last["loss/minibatches"] == 9
    assert [len(c[2]) for c in calls] == [2, 2, 1] * 3  # the last minibatch is partial, and not scaled down
    for logp, old, advs, _, _ in calls:
        for row, a in enumerate(advs):
            n = len(start_by_adv[a])
            assert torch.allclose(old[row, :n], start_by_adv[a], atol=1e-5)  # pi_old fixed for all epochs
    assert calls[0][4] == 0.0  # first step: pi_theta = pi_old, nothing clipped
    assert max(c[4] for c in calls[3:]) > 0.0  # later epochs: the ratio left the clip range
    assert (calls[-1][0] - calls[-1][1]).abs().max() > 0.2
    # logged: means over the 9 minibatches, the policy-gradient term only
    assert last["loss/policy"] == pytest.approx(sum(c[3] for c in calls) / 9)
    assert last["loss/clip_frac"] == pytest.approx(sum(c[4] for c in calls) / 9)
    tensors, meta = run.latest_checkpoint()
    assert all(st["step"] == 9 for st in tensors["optimizer"]["state"].values())  # one Adam step per minibatch


def test_learner_scores_the_sampled_distribution(tmp_path, tiny_policy, monkeypatch):
    """Every policy/reference/old log-prob in the loss is taken at the rollout temperature; the
    legal-action entropy and replay stay at 1. Temperature 0 is refused."""
    import compose_rl.rl.learner as learner
    from compose_rl.rl.logprobs import completion_logprobs as real

    temps = []

    def spy(*a, **kw):
        temps.append(kw.get("temperature", 1.0))
        return real(*a, **kw)

    monkeypatch.setattr(learner, "completion_logprobs", spy)
    collector = FixedCollector(tiny_policy.tokenizer, PAIRS, [1.0, 0.0, 2.0, -1.0, 3.0])
    _run(tmp_path, tiny_policy, collector, _rl_cfg(ppo_epochs=2, minibatch=8, kl_coef=0.1), temperature=0.7)
    # old log-probs once, then per epoch: policy + reference
    assert temps == [0.7] * 5
    with pytest.raises(ValueError, match="temperature"):
        _run(tmp_path, tiny_policy, collector, _rl_cfg(), temperature=0.0)


def test_recipe_rejects_greedy_or_top_p_rl():
    from compose_rl.recipe import RecipeError

    base = {"name": "t", "stages": ["sft", "rl"], "task": {}}
    for rollout, field in (({"temperature": 0.0}, "rollout.temperature"), ({"top_p": 0.9}, "rollout.top_p")):
        with pytest.raises(RecipeError) as err:
            recipe_from_dict({**base, "rollout": rollout})
        assert field in str(err.value) and "\n" not in str(err.value)
    # without an RL stage greedy / nucleus rollouts are fine (evaluation only)
    assert recipe_from_dict({**base, "stages": ["eval"], "rollout": {"temperature": 0.0, "top_p": 0.9}})
    assert recipe_from_dict({**base, "rollout": {"temperature": 0.7}}).rollout.temperature == 0.7


def test_nan_reward_stops_before_the_step_and_resume_works(tmp_path, tiny_policy):
    """Issue 12: a NaN reward at step 2 raises NonFiniteError naming stage, step and the last good
    checkpoint; the parameters are those of that checkpoint; resuming from it finishes the run."""
    from compose_rl.rl.learner import NonFiniteError, run_rl
    from compose_rl.rundir import RunDir

    good = [1.0, 0.0, 2.0, -1.0, 3.0]
    rewards = [good, [0.5, 1.0, 0.0, 0.0, 2.0], [1.0, float("nan"), 0.0, 0.0, 1.0], good]
    run = RunDir.create(tmp_path, "t", "")
    cfg = _rl_cfg(steps=4, checkpoint_every=1, lr=1e-2)
    with pytest.raises(NonFiniteError) as err:
        run_rl(tiny_policy, StubEngine(), FixedCollector(tiny_policy.tokenizer, PAIRS, rewards), cfg, run, "rl",
               seed=0, max_new_tokens=8)
    msg = str(err.value)
    assert "\n" not in msg and "'rl'" in msg and "step 2" in msg and "reward" in msg and "nan" in msg
    assert str(run.path / "checkpoints" / "rl-000001") in msg and f"--resume {run.path}" in msg
    tensors, meta = run.latest_checkpoint()
    assert meta["step"] == 1
    now = tiny_policy.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in tensors["model"].items())  # step 2 changed nothing
    assert [r["step"] for r in run.read_metrics()] == [0, 1]
    # resume (here with a collector whose step-2 reward is fixed) runs steps 2 and 3
    rewards[2] = good
    run_rl(tiny_policy, StubEngine(), FixedCollector(tiny_policy.tokenizer, PAIRS, rewards), cfg, run, "rl",
           seed=0, max_new_tokens=8, resume=run.latest_checkpoint())
    assert [r["step"] for r in run.read_metrics()] == [0, 1, 2, 3]
    assert run.latest_checkpoint()[1]["step"] == 3


def test_non_finite_loss_stops_before_the_step(tmp_path, tiny_policy, monkeypatch):
    import compose_rl.rl.learner as learner

    before = {k: v.clone() for k, v in tiny_policy.model.state_dict().items()}
    real = learner.ppo_clip_loss
    monkeypatch.setattr(learner, "ppo_clip_loss", lambda *a, **kw: (real(*a, **kw)[0] * float("inf"), torch.tensor(0.0)))
    with pytest.raises(learner.NonFiniteError) as err:
        _run(tmp_path, tiny_policy, FixedCollector(tiny_policy.tokenizer, PAIRS, [1.0, 0.0, 2.0, -1.0, 3.0]), _rl_cfg())
    assert "step 0" in str(err.value) and "loss" in str(err.value) and "no checkpoint was written yet" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in tiny_policy.model.state_dict().items())


def test_cli_prints_the_non_finite_error_in_one_line(tmp_path, monkeypatch, capsys):
    import os

    from compose_rl import cli, pipeline
    from compose_rl.rl.learner import NonFiniteError

    def boom(self, resume=False):
        raise NonFiniteError("rl stage 'rl', step 7: non-finite reward (nan); stopped before the optimizer step; ...")

    monkeypatch.setattr(pipeline.Pipeline, "build", lambda self: None)
    monkeypatch.setattr(pipeline.Pipeline, "run_all", boom)
    recipe = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes", "strcomp-two-stage.yaml")
    assert cli.main(["recipe", recipe, f"output={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("compose-rl: error: rl stage 'rl', step 7: non-finite reward")
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("on", [False, True])
def test_sft_leaves_the_recipes_gradient_checkpointing_state(tmp_path, tiny_policy, on):
    """TRL's SFTConfig defaults to checkpointing on; run_sft must leave the model as the recipe says."""
    from compose_rl.recipe import SftCfg
    from compose_rl.rundir import RunDir
    from compose_rl.sft.stage import run_sft

    cfg = SftCfg(examples=8, max_steps=2, batch_size=4, gate="off")
    pairs = [("func_1(\"ab\")", "ba"), ("func_2(\"xy\")", "yx")] * 4
    run_sft(tiny_policy, pairs, cfg, RunDir.create(tmp_path, "t", ""), "sft", seed=0, **({"gradient_checkpointing": True} if on else {}))
    assert tiny_policy.model.is_gradient_checkpointing is on


def test_rl_stage_sets_gradient_checkpointing_before_the_loop(tmp_path, monkeypatch):
    import compose_rl.rl.learner as learner
    from compose_rl.pipeline import start_run

    seen = []
    monkeypatch.setattr(learner, "run_rl", lambda policy, *a, **kw: seen.append(policy.model.is_gradient_checkpointing) or {})
    for on in (False, True):
        r = _strcomp_recipe(tmp_path)
        r = r.model_copy(update={"model": r.model.model_copy(update={"gradient_checkpointing": on})})
        pipe = start_run(r)
        pipe.build()
        pipe.policy.set_gradient_checkpointing(not on)  # what a previous stage might have left
        pipe.stage_rl(1, "rl", None)
    assert seen == [False, True]


def test_step_without_signal_trains_nothing(tmp_path, tiny_policy):
    """All rewards equal: batch-mean advantages are 0 and dropped, no gradient step, nothing changes."""
    before = {k: v.clone() for k, v in tiny_policy.model.state_dict().items()}
    _, last = _run(tmp_path, tiny_policy, FixedCollector(tiny_policy.tokenizer, PAIRS, [1.0] * 5),
                   _rl_cfg(drop_zero_advantage=True))
    assert last["rollout/samples"] == 5 and last["rollout/samples_trained"] == 0
    assert last["rollout/groups_with_signal"] == 0.0 and last["loss/minibatches"] == 0 and last["loss/policy"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in tiny_policy.model.state_dict().items())
    _, last = _run(tmp_path, tiny_policy, FixedCollector(tiny_policy.tokenizer, PAIRS, [1.0, 1.0, 0.0, 1.0, 1.0]),
                   _rl_cfg(drop_zero_advantage=True))
    assert last["rollout/groups_with_signal"] == 1.0 and last["rollout/samples_trained"] == 5
