"""Load any HF causal-LM folder that is already on disk (never the hub), in float32."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


def load_folder(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from `folder` (local files only: a hub id can never slip through).

    A tokenizer without a pad token gets pad = eos, because batched rollouts and trainers pad.
    Raises ModelNotFound (one line) if the folder or its config.json is missing.
    """
    from compose_rl.models import ModelNotFound

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelNotFound(f"{folder} does not exist or is not a folder: pass an existing HF folder or a built-in name")
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"{folder} has no config.json: it is not an HF model folder (write one with Policy.save)")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    model = model.to(torch.float32).eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
