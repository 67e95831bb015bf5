"""What a recipe's model cannot fit, checked before anything is built (`validate`, and `recipe`
before its run directory exists).

Context window: every prompt the run will show (stage-1 examples, RL prompts, evaluation prompts of
the string task and of every game it trains or evaluates on) plus `rollout.max_new_tokens` must fit
the model's positions. A tiny model with `max_position_embeddings: 4` otherwise trains on prompts
hundreds of tokens long, silently, to garbage.

The prompts are drawn, not derived: for each source a fixed, seeded sample (`PROMPTS_PER_SOURCE`
problems, `PLAYTHROUGHS` random games per game) is rendered exactly as the pipeline renders it
(the policy's prompt rewrites and chat template) and counted with the model's own tokenizer, read
from its files (the tiny model's is per character). The longest drawn prompt is a lower bound of
the longest the run can meet, close to it here: string-task prompts vary only in the input string
(3-10 characters) and the functions named, game prompts in the history of one short game.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

PROMPTS_PER_SOURCE = 200
PLAYTHROUGHS = 64
VLLM_LEN_CAP = 4096  # rollout/factory.py: vLLM's max_model_len is min(max_position_embeddings, 4096)


@dataclass
class Longest:
    prompt_tokens: int
    prompt_where: str
    sequence_tokens: int  # stage-1 prompt + target, the longest sequence SFT trains on
    sequence_where: str


def _prompt_sources(recipe):
    """(where, prompt text, stage-1 target or None) for every kind of prompt the recipe shows."""
    seed = recipe.seed
    if recipe.task is not None or (recipe.games is not None and recipe.eval.transfer_strcomp):
        from compose_rl.domains.strcomp import StrCompDomain

        dom = StrCompDomain(recipe.task, seed, recipe.sft.composite_fraction)
        task, n = dom.task, PROMPTS_PER_SOURCE
        if recipe.task is not None:
            for p, t in dom.sft_pairs(n):
                yield "strcomp stage 1", p, t
            for p in task.rl_problems(n, seed):
                yield "strcomp rl", p.prompt, None
        for d in task.test_depths:
            for p in task.eval_problems(d, min(n, recipe.eval.items_per_depth)):
                yield f"strcomp eval depth {d}", p.prompt, None
    if recipe.games is not None:
        from compose_rl.domains.games import random_states
        from games import get_game

        names = [m.name for m in recipe.games.train] + [g for g in recipe.games.held_out]
        for name in dict.fromkeys(names):
            game = get_game(name)
            rng = random.Random(seed)
            for _ in range(PLAYTHROUGHS):
                for st, pl in random_states(game, rng):
                    longest_answer = max((game.answer_text(st, a) for a in st.legal_actions(pl)), key=len)
                    yield f"{name} prompt", game.prompt(st, pl), longest_answer


def longest_prompt(recipe, count, tokenizer=None, use_chat_template: bool = False) -> Longest:
    """The longest prompt (tokens, as the engine sees it) and stage-1 sequence over the drawn sample.
    `count(text)` is the number of tokens of `text`; `tokenizer` (with `use_chat_template`) formats
    the prompt as the policy does (models.Policy.format_prompt)."""
    from compose_rl.models import Policy

    from compose_rl.domains import prompt_rewrites

    rewrites = prompt_rewrites(recipe)  # pipeline.build's: each domain's (reasoning instruction, compact prompt)
    fmt = Policy(model=None, tokenizer=tokenizer, name=recipe.model.name, folder=None,
                 use_chat_template=use_chat_template, rewrites=rewrites).format_prompt
    best = Longest(0, "", 0, "")
    seen: set[str] = set()
    for where, prompt, target in _prompt_sources(recipe):
        if prompt in seen:  # game prompts repeat a lot; count each once
            continue
        seen.add(prompt)
        n = count(fmt(prompt))
        if n > best.prompt_tokens:
            best.prompt_tokens, best.prompt_where = n, where
        if target is not None:  # a stage-1 example: sft/stage.encode_pair's prompt + target + EOS
            m = n + count(target) + 1
            if m > best.sequence_tokens:
                best.sequence_tokens, best.sequence_where = m, where
    return best


def context_window(recipe, info) -> tuple[int, str] | None:
    """(positions, the key that sets them) of the recipe's model; None when unknown without weights
    (smollm2 before its first conversion)."""
    from compose_rl.models import _read_json

    if recipe.model.name == "tiny":
        n, key = recipe.model.tiny.max_position_embeddings, "model.tiny.max_position_embeddings"
    else:
        if info.folder is None:
            return None
        cfg = _read_json(info.folder / "config.json") or {}
        cfg = cfg.get("text_config", cfg) if "max_position_embeddings" not in cfg else cfg
        n = cfg.get("max_position_embeddings") or cfg.get("n_positions")
        if not isinstance(n, int) or n <= 0:
            return None
        key = f"max_position_embeddings of {info.folder / 'config.json'}"
    if recipe.rollout.engine == "vllm":
        set_len = recipe.rollout.vllm.max_model_len
        if set_len is not None:
            if set_len < n:
                n, key = set_len, "rollout.vllm.max_model_len"
        else:  # rollout/factory.py's _max_model_len: min(n, 4096), raised to max_new_tokens + 256 where n allows
            cap = max(min(n, VLLM_LEN_CAP), min(n, recipe.rollout.max_new_tokens + 256))
            if cap < n:
                n, key = cap, f"vLLM's max_model_len (min({key}, {VLLM_LEN_CAP}), rollout/factory.py)"
    return n, key


def check_context(recipe, info, origin: str) -> None:
    """RecipeError (one line naming both numbers) when the context window is shorter than the longest
    prompt + rollout.max_new_tokens, or than the longest stage-1 sequence."""
    from compose_rl.recipe import RecipeError

    window = context_window(recipe, info)
    if window is None:
        return
    n, key = window
    if recipe.model.name == "tiny":
        # models/tiny.char_tokenizer: exactly one token per character, nothing added, no chat
        # template; counted without importing transformers (validate stays fast)
        best = longest_prompt(recipe, len)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(info.folder))
        chat = info.has_chat_template if recipe.model.chat_template is None else recipe.model.chat_template
        best = longest_prompt(recipe, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
                              tokenizer, chat)
    new = recipe.rollout.max_new_tokens
    need = best.prompt_tokens + new
    if n < need:
        raise RecipeError(
            f"{origin}: {key} is {n} tokens, shorter than the longest prompt ({best.prompt_tokens} tokens, "
            f"{best.prompt_where}) + rollout.max_new_tokens ({new}) = {need}; raise it to at least {need} "
            f"or lower rollout.max_new_tokens")
    if "sft" in recipe.stages and n < best.sequence_tokens:
        raise RecipeError(
            f"{origin}: {key} is {n} tokens, shorter than the longest stage-1 example ({best.sequence_tokens} "
            f"tokens: prompt + target + EOS, {best.sequence_where}); raise it to at least {best.sequence_tokens}")
