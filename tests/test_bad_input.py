"""A generated corpus of malformed recipes and overrides (issue 12, Part 1).

Every case runs the real CLI in process, both `compose-rl validate` and `compose-rl recipe`, and must
end with exit code 2, at most 2 lines of output, no traceback, and nothing written under the
working folder (the run directory's parent). `recipe` must fail before a model is built:
`Pipeline.build` is replaced by a trap, so a case that slipped through every check fails fast here
instead of training.

The numeric cases are generated from the schema itself (every float field gets NaN/±inf, every
integer field `true`, one below its lower bound and one above its upper bound), so a field added
later is covered without editing this file.
"""
from __future__ import annotations

import json
import random
import types
import typing
from pathlib import Path

import annotated_types as at
import pytest
import yaml
from pydantic import BaseModel

from compose_rl import recipe as rec
from compose_rl.cli import main

STR_BASE = {"name": "x", "stages": ["sft", "rl"], "task": {"n_functions": 4}}
GAME_BASE = {"name": "g", "stages": ["rl"], "games": {"train": [{"name": "kuhn_poker"}]}}


# ------------------------------------------------------------------------------ schema walk
def _model_in(ann) -> type[BaseModel] | None:
    for a in (ann, *typing.get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _scalar(ann) -> type | None:
    """int / float for `int`, `float`, `int | None`, `float | None`; None for anything else."""
    union = typing.get_origin(ann) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(ann) if a is not type(None)] if union else [ann]
    return args[0] if len(args) == 1 and args[0] in (int, float) else None


def leaf_fields(cls=rec.Recipe, prefix=()):
    """(path, FieldInfo, scalar type) for every int/float field of the schema, lists of sections
    entered at index 0 (games.train.0.weight)."""
    for name, f in cls.model_fields.items():
        ann = f.annotation
        inner = typing.get_args(ann)
        if typing.get_origin(ann) is list and inner and _model_in(inner[0]):
            yield from leaf_fields(_model_in(inner[0]), prefix + (name, 0))
            continue
        sub = _model_in(ann)
        if sub is not None:
            yield from leaf_fields(sub, prefix + (name,))
            continue
        kind = _scalar(ann)
        if kind is not None:
            yield prefix + (name,), f, kind


def sections(cls=rec.Recipe, prefix=()):
    """Path of every section (mapping) in the schema, the top level included."""
    yield prefix
    for name, f in cls.model_fields.items():
        inner = typing.get_args(f.annotation)
        if typing.get_origin(f.annotation) is list and inner and _model_in(inner[0]):
            yield from sections(_model_in(inner[0]), prefix + (name, 0))
        elif _model_in(f.annotation) is not None:
            yield from sections(_model_in(f.annotation), prefix + (name,))


def bounds(f) -> tuple[float | None, float | None]:
    """The smallest invalid value below and the smallest invalid value above a field's range."""
    lo = hi = None
    for m in f.metadata:
        if isinstance(m, at.Gt):
            lo = m.gt
        elif isinstance(m, at.Ge):
            lo = m.ge - 1
        elif isinstance(m, at.Le):
            hi = m.le + 1
        elif isinstance(m, at.Lt):
            hi = m.lt
    return lo, hi


def base_for(path) -> dict:
    if path[0] == "games" or path[:2] == ("primitives", "ingame"):
        return GAME_BASE
    return STR_BASE


def with_value(path, value, base=None) -> dict:
    d = json.loads(json.dumps(base or base_for(path)))
    node = d
    for p, nxt in zip(path[:-1], path[1:]):
        if isinstance(p, int):
            node = node[p]
            continue
        node = node.setdefault(p, [{"name": "kuhn_poker"}] if isinstance(nxt, int) else {})
    node[path[-1]] = value
    return d


def dotted(path) -> str:
    return ".".join(str(p) for p in path)


