"""The LLM judge's engine for `compose-rl primitives calibrate --judge MODEL`: built here, above the
primitives (primitives/judge.py only prompts and parses; it never builds an engine)."""
from __future__ import annotations


def load_judge(model: str, engine: str = "hf"):
    """(engine, format_prompt) for a judge model: `tiny`, `smollm2-135m-instruct` or a local HF folder.

    Raises compose_rl.models.ModelNotFound (one line) when the model does not exist.
    """
    from compose_rl.models import load_policy

    policy = load_policy(model)
    if engine == "vllm":
        from compose_rl.models.folder import policy_folder
        from compose_rl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(policy_folder(policy)), policy.format_prompt
    if engine != "hf":
        raise ValueError(f"unknown judge engine {engine!r}; use hf or vllm")
    from compose_rl.rollout.hf import HFEngine

    return HFEngine(policy.model, policy.tokenizer), policy.format_prompt
