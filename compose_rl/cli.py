"""`compose-rl`: recipe | validate | plan | doctor | eval | ablate | report | seeds | transfer | list.

Errors a user can fix (bad recipe, unknown model, failed gate) print one line and exit non-zero
(2 for bad input, 3 for a failed mastery gate); nothing is written for an invalid recipe.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _one_line(msg: str) -> str:
    """Escape line breaks and control characters (from a file name or a YAML key) so that an error
    stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)


def _err(msg: str, code: int = 2) -> int:
    print(f"compose-rl: error: {_one_line(msg)}", file=sys.stderr)
    return code


from compose_rl.commands.recipes import load as _load  # noqa: E402 (one loader for the CLI and the studies)


def cmd_recipe(args) -> int:
    # imported before the try: an `except` naming a class imported inside it fails with
    # UnboundLocalError when the error comes first
    from compose_rl.models import ModelNotFound
    from compose_rl.pipeline import GateFailed, Pipeline, start_run
    from compose_rl.recipe import RecipeError, check_environment, dump_recipe, load_recipe
    from compose_rl.rl.learner import NonFiniteError
    from compose_rl.rundir import RunDir

    try:
        if args.resume:
            run_path = Path(args.resume)
            resolved = run_path / "recipe.resolved.yaml"
            if not resolved.is_file():
                return _err(f"--resume {run_path}: not a run directory (no recipe.resolved.yaml)")
            recipe = load_recipe(resolved, args.overrides)
            check_environment(recipe, str(resolved))
            pipe = Pipeline(recipe, RunDir(run_path, tensorboard=recipe.logging.tensorboard))
        else:
            if not args.recipe:
                return _err("give a recipe file, e.g. compose-rl recipe recipes/spiral-kuhn.yaml")
            recipe = _load(args.recipe, args.overrides)
            if args.smoke:
                recipe = smoke(recipe)
            # every check that needs no model weights, before the run directory exists
            check_environment(recipe, args.recipe)
            pipe = start_run(recipe)
        print(f"run directory: {pipe.run.path}", file=sys.stderr)
        pipe.build()
        if args.resume and args.overrides:  # the run directory says what runs from here on (`seeds` and the report read it)
            with open(pipe.run.path / "resume-overrides.txt", "a") as f:
                f.write(" ".join(args.overrides) + "\n")
            (pipe.run.path / "recipe.resolved.yaml").write_text(dump_recipe(pipe.recipe))
        pipe.run_all(resume=bool(args.resume))
    except RecipeError as e:
        return _err(str(e))
    except ModelNotFound as e:
        return _err(str(e))
    except NonFiniteError as e:  # a NaN/inf reward or loss in RL: stopped before training on it
        return _err(str(e))
    except GateFailed as e:
        from compose_rl.report import write_report

        write_report(pipe.run)
        return _err(str(e), 3)
    print(f"report: {pipe.run.path / 'report.md'}")
    return 0


def smoke(recipe):
    """Every stage with minimal budgets: checks wiring in a minute or two."""
    from compose_rl.recipe import recipe_from_dict

    d = recipe.model_dump(mode="json")
    d["name"] = d["name"] + "-smoke"
    d["sft"].update(examples=64, max_steps=4, batch_size=16, gate="warn", gate_items=2)
    d["rl"].update(steps=2, checkpoint_every=1, eval_every=min(d["rl"]["eval_every"], 1))
    from compose_rl.domains import smoke_budgets

    smoke_budgets(d)  # each domain's own: prompts and groups, games per step, eval items, depth phases
    if d.get("ablate"):
        d["ablate"]["seeds"] = d["ablate"]["seeds"][:1]
    if d.get("primitives"):
        d["primitives"].update(items=min(d["primitives"]["items"], 8), every=0)
    return recipe_from_dict(d, "smoke")


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def cmd_validate(args) -> int:
    from compose_rl.recipe import RecipeError, check_environment

    # as `recipe` reads them: `key=value` is an override (for every file), anything else a recipe file
    # (a file whose name has "=" in it still counts as a file)
    files = [a for a in args.recipes if "=" not in a or _is_file(a)]
    overrides = list(args.overrides) + [a for a in args.recipes if a not in files]
    if not files:
        return _err("give a recipe file before the key=value overrides, e.g. compose-rl validate "
                    "recipes/spiral-kuhn.yaml rl.steps=5")
    bad = 0
    for path in files:
        try:
            r = _load(path, overrides)
            check_environment(r, path)
            print(f"ok  {_one_line(path)}: {r.name} stages={','.join(r.stages)}")
        except RecipeError as e:
            _err(str(e))
            bad += 1
    return 2 if bad else 0


