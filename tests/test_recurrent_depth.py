"""The recurrent-depth policy (experimental/recurrent_depth.py, issue 11): degenerate configs are the plain
model; KV-cached generation equals full recompute; truncated backprop reaches exactly the last k
iterations; per-loop credit with all weight on the last iteration is `final`; the per-rollout dropout
mask is the same at every iteration and differs between rollouts; the halting head's target is
correctness; the learner's hook gives the plain learner's update where the two models agree; recipes."""
from __future__ import annotations

import glob
import json
import math
import os
import random

import pytest
import torch

from compose_rl.cli import main
from compose_rl.experimental.recurrent_depth import (LoopedEngine, LoopedLM, LoopSpec, flops_per_answer,
                                                     flops_per_token, loop_logprobs, loop_weights,
                                                     participation_ratio, position_table, readout_scores,
                                                     sample_depth, sequence_logprobs)
from compose_rl.experimental.recurrent_train import sft_loss
from compose_rl.models import TinySpec, load_policy
from compose_rl.recipe import recipe_from_dict
from compose_rl.rl.logprobs import completion_logprobs
from compose_rl.rollout.hf import HFEngine, pad_left
from compose_rl.types import Sample, SamplingParams

from .conftest import ROOT

PROMPTS = ["abc", "hello world", "x", "func_3('qq') ="]
ANSWERS = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=10)


@pytest.fixture
def policy():
    return load_policy("tiny", seed=0, tiny=TinySpec(num_layers=4))


def ids(policy, prompts=PROMPTS):
    return [policy.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def looped(policy, depth=3, trained=True, **kw) -> LoopedLM:
    """A LoopedLM; `trained` gives the adapter's state half random weights (as after training), so the loop
    is not the identity it starts as."""
    lm = LoopedLM(policy.model, LoopSpec(prelude=1, core=2, coda=1, depth=depth, **kw))
    if trained:
        torch.manual_seed(1)
        with torch.no_grad():
            d = policy.model.config.hidden_size
            lm.adapter.weight[:, :d].normal_(std=0.3)
    return lm


def test_r1_and_the_initial_adapter_are_the_plain_model(policy):
    plain, _ = completion_logprobs(policy.model, ids(policy), ANSWERS, pad=0)
    # r = 1 with a zero initial state: adapter([norm(0), e]) = W_e e = e, whatever the state weights are
    one = looped(policy, depth=1, init_std=0.0)
    got, _ = completion_logprobs(one, ids(policy), ANSWERS, pad=0)
    assert (got - plain).abs().max() < 1e-5
    # any r with the adapter as initialised ([0 | I]): the state is ignored, the plain model at any depth
    fresh = looped(policy, depth=5, trained=False)
    got, _ = completion_logprobs(fresh, ids(policy), ANSWERS, pad=0)
    assert (got - plain).abs().max() < 1e-5
    expect = HFEngine(policy.model, policy.tokenizer).generate(PROMPTS, GREEDY)
    for lm in (one, fresh):
        out = LoopedEngine(lm, policy.tokenizer).generate(PROMPTS, GREEDY)
        assert [c[0].token_ids for c in out] == [c[0].token_ids for c in expect]
    # ... and a trained loop at r = 3 is not (the test above can fail)
    got, _ = completion_logprobs(looped(policy, depth=3), ids(policy), ANSWERS, pad=0)
    assert (got - plain).abs().max() > 1e-2


@pytest.mark.parametrize("explore,halting", [("temperature", "none"), ("dropout", "none"), ("noise", "latent_change")])
def test_kv_cached_generation_equals_full_recompute(policy, explore, halting):
    lm = looped(policy, depth=3, explore=explore, dropout=0.3, noise_std=0.5, halting=halting, exit_epsilon=0.5)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8, n=3, seed=5)
    runs = []
    for cache in (True, False):
        eng = LoopedEngine(lm, policy.tokenizer, batch_size=5, use_cache=cache)
        out = eng.generate(PROMPTS, sampling)
        runs.append((out, [[c.info for c in row] for row in out]))
    (a, info_a), (b, info_b) = runs
    assert info_a == info_b
    for ca, cb in zip(sum(a, []), sum(b, [])):
        assert ca.token_ids == cb.token_ids
        assert max(abs(x - y) for x, y in zip(ca.logprobs, cb.logprobs)) < 1e-4
    # the learner's teacher-forced recomputation (the hook) agrees with what the engine reported
    flat, info = sum(a, []), sum(info_a, [])
    samples = [Sample(c.prompt_ids, c.token_ids, c.logprobs, 0.0, info=dict(i)) for c, i in zip(flat, info)]
    logp, mask = loop_logprobs(lm, samples, pad=0)
    for i, c in enumerate(flat):
        assert max(abs(x - y) for x, y in zip(logp[i, : len(c.token_ids)].tolist(), c.logprobs)) < 1e-4
    if explore != "temperature":  # rollouts of one prompt differ in their exploration seed
        assert len({i["loop_seed"] for i in info}) == len(info)
    if halting != "none":
        assert {i["loop_depth"] for i in info} <= {1, 2, 3}


@pytest.mark.parametrize("k", [0, 1, 2])
def test_gradient_reaches_exactly_the_last_k_iterations(policy, k):
    r = 4
    lm = looped(policy, depth=r, backprop_steps=k)
    _, core, _ = lm.layer_groups()
    seen = []
    handle = core[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].requires_grad))
    try:
        full = [list(p) + a for p, a in zip(ids(policy), ANSWERS)]
        ids_t, attn, pos = pad_left(full, 0, lm.device)
        out = lm.unroll(ids_t, attn, pos, r)
    finally:
        handle.remove()
    window = r if k == 0 else k
    assert seen == [False] * (r - window) + [True] * window  # the core's input carries gradient only there
    assert [s.requires_grad for s in out.states] == [False] * (r - window) + [True] * window
    out.logits[-1].sum().backward()
    assert core[0].self_attn.q_proj.weight.grad is not None
    # truncation changes gradients, never values
    with torch.no_grad():
        again = lm.unroll(ids_t, attn, pos, r)
    assert torch.equal(again.logits[-1], out.logits[-1].detach())


