"""The experimental latent-loop policy (Gap C): with 0 steps it is the plain model; its sampled
log-probs are the ones the trainer recomputes; gradient reaches every loop step; truncated BPTT
changes gradients, not values; RL through the loop learns from a sparse reward; checkpoints hold
the bridge."""
from __future__ import annotations

import glob
import json
import os

import pytest
import torch

from compose_rl.cli import main
from compose_rl.experimental.latent_loop import LatentLoop, LatentLoopEngine
from compose_rl.experimental.trainer import run_latent_rl
from compose_rl.models import load_policy
from compose_rl.recipe import recipe_from_dict
from compose_rl.rl.logprobs import completion_logprobs
from compose_rl.rollout.hf import HFEngine
from compose_rl.types import Sample, SamplingParams

from .conftest import ROOT

PROMPTS = ["abc", "hello world", "x", "func_3('qq') ="]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


@pytest.fixture
def policy():
    torch.manual_seed(0)
    return load_policy("tiny", seed=0)


def ids(policy, prompts):
    return [policy.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def test_zero_steps_is_the_plain_model(policy):
    loop = LatentLoop(policy.model, steps=0)
    answers = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    logp, mask, latents = loop.answer_logprobs(ids(policy, PROMPTS), answers, pad=0)
    ref, ref_mask = completion_logprobs(policy.model, ids(policy, PROMPTS), answers, pad=0)
    assert latents == [] and torch.equal(mask, ref_mask)
    assert (logp - ref).abs().max() < 1e-5
    got = LatentLoopEngine(loop, policy.tokenizer).generate(PROMPTS, GREEDY)
    expect = HFEngine(policy.model, policy.tokenizer).generate(PROMPTS, GREEDY)
    assert [c[0].token_ids for c in got] == [c[0].token_ids for c in expect]


def test_sampled_logprobs_match_the_trainers(policy):
    loop = LatentLoop(policy.model, steps=3)
    out = LatentLoopEngine(loop, policy.tokenizer).generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=8, n=2, seed=3))
    assert [len(c) for c in out] == [2] * len(PROMPTS)
    comps = [c for cs in out for c in cs]
    logp, mask, _ = loop.answer_logprobs([c.prompt_ids for c in comps], [c.token_ids for c in comps], pad=0)
    for i, c in enumerate(comps):
        assert len(c.token_ids) == int(mask[i].sum())
        assert max(abs(a - b) for a, b in zip(logp[i, : len(c.token_ids)].tolist(), c.logprobs)) < 1e-4
    # the loop changes the answer distribution (it is not a no-op)
    plain, _ = completion_logprobs(policy.model, [c.prompt_ids for c in comps], [c.token_ids for c in comps], pad=0)
    assert (plain - logp).abs().max() > 1e-3


def test_gradient_reaches_every_loop_step_and_truncation_cuts_the_recurrent_path(policy):
    answers = [[5, 6, 7], [8], [9, 10], [11, 12]]
    full = LatentLoop(policy.model, steps=4)
    cut = LatentLoop(policy.model, steps=4, backprop_steps=1)
    cut.bridge.load_state_dict(full.bridge.state_dict())
    grads = {}
    for name, loop in (("full", full), ("cut", cut)):
        logp, mask, latents = loop.answer_logprobs(ids(policy, PROMPTS), answers, pad=0)
        for e in latents:
            e.retain_grad()
        grads[name + "_value"] = logp.detach()
        (-logp.sum()).backward()
        grads[name] = [e.grad.norm().item() for e in latents]
        policy.model.zero_grad()
    assert torch.equal(grads["full_value"], grads["cut_value"])  # truncation changes gradients, not values
    assert all(g > 0 for g in grads["full"]) and all(g > 0 for g in grads["cut"])
    # the last step's input gets the same gradient; earlier ones lose their recurrent-path share
    assert grads["full"][3] == pytest.approx(grads["cut"][3], rel=1e-5)
    assert grads["full"][0] != pytest.approx(grads["cut"][0], rel=1e-3)


