"""The game domain's report section (domains/games.py): per exact game, the reference policies, the
stage-1 label policy and every evaluated stage side by side; held-out games; per-information-state tables."""
from __future__ import annotations

import json

from compose_rl.report.tables import _f, md_table as _md_table, stage_name


def metrics_of(run) -> dict[str, dict]:
    """eval/<label>-games.json per eval stage, in the order they were written."""
    game_metrics = {}
    for f in sorted((run.path / "eval").glob("*-games.json"), key=lambda p: p.stat().st_mtime):
        game_metrics[f.stem.replace("-games", "")] = json.loads(f.read_text())
    return game_metrics


NASH_AT_REPORT = ("kuhn_poker",)  # games whose CFR+ Nash is quick to solve at report time (Leduc's is slow)
_REFERENCE_CACHE: dict[str, list[tuple[str, dict]]] = {}


def reference_policies(name: str) -> list[tuple[str, dict]]:
    """Exact scores of the fixed reference policies of an exact game: uniform random, and (Kuhn) Nash."""
    if name not in _REFERENCE_CACHE:
        from compose_rl.evals.games import policy_baseline_metrics, tables_from_fn, tabular_opponent
        from games import get_game

        game = get_game(name)
        opps = ("random", "nash") if name in NASH_AT_REPORT else ("random",)
        refs = [("uniform random (baseline)", policy_baseline_metrics(game, {}, opps))]
        if name in NASH_AT_REPORT:
            nash = tabular_opponent(game, "nash")
            refs.append(("Nash, CFR+ (baseline)",
                         policy_baseline_metrics(game, tables_from_fn(game, lambda st, p: nash.action_probabilities(st)), opps)))
        _REFERENCE_CACHE[name] = refs
    return _REFERENCE_CACHE[name]


GAME_COLUMNS = ["policy", "exploitability", "exploitability (average policy)", "exact value vs random",
                "exact value vs Nash", "play return vs random [95%]", "valid-action rate (play)", "history_tv"]


def _game_row(name: str, label: str, m: dict) -> list[str]:
    g = f"eval/{name}/"
    ret, ci = m.get(g + "vs_random/mean_return"), m.get(g + "vs_random/ci95")
    inv = m.get(g + "vs_random/invalid_rate")
    return [label, _f(m.get(g + "exploitability")), _f(m.get(g + "exploitability_avg")),
            _f(m.get(g + "vs_random/exact_value"), "{:+.3f}"), _f(m.get(g + "vs_nash/exact_value"), "{:+.3f}"),
            "" if ret is None else f"{ret:+.3f} ± {_f(ci)}", "" if inv is None else f"{1 - inv:.3f}",
            _f(m.get(g + "history_tv"))]


def games_headline(run, games: dict[str, dict], rows: list[dict]) -> list[str]:
    """Per exact game: reference policies, the stage-1 label policy, then every evaluated stage, the best
    and the average policy, side by side; then the per-information-state table (Kuhn)."""
    label_policy = run.read_json("eval/label-policy.json", {})
    names = sorted({k.split("/")[1] for m in games.values() for k in m if k.endswith("/exploitability")}
                   | set(label_policy))
    parts = []
    for name in names:
        g = f"eval/{name}/"
        table = [[lab] + _game_row(name, lab, {g + k: v for k, v in m.items()})[1:] for lab, m in reference_policies(name)]
        if name in label_policy:
            lp = label_policy[name]
            code = ", ".join(f"{line.split(': ')[-1]}->{'/'.join(a.values())}" for line, a in lp["code"].items())
            table.append(_game_row(name, f"stage-1 label policy (baseline; sharp {lp['sharp']}"
                                   + (f"; code {code})" if len(lp["code"]) <= 6 else ")"),
                                   {g + k: v for k, v in lp.items() if isinstance(v, float)}))
        for label, m in games.items():
            if g + "exploitability" in m:
                table.append(_game_row(name, stage_name(label), m))
        best = [r for r in rows if g + "best_step" in r]
        if best:
            b = best[-1]
            table.append(_game_row(name, f"best current policy (RL step {b[g + 'best_step']})",
                                   {k: v for k, v in b.items() if k != g + "exploitability_avg"}))
        avg = [r for r in rows if r.get("stage", "").startswith("rl") and g + "exploitability_avg" in r]
        if avg:
            table.append([f"average policy (RL step {avg[-1]['step']})", "", _f(avg[-1][g + "exploitability_avg"]),
                          "", "", "", "", ""])
        parts += [f"## Headline: {name} (exact numbers from the full game tree; both seats)", "",
                  _md_table(GAME_COLUMNS, table), "",
                  "exploitability: 0 = Nash, lower is better; exact value: expected return per game, both seats "
                  "averaged; play return: sampled games, mean ± 95% half-width; history_tv: mean over private "
                  "cards of the largest total-variation distance between the action distributions at that "
                  "card's histories (0 = ignores the history).", ""]
        parts += infostate_table(run, name)
    return parts


