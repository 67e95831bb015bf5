"""Advantage estimators: pure functions on lists of rewards, tested against hand-computed values.

- `group_normalized`: GRPO (Shao et al. 2024, eq. 3): A_i = (R_i - mean_g) / (std_g + eps) within
  the group g of samples drawn for the same prompt. `scale=False` gives Dr.GRPO's unscaled
  A_i = R_i - mean_g (Liu et al. 2025), which does not up-weight nearly-solved prompts.
- `batch_mean`: A_i = R_i - mean over the whole batch (REINFORCE with a batch baseline).
- `RoleBaselines`: SPIRAL's Role-conditioned Advantage Estimation (Liu et al. 2025, sec. 3.3): one
  baseline b per (game, role), an exponential moving average of that role's returns, A = R - b.
  Within one batch, exactly (see `RoleBaselines.advantages`):
    1. every baseline is read once, at the start of the batch;
    2. every turn of role p in game instance e gets A = R - b[game(e), p], where R is that turn's
       reward (the role's final return; a retry-penalty sample's own penalty);
    3. then each baseline is updated once per game instance that role played in, with that game's
       return, in the order the game instances first appear in the batch. Retry-penalty samples
       never feed the baseline. A game therefore never sees its own return in its baseline, and a
       long game weighs the same as a short one.
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
    """EMA baseline per (game, role): b <- decay * b + (1 - decay) * R, once per game instance; b starts at 0."""

    def __init__(self, decay: float = 0.95):
        self.decay = decay
        self.values: dict[str, float] = {}

    @staticmethod
    def key(game: str, role: int) -> str:
        return f"{game}/p{role}"

    def advantages(self, rewards: Sequence[float], games: Sequence[str], roles: Sequence[int],
                   episodes: Sequence[int], retries: Sequence[bool] | None = None,
                   states: Sequence[str] | None = None) -> list[float]:
        """A = R - b for every sample, then one EMA update per (game instance, role) (see the module docstring).

        `episodes[i]` identifies the game instance of sample i (its turns share it); `retries[i]` marks a
        retry-penalty sample (its advantage uses the batch-start baseline, it never updates it).
        `states[i]`, if given, is sample i's information state (its prompt): one baseline per (game, role,
        state) instead of per (game, role), updated once per game instance and state with that turn's
        return. It is read before the batch, so it does not depend on the action taken: A stays unbiased,
        and the value of what the player holds (Kuhn's card) leaves the advantage.
        """
        if states is not None:
            roles = [f"{p}/{st}" for p, st in zip(roles, states)]
        retries = [False] * len(rewards) if retries is None else retries
        if not len(rewards) == len(games) == len(roles) == len(episodes) == len(retries):
            raise ValueError("RoleBaselines.advantages: rewards, games, roles, episodes and retries differ in length")
        # 1-2. baselines as they stood at the start of the batch
        out = [r - self.values.get(self.key(g, p), 0.0) for r, g, p in zip(rewards, games, roles)]
        # 3. one return per (game instance, role), in order of first appearance
        returns: dict[tuple[int, str, int], float] = {}
        for r, g, p, e, retry in zip(rewards, games, roles, episodes, retries):
            if e < 0:
                raise ValueError("rl.advantage rae: a sample has no game instance id (Sample.episode < 0); "
                                 "RAE needs self-play samples from rollout/selfplay.py")
            if retry:
                continue
            seen = returns.setdefault((e, g, p), r)
            if seen != r:
                raise ValueError(f"rl.advantage rae: turns of one game instance ({g} #{e}, role {p}) carry "
                                 f"different returns ({seen} and {r}); every non-retry turn must carry the final return")
        for (_e, g, p), r in returns.items():
            k = self.key(g, p)
            self.values[k] = self.decay * self.values.get(k, 0.0) + (1.0 - self.decay) * r
        return out

    def state_dict(self) -> dict:
        return {"decay": self.decay, "values": dict(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.values = dict(state["values"])
