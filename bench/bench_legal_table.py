"""The learner's exact legal-answer table, scored row by row vs with shared prompts, in one process.

MMD's exact KL terms and the legal entropy bonus need log pi(answer | state) for every legal answer at every
distinct state of a batch, with gradients (`rl.learner.legal_answer_table`). `full` runs every
(state, answer) row through the model; `shared` (the default) runs each state's prompt once and its answers
from the KV cache (`rl.logprobs.shared_prefix_sums`). Both score the same random Leduc decision states with
the spiral-leduc recipe's tiny model and compact prompt; each arm's forward + backward is timed over
`--repeats` alternating rounds, and the ratio printed. The values and gradients agree (tests/test_mmd.py).

    OMP_NUM_THREADS=1 python bench/bench_legal_table.py [--states 100] [--repeats 5] [--game leduc_poker]
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--game", default="leduc_poker")
    ap.add_argument("--states", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt", default="compact", choices=["compact", "full"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from compose_rl.models import TinySpec, load_policy
    from compose_rl.rl.learner import legal_answer_table
    from compose_rl.types import Sample
    from games import get_game
    from games.base import prompt_rewrites, random_decision_states

    game = get_game(args.game)
    policy = load_policy("tiny", seed=0, tiny=TinySpec(hidden_size=128, num_layers=2, num_heads=2,
                                                       intermediate_size=256))
    policy.rewrites = prompt_rewrites("boxed", args.prompt, [game])
    tok, model = policy.tokenizer, policy.model
    batch = []
    for state, p in random_decision_states(game, args.states, seed=0):
        ids = tok(policy.format_prompt(game.prompt(state, p)), add_special_tokens=False)["input_ids"]
        legal = [game.answer_text(state, a) for a in state.legal_actions()]
        batch.append(Sample(prompt_ids=ids, completion_ids=[1], old_logprobs=[0.0], reward=0.0,
                            info={"legal_answers": legal}))
    rows = sum(len(s.info["legal_answers"]) for s in batch)
    plen = sum(len(s.prompt_ids) for s in batch) / len(batch)
    print(f"{args.game}, {args.prompt} prompts: {len(batch)} states, {rows} (state, answer) rows, "
          f"mean prompt {plen:.0f} tokens, {torch.get_num_threads()} thread(s)")
    model.train()
    times = {"full": [], "shared": []}
    for _ in range(args.repeats):
        for arm in ("full", "shared"):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            _, seq, legal, _ = legal_answer_table(model, tok, batch, pad=tok.pad_token_id,
                                                  share_prefix=arm == "shared")
            seq[legal].sum().backward()
            times[arm].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for arm in ("full", "shared"):
        print(f"  {arm:6s} forward+backward: median {med[arm]:.3f} s over {args.repeats} rounds")
    print(f"  shared is {med['full'] / med['shared']:.2f}x faster than full")


if __name__ == "__main__":
    main()