def cmd_plan(args) -> int:
    """Memory per device from the model's config (no weights loaded): a table, or one line and exit 2."""
    from compose_rl.plan import USABLE, default_device, estimate, model_config
    from compose_rl.recipe import RecipeError

    try:
        recipe = _load(args.recipe, args.overrides)
        config, source = model_config(recipe, args.config)
    except (RecipeError, ValueError) as e:
        return _err(str(e))
    device, mem = default_device()
    if args.device:
        device = args.device
    if args.device_memory_gib is not None:
        if not args.device_memory_gib > 0:
            return _err(f"--device-memory-gib: a size in GiB > 0 (got {args.device_memory_gib})")
        mem = args.device_memory_gib
    elif args.device == "cuda" and device != "cuda":
        return _err("--device cuda: no GPU here; give its size with --device-memory-gib (e.g. 80 or 141)")
    if args.prompt_tokens < 1:
        return _err(f"--prompt-tokens: at least 1 (got {args.prompt_tokens})")
    if args.gpus is not None and args.gpus < 1:
        return _err(f"--gpus: at least 1 (got {args.gpus})")
    gpus = args.gpus
    if gpus is None and device == "cuda" and args.device_memory_gib is None:
        import torch

        gpus = torch.cuda.device_count()  # this machine's, when planning for its own GPUs
    try:  # a PlacementError (more workers than GPUs beside the learner's) is a one-line ValueError too
        plan = estimate(recipe, config, device, mem, prompt_tokens=args.prompt_tokens, gpus=gpus)
    except ValueError as e:
        return _err(str(e))
    if not plan.fits:
        need = plan.peak_gib / USABLE
        top = "; ".join(f"{k} {v:.1f}" for k, v in [kv for kv in sorted(plan.lines, key=lambda kv: -kv[1])
                              if "not in this peak" not in kv[0]][:3])
        return _err(f"plan: {recipe.name} needs {plan.peak_gib:.1f} GiB at peak on one {device} device of "
                    f"{mem:.0f} GiB ({USABLE:.0%} usable; largest parts in GiB: {top}); it fits a device of >= "
                    f"{need:.0f} GiB, or change {', '.join(plan.fixes)}")
    print(f"plan for {args.recipe} ({recipe.name}); model {recipe.model.name} from {source}: "
          f"{plan.params / 1e6:,.2f}M params, {plan.trainable / 1e6:,.2f}M trainable")
    print(plan.render())
    return 0


def cmd_doctor(args) -> int:
    from compose_rl.doctor import report

    lines, _ = report()
    print("\n".join(lines))
    return 0


def cmd_ablate(args) -> int:
    from compose_rl.commands.ablate import run_ablation
    from compose_rl.recipe import RecipeError, check_environment

    try:
        recipe = _load(args.recipe, args.overrides)
        if args.smoke:
            recipe = smoke(recipe)
        check_environment(recipe, args.recipe)
        if args.merge:
            from compose_rl.commands.ablate import merge_ablations

            out = merge_ablations(recipe, [Path(m) for m in args.merge])
        else:
            out = run_ablation(recipe)
    except RecipeError as e:
        return _err(str(e))
    except ValueError as e:
        return _err(str(e))
    print(f"ablation report: {out / 'report.md'}")
    return 0