class FirstCharCollector:
    """A one-token bandit: reward 1 if the answer starts with 'a', else 0 (a sparse outcome reward)."""

    def __init__(self, tokenizer, n_prompts=4, group=8):
        self.tok, self.n, self.group = tokenizer, n_prompts, group

    def collect(self, engine, step):
        prompts = [f"q{i}:" for i in range(self.n)]
        outs = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=2, n=self.group, seed=step))
        samples = []
        for g, comps in enumerate(outs):
            for c in comps:
                samples.append(Sample(prompt_ids=c.prompt_ids, completion_ids=c.token_ids, old_logprobs=c.logprobs,
                                      reward=float(c.text.startswith("a")), group=g, policy_version=c.policy_version))
        return samples, {}, []


def test_rl_through_the_loop_learns_a_sparse_reward(policy, tmp_path):
    from compose_rl.recipe import RlCfg
    from compose_rl.rundir import RunDir

    torch.manual_seed(0)
    loop = LatentLoop(policy.model, steps=3)
    engine = LatentLoopEngine(loop, policy.tokenizer)
    run = RunDir.create(str(tmp_path), "latent", "{}")
    cfg = RlCfg(steps=40, lr=3e-3, checkpoint_every=100, samples_logged=0)
    run_latent_rl(loop, policy, engine, FirstCharCollector(policy.tokenizer), cfg, run, "rl")
    rows = [r for r in run.read_metrics() if r["stage"] == "rl"]
    first, last = rows[0]["reward/mean"], sum(r["reward/mean"] for r in rows[-5:]) / 5
    assert first < 0.2 and last > 0.6, (first, last)
    trained = [r for r in rows if r["rollout/samples_trained"]]
    assert all(r[f"latent/credit_step{k}"] > 0 for r in trained for k in range(3))
    assert engine.policy_version == 40


def test_latent_recipe_checks():
    base = {"name": "x", "stages": ["rl"], "task": {}, "latent": {"steps": 2}}
    with pytest.raises(ValueError, match="rollout.engine: hf, rollout.workers: 0"):
        recipe_from_dict({**base, "rollout": {"workers": 2}})
    with pytest.raises(ValueError, match="latent.backprop_steps: at most latent.steps"):
        recipe_from_dict({**base, "latent": {"steps": 2, "backprop_steps": 3}})
    with pytest.raises(ValueError, match="rl.kl_coef: not supported by the latent-loop trainer"):
        recipe_from_dict({**base, "rl": {"kl_coef": 0.1}})
    with pytest.raises(ValueError, match="string task only"):
        recipe_from_dict({"name": "x", "stages": ["rl"], "games": {"train": [{"name": "kuhn_poker"}]},
                          "latent": {"steps": 2}})


def test_latent_checkpoint_holds_the_bridge(tmp_path):
    """A smoke run, then `compose-rl eval RUN` loads its checkpoint (model + bridge, strict)."""
    out = tmp_path / "runs"
    path = os.path.join(ROOT, "recipes", "latent-loop-strcomp.yaml")
    assert main(["recipe", path, "--smoke", f"output={out}", "stages=[sft,rl]"]) == 0
    run = glob.glob(str(out / "*"))[0]
    rows = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    assert any("latent/credit_step3" in r for r in rows if r["stage"] == "rl")
    assert main(["eval", run]) == 0
    assert os.path.exists(os.path.join(run, "rl_latent_credit.png"))


def test_curriculum_steps():
    from compose_rl.experimental.trainer import curriculum_steps

    # 100 SFT steps, 4 loop steps, ramp over the first 50: floor(4 * step / 50)
    assert [curriculum_steps(s, 100, 4, 0.5) for s in (0, 12, 13, 25, 37, 38, 49, 50, 99)] == [0, 0, 1, 2, 2, 3, 3, 4, 4]
    assert {curriculum_steps(s, 100, 4, 0.0) for s in range(100)} == {4}  # no curriculum
    assert curriculum_steps(0, 10, 0, 0.5) == 0


