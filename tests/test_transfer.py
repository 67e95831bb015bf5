"""`compose-rl transfer`: cell statistics pinned by hand, the matrix of a two-checkpoint toy run,
bad input (exit 2, one line), and a recipe that mixes a game and the string task in RL."""
import json
import math
import os

import pytest
import torch

from compose_rl.cli import main
from compose_rl.domains import Column
from compose_rl.commands.transfer import write_outputs
from compose_rl.evals.transfer import Row, delta_interval, fill_cells, normalized_gain, score_interval, seed_rows


# ------------------------------------------------------------------ statistics, by hand
def test_score_interval_wilson_for_binary_t_for_graded():
    m, lo, hi = score_interval([1.0, 1.0, 0.0, 0.0])
    # Wilson, p = .5, n = 4, z = 1.96: centre .5, half = 1.96*sqrt(.0625 + .9604/64)/(1 + .9604) = .3498
    assert (m, lo, hi) == pytest.approx((0.5, 0.1500, 0.8500), abs=1e-4)
    m, lo, hi = score_interval([0.5, 1.0, 0.0])
    # mean .5, sd .5, t(2) = 4.303: half = 4.303 * .5 / sqrt(3) = 1.2422, clipped to the score range
    assert (m, lo, hi) == pytest.approx((0.5, 0.0, 1.0), abs=1e-4)
    m, lo, hi = score_interval([0.5, 0.6, 0.7])
    # mean .6, sd .1: half = 4.303 * .1 / sqrt(3) = .24844
    assert (m, lo, hi) == pytest.approx((0.6, 0.6 - 0.24844, 0.6 + 0.24844), abs=1e-4)


def test_delta_is_paired_over_items_when_it_can_be():
    a = Column("g", "c", [1.0, 1.0, 1.0, 0.0])
    b = Column("g", "c", [0.0, 1.0, 0.0, 0.0])
    # differences 1, 0, 1, 0: mean .5, sd .57735, t(3) = 3.182 -> half 3.182 * .57735 / 2 = .91856
    assert delta_interval(a, b) == pytest.approx((0.5, 0.5 - 0.91856, 0.5 + 0.91856), abs=1e-4)
    # unpaired (sampled play): var(a) = .25, var(b) = .25 (n - 1 denominators), se = sqrt(.25/4 + .25/4)
    a.paired = False
    d, lo, hi = delta_interval(a, b)
    assert (d, hi - d) == pytest.approx((0.5, 1.96 * math.sqrt(0.125)), abs=1e-9)


def test_cells_deltas_gains_and_transferability_index_of_a_tiny_case():
    def cols(kuhn, text):
        return [Column("kuhn_poker", "valid", kuhn), Column("strcomp", "acc_d1", text)]

    base = Row("r", "base", [], cols([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]))
    base.base = base
    sft = Row("r", "sft", ["kuhn_poker"], cols([1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]), base=base)
    rl = Row("r", "rl", ["kuhn_poker"], cols([1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]), base=base)
    for r in (base, sft, rl):
        r.sft = sft if r is not base else None
        fill_cells(r)
    assert all(math.isnan(c["d_base"]) and math.isnan(c["d_sft"]) for c in base.cells)
    k, s = rl.cells
    assert (k["score"], k["d_base"], k["d_sft"]) == (1.0, 1.0, 0.5)
    assert (s["score"], s["d_base"], s["d_sft"]) == (0.25, 0.25, 0.25)
    # in-domain (kuhn) gain: (1 - 0)/(1 - 0) = 1; strcomp gain .25 -> index .25; no index in-domain
    assert s["transfer_index"] == pytest.approx(0.25) and math.isnan(k["transfer_index"])
    assert math.isnan(sft.cells[1]["transfer_index"]) is False and sft.cells[1]["transfer_index"] == 0.0
    assert normalized_gain(0.75, 0.5) == 0.5 and math.isnan(normalized_gain(1.0, 1.0))


# ------------------------------------------------------------------ over seeds, by hand
def _seeded_rows(cond, seed, rl_kuhn):
    base = Row(f"{cond}-s{seed}-x", "base", [], [Column("kuhn_poker", "valid", [0.0] * 4)], condition=cond, seed=seed)
    base.base = base
    rl = Row(f"{cond}-s{seed}-x", "rl", ["kuhn_poker"], [Column("kuhn_poker", "valid", rl_kuhn)], base=base,
             condition=cond, seed=seed)
    for r in (base, rl):
        fill_cells(r)
    return [base, rl]


