"""A verifiable string-function composition task (after Yuan et al. 2025, "From f(x) and g(x) to f(g(x))").

Atomic functions
    24 deterministic string functions (`ALL_FUNCTIONS`), named func_0 .. func_23. The name carries no
    meaning: a fixed, seeded shuffle (`NAMING_SEED`, independent of the task seed) maps each descriptive
    implementation to its func_i name, so func_i means the same thing in every task and every run.
    `DESCRIPTIVE_NAMES` maps func_i -> the implementation's descriptive key (for reports and tests only;
    never shown to the model). A task uses the first `n_functions` of them (func_0 .. func_{n-1}).

    Alphabet: inputs are random lowercase strings of length 3..8. Outputs consist of lowercase letters
    plus the two symbols '*' and '-' (never a space, quote, parenthesis, '=' or newline, so prompts,
    step lines and the Answer line stay unambiguous). Every function maps a non-empty string of at most
    `MAX_LEN` (=12) characters to a non-empty string of at most `MAX_LEN` characters; the few functions
    that grow truncate to `MAX_LEN` (the cap is part of their definition text).

Problems
    A depth-k problem is the chain f_k(...f_2(f_1(x))); `Problem.functions` lists it innermost first.
    Functions may repeat inside a chain but never back to back: (f, f) is not a pair, so f(f(x)) never
    occurs (it would often be trivial, e.g. reverse(reverse(x)) = x).

Splits (everything is deterministic given `seed`)
    * Inputs: a string s is held out iff sha256(f"strcomp-input/{seed}/{s}") falls in the lowest
      `HELDOUT_INPUT_FRACTION` (20%) of the hash range. In every TRAINING item every string that any
      function is applied to (the input and every intermediate value, i.e. everything that appears as
      an argument in a "steps" line) is a train string; so no held-out string is ever an argument in
      training, and a held-out depth-1 test item func_i(s) never appears in training, not even as a
      chain-of-thought step. All test items (every depth) use held-out inputs.
    * Pairs: the ordered pairs (f, g), f != g, "g applied right after f", are split with the task seed:
      `train_pair_fraction` of them are train pairs. A random cycle through all functions is always in
      the train set, so every function appears as inner and as outer in some train pair. Training
      chains (depth <= `train_max_depth`) use train pairs only; every test chain of depth >= 2 contains at
      least one held-out pair.
    * Depths: training samplers refuse depths above `train_max_depth`; tests go to depth 6 by default.

Prompts (all end with `PROMPT_DELIMITER` = "\\n")
    stage-1, definition style:  'def func_15: s[::-1]\\nfunc_15("abcde")\\n'
    name-only (stage-2, also depth 1): 'func_13(func_15("abcde"))\\n'   (func_15 = reverse, func_13 = rotate left 2)

Completions (`Problem.target`; the pipeline appends EOS, no trailing newline here)
    cot="none":   'Answer: cbaed'
    cot="steps":  'plan: func_15 func_13\\nfunc_15(abcde) = edcba\\nfunc_13(edcba) = cbaed\\nAnswer: cbaed'
    ("plan:" lists the functions innermost first; then one line per application.)

The task object is meant to be immutable after construction (use dataclasses.replace for variants).

Reward: 1.0 exact match, 0.0 wrong answer, -1.0 if no Answer line or truncated.

RL mix: `rl_problems` gives round(n * rl_shallow_fraction) (default 25%) problems at depths
1..train_max_depth-1 (uniform) and the rest at depth train_max_depth, in a seeded random order.

Floor: `shortcut_floor(depth)` is the accuracy of the best shortcut rule on `eval_problems(depth, n)`
(computed exactly on those items): the shortcuts (`SHORTCUTS`) answer by applying a wrong subsequence
or order of the chain's functions: copy the input, innermost only, outermost only, innermost then
outermost, skip the innermost, skip the outermost, the innermost two, the outermost two, all in
reverse order. A rule that is the full computation at a depth (innermost only at depth 1) is not a
shortcut there and is left out. At depth 3 on the two-stage function set "innermost then
outermost" (0.04) beats copying the input (0.01): the floor, not echo, is what "chance" means here.
`chance_accuracy(depth)` (copy the input only) is kept for reference.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

__all__ = [
    "AtomicFn",
    "Problem",
    "StrCompTask",
    "parse_answer",
    "ALL_FUNCTIONS",
    "DESCRIPTIVE_NAMES",
    "MAX_LEN",
    "MIN_INPUT_LEN",
    "MAX_INPUT_LEN",
    "OUTPUT_ALPHABET",
    "PROMPT_DELIMITER",
    "ANSWER_PREFIX",
    "NAMING_SEED",
    "HELDOUT_INPUT_FRACTION",
    "apply_chain",
    "format_expression",
    "parse_steps",
    "SHORTCUTS",
    "shortcut_accuracies",
    "floor_of",
]

MAX_LEN = 12  # every function output (and so every string in a chain) has at most this many chars
MIN_INPUT_LEN = 3
MAX_INPUT_LEN = 8
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS = "*-"
OUTPUT_ALPHABET = frozenset(LETTERS + SYMBOLS)
PROMPT_DELIMITER = "\n"
ANSWER_PREFIX = "Answer: "
PLAN_PREFIX = "plan:"
NAMING_SEED = 20250613  # fixed: the descriptive-implementation -> func_i shuffle never depends on the task seed
HELDOUT_INPUT_FRACTION = 0.2
_HASH_SPACE = 1_000_000


@dataclass(frozen=True)
class AtomicFn:
    name: str
    definition: str  # shown in stage-1 prompts; fully determines the function
    fn: Callable[[str], str]


@dataclass(frozen=True)
class Problem:
    functions: tuple[str, ...]  # innermost first
    input: str
    answer: str
    depth: int
    prompt: str  # ready to feed the model
    target: str  # the correct completion in the task's cot style (no EOS, no trailing newline)
    skill: str  # depth 1: the function name; else f"depth{k}"


# ---------------------------------------------------------------------------------------------
# The atomic functions (descriptive implementations; names assigned below by a fixed shuffle)
# ---------------------------------------------------------------------------------------------

def _shift_letter(c: str, k: int) -> str:
    if "a" <= c <= "z":
        return chr((ord(c) - 97 + k) % 26 + 97)
    return c


def _reverse(s: str) -> str:
    return s[::-1]


def _rotate_left_2(s: str) -> str:
    return s[2:] + s[:2]


def _rotate_right_1(s: str) -> str:
    return s[-1:] + s[:-1]


def _shift_up_1(s: str) -> str:
    return "".join(_shift_letter(c, 1) for c in s)


def _shift_down_2(s: str) -> str:
    return "".join(_shift_letter(c, -2) for c in s)


def _atbash(s: str) -> str:
    return "".join(chr(219 - ord(c)) if "a" <= c <= "z" else c for c in s)


def _swap_pairs(s: str) -> str:
    out = []
    for i in range(0, len(s) - 1, 2):
        out.append(s[i + 1])
        out.append(s[i])
    if len(s) % 2:
        out.append(s[-1])
    return "".join(out)


def _sort_chars(s: str) -> str:
    return "".join(sorted(s))


def _double_chars(s: str) -> str:
    return "".join(c + c for c in s)[:MAX_LEN]


def _mirror(s: str) -> str:
    t = s[: MAX_LEN // 2]
    return t + t[::-1]


def _dash_pairs(s: str) -> str:
    return "-".join(s[i:i + 2] for i in range(0, len(s), 2))[:MAX_LEN]


def _every_other(s: str) -> str:
    return s[::2]


def _interlace_halves(s: str) -> str:
    h = (len(s) + 1) // 2
    a, b = s[:h], s[h:]
    out = []
    for i in range(h):
        out.append(a[i])
        if i < len(b):
            out.append(b[i])
    return "".join(out)


def _drop_first(s: str) -> str:
    return s[1:] if len(s) > 1 else s


def _append_first(s: str) -> str:
    return (s + s[0])[-MAX_LEN:]


def _mask_odd(s: str) -> str:
    return "".join("*" if i % 2 else c for i, c in enumerate(s))


def _reverse_first_3(s: str) -> str:
    return s[:3][::-1] + s[3:]


def _swap_ends(s: str) -> str:
    return s[-1] + s[1:-1] + s[0] if len(s) > 1 else s


def _shift_by_index(s: str) -> str:
    return "".join(_shift_letter(c, i) for i, c in enumerate(s))


def _rotate_to_min(s: str) -> str:
    k = s.index(min(s))
    return s[k:] + s[:k]


def _insert_x_every_3(s: str) -> str:
    out = []
    for i, c in enumerate(s):
        out.append(c)
        if i % 3 == 2:
            out.append("x")
    return "".join(out)[:MAX_LEN]


def _mask_first_char(s: str) -> str:
    return s.replace(s[0], "*")


def _max_with_reverse(s: str) -> str:
    return "".join(max(a, b) for a, b in zip(s, s[::-1]))


def _max_to_front(s: str) -> str:
    m = max(s)
    return m + s.replace(m, "", 1)


# (descriptive key, definition shown to the model, implementation). Definitions are either a Python
# expression in `s` or a one-line precise description; tests evaluate the expression ones against
# the implementations.
_L = MAX_LEN
_CATALOG: list[tuple[str, str, Callable[[str], str]]] = [
    ("reverse", "s[::-1]", _reverse),
    ("rotate_left_2", "s[2:]+s[:2]", _rotate_left_2),
    ("rotate_right_1", "s[-1:]+s[:-1]", _rotate_right_1),
    ("shift_up_1", "each letter +1 (z->a); other chars kept", _shift_up_1),
    ("shift_down_2", "each letter -2 (a->y, b->z); other chars kept", _shift_down_2),
    ("atbash", "each letter mirrored in the alphabet (a<->z, b<->y, ...); other chars kept", _atbash),
    ("swap_pairs", "swap s[0],s[1]; swap s[2],s[3]; ...; an odd last char stays", _swap_pairs),
    ("sort_chars", "''.join(sorted(s))", _sort_chars),
    ("double_chars", f"''.join(c+c for c in s)[:{_L}]", _double_chars),
    ("mirror", f"s[:{_L // 2}]+s[:{_L // 2}][::-1]", _mirror),
    ("dash_pairs", f"'-'.join(s[i:i+2] for i in range(0,len(s),2))[:{_L}]", _dash_pairs),
    ("every_other", "s[::2]", _every_other),
    ("interlace_halves", "h=(len(s)+1)//2; chars in the order s[0],s[h],s[1],s[h+1],...", _interlace_halves),
    ("drop_first", "s[1:] if len(s)>1 else s", _drop_first),
    ("append_first", f"(s+s[0])[-{_L}:]", _append_first),
    ("mask_odd", "''.join('*' if i%2 else c for i,c in enumerate(s))", _mask_odd),
    ("reverse_first_3", "s[:3][::-1]+s[3:]", _reverse_first_3),
    ("swap_ends", "s[-1]+s[1:-1]+s[0] if len(s)>1 else s", _swap_ends),
    ("shift_by_index", "letter at index i shifted +i (z->a); other chars kept", _shift_by_index),
    ("rotate_to_min", "s[s.index(min(s)):]+s[:s.index(min(s))]", _rotate_to_min),
    ("insert_x_every_3", f"''.join(c+'x'*(i%3==2) for i,c in enumerate(s))[:{_L}]", _insert_x_every_3),
    ("mask_first_char", "s.replace(s[0],'*')", _mask_first_char),
    ("max_with_reverse", "''.join(max(a,b) for a,b in zip(s,s[::-1]))", _max_with_reverse),
    ("max_to_front", "max(s)+s.replace(max(s),'',1)", _max_to_front),
]


def _build_all() -> tuple[list[AtomicFn], dict[str, str]]:
    order = list(range(len(_CATALOG)))
    random.Random(NAMING_SEED).shuffle(order)
    fns, desc = [], {}
    for i, j in enumerate(order):
        key, definition, fn = _CATALOG[j]
        name = f"func_{i}"
        fns.append(AtomicFn(name=name, definition=definition, fn=fn))
        desc[name] = key
    return fns, desc


ALL_FUNCTIONS, DESCRIPTIVE_NAMES = _build_all()
_BY_NAME: dict[str, AtomicFn] = {f.name: f for f in ALL_FUNCTIONS}


# ---------------------------------------------------------------------------------------------
# Formatting and parsing
# ---------------------------------------------------------------------------------------------

def apply_chain(functions: Sequence[str], x: str) -> list[str]:
    """[x, f1(x), f2(f1(x)), ...] for `functions` listed innermost first."""
    trace = [x]
    for name in functions:
        trace.append(_BY_NAME[name].fn(trace[-1]))
    return trace


def format_expression(functions: Sequence[str], x: str) -> str:
    """'func_3(func_7("abcde"))' for functions=('func_7', 'func_3')."""
    expr = f'"{x}"'
    for name in functions:
        expr = f"{name}({expr})"
    return expr


def _format_prompt(functions: Sequence[str], x: str, show_definition: bool) -> str:
    expr = format_expression(functions, x) + PROMPT_DELIMITER
    if show_definition:
        if len(functions) != 1:
            raise ValueError("definitions are only shown in depth-1 (atomic) prompts")
        f = _BY_NAME[functions[0]]
        return f"def {f.name}: {f.definition}\n{expr}"
    return expr


def _format_target(functions: Sequence[str], trace: Sequence[str], cot: str) -> str:
    answer_line = ANSWER_PREFIX + trace[-1]
    if cot == "none":
        return answer_line
    lines = [PLAN_PREFIX + "".join(" " + n for n in functions)]
    for name, a, b in zip(functions, trace[:-1], trace[1:]):
        lines.append(f"{name}({a}) = {b}")
    lines.append(answer_line)
    return "\n".join(lines)


def parse_answer(text: str) -> str | None:
    """The rest of the LAST line that starts with 'Answer: ' (verbatim), or None if there is none."""
    found = None
    for line in text.split("\n"):
        if line.startswith(ANSWER_PREFIX):
            found = line[len(ANSWER_PREFIX):]
    return found


def parse_steps(text: str) -> list[tuple[str, str, str]]:
    """The (function, argument, result) triples of the 'name(arg) = result' lines of a steps completion."""
    steps = []
    for line in text.split("\n"):
        head, sep, result = line.partition(") = ")
        if not sep or "(" not in head:
            continue
        name, _, arg = head.partition("(")
        steps.append((name, arg, result))
    return steps


# Shortcut rules: depth -> positions (innermost first) of the chain functions the rule applies, in order.
SHORTCUTS: dict[str, Callable[[int], list[int]]] = {
    "copy_input": lambda d: [],
    "innermost_only": lambda d: [0],
    "outermost_only": lambda d: [d - 1],
    "innermost_then_outermost": lambda d: [0, d - 1] if d > 1 else [0],
    "skip_innermost": lambda d: list(range(1, d)),
    "skip_outermost": lambda d: list(range(d - 1)),
    "innermost_two": lambda d: list(range(min(2, d))),
    "outermost_two": lambda d: list(range(max(0, d - 2), d)),
    "reversed_order": lambda d: list(range(d))[::-1],
}


def shortcut_accuracies(problems: Sequence["Problem"]) -> dict[str, float]:
    """Accuracy of each shortcut rule on `problems` (all of one depth). Rules that apply the full
    chain in order at that depth are not shortcuts there, and rules that coincide with one listed
    before (skip_innermost = copy_input at depth 1) are omitted."""
    if not problems:
        raise ValueError("shortcut_accuracies: no problems")
    depth = problems[0].depth
    if any(p.depth != depth for p in problems):
        raise ValueError("shortcut_accuracies: problems of several depths; score one depth at a time")
    out, seen = {}, {tuple(range(depth))}
    for name, rule in SHORTCUTS.items():
        idx = rule(depth)
        if tuple(idx) in seen:  # the full chain, or the same rule as one listed before at this depth
            continue
        seen.add(tuple(idx))
        hits = sum(apply_chain([p.functions[i] for i in idx], p.input)[-1] == p.answer for p in problems)
        out[name] = hits / len(problems)
    return out


def floor_of(accuracies: dict[str, float]) -> tuple[float, str]:
    """(best accuracy, its rule); ties go to the rule listed first in SHORTCUTS."""
    name = max(accuracies, key=lambda k: accuracies[k])
    return accuracies[name], name


def _stable_int(*parts: object) -> int:
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big")


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------

@dataclass
class StrCompTask:
    seed: int = 0
    n_functions: int = 20
    train_max_depth: int = 2
    test_depths: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    cot: str = "none"  # "none" | "steps"
    atomic_prompts: str = "definition"  # "definition" | "name"
    train_pair_fraction: float = 0.7
    rl_shallow_fraction: float = 0.25  # share of rl_problems at depths 1..train_max_depth-1
    only: tuple[str, ...] | None = None  # explicit atomic functions (overrides n_functions), e.g. the ones a tiny model can master
    unparseable_reward: float = -1.0  # reward of a truncated completion or one without an Answer line (wrong = 0, right = 1)
    atomic_chained_fraction: float = 0.0  # share of atomic examples whose input is a train predecessor's output (see atomic_examples)

    _train_pairs: frozenset = field(init=False, repr=False, compare=False)
    _heldout_pairs: frozenset = field(init=False, repr=False, compare=False)
    _succ: dict = field(init=False, repr=False, compare=False)
    _cache: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.only is not None:
            self.only = tuple(self.only)
            unknown = [n for n in self.only if n not in _BY_NAME]
            if unknown or len(set(self.only)) != len(self.only):
                raise ValueError(f"only: unknown or repeated function names {unknown or list(self.only)}; "
                                 f"use func_0..func_{len(ALL_FUNCTIONS) - 1}")
            self.n_functions = len(self.only)
        if not 2 <= self.n_functions <= len(ALL_FUNCTIONS):
            raise ValueError(f"n_functions must be in [2, {len(ALL_FUNCTIONS)}], got {self.n_functions}")
        if self.cot not in ("none", "steps"):
            raise ValueError(f"cot must be 'none' or 'steps', got {self.cot!r}")
        if self.atomic_prompts not in ("definition", "name"):
            raise ValueError(f"atomic_prompts must be 'definition' or 'name', got {self.atomic_prompts!r}")
        if not 0.0 < self.train_pair_fraction <= 1.0:
            raise ValueError("train_pair_fraction must be in (0, 1]")
        if self.train_max_depth < 1:
            raise ValueError("train_max_depth must be >= 1")
        if not 0.0 <= self.rl_shallow_fraction <= 1.0:
            raise ValueError("rl_shallow_fraction must be in [0, 1]")
        if not 0.0 <= self.atomic_chained_fraction <= 1.0:
            raise ValueError("atomic_chained_fraction must be in [0, 1]")
        self.test_depths = tuple(self.test_depths)
        if any(d < 1 for d in self.test_depths):
            raise ValueError("test depths must be >= 1")
        self._split_pairs()
        self._cache = {}

    # -- splits -------------------------------------------------------------------------------

    def _split_pairs(self) -> None:
        names = [f.name for f in self.functions]
        rng = random.Random(f"strcomp-pairs/{self.seed}/{self._fkey}")
        all_pairs = [(a, b) for a in names for b in names if a != b]
        cycle = names[:]
        rng.shuffle(cycle)
        cover = {(cycle[i], cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))}
        n_train = round(self.train_pair_fraction * len(all_pairs))
        if self.train_pair_fraction < 1.0:
            n_train = min(n_train, len(all_pairs) - 1)  # keep at least one held-out pair
        n_train = max(n_train, len(cover))
        rest = [p for p in all_pairs if p not in cover]
        rng.shuffle(rest)
        train = set(cover) | set(rest[: n_train - len(cover)])
        self._train_pairs = frozenset(train)
        self._heldout_pairs = frozenset(p for p in all_pairs if p not in train)
        succ: dict[str, list[str]] = {n: [] for n in names}
        for a, b in sorted(train):
            succ[a].append(b)
        self._succ = succ

    @staticmethod
    def _predecessors(pairs) -> dict[str, list[str]]:
        """inner functions by outer function, over ordered (inner, outer) `pairs`, sorted: deterministic draws."""
        pred: dict[str, list[str]] = {}
        for a, b in sorted(pairs):
            pred.setdefault(b, []).append(a)
        return pred

    @property
    def _fkey(self) -> str:
        return str(self.n_functions) if self.only is None else ",".join(self.only)

    @property
    def functions(self) -> list[AtomicFn]:
        if self.only is not None:
            return [f for f in ALL_FUNCTIONS if f.name in self.only]
        return ALL_FUNCTIONS[: self.n_functions]

    @property
    def function_names(self) -> list[str]:
        return [f.name for f in self.functions]

    @property
    def train_pairs(self) -> frozenset:
        """Ordered pairs (inner, outer) that training chains may use."""
        return self._train_pairs

    @property
    def heldout_pairs(self) -> frozenset:
        return self._heldout_pairs

    def is_heldout_input(self, s: str) -> bool:
        """Whether string s belongs to the held-out (test) side of the input split."""
        return _stable_int("strcomp-input", self.seed, s) % _HASH_SPACE < HELDOUT_INPUT_FRACTION * _HASH_SPACE

    def pairs_of(self, functions: Sequence[str]) -> list[tuple[str, str]]:
        return list(zip(functions[:-1], functions[1:]))

    # -- building problems ----------------------------------------------------------------------

    def make_problem(self, functions: Sequence[str], x: str, show_definition: bool = False) -> Problem:
        """A problem for an explicit chain (innermost first) and input, in this task's cot style."""
        functions = tuple(functions)
        for name in functions:
            if name not in _BY_NAME:
                raise KeyError(name)
        trace = apply_chain(functions, x)
        depth = len(functions)
        return Problem(
            functions=functions,
            input=x,
            answer=trace[-1],
            depth=depth,
            prompt=_format_prompt(functions, x, show_definition),
            target=_format_target(functions, trace, self.cot),
            skill=functions[0] if depth == 1 else f"depth{depth}",
        )

    def _rng(self, kind: str, *parts: object) -> random.Random:
        return random.Random("/".join(["strcomp", str(self.seed), self._fkey, kind, *map(str, parts)]))

    @staticmethod
    def _random_string(rng: random.Random) -> str:
        n = rng.randint(MIN_INPUT_LEN, MAX_INPUT_LEN)
        return "".join(rng.choice(LETTERS) for _ in range(n))

    def _train_input(self, rng: random.Random) -> str:
        while True:
            s = self._random_string(rng)
            if not self.is_heldout_input(s):
                return s

    def _heldout_input(self, rng: random.Random) -> str:
        while True:
            s = self._random_string(rng)
            if self.is_heldout_input(s):
                return s

    def _train_chain(self, rng: random.Random, depth: int, first: str | None = None) -> tuple[str, ...]:
        names = self.function_names
        chain = [first if first is not None else rng.choice(names)]
        while len(chain) < depth:
            chain.append(rng.choice(self._succ[chain[-1]]))
        return tuple(chain)

    def _train_item(self, rng: random.Random, depth: int, first: str | None = None,
                    show_definition: bool = False, max_depth: int | None = None) -> Problem:
        cap = self.train_max_depth if max_depth is None else max_depth
        if depth > cap:
            raise ValueError(f"training depth {depth} > train_max_depth={cap}")
        if depth < 1:
            raise ValueError("depth must be >= 1")
        while True:
            chain = self._train_chain(rng, depth, first)
            x = self._train_input(rng)
            trace = apply_chain(chain, x)
            # every argument (input and intermediates) must be a train string
            if any(self.is_heldout_input(s) for s in trace[1:-1]):
                continue
            return self.make_problem(chain, x, show_definition)

    def _balanced_functions(self, rng: random.Random, n: int) -> list[str]:
        out: list[str] = []
        names = self.function_names
        while len(out) < n:
            block = names[:]
            rng.shuffle(block)
            out.extend(block)
        return out[:n]

    # -- public samplers ----------------------------------------------------------------------------

    def atomic_examples(self, n: int, seed: int) -> list[Problem]:
        """Stage-1 depth-1 items on train inputs, balanced over functions; prompts follow `atomic_prompts`."""
        rng = self._rng("atomic", seed)
        show = self.atomic_prompts == "definition"
        return [self._train_item(rng, 1, first=f, show_definition=show) for f in self._balanced_functions(rng, n)]

    def chained_inputs(self, items: list[Problem], seed: int) -> list[Problem]:
        """A share `atomic_chained_fraction` of the depth-1 items, their input replaced by the output of one
        of the function's predecessors in a *train* pair on a train input: the intermediate step of a train
        composition, as a stand-alone atomic item (prompt style kept). A function learned on random letters
        does not carry over to the shapes other functions output (doubled letters, dashes, masks), which is
        what a depth-2 item needs at its second step. Held-out pairs never appear, not even as an input
        shape. Drawn from its own stream: fraction 0 returns the items unchanged."""
        if self.atomic_chained_fraction <= 0.0:
            return list(items)
        rng = self._rng("atomic-chained", seed)
        pred = self._predecessors(self._train_pairs)
        out = []
        for it in items:
            g = it.functions[0]
            if it.depth != 1 or g not in pred or rng.random() >= self.atomic_chained_fraction:
                out.append(it)
                continue
            while True:
                y = apply_chain([rng.choice(pred[g])], self._train_input(rng))[-1]
                if y and not self.is_heldout_input(y):
                    out.append(self.make_problem([g], y, show_definition=it.prompt.startswith("def ")))
                    break
        return out

    def composite_examples(self, n: int, seed: int, depths: Iterable[int] = (1, 2)) -> list[Problem]:
        """Name-only items on the train split, depths balanced over `depths` (each <= train_max_depth)."""
        depths = tuple(depths)
        if not depths:
            raise ValueError("depths must be non-empty")
        for d in depths:
            if not 1 <= d <= self.train_max_depth:
                raise ValueError(f"training depth {d} outside 1..train_max_depth={self.train_max_depth}")
        rng = self._rng("composite", seed, *depths)
        plan: list[int] = []
        while len(plan) < n:
            block = list(depths)
            rng.shuffle(block)
            plan.extend(block)
        return [self._train_item(rng, d) for d in plan[:n]]

    def rl_problems(self, n: int, seed: int, max_depth: int | None = None) -> list[Problem]:
        """Name-only train-split problems: round(n*rl_shallow_fraction) at depths 1..top-1 (uniform),
        the rest at depth top, shuffled; top = max_depth (an RL phase's cap, rl.phases) or train_max_depth.
        Chains deeper than train_max_depth are still built from train pairs only, so every held-out
        pair stays unseen."""
        top = self.train_max_depth if max_depth is None else max_depth
        if top < 1:
            raise ValueError("max_depth must be >= 1")
        # the default cap keeps its historical stream (runs before rl.phases reproduce exactly)
        rng = self._rng("rl", seed) if top == self.train_max_depth else self._rng("rl", seed, "cap", top)
        n_shallow = round(n * self.rl_shallow_fraction) if top > 1 else 0
        depths = [rng.randint(1, top - 1) for _ in range(n_shallow)] + [top] * (n - n_shallow)
        rng.shuffle(depths)
        return [self._train_item(rng, d, max_depth=top) for d in depths]

    SHAPES = ("random", "train-pair", "heldout-pair")

    def shaped_problems(self, shape: str, n: int, seed: int = 0) -> list[Problem]:
        """Depth-1 diagnostic items on held-out inputs, by the shape of the input string: `random` (letters, as
        the depth-1 eval), `train-pair` (f(x) for f a train-pair predecessor of the item's function: the
        second step of a train composition) or `heldout-pair` (f a held-out-pair predecessor: the second step
        of a held-out depth-2 item). Functions without such a predecessor are skipped; outputs longer than 24
        characters are redrawn. Separates "the atomic skill does not carry over to other functions' output
        shapes" from "it does not carry over to the held-out pairs' shapes"."""
        if shape not in self.SHAPES:
            raise ValueError(f"shape {shape!r}: choose one of {', '.join(self.SHAPES)}")
        rng = self._rng("shaped", shape, seed)
        names = self.function_names
        pred = self._predecessors(self._train_pairs if shape == "train-pair" else self._heldout_pairs)
        targets = names if shape == "random" else [g for g in names if g in pred]
        if not targets:
            raise ValueError(f"shape {shape!r}: no function has a predecessor of that kind")
        out = []
        while len(out) < n:
            g = rng.choice(targets)
            x = self._heldout_input(rng)
            if shape != "random":
                x = apply_chain([rng.choice(pred[g])], x)[-1]
                if not 1 <= len(x) <= 24:
                    continue
            out.append(self.make_problem([g], x))
        return out

    def eval_problems(self, depth: int, n: int) -> list[Problem]:
        """Held-out name-only problems, deterministic; a shorter list is a prefix of a longer one.

        Depth 1: held-out inputs, functions balanced. Depth >= 2: held-out inputs and chains (no two
        equal neighbours) containing at least one held-out pair. No duplicate (chain, input) items.
        """
        if depth < 1:
            raise ValueError("depth must be >= 1")
        if depth >= 2 and not self._heldout_pairs:
            raise ValueError("no held-out pairs (train_pair_fraction=1.0): composite eval is undefined")
        key = ("eval", depth, self.cot)
        cached: list[Problem] = self._cache.get(key, [])
        if len(cached) >= n:
            return cached[:n]
        rng = self._rng("eval", depth)
        names = self.function_names
        seen: set[tuple[tuple[str, ...], str]] = set()
        out: list[Problem] = []
        block: list[str] = []
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 1000 * (n + 10):
                raise RuntimeError("could not draw enough distinct held-out problems")
            if depth == 1:
                if not block:
                    block = names[:]
                    rng.shuffle(block)
                chain: tuple[str, ...] = (block[-1],)
            else:
                c = [rng.choice(names)]
                while len(c) < depth:
                    c.append(rng.choice([m for m in names if m != c[-1]]))
                chain = tuple(c)
                if not any(p in self._heldout_pairs for p in self.pairs_of(chain)):
                    continue
            x = self._heldout_input(rng)
            if (chain, x) in seen:
                continue
            if depth == 1:
                block.pop()
            seen.add((chain, x))
            out.append(self.make_problem(chain, x))
        self._cache[key] = out
        return out[:n]

    def skill_problems(self, n_per_skill: int) -> dict[str, list[Problem]]:
        """Held-out depth-1 NAME-ONLY items per function (distinct inputs), deterministic."""
        out: dict[str, list[Problem]] = {}
        for name in self.function_names:
            rng = self._rng("skill", name)
            xs: list[str] = []
            while len(xs) < n_per_skill:
                x = self._heldout_input(rng)
                if x not in xs:
                    xs.append(x)
            out[name] = [self.make_problem((name,), x) for x in xs]
        return out

    # -- scoring ----------------------------------------------------------------------------------

    def parseable(self, completion: str, truncated: bool = False) -> bool:
        """Whether the completion ends and has an Answer line (whatever the answer)."""
        return not truncated and parse_answer(completion) is not None

    def reward(self, problem: Problem, completion: str, truncated: bool = False) -> float:
        if not self.parseable(completion, truncated):
            return self.unparseable_reward
        return 1.0 if parse_answer(completion) == problem.answer else 0.0

    def baseline_accuracies(self, depth: int, n: int = 512) -> dict[str, float]:
        """Accuracy on eval_problems(depth, n) of every shortcut rule (`SHORTCUTS`) that is not the full
        computation at this depth (no model involved)."""
        return shortcut_accuracies(self.eval_problems(depth, n))

    def shortcut_floor(self, depth: int, n: int = 512) -> tuple[float, str]:
        """The floor at a depth: the best shortcut's accuracy on eval_problems(depth, n), and its name."""
        return floor_of(self.baseline_accuracies(depth, n))

    def chance_accuracy(self, depth: int, n: int = 512) -> float:
        """Chance baseline: accuracy of answering with the input unchanged, on eval_problems(depth, n)."""
        probs = self.eval_problems(depth, n)
        return sum(p.input == p.answer for p in probs) / len(probs)

    def describe(self) -> dict:
        n = self.n_functions
        return {
            "task": "strcomp",
            "seed": self.seed,
            "n_functions": n,
            "n_functions_available": len(ALL_FUNCTIONS),
            "n_ordered_pairs": n * (n - 1),
            "n_train_pairs": len(self._train_pairs),
            "n_heldout_pairs": len(self._heldout_pairs),
            "train_pair_fraction": self.train_pair_fraction,
            "heldout_input_fraction": HELDOUT_INPUT_FRACTION,
            "train_max_depth": self.train_max_depth,
            "test_depths": list(self.test_depths),
            "cot": self.cot,
            "atomic_prompts": self.atomic_prompts,
            "rl_shallow_fraction": self.rl_shallow_fraction,
            "input_len": [MIN_INPUT_LEN, MAX_INPUT_LEN],
            "max_len": MAX_LEN,
            "adjacent_repeats": False,
            "functions": {f.name: f.definition for f in self.functions},
            "descriptive_names": {f.name: DESCRIPTIVE_NAMES[f.name] for f in self.functions},
        }