def test_latent_sft_ramps_the_loop_and_ends_with_all_steps(policy, tmp_path):
    from compose_rl.experimental.trainer import latent_sft
    from compose_rl.recipe import SftCfg
    from compose_rl.rundir import RunDir

    loop = LatentLoop(policy.model, steps=2)
    run = RunDir.create(str(tmp_path), "sft", "{}")
    pairs = [(f"q{i}:", "ab"[i % 2]) for i in range(40)]
    out = latent_sft(loop, policy, pairs, SftCfg(examples=40, batch_size=4, max_steps=20), run, "sft", 0,
                     warmup_fraction=0.5)
    assert out["sft/steps"] == 20 and loop.active_steps == 2
    logged = [r["latent/active_steps"] for r in run.read_metrics() if r["stage"] == "sft"]
    assert logged == [1, 2]  # logged at steps 9 and 19: floor(2 * 9 / 10) = 1, then all 2


# ---- one replay implementation (issue 8 item 4) and the per-sample credit probe (item 9)
REPLAY_PROMPTS = ["func_1('abc') =", "func_3('xy') =", "q:"]
REPLAY_TARGETS = [" cab", " yx", " a"]


def replay_pairs(policy):
    tok = policy.tokenizer
    return [(tok(p, add_special_tokens=False)["input_ids"], tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            for p, t in zip(REPLAY_PROMPTS, REPLAY_TARGETS)]


def test_replay_term_is_the_learners(policy):
    from compose_rl.experimental.trainer import replay_loss
    from compose_rl.rl.learner import _replay_loss

    pairs = replay_pairs(policy)
    ours = replay_loss(LatentLoop(policy.model, steps=0), pairs, pad=0).item()
    theirs = _replay_loss(policy.model, pairs, pad=0).item()
    assert ours == pytest.approx(theirs, rel=1e-5)
    # and it is the token-mean NLL: -log p summed over the (4 + 1) + (3 + 1) + (2 + 1) target tokens (EOS included) / 12
    logp, mask = completion_logprobs(policy.model, [p for p, _ in pairs], [t for _, t in pairs], pad=0)
    assert int(mask.sum()) == 12
    assert ours == pytest.approx(-logp.sum().item() / 12, rel=1e-5)


class FixedCollector:
    """The same hand-written samples every step: group 0 mixed, group 1 uniform (no signal), group 2 mixed;
    `signal=False` makes every group uniform."""

    def __init__(self, policy, signal=True):
        self.prompts = ids(policy, ["func_3('qq') =", "abc", "x"])
        self.rewards = [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0]] if signal else [[1.0, 1.0], [0.0, 0.0]]

    def collect(self, engine, step):
        samples = [Sample(prompt_ids=list(self.prompts[g]), completion_ids=[5 + g, 6 + j, 2], old_logprobs=[0.0] * 3,
                          reward=r, group=g) for g, rs in enumerate(self.rewards) for j, r in enumerate(rs)]
        return samples, {}, []


class NoEngine:
    policy_version = 0

    def load_weights(self, state, version):
        self.policy_version = version


