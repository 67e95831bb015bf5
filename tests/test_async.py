"""Asynchronous rollouts (rollout.mode: async): the truncated importance weights against hand-computed
values; the lag of consumed batches never exceeds max_lag (and is exactly min(step, max_lag) with one
worker); max_lag 0 is the synchronous loop (same samples, same weights); self-play batches never mix
policy versions within a game; a worker killed mid-stream loses no acknowledged batch; resume after
SIGKILL in async mode. One local Ray (4 logical CPUs) is shared by the module.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest
import torch

from compose_rl.recipe import recipe_from_dict
from compose_rl.rl.losses import ppo_clip_loss, reinforce_loss, truncated_is_weights
from compose_rl.types import Sample, SamplingParams

from .test_pipeline import kill_at_first_rl_checkpoint_and_resume
from .test_ray_workers import _slow_factory

ray = pytest.importorskip("ray")


# ------------------------------------------------------------------------------- pure numerics
def test_truncated_is_weights_hand_computed():
    old = torch.log(torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.9, 0.7]]))
    mu = torch.log(torch.tensor([[0.25, 0.4, 0.3], [0.01, 0.9, 0.1]]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w = truncated_is_weights(old, mu, mask, trunc=1.5)
    # ratios 2, 0.5, 1 | 10, 1, (pad) -> truncated at 1.5, padding 0
    assert torch.allclose(w, torch.tensor([[1.5, 0.5, 1.0], [1.5, 1.0, 0.0]]), atol=1e-6)
    same = truncated_is_weights(old, old.clone(), mask, trunc=2.0)
    assert torch.equal(same, mask.float())  # behaviour = current: exactly 1 on every real token
    with pytest.raises(ValueError, match="rollout.is_trunc"):
        truncated_is_weights(old, mu, mask, trunc=0.0)


def test_weighted_losses_hand_computed():
    logp = torch.log(torch.tensor([[0.5, 0.4]])).requires_grad_()
    old = torch.log(torch.tensor([[0.25, 0.4]]))
    adv = torch.tensor([1.0])
    mask = torch.ones(1, 2)
    w = torch.tensor([[0.5, 2.0]])
    # ratios 2 and 1, A = 1: clipped at 1.2 and 1 -> per token -1.2, -1; weighted -0.6, -2; token mean -1.3
    loss, frac = ppo_clip_loss(logp, old, adv, mask, clip=0.2, weights=w)
    assert loss.item() == pytest.approx(-1.3) and frac.item() == pytest.approx(0.5)
    unweighted, _ = ppo_clip_loss(logp, old, adv, mask, clip=0.2, weights=torch.ones(1, 2))
    assert unweighted.item() == pytest.approx(ppo_clip_loss(logp, old, adv, mask, clip=0.2)[0].item())
    # REINFORCE: -(0.5 log .5 + 2 log .4) / 2; the weight is a constant (no gradient through it)
    r = reinforce_loss(logp, adv, mask, weights=w.requires_grad_())
    assert r.item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * math.log(0.4)) / 2)
    r.backward()
    assert w.grad is None and torch.allclose(logp.grad, torch.tensor([[-0.25, -1.0]]))


def test_policy_loss_weight_is_exactly_one_for_current_samples(tiny_policy):
    """A sample of the current version has no behaviour log-probs: its loss is the plain PPO loss,
    bit for bit, and no weight statistics are logged; an older one gets weights in (0, c]."""
    from compose_rl.recipe import RlCfg
    from compose_rl.rl.learner import policy_loss
    from compose_rl.rollout.hf import HFEngine

    tok = tiny_policy.tokenizer
    comps = HFEngine(tiny_policy.model, tok).generate(["ab\n", "cd\n"], SamplingParams(max_new_tokens=6, n=2, seed=1))
    batch = [Sample(c.prompt_ids, c.token_ids, c.logprobs, reward=float(i % 2), advantage=float(i % 2) - 0.5)
             for i, c in enumerate(x for cs in comps for x in cs)]
    cfg = RlCfg()
    loss, stats = policy_loss(tiny_policy.model, None, batch, cfg, tok.pad_token_id, 6, old_is_current=True)
    assert not any(k.startswith("loss/is_") for k in stats)
    stale = [Sample(**{**s.__dict__, "behaviour_logprobs": [lp - 0.3 for lp in s.old_logprobs]}) for s in batch]
    loss2, stats2 = policy_loss(tiny_policy.model, None, stale, cfg, tok.pad_token_id, 6, old_is_current=True,
                                is_trunc=1.2)
    # pi_old / mu is about exp(0.3) = 1.35 > 1.2 on every token (engine and learner agree to ~1e-5): all truncated
    assert stats2["loss/is_weight_mean"] == pytest.approx(1.2, abs=1e-6) and stats2["loss/is_truncated_frac"] == 1.0
    assert loss2.item() == pytest.approx(1.2 * loss.item(), rel=1e-5)


@pytest.mark.parametrize("rollout, games, message", [
    ({"mode": "async"}, None, "rollout.mode: async generates in Ray workers while the learner trains; set rollout.workers >= 1"),
    ({"mode": "async", "workers": 1, "weight_sync": "collective"}, None, "rollout.weight_sync: async mode sends"),
    ({"mode": "async", "workers": 1}, {"train": [{"name": "kuhn_poker"}], "opponent": "pool"},
     "rollout.mode: async does not support games.opponent: pool"),
    ({"workers": 2, "worker_resources": [{"node_a": 1}]}, None, "rollout.worker_resources: 1 entries for 2 workers"),
    ({"workers": 1, "worker_resources": [{"CPU": 1}]}, None, "is not a custom resource request"),
    ({"workers": 1, "worker_resources": [{"node_a": 0}]}, None, "is not a custom resource request"),
])
def test_async_recipe_checks(rollout, games, message):
    from compose_rl.recipe import RecipeError

    data = {"name": "t", "stages": ["rl"], "rollout": rollout}
    data.update({"games": games} if games else {"task": {}})
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(data)
    assert message in str(err.value) and "\n" not in str(err.value).strip()


def test_async_recipe_accepted():
    r = recipe_from_dict({"name": "t", "stages": ["rl"], "task": {},
                          "rollout": {"mode": "async", "workers": 2, "max_lag": 2, "is_trunc": 1.5,
                                      "worker_resources": [{"node_a": 1}, {"node_b": 0.5}]}})
    assert (r.rollout.mode, r.rollout.max_lag, r.rollout.is_trunc) == ("async", 2, 1.5)
    assert recipe_from_dict({"name": "t", "stages": ["rl"], "task": {}}).rollout.mode == "sync"  # the default


# ------------------------------------------------------------------------------- with Ray
@pytest.fixture(scope="module")
def local_ray():
    from compose_rl.rollout.ray_connect import connect_ray

    started = connect_ray(None, num_cpus=4)
    yield
    if started:
        ray.shutdown()


def _strcomp(tmp_path, mode: str, max_lag: int, steps: int = 5, **rl):
    return recipe_from_dict({
        "name": "t", "output": str(tmp_path), "stages": ["rl"], "seed": 3,
        "task": {"n_functions": 4, "test_depths": [1, 2]},
        "rollout": {"max_new_tokens": 12, "workers": 1, "mode": mode, "max_lag": max_lag},
        # the untrained model earns the same reward everywhere: an entropy bonus and kept zero-advantage
        # samples give every step a real gradient step, so versions differ and weights move
        "rl": {"steps": steps, "prompts_per_step": 4, "group_size": 4, "lr": 3e-3, "drop_uniform_groups": False,
               "drop_zero_advantage": False, "advantage": "batch_mean", "entropy_coef": 0.05,
               "checkpoint_every": 100, "ppo_epochs": 2, "minibatch": 8, **rl},
    })


def _train(recipe):
    from compose_rl.pipeline import start_run

    pipe = start_run(recipe)
    pipe.build()
    try:
        pipe.stage_rl(0, "rl", None)
        rows = [r for r in pipe.run.read_metrics() if r["stage"] == "rl"]
        return rows, {k: v.clone() for k, v in pipe.policy.model.state_dict().items()}
    finally:
        pipe.engine.shutdown()


KEYS = ("reward/mean", "rollout/response_tokens", "rollout/samples", "loss/total", "loss/policy")


def test_max_lag_0_is_the_synchronous_loop(local_ray, tmp_path):
    sync_rows, sync_w = _train(_strcomp(tmp_path / "s", "sync", 0))
    async_rows, async_w = _train(_strcomp(tmp_path / "a", "async", 0))
    assert [r["step"] for r in async_rows] == list(range(5))
    assert [{k: r[k] for k in KEYS} for r in async_rows] == [{k: r[k] for k in KEYS} for r in sync_rows]
    assert all(r["rollout/lag_max"] == 0 and r["rollout/stale_dropped"] == 0 for r in async_rows)
    assert not any(k.startswith("loss/is_") for r in async_rows for k in r)  # every weight is exactly 1
    assert all(r["loss/grad_norm"] > 0 for r in async_rows)  # it trained at every step
    assert all(torch.equal(sync_w[k], async_w[k]) for k in sync_w)  # same samples -> the same weights


def test_lag_is_bounded_and_old_samples_are_weighted(local_ray, tmp_path):
    rows, _ = _train(_strcomp(tmp_path, "async", 2, steps=6))
    # one worker runs its calls in order: batch j is generated by version max(0, j - 2) exactly
    assert [r["rollout/lag_max"] for r in rows] == [0, 1, 2, 2, 2, 2]
    assert [r["rollout/lag_mean"] for r in rows] == [0, 1, 2, 2, 2, 2]
    assert all(r["rollout/stale_dropped"] == 0 for r in rows)
    assert "loss/is_weight_mean" not in rows[0]  # step 0: generated by the current policy
    for r in rows[1:]:
        assert 0 < r["loss/is_weight_min"] <= r["loss/is_weight_mean"] <= r["loss/is_weight_max"] <= 2.0
    assert any(r["loss/is_weight_mean"] != 1.0 for r in rows[1:])  # the policy moved: real corrections


def test_selfplay_games_never_mix_versions(local_ray, tmp_path):
    """Kuhn self-play through AsyncRollouts directly: every game of a batch has one policy version,
    and each batch is exactly what the synchronous collector gives for its step and weights."""
    from compose_rl.models import load_policy
    from compose_rl.rollout.async_rollouts import AsyncRollouts, PromptFormat
    from compose_rl.rollout.collectors import SelfPlayCollector
    from compose_rl.rollout.factory import HFWorkerEngine
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.rollout.ray_workers import RayRolloutPool
    from games import get_game
    from games.env import InvalidPolicy

    policy = load_policy("tiny", seed=0)
    policy.save(tmp_path / "m")
    collector = SelfPlayCollector([(get_game("kuhn_poker"), 1.0)], policy.format_prompt, 6,
                                  SamplingParams(max_new_tokens=8), seed=1, invalid=InvalidPolicy(penalty=-3.0))
    pool = RayRolloutPool(HFWorkerEngine(str(tmp_path / "m")), 2)
    try:
        ro = AsyncRollouts(pool, collector, max_lag=1, format_prompt=PromptFormat.of(policy), steps=4)
        state = policy.state_dict_for_inference()
        ro.start(0, state)
        versions = []
        for step in range(4):
            samples, metrics, _ = ro.collect(step)
            assert samples and metrics["rollout/games"] == 6
            by_game = {}
            for s in samples:
                by_game.setdefault(s.episode, set()).add(s.policy_version)
            assert all(len(v) == 1 for v in by_game.values()), by_game
            versions.append({s.policy_version for s in samples})
            assert step - min(versions[-1]) <= 1
            state = {k: v + 0.01 * torch.randn_like(v) for k, v in state.items()}
            ro.load_weights(state, step + 1)
        ro.close()
        # the same step with the same weights in this process: the same games (a whole step runs in one
        # worker with the step's seed, as in one engine; the synchronous pool shards each wave instead)
        ro2 = AsyncRollouts(pool, collector, max_lag=0, format_prompt=PromptFormat.of(policy), steps=1)
        ro2.start(0, policy.state_dict_for_inference())
        a, _, _ = ro2.collect(0)
        b, _, _ = collector.collect(HFEngine(policy.model, policy.tokenizer), 0)
        assert [(s.completion_ids, s.reward, s.episode) for s in a] == [(s.completion_ids, s.reward, s.episode) for s in b]
    finally:
        pool.shutdown()


def test_killed_worker_loses_no_acknowledged_batch(local_ray, tmp_path, caplog):
    import logging

    from compose_rl.models import load_policy
    from compose_rl.rollout.async_rollouts import AsyncRollouts, PromptFormat
    from compose_rl.rollout.collectors import StringTaskCollector
    from compose_rl.rollout.ray_workers import RayRolloutPool
    from synthetic_tasks.strcomp import StrCompTask

    policy = load_policy("tiny", seed=0)
    policy.save(tmp_path / "m")
    collector = StringTaskCollector(StrCompTask(seed=0, n_functions=4), policy.format_prompt, 3, 2,
                                    SamplingParams(max_new_tokens=8), seed=0)
    pool = RayRolloutPool(_slow_factory(str(tmp_path / "m"), 0.4), 1)
    caplog.set_level(logging.WARNING)
    try:
        ro = AsyncRollouts(pool, collector, max_lag=3, format_prompt=PromptFormat.of(policy), steps=8)
        state = policy.state_dict_for_inference()
        ro.start(0, state)
        got = {}
        victim = pool.pids[0]
        for step in range(8):
            if step == 2:
                deadline = time.time() + 30
                while ro.poll() == 0 and time.time() < deadline:  # a batch ahead is finished and received
                    time.sleep(0.05)
                acked = {s: [x.completion_ids for x in b[0]] for s, b in ro._ready.items()}
                assert acked, "no batch was acknowledged before the kill"
                os.kill(victim, signal.SIGKILL)  # the batches queued on the worker die with it
            samples, _, _ = ro.collect(step)
            got[step] = [x.completion_ids for x in samples]
            assert len(samples) == 6 and step - min(x.policy_version for x in samples) <= 3
            ro.load_weights(state, step + 1)
        assert pool.restarts == 1 and pool.pids[0] != victim and ro.restarts == 1
        assert sorted(ro.received) == list(range(8))  # each batch received once: nothing lost, nothing redone
        assert all(got[s] == ids for s, ids in acked.items())  # acknowledged batches were consumed as received
        assert "re-requested the batch of step" in caplog.text
    finally:
        pool.shutdown()


def test_resume_after_sigkill_in_async_mode(tmp_path):
    """Kill the driver (and with it its local Ray) mid-RL in async mode; --resume completes every step once."""
    f = tmp_path / "r.yaml"
    out = tmp_path / "runs"
    f.write_text(f"""name: kill-async
