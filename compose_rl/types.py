"""Typed records shared by every part: the only things that cross process or Ray boundaries."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """How an engine samples. `n` completions are returned per prompt."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    n: int = 1
    seed: int | None = None


@dataclass
class Completion:
    """One generated continuation: token ids and the sampling policy's log-probability of each."""

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" (EOS) or "length" (hit max_new_tokens: truncated)
    policy_version: int = 0

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class Sample:
    """One training sample: a prompt, the policy's response, and how good it was.

    For string tasks one sample is one answer; in self-play one sample is one turn of one seat.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    reward: float
    prompt: str = ""
    completion: str = ""
    advantage: float = 0.0
    group: int = 0  # samples drawn for the same prompt (string tasks) or the same game share a group id
    game: str = ""
    role: int = 0
    turn: int = 0
    episode: int = -1  # self-play: the game instance (index in its collection batch) this turn belongs to; -1 = none
    retry: bool = False  # self-play retry mode: an invalid attempt that was re-prompted (reward = the penalty)
    policy_version: int = 0
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