@pytest.mark.parametrize("signal", [True, False])
def test_latent_rl_step_equals_the_learners_with_replay(policy, tmp_path, monkeypatch, signal):
    """At 0 loop steps the latent trainer is the plain policy, so one step of it must move the weights
    exactly as one step of the main learner on the same samples and the same replay pairs: same replay
    weight (1), and on a step without signal both still step on the replay term. SGD at lr 1 and no
    clipping make the weight change the negative gradient itself."""
    import copy

    from compose_rl.recipe import RlCfg
    from compose_rl.rl.learner import LearnerHooks, _replay_loss, compute_advantages, run_rl
    from compose_rl.rl.losses import reinforce_loss
    from compose_rl.rundir import RunDir

    monkeypatch.setattr(torch.optim, "Adam", lambda params, lr: torch.optim.SGD(params, lr=1.0))
    cfg = RlCfg(steps=1, checkpoint_every=100, samples_logged=0, max_grad_norm=1e6)
    pairs = replay_pairs(policy)
    start = copy.deepcopy(policy.model.state_dict())

    plain = copy.copy(policy)  # the main learner trains its own copy of the same weights
    plain.model = copy.deepcopy(policy.model)
    runs = [RunDir.create(str(tmp_path), name, "{}") for name in ("learner", "latent")]
    run_rl(plain, NoEngine(), FixedCollector(policy, signal), cfg, runs[0], "rl", 0, 8, hooks=LearnerHooks(replay=lambda step: pairs))
    loop = LatentLoop(policy.model, steps=0)
    run_latent_rl(loop, policy, NoEngine(), FixedCollector(policy, signal), cfg, runs[1], "rl", replay=lambda step: pairs)
    logged = [r.read_metrics()[-1] for r in runs]
    # (not loss/policy: PPO at ratio 1 and REINFORCE share the gradient, not the value)
    for key in ("loss/replay", "loss/minibatches", "rollout/samples_trained"):
        assert logged[1][key] == pytest.approx(logged[0][key], abs=1e-5), key

    # the expected step, by hand: -grad(REINFORCE on the mixed groups + 1 * replay NLL)
    ref = copy.deepcopy(policy.model)
    ref.load_state_dict(start)
    samples, _, _ = FixedCollector(policy, signal).collect(None, 0)
    compute_advantages(samples, "group", None)
    trained = [s for s in samples if s.advantage != 0.0]
    assert len(trained) == (6 if signal else 0)
    loss = _replay_loss(ref, pairs, 0)
    if trained:
        logp, mask = completion_logprobs(ref, [s.prompt_ids for s in trained], [s.completion_ids for s in trained], pad=0)
        loss = loss + reinforce_loss(logp, torch.tensor([s.advantage for s in trained]), mask, "token_mean")
    grads = dict(zip([n for n, _ in ref.named_parameters()], torch.autograd.grad(loss, list(ref.parameters()))))
    moved = 0.0
    for name, p in policy.model.named_parameters():
        step_latent = p.detach() - start[name]
        step_learner = dict(plain.model.named_parameters())[name].detach() - start[name]
        assert torch.allclose(step_latent, step_learner, atol=2e-5), name
        assert torch.allclose(step_latent, -grads[name], atol=2e-5), name
        moved += float(step_latent.abs().sum())
    assert moved > 1e-3  # the step did happen, also without signal (replay alone)


def _credit_old(loop, prompts, answers, adv):
    """The former probe: gradient of the batch-mean (token-mean) loss at each latent, row norms averaged."""
    from compose_rl.rl.losses import reinforce_loss

    logp, mask, latents = loop.answer_logprobs(prompts, answers, 0)
    grads = torch.autograd.grad(reinforce_loss(logp, adv, mask, "token_mean"), latents)
    return torch.stack([g.norm(dim=-1).mean() for g in grads])


def test_credit_probe_is_per_sample(policy):
    from compose_rl.experimental.trainer import latent_credit

    loop = LatentLoop(policy.model, steps=3)
    prompts, answers = ids(policy, PROMPTS), [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0])

    def probe(p, a, w):
        logp, mask, latents = loop.answer_logprobs(p, a, 0)
        return latent_credit(latents, logp, mask, w)

    once = probe(prompts, answers, adv)
    twice = probe(prompts * 2, answers * 2, torch.cat([adv, adv]))
    assert once.shape == (4, 3) and bool((once > 0).all())
    assert torch.allclose(once.mean(0), twice.mean(0), rtol=1e-5)  # duplicating every sample: unchanged
    old_once, old_twice = _credit_old(loop, prompts, answers, adv), _credit_old(loop, prompts * 2, answers * 2, torch.cat([adv, adv]))
    assert torch.allclose(old_twice, old_once / 2, rtol=1e-4)  # ... where the batch-mean probe halves

    # row i is the gradient of sample i's own loss -A_i * mean_t log p, computed alone (rows do not interact)
    for i in (0, 3):
        logp, mask, latents = loop.answer_logprobs(prompts[i:i + 1], answers[i:i + 1], 0)
        own = -adv[i] * logp.sum() / len(answers[i])
        alone = torch.stack([g.norm() for g in torch.autograd.grad(own, latents)])
        assert torch.allclose(once[i], alone, rtol=1e-4), i
    # SFT weights every sample 1: the advantage scales the RL probe linearly
    assert torch.allclose(probe(prompts, answers, None)[2], once[2] / 2.0, rtol=1e-5)
    assert latent_credit([], torch.zeros(2, 3), torch.ones(2, 3)).shape == (2, 0)  # no loop: no probe


