"""`compose-rl plan RECIPE`: memory per device from the model's config, before any weight is loaded.

The estimate, in bytes, for one device holding the learner (and, with workers: 0, the rollout engine):

    P  parameters (from config.json: embeddings, attention with GQA and Qwen3's q/k norms, SwiGLU MLP,
       norms, an untied LM head), T trainable (P, or the LoRA adapters' r * (in + out) per target module)
    persistent learner state  = 4P float32 weights (the master copy, in bf16 as well: autocast)
                              + 8T Adam moments (+ 4P frozen reference when rl.kl_coef > 0)
    learner step (RL)         = persistent + 4T gradients (+ 2P bf16 weight casts under autocast)
                              + activations of one micro-batch: L x tokens x (8h + 2 kv + 4 I) x b
                                (b = 4 float32, 2.5 bf16 autocast: norms stay float32), or with gradient
                                checkpointing one layer's worth plus L x tokens x h x b
                              + log-prob head: completion tokens x vocab x (24 float32 | 20 bf16) bytes
                                (logits, the gathered rows, float32 copy, log-softmax, entropy)
    SFT step                  = the same with sft.batch_size sequences of prompt + 64 answer tokens
                                (stage-1 labels are short), logits at every position (TRL's loss)
    rollout                   = hf: the shared weights + KV cache of rollout.batch_size sequences
                                vLLM: its own weights (2 bytes/param in bf16, 4 in float32) + its KV cache
                                (rollout.vllm.kv_cache_gib, or gpu_memory_utilization x device memory)
    runtime                   = the process itself: 0.6 GiB on CPU (python + torch + transformers +
                                TRL imported, measured), 1 GiB on a GPU (CUDA context, cuBLAS workspace)

The device's peak is the larger of the learner and rollout phases when vLLM sleeps during learner
steps (rollout.vllm.sleep), else their sum. `fits` compares the peak with the device's memory x 0.95
(allocator fragmentation). Sequence length = the prompt (--prompt-tokens, default 256) +
rollout.max_new_tokens. What this leaves out, so what to check on a GPU (bench/gpu_check.py):
allocator caching beyond 5%, CUDA graphs (none with enforce_eager), NCCL buffers, and the
sampler's temporary logits.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3
CPU_RUNTIME_GIB = 0.6
GPU_RUNTIME_GIB = 1.0
USABLE = 0.95


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a model's config.json."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qk_norm: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> "Shape":
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            return cls(layers=int(cfg["num_hidden_layers"]), hidden=hidden, heads=heads,
                       kv_heads=int(cfg.get("num_key_value_heads") or heads),
                       head_dim=int(cfg.get("head_dim") or hidden // heads),
                       intermediate=int(cfg["intermediate_size"]), vocab=int(cfg["vocab_size"]),
                       tied=bool(cfg.get("tie_word_embeddings", False)),
                       qk_norm=cfg.get("model_type") in ("qwen3",))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"config.json lacks or mistypes {e}; plan reads Llama/Qwen-style configs") from None

    def params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        return self.vocab * h * (1 if self.tied else 2) + self.layers * per_layer + h

    def lora_params(self, r: int, targets: list[str]) -> int:
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        return self.layers * sum(r * (a + b) for t in targets for a, b in [dims.get(t, (0, 0))])

    def kv_bytes_per_token(self, bytes_per: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per


def model_config(recipe, config_path: str | Path | None = None) -> tuple[dict, str]:
    """(config dict, where it came from): --config, the tiny shape in the recipe, smollm2's converted
    folder (or its known shape), or the model folder's config.json. ValueError (one line) otherwise."""
    name = recipe.model.name
    if config_path is not None:
        p = Path(config_path)
        if not p.is_file():
            raise ValueError(f"--config {p}: no such file")
        return json.loads(p.read_text()), str(p)
    if name == "tiny":
        t = recipe.model.tiny
        from compose_rl.models.tiny import char_tokenizer

        return ({"hidden_size": t.hidden_size, "num_attention_heads": t.num_heads, "num_hidden_layers": t.num_layers,
                 "num_key_value_heads": t.num_heads, "intermediate_size": t.intermediate_size,
                 "vocab_size": len(char_tokenizer()), "tie_word_embeddings": True, "model_type": "llama"},
                "recipe model.tiny")
    if name == "smollm2-135m-instruct":
        from compose_rl.models.smollm2 import converted_folder

        folder = converted_folder()
        if folder is not None and (folder / "config.json").is_file():
            return json.loads((folder / "config.json").read_text()), str(folder / "config.json")
        # the shape of SmolLM2-135M (its config.json as converted by models/smollm2.py)
        return ({"hidden_size": 576, "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
                 "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
                 "model_type": "llama"}, "built-in SmolLM2-135M shape")
    p = Path(name).expanduser() / "config.json"
    if not p.is_file():
        raise ValueError(f"model.name: no config.json at {p}; point model.name at an HF model folder, "
                         "or give plan --config path/to/config.json")
    return json.loads(p.read_text()), str(p)