def test_per_loop_weights_and_their_limit_is_final(policy):
    assert torch.allclose(loop_weights(3, "uniform"), torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    assert torch.allclose(loop_weights(3, "progressive", 1.0), torch.tensor([1 / 6, 2 / 6, 3 / 6]))
    assert torch.allclose(loop_weights(2, "progressive", 2.0), torch.tensor([1 / 5, 4 / 5]))
    lm = looped(policy, depth=3, loop_weights="learned")
    with torch.no_grad():
        lm.weight_logits.fill_(-1e4)
        lm.weight_logits[2] = 0.0  # softmax over the first 3: all weight on the last iteration
    final, mask = sequence_logprobs(lm, ids(policy), ANSWERS, 0, 3, credit="final")
    per_loop, mask2 = sequence_logprobs(lm, ids(policy), ANSWERS, 0, 3, credit="per_loop")
    assert torch.equal(mask, mask2) and (final - per_loop).abs().max() < 1e-6
    # uniform weights: the mean of the three readouts' log-probs, each computed on its own
    lm.spec.loop_weights = "uniform"
    sc = readout_scores(lm, ids(policy), ANSWERS, 0, 3, readouts="all")
    uniform, _ = sequence_logprobs(lm, ids(policy), ANSWERS, 0, 3, credit="per_loop")
    assert (uniform - sum(sc.token_logp) / 3).abs().max() < 1e-6
    assert (sc.token_logp[0] - sc.token_logp[2]).abs().max() > 1e-3  # the readouts do differ
    # the learned weights get gradient from the per-loop loss
    lm.spec.loop_weights = "learned"
    with torch.no_grad():
        lm.weight_logits.zero_()
    logp, _ = sequence_logprobs(lm, ids(policy), ANSWERS, 0, 3, credit="per_loop")
    logp.sum().backward()
    assert lm.weight_logits.grad[:3].abs().sum() > 0 and lm.weight_logits.grad[3:].abs().sum() == 0


def test_dropout_mask_is_fixed_across_iterations_and_differs_across_rollouts(policy):
    lm = looped(policy, depth=4, explore="dropout", dropout=0.5)
    seen = []
    handle = lm.state_norm.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    rows = ids(policy, ["hello world"] * 3)
    ids_t, attn, pos = pad_left(rows, 0, lm.device)
    try:
        with torch.no_grad():
            lm.unroll(ids_t, attn, pos, 4, explore_seeds=[11, 12, 11])
    finally:
        handle.remove()
    zeros = [(x == 0) for x in seen]  # dropped units of the state entering the adapter, per iteration
    assert all(torch.equal(z, zeros[0]) for z in zeros)  # one mask for all 4 iterations
    assert torch.equal(zeros[0][0], zeros[0][2])  # same seed, same mask (the learner can recompute it)
    assert not torch.equal(zeros[0][0], zeros[0][1])  # another rollout, another mask
    assert 0.4 < zeros[0][0].float().mean() < 0.6  # p = 0.5
    # a mask depends on (seed, position), not on how long the sequence is
    pos_long = torch.arange(130)[None]
    assert torch.equal(position_table([7], pos_long, 8, 2)[:, :5], position_table([7], pos_long[:, :5], 8, 2))


def test_halting_head_target_is_correctness(policy):
    lm = looped(policy, depth=3)
    p = ids(policy, ["abc", "hello world"])
    greedy = LoopedEngine(lm, policy.tokenizer).generate(["abc", "hello world"], GREEDY)
    right = [c[0].token_ids for c in greedy]  # what greedy decoding at depth 3 answers
    wrong = [[t + 1 if t < 99 else 4 for t in right[0]], right[1]]
    sc = readout_scores(lm, p + p, right + wrong, 0, 3, readouts="all")
    assert sc.exact[:2, 2].tolist() == [True, True]  # readout 3 answers exactly what greedy gave
    assert sc.exact[2, 2].item() is False and sc.exact[3, 2].item() is True
    # the BCE term of the SFT loss is BCE(halt logits, exact), by hand
    loss, stats = sft_loss(lm, p + p, right + wrong, 0, 3, None)
    q = lm.halt_logits(sc.states, sc.last_prompt).detach()
    y = sc.exact.float()
    bce = -(y * torch.log(torch.sigmoid(q)) + (1 - y) * torch.log(1 - torch.sigmoid(q))).mean()
    assert abs(stats["sft/halt_bce"] - float(bce)) < 1e-5
    loss.backward()
    assert lm.halt_head.weight.grad.abs().sum() > 0


def test_exit_rules_pick_the_first_iteration_that_fires(policy):
    lm = looped(policy, depth=4, halting="latent_change", exit_epsilon=0.1)
    base = torch.ones(1, 2, 4)
    # relative change per iteration: -, 1.0, 0.05, 0.0 -> stops at iteration 3
    states = [base, 2 * base, 2.1 * base, 2.1 * base]
    assert lm.choose_depth(states, torch.tensor([1])).tolist() == [3]
    lm.spec.exit_epsilon = 0.01  # never below: the full depth
    assert lm.choose_depth(states, torch.tensor([1])).tolist() == [4]
    lm.spec.halting, lm.spec.halt_threshold = "head", 0.5
    d = policy.model.config.hidden_size
    with torch.no_grad():
        lm.halt_head.weight.zero_()
        lm.halt_head.weight[0, 0] = 1.0
        lm.halt_head.bias.fill_(-2.5)
    s = [torch.full((2, 1, d), v) for v in (1.0, 2.0, 3.0, 4.0)]  # logits -1.5, -0.5, 0.5, 1.5
    assert lm.choose_depth(s, torch.tensor([0, 0])).tolist() == [3, 3]


def test_exit_rules_at_one_iteration_are_the_one_iteration_answers(policy):
    """At r = 1 an exit rule can only stop after the one iteration: generation under either rule gives the
    rule-free completions, so depth_eval reports the x1 answers for the rules instead of decoding again."""
    from synthetic_tasks.strcomp import StrCompTask

    from compose_rl.experimental.recurrent_train import depth_eval

    lm = looped(policy, depth=1, exit_epsilon=10.0)
    eng = LoopedEngine(lm, policy.tokenizer)
    plain = eng.generate(PROMPTS, GREEDY)
    for rule in ("head", "latent_change"):
        lm.spec.halting = rule
        with torch.no_grad():
            lm.halt_head.bias.fill_(50.0)  # the head fires at once (it would at any bias: r = 1 is the last)
        got = eng.generate(PROMPTS, GREEDY)
        assert [[(c.token_ids, c.info["loop_depth"]) for c in row] for row in got] == \
            [[(c.token_ids, 1) for c in row] for row in plain]
    lm.spec.halting = "none"
    task = StrCompTask(seed=0, only=("func_1", "func_3", "func_4", "func_7"), test_depths=(1, 2))
    out = depth_eval(lm, eng, policy, task, (1, 2), 4, 8, multipliers=(1, 2))
    for rule in ("halt_head", "halt_change"):
        for key in ("acc_d1", "acc_d2", "mean_iterations", "flops_per_answer"):
            assert out[f"depth/{rule}/{key}"] == out[f"depth/x1/{key}"]
    assert out["depth/x2/mean_iterations"] == 2 and out["depth/halt_head/mean_iterations"] == 1
    decoded = depth_eval(lm, eng, policy, task, (1, 2), 4, 8, multipliers=(2,))  # no x1 to reuse: the rules decode
    for rule in ("halt_head", "halt_change"):
        for key in ("acc_d1", "acc_d2", "mean_iterations", "flops_per_answer"):
            assert decoded[f"depth/{rule}/{key}"] == out[f"depth/x1/{key}"]


def test_depth_sampler_mean_and_flops_accounting(policy):
    rng = random.Random(0)
    draws = [sample_depth(rng, 8, 0.5, 64) for _ in range(4000)]
    assert min(draws) >= 1 and abs(sum(draws) / len(draws) - 8) < 0.3  # E[r] = 8
    assert sample_depth(rng, 1, 0.5, 64) == 1
    cfg = policy.model.config  # d 128, MLP 256, vocab 100, 4 layers, kv = d
    layer = 2 * (4 * 128 * 128 + 3 * 128 * 256)  # 327680 per layer pass, + 512 per key attended
    assert flops_per_token(cfg, None, 1, 10) == 4 * (layer + 5120) + 2 * 128 * 100
    spec = LoopSpec(prelude=1, core=2, coda=1)
    assert flops_per_token(cfg, spec, 3, 10) == 8 * (layer + 5120) + 3 * 2 * 256 * 128 + 2 * 128 * 100
    # prompt of 2, answer of 2: positions 1, 2 (prefill) and 3 (one cached token); recompute redoes 1..3
    cached = flops_per_answer(cfg, spec, 3, 2, 2)
    assert cached == sum(flops_per_token(cfg, spec, 3, c) for c in (1, 2, 3))
    assert flops_per_answer(cfg, spec, 3, 2, 2, cached=False) == cached + sum(flops_per_token(cfg, spec, 3, c) for c in (1, 2))
    assert participation_ratio(torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])) == pytest.approx(2.0)
    assert participation_ratio(torch.tensor([[1.0, 0], [-1, 0], [2, 0]])) == pytest.approx(1.0)