def _fake_run(root, name, resolved, rl_d2, sft_d2):
    """A finished run directory written by hand: evals after SFT and RL, 12 RL steps with rewards 0..11 / 100."""
    import yaml

    def acc(d2):
        return {"eval/strcomp/acc_d1": 0.9, "eval/strcomp/acc_d2": d2, "eval/strcomp/acc_d3": 0.0,
                "eval/strcomp/floor_d1": 0.0, "eval/strcomp/floor_d2": 0.11, "eval/strcomp/floor_d3": 0.13}

    rows = [{"stage": "eval-base", "step": 0, **acc(0.0)},
            {"stage": "sft", "step": 9, "latent/credit_step0": 9.0, "latent/credit_step1": 0.0},  # mid-curriculum
            {"stage": "sft", "step": 19, "latent/credit_step0": 6.0, "latent/credit_step1": 2.0},
            {"stage": "sft", "step": 20, "sft/steps": 20, "gate/passed": 1.0},  # the stage's summary row
            {"stage": "eval-sft", "step": 0, **acc(sft_d2)}]
    for t in range(12):  # step 0 trained nothing (no signal): it does not enter the RL credit mean
        rows.append({"stage": "rl", "step": t, "reward/mean": t / 100, "rollout/samples_trained": 0 if t == 0 else 8,
                     "latent/credit_step0": 0.0 if t == 0 else 1.0 + t, "latent/credit_step1": 0.0 if t == 0 else 2.0})
    rows.append({"stage": "eval-rl", "step": 0, **acc(rl_d2)})
    d = root / name
    d.mkdir()
    (d / "recipe.resolved.yaml").write_text(yaml.safe_dump(resolved))
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d


def test_latent_study_summary(tmp_path, capsys):
    from compose_rl.experimental.latent_study import condition, main, summarize_run

    loop = {"seed": 0, "latent": {"steps": 2}, "task": {"cot": "none"}}
    runs = [_fake_run(tmp_path, f"loop-s{s}", {**loop, "seed": s}, rl_d2, sft_d2)
            for s, rl_d2, sft_d2 in ((0, 0.1, 0.1), (1, 0.2, 0.1), (2, 0.3, 0.1))]
    s = summarize_run(runs[0])
    assert s["condition"] == "loop 2" and (s["sft_d2"], s["rl_d2"], s["floor_d3"]) == (0.1, 0.1, 0.13)
    assert s["rl_reward_last10"] == pytest.approx(sum(range(2, 12)) / 10 / 100)  # steps 2..11
    # SFT end = the last logged window; RL = mean over steps 1..11: step0 (2+...+12)/11 = 7, step1 2
    assert (s["credit_sft_ratio"], s["credit_rl_first"], s["credit_rl_ratio"]) == pytest.approx((3.0, 7.0, 3.5))
    assert condition({"latent": {"steps": 0}}) == "no loop"
    assert condition({"latent": None, "task": {"cot": "steps"}}) == "token CoT"

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "recipe.resolved.yaml").write_text("seed: 3\nlatent: {steps: 2}\n")
    (unfinished / "metrics.jsonl").write_text(json.dumps({"stage": "sft", "step": 0}) + "\n")
    assert summarize_run(unfinished) is None
    assert main([str(r) for r in runs] + [str(unfinished)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| loop 2 | 0, 1, 2 |"))
    # d2 after RL 0.1 / 0.2 / 0.3: mean 0.2, sd 0.1, 95% t (2 dof) 4.303 * 0.1 / sqrt(3) = 0.248;
    # paired RL - SFT 0 / 0.1 / 0.2: 0.1 +- 0.248
    assert "| 0.200 ± 0.248 | 0.100 ± 0.248 |" in row
    assert "| 3.00 → 3.50 |" in row and "| 0.000 / 0.110 / 0.130 |" in row
    assert "not finished (no after-RL eval yet): " + str(unfinished) in out
    assert main([str(tmp_path / "nope")]) == 2