def cmd_eval(args) -> int:
    """Evaluate a run's newest checkpoint with its recipe's eval suites (results go to the same run dir)."""
    from compose_rl.pipeline import Pipeline
    from compose_rl.recipe import RecipeError, check_environment, load_recipe
    from compose_rl.report import write_report
    from compose_rl.rundir import RunDir

    run = RunDir(Path(args.run))
    if not (run.path / "recipe.resolved.yaml").is_file():
        return _err(f"{run.path}: not a run directory (no recipe.resolved.yaml)")
    try:
        recipe = load_recipe(run.path / "recipe.resolved.yaml", args.overrides)
        check_environment(recipe, str(run.path / "recipe.resolved.yaml"))
    except RecipeError as e:
        return _err(str(e))
    run.tensorboard = recipe.logging.tensorboard
    ck = run.latest_checkpoint()
    if ck is None:
        return _err(f"{run.path}: no complete checkpoint to evaluate")
    pipe = Pipeline(recipe, run)
    pipe.build()
    pipe.trainable.load_state_dict(ck[0]["model"])
    pipe.engine.load_weights(pipe.sync(), ck[1].get("step", 0))
    pipe.evaluate(f"eval-{ck[1].get('stage', 'checkpoint')}-{ck[1].get('step', 0)}")
    print(write_report(run))
    return 0


def cmd_report(args) -> int:
    from compose_rl.report import write_report
    from compose_rl.rundir import RunDir

    p = Path(args.run)
    if not (p / "metrics.jsonl").exists():
        return _err(f"{p}: no metrics.jsonl (is it a run directory?)")
    print(write_report(RunDir(p)))
    return 0


def cmd_seeds(args) -> int:
    from compose_rl.report.seeds import seed_table, summarize_run

    runs = [Path(x) for x in args.runs]
    for p in runs:
        if not (p / "metrics.jsonl").is_file() or not (p / "recipe.resolved.yaml").is_file():
            return _err(f"{p}: not a run directory (needs metrics.jsonl and recipe.resolved.yaml)")
    text = seed_table(sorted((summarize_run(p) for p in runs), key=lambda s: (s["seed"] is None, s["seed"])))
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def cmd_transfer(args) -> int:
    """The transfer matrix of runs' checkpoints on a suite's domains (compose_rl/commands/transfer.py)."""
    from compose_rl.commands.transfer import TransferError, load_rows, transfer_matrix, write_outputs

    items = args.items or (4 if args.smoke else 100)
    if items < 1:
        return _err(f"--items {items}: give at least 1 item per column")
    if not args.runs and not args.merge:
        return _err("transfer: give RUN_DIRs to evaluate and/or --merge DIRs of earlier transfer outputs")
    try:
        rows = load_rows(args.merge) + (transfer_matrix(args.runs, args.suite, items, log=lambda m: print(m, file=sys.stderr))
                                        if args.runs else [])
    except TransferError as e:
        return _err(str(e))
    first = Path(args.runs[0] if args.runs else args.merge[0])
    out = Path(args.out) if args.out else first.parent / f"transfer-{args.suite}{'-smoke' if args.smoke else ''}"
    paths = write_outputs(rows, out, args.suite)
    print(paths["md"].read_text())
    if "seeds_md" in paths:
        print(paths["seeds_md"].read_text())
    print("transfer: " + ", ".join(str(p) for k, p in paths.items() if not k.endswith("json")))
    return 0


