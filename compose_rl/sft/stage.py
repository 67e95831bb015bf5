"""Stage 1: supervised fine-tuning on atomic skills with TRL's SFTTrainer, then the mastery gate.

We tokenize ourselves (prompt through the policy's chat formatting, completion + EOS, a mask
over the completion) so that SFT sees exactly the token boundary the RL engine produces; TRL takes
pre-tokenized `input_ids`/`completion_mask` as they are and trains on the completion only.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch


def encode_pair(policy, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    tok = policy.tokenizer
    p = tok(policy.format_prompt(prompt), add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p, c


def run_sft(policy, pairs: list[tuple[str, str]], cfg, run, stage: str, seed: int,
            gradient_checkpointing: bool = False, dtype: str = "float32", callbacks: tuple = ()) -> dict:
    """Train on (prompt, completion) pairs; every logged loss goes to metrics.jsonl as `sft/...`.

    `gradient_checkpointing` (recipe `model.gradient_checkpointing`) is passed to TRL, whose default is
    on, and set again on the model afterwards, so the next stage finds the state the recipe asked for.
    `dtype` (the resolved `model.dtype`, compose_rl/precision.py): `bfloat16` = bf16 autocast over
    float32 weights, `float32` = no autocast. Every SFTConfig option that changes numerics or speed is
    set here, none inherited: TRL defaults to bf16=True (emulated and ~7x slower on a CPU without bf16
    instructions), max_length=1024 (truncation), gradient checkpointing on, tf32 left to torch.
    `callbacks`: extra TrainerCallbacks (bench/bench_threads.py times the steps with one)."""
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"model.dtype: resolved to {dtype!r}; expected float32 or bfloat16")
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = []
    for prompt, completion in pairs:
        p, c = encode_pair(policy, prompt, completion)
        rows.append({"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)})
    dataset = Dataset.from_list(rows)
    steps_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.epochs)

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                run.log(stage, state.global_step, {f"sft/{k}": v for k, v in logs.items() if isinstance(v, (int, float))})

    args = SFTConfig(
        output_dir=str(Path(run.path) / "sft-trainer"),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        max_steps=total,
        lr_scheduler_type=cfg.schedule,
        warmup_steps=0 if cfg.schedule == "constant" else min(20, total // 10),
        logging_steps=max(1, min(25, total // 10)),
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        completion_only_loss=True,
        max_length=None,  # no truncation: TRL's default 1024 would cut long reasoning examples silently
        dataloader_num_workers=0,
        disable_tqdm=False,
        padding_free=False,  # padded batches: the same token boundary and masks as the RL learner
        packing=False,  # one example per row (packing would let attention cross examples without padding_free)
        bf16=dtype == "bfloat16",  # autocast; weights and AdamW state stay float32
        fp16=False,
        tf32=False,  # float32 means float32 (TF32 matmuls keep 10 mantissa bits)
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
    )
    single_device(args)
    use_cache = getattr(policy.model.config, "use_cache", None)  # the Trainer sets it to args.use_cache
    trainer = SFTTrainer(model=policy.model, args=args, train_dataset=dataset, processing_class=policy.tokenizer,
                         callbacks=[_Log(), *callbacks])
    out = trainer.train()
    release_trainer(trainer, policy.model)
    n_rows = len(rows)
    del trainer, dataset, rows
    # SFT's freed activations would otherwise stay resident through RL (compose_rl/memory.py)
    from compose_rl.memory import return_freed_heap

    return_freed_heap()
    if use_cache is not None:
        policy.model.config.use_cache = use_cache
    policy.set_gradient_checkpointing(gradient_checkpointing)
    policy.model.eval()
    return {"sft/train_loss": float(out.training_loss), "sft/steps": total, "sft/examples": n_rows}


def release_trainer(trainer, model) -> None:
    """Leave `model` as it was before TRL's trainer: nothing of the trainer may outlive stage 1.

    accelerate's `prepare` sets instance attributes on the model (`forward`, a mixed-precision
    wrapper whose closure holds the autocast state, and `_original_forward`); removing them restores
    the class's own forward. The trainer's optimizer, scheduler, callbacks and accelerator are then
    dropped, so that the model's only owners are the pipeline's (RL in the same process then sees
    exactly the model a resumed process builds: same numerics, same memory)."""
    for m in {id(model): model, id(trainer.model): trainer.model}.values():
        for attr in ("forward", "_original_forward"):
            m.__dict__.pop(attr, None)
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.callback_handler.callbacks.clear()
    trainer.model = trainer.model_wrapped = None
    trainer.accelerator.free_memory()


def single_device(args) -> None:
    """Stage 1 on the learner's one device. With several visible GPUs and no torch.distributed launch,
    the HF Trainer wraps the model in DataParallel over all of them (TrainingArguments.n_gpu =
    device_count), onto the GPUs the rollout workers use (issue 19, item 6). TrainingArguments has no
    public switch for it: its device set-up runs first (cached), then its GPU count is pinned to 1.
    Not run on a multi-GPU machine yet."""
    if args.n_gpu > 1:
        args._n_gpu = 1


def mastery_gate(skill_accuracy: dict[str, float], threshold: float) -> tuple[bool, str]:
    """Cheng et al.'s prerequisite as a check: every atomic skill at or above `threshold`."""
    below = {k: v for k, v in skill_accuracy.items() if v < threshold}
    table = ", ".join(f"{k}={v:.2f}" for k, v in sorted(skill_accuracy.items()))
    if below:
        worst = ", ".join(f"{k}={v:.2f}" for k, v in sorted(below.items(), key=lambda kv: kv[1]))
        return False, (f"mastery gate: {len(below)}/{len(skill_accuracy)} skills below {threshold:.2f}: {worst} "
                       f"(all: {table}); train longer (sft.examples, sft.epochs) or set sft.gate: warn")
    return True, f"mastery gate passed: all {len(skill_accuracy)} skills >= {threshold:.2f} ({table})"
