"""Deduction: does a conclusion follow from a chain of "every X is a Y" rules? (yes / no)

`level` = the number of rules the proof chains (1..4). Made-up category words carry no world
knowledge. A "no" item removes one link of the chain and adds an unrelated rule in its place;
distractor rules (one of them ending at the asked category) are mixed in, and the statements are
shuffled, so the answer needs chaining from the premise (or backward from the goal). The gold
answer is computed by closure over the rules, not taken from the construction.
"""
from __future__ import annotations

import random

from synthetic_tasks.probes.common import YES_NO, ProbeItem, Suite

WORDS = ("blicket", "dax", "wug", "fep", "toma", "zorp", "glim", "kiki", "bouba", "snarf", "quib", "vorn",
         "plonk", "drelt", "mip", "yarn", "zibble", "crat", "flume", "grob", "hask", "jint", "lurn", "narp",
         "osk", "pell", "rusk", "skeb", "trop", "umber", "vask", "wolm")
NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena")


def a_(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def follows(rules: tuple[tuple[str, str], ...], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        c = todo.pop()
        for a, b in rules:
            if a == c and b not in seen:
                seen.add(b)
                todo.append(b)
    return goal in seen


class DeductionChain(Suite):
    name = "deduction_chain"
    primitive = "deduction"
    description = "does 'NAME is a Z' follow from a shuffled chain of 'every X is a Y' rules (yes/no)"
    levels = (1, 2, 3, 4)
    answer_pattern = r"yes|no"

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        cats = rng.sample(WORDS, level + 4)
        chain, extra = cats[:level + 1], cats[level + 1:]
        rules = [(chain[i], chain[i + 1]) for i in range(level)]
        if rng.random() < 0.5:  # break one link: the conclusion no longer follows
            i = rng.randrange(level)
            rules[i] = (chain[i], extra[0])
        rules += [(extra[1], chain[-1]), (extra[2], extra[1])]  # distractors, one ending at the goal
        rng.shuffle(rules)
        name = rng.choice(NAMES)
        goal = chain[-1]
        yes = follows(tuple(rules), chain[0], goal)
        statements = " ".join(f"Every {a} is {a_(b)}." for a, b in rules)
        prompt = (f"{statements} {name} is {a_(chain[0])}. Using only these statements, does it follow that "
                  f"{name} is {a_(goal)}? " + YES_NO % ("yes", "no"))
        return ProbeItem(self.name, level, prompt, "yes" if yes else "no", f"{statements}|{chain[0]}|{goal}",
                         (tuple(rules), chain[0], goal))

    def shortcuts(self):
        def premise_has_rule(it):
            rules, start, goal = it.data
            return "yes" if any(a == start for a, _ in rules) else "no"
        return {
            "always yes": lambda it: "yes",
            "always no": lambda it: "no",
            "yes iff some rule starts at the premise": premise_has_rule,
        }