def cmd_list(args) -> int:
    from compose_rl.models import MODEL_NAMES
    from games import GAMES
    from synthetic_tasks.strcomp import ALL_FUNCTIONS

    root = Path(__file__).resolve().parent.parent / "recipes"
    print("models:  " + ", ".join(MODEL_NAMES) + ", or a local Hugging Face folder")
    print("games:   " + ", ".join(sorted(GAMES)))
    print(f"tasks:   strcomp ({len(ALL_FUNCTIONS)} atomic string functions func_0..func_{len(ALL_FUNCTIONS) - 1})")
    print("engines: hf, vllm, auto (the faster of the two, measured once per model and machine)")
    if root.is_dir():
        print("recipes: " + ", ".join(sorted(str(p.relative_to(root.parent)) for p in root.glob("*.yaml"))))
    from compose_rl.primitives.listing import describe_all  # primitives, probe suites, in-game probes, detectors

    print(describe_all())
    return 0


def cmd_primitives(args) -> int:
    from compose_rl.primitives.calibrate import calibrate, table
    from compose_rl.primitives.detectors import split_detector
    from compose_rl.primitives.register import PRIMITIVES

    bad = [x for x in args.primitive if x not in PRIMITIVES]
    if bad:
        return _err(f"unknown primitive {bad[0]!r}; known: {', '.join(PRIMITIVES)}")
    prims = list(args.primitive)
    for d in args.detector:
        try:
            prims.append(split_detector(d)[0])
        except ValueError as e:
            return _err(str(e))
    if args.judge is not None:
        from compose_rl.models import ModelNotFound, inspect_model

        try:
            inspect_model(args.judge)
        except ModelNotFound as e:
            return _err(f"--judge: {e}")
    judge = None
    if args.judge is not None:  # the command layer builds the judge's engine (commands/judge.py)
        from compose_rl.commands.judge import load_judge

        judge = load_judge(args.judge, args.judge_engine)
    scores, failures = calibrate(list(dict.fromkeys(prims)) or None, judge)
    kinds = {split_detector(d)[1] for d in args.detector}
    print(table([s for s in scores if not kinds or s.detector in kinds]))
    if args.judge is not None:
        print(f"judge {args.judge}: {failures} of the labelled traces without a parsable <counts> tag (parse failures)")
    return 0


