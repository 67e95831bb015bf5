"""Tests for synthetic_tasks.strcomp (pure Python, fast)."""
from __future__ import annotations

import random

import pytest

from synthetic_tasks.strcomp import (
    ALL_FUNCTIONS,
    DESCRIPTIVE_NAMES,
    MAX_LEN,
    OUTPUT_ALPHABET,
    AtomicFn,
    Problem,
    StrCompTask,
    apply_chain,
    floor_of,
    parse_answer,
    shortcut_accuracies,
)

# Hand-computed cases, keyed by the descriptive name (the func_i name is a fixed shuffle).
HAND_CASES: dict[str, list[tuple[str, str]]] = {
    "reverse": [("abc", "cba"), ("hello", "olleh"), ("a*b", "b*a")],
    "rotate_left_2": [("abcde", "cdeab"), ("abc", "cab"), ("xy", "xy")],
    "rotate_right_1": [("abcde", "eabcd"), ("xyz", "zxy")],
    "shift_up_1": [("abz", "bca"), ("a*z-", "b*a-")],
    "shift_down_2": [("abc", "yza"), ("cat", "ayr"), ("d-e", "b-c")],
    "atbash": [("abc", "zyx"), ("hello", "svool"), ("m*n", "n*m")],
    "swap_pairs": [("abcd", "badc"), ("abcde", "badce"), ("ab", "ba")],
    "sort_chars": [("dcba", "abcd"), ("banana", "aaabnn"), ("b-a*", "*-ab")],
    "double_chars": [("abc", "aabbcc"), ("abcdefg", "aabbccddeeff")],
    "mirror": [("abc", "abccba"), ("abcdefgh", "abcdeffedcba")],
    "dash_pairs": [("abcde", "ab-cd-e"), ("abcd", "ab-cd"), ("abcdefghij", "ab-cd-ef-gh-")],
    "every_other": [("abcde", "ace"), ("abcdef", "ace"), ("a", "a")],
    "interlace_halves": [("abcdef", "adbecf"), ("abcde", "adbec"), ("abcd", "acbd")],
    "drop_first": [("abc", "bc"), ("z", "z")],
    "append_first": [("abc", "abca"), ("abcdefghijkl", "bcdefghijkla")],
    "mask_odd": [("abcde", "a*c*e"), ("ab", "a*")],
    "reverse_first_3": [("abcde", "cbade"), ("ab", "ba"), ("xyz", "zyx")],
    "swap_ends": [("abcd", "dbca"), ("ab", "ba"), ("q", "q")],
    "shift_by_index": [("aaaa", "abcd"), ("zzz", "zab"), ("a*a", "a*c")],
    "rotate_to_min": [("cab", "abc"), ("dbcab", "abdbc"), ("b*a", "*ab")],
    "insert_x_every_3": [("abcdefg", "abcxdefxg"), ("abc", "abcx"), ("ab", "ab"), ("abcdefghij", "abcxdefxghix")],
    "mask_first_char": [("abca", "*bc*"), ("zzz", "***"), ("hello", "*ello")],
    "max_with_reverse": [("abcd", "dccd"), ("azb", "bzb")],
    "max_to_front": [("abcd", "dabc"), ("bzaz", "zbaz"), ("zab", "zab")],
}

BY_KEY = {DESCRIPTIVE_NAMES[f.name]: f for f in ALL_FUNCTIONS}
ALPHA = "abcdefghijklmnopqrstuvwxyz*-"


def _rand_strings(n: int, seed: int = 0, lo: int = 1, hi: int = MAX_LEN) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHA) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


# ---------------------------------------------------------------- atomic functions

def test_catalog_shape():
    assert len(ALL_FUNCTIONS) >= 20
    assert [f.name for f in ALL_FUNCTIONS] == [f"func_{i}" for i in range(len(ALL_FUNCTIONS))]
    assert all(isinstance(f, AtomicFn) and f.definition for f in ALL_FUNCTIONS)
    assert set(HAND_CASES) == set(BY_KEY), "every function needs hand cases"
    # names carry no meaning: the shuffle is not the identity order of the catalogue
    assert len({f.definition for f in ALL_FUNCTIONS}) == len(ALL_FUNCTIONS)