def test_the_learners_hook_gives_the_plain_learners_update(policy, tmp_path):
    """With the adapter as initialised the looped model is the plain model; run_rl through the hook must
    then move the shared weights exactly as run_rl on the plain model does (one RL math)."""
    import copy
    from dataclasses import replace

    from compose_rl.recipe import RlCfg
    from compose_rl.rl.learner import LearnerHooks, run_rl
    from compose_rl.rundir import RunDir

    class Fixed:
        def collect(self, engine, step):
            rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
            return [Sample(ids(policy, ["abc"])[0] if i < 3 else ids(policy, ["hello"])[0], [5 + i, 7, 2], [], r,
                           group=i // 3, info={"loop_depth": 3}) for i, r in enumerate(rewards)], {}, []

    cfg = RlCfg(steps=1, lr=1e-2, algorithm="reinforce", max_grad_norm=1e6, checkpoint_every=100, eval_every=0)
    plain = copy.deepcopy(policy)
    run_rl(plain, HFEngine(plain.model, plain.tokenizer), Fixed(), cfg, RunDir.create(str(tmp_path), "a", ""), "rl", 0, 8)
    lm = looped(policy, depth=3, trained=False)
    calls = []

    def hook(*args, **kwargs):  # loop_logprobs, counted: the learner must score through it
        calls.append(len(args[1]))
        return loop_logprobs(*args, **kwargs)

    run_rl(replace(policy, model=lm), LoopedEngine(lm, policy.tokenizer), Fixed(), cfg, RunDir.create(str(tmp_path), "b", ""),
           "rl", 0, 8, hooks=LearnerHooks(logprobs=hook))
    assert sum(calls) == 6
    before = load_policy("tiny", seed=0, tiny=TinySpec(num_layers=4)).model.state_dict()
    moved = 0
    for (name, a), b in zip(plain.model.state_dict().items(), policy.model.state_dict().values()):
        assert (a - b).abs().max() < 1e-6, name
        moved += int(not torch.equal(a, before[name]))
    assert moved > 10  # the step did change the weights
    assert lm.adapter.weight.grad is not None  # ... and the loop's own parameters were trained


BASE = {"name": "x", "stages": ["sft", "rl"], "model": {"name": "tiny", "tiny": {"num_layers": 4}},
        "task": {"kind": "strcomp"}, "recurrent": {"prelude": 1, "core": 2, "coda": 1}}


@pytest.mark.parametrize("change,message", [
    ({"model": {"name": "tiny", "tiny": {"num_layers": 3}}}, "prelude + core + coda = 4 but model.tiny.num_layers = 3"),
    ({"recurrent": {"credit": "per_loop", "sft_readout": "final"}}, "recurrent.credit: per_loop"),
    ({"recurrent": {"credit": "per_loop"}, "rl": {"ppo_epochs": 2}}, "recurrent.credit: per_loop"),
    ({"recurrent": {"halting": "head", "sft_readout": "final"}}, "recurrent.halting"),
    ({"recurrent": {"explore": "dropout", "dropout": 0.0}}, "recurrent.explore: dropout"),
    ({"recurrent": {"depth": 2, "backprop_steps": 3}}, "recurrent.backprop_steps"),
    ({"latent": {"steps": 2}}, "either `latent`"),
    ({"rl": {"kl_coef": 0.1}}, "rl.kl_coef"),
    ({"rollout": {"engine": "hf", "workers": 2}}, "in the learner's process"),
    ({"games": {"train": [{"name": "kuhn_poker"}], "opponent": "pool"}}, "recurrent: games.opponent: pool"),
])
def test_invalid_recurrent_recipes_exit_2_with_one_line(tmp_path, capsys, change, message):
    d = {**BASE, **{k: ({**BASE[k], **v} if k == "recurrent" else v) for k, v in change.items()}}
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("(", r"\(")):
        recipe_from_dict(d)
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(d))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.split(":")[0] in err


