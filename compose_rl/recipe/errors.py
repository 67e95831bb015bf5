"""The one error a bad recipe raises."""
from __future__ import annotations


class RecipeError(ValueError):
    """A recipe that cannot run: the message is one line and says how to fix it."""