@pytest.mark.parametrize("key", sorted(HAND_CASES))
def test_atomic_hand_cases(key):
    fn = BY_KEY[key].fn
    assert len(HAND_CASES[key]) >= 2
    for x, y in HAND_CASES[key]:
        assert fn(x) == y, (key, x)


def test_outputs_bounded_nonempty_and_mostly_not_identity():
    xs = _rand_strings(800, seed=1)
    inputs = _rand_strings(800, seed=2, lo=3, hi=8)
    for f in ALL_FUNCTIONS:
        for x in xs:
            y = f.fn(x)
            assert 1 <= len(y) <= MAX_LEN and set(y) <= OUTPUT_ALPHABET, (f.name, x, y)
        identity = sum(f.fn(x) == x for x in inputs) / len(inputs)
        assert identity < 0.35, (DESCRIPTIVE_NAMES[f.name], identity)


def test_expression_definitions_match_implementations():
    """Definitions that are Python expressions in `s` must compute exactly the implementation."""
    xs = _rand_strings(300, seed=3)
    n_expr = 0
    for f in ALL_FUNCTIONS:
        try:
            code = compile(f.definition, "<def>", "eval")
        except SyntaxError:
            continue
        n_expr += 1
        for x in xs:
            assert eval(code, {"s": x}) == f.fn(x), (f.name, f.definition, x)
    assert n_expr >= 15


# ---------------------------------------------------------------- samplers

def test_sampler_determinism():
    a, b = StrCompTask(seed=0), StrCompTask(seed=0)
    assert a.atomic_examples(30, seed=1) == b.atomic_examples(30, seed=1)
    assert a.composite_examples(30, seed=1) == b.composite_examples(30, seed=1)
    assert a.rl_problems(30, seed=1) == b.rl_problems(30, seed=1)
    assert a.eval_problems(3, 30) == b.eval_problems(3, 30)
    assert a.skill_problems(3) == b.skill_problems(3)
    assert a.atomic_examples(30, seed=1) != a.atomic_examples(30, seed=2)
    assert a.composite_examples(30, seed=1) != a.composite_examples(30, seed=2)
    assert a.rl_problems(30, seed=1) != a.rl_problems(30, seed=2)
    c = StrCompTask(seed=1)
    assert c.eval_problems(2, 30) != a.eval_problems(2, 30)
    assert c.train_pairs != a.train_pairs
    # a shorter eval list is a prefix of a longer one
    assert a.eval_problems(4, 50)[:20] == StrCompTask(seed=0).eval_problems(4, 20)


def test_problem_fields_are_consistent():
    t = StrCompTask()
    for p in t.atomic_examples(20, 0) + t.composite_examples(20, 0) + t.eval_problems(5, 20):
        assert isinstance(p, Problem)
        assert p.depth == len(p.functions)
        assert p.answer == apply_chain(p.functions, p.input)[-1]
        assert p.skill == (p.functions[0] if p.depth == 1 else f"depth{p.depth}")
        assert 3 <= len(p.input) <= 8 and p.input.isalpha() and p.input.islower()
        assert all(a != b for a, b in zip(p.functions, p.functions[1:]))  # no back-to-back repeats
        assert set(p.functions) <= set(t.function_names)


def test_n_functions_restricts_and_validates():
    t = StrCompTask(n_functions=5)
    assert t.function_names == [f"func_{i}" for i in range(5)]
    used = {f for p in t.rl_problems(100, 0) + t.eval_problems(3, 50) for f in p.functions}
    assert used <= set(t.function_names)
    for bad in (dict(n_functions=1), dict(n_functions=len(ALL_FUNCTIONS) + 1), dict(cot="x"),
                dict(atomic_prompts="x"), dict(train_pair_fraction=0.0)):
        with pytest.raises(ValueError):
            StrCompTask(**bad)


