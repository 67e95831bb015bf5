"""Build the rollout engine a recipe asks for (everything but in-process transformers).

    rollout.engine  rollout.workers   engine
    hf              0                 HFEngine sharing the learner's module (sync hands over nothing)
    vllm            0                 VLLMEngine in the learner's process
    hf | vllm       N >= 1            RayRolloutPool of N actors, each with an HF or vLLM engine

`make_engine(recipe, policy)` is the one entry point: it resolves `rollout.engine: auto` (once, here:
rollout/engine_choice.py measures it per model and machine) and returns `(engine, sync)`; `sync()` returns the weights to
hand to `engine.load_weights(state, version)`: `policy.state_dict_for_inference()` (LoRA merged,
keys of the base HF model). Engines start from an HF folder on disk: `policy.folder`, or for a model
that has none (tiny) the policy is saved to a temporary folder first (removed at exit). The engine
then receives the policy's current weights once, so it starts in sync whatever the folder holds.

On a Ray cluster (`ray.address` set) a folder that exists only on the driver's disk is packed into
the object store once; a worker on another node unpacks it into its temp folder.

Weights reach the workers as `rollout.weight_sync` says (`weight_sync_plan`): through the object
store, or a broadcast from the learner over nccl (every rank on its own GPU) or gloo.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compose_rl.models.folder import policy_folder
from compose_rl.rollout.engine_choice import resolve_auto
from compose_rl.rollout.vllm_engine import require_vllm


# ------------------------------------------------------------------------------- model folders
def pack_folder(folder: Path) -> dict[str, bytes]:
    """Every file of an HF folder as {relative path: bytes} (to ship it through the object store)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _materialize(folder: str, blob_ref) -> str:
    """`folder` if it exists on this node, else the shipped copy unpacked into a temp folder."""
    if (Path(folder) / "config.json").is_file() or blob_ref is None:
        return folder
    import ray

    key = hashlib.sha1(folder.encode()).hexdigest()[:12]
    dest = Path(tempfile.gettempdir()) / f"compose-rl-shipped-{key}-{os.getpid()}"
    if not (dest / "config.json").is_file():
        files = ray.get(blob_ref)
        for rel, data in files.items():
            path = dest / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        atexit.register(shutil.rmtree, dest, True)
    return str(dest)


# ------------------------------------------------------------------------------- engine factories
@dataclass
class HFWorkerEngine:
    """Picklable recipe for an HFEngine built inside a worker from an HF folder."""

    folder: str
    batch_size: int = 64
    folder_blob: Any = None  # ObjectRef of pack_folder(folder), for nodes that lack the folder

    def __call__(self, rank: int = 0):
        from compose_rl.models.hf import load_folder
        from compose_rl.rollout.hf import HFEngine

        import torch

        model, tokenizer = load_folder(Path(_materialize(self.folder, self.folder_blob)))
        if torch.cuda.is_available():
            model = model.to("cuda")
        return HFEngine(model, tokenizer, self.batch_size)


@dataclass
class VLLMWorkerEngine:
    """Picklable recipe for a VLLMEngine built inside a worker from an HF folder."""

    folder: str
    seed: int = 0
    max_model_len: int | None = None
    kv_cache_gb: float = 1.0
    gpu_memory_utilization: float = 0.3
    folder_blob: Any = None
    dtype: str = "float32"
    max_num_seqs: int | None = None
    enforce_eager: bool = True

    def __call__(self, rank: int = 0):
        from compose_rl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(_materialize(self.folder, self.folder_blob), seed=self.seed + rank,
                          max_model_len=self.max_model_len, kv_cache_gb=self.kv_cache_gb,
                          gpu_memory_utilization=self.gpu_memory_utilization, dtype=self.dtype,
                          max_num_seqs=self.max_num_seqs, enforce_eager=self.enforce_eager)


def _max_model_len(policy, max_new_tokens: int = 0) -> int | None:
    """The model's limit capped at 4096, raised to max_new_tokens + 256 (a prompt) where the model allows."""
    cfg = getattr(policy.model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None)
    return max(min(int(n), 4096), min(int(n), max_new_tokens + 256)) if n else None


def vllm_settings(recipe, policy) -> dict:
    """VLLMEngine keyword arguments from rollout.vllm, with the dtype of model.dtype (compose_rl/precision.py)."""
    from compose_rl.precision import device_kind, resolve_dtype

    v, ro = recipe.rollout.vllm, recipe.rollout
    cuda = device_kind(recipe.runtime.device) == "cuda"
    return {"max_model_len": v.max_model_len or _max_model_len(policy, ro.max_new_tokens),
            "kv_cache_gb": v.kv_cache_gib, "gpu_memory_utilization": v.gpu_memory_utilization,
            "dtype": resolve_dtype(recipe.model.dtype, recipe.model.name, device_kind(recipe.runtime.device)),
            "max_num_seqs": v.max_num_seqs, "enforce_eager": v.enforce_eager,
            # auto: sleep where the engine shares the learner's GPU (in process, on CUDA)
            "sleep": v.sleep == "on" or (v.sleep == "auto" and cuda and ro.workers == 0)}


