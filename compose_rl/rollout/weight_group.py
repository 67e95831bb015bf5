"""Weight sync over a collective: the learner broadcasts its weights, bucketed, to every rollout worker.

The alternative to the object store (`ray_weights.pack_state` + `ray.put`) for
`rollout.weight_sync: collective`. Rank 0 is the learner's process, ranks 1..N the Ray actors. The
group is a standalone torch.distributed process group built on its own TCPStore, so it touches
neither the default process group nor the one an in-process vLLM engine initialises:

- `gloo` (CPU tensors; works anywhere, what the tests exercise);
- `nccl` (CUDA tensors, GPU to GPU, no host copy) — needs every rank on its own GPU (NCCL refuses two
  ranks on one device), i.e. the learner on one GPU and each worker on a whole other GPU.

What travels: the weights in buckets of at most rollout.weight_bucket_mib through one reused buffer
(weight_buckets.py: BucketPlan), one broadcast per bucket; the plan is fixed when the group opens and sent
to the workers once.
"""
from __future__ import annotations

import socket
from datetime import timedelta

import torch

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

    def broadcast_one(self, t: torch.Tensor, src: int = 0) -> None:
        """Broadcast one tensor from `src` (in place on the other ranks): a weight bucket's bytes."""
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = src
        opts.rootTensor = 0
        self.pg.broadcast([t], opts).wait()

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
