"""The static leaderboard: every result JSON under a folder -> an index page, one page per task, claims.html.

One job a module, data flowing one way: `rows` (records -> table rows and cells) -> `marks` (which cells
the seeds back as best) -> `svg` (plot and heatmap geometry) -> `pages` (page models, templates,
`build_site`); `claims` checks the paper's claims against the same records, `formatting` prints numbers.

This code lives in the package `lorabench.leaderboard` (the folder that also holds the templates):
a sibling module `lorabench/leaderboard.py` would shadow it in an editable install.
"""

from lorabench.leaderboard.formatting import pct, pts
from lorabench.leaderboard.marks import ColumnMark, mark_columns
from lorabench.leaderboard.pages import (Provenance, SiteReport, TaskPage, UpstreamCheck, build_site, environment,
                                         provenance, task_page, upstream_checks)
from lorabench.leaderboard.rows import (Cell, Heatmap, Row, StaleRecord, build_rows, composition_weights,
                                        describe_variants, row_label, variant_of)
from lorabench.leaderboard.svg import accuracy_plot, diff_plot, heat_colour, heatmap_svg

__all__ = [
    "Cell", "ColumnMark", "Heatmap", "Provenance", "Row", "SiteReport", "StaleRecord", "TaskPage", "UpstreamCheck",
    "accuracy_plot", "build_rows", "build_site", "composition_weights", "describe_variants", "diff_plot",
    "environment", "heat_colour", "heatmap_svg", "mark_columns", "pct", "provenance", "pts",
    "row_label", "task_page", "upstream_checks", "variant_of",
]
