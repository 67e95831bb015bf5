"""Reading a recipe: YAML with depth and alias limits, `key.sub=value` overrides, one-line errors."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from compose_rl.recipe.errors import RecipeError
from compose_rl.recipe.schema import Recipe


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
        try:
            shown = repr(got)
        except ValueError:  # an int past Python's 4300-digit str limit (from a long hex literal)
            shown = "a number too large to print"
        return f"{where}{msg} (got {shown if len(shown) <= 60 else shown[:60] + '...'})"
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


MAX_BYTES = 1 << 20
"""Largest recipe file (and override) read: shipped recipes are ~2 KiB."""
MAX_DEPTH = 20
"""Deepest nesting of mappings/lists allowed in a recipe (the schema itself is 4 deep)."""
KEY_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.2). PyYAML follows YAML 1.1, where a float
    needs a dot (`1.0e-3`) and `1e-3` is a string: with strict types that string would be refused."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str, what: str) -> Any:
    """YAML text to Python objects, refusing nesting deeper than MAX_DEPTH and aliases.

    The depth is counted on PyYAML's event stream, which its parser produces iteratively: the
    composer that builds nodes recurses once per level, so a value nested thousands deep would
    raise RecursionError there before any check on the result could run. Aliases are refused
    because a few of them can expand into billions of elements (the "billion laughs" document).
    """
    depth = 0
    try:
        for ev in yaml.parse(text, Loader=_RecipeLoader):
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise RecipeError(f"{what}: nested deeper than {MAX_DEPTH} levels; a recipe needs at most 4")
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(ev, yaml.AliasEvent):
                raise RecipeError(f"{what}: YAML aliases (*name) are not supported; write the value out")
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{what}: not valid YAML{where}") from None
    except RecipeError:
        raise
    except (ValueError, OverflowError) as e:
        # raised by PyYAML's constructors, not as YAMLError: an integer of more than 4300 digits
        # (Python's int-from-string limit), `2001-13-45` read as a date, `!!float abc`
        raise RecipeError(f"{what}: a value cannot be converted ({str(e).split(';')[0][:80]})") from None


def _check_depth(data: Any, what: str) -> None:
    """Nesting of `data` at most MAX_DEPTH, walked with an explicit stack (no recursion)."""
    stack = [(data, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            if d > MAX_DEPTH:
                raise RecipeError(f"{what}: nested deeper than {MAX_DEPTH} levels; a recipe needs at most 4")
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))


def apply_override(data: dict, override: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to nested dict `data` in place."""
    try:
        size = len(override.encode("utf-8"))
    except UnicodeEncodeError:  # argv bytes that were not UTF-8 arrive as lone surrogates
        raise RecipeError(f"override {override!r}: not UTF-8 text") from None
    if size > MAX_BYTES:
        raise RecipeError(f"override of {size} bytes: larger than {MAX_BYTES} bytes; shorten it")
    if "=" not in override:
        raise RecipeError(f"override {override!r}: expected key.sub=value, e.g. rl.steps=50")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"override {override!r}: empty key part; write e.g. rl.steps=50")
    if len(parts) > MAX_DEPTH:
        raise RecipeError(f"override {override[:60]!r}: {len(parts)} key parts; a recipe is at most {MAX_DEPTH} deep")
    bad = next((p for p in parts if not KEY_PART.fullmatch(p)), None)
    if bad is not None:
        raise RecipeError(f"override {override[:60]!r}: {bad[:40]!r} is not a field name; write e.g. rl.steps=50")
    value = _parse_yaml(raw, f"override {override[:60]!r}") if raw.strip() else None
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"override {override!r}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def read_recipe_text(path: Path) -> str:
    """The recipe file as text: at most MAX_BYTES, and UTF-8 (RecipeError otherwise)."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RecipeError(f"recipe {path} is {size} bytes: larger than {MAX_BYTES} bytes; a recipe is a few KiB of YAML")
    raw = path.read_bytes()[: MAX_BYTES + 1]  # the file may have grown since stat
    if len(raw) > MAX_BYTES:
        raise RecipeError(f"recipe {path} is larger than {MAX_BYTES} bytes; a recipe is a few KiB of YAML")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"recipe {path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start}; "
                          "save it as UTF-8") from None


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        text = read_recipe_text(path)
    except OSError as e:
        raise RecipeError(f"{path}: cannot read it ({e.strerror})") from None
    data = _parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with at least `name` and `stages`")
    for o in overrides:
        apply_override(data, o)
    _check_depth(data, str(path))
    return recipe_from_dict(data, str(path))


def recipe_from_dict(data: dict[str, Any], origin: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"{origin}: {_format_error(e)}") from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
