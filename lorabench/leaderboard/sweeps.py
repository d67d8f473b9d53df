"""Sweep pages: tasks that differ in one swept variable (e.g. `n_upstream`), plotted against it per K.

A task file's `sweep:` tags each of its tasks' records with `{sweep: <variable>, <variable>: <value>}`; the
tasks of one family (the name less its trailing `_<letters><number>`, e.g. `library_sign_digits_n30` ->
`library_sign_digits`) become one page with, per K, accuracy against the variable (one line per method row,
± std whiskers) and the table under it. Only full-profile task pages take part: a sweep page ranks nothing, but
a smoke number beside a full one would read as a result.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from pydantic import BaseModel

from lorabench.leaderboard.rows import Cell, Row, row_label
from lorabench.leaderboard.svg import accuracy_plot
from lorabench.specs import k_order

FAMILY = re.compile(r"_[A-Za-z]*\d+$")
AXIS_LABELS = {"n_upstream": "N (upstream modules composed)", "rank": "LoRA rank", "split_size": "classes per split"}


class SweepPoint(BaseModel):
    value: str  # the swept variable's value, as the axis shows it
    task: str
    file: str  # that task's page


class SweepPanel(BaseModel):
    k: str
    rows: list[Row]  # one per method row of the family; cells keyed by the swept value
    plot: dict[str, Any]


class SweepPage(BaseModel):
    family: str
    variable: str
    axis_label: str
    points: list[SweepPoint]
    panels: list[SweepPanel]
    file: str = ""  # set by pages.build_site, which names every page of the site


def _value_key(v: str) -> tuple[int, float | str]:
    try:
        return 0, float(v)
    except ValueError:
        return 1, v


def _sweep_tag(page) -> tuple[str, str] | None:
    tags = page.tags
    variable = tags.get("sweep")
    if not isinstance(variable, str) or variable not in tags:
        return None
    return variable, str(tags[variable])


def sweep_pages(pages: list) -> list[SweepPage]:
    """One page per (family, variable) with at least two swept values among the full-profile task pages."""
    groups: dict[tuple[str, str], list[tuple[str, Any]]] = defaultdict(list)
    for page in pages:
        tag = _sweep_tag(page) if page.profile == "full" else None
        if tag:
            groups[(FAMILY.sub("", page.name), tag[0])].append((tag[1], page))
    out = []
    for (family, variable), members in sorted(groups.items()):
        if len({v for v, _ in members}) < 2:
            continue
        members.sort(key=lambda m: _value_key(m[0]))
        values = [v for v, _ in members]
        ks = sorted({k for _, p in members for k in p.ks}, key=k_order)
        panels = []
        for k in ks:
            by_label: dict[str, Row] = {}
            for value, page in members:
                for r in page.rows:
                    if k not in r.cells or not r.cells[k].values:
                        continue
                    row = by_label.setdefault(row_label(r), Row(anchor=r.anchor, method=r.method, backbone=r.backbone,
                                                                variant=r.variant, color=r.color))
                    row.cells[value] = r.cells[k]
            rows = [r.model_copy(update={"cells": {v: r.cells.get(v, Cell(k=v)) for v in values}})
                    for r in by_label.values()]
            panels.append(SweepPanel(k=k, rows=rows, plot=accuracy_plot(rows, values)))
        out.append(SweepPage(family=family, variable=variable, axis_label=AXIS_LABELS.get(variable, variable),
                             points=[SweepPoint(value=v, task=p.name, file=p.file) for v, p in members],
                             panels=panels))
    return out