def held_out_table(games: dict[str, dict]) -> list[str]:
    """Held-out games (issue 10): valid-action rate on random states and play, per eval stage."""
    names = sorted({k.split("/")[1] for m in games.values() for k in m if k.endswith("/held_out_valid")})
    if not names:
        return []
    head = ["game", "policy", "valid-action rate (random states)", "valid (play vs random)", "win vs random",
            "return vs random [95%]", "win vs strongest bot"]
    body = []
    for name in names:
        g = f"eval/{name}/"
        for label, m in games.items():
            if g + "held_out_valid" not in m:
                continue
            bot = next((o for o in ("nash", "minimax", "mcts") if g + f"vs_{o}/win" in m), None)
            inv, ret, ci = m.get(g + "vs_random/invalid_rate"), m.get(g + "vs_random/mean_return"), m.get(g + "vs_random/ci95")
            body.append([name, stage_name(label), _f(m[g + "held_out_valid"]), "" if inv is None else f"{1 - inv:.3f}",
                         _f(m.get(g + "vs_random/win")), "" if ret is None else f"{ret:+.3f} ± {_f(ci)}",
                         "" if bot is None else f"{_f(m[g + f'vs_{bot}/win'])} ({bot})"])
    return ["## Held-out games (not trained by RL; stage 1 shows their format when games.held_out_format is set)", "",
            _md_table(head, body), ""]


def infostate_table(run, name: str, max_rows: int = 24) -> list[str]:
    """The exact action probabilities at every information state, after SFT / after RL / best (small games)."""
    files = [("after SFT", "eval-sft"), ("after RL", "eval-rl"), ("best", "best")]
    found = [(title, run.read_json(f"eval/{stem}-infostates.json", {}).get(name)) for title, stem in files]
    found = [(t, d) for t, d in found if d]
    if not found or len(found[0][1]["rows"]) > max_rows:
        return []
    actions = list(found[0][1]["rows"][0]["probs"])
    header = ["information state"] + [f"{t}: P({a})" for t, _ in found for a in actions]
    body = []
    for i, r in enumerate(found[0][1]["rows"]):
        body.append([r["infostate"]] + [f"{d['rows'][i]['probs'].get(a, 0.0):.2f}" for _, d in found for a in actions])
    return [f"### {name}: action probabilities per information state (exact)", "",
            _md_table(header, body), "",
            "history_tv: " + ", ".join(f"{t} {d['history_tv']:.3f}" for t, d in found), ""]


def headline(run, rows: list[dict], refs: dict) -> list[str]:
    """The headline tables, and the exploitability plot's reference lines into `refs`."""
    parts: list[str] = []
    game_metrics = metrics_of(run)
    if game_metrics or (run.path / "eval" / "label-policy.json").exists():
        parts += games_headline(run, game_metrics, rows)
        parts += held_out_table(game_metrics)
        for name, lp in run.read_json("eval/label-policy.json", {}).items():
            refs.setdefault("rl_exploitability.png", []).append((lp["exploitability"], f"{name}: label policy"))
        for name in sorted({k.split("/")[1] for m in game_metrics.values() for k in m if k.endswith("/exploitability")}):
            uni = reference_policies(name)[0][1]["exploitability"]
            refs.setdefault("rl_exploitability.png", []).extend([(uni, f"{name}: uniform random"), (0.0, "Nash")])
    return parts


def details(run, rows: list[dict]) -> list[str]:
    parts: list[str] = []
    game_metrics = metrics_of(run)
    games = game_metrics
    if games:
        keys = sorted({k for m in games.values() for k in m if isinstance(m[k], (int, float))})
        parts += ["## Game evaluation (both seats; exploitability exact)", "",
                  _md_table(["metric"] + list(games), [[k.removeprefix("eval/")] + [float(games[s].get(k, float("nan"))) for s in games] for k in keys]), ""]
    return parts
