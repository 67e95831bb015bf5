"""The checks that read this machine's files (model folder, chat template, packages, memory plan), no weights."""
from __future__ import annotations

from pathlib import Path

from compose_rl.recipe.errors import RecipeError
from compose_rl.recipe.schema import Recipe


def check_environment(recipe: Recipe, origin: str = "recipe") -> None:
    """Checks that need this machine's files but no model weights, run by `validate` and before
    `recipe` creates a run directory: the model exists (a built-in name, or a folder with
    config.json, tokenizer files and weights), `model.chat_template: true` only where the tokenizer
    has a template, optional packages the recipe asks for are installed, and the longest prompt +
    rollout.max_new_tokens fits the model's context window (compose_rl/fit.py). RecipeError (one line)."""
    import importlib.util

    from compose_rl.models import ModelNotFound, inspect_model

    try:
        info = inspect_model(recipe.model.name)
    except ModelNotFound as e:
        raise RecipeError(f"{origin}: model.name: {e}") from None
    if recipe.model.chat_template and not info.has_chat_template:
        raise RecipeError(f"{origin}: model.chat_template: {recipe.model.name!r} has no chat template in its tokenizer "
                          "files; set it to null (use one when present) or false")
    _check_plan(recipe, origin)
    out = Path(recipe.output).expanduser()
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{origin}: output: {recipe.output} exists and is not a folder; point it at a folder")
    from compose_rl.precision import cuda_usable, device_kind, resolve_dtype

    if recipe.runtime.device == "cuda" and not cuda_usable():
        import torch

        raise RecipeError(f"{origin}: runtime.device: cuda requested but CUDA is not usable here (torch "
                          f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); run `compose-rl "
                          "doctor`, install a torch build for this driver, or use runtime.device: auto")
    try:  # a dtype this machine's learner device cannot run (bf16 on a GPU without it)
        resolve_dtype(recipe.model.dtype, recipe.model.name, device_kind(recipe.runtime.device))
    except ValueError as e:
        raise RecipeError(f"{origin}: {e}") from None
    _check_placement(recipe, origin)
    if recipe.logging.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise RecipeError(f"{origin}: logging.tensorboard: the tensorboard package is not installed; "
                          "pip install tensorboard, or set logging.tensorboard: false")
    # the longest prompt + rollout.max_new_tokens must fit the context window
    from compose_rl.fit import check_context

    check_context(recipe, info, origin)


def _check_placement(recipe: Recipe, origin: str) -> None:
    """More rollout workers than this machine's GPUs can hold beside the learner's (one each): one line, before
    anything is written (an existing cluster's GPUs are counted when it is joined)."""
    from compose_rl.precision import device_kind
    from compose_rl.rollout.placement import PlacementError, plan_placement

    if device_kind(recipe.runtime.device) != "cuda" or recipe.ray.address:
        return
    import torch

    try:
        plan_placement(recipe.rollout.workers, torch.cuda.device_count(), True, recipe.runtime.learner_gpu)
    except PlacementError as e:
        raise RecipeError(f"{origin}: {e}") from None


def _check_plan(recipe: Recipe, origin: str) -> None:
    """A training recipe whose `compose-rl plan` estimate does not fit this machine's learner device
    (the first GPU, or RAM) stops here, before weights are loaded. Configs plan cannot read are let through."""
    if not ({"sft", "rl"} & set(recipe.stages)):
        return
    from compose_rl.plan import USABLE, default_device, estimate, host_memory_gib, model_config

    try:
        config, _ = model_config(recipe)
        device, mem = ("cpu", host_memory_gib()) if recipe.runtime.device == "cpu" else default_device()
        plan = estimate(recipe, config, device, mem)
    except ValueError:
        return
    if not plan.fits:
        raise RecipeError(f"{origin}: plan: needs {plan.peak_gib:.1f} GiB at peak on this {device} ({mem:.0f} GiB, "
                          f"{USABLE:.0%} usable); change {', '.join(plan.fixes)} (compose-rl plan {origin} shows the parts)")
