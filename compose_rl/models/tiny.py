"""A tiny randomly initialised Llama and a character tokenizer, both built offline.

The tokenizer is character level so that every string task can be learned from scratch by a
~100k-parameter model, and so that exact-match rewards are not disturbed by subword merges.
It does NOT add a BOS (or any special token) when encoding: `encode("abc")` is exactly 3 ids.
Callers that want a BOS prepend `tokenizer.bos_token_id` themselves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

if TYPE_CHECKING:
    from compose_rl.models import TinySpec

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0, 1, 2, 3
CHARS = ("\n", *(chr(c) for c in range(32, 127)))  # newline + printable ASCII, ids 4..99


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; characters outside `CHARS` become `<unk>`.

    - The pre-tokenizer isolates every character (`[\\s\\S]` matches any character, "\\n"
      included), so spaces and newlines are tokens of their own and never dropped.
    - `decoders.Fuse()` joins tokens with "" (the default WordLevel decode joins with spaces).
    - `clean_up_tokenization_spaces=False`: otherwise decode rewrites " ." to "." etc.
    Together these make `decode(encode(s)) == s` for every string over `CHARS`.
    """
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    # No post-processor: nothing is added around encoded text (no BOS/EOS).
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )


def tiny_model(spec: TinySpec, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A float32 Llama with random weights; the same `seed` and spec give identical weights.

    Embeddings are tied to the LM head (fewer parameters for a tiny model); bos/eos/pad ids are
    put in both the config and the generation config so that `generate` and engines stop on EOS.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        head_dim=spec.hidden_size // spec.num_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    return model