def test_seed_rows_average_per_seed_cells_with_a_t_interval_over_seeds():
    rows = (_seeded_rows("c", 0, [1.0, 1.0, 0.0, 0.0]) + _seeded_rows("c", 1, [1.0, 1.0, 1.0, 0.0])
            + _seeded_rows("c", 2, [1.0] * 4) + _seeded_rows("alone", 0, [1.0] * 4))
    agg = seed_rows(rows)
    assert [r.name for r in agg] == ["c (seeds 0,1,2):base [-]", "c (seeds 0,1,2):rl [kuhn_poker]"]  # 1 seed: no row
    c = agg[1].cells[0]
    # per-seed scores .5, .75, 1: mean .75, sd .25, half-width t(2) 4.303 * .25 / sqrt(3) = .6211
    assert c["n"] == 3 and c["score"] == pytest.approx(0.75) and c["d_base"] == pytest.approx(0.75)
    assert c["lo"] == pytest.approx(0.75 - 0.62108, abs=1e-4) and c["hi"] == 1.0  # a score is clipped to [0, 1]
    assert c["d_base_hi"] == pytest.approx(0.75 + 0.62108, abs=1e-4)  # a delta is not
    assert math.isnan(c["d_sft"])  # no SFT row in these runs


def test_transfer_merge_joins_separate_matrices_into_one_seed_table(tmp_path, capsys):
    for seed, items in ((0, [1.0, 1.0, 0.0, 0.0]), (1, [1.0, 1.0, 1.0, 0.0]), (2, [1.0] * 4)):
        write_outputs(_seeded_rows("c", seed, items), tmp_path / f"m{seed}", "smoke")
    assert not (tmp_path / "m0" / "transfer-seeds.json").exists()  # one seed: no seed table
    args = ["transfer", "--merge", str(tmp_path / "m0"), "--merge", str(tmp_path / "m1"), "--merge", str(tmp_path / "m2"),
            "--out", str(tmp_path / "all")]
    assert main(args) == 0
    rows = json.loads((tmp_path / "all" / "transfer.json").read_text())
    assert len(rows) == 6 and {r["seed"] for r in rows} == {0, 1, 2}
    seeds = json.loads((tmp_path / "all" / "transfer-seeds.json").read_text())
    assert seeds[1]["row"] == "c (seeds 0,1,2):rl [kuhn_poker]" and seeds[1]["cells"][0]["score"] == pytest.approx(0.75)
    assert (tmp_path / "all" / "transfer-seeds.png").stat().st_size > 1000
    assert "Transfer matrix over seeds" in capsys.readouterr().out
    assert main(["transfer", "--merge", str(tmp_path / "nothing")]) == 2
    _one_error_line(capsys, "no transfer.json there")
    assert main(["transfer"]) == 2
    _one_error_line(capsys, "give RUN_DIRs")


