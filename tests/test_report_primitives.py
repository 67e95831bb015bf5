"""report.md: primitives headline (score beside its baseline per eval stage) and plots over RL steps."""
import json

from compose_rl.report import write_report
from compose_rl.rundir import RunDir

P = "primitive/expected_value/"


def test_primitive_rows_and_plots(tmp_path):
    rows = [{"stage": "eval-base", "step": 0, P + "ingame/mean": 0.25, P + "ingame/mean/uniform": 0.5,
             P + "probe/ev_lottery/acc": 0.1, P + "probe/ev_lottery/floor": 0.53},
            {"stage": "rl", "step": 4, P + "ingame/mean": 0.4, P + "ingame/mean/uniform": 0.5},
            {"stage": "rl", "step": 9, P + "ingame/mean": 0.7, P + "ingame/mean/uniform": 0.5},
            {"stage": "eval-rl", "step": 0, P + "ingame/mean": 0.75, P + "probe/ev_lottery/acc": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "recipe.resolved.yaml").write_text("name: x\nmodel: {gradient_checkpointing: false}\n")
    (tmp_path / "eval").mkdir()
    (tmp_path / "samples").mkdir()
    text = write_report(RunDir(tmp_path)).read_text()
    assert "| expected_value/ingame/mean | 0.500 | 0.250 | 0.750 |" in text
    assert "| expected_value/probe/ev_lottery/acc | 0.530 | 0.100 | 0.600 |" in text
    assert "Gradient checkpointing (model.gradient_checkpointing, SFT and RL alike): off." in text
    assert (tmp_path / "rl_primitives_ingame.png").stat().st_size > 1000
    assert "rl_primitives_ingame.png" in text and "rl_primitives_probes.png" not in text  # no RL probe rows