def _flags_first(argv: list[str]) -> list[str]:
    """Let flags and `key=value` overrides come in any order after the subcommand."""
    if not argv:
        return argv
    flags, rest, i = [], [], 1
    while i < len(argv):
        a = argv[i]
        if a in ("--resume", "--set", "--merge", "--judge", "--judge-engine", "--primitive", "--detector",
                 "--suite", "--items", "--out", "--config", "--device", "--device-memory-gib",
                 "--prompt-tokens", "--gpus") and i + 1 < len(argv):
            # joined as --set=VALUE: argparse would take a value starting with "-" for a flag
            flags.append(f"{a}={argv[i + 1]}")
            i += 1
        elif a.startswith("--"):
            flags.append(a)
        else:
            rest.append(a)
        i += 1
    return [argv[0], *flags, *rest]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(prog="compose-rl", description="Train LMs to compose reasoning primitives: SFT atomics, then RL.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recipe", help="run a recipe (overrides: key.sub=value)")
    r.add_argument("recipe", nargs="?")
    r.add_argument("overrides", nargs="*")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last complete checkpoint")
    r.add_argument("--smoke", action="store_true", help="every stage with minimal budgets")
    r.set_defaults(fn=cmd_recipe)
    v = sub.add_parser("validate", help="validate recipes without building models (overrides: key.sub=value)")
    v.add_argument("recipes", nargs="+", metavar="RECIPE_OR_OVERRIDE")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    v.set_defaults(fn=cmd_validate)
    pl = sub.add_parser("plan", help="memory per device for a recipe, from the model's config (no weights loaded)")
    pl.add_argument("recipe")
    pl.add_argument("overrides", nargs="*")
    pl.add_argument("--device", choices=["cpu", "cuda"], help="default: this machine's (a GPU when CUDA is available)")
    pl.add_argument("--device-memory-gib", type=float, help="the device's memory (default: this machine's GPU or RAM), e.g. 141")
    pl.add_argument("--config", metavar="CONFIG_JSON", help="the model's config.json when model.name is not here")
    pl.add_argument("--prompt-tokens", type=int, default=256, help="prompt length assumed per sequence (default 256)")
    pl.add_argument("--gpus", type=int, help="GPUs on the node (default: this machine's; with --device-memory-gib: "
                    "one per rollout worker + the learner's)")
    pl.set_defaults(fn=cmd_plan)
    dr = sub.add_parser("doctor", help="torch, CUDA, driver, vLLM and Ray versions; whether CUDA is usable")
    dr.set_defaults(fn=cmd_doctor)
    a = sub.add_parser("ablate", help="SFT-only vs SFT->RL vs RL-only on matched compute")
    a.add_argument("recipe")
    a.add_argument("overrides", nargs="*")
    a.add_argument("--smoke", action="store_true")
    a.add_argument("--merge", action="append", default=[], metavar="ABLATION_DIR",
                   help="join finished ablations of this recipe (e.g. one seed each; repeat the flag) into one table; trains nothing")
    a.set_defaults(fn=cmd_ablate)
    ev = sub.add_parser("eval", help="evaluate a run directory's newest checkpoint")
    ev.add_argument("run")
    ev.add_argument("overrides", nargs="*")
    ev.set_defaults(fn=cmd_eval)
    rp = sub.add_parser("report", help="rebuild report.md and plots of a run directory")
    rp.add_argument("run")
    rp.set_defaults(fn=cmd_report)
    sd = sub.add_parser("seeds", help="one recipe over several seeds: per-stage numbers, mean and 95%% interval, paired RL-SFT")
    sd.add_argument("runs", nargs="+", metavar="RUN_DIR")
    sd.add_argument("--out", metavar="FILE", help="also write the markdown table here")
    sd.set_defaults(fn=cmd_seeds)
    tr = sub.add_parser("transfer", help="transfer matrix: base + every stage checkpoint of RUNs on a suite's domains")
    tr.add_argument("runs", nargs="*", metavar="RUN_DIR")
    tr.add_argument("--merge", action="append", default=[], metavar="TRANSFER_DIR",
                    help="also the rows of an earlier `compose-rl transfer` output (repeat; matrices computed separately)")
    tr.add_argument("--suite", default="full", help="full, games, strcomp, probes or smoke (compose_rl/domains)")
    tr.add_argument("--smoke", action="store_true", help="a handful of items per column (4 unless --items)")
    tr.add_argument("--items", type=int, default=0, help="items (problems, states, games) per column; default 100")
    tr.add_argument("--out", metavar="DIR", help="output folder (default: transfer-<suite> beside the first run)")
    tr.set_defaults(fn=cmd_transfer)
    pm = sub.add_parser("primitives", help="reasoning primitives: `calibrate` the trace detectors on the labelled set")
    pm.add_argument("action", choices=["calibrate"])
    pm.add_argument("--judge", metavar="MODEL", help="also calibrate an LLM judge: tiny, smollm2-135m-instruct or a folder")
    pm.add_argument("--judge-engine", choices=["hf", "vllm"], default="hf")
    pm.add_argument("--primitive", action="append", default=[], help="only this primitive (repeatable)")
    pm.add_argument("--detector", action="append", default=[], help="only this detector, e.g. expected_value/rules")
    pm.set_defaults(fn=cmd_primitives)
    ls = sub.add_parser("list", help="tasks, games, models, recipes, primitives and their probes")
    ls.set_defaults(fn=cmd_list)
    args = p.parse_args(_flags_first(sys.argv[1:] if argv is None else argv))
    if args.cmd == "recipe" and args.recipe and "=" in args.recipe:
        if not args.resume:
            return _err(f"first argument {args.recipe!r} looks like an override; put the recipe file first")
        args.overrides, args.recipe = [args.recipe, *args.overrides], None  # --resume RUN key=value ...
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