# ------------------------------------------------------------------------------ the corpus
# A case: (id, kind, payload, expected substring of the error or None)
#   kind "bytes": payload is the recipe file's bytes
#   kind "data":  payload is a dict, written as YAML (NaN/inf as .nan/.inf)
#   kind "text":  payload is YAML text
#   kind "override": payload is (base dict, [overrides])
#   kind "model": payload is (folder builder name, extra model keys)
def corpus() -> list[tuple]:
    cases = []
    add = cases.append
    good = yaml.safe_dump(STR_BASE).encode()

    # --- encodings and junk bytes
    add(("latin1-name", "bytes", "name: café\nstages: [sft]\ntask: {}\n".encode("latin-1"), "not UTF-8 text"))
    add(("latin1-comment", "bytes", good + "# réglé\n".encode("latin-1"), "not UTF-8 text"))
    add(("cp1252-quotes", "bytes", good + b"# \x93quoted\x94\n", "not UTF-8 text"))
    add(("utf16-bom", "bytes", "name: x\n".encode("utf-16"), "not UTF-8 text"))
    add(("overlong-slash", "bytes", good + b"# \xc0\xaf\n", "not UTF-8 text"))
    add(("encoded-surrogate", "bytes", good + b"# \xed\xa0\x80\n", "not UTF-8 text"))
    add(("truncated-utf8", "bytes", good + b"# \xe2\x82\n", "not UTF-8 text"))
    add(("nul-bytes", "bytes", good + b"junk: \x00\x00\n", "not valid YAML"))
    add(("control-chars", "bytes", good + b"junk: \x07\x1b[31m\n", "not valid YAML"))
    rng = random.Random(12)
    for k in range(6):
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([16, 512, 4096])))
        add((f"binary-junk-{k}", "bytes", junk, None))
    add(("gzip-magic", "bytes", b"\x1f\x8b\x08\x00" + bytes(range(256)), None))
    add(("empty-file", "bytes", b"", "a recipe is a YAML mapping"))

    # --- size, depth, aliases, YAML structure
    add(("huge-comment", "bytes", good + b"#" + b"x" * (1 << 20) + b"\n", "larger than"))
    add(("huge-list", "bytes", good + b"junk: [" + b"1, " * 400_000 + b"]\n", "larger than"))
    for n in (21, 200, 5000, 200_000):
        add((f"deep-flow-{n}", "bytes", good + b"junk: " + b"[" * n + b"]" * n + b"\n", "nested deeper than 20"))
    add(("deep-flow-in-field", "bytes", b"name: x\nstages: [sft]\ntask: {functions: " + b"[" * 50 + b"]" * 50 + b"}\n",
         "nested deeper than 20"))
    add(("deep-block-mapping", "text", "name: x\nstages: [sft]\ntask: {}\njunk:\n"
         + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(40)) + "  " * 41 + "v: 1\n", "nested deeper than 20"))
    add(("deep-flow-mapping", "bytes", good + b"junk: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n",
         "nested deeper than 20"))
    laughs = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))
    add(("billion-laughs", "text", "name: x\nstages: [sft]\ntask: {}\nl0: &l0 [lol]\n" + laughs, "aliases"))
    add(("alias-value", "text", "name: &n x\nstages: [sft]\ntask: {}\noutput: *n\n", "aliases"))
    add(("python-tag", "text", "name: !!python/object/apply:os.system [echo hi]\nstages: [sft]\ntask: {}\n",
         "not valid YAML"))
    add(("two-documents", "text", "name: x\n---\nname: y\n", "not valid YAML"))
    add(("unclosed-bracket", "text", "name: [x\nstages: [sft]\n", "not valid YAML"))
    add(("tab-indent", "text", "name: x\nrl:\n\tsteps: 3\n", "not valid YAML"))
    add(("unhashable-key", "text", "name: x\n? [a, b]\n: 1\n", "not valid YAML"))
    add(("top-level-list", "bytes", b"- name: x\n", "a recipe is a YAML mapping"))
    add(("top-level-scalar", "bytes", b"just words\n", "a recipe is a YAML mapping"))
    add(("top-level-null", "bytes", b"~\n", "a recipe is a YAML mapping"))
    add(("int-5000-digits", "text", "name: x\nstages: [sft]\ntask: {}\nrl: {steps: " + "1" * 5000 + "}\n", "cannot be converted"))
    add(("hex-5000-digits", "text", "name: x\nstages: [sft]\ntask: {}\nrl: {steps: 0x" + "f" * 5000 + "}\n",
         "rl.steps: Input should be less than or equal to 1000000 (got a number too large to print)"))
    add(("impossible-date", "text", "name: x\nstages: [sft]\ntask: {}\nseed: 2001-13-45\n", "cannot be converted"))
    add(("float-tag-on-word", "text", "name: x\nstages: [sft]\ntask: {}\nrl: {lr: !!float abc}\n", "cannot be converted"))
    add(("binary-tag-junk", "text", "name: x\nstages: [sft]\ntask: {}\nrl: {lr: !!binary '%%%'}\n", None))
    add(("date-for-int", "text", "name: x\nstages: [sft]\ntask: {}\nseed: 2001-12-14\n", "seed"))
    add(("int-key", "text", "name: x\nstages: [sft]\ntask: {}\n1: 2\n", "Keys should be strings"))
    add(("newline-in-key", "data", {**STR_BASE, "bad\nkey": 1}, "unknown key"))

    # --- every float field: NaN, +inf, -inf (and a literal that overflows to inf), bool-for-float
    for path, f, kind in leaf_fields():
        where = dotted(path)
        if kind is float:
            for label, v in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
                add((f"{where}={label}", "data", with_value(path, v), where))
            add((f"{where}=1e999", "text", yaml.safe_dump(with_value(path, 0.5)).replace("0.5", "1e999"), where))
            add((f"{where}=true", "data", with_value(path, True), where))
        # --- every integer field: bool-for-int, a float, below and above its bounds
        if kind is int:
            add((f"{where}=true", "data", with_value(path, True), where))
            add((f"{where}=2.5", "data", with_value(path, 2.5), where))
            lo, hi = bounds(f)
            assert hi is not None, f"{where} has no upper bound: give it le=... (and say it in its docstring)"
            if lo is not None:
                add((f"{where}=below-{lo}", "data", with_value(path, lo), where))
            add((f"{where}=above-{hi}", "data", with_value(path, hi), where))
            add((f"{where}=10**30", "data", with_value(path, 10**30), where))
        # numbers as strings are not numbers
        add((f"{where}=string", "data", with_value(path, "3"), where))
    add(("sft.max_steps=0", "data", with_value(("sft", "max_steps"), 0), "sft.max_steps"))
    for path, v in ((("task", "test_depths"), [0]), (("task", "test_depths"), [True]), (("task", "test_depths"), [33]),
                    (("ablate", "seeds"), [-1]), (("ablate", "seeds"), [2**32]), (("ablate", "seeds"), [False])):
        add((f"{dotted(path)}={v}", "data", with_value(path, v), dotted(path)))

    # --- unknown keys at every level
    for path in sections():
        p = path + ("bogus_key",)
        add((f"unknown-key-{dotted(path) or 'top'}", "data", with_value(p, 1, base_for(p)), "unknown key"))

    # --- unsafe run names
    for name in ("../../escape", "../x", "a/b", "/abs", "a\\b", ".hidden", "..", "-flag", "", "a b", "x" * 65,
                 "caf\u00e9", "tab\tname", "new\nline", "nul\x00", "a:b", "*", "~user"):
        add((f"name={name!r}", "data", {**STR_BASE, "name": name}, "name"))
    add(("name-int", "data", {**STR_BASE, "name": 123}, "name"))
    add(("name-null", "data", {**STR_BASE, "name": None}, "name"))
    add(("output-empty", "data", {**STR_BASE, "output": ""}, "output"))
    add(("output-is-a-file", "data", {**STR_BASE, "output": "r.yaml"}, "output: r.yaml exists and is not a folder"))

    # --- wrong types and shapes
    for label, d, where in (
        ("section-is-scalar", {**STR_BASE, "rl": 5}, "rl"),
        ("section-is-list", {**STR_BASE, "sft": [1, 2]}, "sft"),
        ("stages-is-string", {**STR_BASE, "stages": "sft"}, "stages"),
        ("stages-unknown", {**STR_BASE, "stages": ["sft", "dance"]}, "stages"),
        ("stages-empty", {**STR_BASE, "stages": []}, "stages"),
        ("name-is-list", {**STR_BASE, "name": ["a"]}, "name"),
        ("engine-unknown", {**STR_BASE, "rollout": {"engine": "tpu"}}, "rollout.engine"),
        ("lenient-string", with_value(("games", "lenient"), "maybe"), "games.lenient"),
        ("chat-template-int", {**STR_BASE, "model": {"chat_template": 1}}, "model.chat_template"),
        ("tensorboard-string", {**STR_BASE, "logging": {"tensorboard": "yes please"}}, "logging.tensorboard"),
        ("functions-is-dict", {**STR_BASE, "task": {"functions": {"a": 1}}}, "task.functions"),
        ("n-functions-too-many", {**STR_BASE, "task": {"n_functions": 999}}, "task.n_functions"),
        ("unknown-function", {**STR_BASE, "task": {"functions": ["func_0", "nope"]}}, "task.functions"),
        ("train-item-is-string", {**GAME_BASE, "games": {"train": ["kuhn_poker"]}}, "games.train.0"),
        ("no-env", {"name": "x", "stages": ["sft"]}, "give `task`"),
        ("both-envs-latent", {**STR_BASE, "games": GAME_BASE["games"], "latent": {}}, "use `task` alone"),
        # --- empty mixtures and lists
        ("games-train-empty", {**GAME_BASE, "games": {"train": []}}, "games.train"),
        ("test-depths-empty", {**STR_BASE, "task": {"test_depths": []}}, "task.test_depths"),
        ("ablate-variants-empty", {**STR_BASE, "ablate": {"variants": []}}, "ablate.variants"),
        ("ablate-seeds-empty", {**STR_BASE, "ablate": {"seeds": []}}, "ablate.seeds"),
        ("lora-targets-empty", {**STR_BASE, "model": {"lora": {"target_modules": []}}}, "model.lora.target_modules"),
        # --- RL phases (issue 20): empty, non-increasing depth caps, a step count that disagrees, games
        ("rl-phases-empty", {**STR_BASE, "rl": {"phases": []}}, "rl.phases: give at least one phase"),
        ("rl-phases-not-increasing", {**STR_BASE, "rl": {"phases": [{"max_depth": 3, "steps": 2}, {"max_depth": 2, "steps": 2}]}},
         "rl.phases: max_depth must strictly increase"),
        ("rl-phases-equal-caps", {**STR_BASE, "rl": {"phases": [{"max_depth": 2, "steps": 2}, {"max_depth": 2, "steps": 2}]}},
         "rl.phases: max_depth must strictly increase"),
        ("rl-phases-steps-disagree", {**STR_BASE, "rl": {"steps": 9, "phases": [{"max_depth": 2, "steps": 2}]}},
         "rl.steps: 9 but rl.phases sum to 2"),
        ("rl-phases-with-games", {**GAME_BASE, "rl": {"phases": [{"max_depth": 2, "steps": 2}]}}, "rl.phases"),
        # --- unknown game / opponent
        ("unknown-train-game", {**GAME_BASE, "games": {"train": [{"name": "chess9"}]}}, "unknown game 'chess9'"),
        ("unknown-held-out-game", {**GAME_BASE, "games": {**GAME_BASE["games"], "held_out": ["go"]}}, "unknown game 'go'"),
        ("opponent-unknown", {**GAME_BASE, "games": {**GAME_BASE["games"], "opponent": "stockfish"}}, "games.opponent"),
        ("opponent-not-offered", {**GAME_BASE, "games": {**GAME_BASE["games"], "opponent": "minimax"}},
         "games.opponent: 'minimax' is not available for kuhn_poker"),
        ("opponent-nash-on-ttt", {**GAME_BASE, "games": {"train": [{"name": "tic_tac_toe"}], "opponent": "nash"}},
         "games.opponent: 'nash' is not available for tic_tac_toe"),
        ("eval-opponent-unknown", {**GAME_BASE, "eval": {"opponents": ["stockfish"]}}, "eval.opponents: 'stockfish'"),
        ("eval-opponent-not-offered", {**GAME_BASE, "eval": {"opponents": ["random", "minimax"]}},
         "eval.opponents: 'minimax'"),
        # --- unknown model, chat template on a model without one
        ("model-unknown-name", {**STR_BASE, "model": {"name": "gpt-9"}}, "neither a known model"),
        ("model-missing-path", {**STR_BASE, "model": {"name": "/does/not/exist"}}, "neither a known model"),
        ("chat-template-on-tiny", {**STR_BASE, "model": {"chat_template": True}}, "model.chat_template"),
    ):
        add((label, "data", d, where))
    for folder, extra, expected in (
        ("empty", {}, "no readable config.json"),
        ("config-not-json", {}, "no readable config.json"),
        ("config-is-list", {}, "no readable config.json"),
        ("no-tokenizer", {}, "no tokenizer files"),
        ("no-weights", {}, "no weights"),
        ("a-file", {}, "neither a known model"),
        ("no-template", {"chat_template": True}, "model.chat_template"),
    ):
        add((f"model-folder-{folder}", "model", (folder, extra), expected))

    # --- overrides (the same limits and checks as the file)
    for o, expected in (
        ("rl.steps", "expected key.sub=value"), ("=5", "empty key part"), (".steps=5", "empty key part"),
        ("rl..steps=5", "empty key part"), ("rl.st eps=5", "not a field name"), ("rl.steps[0]=5", "not a field name"),
        ("rl.steps=[unclosed", "not valid YAML"), ("rl.steps==5", "rl.steps"), ("rl.steps=.nan", "rl.steps"),
        ("rl.lr=.nan", "rl.lr"), ("rl.lr=-.inf", "rl.lr"), ("rl.lr=1e999", "rl.lr"), ("rl.steps=true", "rl.steps"),
("rl.steps=-5", "rl.steps"), ("-5", "expected key.sub=value"), ("rl.steps=0", "rl.steps"), ("rl.steps=1e30", "rl.steps"),
        ("sft.max_steps=0", "sft.max_steps"), ("sft.max_steps=-5", "sft.max_steps"), ("name=../../escape", "name"),
        ("name=a/b", "name"), ("rl=5", "rl"), ("name.sub=1", "name is not a section"), ("rl.nope=1", "rl.nope: unknown key"),
        ("rl.steps=" + "[" * 25 + "]" * 25, "nested deeper than 20"), ("a." * 25 + "b=1", "key parts"),
        ("rl.steps=*alias", "aliases"), ("rl.steps=&a [*a]", "aliases"), ("rl.steps=caf\udce9", "not UTF-8 text"),
        ("name=" + "x" * (1 << 20), "larger than"), ("task.test_depths=[]", "task.test_depths"),
        ("model.name=/does/not/exist", "neither a known model"), ("model.chat_template=true", "model.chat_template"),
        ("rollout.temperature=.inf", "rollout.temperature"), ("logging.tensorboard=1", "logging.tensorboard"),
        ("task.deep.deeper.deepest=1", "task.deep: unknown key"), ("stages=[]", "stages"),
        ("rl.advantage=state", "rl.advantage: `state` needs games"),
    ):
        add((f"override {o[:40]!r}", "override", (STR_BASE, [o]), expected))
    # the context window must hold the longest prompt + rollout.max_new_tokens (compose_rl/fit.py)
    for base, o in ((STR_BASE, "model.tiny.max_position_embeddings=4"), (GAME_BASE, "model.tiny.max_position_embeddings=4"),
                    (STR_BASE, "rollout.max_new_tokens=1020")):
        add((f"context {base['name']} {o}", "override", (base, [o]), "shorter than the longest prompt"))
    for o, expected in (("games.train=[]", "games.train"), ("games.train.0.weight=.nan", "not a field name"),
                        ("games.invalid.penalty=.nan", "games.invalid.penalty"),
                        ("games.opponent=minimax", "games.opponent"), ("eval.opponents=[chess_bot]", "eval.opponents"),
                        ("rl.mmd.magnet=north", "rl.mmd.magnet"), ("rl.mmd.alpha=0", "rl.mmd.alpha"),
                        ("rl.mmd.alpha=-0.1", "rl.mmd.alpha"), ("rl.mmd.eta=0", "rl.mmd.eta"),
                        ("rl.mmd.alpha_schedule=cosine", "rl.mmd.alpha_schedule"), ("rl.algorithm=mmdx", "rl.algorithm"),
                        ("games.prompt=tiny", "games.prompt"), ("games.stage1_labels=best", "games.stage1_labels"),
                        ("rl.token_aggregation=seq_max", "rl.token_aggregation"),
                        ("rl.negative_weight=1.5", "rl.negative_weight"), ("rl.negative_weight=-0.1", "rl.negative_weight"),
                        ("rl.warmup_steps=-1", "rl.warmup_steps"), ("rl.optimizer=adagrad", "rl.optimizer"),
                        ("rl.switch={step: 1000000, lr: 1}", "rl.switch.step"),  ("rl.switch={lr: 0}", "rl.switch.lr"),
                        ("rl.switch={step: 1, lr: 1, optimizer: lion}", "rl.switch.optimizer")):
        add((f"override {o!r}", "override", (GAME_BASE, [o]), expected))
    # the per-state magnet needs exactly scored legal answers (games.answer: boxed, no string task)
    for o in ("games.answer=reason", "task={n_functions: 4}"):
        add((f"moving_table with {o}", "override", (GAME_BASE, ["rl.algorithm=mmd", "rl.mmd.magnet=moving_table", o]),
             "rl.mmd.magnet: moving_table"))
    for o in ("games.answer=reason", "rl.mmd.magnet=moving", "rl.mmd.magnet=reference"):
        add((f"mmd target with {o}", "override", (GAME_BASE, ["rl.algorithm=mmd", "rl.mmd.update=target", o]),
             "rl.mmd.update: target"))
    for k in ("kl_coef", "entropy_coef", "replay_fraction"):  # terms the target update has no loss to add to
        add((f"mmd target with rl.{k}", "override", (GAME_BASE, ["rl.algorithm=mmd", "rl.mmd.update=target",
                                                                  "rl.mmd.magnet=uniform", f"rl.{k}=0.1"]), f"rl.{k}"))
    return cases