def _smoke_sft_rl_eval(tmp_path, recipe: str, *overrides: str):
    """A shipped recipe at smoke budgets, depth 2, per-loop credit, dropout exploration: (run dir, RL rows,
    the eval-rl row); every RL step ran at depth 2."""
    out = tmp_path / "runs"
    path = os.path.join(ROOT, "recipes", recipe)
    assert main(["recipe", path, "--smoke", f"output={out}", "stages=[sft,rl,eval]", "recurrent.explore=dropout",
                 "recurrent.credit=per_loop", "recurrent.depth=2", *overrides]) == 0
    run = glob.glob(str(out / "*"))[0]
    rows = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    rl = [r for r in rows if r["stage"] == "rl"]
    assert rl and all(r["latent/depth"] == 2 for r in rl)
    return run, rl, [r for r in rows if r["stage"] == "eval-rl"][0]


def test_shipped_recipe_smoke_run(tmp_path):
    """The shipped recipe at smoke budgets: SFT, RL through the learner's hook, the depth evaluations."""
    run, rl, ev = _smoke_sft_rl_eval(tmp_path, "recurrent-depth-strcomp.yaml", "task.test_depths=[1,3]")
    assert all(0 <= r["rollout/groups_with_signal"] <= 1 for r in rl)
    for key in ("depth/x4/acc_d3", "depth/x2/flops_per_answer", "depth/halt_head/mean_iterations",
                "probe/d1/readout_acc_t2", "probe/d3/latent_change_t2", "probe/d1/participation_t1"):
        assert key in ev and math.isfinite(ev[key])
    assert ev["depth/x4/mean_iterations"] == 8 and ev["depth/x1/mean_iterations"] == 2
    assert ev["depth/x4/flops_per_answer"] > ev["depth/x2/flops_per_answer"] > ev["depth/x1/flops_per_answer"]
    assert 1 <= ev["depth/halt_change/mean_iterations"] <= 2
    state = torch.load(os.path.join(run, "checkpoints", "rl-final", "state.pt"))["model"]
    assert {"adapter.weight", "halt_head.weight", "state_norm.weight", "weight_logits"} <= set(state)


def test_self_play_samples_carry_each_rollouts_loop_depth_and_fresh_exploration_seeds(policy):
    """Completion.info -> Sample.info through the self-play collector; unseeded calls (self-play turns) draw
    new exploration seeds each time, so no two rollouts of a step share a dropout mask."""
    from compose_rl.experimental.recurrent_train import LoopCollector
    from compose_rl.rollout.collectors import SelfPlayCollector
    from games import get_game
    from games.env import InvalidPolicy

    lm = looped(policy, depth=3, explore="dropout", dropout=0.2)
    engine = LoopedEngine(lm, policy.tokenizer, batch_size=8)
    inner = SelfPlayCollector([(get_game("kuhn_poker"), 1.0)], policy.format_prompt, 4,
                              SamplingParams(temperature=1.0, max_new_tokens=6), 0,
                              InvalidPolicy(mode="penalty", penalty=-3.0, other=0.0), opponent="self")
    collector = LoopCollector(inner, lm, engine, seed=0)
    samples, metrics, _ = collector.collect(engine, 0)
    assert samples and metrics["latent/depth"] == 3
    assert all(s.info["loop_depth"] == 3 for s in samples)
    seeds = [s.info["loop_seed"] for s in samples]
    assert None not in seeds and len(set(seeds)) == len(seeds)  # one mask per rollout, none repeated
    # the learner rescores a sample with its own seed: the engine's log-probs are reproduced
    pad = policy.tokenizer.pad_token_id
    logp, mask = loop_logprobs(lm, samples[:4], pad)
    for i, s in enumerate(samples[:4]):
        assert (logp[i, : len(s.old_logprobs)] - torch.tensor(s.old_logprobs)).abs().max() < 1e-4


