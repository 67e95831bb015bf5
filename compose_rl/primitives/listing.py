"""What `compose-rl list` prints about primitives: the register joined with the probe suites and the
in-game probe table (here, not in register.py, so the register imports nothing that imports it)."""
from __future__ import annotations

from compose_rl.primitives.ingame import PROBES
from compose_rl.primitives.register import PRIMITIVES
from synthetic_tasks.probes import SUITES


def describe_all() -> str:
    """Each primitive with its probes, in-game probes and detectors."""
    lines = ["primitives (probe suites | in-game probes | detectors: <primitive>/rules, <primitive>/judge):"]
    for p in PRIMITIVES.values():
        suites = ", ".join(f"{s} (levels {SUITES[s].levels[0]}-{SUITES[s].levels[-1]})" for s in p.probes)
        ingame = ", ".join(f"{n} ({PROBES[n].game})" for n in p.ingame) or "-"
        lines.append(f"  {p.name}: {p.definition}\n      probes: {suites}\n      in-game: {ingame}")
    return "\n".join(lines)
