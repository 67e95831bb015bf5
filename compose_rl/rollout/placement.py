"""Where the learner and the rollout workers run on GPUs, and how weights reach the workers: pure functions of
device counts, so the rules are tested without a GPU (tests/test_placement.py).

Rules (issue 19):
- The learner's GPU is reserved: `runtime.learner_gpu` (default 0) is the learner's device, and no rollout
  worker is placed on it. For a Ray this process starts, Ray is started with that GPU hidden
  (CUDA_VISIBLE_DEVICES of the Ray instance = every other GPU, `ray_visible_devices`), so Ray hands the
  workers the other GPUs only, whatever order it allocates in. On an existing cluster (`ray.address`) the
  driver's node must not offer the learner's GPU to Ray (start its raylet with CUDA_VISIBLE_DEVICES set
  likewise, or `--num-gpus` one lower): the count check then uses the cluster's GPUs as Ray reports them.
- Each worker on a GPU machine gets one whole GPU of its own (vLLM and NCCL both refuse to share a device
  with another rank), so N workers need N + 1 GPUs on one node (N on a cluster besides the learner's).
  Asking for more is refused in one line before anything is written (`PlacementError`, exit 2).
- No GPU (or a CPU learner): learner and workers on CPUs, no device constraint.

Weight sync (`sync_mode`): `in_process` when the engine lives in the learner's process (workers: 0; vLLM
runs its engine core in this process, so the learner's CUDA tensors are handed over directly: no copy, no
IPC), `nccl` bucketed broadcast when every worker has a GPU of its own (rollout/weight_buckets.py: peak extra
memory one bucket on the learner's GPU), `object_store` on CPUs (Ray's shared memory, zero-copy on one node).
"""
from __future__ import annotations

from dataclasses import dataclass


class PlacementError(ValueError):
    """A placement the devices cannot hold; one line naming the key and what would fit."""


@dataclass(frozen=True)
class Placement:
    learner: str                    # "cuda:I" or "cpu"
    worker_devices: tuple[str, ...]  # one entry per worker: "cuda:J" (physical index) or "cpu"
    gpus_per_worker: float          # what each Ray actor asks for (0 or 1)
    ray_visible_devices: str | None  # CUDA_VISIBLE_DEVICES for a Ray this process starts (None: leave it)
    sync: str                       # in_process | nccl | object_store

    def line(self) -> str:
        if not self.worker_devices:
            return f"placement: learner + engine on {self.learner} (in-process engine, weights handed over directly)"
        where = ", ".join(sorted(set(self.worker_devices), key=self.worker_devices.index))
        return (f"placement: learner on {self.learner} (reserved), {len(self.worker_devices)} rollout worker(s) on "
                f"{where}; weight sync {self.sync}")


def plan_placement(workers: int, gpus: int, learner_on_gpu: bool, learner_gpu: int = 0,
                   cluster_gpus: int | None = None) -> Placement:
    """The Placement of `workers` rollout workers beside a learner on `learner_gpu` of a node with `gpus`
    visible GPUs (`cluster_gpus`: the GPUs an existing Ray cluster offers, learner's excluded, when joining
    one). Raises PlacementError (one line) when it cannot hold them."""
    if workers < 0:
        raise PlacementError(f"rollout.workers: {workers} is negative; use 0 (in process) or more")
    if not learner_on_gpu or gpus == 0:
        return Placement("cpu", ("cpu",) * workers, 0.0, None, "in_process" if workers == 0 else "object_store")
    if not 0 <= learner_gpu < gpus:
        raise PlacementError(f"runtime.learner_gpu: {learner_gpu} is not a GPU here (0..{gpus - 1} visible)")
    learner = f"cuda:{learner_gpu}"
    if workers == 0:
        return Placement(learner, (), 0.0, None, "in_process")
    others = [i for i in range(gpus) if i != learner_gpu]
    if cluster_gpus is not None:  # an existing cluster: Ray places the workers; only the count is known here
        if workers > cluster_gpus:
            raise PlacementError(
                f"rollout.workers: {workers} workers need {workers} GPUs besides the learner's; the Ray cluster "
                f"offers {cluster_gpus}; use rollout.workers <= {cluster_gpus} or add GPU nodes")
        return Placement(learner, ("cuda (Ray cluster)",) * workers, 1.0, None, "nccl")
    if workers > len(others):
        raise PlacementError(
            f"rollout.workers: {workers} workers need {workers + 1} GPUs (one each, plus the learner's {learner}, "
            f"reserved); the node has {gpus}; use rollout.workers <= {len(others)}"
            + (" or rollout.workers: 0 (the engine beside the learner)" if len(others) == 0 else ""))
    return Placement(learner, tuple(f"cuda:{i}" for i in others[:workers]), 1.0,
                     ",".join(str(i) for i in others), "nccl")


def ray_devices_env(visible: str | None, parent: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for the Ray instance: `visible` indexes this process's visible GPUs, which
    are themselves `parent` (this process's CUDA_VISIBLE_DEVICES, None = all) — map back to the
    physical ids Ray must see."""
    if visible is None:
        return parent
    if not parent:
        return visible
    ids = [p.strip() for p in parent.split(",") if p.strip()]
    return ",".join(ids[int(i)] for i in visible.split(",")) if visible else ""
