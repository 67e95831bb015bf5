"""Host memory the process no longer uses goes back to the OS.

glibc's malloc keeps the pages of freed chunks in its heap: after stage 1 (activations of batch x
sequence x width on the games' long prompts) and after every RL step (rollout and learner tensors of
ever-changing shapes) the resident set stays at the high-water mark of what was ever freed, not at
what is alive. Measured on tic-tac-toe (docs/results/long-runs.md): a resumed RL process went from
983 to 1288 MB resident over 30 steps while `malloc_trim(0)` brought it back to 596 MB at every
tenth step (596 MB = live memory, flat); a process that had just run 5 SFT steps held 1841 MB,
704 MB after the trim. A trim takes ~10 ms here.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator returns memory itself
        return None


def return_freed_heap(collect: bool = True) -> None:
    """gc (when `collect`), then glibc's malloc_trim(0); nothing on other C libraries."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
