"""Precision and threads: resolved once from the recipe, never left to a library's default.

`model.dtype` (auto | float32 | bfloat16) and `runtime.threads` (null = auto | N) are turned into
concrete settings here, printed at the start of a run and written to `precision.json` in the run
directory, which the report prints.

bfloat16 here means *autocast*: the weights, their gradients and Adam's state stay float32 (the
master copy), the matmuls of the forward and backward passes run in bfloat16, and log-softmax /
losses in float32 (torch's autocast policy). It is what TRL/accelerate do for SFT with `bf16=True`,
so stage 1 and the RL learner share one precision. Pure bf16 weights were not chosen: an Adam
update of 1e-6 x a weight of order 1 is below bf16's resolution (8 bits of mantissa) and would be
lost, and SPIRAL's RL learning rate is 1e-6.

Why `auto` keeps float32 on CPU for the tiny model (measured, docs/results/scale.md): a recipe must give
the same numbers on every CPU of the kind we run on, and bf16 on a CPU without bf16 instructions runs in
an emulated path (stage 1 of the main job at 4.5-5 s/step against 0.7 s/step in float32 on a 2-core
AVX2 EPYC). On a CPU *with* avx512_bf16 bf16 autocast was at least as fast (interleaved medians
1.6-2.0 vs 2.1-2.4 s/step on a loaded machine), but taking it there would make the shipped tiny
results depend on the machine. So `auto` = float32 for `tiny` everywhere except
CUDA. Other models: bfloat16 where the device runs it natively (CUDA with bf16 support; a CPU whose
flags list `avx512_bf16` or `amx_bf16`), else float32; `model.dtype: bfloat16` forces it anywhere.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The `flags` of the first processor in /proc/cpuinfo (empty where the file does not exist)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_native_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16): bf16 matmuls are not emulated."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)


def cuda_usable() -> bool:
    """CUDA can run a kernel here (is_available alone is True on some broken installs)."""
    if not torch.cuda.is_available():
        return False
    try:
        torch.zeros(1, device="cuda").add_(1)
        return True
    except Exception:  # noqa: BLE001 - a driver/toolkit mismatch shows up as any of several errors
        return False


def device_kind(requested: str = "auto") -> str:
    """The learner's device for runtime.device: `cuda` when asked or (auto) when CUDA is available, else `cpu`."""
    if requested in ("cpu", "cuda"):
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(requested: str, model_name: str, device: str, flags: set[str] | None = None,
                  cuda_bf16: bool | None = None) -> str:
    """`float32` or `bfloat16` for `model.dtype` = `requested` (see the module docstring for `auto`).

    Raises ValueError (one line naming the key) when bfloat16 is asked of a device that cannot run it."""
    if device == "cuda":
        native = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
    else:
        native = cpu_native_bf16(flags)
    if requested == "float32":
        return "float32"
    if requested == "bfloat16":
        if device == "cuda" and not native:
            raise ValueError("model.dtype: this GPU does not support bfloat16; use float32 or auto")
        # a CPU without bf16 instructions still computes bf16 (emulated, ~7x slower): allowed, because
        # it is the only way to reproduce a GPU run's numerics on a CPU, but say it
        return "bfloat16"
    if requested != "auto":
        raise ValueError(f"model.dtype: {requested!r} is not one of auto, float32, bfloat16")
    if device == "cuda":
        return "bfloat16" if native else "float32"
    if model_name == "tiny":
        return "float32"
    return "bfloat16" if native else "float32"


