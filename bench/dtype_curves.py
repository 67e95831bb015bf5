"""bf16 vs float32 learner curves over seeds (issue 19): are the bf16 curves inside float32's seed interval?

    python bench/dtype_curves.py --a float32 RUN... --b bfloat16 RUN... --out docs/results/scale-dtype.png

Each RUN is a run directory (RL stage `rl`). Per curve, the steps are cut into windows (`--window`, default
20: the exploitability is evaluated every 20 steps, reward and loss are averaged over each window's steps);
per window: the mean and 95% t-interval of each side over its seeds, whether B's mean lies inside A's
interval (and A's inside B's), and the paired (same seed) difference B - A with its interval. Prints a
markdown table and writes a PNG of the three curves with their seed bands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compose_rl.stats import mean_ci, paired_ci  # noqa: E402

CURVES = (("reward/mean", "reward (mean return per turn)"), ("loss/total", "loss (total)"),
          ("eval/kuhn_poker/exploitability", "exploitability (exact)"))


def _rl_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("stage") == "rl"]


def windows(run: Path, key: str, window: int) -> dict[int, float]:
    """{window end step: mean of `key` over the window's rows that have it}."""
    acc: dict[int, list[float]] = {}
    for r in _rl_rows(run):
        if key in r:
            end = (r["step"] // window + 1) * window
            acc.setdefault(end, []).append(float(r[key]))
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}


def compare(a_runs: list[Path], b_runs: list[Path], window: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for key, _ in CURVES:
        wa = [windows(p, key, window) for p in a_runs]
        wb = [windows(p, key, window) for p in b_runs]
        ends = sorted(set.intersection(*(set(w) for w in wa + wb)))
        rows = []
        for e in ends:
            xa, xb = [w[e] for w in wa], [w[e] for w in wb]
            ma, ha = mean_ci(xa)
            mb, hb = mean_ci(xb)
            row = {"step": e, "a": ma, "a_h": ha, "b": mb, "b_h": hb,
                   "b_in_a": abs(mb - ma) <= ha, "a_in_b": abs(ma - mb) <= hb}
            if len(xa) == len(xb):
                row["d"], row["d_h"] = paired_ci(xb, xa)
            rows.append(row)
        out[key] = rows
    return out


def table(res: dict[str, list[dict]], a: str, b: str) -> str:
    lines = []
    for key, title in CURVES:
        rows = res[key]
        inside = sum(r["b_in_a"] for r in rows)
        lines += [f"**{title}** (`{key}`): {b} mean inside {a}'s 95% seed interval at {inside} of {len(rows)} windows; "
                  f"paired {b} - {a} interval contains 0 at {sum(abs(r.get('d', 0)) <= r.get('d_h', 0) for r in rows)} "
                  f"of {len(rows)}", "",
                  f"| steps to | {a} | {b} | {b} in {a}'s interval | paired {b} - {a} |", "|---|---|---|---|---|"]
        for r in rows:
            d = f"{r['d']:+.3f} ± {r['d_h']:.3f}" if "d" in r else "-"
            lines.append(f"| {r['step']} | {r['a']:.3f} ± {r['a_h']:.3f} | {r['b']:.3f} ± {r['b_h']:.3f} | "
                         f"{'yes' if r['b_in_a'] else 'no'} | {d} |")
        lines.append("")
    return "\n".join(lines)


def plot(res: dict[str, list[dict]], a: str, b: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6))
    for ax, (key, title) in zip(axes, CURVES):
        rows = res[key]
        x = [r["step"] for r in rows]
        for side, name, color in (("a", a, "tab:blue"), ("b", b, "tab:orange")):
            m = [r[side] for r in rows]
            h = [r[side + "_h"] for r in rows]
            ax.plot(x, m, color=color, label=f"{name} (mean of seeds)")
            ax.fill_between(x, [u - v for u, v in zip(m, h)], [u + v for u, v in zip(m, h)], color=color, alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs="+", required=True, metavar=("NAME", "RUN"))
    ap.add_argument("--b", nargs="+", required=True, metavar=("NAME", "RUN"))
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--out", type=Path, help="PNG of the curves")
    args = ap.parse_args(argv)
    a, a_runs = args.a[0], [Path(p) for p in args.a[1:]]
    b, b_runs = args.b[0], [Path(p) for p in args.b[1:]]
    res = compare(a_runs, b_runs, args.window)
    print(table(res, a, b))
    if args.out:
        plot(res, a, b, args.out)
        print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
