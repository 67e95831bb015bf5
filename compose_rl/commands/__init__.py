"""Commands: what `compose-rl <command>` runs, above the pipeline (cli.py only parses arguments).

    ablate     SFT-only vs SFT->RL vs RL-only, matched (ablate.py)
    transfer   the transfer matrix of runs' checkpoints (transfer.py; the scoring is evals/transfer.py)
    judge      the LLM judge's engine for `primitives calibrate --judge` (judge.py)
    recipes    loading a recipe with overrides, for the CLI and the experimental studies (recipes.py)

The experimental studies (experimental/*_study.py) are commands too; they load recipes through
`recipes.load` and sit beside the core, which never imports them.
"""