@dataclass
class Plan:
    lines: list[tuple[str, float]]  # (what, GiB) rows of the table
    peak_gib: float
    device_gib: float
    device: str
    fits: bool
    settings: dict
    params: int
    trainable: int
    fixes: list[str]  # recipe keys that lower the peak, for the one-line refusal

    def render(self) -> str:
        out = [f"device: {self.device}, {self.device_gib:.1f} GiB ({USABLE:.0%} usable)"]
        out += [f"  {k:52s} {v:9.2f} GiB" for k, v in self.lines]
        out += [f"  {'peak':52s} {self.peak_gib:9.2f} GiB  -> {'fits' if self.fits else 'DOES NOT FIT'}"]
        out += ["settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items())]
        return "\n".join(out)


def estimate(recipe, config: dict, device: str, device_gib: float, prompt_tokens: int = 256,
             dtype: str | None = None, engine: str | None = None, sft_completion_tokens: int = 64,
             gpus: int | None = None) -> Plan:
    """The Plan of `recipe` on one `device` ("cpu" or "cuda") of `device_gib` GiB (see the module docstring)."""
    from compose_rl.precision import resolve_dtype

    shape = Shape.from_config(config)
    P = shape.params()
    lora = recipe.model.lora
    T = shape.lora_params(lora.r, lora.target_modules) if lora else P
    dtype = dtype or resolve_dtype(recipe.model.dtype, recipe.model.name, device,
                                   cuda_bf16=True if device == "cuda" else None)
    bf16 = dtype == "bfloat16"
    ro, rl = recipe.rollout, recipe.rl
    engine = engine or ("hf" if ro.engine == "auto" else ro.engine)
    act_b = 2.5 if bf16 else 4.0
    head_b = 20 if bf16 else 24
    seq = prompt_tokens + ro.max_new_tokens
    gc = recipe.model.gradient_checkpointing
    if gc == "auto":  # on only when the peak without it does not fit (checkpointing_decision)
        kw = dict(prompt_tokens=prompt_tokens, dtype=dtype, engine=engine, sft_completion_tokens=sft_completion_tokens,
                  gpus=gpus)
        off = estimate(_with_gc(recipe, False), config, device, device_gib, **kw)
        if off.fits:
            off.settings["gradient_checkpointing"] = "off (auto: fits without)"
            return off
        on = estimate(_with_gc(recipe, True), config, device, device_gib, **kw)
        on.settings["gradient_checkpointing"] = f"on (auto: {off.peak_gib:.1f} GiB without it)"
        return on

    def activations(seqs: int, completion_tokens: int, seq: int = seq) -> tuple[float, float]:
        tokens = seqs * seq
        full_layer = tokens * (8 * shape.hidden + 2 * shape.kv_heads * shape.head_dim + 4 * shape.intermediate) * act_b
        body = (shape.layers * tokens * shape.hidden * act_b + full_layer) if gc else shape.layers * full_layer
        return body, seqs * completion_tokens * shape.vocab * head_b

    persistent = 4 * P + 8 * T + (4 * P if rl.kl_coef > 0 else 0)
    step_extra = 4 * T + (2 * P if bf16 else 0)
    micro = rl.micro_batch_size or rl.minibatch
    rl_act, rl_head = activations(micro, ro.max_new_tokens)
    # stage 1: the prompt + a short labelled answer; TRL's loss takes logits at every position
    sft_seq = prompt_tokens + sft_completion_tokens
    sft_act, sft_head = activations(recipe.sft.batch_size, sft_seq, seq=sft_seq)
    # only the training stages the recipe runs (an eval-only or RL-only recipe has no SFT step)
    phases = ([rl_act + rl_head] if "rl" in recipe.stages else []) + ([sft_act + sft_head] if "sft" in recipe.stages else [])
    learner = persistent + step_extra + max(phases, default=0.0)
    vllm = recipe.rollout.vllm
    if engine == "vllm":
        eng_weights = (2 if bf16 else 4) * P
        if device == "cuda":
            kv = vllm.gpu_memory_utilization * device_gib * GIB - eng_weights
        else:
            kv = vllm.kv_cache_gib * GIB
        rollout = eng_weights + max(kv, 0.0)
        sleep = vllm.sleep == "auto" and device == "cuda" and ro.workers == 0
    else:
        eng_weights, sleep = 0.0, False
        kv = ro.batch_size * seq * shape.kv_bytes_per_token(2 if bf16 else 4) + ro.batch_size * shape.vocab * 4
        rollout = kv
    runtime = (GPU_RUNTIME_GIB if device == "cuda" else CPU_RUNTIME_GIB) * GIB
    if engine == "vllm" and ro.workers == 0:
        # sleeping, vLLM gives its weights and KV back while the learner steps; awake, both stay resident
        peak = (max(learner, persistent + rollout) if sleep else learner + rollout) + runtime
    elif engine == "vllm":  # workers on other devices: this device holds the learner only
        peak = learner + runtime
    else:
        peak = max(learner, persistent + rollout) + runtime
    lines = [
        (f"weights, float32 master ({P / 1e6:,.2f}M params)", 4 * P / GIB),
        (f"gradients, float32 ({T / 1e6:,.2f}M trainable)", 4 * T / GIB),
        ("Adam moments, float32", 8 * T / GIB),
    ]
    if rl.kl_coef > 0:
        lines.append(("reference model, float32 (rl.kl_coef > 0)", 4 * P / GIB))
    if bf16:
        lines.append(("bf16 weight casts (autocast)", 2 * P / GIB))
    if "rl" in recipe.stages:
        lines += [(f"RL activations, micro-batch {micro} x {seq} tokens{' (checkpointed)' if gc else ''}", rl_act / GIB),
                  (f"RL log-prob head, {micro} x {ro.max_new_tokens} x vocab {shape.vocab}", rl_head / GIB)]
    if "sft" in recipe.stages:
        lines.append((f"SFT activations + logits, batch {recipe.sft.batch_size} x {sft_seq} tokens", (sft_act + sft_head) / GIB))
    if engine == "vllm":
        where = "" if ro.workers == 0 else ", per worker GPU: not in this peak"
        lines += [(f"vLLM weights ({'bf16' if bf16 else 'float32'}{where})", eng_weights / GIB),
                  (f"vLLM KV cache{where}", max(kv, 0.0) / GIB)]
    else:
        lines.append((f"hf rollout KV cache + logits, batch {ro.batch_size}", kv / GIB))
    lines.append(("runtime (process / CUDA context)", runtime / GIB))
    fixes = (["rl.micro_batch_size"] + (["sft.batch_size"] if "sft" in recipe.stages else [])
             + (["rollout.vllm.gpu_memory_utilization"] if engine == "vllm" and device == "cuda" else [])
             + ([] if gc else ["model.gradient_checkpointing: true"]) + ([] if lora else ["model.lora"]))
    settings = {"engine": engine, "dtype": dtype + (" (autocast)" if bf16 else ""), "sleep": "on" if sleep else "off",
                "gradient_checkpointing": "on" if gc else "off", "micro_batch": micro,
                "placement": _placement(recipe, device, gpus)}
    return Plan(lines=lines, peak_gib=peak / GIB, device_gib=device_gib, device=device,
                fits=peak <= USABLE * device_gib * GIB, settings=settings, params=P, trainable=T, fixes=fixes)


def _placement(recipe, device: str, gpus: int | None) -> str:
    """The placement setting: learner's device reserved, workers on the others (rollout/placement.py).
    PlacementError (one line) when `gpus` GPUs cannot hold them; gpus None = one per worker + the learner's."""
    from compose_rl.rollout.placement import plan_placement

    w, i = recipe.rollout.workers, recipe.runtime.learner_gpu
    if device != "cuda":
        return "learner + engine on cpu" if w == 0 else f"learner on cpu, {w} worker(s) on CPUs (object store)"
    p = plan_placement(w, gpus if gpus is not None else max(w + 1, i + 1), True, i)
    if not p.worker_devices:
        return f"learner + engine on {p.learner}"
    return f"learner on {p.learner} (reserved), workers on {', '.join(p.worker_devices)}, weights by {p.sync} (bucketed)"


def _with_gc(recipe, on: bool):
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"gradient_checkpointing": on})})