def test_rl_mix_and_training_depth_limit():
    t = StrCompTask()
    probs = t.rl_problems(200, 0)
    assert sum(p.depth == 1 for p in probs) == 50 and sum(p.depth == 2 for p in probs) == 150
    with pytest.raises(ValueError):
        t.composite_examples(5, 0, depths=(3,))
    t3 = StrCompTask(train_max_depth=3)
    assert {p.depth for p in t3.rl_problems(100, 0)} == {1, 2, 3}


# ---------------------------------------------------------------- splits

def _training_items(t: StrCompTask) -> list[Problem]:
    items = []
    for s in range(3):
        items += t.atomic_examples(200, s) + t.composite_examples(200, s, depths=(1, 2))
        items += t.rl_problems(200, s)
    return items


def test_pair_split_and_composite_disjointness():
    t = StrCompTask()
    d = t.describe()
    n = t.n_functions
    assert d["n_train_pairs"] + d["n_heldout_pairs"] == n * (n - 1) == d["n_ordered_pairs"]
    assert d["n_train_pairs"] == round(0.7 * n * (n - 1))
    assert not (t.train_pairs & t.heldout_pairs)
    names = set(t.function_names)
    assert {a for a, _ in t.train_pairs} == names and {b for _, b in t.train_pairs} == names
    for p in _training_items(t):
        assert all(pair in t.train_pairs for pair in t.pairs_of(p.functions))
    for depth in range(2, 7):
        for p in t.eval_problems(depth, 60):
            assert any(pair in t.heldout_pairs for pair in t.pairs_of(p.functions))


def test_heldout_inputs_never_in_training():
    t = StrCompTask(cot="steps")
    train_args: set[str] = set()
    for p in _training_items(t):
        trace = apply_chain(p.functions, p.input)
        train_args.update(trace[:-1])  # every string a function is applied to
    eval1 = t.eval_problems(1, 300)
    skills = [p for ps in t.skill_problems(10).values() for p in ps]
    for p in eval1 + skills:
        assert p.input not in train_args
        assert t.is_heldout_input(p.input)
    assert not any(t.is_heldout_input(x) for x in train_args)
    # depth-1 eval covers every function, held-out skill items are name-only
    assert {p.functions[0] for p in eval1} == set(t.function_names)
    assert all(not p.prompt.startswith("def ") for p in skills)
    assert len(set((p.functions, p.input) for p in eval1)) == len(eval1)


# ---------------------------------------------------------------- parsing and reward

def test_parse_answer():
    assert parse_answer("") is None
    assert parse_answer("garbage\nno answer here") is None
    assert parse_answer("answer: abc") is None
    assert parse_answer(" Answer: abc") is None
    assert parse_answer("Answer:abc") is None
    assert parse_answer("Answer: abc") == "abc"
    assert parse_answer("Answer: abc\n") == "abc"
    assert parse_answer("Answer: first\nstuff\nAnswer: second\n") == "second"
    assert parse_answer("Answer: a b ") == "a b "  # verbatim
    assert parse_answer("Answer: ") == ""


def test_reward():
    t = StrCompTask()
    p = t.eval_problems(2, 1)[0]
    assert t.reward(p, f"Answer: {p.answer}") == 1.0
    assert t.reward(p, f"Answer: {p.answer}\n") == 1.0
    assert t.reward(p, p.target) == 1.0
    assert t.reward(p, f"Answer: {p.answer}x") == 0.0
    assert t.reward(p, f"Answer: {p.answer}\nAnswer: zzzzzzzzzzzzzz") == 0.0
    assert t.reward(p, "no answer") == -1.0
    assert t.reward(p, "") == -1.0
    assert t.reward(p, f"Answer: {p.answer}", truncated=True) == -1.0


