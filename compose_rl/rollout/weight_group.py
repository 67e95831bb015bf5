"""Weight sync over a collective: the learner broadcasts flat weight buffers to every rollout worker.

The alternative to the object store (`ray_weights.pack_state` + `ray.put`) for
`rollout.weight_sync: collective`. Rank 0 is the learner's process, ranks 1..N the Ray actors. The
group is a standalone torch.distributed process group built on its own TCPStore, so it touches
neither the default process group nor the one an in-process vLLM engine initialises:

- `gloo` (CPU tensors; works anywhere, what the tests exercise);
- `nccl` (CUDA tensors, GPU to GPU, no host copy) — needs every rank on its own GPU (NCCL refuses two
  ranks on one device), i.e. the learner on one GPU and each worker on a whole other GPU.

Layout: the weights are grouped by dtype into one flat buffer per dtype (one broadcast call per dtype,
not per tensor); tensors sharing storage (tied embeddings) travel once and are re-tied on arrival.
The layout (names, shapes, dtypes, offsets) is fixed when the group opens and sent to the workers
once; every later sync sends only the buffers.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Mapping

import torch

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool)}


@dataclass(frozen=True)
class FlatLayout:
    """Where every tensor of a state dict sits in the per-dtype flat buffers.

    `slots[name] = (dtype, offset, shape)` for tensors that travel; `aliases[name] = other` for
    tensors that share storage with `other` (sent once)."""

    names: tuple[str, ...]
    slots: dict[str, tuple[str, int, tuple[int, ...]]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # dtype -> numel of its buffer

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> "FlatLayout":
        slots, aliases, sizes, seen = {}, {}, {}, {}
        for name, t in state.items():
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
            if ident in seen:
                aliases[name] = seen[ident]
                continue
            seen[ident] = name
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype not in _DTYPES:
                raise ValueError(f"weight sync: tensor {name} has dtype {dtype}, which the collective path cannot send")
            off = sizes.get(dtype, 0)
            slots[name] = (dtype, off, tuple(t.shape))
            sizes[dtype] = off + t.numel()
        return cls(tuple(state), slots, aliases, sizes)

    def empty_buffers(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        return {d: torch.empty(n, dtype=_DTYPES[d], device=device) for d, n in sorted(self.sizes.items())}

    def pack(self, state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The flat buffers of `state` (which must have this layout's names, shapes and dtypes)."""
        bufs = self.empty_buffers(device)
        for name, (dtype, off, shape) in self.slots.items():
            t = state[name].detach()
            if tuple(t.shape) != shape or str(t.dtype).removeprefix("torch.") != dtype:
                raise ValueError(f"weight sync: {name} is {tuple(t.shape)} {t.dtype}, the group was opened "
                                 f"for {shape} {dtype}; reopen the group after changing the model")
            bufs[dtype][off:off + t.numel()].copy_(t.reshape(-1))
        return bufs

    def unpack(self, bufs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of views into `bufs`, in the original order, aliases re-tied."""
        out: dict[str, torch.Tensor] = {}
        for name, (dtype, off, shape) in self.slots.items():
            n = 1
            for s in shape:
                n *= s
            out[name] = bufs[dtype][off:off + n].view(shape)
        for name, other in self.aliases.items():
            out[name] = out[other]
        return {k: out[k] for k in self.names}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_address() -> str:
    """This node's address as other nodes of the Ray cluster see it (127.0.0.1 without Ray)."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001
        return "127.0.0.1"


class WeightGroup:
    """One rank's membership of the weight group (rank 0 hosts its TCPStore).

    Construction blocks until all `world` ranks joined (or `timeout_s` passed)."""

    def __init__(self, host: str, port: int, rank: int, world: int, backend: str, timeout_s: float = 120.0):
        import torch.distributed as dist

        if backend not in ("gloo", "nccl"):
            raise ValueError(f"weight group backend must be gloo or nccl (got {backend!r})")
        timeout = timedelta(seconds=timeout_s)
        self.rank, self.world, self.backend = rank, world, backend
        self.store = dist.TCPStore(host, port, world, is_master=(rank == 0), timeout=timeout, wait_for_workers=False)
        prefixed = dist.PrefixStore("compose-rl-weights", self.store)
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(prefixed, rank, world, timeout)
        else:
            if not hasattr(dist, "ProcessGroupNCCL"):
                raise ValueError("rollout.weight_sync: the nccl backend needs a CUDA build of torch")
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(prefixed, rank, world, opts)

    def broadcast(self, bufs: Mapping[str, torch.Tensor], src: int = 0) -> None:
        """Broadcast every flat buffer from `src` (in place on the other ranks), in dtype order."""
        import torch.distributed as dist

        for dtype in sorted(bufs):
            opts = dist.BroadcastOptions()
            opts.rootRank = src
            opts.rootTensor = 0
            self.pg.broadcast([bufs[dtype]], opts).wait()

    def close(self) -> None:
        for obj in (self.pg,):
            abort = getattr(obj, "abort", None) or getattr(obj, "shutdown", None)
            if abort is not None:
                try:
                    abort()
                except Exception:  # noqa: BLE001 - best effort: peers may be gone already
                    pass
        self.pg = None
        self.store = None
