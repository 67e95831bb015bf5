"""Ray rollout workers: N actors, each holding an engine (HF or vLLM), behind the Engine protocol.

    pool = RayRolloutPool(HFWorkerEngine(folder), n_workers=2)      # local Ray, 2 actors
    pool.load_weights(policy.state_dict_for_inference(), version=1)  # ray.put once, every actor loads
    pool.generate(prompts, sampling)                                  # contiguous shards, order kept

Where Ray runs and how it is joined: ray_connect.py (`connect_ray`). Packing weights for the object
store: ray_weights.py (`pack_state`, `unpack_state`).

Actors
Each actor sets torch to 1 thread (two processes with 2 threads each on 2 cores are many times
slower than 1 each), seeds torch/random with (seed, rank) so that workers draw different samples,
and builds its engine with `engine_factory(rank)` — a picklable callable. It runs at the driver's
niceness (Ray's default for workers is nice 15, which starves them on a busy machine; a local Ray
is started with worker_niceness 0, and on a cluster the actor renices itself where allowed). Actors ask Ray for
min(1, cluster CPUs / N) CPUs each (plus a GPU share when `gpus_per_worker` is set).

Weights (`weight_sync`)
- `object_store` (default): `load_weights(state, version)` puts the state dict in the object store
  once (`ray.put`, numpy buffers: zero-copy reads on the same node) and every actor loads that one
  object; the ref of the latest weights is kept so a restarted actor reloads them.
- `collective`: the learner (rank 0) and the actors (ranks 1..N) form a standalone torch.distributed
  group (weight_group.py) when the first weights are sent; every sync broadcasts the weights in buckets of
  at most `bucket_bytes` through one reused buffer (weight_buckets.py). `collective_backend` `nccl` sends GPU to GPU (every rank on its own GPU), `gloo` through
  host memory (anywhere; what the CPU tests run). A restarted actor gets the weights through the
  object store (put only then) and the group is re-formed at the next sync; a broadcast that fails
  because an actor died is finished the same way.

Fault tolerance
If an actor dies during `generate` (process killed, OOM, node lost: Ray raises RayActorError), it is
replaced by a new actor with the same rank, the latest weights are reloaded from the object store,
and exactly its shard is re-issued; the other shards' results are kept. Every completion therefore
appears exactly once and in prompt order. A line on the `compose_rl.rollout.ray_workers` logger
(WARNING, printed to stderr by default) says which worker died and what was redone. A shard that
kills its worker `max_restarts` times in a row raises RuntimeError. An actor that cannot start (its
constructor raises, or the cluster lacks resources) raises WorkerStartError naming the cause.

Placement (`rollout.worker_resources`)
`worker_resources[r]` is a dict of Ray custom resources actor r asks for (e.g. `{node_b: 1}` where
the node was started with `ray start --resources='{"node_b": 1}'`), so a recipe can put one worker on
each node. A replacement for an actor whose node is gone asks for the same resources only while a
live node still offers them; otherwise it starts anywhere (a WARNING says so), so losing a node
never stops a run that other nodes can carry.

Staleness (`rollout.max_lag`) and the asynchronous mode
The learner's `filter_stale` (compose_rl/rl/staleness.py) drops samples whose `policy_version` is older than
`current_version - max_lag` and returns how many it dropped (the `rollout/stale_dropped` metric).
With the synchronous `generate` every sample comes from the weights of the latest sync (lag 0).
`rollout.mode: async` (async_rollouts.py) runs whole collector steps inside the actors
(`set_collector`/`collect`) while the learner trains, and sends weights with `load_weights_async`
(no wait: an actor loads them after the collection it is running, before the next one).
"""
from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import torch

from compose_rl.rollout.ray_connect import connect_ray
from compose_rl.rollout.ray_weights import pack_state, unpack_state
from compose_rl.rollout.weight_buckets import DEFAULT_BUCKET_BYTES, BucketPlan
from compose_rl.rollout.weight_group import WeightGroup, free_port, node_address
from compose_rl.types import Completion, SamplingParams

log = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    """A rollout worker could not start; the message names the worker and the cause."""


# ------------------------------------------------------------------------------- the actor
class RolloutWorker:
    """Body of a Ray actor (wrapped with ray.remote by the pool): one engine, one thread."""

    def __init__(self, engine_factory: Callable[[int], Any], rank: int, seed: int = 0, nice: int | None = None):
        os.environ["OMP_NUM_THREADS"] = "1"
        if nice is not None:  # a cluster's raylet starts workers at nice 15 (see connect_ray): the learner's priority
            try:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            except OSError:  # not allowed to raise our priority here: keep Ray's
                pass
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        torch.set_num_threads(1)
        try:  # every actor's "Loading weights" bar would be echoed to the driver's terminal
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001
            pass
        torch.manual_seed(seed * 1_000_003 + rank)
        random.seed(seed * 1_000_003 + rank)
        self.rank = rank
        self.engine = engine_factory(rank)

    def ready(self) -> int:
        return os.getpid()

    def niceness(self) -> int:
        return os.getpriority(os.PRIO_PROCESS, 0)

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[list[Completion]]:
        return self.engine.generate(prompts, sampling)

    # ---- asynchronous mode (async_rollouts.py): a whole collector step runs here
    def set_collector(self, collector: Any) -> int:
        self._collector = collector
        return self.rank

    def collect(self, step: int) -> tuple[list, dict, list[str]]:
        """One learner step's batch, generated with the weights loaded now: the actor runs one call
        at a time, so a batch (and every game in it) never mixes policy versions."""
        return self._collector.collect(self.engine, step)

    def load_weights(self, packed: Mapping[str, Any] | None, version: int) -> int:
        self.engine.load_weights(None if packed is None else unpack_state(packed), version)
        return version

    # ---- collective weight sync (weight_group.py)
    def join_weight_group(self, host: str, port: int, rank: int, world: int, backend: str,
                          layout: BucketPlan, timeout_s: float) -> int:
        self.leave_weight_group()
        self._device = f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu"
        self._group = WeightGroup(host, port, rank, world, backend, timeout_s)
        self._layout = layout
        return rank

    def receive_weights(self, version: int) -> int:
        """Take part in the learner's bucketed broadcast; each bucket's finished tensors go to the engine,
        which copies them (weight_buckets.py: extra memory one bucket)."""
        self._layout.receive(self._group.broadcast_one, lambda part: self.engine.load_weights(part, version),
                             self._device)
        return version

    def leave_weight_group(self) -> None:
        group = getattr(self, "_group", None)
        if group is not None:
            group.close()
        self._group = None


