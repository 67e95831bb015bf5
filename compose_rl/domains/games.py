"""A game mixture as a Domain: self-play RL on the training games, evaluation on those and the held-out ones.

Stage 1 teaches the action format on random reachable states. Training games get the per-seed
random code of `domains.game_labels.label_action` (it makes the model read its private line, and its exact
score is printed as the label policy's baseline). With `games.held_out_format` the held-out games
are shown too, labelled with a uniform legal action (`uniform`) or their own random code (`code`):
neither carries knowledge of play, so a held-out game's play after RL is still transfer, while its
valid-action rate becomes measurable (without it a held-out game is ~100% invalid before and after).
"""
from __future__ import annotations

import json
import random

from compose_rl.domains.base import Column, DomainBase

EXACT_GAMES = ("kuhn_poker", "leduc_poker")
LABEL_SHARP = 0.75  # stage-1 game labels: P(the code's action) before the uniform share
STRONG_BOTS = ("nash", "minimax")  # the strongest fixed bot a game offers, in this order (mcts: too slow here)


def say(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def random_states(game, rng: random.Random):
    """(state, player) pairs along one uniformly random playthrough of `game`."""
    state = game.new_initial_state(rng)
    out = []
    while not state.is_terminal():
        if state.is_chance_node():
            game.resolve_chance(state, rng)
            continue
        player = state.current_player()
        out.append((state.clone(), player))
        state.apply_action(rng.choice(state.legal_actions()))
    return out


def private_info_labels(states, seed: int, rng: random.Random, sharp: float = 0.75, by: str = "line") -> list[int]:
    """An arbitrary code from private information to actions, as SFT labels: with probability `sharp`
    the label is the code's action for the state's private line (`game_labels.label_action`: a
    random map drawn per seed, independent of what the line means and of its text order), else a
    uniform legal action. Different private lines may get different labels, so fitting them
    requires reading them; the code is random, so it carries no knowledge of good play (its own
    score is reported exactly as the stage-1 baseline: `GameDomain.label_baseline`). `by="infostate"` keys
    the code on the whole information state (private line and public history) instead of the line alone."""
    from compose_rl.domains.game_labels import label_action

    labels = []
    for game, st, pl in states:
        legal = st.legal_actions()
        labels.append(label_action(game, st, pl, seed, by) if rng.random() < sharp else rng.choice(legal))
    return labels


_MEAN_DECISIONS: dict[str, float] = {}


def mean_decisions(game, playthroughs: int = 400) -> float:
    """Mean number of decision states (all players) in a uniformly random playthrough of `game`,
    estimated on a fixed seed (deterministic, cached per game name): the samples one drawn game yields."""
    if game.name not in _MEAN_DECISIONS:
        rng = random.Random(12345)
        _MEAN_DECISIONS[game.name] = sum(len(random_states(game, rng)) for _ in range(playthroughs)) / playthroughs
    return _MEAN_DECISIONS[game.name]


def draw_weights(mixture, unit: str):
    """(game, weight) pairs for drawing games so that `unit` ("samples" or "games") gets the recipe's
    shares: per-sample weights divide each game's weight by its mean decisions per playthrough. A
    one-game mixture is returned unchanged (the draw is the same)."""
    if unit == "games" or len(mixture) == 1:
        return list(mixture)
    if unit != "samples":
        raise ValueError(f"unknown weight unit {unit!r}; use samples or games")
    return [(g, w / mean_decisions(g)) for g, w in mixture]


def sample_states(games_weights, n: int, rng: random.Random):
    """n (game, state, player) triples from random playthroughs, games drawn by weight."""
    games = [g for g, _ in games_weights]
    weights = [w for _, w in games_weights]
    states = []
    while len(states) < n:
        game = rng.choices(games, weights)[0]
        states += [(game, st, pl) for st, pl in random_states(game, rng)]
    return states[:n]


def valid_rate_items(engine, format_prompt, game, n: int, seed: int, sampling) -> list[float]:
    """1/0 per state: is the policy's answer a legal action (strict parser), on n random states."""
    rng = random.Random(seed)
    states = []
    while len(states) < n:
        states += random_states(game, rng)
    states = states[:n]
    comps = engine.generate([format_prompt(game.prompt(s, p)) for s, p in states], sampling)
    out = []
    for (s, p), c in zip(states, comps):
        a = game.parse(c[0].text, s)
        out.append(float(a is not None and a in s.legal_actions(p)))
    return out


class GameDomain(DomainBase):
    name = "games"

    def __init__(self, games_cfg, seed: int = 0, eval_names=None):
        from games import get_game

        g = games_cfg
        self.cfg, self.seed = g, seed
        self.mixture = [(get_game(m.name), m.weight) for m in g.train] if g is not None else []
        # what games are drawn with, so that the weights share out samples (or games: weight_unit)
        self.draw_mixture = draw_weights(self.mixture, g.weight_unit) if g is not None else []
        held = list(g.held_out) if g is not None else []
        self.held_out = [get_game(n) for n in (eval_names or held) if n not in {m.name for m, _ in self.mixture}]
        self.held_out_format = g.held_out_format if g is not None else "none"
        # a checkpoint trained on one game is labelled by it (kuhn_poker), on several by "games"
        self.name = self.mixture[0][0].name if len(self.mixture) == 1 else "games"
        from compose_rl.evals.games import AveragePolicy

        self.average = {gm.name: AveragePolicy() for gm, _ in self.mixture if gm.name in EXACT_GAMES}
        self.best: dict = {}
        self.pool = None

    @property
    def label_by(self) -> str:
        """What the stage-1 code reads: the private line (`code`) or the whole information state (`infostate`)."""
        return "infostate" if self.cfg.stage1_labels == "infostate" else "line"

    @property
    def formatted(self) -> list:
        """Held-out games stage 1 shows (format only)."""
        return self.held_out if self.held_out_format != "none" else []

    @classmethod
    def prompt_rewrites(cls, recipe) -> tuple[tuple[str, str], ...]:
        """SPIRAL's reasoning prompt and/or the compact prompt (games.base.prompt_rewrites)."""
        if recipe.games is None:
            return ()
        from games import GAMES
        from games.base import prompt_rewrites

        return prompt_rewrites(recipe.games.answer, recipe.games.prompt, GAMES.values())

    @staticmethod
    def check_recipe(recipe) -> None:
        """The `games` section's checks across the recipe (recipe/schema.py calls them; ValueError = bad recipe)."""
        if recipe.games is not None:
            from games import GAMES  # registry names only: building games is cheap, no models
            for g in [m.name for m in recipe.games.train] + list(recipe.games.held_out):
                if g not in GAMES:
                    raise ValueError(f"games: unknown game {g!r}; known: {', '.join(sorted(GAMES))}")
            check_opponents(recipe)
            if recipe.rl.replay_fraction > 0 and recipe.task is None and (
                    recipe.games.held_out_format == "none" or not recipe.games.held_out):
                raise ValueError("rl.replay_fraction: a games recipe replays its held-out games' stage-1 format "
                                 "examples; give games.held_out and games.held_out_format (uniform|code), or set "
                                 "rl.replay_fraction: 0")
            if recipe.games.invalid.mode == "retry" and recipe.games.invalid.retries == 0:
                raise ValueError("games.invalid.retries: mode `retry` needs retries >= 1")

    @classmethod
    def trained_groups(cls, recipe) -> list[str]:
        return [g.name for g in recipe.games.train] if recipe.games is not None else []

    @classmethod
    def smoke_budgets(cls, data: dict) -> None:
        data["rl"].update(games_per_step=8)
        data["eval"].update(games=4)

    # ---- stage 1
    def sft_pairs(self, n: int) -> list[tuple[str, str]]:
        # the action format on random reachable states, with labels that encode the player's private
        # information (the last line of every renderer: "Your card: K"), see private_info_labels.
        # Uniform labels teach the model to ignore the card, and self-play then stalls in the
        # card-blind "always bet/call" plateau; this skill teaches it to read the card. The code is a
        # random map drawn per seed, so on average it teaches nothing about play, but a given seed's
        # code can happen to be a good or a bad strategy: its exact score is the stage-1 baseline
        # (label_baseline), and RL's effect is measured from after-SFT.
        rng = random.Random(self.seed)
        held = self.formatted
        if held:  # held-out games get the mean training weight each
            w = sum(x for _, x in self.mixture) / len(self.mixture)
            pool = draw_weights(self.mixture + [(g, w) for g in held], self.cfg.weight_unit)
        else:
            pool = self.draw_mixture
        return self._labelled(sample_states(pool, n, rng), rng)

    def _labelled(self, states, rng: random.Random) -> list[tuple[str, str]]:
        """Stage 1's (prompt, answer) for each (game, state, player): the seed's code, or a uniform legal
        action where the recipe asks for the format alone (games.stage1_labels, games.held_out_format)."""
        train_names = {g.name for g, _ in self.mixture}
        code = private_info_labels(states, self.seed, rng, LABEL_SHARP, self.label_by)
        labels = []
        for (game, st, pl), a in zip(states, code):
            if game.name in train_names and self.cfg.stage1_labels == "uniform" or \
                    game.name not in train_names and self.held_out_format == "uniform":
                a = rng.choice(st.legal_actions())  # the format alone: no map from information to action
            labels.append(a)
        return [(game.prompt(st, pl), game.answer_text(st, a)) for (game, st, pl), a in zip(states, labels)]

    def replay(self, ctx, step: int) -> list:
        """rl.replay_fraction: round(games_per_step x fraction) stage-1 examples of the held-out games whose
        format stage 1 taught (labelled as stage 1 labelled them), fresh states each step, added to the RL
        loss as an NLL term. RL never samples those games, and without an anchor it erodes their formats
        (docs/results/transfer.md). Training games are not replayed: their stage-1 labels are a code RL
        must be free to leave."""
        from compose_rl.sft.stage import encode_pair

        r = ctx.recipe
        if r.rl.replay_fraction <= 0 or not self.formatted:
            return []
        k = max(1, int(round(r.rl.games_per_step * r.rl.replay_fraction)))
        rng = random.Random(self.seed * 1_000_003 + step)
        states = sample_states(draw_weights([(g, 1.0) for g in self.formatted], self.cfg.weight_unit), k, rng)
        return [encode_pair(ctx.policy, p, a) for p, a in self._labelled(states, rng)]

    def label_baseline(self, ctx) -> dict:
        """The stage-1 label policy's own score, exactly (a table, no model), per exact game: the
        baseline every after-SFT number is read against. Writes eval/label-policy.json, logs it as
        stage `label-policy` and prints the code each seed drew."""
        from compose_rl.domains.game_labels import label_code_map, label_policy_tables
        from compose_rl.evals.games import policy_baseline_metrics

        out, metrics = {}, {}
        sharp = LABEL_SHARP if self.cfg.stage1_labels != "uniform" else 0.0  # uniform labels: the uniform policy
        for game, _ in self.mixture:
            if game.name not in EXACT_GAMES:
                continue
            tables = label_policy_tables(game, self.seed, sharp, self.label_by)
            m = policy_baseline_metrics(game, tables)
            code = label_code_map(game, self.seed, self.label_by)
            out[game.name] = {"seed": self.seed, "sharp": sharp, "code": code, **m}
            metrics.update({f"eval/{game.name}/{k}": v for k, v in m.items()})
            if len(code) <= 6 and sharp > 0:  # Kuhn: print the map; Leduc's (6 lines x legal sets) is in the file
                say(f"label code ({game.name}, seed {self.seed}): "
                    + ", ".join(f"{line.split(': ')[-1]}->{'/'.join(acts.values())}" for line, acts in code.items()))
            say(f"label policy ({game.name}, sharp {sharp}): exploitability {m['exploitability']:.3f}, "
                f"exact value vs random {m['vs_random/exact_value']:+.3f}, vs nash {m['vs_nash/exact_value']:+.3f}")
        if out:
            ctx.run.write_json("eval/label-policy.json", out)
            ctx.run.log("label-policy", 0, metrics)
        return out

    def gate_skills(self, ctx) -> dict[str, float]:
        """Greedy valid-action rate on random states of each trained (and format-taught) game."""
        r = ctx.recipe
        out = {}
        for k, game in enumerate([g for g, _ in self.mixture] + self.formatted):
            # the first game's states are those of the pre-domain pipeline (seed + 17), the rest follow on
            items = valid_rate_items(ctx.engine, ctx.policy.format_prompt, game, r.sft.gate_items,
                                     r.seed + 17 + 7919 * k, ctx.eval_sampling)
            out[f"{game.name}/valid"] = sum(items) / len(items)
        return out

    # ---- rl
    def collector(self, ctx, label: str):
        from compose_rl.rollout.collectors import SelfPlayCollector
        from games.env import InvalidPolicy

        r, g = ctx.recipe, self.cfg
        inv = g.invalid
        col = SelfPlayCollector(self.draw_mixture, ctx.policy.format_prompt, r.rl.games_per_step, ctx.sampling,
                                r.seed, InvalidPolicy(mode=inv.mode, penalty=inv.penalty, other=inv.other,
                                                      retries=inv.retries),
                                opponent=g.opponent, max_turns=g.max_turns, lenient=g.lenient)
        if g.opponent == "pool":
            self._setup_pool(ctx, col)
        self._collector = col
        return col

    def _setup_pool(self, ctx, collector) -> None:
        import copy

        from compose_rl.rollout.hf import HFEngine

        # the pool holds past learner weights (on CPU); one frozen copy of the model plays them
        from compose_rl.domains.pool import SnapshotPool

        self.pool = SnapshotPool(self.cfg.pool_size)
        self.pool.add(ctx.policy.model.state_dict())
        snapshot_model = copy.deepcopy(ctx.policy.model)
        collector.opponent_engine = HFEngine(snapshot_model, ctx.policy.tokenizer, ctx.recipe.rollout.batch_size)

    def on_step_end(self, ctx, step: int) -> None:
        if self.pool is not None and (step + 1) % self.cfg.pool_every == 0:
            self.pool.add(ctx.policy.model.state_dict())
            pick = self.pool.pick(random.Random(ctx.recipe.seed + step))
            self._collector.opponent_engine.model.load_state_dict(pick, strict=False)

    def track(self, ctx, step: int, label: str) -> dict:
        """Exploitability of the current and the running-average policy, exact values, best checkpoint."""
        from compose_rl.evals.exploitability import exploitability_of_tables, own_reach
        from compose_rl.evals.games import exact_value_vs, history_tv, infostate_rows, lm_policy_tables, tabular_opponent

        if not (ctx.run.path / "eval" / "reference-curves.json").exists():
            write_reference_curves(ctx.run, list(self.average), ctx.recipe)
        out = {}
        for name, avg in self.average.items():
            game = next(g for g, _ in self.mixture if g.name == name)
            tables = lm_policy_tables(ctx.scorer, game)
            cur = exploitability_of_tables(game, tables)
            # reach-weighted: the average is the behaviour policy of the mixture of past policies (fictitious play)
            avg.update(tables, reach=own_reach(game, tables))
            av = avg.exploitability(game)
            rows = infostate_rows(game, tables)
            out[f"eval/{name}/exploitability"] = cur[0]
            out[f"eval/{name}/nash_conv"] = cur[1]
            out[f"eval/{name}/history_tv"] = history_tv(rows)
            out[f"eval/{name}/exploitability_avg"] = av[0]
            for opp in ("random", "nash"):  # exact expected return vs fixed opponents, both seats
                out[f"eval/{name}/vs_{opp}/exact_value"] = exact_value_vs(game, tables, tabular_opponent(game, opp))
            if cur[0] < self.best.get(name, (float("inf"),))[0]:
                self.best[name] = (cur[0], step)
                ctx.save_best(ctx.run.path / "best" / name)
                out[f"eval/{name}/best_step"] = step
                write_infostates(ctx.run, "best", {name: rows}, {"step": step, "exploitability": cur[0]})
        return out

    def extra_state(self) -> dict:
        return {"average": {k: v.state_dict() for k, v in self.average.items()},
                "best": {k: list(v) for k, v in self.best.items()}}

    def load_extra_state(self, extra: dict) -> None:
        for k, v in extra.get("average", {}).items():
            if k in self.average:
                self.average[k].load_state_dict(v)
        self.best = {k: tuple(v) for k, v in extra.get("best", {}).items()}

    # ---- eval
    def evaluate(self, ctx, label: str) -> tuple[dict, list[str]]:
        from compose_rl.evals.games import game_eval_suite, infostate_rows
        from games import get_game

        r = ctx.recipe
        names = [g.name for g, _ in self.mixture] + [g.name for g in self.held_out]
        tables: dict = {}
        metrics, transcripts = game_eval_suite(ctx.scorer, ctx.engine, names, r.eval.opponents, r.eval.games,
                                               r.seed + 1000, ctx.eval_sampling, tables_out=tables)
        if tables:
            write_infostates(ctx.run, label, {n: infostate_rows(get_game(n), t) for n, t in tables.items()})
        if r.eval.exploitability:
            for name, avg in self.average.items():
                if avg.updates:
                    game = next(g for g, _ in self.mixture if g.name == name)
                    metrics[f"eval/{name}/exploitability_avg"] = avg.exploitability(game)[0]
        for game in self.held_out:  # the held-out game's format: valid-action rate on random states
            items = valid_rate_items(ctx.engine, ctx.policy.format_prompt, game, r.sft.gate_items,
                                     r.seed + 4242, ctx.eval_sampling)
            metrics[f"eval/{game.name}/held_out_valid"] = sum(items) / len(items)
        if r.eval.transfer_strcomp:
            from compose_rl.evals.strcomp import strcomp_suite
            from synthetic_tasks.strcomp import StrCompTask

            m, rows, _ = strcomp_suite(ctx.engine, ctx.policy.format_prompt, StrCompTask(seed=r.seed), r.eval,
                                       ctx.max_new_tokens, r.rollout.temperature, r.seed)
            metrics.update({k.replace("eval/strcomp", "eval/transfer_strcomp"): v for k, v in m.items()})
        ctx.run.write_json(f"eval/{label}-games.json", metrics)
        texts = [f"[{key}]\n{t}" for key, ts in transcripts.items() for t in ts[:2]]
        return metrics, texts

    def transfer_columns(self, policy, engine, items: int, seed: int, max_new_tokens: int,
                         temperature: float = 1.0) -> list[Column]:
        """Per game: valid-action rate on random states (paired), and play vs random and vs the
        strongest fixed bot it offers, scored 1 win / 0.5 draw / 0 loss per game (not paired: the
        opponent's replies depend on the policy's moves)."""
        from compose_rl.evals.games import play_vs
        from compose_rl.types import SamplingParams
        from games.opponents import opponent_kinds

        sampling = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, n=1, seed=seed)
        cols = []
        for game in [g for g, _ in self.mixture] + self.held_out:
            group = game.name
            cols.append(Column(group, "valid", valid_rate_items(engine, policy.format_prompt, game, items, seed,
                                                                sampling)))
            kinds = opponent_kinds(game)
            for opp in ["random"] + [k for k in STRONG_BOTS if k in kinds][:1]:
                res = play_vs(engine, policy.format_prompt, game, opp, items, seed, sampling, n_transcripts=0)
                outcomes = [1.0] * res["n_win"] + [0.5] * res["n_draw"] + [0.0] * res["n_loss"]
                cols.append(Column(group, f"vs_{opp}", outcomes, paired=False))
        return cols


