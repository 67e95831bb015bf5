"""`compose-rl transfer`: the base model and every stage checkpoint of some runs, on every domain of a suite.

    compose-rl transfer RUN [RUN ...] [--suite full|games|strcomp|probes|smoke] [--smoke]

This is the command: it loads run directories and their recipes, rebuilds each checkpoint's policy,
evaluates it on the suite's domains and writes transfer.{md,csv,json,png} (and the over-seeds
tables). What a cell means and how its intervals are computed: compose_rl/evals/transfer.py.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from compose_rl.domains import Column, suite_domains
from compose_rl.evals.transfer import Row, fill_cells, seed_rows


class TransferError(ValueError):
    """Bad input to `compose-rl transfer`: the message is one line and says how to fix it."""


EVAL_SEED = 1234  # one evaluation seed for every checkpoint: the same items and games, so deltas pair


def condition_name(recipe) -> str:
    suffix = f"-s{recipe.seed}"
    return recipe.name[: -len(suffix)] if recipe.name.endswith(suffix) else recipe.name


# ----------------------------------------------------------------------------- runs and checkpoints
def model_key(recipe) -> dict:
    m = recipe.model
    key = {"name": m.name, "lora": m.lora.model_dump() if m.lora else None, "chat_template": m.chat_template}
    if m.name == "tiny":
        key["tiny"] = m.tiny.model_dump()
    return key


def load_run(path: str | Path):
    """(recipe, [(label, state.pt path or HF folder)]) of a run directory, in stage order."""
    from compose_rl.recipe import RecipeError, load_recipe

    path = Path(path)
    resolved = path / "recipe.resolved.yaml"
    if not resolved.is_file():
        raise TransferError(f"{path}: not a run directory (no recipe.resolved.yaml); give folders that "
                            "`compose-rl recipe` wrote")
    try:
        recipe = load_recipe(resolved)
    except RecipeError as e:
        raise TransferError(str(e)) from None
    from compose_rl.kinds import kind_name

    if kind_name(recipe) != "plain":
        raise TransferError(f"{path}: a latent-loop or recurrent-depth run; transfer evaluates plain policies only")
    stages = path / "stages"
    labels = [d.name for d in sorted(stages.iterdir(), key=lambda d: d.stat().st_mtime)
              if (d / "state.pt").is_file()] if stages.is_dir() else []
    cks = [(label, stages / label / "state.pt") for label in labels]
    best = path / "best"
    if best.is_dir():
        cks += [(f"best-{d.name}", d) for d in sorted(best.iterdir()) if (d / "config.json").is_file()]
    if not cks:
        raise TransferError(f"{path}: no stage checkpoints (stages/<label>/state.pt); run a recipe with an "
                            "sft or rl stage first")
    return recipe, cks


def trained_groups(recipe) -> list[str]:
    """Column groups a run trained on: strcomp, and/or each training game (each domain names its own)."""
    from compose_rl.domains import trained_groups as groups

    return groups(recipe)


def build_policy(recipe, source=None):
    """The run's base model (fresh from its recipe and seed), with `source` weights loaded if given."""
    import torch

    from compose_rl.models import LoraSpec, TinySpec, load_policy

    m = recipe.model
    if isinstance(source, Path) and source.is_dir():  # best/<game>: a full HF folder (LoRA merged)
        policy = load_policy(str(source), seed=recipe.seed, chat_template=m.chat_template)
    else:
        torch.manual_seed(recipe.seed)
        policy = load_policy(m.name, seed=recipe.seed, tiny=TinySpec(**m.tiny.model_dump()),
                             lora=LoraSpec(**m.lora.model_dump()) if m.lora else None, chat_template=m.chat_template)
        if source is not None:
            policy.model.load_state_dict(torch.load(source, weights_only=False)["model"])
    from compose_rl.domains import prompt_rewrites

    rewrites = prompt_rewrites(recipe)  # the prompt the run trained with (each domain's rewrites)
    if rewrites:
        policy.rewrites = rewrites
    if torch.cuda.is_available():
        policy.model.to("cuda")
    policy.model.eval()
    return policy


def evaluate_policy(policy, domains, items: int, max_new_tokens: int, temperature: float, batch_size: int = 256):
    from compose_rl.rollout.hf import HFEngine

    engine = HFEngine(policy.model, policy.tokenizer, batch_size)
    cols: list[Column] = []
    for d in domains:
        cols += d.transfer_columns(policy, engine, items, EVAL_SEED, max_new_tokens, temperature=temperature)
    return cols


def transfer_matrix(runs: list[str | Path], suite: str = "full", items: int = 100, log=print) -> list[Row]:
    """Evaluates the base and every checkpoint of `runs` on `suite`; rows with their cells filled."""
    try:
        domains = suite_domains(suite)
    except ValueError as e:
        raise TransferError(str(e)) from None
    loaded = [(Path(p), *load_run(p)) for p in runs]
    keys = [model_key(r) for _, r, _ in loaded]
    for (p, _, _), k in zip(loaded, keys):
        if k != keys[0]:
            raise TransferError(f"mismatched models: {p} has model {k}, {loaded[0][0]} has {keys[0]}; "
                                "compare runs of one model")
    rows: list[Row] = []
    for path, recipe, cks in loaded:
        ro = recipe.rollout
        evaluate = lambda pol: evaluate_policy(pol, domains, items, ro.max_new_tokens, ro.eval_temperature,  # noqa: E731
                                               ro.batch_size)
        log(f"transfer: {path.name}: base")
        cond = dict(condition=condition_name(recipe), seed=recipe.seed)
        base = Row(path.name, "base", [], evaluate(build_policy(recipe)), **cond)
        base.base = base
        run_rows, sft = [base], None
        for label, src in cks:
            log(f"transfer: {path.name}: {label}")
            row = Row(path.name, label, trained_groups(recipe), evaluate(build_policy(recipe, src)), base=base, **cond)
            if label.startswith("sft") and sft is None:
                sft = row
            run_rows.append(row)
        for row in run_rows:
            row.sft = sft if row is not base else None
            fill_cells(row)
        rows += run_rows
    return rows