def checkpointing_decision(recipe, device: str, device_gib: float | None = None,
                           config: dict | None = None) -> tuple[bool, str]:
    """(on, why) for model.gradient_checkpointing on the learner's `device` (of `device_gib` GiB; default:
    this machine's). true/false are taken as given; auto = on exactly when the plan's peak without it
    exceeds the device's usable memory. A config plan cannot read leaves auto off (said in `why`)."""
    gc = recipe.model.gradient_checkpointing
    if gc != "auto":
        return bool(gc), f"model.gradient_checkpointing: {str(gc).lower()}"
    if device_gib is None:
        d, mem = default_device()
        device_gib = mem if d == device else host_memory_gib()
    try:
        config = config if config is not None else model_config(recipe)[0]
        off = estimate(_with_gc(recipe, False), config, device, device_gib)
    except ValueError as e:
        return False, f"auto: off (plan cannot read the model's config: {e})"
    if off.fits:
        return False, (f"auto: off (plan's peak {off.peak_gib:.1f} GiB fits {USABLE:.0%} of {device_gib:.0f} GiB "
                       f"on {device} without it)")
    on = estimate(_with_gc(recipe, True), config, device, device_gib)
    return True, (f"auto: on (plan's peak {off.peak_gib:.1f} GiB without it, {on.peak_gib:.1f} GiB with it, "
                  f"{USABLE:.0%} of {device_gib:.0f} GiB on {device})")


def host_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def default_device() -> tuple[str, float]:
    """This machine's learner device and its memory: the first GPU when CUDA is available, else RAM."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_properties(0).total_memory / GIB
    return "cpu", host_memory_gib()
