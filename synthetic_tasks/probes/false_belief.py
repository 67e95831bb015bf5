"""Theory of mind: generated false-belief stories (Sally-Anne style), first and second order.

A moves an object's container while B is away, or in front of B, or while B secretly watches
(A does not notice). Level 1 asks where B will look (B's belief); level 2 asks where A thinks B
will look (A's belief about B's belief). The secret-watch variant separates the two: B knows the
new place, A thinks B does not. Variants are weighted so that "the first container" and "the last
container" each answer about half the items.
"""
from __future__ import annotations

import random

from synthetic_tasks.probes.common import ProbeItem, Suite

NAMES = ("Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kemal", "Lucia")
OBJECTS = ("ball", "key", "coin", "marble", "ring", "letter", "apple", "toy car")
PLACES = ("basket", "box", "drawer", "cupboard", "bag", "jar", "suitcase", "bucket")
ROOMS = ("kitchen", "garden", "classroom", "office", "living room")
# variant -> (level-1 answer, level-2 answer): "first" or "last" container
ANSWERS = {"away": ("first", "first"), "present": ("last", "last"), "secret": ("last", "first")}
WEIGHTS = {1: {"away": 2, "present": 1, "secret": 1}, 2: {"away": 1, "present": 2, "secret": 1}}


class FalseBelief(Suite):
    name = "false_belief"
    primitive = "theory_of_mind"
    description = "where will a character look (1st order) / where does another think they will look (2nd order)"
    levels = (1, 2)
    answer_pattern = r"[a-z]+"

    def make(self, rng: random.Random, level: int, split: str | None = None) -> ProbeItem:
        a, b = rng.sample(NAMES, 2)
        obj, room = rng.choice(OBJECTS), rng.choice(ROOMS)
        first, last = rng.sample(PLACES, 2)
        w = WEIGHTS[level]
        variant = rng.choices(list(w), weights=list(w.values()))[0]
        story = f"{a} and {b} are in the {room}. {b} puts the {obj} in the {first}. "
        if variant == "away":
            story += (f"{b} leaves the {room}. While {b} is away, {a} moves the {obj} from the {first} to the {last}. "
                      f"{b} comes back.")
        elif variant == "present":
            story += f"While {b} is watching, {a} moves the {obj} from the {first} to the {last}."
        else:
            story += (f"{b} leaves the {room} but secretly watches through the window; {a} does not notice. "
                      f"{a} moves the {obj} from the {first} to the {last}. {b} comes back.")
        if level == 1:
            question = f"Where will {b} look for the {obj}?"
        else:
            question = f"Where does {a} think {b} will look for the {obj}?"
        gold = first if ANSWERS[variant][level - 1] == "first" else last
        prompt = f"{story} {question} Answer with the container's name, e.g. \\boxed{{{PLACES[0]}}}."
        return ProbeItem(self.name, level, prompt, gold, f"{story}|{question}", (first, last, variant))

    def shortcuts(self):
        return {"first container": lambda it: it.data[0], "last container": lambda it: it.data[1]}
