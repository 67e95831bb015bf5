"""Bucketed weight broadcast: the learner's weights go out in buckets of at most `bucket_bytes`, through one
reused buffer, so the peak extra memory of a sync is one bucket (the previous flat layout allocated a full
copy of the weights per sync: ~8 GiB in bf16 at 4B parameters).

    plan = BucketPlan.of(state, bucket_bytes)        # fixed while the model's names/shapes/dtypes are
    plan.send(state, transmit, device)               # learner: pack bucket i into the buffer, transmit it
    plan.receive(receive, deliver, device)           # worker: receive bucket i, deliver the finished tensors

Each bucket holds pieces of one dtype: whole tensors, or, for a tensor larger than a bucket (an embedding of
151,936 x 2560), consecutive element ranges of its flattened view, so no bucket ever exceeds `bucket_bytes`.
Every tensor is covered exactly once (tests/test_weight_buckets.py checks both). Tensors that share storage
(tied embeddings) travel once and are delivered under every name. The bytes of a bucket travel as a uint8
tensor, so gloo (CPU, the tests) and NCCL (GPU to GPU, never run here) move any dtype alike.

The receiver hands each bucket's finished tensors to `deliver` (the engine copies them into its own
parameters: HF `load_state_dict(strict=False)`, vLLM `load_weights`), so its extra memory is one bucket plus
the one split tensor being assembled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

DEFAULT_BUCKET_BYTES = 512 * 2 ** 20


@dataclass(frozen=True)
class Piece:
    name: str
    start: int   # element range [start, stop) of the flattened tensor
    stop: int
    offset: int  # element offset in the bucket


@dataclass(frozen=True)
class Bucket:
    dtype: str
    pieces: tuple[Piece, ...]
    numel: int


def _dtype(name: str) -> torch.dtype:
    d = getattr(torch, name, None)
    if not isinstance(d, torch.dtype):
        raise ValueError(f"weight sync: unknown dtype {name}")
    return d


@dataclass(frozen=True)
class BucketPlan:
    names: tuple[str, ...]                             # every name of the state dict, in order
    shapes: dict[str, tuple[str, tuple[int, ...]]]     # traveling tensors: (dtype, shape)
    aliases: dict[str, str]                            # name -> the traveling tensor it shares storage with
    buckets: tuple[Bucket, ...]
    bucket_bytes: int

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> "BucketPlan":
        shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
        aliases: dict[str, str] = {}
        seen: dict[tuple, str] = {}
        for name, t in state.items():
            ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
            if ident in seen:
                aliases[name] = seen[ident]
                continue
            seen[ident] = name
            shapes[name] = (str(t.dtype).removeprefix("torch."), tuple(t.shape))
        buckets: list[Bucket] = []
        for dtype in sorted({d for d, _ in shapes.values()}):
            cap = bucket_bytes // _dtype(dtype).itemsize  # elements per bucket
            if cap < 1:
                raise ValueError(f"weight sync: a bucket of {bucket_bytes} bytes cannot hold one {dtype} element")
            pieces: list[Piece] = []
            used = 0
            for name, (d, shape) in shapes.items():
                if d != dtype:
                    continue
                n, start = 1, 0
                for s in shape:
                    n *= s
                while start < n:  # fill the open bucket, splitting a tensor across buckets where needed
                    take = min(n - start, cap - used)
                    pieces.append(Piece(name, start, start + take, used))
                    used, start = used + take, start + take
                    if used == cap:
                        buckets.append(Bucket(dtype, tuple(pieces), used))
                        pieces, used = [], 0
            if pieces:
                buckets.append(Bucket(dtype, tuple(pieces), used))
        return cls(tuple(state), shapes, aliases, tuple(buckets), bucket_bytes)

    def buffer(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """The one reused byte buffer: the largest bucket's size (never more than bucket_bytes)."""
        size = max((b.numel * _dtype(b.dtype).itemsize for b in self.buckets), default=0)
        return torch.empty(size, dtype=torch.uint8, device=device)

    @staticmethod
    def _view(buf: torch.Tensor, bucket: Bucket) -> tuple[torch.Tensor, torch.Tensor]:
        """(the bucket's bytes, the same memory as its dtype)."""
        raw = buf[: bucket.numel * _dtype(bucket.dtype).itemsize]
        return raw, raw.view(_dtype(bucket.dtype))

    def send(self, state: Mapping[str, torch.Tensor], transmit: Callable[[torch.Tensor], None],
             device: str | torch.device = "cpu") -> None:
        """Pack each bucket into one reused buffer on `device` and `transmit` its bytes (in plan order)."""
        for name, (dtype, shape) in self.shapes.items():
            t = state[name]
            if tuple(t.shape) != shape or str(t.dtype).removeprefix("torch.") != dtype:
                raise ValueError(f"weight sync: {name} is {tuple(t.shape)} {t.dtype}, the plan was made for "
                                 f"{shape} {dtype}; make a new plan after changing the model")
        buf = self.buffer(device)
        for bucket in self.buckets:
            raw, typed = self._view(buf, bucket)
            for p in bucket.pieces:
                src = state[p.name].detach().reshape(-1)[p.start:p.stop]
                typed[p.offset:p.offset + (p.stop - p.start)].copy_(src)
            transmit(raw)

    def receive(self, receive: Callable[[torch.Tensor], None],
                deliver: Callable[[dict[str, torch.Tensor]], None], device: str | torch.device = "cpu") -> None:
        """`receive` fills each bucket's bytes in place (plan order); `deliver` gets the tensors each bucket
        finished, under every name (aliases included). Delivered tensors view the reused buffer (or an
        assembly tensor): copy them before the next bucket arrives, as engines do."""
        buf = self.buffer(device)
        partial: dict[str, torch.Tensor] = {}  # a split tensor being assembled
        by_target: dict[str, list[str]] = {}
        for a, t in self.aliases.items():
            by_target.setdefault(t, []).append(a)
        for bucket in self.buckets:
            raw, typed = self._view(buf, bucket)
            receive(raw)
            done: dict[str, torch.Tensor] = {}
            for p in bucket.pieces:
                dtype, shape = self.shapes[p.name]
                n = p.stop - p.start
                chunk = typed[p.offset:p.offset + n]
                full = 1
                for s in shape:
                    full *= s
                if p.start == 0 and p.stop == full:
                    done[p.name] = chunk.view(shape)
                    continue
                if p.name not in partial:
                    partial[p.name] = torch.empty(full, dtype=_dtype(dtype), device=device)
                partial[p.name][p.start:p.stop].copy_(chunk)
                if p.stop == full:
                    done[p.name] = partial.pop(p.name).view(shape)
            for name in list(done):
                for a in by_target.get(name, ()):
                    done[a] = done[name]
            if done:
                deliver(done)

    def peak_extra_bytes(self) -> int:
        """Extra memory of a sync on the sender: the reused buffer."""
        return self.buffer("meta").numel()