# ----------------------------------------------------------------------------- outputs
def _f(x: float, fmt: str = "{:.2f}") -> str:
    return "nan" if x != x else fmt.format(x)


def _signed(x: float) -> str:
    return "nan" if x != x else f"{x:+.2f}"


CAPTION = ("Cell: score [95% CI]; Δbase [CI]; ΔSFT [CI]; TI = transferability index of the column's group "
           "(normalized gain off-domain / in-domain; blank in-domain). `~` marks unpaired deltas (sampled play). "
           "Floor row: chance/shortcut score where one is defined.")
SEED_CAPTION = ("Over seeds: each cell is the mean over the condition's seeds of the single-run cell, [95% t-interval "
                "over seeds]; Δbase and ΔSFT are paired within each seed, then averaged; TI is the mean of the "
                "seeds where it is defined. Floor row: chance/shortcut score where one is defined.")


def markdown(rows: list[Row], suite: str, title: str = "Transfer matrix", caption: str = CAPTION) -> str:
    cols = [(c["group"], c["column"]) for c in rows[0].cells]
    head = ["checkpoint [trained on]"] + [f"{g}/{c}" for g, c in cols]
    lines = [f"# {title} (suite `{suite}`)", "", caption, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for c in r.cells:
            t = f"{_f(c['score'])} [{_f(c['lo'])}, {_f(c['hi'])}]"
            mark = "" if c["paired"] else "~"
            if c["d_base"] == c["d_base"]:
                t += f"; Δbase{mark} {_signed(c['d_base'])} [{_signed(c['d_base_lo'])}, {_signed(c['d_base_hi'])}]"
            if c["d_sft"] == c["d_sft"]:
                t += f"; ΔSFT{mark} {_signed(c['d_sft'])} [{_signed(c['d_sft_lo'])}, {_signed(c['d_sft_hi'])}]"
            if c["transfer_index"] == c["transfer_index"]:
                t += f"; TI {_f(c['transfer_index'])}"
            cells.append(t)
        lines.append("| " + " | ".join([r.name] + cells) + " |")
    lines.append("| floor | " + " | ".join(_f(c["floor"]) for c in rows[0].cells) + " |")
    return "\n".join(lines) + "\n"


def load_rows(outs: list[str | Path]) -> list[Row]:
    """The single-run rows of earlier `compose-rl transfer` outputs (their transfer.json), to merge
    matrices computed separately (e.g. each run as it finishes) into one table and one seed table."""
    rows: list[Row] = []
    for out in outs:
        f = Path(out) / "transfer.json"
        if not f.is_file():
            raise TransferError(f"--merge {out}: no transfer.json there; give folders that `compose-rl transfer` wrote")
        for d in json.loads(f.read_text()):
            if "run" not in d:
                raise TransferError(f"--merge {out}: transfer.json predates merging (no run/seed fields); "
                                    "recompute it with `compose-rl transfer`")
            rows.append(Row(d["run"], d["label"], d["trained_on"], [], cells=d["cells"], condition=d["condition"],
                            seed=d["seed"]))
    cols = [(c["group"], c["column"]) for c in rows[0].cells] if rows else []
    for r in rows:
        if [(c["group"], c["column"]) for c in r.cells] != cols:
            raise TransferError(f"--merge: {r.name} has other columns than {rows[0].name}; merge matrices of one suite")
    return rows


CSV_FIELDS = ["run", "checkpoint", "trained_on", "group", "column", "score", "lo", "hi", "n", "paired", "floor",
              "d_base", "d_base_lo", "d_base_hi", "d_sft", "d_sft_lo", "d_sft_hi", "gain", "group_gain",
              "in_domain_gain", "transfer_index"]


def write_csv(rows: list[Row], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS)
        w.writeheader()
        for r in rows:
            for c in r.cells:
                w.writerow({"run": r.run, "checkpoint": r.label, "trained_on": "+".join(r.trained_on),
                            **{k: c.get(k, "") for k in CSV_FIELDS[3:]}})


def write_outputs(rows: list[Row], out: Path, suite: str) -> dict[str, Path]:
    """transfer.{md,csv,json,png}, and transfer-seeds.{md,csv,json,png} (seed_rows) when a condition
    has two or more seeds."""
    from compose_rl.report.transfer_plot import heatmap

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    title = "Transfer matrix"
    for stem, rs, caption in (("transfer", rows, CAPTION), ("transfer-seeds", seed_rows(rows), SEED_CAPTION)):
        if not rs:
            continue
        p = {k: out / f"{stem}.{k}" for k in ("md", "csv", "png", "json")}
        p["md"].write_text(markdown(rs, suite, title, caption))
        write_csv(rs, p["csv"])
        p["json"].write_text(json.dumps([{"row": r.name, "run": r.run, "label": r.label, "trained_on": r.trained_on,
                                          "condition": r.condition, "seed": r.seed, "cells": r.cells} for r in rs],
                                        indent=1, default=float))
        heatmap(rs, p["png"], title=f"{title} ({suite}): Δ vs base" + (", mean over seeds" if rs is not rows else ""))
        paths.update(p if stem == "transfer" else {f"seeds_{k}": v for k, v in p.items()})
        title = "Transfer matrix over seeds"
    return paths