def test_reward_without_format_penalty():
    """task.unparseable_reward 0: a malformed answer scores like a wrong one, and the collector still
    counts it as unparseable (it asks the task, not the reward's sign)."""
    from compose_rl.rollout.collectors import StringTaskCollector
    from compose_rl.types import Completion, SamplingParams

    t = StrCompTask(unparseable_reward=0.0)
    p = t.eval_problems(2, 1)[0]
    assert t.reward(p, "no answer") == 0.0 and t.reward(p, f"Answer: {p.answer}", truncated=True) == 0.0
    assert t.reward(p, f"Answer: {p.answer}") == 1.0 and t.reward(p, f"Answer: {p.answer}x") == 0.0
    assert not t.parseable("no answer") and not t.parseable(f"Answer: {p.answer}", truncated=True)
    assert t.parseable(f"Answer: {p.answer}x")

    class Engine:
        policy_version = 0

        def generate(self, prompts, sampling):
            texts = ["no answer", "Answer: zz", "Answer: zz", "no answer"]
            return [[Completion(prompt_ids=[2], token_ids=[1], logprobs=[-0.1], text=x, finish_reason="stop")
                     for x in texts[: sampling.n]] for _ in prompts]

    col = StringTaskCollector(t, lambda s: s, prompts_per_step=2, group_size=4,
                              sampling=SamplingParams(temperature=1.0, max_new_tokens=8), seed=0)
    samples, metrics, _ = col.collect(Engine(), 0)
    assert all(s.reward == 0.0 for s in samples)
    assert metrics["rollout/unparseable_rate"] == 0.5
    assert all(v == 0.0 for k, v in metrics.items() if k.endswith("groups_with_signal"))  # format alone: no signal
    # with the -1 penalty the same answers do differ, but only in format: no group tells right from wrong
    col.task = StrCompTask(unparseable_reward=-1.0)
    _, metrics, _ = col.collect(Engine(), 0)
    signal = {k: v for k, v in metrics.items() if "groups_with" in k}
    assert signal and all(v == (0.0 if "correct" in k else 1.0) for k, v in signal.items()), signal


def test_cot_none_target():
    t = StrCompTask(cot="none")
    for p in t.composite_examples(20, 0) + t.eval_problems(4, 10):
        assert p.target == f"Answer: {p.answer}"


def test_cot_steps_target_consistent():
    t = StrCompTask(cot="steps")
    for p in t.composite_examples(30, 0) + t.atomic_examples(20, 0) + t.eval_problems(6, 30):
        lines = p.target.split("\n")
        assert lines[0] == "plan: " + " ".join(p.functions)
        assert len(lines) == p.depth + 2
        assert parse_answer(p.target) == p.answer and lines[-1] == f"Answer: {p.answer}"
        x = p.input
        for name, line in zip(p.functions, lines[1:-1]):
            y = BY_KEY[DESCRIPTIVE_NAMES[name]].fn(x)
            assert line == f"{name}({x}) = {y}"
            x = y
        assert x == p.answer
        assert not p.target.endswith("\n")
    ex = StrCompTask(cot="steps").make_problem(("func_15", "func_13"), "abcde")
    # func_15 = reverse, func_13 = rotate_left_2 under the fixed naming
    assert DESCRIPTIVE_NAMES["func_15"] == "reverse" and DESCRIPTIVE_NAMES["func_13"] == "rotate_left_2"
    assert ex.prompt == 'func_13(func_15("abcde"))\n'
    assert ex.target == "plan: func_15 func_13\nfunc_15(abcde) = edcba\nfunc_13(edcba) = cbaed\nAnswer: cbaed"


# ---------------------------------------------------------------- prompts

def test_prompt_formats():
    t = StrCompTask()
    defs = [f.definition for f in ALL_FUNCTIONS]
    for p in t.composite_examples(50, 0) + t.rl_problems(50, 0) + t.eval_problems(3, 30) + t.eval_problems(1, 30):
        assert p.prompt.endswith('"' + ")" * p.depth + "\n")
        assert p.prompt.count("\n") == 1 and "def " not in p.prompt
        assert not any(d in p.prompt for d in defs)
    for p in t.atomic_examples(40, 0):
        f = BY_KEY[DESCRIPTIVE_NAMES[p.functions[0]]]
        assert p.prompt == f'def {f.name}: {f.definition}\n{f.name}("{p.input}")\n'
    for p in StrCompTask(atomic_prompts="name").atomic_examples(10, 0):
        assert p.prompt == f'{p.functions[0]}("{p.input}")\n'
    # atomics are balanced over functions
    counts = {}
    for p in t.atomic_examples(60, 0):
        counts[p.skill] = counts.get(p.skill, 0) + 1
    assert set(counts.values()) == {3}


