"""Markdown table helpers and reader-facing stage names, shared by every report section."""
from __future__ import annotations


def md_table(header: list[str], rows: list[list]) -> str:
    def fmt(x):
        return f"{x:.3f}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


_md_table = md_table  # the name other modules imported before the split


def stage_name(label: str) -> str:
    """Reader-facing name of an eval label: eval-base -> untrained model, eval-sft -> after SFT, ..."""
    what = label.removeprefix("eval-")
    if what == "base":
        return "untrained model"
    if what.rstrip("0123456789") in ("sft", "rl"):
        return "after " + what.upper()  # after SFT, after RL2
    return label


def _f(x, fmt="{:.3f}") -> str:
    return "" if x is None or (isinstance(x, float) and x != x) else fmt.format(x)