def test_exact_game_tables_score_the_loop_at_its_depth(policy):
    """Exploitability's action tables come from the looped module (Pipeline.scorer), at its current depth: the
    untrained loop is the plain model, a trained one is not, and its tables move with the depth."""
    from dataclasses import replace

    from compose_rl.evals.games import lm_policy_tables
    from games import get_game

    game = get_game("kuhn_poker")

    def gap(a, b):
        return max(abs(a[k][x] - b[k][x]) for k in a for x in a[k])

    plain = lm_policy_tables(policy, game)
    assert gap(plain, lm_policy_tables(replace(policy, model=looped(policy, depth=3, trained=False)), game)) < 1e-5
    lm = looped(policy, depth=3)
    at3 = lm_policy_tables(replace(policy, model=lm), game)
    lm.depth = 6
    at6 = lm_policy_tables(replace(policy, model=lm), game)
    assert gap(plain, at3) > 1e-4 and gap(at3, at6) > 1e-4


def _kuhn_loop(policy, depths):
    """(game, looped module at depth 2, a pipeline stand-in for game_depth_eval, {depth: the looped module's
    exact Kuhn tables at that depth}, {depth: their exploitability}), computed here by hand."""
    from dataclasses import replace
    from types import SimpleNamespace

    from compose_rl.evals.exploitability import exploitability_of_tables
    from compose_rl.evals.games import lm_policy_tables
    from games import get_game

    game, lm = get_game("kuhn_poker"), looped(policy, depth=2)
    pipe = SimpleNamespace(loop=lm, policy=policy, scorer=replace(policy, model=lm),
                           domains=[SimpleNamespace(mixture=[(game, 1.0)])])
    tables = {}
    for depth in depths:
        lm.depth = depth
        tables[depth] = lm_policy_tables(pipe.scorer, game)
    lm.depth = 2
    return game, lm, pipe, tables, {t: exploitability_of_tables(game, tables[t])[0] for t in depths}


def test_game_depth_eval_scores_the_loop_at_each_multiple_and_reuses_the_eval_at_r(policy):
    """game_depth_eval: exploitability of the looped module's tables at r x m (recomputed here by hand), with
    the game eval's value taken for m = 1 when it is passed (same module, same depth) instead of re-scored."""
    from compose_rl.experimental.recurrent_train import game_depth_eval

    _, lm, pipe, _, want = _kuhn_loop(policy, (2, 4))
    got = game_depth_eval(pipe, (1, 2))
    assert got["depth/x1/kuhn_poker/exploitability"] == pytest.approx(want[2], abs=1e-9)
    assert got["depth/x2/kuhn_poker/exploitability"] == pytest.approx(want[4], abs=1e-9)
    assert want[2] != pytest.approx(want[4], abs=1e-6) and lm.depth == 2  # depth restored
    reused = game_depth_eval(pipe, (1, 2), known={"eval/kuhn_poker/exploitability": 0.123})
    assert reused["depth/x1/kuhn_poker/exploitability"] == 0.123
    assert reused["depth/x2/kuhn_poker/exploitability"] == pytest.approx(want[4], abs=1e-9)