def write_infostates(run, label: str, rows: dict, extra: dict | None = None) -> None:
    """eval/<label>-infostates.json: per game, the exact action probabilities at every information
    state (Kuhn: 12 rows) and history_tv, so one can see whether the policy reads the history."""
    from compose_rl.evals.games import history_tv

    path = run.path / "eval" / f"{label}-infostates.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    for name, rs in rows.items():
        data[name] = {**(extra or {}), "history_tv": history_tv(rs), "rows": rs}
    run.write_json(f"eval/{label}-infostates.json", data)


def write_reference_curves(run, names, recipe) -> None:
    """eval/reference-curves.json: what the algorithm does without a language model, at the run's budget
    (rl.games_per_step x rl.steps sampled games): a tabular policy trained by rl/tabular.py with the same
    loss terms and the recipe's rl.mmd settings, and OpenSpiel's outcome-sampling MCCFR. The report draws
    them beside the LM's exploitability against games sampled. Self-play games only: with a fixed
    opponent the comparison does not hold. A `reference` magnet becomes `uniform` for the table (it has no
    stage-1 policy); the table's step size is its own (rl/tabular.py TABLE_LR), not rl.lr, under the run's
    rl.lr_schedule."""
    from compose_rl.rl.tabular import TABLE_LR, MMDConfig, reference_curves

    if recipe.games.opponent != "self" or not names:
        return
    m = recipe.rl.mmd
    target = m.update == "target"  # the table takes the same closed-form step (an exact fit) with the run's eta
    cfg = MMDConfig(alpha=m.alpha, alpha_schedule=m.alpha_schedule, alpha_horizon=m.alpha_horizon,
                    eta=m.eta if target else None, update=m.update,
                    magnet="moving" if m.magnet in ("moving", "moving_table") else "uniform", magnet_rate=m.magnet_rate)
    say("reference curves: tabular MMD and outcome-sampling MCCFR at the run's games per step ...")
    curves = {n: reference_curves(n, recipe.rl.games_per_step, recipe.rl.steps, cfg, seed=recipe.seed,
                                  lr_schedule=recipe.rl.lr_schedule) for n in names}
    run.write_json("eval/reference-curves.json", {"games_per_step": recipe.rl.games_per_step, "curves": curves,
                                                  "mmd": cfg.__dict__, "table_lr": TABLE_LR,
                                                  "lr_schedule": recipe.rl.lr_schedule})


def check_opponents(recipe) -> None:
    """The RL opponent must exist in every training game; each eval opponent in at least one game."""
    from games.opponents import opponent_kinds

    train = [m.name for m in recipe.games.train]
    kinds = {g: opponent_kinds(g) for g in train + list(recipe.games.held_out)}
    opp = recipe.games.opponent
    if opp not in ("self", "pool"):
        lacking = [g for g in train if opp not in kinds[g]]
        if lacking:
            raise ValueError(f"games.opponent: {opp!r} is not available for {', '.join(lacking)} "
                             f"(offers: {', '.join(kinds[lacking[0]])}); use self, pool or one of those")
    offered = {k for ks in kinds.values() for k in ks}
    for o in recipe.eval.opponents:
        if o not in offered:
            raise ValueError(f"eval.opponents: {o!r} is offered by none of the recipe's games; "
                             f"use any of {', '.join(sorted(offered))}")
