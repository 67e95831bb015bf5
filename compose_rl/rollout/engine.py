"""The Engine protocol: what the learner needs from whatever generates text.

Implementations: `HFEngine` (transformers generate, CPU or GPU) here; the vLLM engine and Ray
workers implement the same three members, so the learner never knows which it talks to.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import torch

from compose_rl.types import Completion, SamplingParams


class Engine(Protocol):
    policy_version: int

    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt (already formatted: chat template applied)."""
        ...

    def load_weights(self, state: Mapping[str, torch.Tensor], version: int) -> None:
        """Replace the engine's weights with the learner's and stamp samples with `version`."""
        ...
