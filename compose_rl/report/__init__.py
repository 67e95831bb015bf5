"""report.md and PNG plots, rebuilt from a run directory's metrics.jsonl and eval/*.json.

    write.py       write_report: the sections below in order, then the details and the plots
    strcomp.py     the string task's section        games.py    the game domain's (CFR+ references)
    primitives.py  the primitives' section          plots.py    curves, accuracy by depth, primitives
    tables.py      markdown tables, stage names     reference.py, seeds.py, transfer_plot.py
The policy kind's section comes from compose_rl/kinds.py (experimental kinds register theirs).
"""
from compose_rl.report.games import (GAME_COLUMNS, games_headline, held_out_table, infostate_table,
                                     reference_policies)
from compose_rl.report.plots import CURVES, PRIMITIVE_PLOTS, plot_curves, plot_depth, plot_primitives
from compose_rl.report.primitives import primitives_headline
from compose_rl.report.strcomp import strcomp_headline
from compose_rl.report.tables import _f, _md_table, md_table, stage_name
from compose_rl.report.write import write_report

__all__ = ["CURVES", "GAME_COLUMNS", "PRIMITIVE_PLOTS", "_f", "_md_table", "games_headline", "held_out_table",
           "infostate_table", "md_table", "plot_curves", "plot_depth", "plot_primitives", "primitives_headline",
           "reference_policies", "stage_name", "strcomp_headline", "write_report"]
