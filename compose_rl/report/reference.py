"""The report's self-play learner section: which update rule ran, and the LM's exploitability against the
number of sampled games beside the algorithm without a language model (eval/reference-curves.json)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def learner_line(resolved: dict, rows: list[dict]) -> list[str]:
    """One line naming the RL update rule as it actually ran: PPO or MMD with one pass over each batch never
    clips (ratio = 1), which makes its surrogate REINFORCE; say so from the logged clip fraction."""
    rl = resolved.get("rl") or {}
    if not rl or not any(r.get("stage", "").startswith("rl") for r in rows):
        return []
    algo = rl.get("algorithm", "ppo")
    clip = [r["loss/clip_frac"] for r in rows if r.get("stage", "").startswith("rl") and "loss/clip_frac" in r]
    ran = algo.upper()
    if algo in ("ppo", "mmd") and clip and max(clip) == 0.0:
        ran += " (policy-gradient term: REINFORCE, ratio = 1: nothing clipped in any step)"
    if algo == "mmd":
        m = rl.get("mmd", {})
        if m.get("update") == "target":
            ran += (f" (closed-form step per state from per-answer values, q_decay {m.get('q_decay')}, fitted by "
                    f"{m.get('target_steps')} {rl.get('optimizer', 'adam')} steps per RL step: no policy-gradient term)")
        ran += (f"; magnet {m.get('magnet')} (rate {m.get('magnet_rate')}), alpha {m.get('alpha')} "
                f"{m.get('alpha_schedule')} (horizon {m.get('alpha_horizon')}), eta {m.get('eta')}, "
                f"validity {m.get('validity')}")
    switch = rl.get("switch")
    opt = f"optimizer {rl.get('optimizer', 'adam')}" + (f", then {switch['optimizer']} at lr {switch['lr']} from step "
                                                         f"{switch['step']}" if switch else "")
    return [f"RL update: {ran}; advantage {rl.get('advantage')}, token aggregation {rl.get('token_aggregation')}, "
            f"lr {rl.get('lr')}, {opt}.", ""]


def reference_plot(run, rows: list[dict]) -> list[str]:
    """rl_vs_reference.png: exploitability of the LM's current policy against games sampled, with the
    tabular MMD and outcome-sampling MCCFR curves at the same games per step."""
    ref = run.read_json("eval/reference-curves.json")
    if not ref:
        return []
    per_step = ref["games_per_step"]
    lines = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curves in ref["curves"].items():
        lm = sorted((r["step"] + 1, r[f"eval/{name}/exploitability"]) for r in rows
                    if r.get("stage", "").startswith("rl") and f"eval/{name}/exploitability" in r)
        if lm:
            ax.plot([s * per_step for s, _ in lm], [e for _, e in lm], label=f"{name}: language model (last iterate)")
        for kind, pts in curves.items():
            ax.plot([g for g, _ in pts], [e for _, e in pts], ls="--", label=f"{name}: {kind.replace('_', ' ')}")
        last = {k: v[-1] for k, v in curves.items()}
        lines.append(f"- {name}, at {last['tabular_mmd'][0]:.0f} sampled games: tabular MMD "
                     f"{last['tabular_mmd'][1]:.3f}, outcome-sampling MCCFR (average policy) "
                     f"{last['mccfr_outcome_sampling'][1]:.3f}"
                     + (f", language model {lm[-1][1]:.3f} (step {lm[-1][0]})" if lm else ""))
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("games sampled")
    ax.set_ylabel("exploitability")
    ax.set_title("Exploitability vs experience: LM and the algorithm on a table")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(run.path / "rl_vs_reference.png", dpi=110)
    plt.close(fig)
    return ["## Sample efficiency: the language model beside the algorithm on a table", "",
            "Same games per step and number of steps; the tabular policy uses the recipe's MMD settings "
            "(plain SGD at lr 1 on its logits) and MCCFR is OpenSpiel's outcome sampling (2 games per iteration).", "",
            *lines, "", "![rl_vs_reference.png](rl_vs_reference.png)", ""]
