"""Advantage estimators: pure functions on lists of rewards, tested against hand-computed values.

- `group_normalized`: GRPO (Shao et al. 2024, eq. 3): A_i = (R_i - mean_g) / (std_g + eps) within
  the group g of samples drawn for the same prompt. `scale=False` gives Dr.GRPO's unscaled
  A_i = R_i - mean_g (Liu et al. 2025), which does not up-weight nearly-solved prompts.
- `batch_mean`: A_i = R_i - mean over the whole batch (REINFORCE with a batch baseline).
- `RoleBaselines`: SPIRAL's Role-conditioned Advantage Estimation: one baseline per (game, role),
  an exponential moving average of that role's returns, A = R - b. We read b BEFORE updating it
  with the current batch (as SPIRAL's public code does), so a sample is never its own baseline;
  the baseline is updated once per sample, in order.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence


def group_normalized(rewards: Sequence[float], groups: Sequence[int], scale: bool = True,
                     eps: float = 1e-6) -> list[float]:
    by_group: dict[int, list[float]] = defaultdict(list)
    for r, g in zip(rewards, groups):
        by_group[g].append(r)
    stats = {}
    for g, rs in by_group.items():
        mean = sum(rs) / len(rs)
        # population std, as in GRPO implementations; a single-sample group has std 0
        std = (sum((r - mean) ** 2 for r in rs) / len(rs)) ** 0.5
        stats[g] = (mean, std)
    out = []
    for r, g in zip(rewards, groups):
        mean, std = stats[g]
        out.append((r - mean) / (std + eps) if scale else r - mean)
    return out


def batch_mean(rewards: Sequence[float]) -> list[float]:
    if not rewards:
        return []
    mean = sum(rewards) / len(rewards)
    return [r - mean for r in rewards]


def mixed_groups(rewards: Sequence[float], groups: Sequence[int]) -> set[int]:
    """Groups whose rewards are not all equal: the only groups that carry a GRPO gradient."""
    seen: dict[int, set[float]] = defaultdict(set)
    for r, g in zip(rewards, groups):
        seen[g].add(r)
    return {g for g, rs in seen.items() if len(rs) > 1}


class RoleBaselines:
    """EMA baseline per (game, role): b <- decay * b + (1 - decay) * R; first return initialises b = 0 -> EMA."""

    def __init__(self, decay: float = 0.95):
        self.decay = decay
        self.values: dict[str, float] = {}

    @staticmethod
    def key(game: str, role: int) -> str:
        return f"{game}/p{role}"

    def advantages(self, rewards: Sequence[float], games: Sequence[str], roles: Sequence[int]) -> list[float]:
        out = []
        for r, g, p in zip(rewards, games, roles):
            k = self.key(g, p)
            b = self.values.get(k, 0.0)
            out.append(r - b)  # read before the update
            self.values[k] = self.decay * b + (1.0 - self.decay) * r
        return out

    def state_dict(self) -> dict:
        return {"decay": self.decay, "values": dict(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.values = dict(state["values"])