def resolve_mismatch_correction(requested: str, dtype: str, engine: str) -> bool:
    """Whether the learner weights current-policy samples by min(pi_old / mu, c) (rollout.mismatch_correction).

    auto = on when the sampler's numerics are not the learner's: a bf16 learner (the engine decodes with a
    KV cache in bf16 while the learner runs one full forward pass: 5e-4..1e-3 nats/token mean, 8e-3 max on
    the tiny model, docs/results/scale.md) or a vLLM engine (its own kernels and sampler; Yao et al. 2025,
    "Your efficient RL framework secretly brings you off-policy RL training", measured the vLLM/FSDP gap
    that this truncated IS corrects). Off for a float32 learner sampling in-process (hf): the gap is ~1e-7
    nats, the weights would be 1 +- 1e-7, and the shipped float32 results stay bit-identical."""
    if requested in ("on", "off"):
        return requested == "on"
    if requested != "auto":
        raise ValueError(f"rollout.mismatch_correction: {requested!r} is not one of auto, on, off")
    return dtype == "bfloat16" or engine != "hf"


def resolve_threads(requested: int | None, model_name: str) -> int:
    """Intra-op threads of the learner's process for `runtime.threads` (null = auto).

    auto: 1 for the tiny model (its matmuls are too small to split: 1 and 2 threads ran at the same
    speed idle, and 2 threads stalled 1.5-10x when another process held a core); the CPUs this
    process may use for every other model."""
    if requested is not None:
        return int(requested)
    if model_name == "tiny":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def autocast(device: str, dtype: str):
    """The forward/backward context of the learner for a resolved dtype (a no-op for float32)."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=(dtype == "bfloat16"))


@dataclass(frozen=True)
class Precision:
    """Every numerics/speed setting a run resolved, as written to precision.json and printed by the report."""

    device: str
    dtype: str  # float32 | bfloat16 (bf16 = autocast, float32 master weights and Adam state)
    requested_dtype: str
    threads: int
    requested_threads: int | None
    cpu_native_bf16: bool
    tf32: bool
    gradient_checkpointing: bool
    sft_max_length: int | None
    sft_packing: bool
    sft_padding_free: bool
    rl_micro_batch_size: int | None
    vllm_dtype: str
    mismatch_correction: bool = False  # current-policy samples weighted by min(pi_old / mu, is_trunc)
    gradient_checkpointing_why: str = ""  # the recipe's value, or auto's decision from the plan

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        mode = "bf16 autocast, float32 weights + Adam state" if self.dtype == "bfloat16" else "float32"
        return (f"precision: {mode} on {self.device} (model.dtype {self.requested_dtype}; CPU bf16 instructions: "
                f"{'yes' if self.cpu_native_bf16 else 'no'}), tf32 {'on' if self.tf32 else 'off'}, "
                f"{self.threads} intra-op thread(s) (runtime.threads {self.requested_threads or 'auto'}), "
                f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}"
                f"{f' ({self.gradient_checkpointing_why})' if self.gradient_checkpointing_why else ''}, sampler/learner "
                f"log-prob mismatch correction {'on' if self.mismatch_correction else 'off'}")


def resolve(recipe, device: str | None = None) -> Precision:
    """The Precision of `recipe` on this machine (device: the learner's; default: CUDA when available)."""
    device = device or device_kind(recipe.runtime.device)
    dtype = resolve_dtype(recipe.model.dtype, recipe.model.name, device)
    from compose_rl.plan import checkpointing_decision

    gc, gc_why = checkpointing_decision(recipe, device)
    return Precision(
        device=device, dtype=dtype, requested_dtype=recipe.model.dtype,
        threads=resolve_threads(recipe.runtime.threads, recipe.model.name),
        requested_threads=recipe.runtime.threads, cpu_native_bf16=cpu_native_bf16(),
        tf32=False, gradient_checkpointing=gc, gradient_checkpointing_why=gc_why,
        sft_max_length=None, sft_packing=False, sft_padding_free=False,
        rl_micro_batch_size=recipe.rl.micro_batch_size, vllm_dtype=dtype,
        mismatch_correction=resolve_mismatch_correction(recipe.rollout.mismatch_correction, dtype,
                                                        recipe.rollout.engine))


def apply_threads(n: int) -> None:
    """Set the process's intra-op threads (torch and the OpenMP pool it uses)."""
    torch.set_num_threads(n)
