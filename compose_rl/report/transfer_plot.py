"""Heatmap of the transfer matrix (compose_rl/commands/transfer.py): rows = checkpoints, columns = eval domains."""
from __future__ import annotations

from pathlib import Path


def heatmap(rows, path: Path, title: str = "Transfer matrix") -> Path:
    """Colour = delta vs the run's base model (diverging, 0 = white); text = score and delta. A cell
    whose delta interval excludes 0 is marked with `*` (moved beyond its interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [f"{c['group']}\n{c['column']}" for c in rows[0].cells]
    d = np.array([[c["d_base"] for c in r.cells] for r in rows], dtype=float)
    label_w = 0.065 * max(len(r.name) for r in rows)  # inches for the row labels
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 1.1 * len(cols)) + label_w, 1.0 + 0.55 * len(rows)))
    lim = max(float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 0.0, 0.05)
    im = ax.imshow(np.nan_to_num(d), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(r.cells):
            moved = c["d_base_lo"] > 0 or c["d_base_hi"] < 0
            txt = f"{c['score']:.2f}" + ("" if c["d_base"] != c["d_base"] else f"\n{c['d_base']:+.2f}{'*' if moved else ''}")
            ax.text(j, i, txt, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [r.name for r in rows], fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="score - base score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