def shard_bounds(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous (start, end) ranges, sizes differing by at most one, empty ones left out."""
    base, extra = divmod(n_items, n_shards)
    out, start = [], 0
    for k in range(n_shards):
        size = base + (1 if k < extra else 0)
        if size:
            out.append((start, start + size))
        start += size
    return out


# ------------------------------------------------------------------------------- the pool
class RayRolloutPool:
    """N Ray actors with an engine each, used as one Engine (see the module docstring)."""

    def __init__(
        self,
        engine_factory: Callable[[int], Any],
        n_workers: int,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        *,
        seed: int = 0,
        gpus_per_worker: float = 0.0,
        max_restarts: int = 3,
        start_timeout_s: float = 300.0,
        weight_sync: str = "object_store",
        collective_backend: str = "gloo",
        group_timeout_s: float = 60.0,
        worker_resources: Sequence[Mapping[str, float]] = (),
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    ):
        if n_workers < 1:
            raise ValueError(f"RayRolloutPool: n_workers must be >= 1 (got {n_workers})")
        if weight_sync not in ("object_store", "collective"):
            raise ValueError(f"RayRolloutPool: weight_sync must be object_store or collective (got {weight_sync!r})")
        if worker_resources and len(worker_resources) != n_workers:
            raise ValueError(f"RayRolloutPool: worker_resources lists {len(worker_resources)} workers, the pool has "
                             f"{n_workers}; give one dict per worker (or none)")
        import ray

        self.started_ray = connect_ray(ray_address, num_cpus)
        self.engine_factory = engine_factory
        self.n_workers = n_workers
        self.seed = seed
        self.max_restarts = max_restarts
        self.start_timeout_s = start_timeout_s
        self.policy_version = 0
        self.restarts = 0  # actors replaced so far (for metrics and tests)
        self._weights_ref = None  # ObjectRef of the latest state dict
        self._weights_version = 0
        self.weight_sync = weight_sync
        self.collective_backend = collective_backend
        self.group_timeout_s = group_timeout_s
        self.bucket_bytes = bucket_bytes  # collective sync: the largest bucket (weight_buckets.py)
        self._group: WeightGroup | None = None  # collective: this process's membership (rank 0)
        self._layout: BucketPlan | None = None
        self._last_state: Mapping[str, torch.Tensor] | None = None  # collective: latest weights sent
        self._pending: list = []  # collective: the actor calls of the phase in progress
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        options: dict[str, Any] = {"num_cpus": min(1.0, cpus / n_workers), "max_restarts": 0,
                                   "max_task_retries": 0}
        if gpus_per_worker:
            options["num_gpus"] = gpus_per_worker
        self._actor_options = options
        self.worker_resources = [dict(r) for r in worker_resources] or [{} for _ in range(n_workers)]
        self._weight_acks: list = []  # load_weights_async calls not yet confirmed
        self._actors: list[Any] = [None] * n_workers
        self.pids: list[int] = [0] * n_workers
        self._start(list(range(n_workers)))

    # ---------------------------------------------------------------- actors
    def _start(self, ranks: list[int], placed: bool = True, fatal: bool = True) -> None:
        """Start actors for `ranks`; a failure raises WorkerStartError (and, if `fatal`, stops the pool)."""
        import ray
        from ray.exceptions import GetTimeoutError

        for r in ranks:
            resources = self.worker_resources[r] if placed else {}
            cls = ray.remote(RolloutWorker).options(**self._actor_options, resources=resources)
            self._actors[r] = cls.remote(self.engine_factory, r, self.seed, os.getpriority(os.PRIO_PROCESS, 0))
        for r in ranks:
            try:
                self.pids[r] = ray.get(self._actors[r].ready.remote(), timeout=self.start_timeout_s)
            except GetTimeoutError:
                if fatal:
                    self.shutdown()
                raise WorkerStartError(
                    f"rollout worker {r} did not start within {self.start_timeout_s:.0f} s (cluster resources: "
                    f"{ray.available_resources()}); lower rollout.workers or add CPUs/nodes"
                ) from None
            except Exception as e:  # noqa: BLE001 - the actor's constructor raised, or its process died
                if fatal:
                    self.shutdown()
                raise WorkerStartError(f"rollout worker {r} failed to start: {_actor_cause(e)}") from None

    def _replace(self, rank: int, why: str) -> None:
        """Replace a dead actor by a fresh one and give it the latest weights."""
        import ray

        old_pid = self.pids[rank]
        try:
            ray.kill(self._actors[rank], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        wanted = self.worker_resources[rank]
        offered = ray.cluster_resources()  # live nodes only: a lost node's custom resource is gone
        placed = all(offered.get(k, 0.0) >= v for k, v in wanted.items())
        if not placed:
            log.warning("rollout worker %d asked for %s, which no live node offers now (its node was lost?); "
                        "its replacement starts wherever Ray places it", rank, wanted)
        try:  # a node lost moments ago may still be listed: its resources look offered, the actor dies there
            self._start([rank], placed=placed, fatal=not (placed and wanted))
        except WorkerStartError as e:
            if not (placed and wanted):
                raise
            log.warning("rollout worker %d: a replacement asking for %s failed (%s); starting it wherever Ray "
                        "places it", rank, wanted, e)
            self._start([rank], placed=False)
        self.restarts += 1
        if self.weight_sync == "collective":
            self._close_group()  # re-formed with the new actor at the next sync
            if self._weights_ref is None and self._last_state is not None:
                self._weights_ref = ray.put(pack_state(self._last_state))
        ray.get(self._actors[rank].load_weights.remote(self._weights_ref, self._weights_version))
        log.warning(
            "rollout worker %d (pid %d) died %s; restarted it as pid %d with weights v%d",
            rank, old_pid, why, self.pids[rank], self._weights_version,
        )

    # ---------------------------------------------------------------- Engine protocol
    def generate(self, prompts: Sequence[str], sampling: SamplingParams) -> list[list[Completion]]:
        import ray
        from ray.exceptions import RayActorError

        prompts = list(prompts)
        if not prompts:
            return []
        jobs = {}  # shard start -> (rank, end, sampling)
        for rank, (start, end) in enumerate(shard_bounds(len(prompts), self.n_workers)):
            # a seeded request gets the seeds it would get at these positions in one engine
            s = sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + start * sampling.n)
            jobs[start] = (rank, end, s)
        pending = {self._actors[rank].generate.remote(prompts[start:end], s): start
                   for start, (rank, end, s) in jobs.items()}
        failures = {start: 0 for start in jobs}
        results: dict[int, list[list[Completion]]] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                start = pending.pop(ref)
                rank, end, s = jobs[start]
                try:
                    results[start] = ray.get(ref)
                except RayActorError as e:
                    failures[start] += 1
                    if failures[start] > self.max_restarts:
                        raise RuntimeError(
                            f"rollout worker {rank} died {failures[start]} times on the same {end - start} prompts "
                            f"(last: {_actor_cause(e)}); giving up"
                        ) from None
                    self._replace(rank, f"during generate ({_actor_cause(e)})")
                    log.warning("re-issued worker %d's shard: prompts %d..%d of %d", rank, start, end - 1, len(prompts))
                    pending[self._actors[rank].generate.remote(prompts[start:end], s)] = start
        out: list[list[Completion]] = []
        for start in sorted(results):
            out.extend(results[start])
        assert len(out) == len(prompts)
        return out

    def load_weights(self, state: Mapping[str, torch.Tensor] | None, version: int) -> None:
        import ray
        from ray.exceptions import RayActorError

        if state is not None and self.weight_sync == "collective":
            self._collective_load(state, version)
            return
        if state is not None:
            self._weights_ref = ray.put(pack_state(state))  # once; every actor reads the same object
        self._weights_version = version
        refs = {self._actors[r].load_weights.remote(self._weights_ref if state is not None else None, version): r
                for r in range(self.n_workers)}
        for ref, r in refs.items():
            try:
                ray.get(ref)
            except RayActorError as e:
                self._replace(r, f"during a weight sync ({_actor_cause(e)})")  # the new actor loads them
        self.policy_version = version

    def load_weights_async(self, state: Mapping[str, torch.Tensor], version: int) -> None:
        """Send weights without waiting: `ray.put` once, then every actor queues a load behind the call
        it is running (an actor runs its calls one at a time, in the order this process sent them), so
        a collection already running finishes with the weights it started with. Object store only (a
        collective broadcast would make every actor stop and take part). A failed load surfaces as the
        actor's death at its next call, where the caller replaces it (`replace_dead`)."""
        import ray

        if self.weight_sync != "object_store":
            raise ValueError("load_weights_async sends weights through the object store; this pool uses "
                             f"weight_sync={self.weight_sync!r}")
        self._weights_ref, self._weights_version = ray.put(pack_state(state)), version
        self._weight_acks = [a.load_weights.remote(self._weights_ref, version) for a in self._actors]
        self.policy_version = version

    def actor(self, rank: int) -> Any:
        return self._actors[rank]

    def replace_dead(self, rank: int, actor: Any, why: str) -> bool:
        """Replace worker `rank` if `actor` is still its current actor; False if it was replaced already
        (several calls queued on one dead actor all fail, one replacement is enough)."""
        if self._actors[rank] is not actor:
            return False
        self._replace(rank, why)
        return True

    # ---------------------------------------------------------------- collective weight sync
    def _collective_load(self, state: Mapping[str, torch.Tensor], version: int) -> None:
        import ray

        self._last_state, self._weights_version = state, version
        self._weights_ref = None  # a restart puts the latest weights in the object store only when needed
        self._pending = []  # the actor calls of the phase in progress (join or receive)
        try:
            layout = BucketPlan.of(state, self.bucket_bytes)
            if self._group is None or layout != self._layout:
                self._open_group(layout)
            device = next(iter(state.values())).device if self.collective_backend == "nccl" else "cpu"
            self._pending = [self._actors[r].receive_weights.remote(version) for r in range(self.n_workers)]
            layout.send(state, self._group.broadcast_one, device)  # one reused bucket buffer
            ray.get(self._pending)
        except Exception as e:  # noqa: BLE001 - an actor died mid-sync (or the group broke): finish through the object store
            dead = self._dead_ranks(self._pending)
            if not dead:
                raise
            self._close_group()
            for r in dead:
                self._replace(r, f"during a collective weight sync ({_actor_cause(e)})")  # loads v`version`
            live = [r for r in range(self.n_workers) if r not in dead]
            ray.get([self._actors[r].load_weights.remote(self._weights_ref, version) for r in live])
            log.warning("collective weight sync v%d failed (worker(s) %s died); finished it through the object "
                        "store; the group is re-formed at the next sync", version, dead)
        self.policy_version = version

    def _open_group(self, layout: BucketPlan) -> None:
        import ray

        self._close_group()
        host, port, world = node_address(), free_port(), self.n_workers + 1
        self._pending = [self._actors[r].join_weight_group.remote(host, port, r + 1, world, self.collective_backend,
                                                                  layout, self.group_timeout_s)
                         for r in range(self.n_workers)]
        self._group = WeightGroup(host, port, 0, world, self.collective_backend, self.group_timeout_s)
        ray.get(self._pending)
        self._layout = layout

    def _dead_ranks(self, calls: list) -> list[int]:
        """Ranks whose call of the failed phase says their actor died (an actor stuck in a broken
        collective is alive: it errors out at the group timeout)."""
        import ray
        from ray.exceptions import RayActorError

        dead = []
        for r, ref in enumerate(calls):
            try:
                ray.get(ref, timeout=self.group_timeout_s)
            except RayActorError:
                dead.append(r)
            except Exception:  # noqa: BLE001 - alive; its group call failed or still hangs (GetTimeoutError)
                pass
        return dead

    def _close_group(self) -> None:
        import ray

        if self._group is None:
            return
        leave = []
        for a in self._actors:
            try:
                leave.append(a.leave_weight_group.remote())
            except Exception:  # noqa: BLE001 - a dead actor
                pass
        self._group.close()
        self._group, self._layout = None, None
        for ref in leave:
            try:
                ray.get(ref, timeout=self.group_timeout_s)
            except Exception:  # noqa: BLE001
                pass

    # ---------------------------------------------------------------- lifecycle
    def shutdown(self) -> None:
        import ray

        if self._group is not None:
            self._group.close()
            self._group = None
        for a in self._actors:
            if a is not None:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        self._actors = [None] * self.n_workers
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
            self.started_ray = False


def _actor_cause(e: BaseException) -> str:
    """One line: why an actor died or failed (for a failed constructor, its own exception)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if getattr(e, "_actor_init_failed", False) or "error raised in its creation task" in lines[0]:
        return lines[-1]  # "SomeError: message" raised by the engine factory
    if "worker process has died" in lines[0] or "actor is dead" in lines[0].lower():
        return "its worker process died"
    return lines[0][:300]
