"""Sampler/learner log-prob mismatch correction (rollout.mismatch_correction, issue 19): samples of the
current policy weighted by min(pi_old / mu, is_trunc), mu = the engine's log-probs; hand-computed
weights and loss; the auto rule; the learner sets it and logs the weight statistics."""
import math

import pytest
import torch

from compose_rl.precision import resolve_mismatch_correction
from compose_rl.recipe import RecipeError, RlCfg, recipe_from_dict
from compose_rl.rl.learner import policy_loss
from compose_rl.types import Sample


@pytest.mark.parametrize("requested, dtype, engine, want", [
    ("auto", "float32", "hf", False),     # in-process float32: gap ~1e-7, results stay bit-identical
    ("auto", "bfloat16", "hf", True),     # bf16 learner: 5e-4..1e-3 nats/token
    ("auto", "float32", "vllm", True),    # another engine's kernels
    ("auto", "float32", "auto", True),    # the engine may be vLLM
    ("on", "float32", "hf", True),
    ("off", "bfloat16", "vllm", False),
])
def test_auto_rule(requested, dtype, engine, want):
    assert resolve_mismatch_correction(requested, dtype, engine) is want


def test_recipe_key_and_bad_value():
    base = {"name": "t", "stages": ["sft"], "games": {"train": [{"name": "kuhn_poker"}]}}
    assert recipe_from_dict(base).rollout.mismatch_correction == "auto"
    with pytest.raises(RecipeError) as e:
        recipe_from_dict({**base, "rollout": {"mismatch_correction": "yes"}})
    msg = str(e.value)
    assert "rollout.mismatch_correction" in msg and "\n" not in msg


def _fixed_logprobs(values):
    """A log-prob hook returning fixed learner log-probs (a leaf with a gradient) and a full mask."""
    logp = torch.tensor(values, requires_grad=True)

    def hook(model, batch, pad, with_entropy=False, temperature=1.0):
        mask = torch.ones_like(logp)
        return (logp, mask, torch.zeros_like(logp)) if with_entropy else (logp, mask)
    return logp, hook


def test_current_samples_weighted_by_the_truncated_engine_learner_ratio_hand_computed():
    # learner pi_old (this pass, one epoch one minibatch) vs the engine's mu for the tokens it sampled:
    #   token 1: exp(-1.0 - -1.5) = exp(0.5)  = 1.6487 (kept)
    #   token 2: exp(-2.0 - -1.0) = exp(-1)   = 0.3679 (kept)
    #   token 3: exp(-0.5 - -3.0) = exp(2.5)  = 12.18 -> truncated at 2
    #   token 4: exp(-1.0 - -1.0) = 1
    learner = [[-1.0, -2.0], [-0.5, -1.0]]
    engine = [[-1.5, -1.0], [-3.0, -1.0]]
    logp, hook = _fixed_logprobs(learner)
    batch = [Sample([1], [5, 6], list(engine[i]), reward=0.0, advantage=a, policy_version=3,
                    behaviour_logprobs=list(engine[i])) for i, a in enumerate((1.0, -2.0))]
    cfg = RlCfg(algorithm="ppo", token_aggregation="token_mean")
    loss, stats = policy_loss(None, None, batch, cfg, pad=0, max_len=2, old_is_current=True, is_trunc=2.0,
                              logprobs=hook, version=3)
    w = [math.exp(0.5), math.exp(-1.0), 2.0, 1.0]
    # ratio pi/pi_old = 1 (same pass): PPO-clip = -A per token, weighted, token mean over 4 tokens
    want = -(1.0 * w[0] + 1.0 * w[1] - 2.0 * w[2] - 2.0 * w[3]) / 4
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert stats["loss/is_weight_mean"] == pytest.approx(sum(w) / 4, rel=1e-6)
    assert stats["loss/is_weight_min"] == pytest.approx(math.exp(-1.0), rel=1e-6)
    assert stats["loss/is_weight_max"] == pytest.approx(2.0)
    assert stats["loss/is_truncated_frac"] == pytest.approx(0.25)
    # the gradient carries the weights: d loss / d logp = -A w / 4 (ratio 1, inside the clip)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-w[0] / 4, -w[1] / 4], [2 * w[2] / 4, 2 * w[3] / 4]]), atol=1e-6)
    # the mismatch metric still counts these samples (they are of the current version): |engine - learner|
    assert stats["rollout/logprob_mismatch_sum"] == pytest.approx(0.5 + 1.0 + 2.5 + 0.0)
    assert stats["rollout/logprob_mismatch_n"] == 4

    # correction off: no behaviour log-probs on current samples -> weight exactly 1, no IS statistics
    plain = [Sample([1], [5, 6], list(engine[i]), reward=0.0, advantage=a, policy_version=3)
             for i, a in enumerate((1.0, -2.0))]
    logp2, hook2 = _fixed_logprobs(learner)
    loss2, stats2 = policy_loss(None, None, plain, cfg, pad=0, max_len=2, old_is_current=True, logprobs=hook2, version=3)
    assert loss2.item() == pytest.approx(-(1.0 + 1.0 - 2.0 - 2.0) / 4)
    assert not any(k.startswith("loss/is_") for k in stats2)


def test_run_rl_corrects_current_samples_and_logs_the_weights(tmp_path, tiny_policy):
    """Through the learner loop: with correct_mismatch the current samples carry the engine's log-probs as mu
    and the IS statistics are logged every step (float32 engine and learner agree, so the weights are ~1);
    without it nothing is weighted."""
    from compose_rl.rl.learner import run_rl
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.rundir import RunDir
    from compose_rl.types import SamplingParams
    from tests.test_learner import _rl_cfg

    tok = tiny_policy.tokenizer
    engine = HFEngine(tiny_policy.model, tok)

    class EngineCollector:
        def collect(self, engine, step):
            outs = engine.generate(["K\n", "Q\n"], SamplingParams(temperature=1.0, max_new_tokens=6, n=3, seed=step))
            return [Sample(c.prompt_ids, c.token_ids, list(c.logprobs), float(c.token_ids[0] % 2), group=0,
                           policy_version=engine.policy_version) for o in outs for c in o], {}, []

    for correct, mb in ((True, 8), (True, 3), (False, 8)):  # 3: old log-probs recomputed in their own pass
        run = RunDir.create(tmp_path / f"{correct}{mb}", "t", "")
        last = run_rl(tiny_policy, engine, EngineCollector(), _rl_cfg(lr=1e-3, minibatch=mb, steps=2), run, "rl",
                      seed=0, max_new_tokens=6, correct_mismatch=correct, dtype="bfloat16" if correct else "float32")
        assert last["rollout/mismatch_corrected"] == float(correct)
        if correct:
            assert 0.9 < last["loss/is_weight_mean"] < 1.1 and last["loss/is_weight_max"] <= 2.0
            assert last["rollout/logprob_mismatch"] > 0  # bf16 learner vs the engine: still measured
        else:
            assert "loss/is_weight_mean" not in last