CASES = corpus()


def test_corpus_is_large_and_ids_unique():
    assert len(CASES) >= 150, len(CASES)
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


def _model_folder(tmp_path: Path, kind: str) -> Path:
    """Folders that look like (broken) model folders; nothing here is ever loaded as weights."""
    folder = tmp_path / f"model-{kind}"
    if kind == "a-file":
        folder.write_text("not a folder")
        return folder
    folder.mkdir()
    files = {"config.json": '{"model_type": "llama"}', "tokenizer.json": "{}", "model.safetensors": ""}
    if kind == "empty":
        files = {}
    elif kind == "config-not-json":
        files["config.json"] = "{not json"
    elif kind == "config-is-list":
        files["config.json"] = "[1, 2]"
    elif kind == "no-tokenizer":
        del files["tokenizer.json"]
    elif kind == "no-weights":
        del files["model.safetensors"]
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_in_one_line(case, tmp_path, monkeypatch, capsys):
    label, kind, payload, expected = case
    monkeypatch.chdir(tmp_path)  # the default `output: runs` lands here too
    from compose_rl.pipeline import Pipeline

    def trap(self):
        raise AssertionError(f"{label}: the recipe passed every check and a model was about to be built")

    monkeypatch.setattr(Pipeline, "build", trap)
    out_dir = str(tmp_path / "runs")
    overrides: list[str] = []
    if kind == "bytes":
        data = payload
    elif kind == "text":
        data = (payload + f"\noutput: {out_dir}\n").encode()
    elif kind == "data":
        data = yaml.safe_dump({"output": out_dir, **payload}, allow_unicode=True).encode()
    elif kind == "override":
        base, overrides = payload
        data = yaml.safe_dump({**base, "output": out_dir}).encode()
    else:  # "model"
        folder_kind, extra = payload
        model = {"name": str(_model_folder(tmp_path, folder_kind)), **extra}
        data = yaml.safe_dump({**STR_BASE, "model": model, "output": out_dir}).encode()
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(data)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    # validate takes overrides as --set KEY=VALUE and, like `recipe`, as key=value after the file
    # (an argument without "=" is a recipe file there: its error is "no such recipe file")
    runs = [(["validate", str(recipe), *(x for o in overrides for x in ("--set", o))], True),
            (["recipe", str(recipe), *overrides], True)]
    if overrides:
        runs.append((["validate", str(recipe), *overrides], all("=" in o for o in overrides)))
    for argv, check in runs:
        code, text = _run(argv, capsys)
        lines = text.strip().splitlines()
        assert code == 2, f"{argv[0]}: exit {code}: {text[:300]}"
        assert 1 <= len(lines) <= 2, f"{argv[0]}: {len(lines)} lines: {text[:300]}"
        assert "Traceback" not in text
        if expected is not None and check:
            assert expected in text, f"{argv[:3]}: expected {expected!r} in: {text[:300]}"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing may be written"


def test_console_process_latin1_recipe(tmp_path):
    """The same contract in a real process (the issue's UnboundLocalError came from `recipe` on a Latin-1 file)."""
    import os
    import subprocess
    import sys

    f = tmp_path / "r.yaml"
    f.write_bytes("name: café\nstages: [sft]\ntask: {}\n".encode("latin-1"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "compose_rl.cli", "recipe", str(f)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"compose-rl: error: recipe {f} is not UTF-8 text: byte 0xe9 at offset 9; save it as UTF-8\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.yaml"]