output: {out}
stages: [rl]
task: {{n_functions: 4, test_depths: [1]}}
rollout: {{max_new_tokens: 12, workers: 1, mode: async, max_lag: 1}}
ray: {{num_cpus: 2}}
rl: {{steps: 30, prompts_per_step: 4, group_size: 4, checkpoint_every: 3, drop_uniform_groups: false, advantage: batch_mean, drop_zero_advantage: false, entropy_coef: 0.01}}
""")
    run, _, _ = kill_at_first_rl_checkpoint_and_resume(f, out, steps=30, wait_s=180, resume_timeout=240)
    rows = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    rl = [r for r in rows if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == list(range(30))  # no lost, no repeated step
    assert all(r["rollout/lag_max"] <= 1 for r in rl)


def test_whole_run_eta_parts():
    """The stage lines and the RL bar add the mean measured time of each later stage's kind; stages of a
    kind not yet run are counted as untimed."""
    from compose_rl.pipeline import Pipeline
    from compose_rl.rl.learner import hms

    r = recipe_from_dict({"name": "t", "stages": ["eval", "sft", "eval", "rl", "eval"], "task": {}})
    p = Pipeline(r, run=None)
    assert p.later_stages_s(0) == (0.0, 4)  # nothing timed yet
    p._stage_s = {"eval": [10.0, 20.0], "sft": [100.0]}
    assert p.later_stages_s(1) == (15.0 + 15.0, 1)  # eval, rl (untimed), eval
    assert p.later_stages_s(3) == (15.0, 0)
    assert p.later_stages_s(4) == (0.0, 0)
    assert (hms(59.4), hms(61), hms(3600 + 62)) == ("0:59", "1:01", "1:01:02")
