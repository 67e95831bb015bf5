"""Host memory the process no longer uses goes back to the OS.

Two allocators keep the pages of what was freed:
- glibc's malloc keeps the pages of freed chunks in its heap: after stage 1 (activations of batch x
  sequence x width on the games' long prompts) and after every RL step (rollout and learner tensors of
  ever-changing shapes) the resident set stays at the high-water mark of what was ever freed, not at
  what is alive. Measured on tic-tac-toe (docs/results/long-runs.md): a resumed RL process went from
  983 to 1288 MB resident over 30 steps while `malloc_trim(0)` brought it back to 596 MB at every
  tenth step (596 MB = live memory, flat); a process that had just run 5 SFT steps held 1841 MB,
  704 MB after the trim. A trim takes ~10 ms here.
- Arrow's memory pool (mimalloc in pyarrow 26), which holds the stage-1 dataset (`datasets.Dataset`
  is Arrow tables): freed, its pages stay mapped in mimalloc's own segments, out of glibc's reach.
  After 10 SFT steps of transfer-ttt (16000 tokenized examples) one 1 GiB anonymous mapping held
  184 MB resident with 0 bytes allocated in Arrow, through all of RL; `release_unused()` returns them.
  Only done where pyarrow is already imported (stage 1 ran in this process): never imported here.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache


@cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator returns memory itself
        return None


def return_freed_heap(collect: bool = True) -> None:
    """gc (when `collect`), then Arrow's pool's unused pages (if pyarrow is loaded) and glibc's
    malloc_trim(0) (nothing on other C libraries)."""
    if collect:
        gc.collect()
    pa = sys.modules.get("pyarrow")
    if pa is not None and hasattr(pa, "default_memory_pool"):
        pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
