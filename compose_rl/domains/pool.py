"""The past-self opponent pool of the game domain (`games.opponent: pool`, `games.pool_size`)."""
from __future__ import annotations

import random

import torch


class SnapshotPool:
    """Past policies for opponent=pool: at most `size` state dicts, oldest dropped first, each copied
    to CPU (a snapshot on the GPU would hold a full extra model there per entry)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.snapshots)

    def add(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()})
        del self.snapshots[:-self.size]

    def pick(self, rng: random.Random) -> dict[str, torch.Tensor]:
        return rng.choice(self.snapshots)
