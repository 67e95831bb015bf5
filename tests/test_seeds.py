"""compose-rl seeds: per-stage numbers over seeds, 95% t-interval, paired RL - SFT, checked by hand."""
import json

import pytest

from compose_rl.cli import main
from compose_rl.report.seeds import seed_table, summarize_run

K = "eval/kuhn_poker/"


def _run(tmp_path, seed, label, sft, rl_steps, final, avg):
    d = tmp_path / f"spiral-kuhn-s{seed}"
    d.mkdir()
    (d / "recipe.resolved.yaml").write_text(f"name: spiral-kuhn\nseed: {seed}\n")
    rows = [{"stage": "label-policy", "step": 0, K + "exploitability": label},
            {"stage": "eval-base", "step": 0, K + "exploitability": 0.333},
            {"stage": "eval-sft", "step": 0, K + "exploitability": sft, K + "history_tv": 0.0}]
    rows += [{"stage": "rl", "step": i, K + "exploitability": e} for i, e in enumerate(rl_steps)]
    rows += [{"stage": "eval-rl", "step": 0, K + "exploitability": final, K + "exploitability_avg": avg,
              K + "history_tv": 0.5, "primitive/expected_value/ingame/mean": 0.25 + seed / 2}]
    rows[2].update({"primitive/expected_value/ingame/mean": 0.5, "primitive/expected_value/ingame/mean/uniform": 0.5})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "rl", "st')
    return d


def test_summary_and_table_by_hand(tmp_path, capsys):
    a = _run(tmp_path, 0, 0.40, 0.50, [0.45, 0.20, 0.30], 0.30, 0.25)
    b = _run(tmp_path, 1, 0.60, 0.70, [0.65, 0.55, 0.10], 0.10, 0.15)
    sa = summarize_run(a)
    assert sa["kuhn_poker exploitability: best during RL"] == 0.20 and sa["best step"] == 1
    assert sa["kuhn_poker exploitability: after RL − after SFT (paired)"] == pytest.approx(-0.20)
    assert sa["kuhn_poker exploitability: label policy"] == 0.40
    table = seed_table([sa, summarize_run(b)])
    # paired differences -0.2 and -0.6: mean -0.4, sd 0.2828, t(1) = 12.706 -> half-width 12.706 * 0.2 = 2.541
    assert "| kuhn_poker exploitability: after RL − after SFT (paired) | 2 | -0.400 ± 2.541 | -0.200 | -0.600 |" in table
    assert "| best step | | | 1 | 2 |" in table
    # 0.25, 0.75: sd 0.3536, t(1) 12.706 -> 12.706 * 0.25 = 3.1765
    assert "| in-game probes expected_value: after RL | 2 | +0.500 ± 3.176 | +0.250 | +0.750 |" in table
    assert main(["seeds", str(a), str(b)]) == 0
    assert "-0.400 ± 2.541" in capsys.readouterr().out


def test_not_a_run_dir_is_one_line(tmp_path, capsys):
    assert main(["seeds", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run directory" in err[0]


def test_ablations_run_separately_merge_into_one_table(tmp_path, capsys):
    """`ablate --merge A --merge B`: the per-seed results.json of two ablation roots give one table
    whose depth-1 cell is the mean and t-interval over both seeds (0.4, 0.6 -> 0.500 ± 1.271)."""
    def root(seed, acc):
        d = tmp_path / f"abl-s{seed}"
        d.mkdir()
        end = {f"eval/strcomp/acc_d{k}": (acc if k == 1 else 0.0) for k in (1, 2)}
        end.update({f"eval/strcomp/floor_d{k}": 0.1 for k in (1, 2)})
        start = {"eval/strcomp/acc_d1": 0.9, "eval/strcomp/pass@4_d2": 0.2}
        v = {"end": end, "start": start, "groups_with_signal": 0.5, "grad_steps": 3, "run": str(d / "x"),
             "start_fingerprint": "f" * 64}
        (d / "results.json").write_text(json.dumps({
            "stage1": {str(seed): {"run": str(d / "s1"), "fingerprint": "f" * 64, "gate_passed": True}},
            "variants": {"sft_rl": {str(seed): v}}}))
        return d
    a, b = root(0, 0.4), root(1, 0.6)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: abl\nstages: [sft, eval, rl, eval]\ntask: {kind: strcomp, test_depths: [1, 2]}\n"
                      f"output: {tmp_path / 'out'}\nablate: {{variants: [sft_rl], seeds: [0]}}\n")
    assert main(["ablate", str(recipe), "--merge", str(a), "--merge", str(b)]) == 0
    report = next((tmp_path / "out").glob("abl-ablate-merged-*")) / "report.md"
    text = report.read_text()
    assert "| sft_rl | 0.500 ± 1.271 |" in text and "Seeds: [0, 1]" in text
    assert main(["ablate", str(recipe), "--merge", str(a), "--merge", str(a)]) == 2
    assert "seed 0 appears in two ablations" in capsys.readouterr().err