def weight_sync_plan(choice: str, learner_on_gpu: bool, gpus_per_worker: float, workers: int,
                     local_gpus: int, address: str | None) -> tuple[str, str]:
    """(weight_sync, collective backend) for `rollout.weight_sync`.

    nccl needs every rank on its own GPU: the learner on one, each worker on a whole other one (on a
    single node: workers + 1 <= visible GPUs; on a cluster Ray places whole-GPU workers elsewhere).
    Otherwise a collective goes through host memory (gloo), and `auto` keeps the object store,
    which on one node is zero-copy shared memory."""
    nccl_ok = learner_on_gpu and gpus_per_worker >= 1.0 and (address is not None or local_gpus >= workers + 1)
    if choice == "auto":
        return ("collective", "nccl") if nccl_ok else ("object_store", "gloo")
    return choice, ("nccl" if nccl_ok else "gloo")


@contextlib.contextmanager
def ray_gpu_env(placement):
    """CUDA_VISIBLE_DEVICES of a Ray this process starts = every GPU but the learner's (restored after: the
    learner's own CUDA context is already open, so this process keeps its devices)."""
    from compose_rl.rollout.placement import ray_devices_env

    if placement is None or placement.ray_visible_devices is None:
        yield
        return
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ray_devices_env(placement.ray_visible_devices, parent)
    try:
        yield
    finally:
        if parent is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = parent


# ------------------------------------------------------------------------------- entry point
def make_engine(recipe, policy):
    """(engine, sync) for `recipe.rollout` (engine hf|vllm|auto, workers N) and `recipe.ray`."""
    if recipe.rollout.engine == "auto":
        recipe = resolve_auto(recipe, policy)
    ro = recipe.rollout
    if ro.engine not in ("hf", "vllm"):
        raise ValueError(f"rollout.engine: unknown engine {ro.engine!r}; use hf, vllm or auto")
    if ro.engine == "vllm":
        require_vllm()  # one-line ValueError: how to install it, or use engine: hf

    def sync():
        return policy.state_dict_for_inference()

    if ro.workers == 0 and ro.engine == "hf":
        from compose_rl.precision import device_kind, resolve_dtype
        from compose_rl.rollout.hf import HFEngine

        # in process the engine shares the learner's module: sync hands over nothing; it samples in
        # the learner's precision (model.dtype)
        dtype = resolve_dtype(recipe.model.dtype, recipe.model.name, device_kind(recipe.runtime.device))
        return HFEngine(policy.model, policy.tokenizer, ro.batch_size, dtype=dtype), (lambda: None)

    import torch

    placement = None
    if ro.workers > 0:
        from compose_rl.rollout.placement import plan_placement
        from compose_rl.rollout.ray_connect import connect_ray

        learner_on_gpu = any(p.is_cuda for p in policy.model.parameters())
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        learner_gpu = recipe.runtime.learner_gpu
        if recipe.ray.address:  # fail fast on a bad address, before saving anything; then count its GPUs
            connect_ray(recipe.ray.address, recipe.ray.num_cpus)
            import ray

            cluster = int(ray.cluster_resources().get("GPU", 0.0)) if learner_on_gpu else None
            placement = plan_placement(ro.workers, n_gpus, learner_on_gpu, learner_gpu, cluster_gpus=cluster)
        else:  # a local Ray, started without the learner's GPU: workers get the others, one each
            placement = plan_placement(ro.workers, n_gpus, learner_on_gpu, learner_gpu)
            with ray_gpu_env(placement):
                connect_ray(None, recipe.ray.num_cpus)
        print(placement.line(), file=sys.stderr)
    folder = policy_folder(policy)
    settings = vllm_settings(recipe, policy)
    max_len = settings["max_model_len"]
    cuda = torch.cuda.is_available()
    if ro.workers == 0:
        from compose_rl.rollout.vllm_engine import VLLMEngine

        engine = VLLMEngine(folder, seed=recipe.seed, **settings)
    else:
        from compose_rl.rollout.ray_workers import RayRolloutPool

        address = recipe.ray.address
        blob = None
        if address:  # a cluster: other nodes may not see this disk
            import ray

            blob = ray.put(pack_folder(folder))
        if ro.engine == "vllm":
            factory: Any = VLLMWorkerEngine(str(folder), seed=recipe.seed, max_model_len=max_len, folder_blob=blob,
                                            kv_cache_gb=settings["kv_cache_gb"], dtype=settings["dtype"],
                                            gpu_memory_utilization=settings["gpu_memory_utilization"],
                                            max_num_seqs=settings["max_num_seqs"],
                                            enforce_eager=settings["enforce_eager"])
        else:
            factory = HFWorkerEngine(str(folder), batch_size=ro.batch_size, folder_blob=blob)
        gpus = placement.gpus_per_worker  # a whole GPU each, never the learner's (placement.py)
        learner_on_gpu = any(p.is_cuda for p in policy.model.parameters())
        weight_sync, backend = weight_sync_plan(ro.weight_sync, learner_on_gpu, gpus, ro.workers,
                                                torch.cuda.device_count() if cuda else 0, address)
        if ro.mode == "async":  # weights go to busy workers without a collective (async_rollouts.py)
            weight_sync = "object_store"
        engine = RayRolloutPool(factory, ro.workers, ray_address=address, num_cpus=recipe.ray.num_cpus,
                                seed=recipe.seed, gpus_per_worker=gpus, weight_sync=weight_sync,
                                collective_backend=backend, worker_resources=ro.worker_resources,
                                bucket_bytes=int(ro.weight_bucket_mib * 2 ** 20))
        if blob is not None:
            engine._folder_blob = blob  # keep the shipped folder alive for actor restarts
    engine.load_weights(sync(), 0)  # start from the policy's current weights, whatever the folder holds
    return engine, sync