@pytest.mark.parametrize("cot", ["none", "steps"])
def test_depth6_fits(cot):
    t = StrCompTask(cot=cot, n_functions=len(ALL_FUNCTIONS))
    probs = t.eval_problems(6, 300)
    assert max(len(p.prompt) + len(p.target) for p in probs) <= 400
    # worst case by construction: 6 two-digit names, 8-char input, every later string at MAX_LEN
    worst = len(f'{"func_23(" * 6}"{"a" * 8}"{")" * 6}\n')
    if cot == "steps":
        worst += len("plan:" + " func_23" * 6) + 1
        worst += len(f"func_23({'a' * 8}) = {'a' * MAX_LEN}\n")
        worst += 5 * len(f"func_23({'a' * MAX_LEN}) = {'a' * MAX_LEN}\n")
    worst += len("Answer: " + "a" * MAX_LEN)
    assert worst <= 400


def test_chance_and_describe():
    t = StrCompTask()
    for depth in (1, 2, 4):
        c = t.chance_accuracy(depth, n=200)
        b = t.baseline_accuracies(depth, n=200)
        assert b["copy_input"] == c
        floor, rule = t.shortcut_floor(depth, n=200)
        assert floor == max(b.values()) == b[rule]
    assert set(t.baseline_accuracies(1, n=20)) == {"copy_input"}  # every other rule is the answer or a repeat
    d = t.describe()
    assert d["n_functions"] == 20 and len(d["functions"]) == 20


def test_shortcut_floor_on_hand_built_items():
    """Four depth-2 items whose shortcut hits are worked out by hand (innermost first):
    reverse, shift_up_1 on "abc" -> "dcb": the two functions commute, so reversed order hits;
    reverse, rotate_left_2 on "aba" -> "aab": reverse("aba") = "aba", so outermost only hits;
    shift_up_1, reverse on "aa" -> "bb": reverse("bb") = "bb", so innermost only and reversed hit;
    rotate_left_2, shift_up_1 on "abcd" -> "debc": they commute, reversed order hits.
    copy_input 0/4, innermost 1/4, outermost 1/4, reversed 3/4 -> floor 0.75 (reversed_order)."""
    name = {v: k for k, v in DESCRIPTIVE_NAMES.items()}
    rev, up, rot = name["reverse"], name["shift_up_1"], name["rotate_left_2"]
    t = StrCompTask()
    items = [t.make_problem(c, x) for c, x in [((rev, up), "abc"), ((rev, rot), "aba"), ((up, rev), "aa"),
                                                ((rot, up), "abcd")]]
    assert [p.answer for p in items] == ["dcb", "aab", "bb", "debc"]
    acc = shortcut_accuracies(items)
    # skip_innermost/skip_outermost repeat outermost/innermost only at depth 2; the rest are the full chain
    assert acc == {"copy_input": 0.0, "innermost_only": 0.25, "outermost_only": 0.25, "reversed_order": 0.75}
    assert floor_of(acc) == (0.75, "reversed_order")
    assert floor_of(shortcut_accuracies([t.make_problem((rev,), "aba")])) == (1.0, "copy_input")
    with pytest.raises(ValueError, match="one depth"):
        shortcut_accuracies(items + [t.make_problem((rev,), "aba")])


def test_explicit_function_subset():
    t = StrCompTask(seed=0, only=("func_7", "func_1", "func_15"))
    assert t.function_names == ["func_1", "func_7", "func_15"] and t.n_functions == 3
    for p in t.rl_problems(20, seed=1) + t.eval_problems(3, 10):
        assert set(p.functions) <= {"func_1", "func_7", "func_15"}
    with pytest.raises(ValueError):
        StrCompTask(only=("func_1", "nope"))


