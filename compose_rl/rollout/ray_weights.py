"""Weights through Ray's object store: a state dict packed as numpy buffers (one copy in, zero-copy reads)."""
from __future__ import annotations

from typing import Any, Mapping

import torch


# ------------------------------------------------------------------------------- weights in the object store
def pack_state(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A state dict as numpy arrays, for `ray.put`: numpy buffers are written to the object store
    with one copy and read by every actor without any (zero-copy, read-only), where pickled torch
    tensors are serialised and deserialised whole. Tensors sharing storage (tied embeddings) are
    stored once. bfloat16/float8 (no numpy dtype) travel as same-width integers."""
    out: dict[str, Any] = {}
    seen: dict[tuple, str] = {}
    for k, v in state.items():
        v = v.detach()
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if ident in seen:
            out[k] = ("alias", seen[ident])
            continue
        seen[ident] = k
        v = v.to("cpu").contiguous()
        dtype = str(v.dtype).removeprefix("torch.")
        try:
            arr = v.numpy()
        except TypeError:  # bfloat16 etc.: ship the bits
            arr = v.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[v.element_size()]).numpy()
        out[k] = ("tensor", arr, dtype)
    return out


def unpack_state(packed: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of pack_state. The tensors view the (read-only) object-store buffers: engines copy
    them into their own parameters and must not write to them."""
    import warnings

    out: dict[str, torch.Tensor] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        for k, item in packed.items():
            if item[0] == "tensor":
                t = torch.from_numpy(item[1])
                dtype = getattr(torch, item[2])
                out[k] = t if t.dtype == dtype else t.view(dtype)
    for k, item in packed.items():
        if item[0] == "alias":
            out[k] = out[item[1]]
    return {k: out[k] for k in packed}