# ------------------------------------------------------------------ a toy run with two checkpoints
def _toy_run(root, name, seed=0, hidden=128):
    """A run directory as `compose-rl recipe` leaves it: the resolved recipe and stages/{sft,rl}."""
    from compose_rl.models import TinySpec, load_policy
    from compose_rl.recipe import dump_recipe, recipe_from_dict

    r = recipe_from_dict({"name": name, "seed": seed, "stages": ["sft", "rl"],
                          "model": {"tiny": {"hidden_size": hidden, "num_heads": hidden // 64}},
                          "games": {"train": [{"name": "kuhn_poker"}]},
                          "rollout": {"max_new_tokens": 8}})
    path = root / name
    path.mkdir(parents=True)
    (path / "recipe.resolved.yaml").write_text(dump_recipe(r))
    torch.manual_seed(seed)
    policy = load_policy("tiny", seed=seed, tiny=TinySpec(**r.model.tiny.model_dump()))
    g = torch.Generator().manual_seed(1)
    for label in ("sft", "rl"):  # two different checkpoints: the weights nudged each time
        with torch.no_grad():
            for p in policy.model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        (path / "stages" / label).mkdir(parents=True)
        torch.save({"model": policy.model.state_dict()}, path / "stages" / label / "state.pt")
    return path


def test_matrix_of_a_two_checkpoint_toy_run(tmp_path, capsys):
    run = _toy_run(tmp_path, "toy")
    assert main(["transfer", str(run), "--suite", "smoke", "--items", "3", "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "transfer.json").read_text())
    assert [d["row"] for d in data] == ["toy:base [-]", "toy:sft [kuhn_poker]", "toy:rl [kuhn_poker]"]
    names = [(c["group"], c["column"]) for c in data[0]["cells"]]
    # smoke suite: kuhn and tic-tac-toe (valid, vs random, vs the strongest bot), strcomp d1-d2, one
    # probe suite, the Kuhn in-game probes
    assert names == [("kuhn_poker", "valid"), ("kuhn_poker", "vs_random"), ("kuhn_poker", "vs_nash"),
                     ("tic_tac_toe", "valid"), ("tic_tac_toe", "vs_random"), ("tic_tac_toe", "vs_minimax"),
                     ("strcomp", "acc_d1"), ("strcomp", "acc_d2"), ("multiplication", "multiplication"),
                     ("ingame_probes", "mass_on_correct")]
    for row in data:
        for c in row["cells"]:
            assert c["n"] >= 1 and c["lo"] <= c["score"] <= c["hi"]
    # the rl row's delta vs SFT is the difference of the two rows' scores (means over the same items)
    for c_rl, c_sft in zip(data[2]["cells"], data[1]["cells"]):
        assert c_rl["d_sft"] == pytest.approx(c_rl["score"] - c_sft["score"], abs=1e-9)
    csv_lines = (tmp_path / "out" / "transfer.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3 * len(names)
    assert (tmp_path / "out" / "transfer.png").stat().st_size > 1000
    assert "| toy:rl [kuhn_poker] |" in (tmp_path / "out" / "transfer.md").read_text()


# ------------------------------------------------------------------ bad input
def _one_error_line(capsys, expected):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compose-rl: error: ") and expected in err[0], err


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    run = _toy_run(tmp_path, "a")
    assert main(["transfer", str(run), "--suite", "nope"]) == 2
    _one_error_line(capsys, "unknown suite 'nope'; known: full, games")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "recipe.resolved.yaml").write_text((run / "recipe.resolved.yaml").read_text())
    assert main(["transfer", str(empty)]) == 2
    _one_error_line(capsys, "no stage checkpoints")
    assert main(["transfer", str(tmp_path / "missing")]) == 2
    _one_error_line(capsys, "not a run directory")
    other = _toy_run(tmp_path, "b", hidden=64)
    assert main(["transfer", str(run), str(other), "--smoke"]) == 2
    _one_error_line(capsys, "mismatched models")
    assert not any(p.name.startswith("transfer") for p in tmp_path.iterdir())


# ------------------------------------------------------------------ a game and the string task in one RL
def test_recipe_mixing_a_game_and_the_string_task_in_rl_runs(tmp_path):
    import yaml

    recipe = tmp_path / "mix.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "mix", "output": str(tmp_path / "runs"), "stages": ["sft", "rl", "eval"],
        "task": {"functions": ["func_0", "func_1"], "test_depths": [1]},
        "games": {"train": [{"name": "kuhn_poker"}], "invalid": {"penalty": -3.0}},
        "rollout": {"max_new_tokens": 16}, "rl": {"advantage": "rae"}, "eval": {"opponents": ["random"]}}))
    assert main(["recipe", str(recipe), "--smoke"]) == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    rows = [json.loads(x) for x in open(run / "metrics.jsonl")]
    rl = [r for r in rows if r["stage"] == "rl" and "loss/policy" in r]
    assert [r["step"] for r in rl] == [0, 1]
    assert all(0 < r["rollout/share/strcomp"] < 1 and r["rollout/share/kuhn_poker"] > 0 for r in rl)
    ev = next(r for r in rows if r["stage"] == "eval-rl")
    assert "eval/strcomp/acc_d1" in ev and "eval/kuhn_poker/vs_random/win" in ev
    assert sorted(os.listdir(run / "stages")) == ["rl", "sft"]


def test_report_lists_held_out_games_valid_rate_and_play_per_stage():
    from compose_rl.report import held_out_table

    m = {"eval/liars_dice/held_out_valid": 0.95, "eval/liars_dice/vs_random/invalid_rate": 0.1,
         "eval/liars_dice/vs_random/win": 0.4, "eval/liars_dice/vs_random/mean_return": -0.2,
         "eval/liars_dice/vs_random/ci95": 0.15, "eval/kuhn_poker/vs_random/win": 0.5}
    lines = held_out_table({"eval-base": {"eval/liars_dice/held_out_valid": 0.0}, "eval-rl": m})
    body = [x for x in "\n".join(lines).splitlines() if x.startswith("| liars_dice")]
    assert len(body) == 2 and "kuhn_poker" not in "".join(lines)
    assert body[1].split(" | ")[1:6] == ["after RL", "0.950", "0.900", "0.400", "-0.200 ± 0.150"]