def test_chained_inputs_use_train_predecessors_only(monkeypatch):
    import synthetic_tasks.strcomp as sc

    task = StrCompTask(seed=0, n_functions=8, cot="steps", atomic_chained_fraction=1.0)
    items = task.atomic_examples(40, seed=3) + task.composite_examples(20, seed=4, depths=(1, 2))
    assert StrCompTask(seed=0, n_functions=8, cot="steps").chained_inputs(items, 3) == items  # fraction 0: unchanged
    calls = []
    real = sc.apply_chain
    monkeypatch.setattr(sc, "apply_chain", lambda fns, x: calls.append(tuple(fns)) or real(fns, x))
    out = task.chained_inputs(items, 3)
    monkeypatch.setattr(sc, "apply_chain", real)
    assert len(out) == len(items)
    has_pred = {b for _, b in task.train_pairs}
    for old, new in zip(items, out):
        if old.depth != 1 or old.functions[0] not in has_pred:
            assert new == old  # composites (and functions without a train predecessor) stay as they were
            continue
        g = old.functions[0]
        assert new.functions == (g,) and new.input != old.input and new.answer == real([g], new.input)[-1]
        assert new.prompt.startswith("def ") == old.prompt.startswith("def ")  # the prompt style is kept
        assert not task.is_heldout_input(new.input)
    # every drawn input is f(x) for f a train predecessor of the item's function: per replaced item, the draws
    # (one, or more when the output fell on the held-out side) come before make_problem's call on g
    calls = iter(calls)
    for old, new in zip(items, out):
        if new == old:
            continue
        g, draws = new.functions[0], []
        for c in calls:
            if c == (g,):
                break
            draws.append(c[0])
        assert draws and all((f, g) in task.train_pairs for f in draws)
    # a share p of the items, by their own stream
    half = StrCompTask(seed=0, n_functions=8, cot="steps", atomic_chained_fraction=0.5).chained_inputs(
        task.atomic_examples(400, seed=3), 3)
    changed = sum(a != b for a, b in zip(task.atomic_examples(400, seed=3), half))
    assert 140 < changed < 260
    with pytest.raises(ValueError, match="atomic_chained_fraction"):
        StrCompTask(seed=0, atomic_chained_fraction=1.5)


def test_shaped_problems_draw_the_named_input_shapes(monkeypatch):
    import synthetic_tasks.strcomp as sc

    task = StrCompTask(seed=0, n_functions=8, cot="steps")
    rand = task.shaped_problems("random", 30)
    assert all(p.depth == 1 and task.is_heldout_input(p.input) and p.input.isalpha() for p in rand)
    for shape, pairs in (("train-pair", task.train_pairs), ("heldout-pair", task.heldout_pairs)):
        calls, real = [], sc.apply_chain
        monkeypatch.setattr(sc, "apply_chain", lambda fns, x: calls.append(tuple(fns)) or real(fns, x))
        probs = task.shaped_problems(shape, 30, seed=1)
        monkeypatch.setattr(sc, "apply_chain", real)
        # each item: a draw f(x) (too long: a new g and f are drawn), then make_problem's g on it: (f, g) of that kind
        draws = iter(calls)
        for p in probs:
            fs = []
            for (c,) in draws:
                if c == p.functions[0] and fs:
                    break
                fs.append(c)
            assert fs and (fs[-1], p.functions[0]) in pairs
        assert len(probs) == 30 and probs == task.shaped_problems(shape, 30, seed=1)  # deterministic
        for p in probs:
            g = p.functions[0]
            # the input is the output of some predecessor of g of that kind, on a held-out input
            preds = [f for f, b in pairs if b == g]
            assert preds and p.answer == apply_chain([g], p.input)[-1] and 1 <= len(p.input) <= 24
    with pytest.raises(ValueError, match="shape 'other'"):
        task.shaped_problems("other", 3)
