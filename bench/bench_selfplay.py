"""Self-play rollout throughput and where a step's time goes: game engine vs generation vs learning.

Runs a few RL steps of spiral-kuhn (tiny model, transformers engine, after a short format SFT so
moves are legal) and splits each step into: generation (time inside engine.generate), game engine
(the rest of collection: OpenSpiel stepping, rendering, parsing, sample building), learning (loss,
backward, optimizer) and weight sync. Prints turns/s, tokens/s and the shares. Goal: engine < 5%.

    python bench/bench_selfplay.py [--steps 10] [--games 64] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


class TimedEngine:
    """Wraps an Engine and accumulates the time spent generating."""

    def __init__(self, inner):
        self.inner, self.gen_s = inner, 0.0

    @property
    def policy_version(self):
        return self.inner.policy_version

    def generate(self, prompts, sampling):
        t = time.perf_counter()
        out = self.inner.generate(prompts, sampling)
        self.gen_s += time.perf_counter() - t
        return out

    def load_weights(self, state, version):
        self.inner.load_weights(state, version)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--games", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from compose_rl.pipeline import start_run
    from compose_rl.recipe import load_recipe

    out = tempfile.mkdtemp()
    r = load_recipe("recipes/spiral-kuhn.yaml", [f"output={out}", "stages=[sft,rl]", "sft.examples=1600",
                                                 "sft.epochs=1", "sft.gate=warn", f"rl.steps={args.steps}",
                                                 f"rl.games_per_step={args.games}", "rl.eval_every=0"])
    pipe = start_run(r)
    pipe.build()
    pipe.stage_sft(0, "sft")
    timed = TimedEngine(pipe.engine)
    pipe.engine = timed
    before = {}

    def snapshot(step):
        before[step] = timed.gen_s
    from compose_rl.rl import learner

    orig = learner.run_rl

    def run_rl(*a, **k):
        hooks = k.get("hooks") or learner.LearnerHooks()
        hooks.on_step_end = snapshot
        k["hooks"] = hooks
        return orig(*a, **k)
    learner.run_rl = run_rl
    pipe.stage_rl(1, "rl", None)
    rows = [x for x in pipe.run.read_metrics() if x.get("stage") == "rl"][1:]  # drop the warm-up step
    gens = [before[s] - before.get(s - 1, 0.0) for s in range(1, args.steps)]
    tot = {k: sum(x[k] for x in rows) for k in ("perf/step_s", "perf/gen_s", "perf/learn_s", "perf/sync_s")}
    gen = sum(gens)
    engine = tot["perf/gen_s"] - gen
    turns = sum(x["rollout/samples"] for x in rows)
    tokens = sum(x["rollout/samples"] * x["rollout/response_tokens"] for x in rows)
    res = {"steps": len(rows), "turns_per_s": turns / tot["perf/step_s"], "tokens_per_s": tokens / tot["perf/step_s"],
           "share_generation": gen / tot["perf/step_s"], "share_game_engine": engine / tot["perf/step_s"],
           "share_learning": tot["perf/learn_s"] / tot["perf/step_s"], "share_sync": tot["perf/sync_s"] / tot["perf/step_s"],
           "s_per_step": tot["perf/step_s"] / len(rows)}
    print(f"self-play, kuhn_poker, tiny, {args.games} games/step, {len(rows)} timed steps, {args.threads} thread(s)")
    for k, v in res.items():
        print(f"  {k:18s} {v:10.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