def test_game_exit_rules_play_each_information_states_own_depth(policy, monkeypatch):
    """In self-play the exit rules are scored exactly: each information state's depth comes from its prompt
    (a head that always fires = the loop stopped after 1 iteration; one that never fires = r), and the
    policy is the table at that depth, state by state."""
    from compose_rl.evals.exploitability import exploitability_of_tables, infostates
    from compose_rl.experimental.recurrent_train import game_depth_eval

    game, lm, pipe, tables, expl = _kuhn_loop(policy, (1, 2))
    assert expl[1] != pytest.approx(expl[2], abs=1e-6)
    for bias, depth in ((50.0, 1), (-50.0, 2)):  # sigmoid(head) > 0.5 at every iteration / never
        with torch.no_grad():
            lm.halt_head.weight.zero_()
            lm.halt_head.bias.fill_(bias)
        got = game_depth_eval(pipe, (1,))
        assert got["depth/halt_head/kuhn_poker/exploitability"] == pytest.approx(expl[depth], abs=1e-9)
        assert got["depth/halt_head/kuhn_poker/mean_iterations"] == depth
        full, halted = got["depth/x1/kuhn_poker/flops_per_answer"], got["depth/halt_head/kuhn_poker/flops_per_answer"]
        assert halted == pytest.approx(full) if depth == 2 else halted < full
    assert got["depth/t1/kuhn_poker/exploitability"] == pytest.approx(expl[1], abs=1e-9)
    infos = infostates(game)  # a rule that stops the first half of the states after 1 iteration
    pattern = torch.tensor([1 if k < len(infos) // 2 else 2 for k in range(len(infos))])
    monkeypatch.setattr(type(lm), "exit_depths", lambda self, *a, **k: pattern)
    got = game_depth_eval(pipe, (1,))
    mixed = {i.key: tables[int(d)][i.key] for i, d in zip(infos, pattern)}
    want = exploitability_of_tables(game, mixed)[0]
    assert got["depth/halt_change/kuhn_poker/exploitability"] == pytest.approx(want, abs=1e-9)
    assert got["depth/halt_change/kuhn_poker/mean_iterations"] == pytest.approx(float(pattern.float().mean()))
    assert lm.depth == 2 and lm.spec.halting == "none"  # restored


def test_kuhn_self_play_recipe_smoke_run(tmp_path):
    """recurrent-depth-kuhn at smoke budgets: SFT and self-play RL through the loop, exact exploitability
    of the looped policy at r, 2r, 4r with FLOPs per answer, the loop's own weights checkpointed."""
    run, _, ev = _smoke_sft_rl_eval(tmp_path, "recurrent-depth-kuhn.yaml", "primitives={ingame: true}")
    ingame = [k for k in ev if k.startswith("primitive/") and "/ingame/" in k and not k.endswith("/uniform")]
    assert ingame and all(0.0 <= ev[k] <= 1.0 for k in ingame)  # in-game probes score the looped module too
    for m in (1, 2, 4):
        assert 0.0 <= ev[f"depth/x{m}/kuhn_poker/exploitability"] < 2.0
    flops = [ev[f"depth/x{m}/kuhn_poker/flops_per_answer"] for m in (1, 2, 4)]
    assert flops[0] < flops[1] < flops[2]
    state = torch.load(os.path.join(run, "checkpoints", "rl-final", "state.pt"))["model"]
    assert {"adapter.weight", "halt_head.weight"} <= set(state)


def test_study_summary_from_hand_written_rows(tmp_path):
    """The study table: means and 95% t-intervals over seeds, paired RL - SFT, from the per-run JSON rows."""
    from compose_rl.experimental.recurrent_study import summarize

    def metrics(a1, a3, a3_x4):
        m = {"depth/x1/acc_d1": a1, "depth/x1/acc_d3": a3, "depth/x4/acc_d1": a1, "depth/x4/acc_d3": a3_x4,
             "depth/x1/flops_per_answer": 2e9, "probe/d1/readout_acc_t1": a1 / 2, "probe/d1/readout_acc_t2": a1,
             "eval/strcomp/floor_d1": 0.25, "eval/strcomp/floor_d3": 0.0}
        for rule in ("halt_head", "halt_change"):
            m.update({f"depth/{rule}/acc_d1": a1, f"depth/{rule}/acc_d3": 0.0, f"depth/{rule}/mean_iterations": 1.5})
        return m

    for seed, (sft1, rl1) in enumerate([(0.5, 0.6), (0.5, 0.8)]):
        row = {"condition": "final-temp", "seed": seed, "depth": 2, "depths": [1, 3], "groups_with_signal": 0.25 * (seed + 1),
               "sft": metrics(sft1, 0.0, 0.0), "rl": metrics(rl1, 0.1, 0.2)}
        (tmp_path / f"final-temp-s{seed}.json").write_text(json.dumps(row))
    for seed, (sft1, rl1) in enumerate([(0.4, 0.5), (0.6, 0.9)]):  # an arm: its own stage 1
        row = {"condition": "plain (r=1)", "seed": seed, "depth": 1, "depths": [1, 3], "groups_with_signal": 0.5,
               "sft": metrics(sft1, 0.0, 0.0), "rl": metrics(rl1, 0.1, 0.1)}
        (tmp_path / f"plain-s{seed}.json").write_text(json.dumps(row))
    table = summarize(tmp_path)
    # RL d1: mean 0.7, sd 0.1414, t(1) = 12.706 -> half-width 12.706 * 0.1414 / sqrt(2) = 1.271
    assert "| final-temp | 2 | 0.700 ± 1.271 | 0.100 ± 0.000 | 0.200 ± 1.271 | 0.100 ± 0.000 | — |" in table
    # the arm minus final-temp, paired by seed, at the trained depths: d1 0.5 - 0.6, 0.9 - 0.8 -> 0.0 ± 1.271
    assert "| plain (r=1) | 2 | 0.700 ± 2.541 | 0.100 ± 0.000 | 0.200 ± 1.271 | 0.100 ± 0.000 | d1 0.000 ± 1.271 |" in table
    assert "| RL - final-temp (paired) |" in table
    assert "after SFT (plain (r=1)): d1 0.500 ± 1.271, d3 0.000 ± 0.000" in table
    assert "(the floor every row stands beside): d1 0.250 ± 0.000, d3 0.000 ± 0.000" in table
    assert "| 0.375 ± 1.588 |" in table  # groups with signal 0.25, 0.5
    assert "0.200 ± 0.000 (r: 0.100 ± 0.000)" in table and "| 2.000 ± 0.000 |" in table
    assert "| t=1: 0.350 ± 0.635 · t=2: 0.700 ± 1.271 |" in table  # the readout after t iterations, d1 only
    assert "after SFT (looped, shared by the conditions): d1 0.500 ± 0.000, d3 0.000 ± 0.000" in table


def test_study_summary_of_self_play_rows(tmp_path):
    """Self-play rows: exploitability after SFT / RL, paired RL - SFT and the depth-scaled cells, over seeds."""
    from compose_rl.experimental.recurrent_study import summarize

    def metrics(e, e2, e4):
        return {"eval/kuhn_poker/exploitability": e, "depth/x2/kuhn_poker/exploitability": e2,
                "depth/x4/kuhn_poker/exploitability": e4, "depth/x1/kuhn_poker/flops_per_answer": 3e6}

    for seed, (sft, rl) in enumerate([(0.5, 0.3), (0.5, 0.4), (0.5, 0.2)]):
        exits = {"depth/halt_head/kuhn_poker/exploitability": rl, "depth/halt_head/kuhn_poker/mean_iterations": 1.0 + seed / 2,
                 "depth/halt_change/kuhn_poker/exploitability": 0.25, "depth/halt_change/kuhn_poker/mean_iterations": 2.0,
                 "depth/t1/kuhn_poker/exploitability": 0.6}
        row = {"condition": "perloop-dropout", "seed": seed, "depth": 2, "depths": [], "games": ["kuhn_poker"],
               "groups_with_signal": 0.5, "sft": metrics(sft, sft, sft), "rl": {**metrics(rl, rl + 0.1, rl + 0.2), **exits}}
        (tmp_path / f"perloop-dropout-s{seed}.json").write_text(json.dumps(row))
    for seed, rl in enumerate([0.3, 0.3, 0.3]):  # the reference condition, listed first: paired differences 0, .1, -.1
        row = {"condition": "final-temp", "seed": seed, "depths": [], "games": ["kuhn_poker"], "groups_with_signal": 0.5,
               "sft": metrics(0.5, 0.5, 0.5), "rl": metrics(rl, rl, rl)}
        (tmp_path / f"a-final-temp-s{seed}.json").write_text(json.dumps(row))
    table = summarize(tmp_path)
    # after RL .3 .4 .2: mean .3, sd .1, t(2) 4.303 * .1 / sqrt(3) = .248; RL - SFT = -.2 with the same width;
    # minus final-temp paired by seed: 0, .1, -.1 -> mean 0 with the same width
    assert "| perloop-dropout | 3 | kuhn_poker | 0.500 ± 0.000 | 0.300 ± 0.248 | -0.200 ± 0.248 | 0.000 ± 0.248 " \
           "| 0.400 ± 0.248 | 0.500 ± 0.248 | 0.500 ± 0.000 | 3.000 ± 0.000 |" in table
    # exit rules: exploitability / mean iterations (1, 1.5, 2: mean 1.5, sd .5 -> 4.303 * .5 / sqrt(3) = 1.242),
    # then the loop stopped at t = 1 < r; rows without them (the reference condition here) show —
    assert "| 3.000 ± 0.000 | 0.300 ± 0.248 / 1.500 ± 1.242 | 0.250 ± 0.000 / 2.000 ± 0.000 | t=1: 0.600 ± 0.000 |" in table
    assert "| — | — | — |" in table
    assert "after RL - final-temp (paired)" in table and "| final-temp | 3 | kuhn_poker | 0.500 ± 0.000 | 0.300 ± 0.000 | " \
           "-0.200 ± 0.000 | — |" in table


def test_study_arms_match_parameters_or_flops():
    """The study's controls: plain keeps the looped model's parameters at r = 1; deep unrolls the core so one
    token costs the looped model's FLOPs (less the adapter's r - 1 extra passes); cot answers with the
    step-by-step chain of thought. Every arm is a valid recipe."""
    from compose_rl.commands.recipes import load as _load
    from compose_rl.experimental.recurrent_depth import LoopSpec, flops_per_token
    from compose_rl.experimental.recurrent_study import arm_recipe
    from compose_rl.recipe import recipe_from_dict

    base = _load("recipes/recurrent-depth-strcomp.yaml", ["recurrent.depth=2"]).model_dump(mode="json")
    arms = {a: recipe_from_dict(arm_recipe(base, a), a) for a in ("looped", "plain", "deep", "cot")}
    assert arms["looped"].recurrent.depth == 2 and arms["looped"].model.tiny.num_layers == 2
    for a in ("plain", "deep", "cot"):
        rc = arms[a].recurrent
        assert (rc.depth, rc.credit, rc.explore) == (1, "final", "temperature")
    assert arms["plain"].model == arms["looped"].model and arms["plain"].task == arms["looped"].task
    assert (arms["deep"].model.tiny.num_layers, arms["deep"].recurrent.core) == (3, 2)  # 1 + 1 x 2 + 0
    assert arms["cot"].task.cot == "steps" and arms["cot"].rollout.max_new_tokens == 120
    assert arms["cot"].model == arms["looped"].model

    class Cfg:  # d = 128, intermediate 256, 2 heads (kv = d), vocab 100
        hidden_size, intermediate_size, vocab_size, num_key_value_heads, num_attention_heads = 128, 256, 100, 2, 2

    def spec(arm):
        rc = arms[arm].recurrent
        return LoopSpec(prelude=rc.prelude, core=rc.core, coda=rc.coda)

    layer = 2 * (2 * 128 * 128 + 2 * 128 * 128 + 3 * 128 * 256) + 2 * 2 * 10 * 128  # one layer at context 10
    looped, deep = flops_per_token(Cfg, spec("looped"), 2, 10), flops_per_token(Cfg, spec("deep"), 1, 10)
    assert looped - deep == 2 * 256 * 128  # the one extra adapter pass (2d -> d) of the second iteration
    assert deep == 3 * layer + 2 * 256 * 128 + 2 * 128 * 100
    with pytest.raises(ValueError, match="unknown arm"):
        arm_recipe(base, "wide")
    kuhn = _load("recipes/recurrent-depth-kuhn.yaml", []).model_dump(mode="json")
    with pytest.raises(ValueError, match="string-task recipe"):
        arm_recipe(kuhn, "cot")


def test_study_bad_input_is_one_line(tmp_path, capsys):
    from compose_rl.experimental.recurrent_study import main as study

    assert study(["recipes/recurrent-depth-kuhn.yaml", "--arms", "cot", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--arms cot needs a string-task recipe" in err
    assert study(["recipes/recurrent-depth-strcomp.yaml", "recurrent.depht=2", "--out", str(tmp_path)]) == 2
    assert "recurrent.depht" in capsys.readouterr().err


def test_sft_curves_start_every_variant_from_the_same_weights_and_batch():
    """--sft-curve: at step 1 (before any update) every variant scores the same batch with the same weights,
    and the untrained loop is the plain model, so the NLLs agree; after one update the loop's differ."""
    from compose_rl.experimental.recurrent_study import sft_curves, summarize_curves

    rows = sft_curves("recipes/recurrent-depth-strcomp.yaml", ["model.tiny.hidden_size=64", "model.tiny.num_heads=1",
                                                               "recurrent.depth=2", "sft.examples=320", "recurrent.init_std=1",
                                                               "recurrent.sft_warmup=0"], [0], 2, every=1)
    assert [r["variant"] for r in rows] == ["plain (r=1, adapter fixed)", "loop r=2, s_0 noise 1", "loop r=2, s_0 = 0"]
    first = [r["curve"][0] for r in rows]
    assert max(first) - min(first) < 1e-5
    assert abs(rows[1]["curve"][1] - rows[0]["curve"][1]) > 1e-6
    table = summarize_curves(rows)
    assert "| plain (r=1, adapter fixed) | 1 |" in table and "loop r=2, s_0 = 0 − plain (paired)" in table


def test_sft_curve_table_is_paired_by_seed():
    from compose_rl.experimental.recurrent_study import summarize_curves

    rows = [{"seed": s, "variant": v, "every": 50, "steps": 100, "curve": c}
            for s, v, c in [(0, "plain", [1.0, 0.5]), (0, "loop", [1.0, 0.7]), (1, "plain", [1.2, 0.6]), (1, "loop", [1.2, 1.0])]]
    table = summarize_curves(rows)
    assert "| variant | seeds | NLL steps 1-50 | NLL steps 51-100 |" in table
    # loop - plain at window 2: 0.2 and 0.4 -> mean 0.3, sd 0.1414, t(1) 12.706 -> 12.706 * 0.1414 / sqrt(2) = 1.271
    assert "| loop − plain (paired) | 2 | 0.000 ± 0.000 | 0.300 ± 1.271 |" in table


def test_sft_depth_curriculum_caps_the_depth_from_1_up_to_r():
    """recurrent.sft_warmup: the SFT depth is capped at 1 + int((r - 1) * step / (warmup * total)), so at
    r = 4, warmup 0.5 of 8 steps: 1, 1, 2, 3, then 4; without the curriculum every step runs at r."""
    from compose_rl.experimental.recurrent_train import sft_depth

    rng = random.Random(0)
    assert [sft_depth(LoopSpec(depth=4, sft_warmup=0.5), rng, k, 8) for k in range(8)] == [1, 1, 2, 3, 4, 4, 4, 4]
    assert [sft_depth(LoopSpec(depth=4), rng, k, 8) for k in range(8)] == [4] * 8


def test_summarize_joins_sft_curves_of_separate_processes(tmp_path, capsys):
    from compose_rl.experimental.recurrent_study import main as study

    for seed, (p, l) in enumerate([(1.0, 1.2), (1.0, 1.4)]):
        (tmp_path / f"s{seed}").mkdir()
        rows = [{"seed": seed, "variant": v, "every": 10, "steps": 10, "curve": [c]} for v, c in (("plain", p), ("loop", l))]
        (tmp_path / f"s{seed}" / "sft-curves.json").write_text(json.dumps(rows))
    assert study(["--summarize", str(tmp_path)]) == 0
    # loop - plain 0.2, 0.4: mean 0.3 ± 12.706 * 0.1414 / sqrt(2) = 1.271, over the two processes' seeds
    assert "| loop − plain (paired) | 2 | 0.300 ± 1.271 |" in capsys.readouterr().out


def test_report_shows_the_depth_and_flops_table_of_a_recurrent_run(tmp_path):
    """The recurrent kind's report section: per eval stage, accuracy/exploitability, mean iterations and
    FLOPs per answer at r, 2r, 4r and under the exit rules, from metrics.jsonl (hand-written rows)."""
    import json

    from compose_rl.report import write_report
    from compose_rl.rundir import RunDir

    row = {"stage": "eval-rl", "step": 0, "eval/strcomp/acc_d1": 0.5}
    for v, acc, it, fl in (("x1", 0.5, 2.0, 1.0e6), ("x2", 0.625, 4.0, 2.0e6), ("x4", 0.75, 8.0, 4.0e6),
                           ("halt_head", 0.5, 1.5, 0.75e6)):
        row.update({f"depth/{v}/acc_d1": acc, f"depth/{v}/mean_iterations": it, f"depth/{v}/flops_per_answer": fl})
    (tmp_path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "recipe.resolved.yaml").write_text("name: x\nrecurrent: {depth: 2}\n")
    (tmp_path / "eval").mkdir()
    text = write_report(RunDir(tmp_path)).read_text()
    assert "## Recurrent depth" in text and "### after RL" in text
    assert "| depth | acc_d1 | mean iterations | FLOPs per answer |" in text
    assert "| r | 0.500 | 2.000 | 1e+06 |" in text
    assert "| 4r | 0.750 | 8.000 | 4e+06 |" in text
    assert "| exit: halting head (at r) | 0.500 | 1.500 | 7.5e+05 |" in text
    # a plain run's report has no such section
    (tmp_path / "recipe.resolved.yaml").write_text("name: x\n")
    assert "## Recurrent depth" not in write_report(RunDir(tmp_path)).read_text()
