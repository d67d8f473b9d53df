"""Records -> the paper's table: rows = method configurations, columns = K, cells = mean ± std over seeds.

Nothing here ranks or draws; it only decides which records a cell holds, so that two configurations of one
method, a seed run twice, or a stale or impossible record are shown as such instead of being averaged away.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from lorabench.leaderboard.formatting import pct
from lorabench.results import runs_by_seed
from lorabench.specs import ResultRecord, k_order

# Fields of a record's config that pick a configuration of a method (besides task/method/backbone,
# K and seed): the parts of the config hash that are not the grid position.
VARIANT_FIELDS = ("hparams", "upstream_dirs", "tune", "data_source")  # data_source: local pack vs hub copy
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac"]
# The range a record's value must lie in, per metric; anything else is left out and listed on the index.


class Cell(BaseModel):
    """One (row, K) cell: one value per seed, never averaged across configurations."""

    k: str
    values: dict[int, float] = {}
    expected_seeds: list[int] = []
    missing_seeds: list[int] = []
    mean: float | None = None
    std: float | None = None
    best: bool = False  # bold: its paired 95% CI against the column's runner-up is above zero
    tied: bool = False  # the seeds cannot separate it from the column's best mean (see marks.mark_columns)
    versus: str = ""  # its paired comparison with the column's best (or, for the best, its runner-up), in words
    notes: list[str] = []  # disagreements, in words
    commands: list[str] = []


class Heatmap(BaseModel):
    """A row's composition weights at one K, averaged over seeds; `svg` is drawn later (svg.draw_heatmaps)."""

    k: str
    n_seeds: int
    upstream: list[str]
    matrices: list[str]
    weights: list[list[float]]  # [matrices][upstream]
    routed: bool = False  # per-token routing (extras["routing"]): the weights are means over test tokens
    svg: dict[str, Any] = {}


class Row(BaseModel):
    """One configuration of one method on one backbone (a method run two ways gets two rows)."""

    anchor: str
    method: str
    backbone: str
    variant: str = ""  # how this configuration differs from the method's others ("" if it has none)
    conflict: str = ""  # why this row is flagged, in words
    color: str = ""
    cells: dict[str, Cell] = {}
    trainable_params: list[int] = []
    head_params: list[int] = []
    command: str = ""
    cell_commands: list[str] = []
    heatmaps: list[Heatmap] = []


class StaleRecord(BaseModel):
    method: str
    k: str
    seed: int
    value: float
    created_at: str
    why: str


def row_label(row: Row) -> str:
    return row.method + (f" ({row.variant})" if row.variant else "")


def split_stale(records: list[ResultRecord]) -> tuple[dict[tuple[str, str], list[ResultRecord]],
                                                      dict[tuple[str, str], list[tuple[ResultRecord, str]]]]:
    """Per (task, profile): the current records, and the stale ones with why. A task whose every record is
    stale still gets a key in the first, so it keeps a page that says so."""
    from lorabench.identity import staleness

    by_task: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    stale: dict[tuple[str, str], list[tuple[ResultRecord, str]]] = defaultdict(list)
    for r in records:
        why = staleness(r)
        (stale[(r.task, r.profile)].append((r, why)) if why else by_task[(r.task, r.profile)].append(r))
    for key in stale:
        by_task.setdefault(key, [])
    return by_task, stale


def stale_records(stale: list[tuple[ResultRecord, str]]) -> list[StaleRecord]:
    """The stale list of a task page, by method, K and seed."""
    return [StaleRecord(method=r.method, k=str(r.k), seed=r.seed, value=r.value, created_at=r.created_at, why=why)
            for r, why in sorted(stale, key=lambda rw: (rw[0].method, k_order(rw[0].k), rw[0].seed))]


def variant_of(rec: ResultRecord) -> dict[str, Any]:
    """The configuration fields in which runs of one method on one task may differ (each is its own row)."""
    return {f: rec.config.get(f) for f in VARIANT_FIELDS}


def variant_key(rec: ResultRecord) -> str:
    """`variant_of` as a JSON string: records with equal keys are one configuration (task tables and claims)."""
    return json.dumps(variant_of(rec), sort_keys=True, default=str)


def describe_variants(variants: list[dict[str, Any]]) -> list[str]:
    """For each configuration, the fields in which it differs from the others, e.g. 'lr=0.5'."""
    flat = [{**{f"hp.{k}": v for k, v in (var.get("hparams") or {}).items()},
             "upstream": var.get("upstream_dirs") or None, "tune": var.get("tune") or None,
             "data": ", ".join(var.get("data_source") or []) or None} for var in variants]
    keys = sorted({k for f in flat for k in f})
    differing = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    out = []
    for f in flat:
        parts = []
        for k in differing:
            v = f.get(k)
            if v is None:
                continue
            name = k.removeprefix("hp.")
            if k == "upstream":
                v = ", ".join(Path(p).name for p in v)
            parts.append(name if v is True else f"{name}={v}")
        out.append(", ".join(parts) or "defaults")
    return out


def _fill_cell(cell: Cell, recs: list[ResultRecord]) -> None:
    for seed, runs in runs_by_seed(recs).items():
        cell.values[seed] = runs[-1].value
        cell.commands.append(runs[-1].command)
        if len({r.value for r in runs}) > 1:
            scores = ", ".join(pct(r.value) for r in runs)
            cell.notes.append(f"seed {seed} was run {len(runs)}× with the same config and scored {scores}; "
                              f"the latest ({pct(runs[-1].value)}) is shown")
    cell.missing_seeds = [s for s in cell.expected_seeds if s not in cell.values]
    vals = np.array([v for v in cell.values.values() if math.isfinite(v)])
    if len(vals):  # the sample standard deviation (n - 1), as the paper reports mean ± std; 0 for one seed
        cell.mean, cell.std = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0


def _row_command(rec: ResultRecord, ks: list[str], seeds: list[int]) -> str:
    """The latest cell's command, widened to the row's K values and seeds (same config hash per cell)."""
    cmd = rec.command
    if len(re.findall(r"--k \S+", cmd)) != 1 or len(re.findall(r"--seeds \S+", cmd)) != 1:
        return cmd
    cmd = re.sub(r"--k \S+", lambda _: "--k " + ",".join(ks), cmd)
    return re.sub(r"--seeds \S+", lambda _: "--seeds " + ",".join(map(str, seeds)), cmd)


def build_rows(records: list[ResultRecord], ks: list[str], seeds: dict[str, list[int]]) -> tuple[list[Row], list[str]]:
    """Rows of one task's table, plus page-level flags (disagreements) in words. `seeds`: the expected seeds
    of each K (a task's few-shot and many-shot seed lists differ)."""
    flags: list[str] = []
    by_method: dict[tuple[str, str], dict[str, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
    variants: dict[str, dict[str, Any]] = {}
    for r in records:
        key = variant_key(r)
        variants[key] = variant_of(r)
        by_method[(r.method, r.backbone)][key].append(r)
    rows: list[Row] = []
    for (method, backbone), groups in by_method.items():
        keys = sorted(groups)
        labels = describe_variants([variants[k] for k in keys]) if len(keys) > 1 else [""] * len(keys)
        method_rows = []
        for key, label in zip(keys, labels):
            recs = groups[key]
            row = Row(anchor="", method=method, backbone=backbone, variant=label)
            for k in ks:
                cell = Cell(k=k, expected_seeds=seeds[k])
                _fill_cell(cell, [r for r in recs if str(r.k) == k])
                row.cells[k] = cell
            row.trainable_params = sorted({r.trainable_params for r in recs})
            row.head_params = sorted({r.head_params for r in recs})
            latest = max(recs, key=lambda r: r.created_at)
            present_ks = [k for k in ks if row.cells[k].values]
            row.command = _row_command(latest, present_ks, sorted({r.seed for r in recs}))
            row.cell_commands = [c for k in ks for c in row.cells[k].commands]
            row.heatmaps = _heatmaps(recs)
            method_rows.append(row)
        if len(method_rows) > 1:
            _flag_clashes(method_rows, ks)
            flags.append(f"{method} on {backbone} was run with {len(method_rows)} different configurations "
                         f"({'; '.join(r.variant for r in method_rows)}); each is its own row, never averaged.")
        rows += method_rows
    rows.sort(key=lambda r: (min(r.trainable_params), r.method, r.backbone, r.variant))
    for i, row in enumerate(rows):
        row.anchor = f"row-{i}"
        row.color = PALETTE[i % len(PALETTE)]
    for r in rows:
        for c in r.cells.values():
            flags += [f"{r.method} K={c.k}: {n}" for n in c.notes if "same config" in n]
    return rows, flags


def _flag_clashes(rows: list[Row], ks: list[str]) -> None:
    """Mark cells where the same (K, seed) exists under another configuration of the same method."""
    for row in rows:
        row.conflict = (f"{row.method} has {len(rows)} configurations on this task; this row is '{row.variant}'. "
                        "Rows are never averaged together.")
        for k in ks:
            for other in rows:
                if other is row:
                    continue
                shared = sorted(set(row.cells[k].values) & set(other.cells[k].values))
                if shared:
                    row.cells[k].notes.append(f"seed(s) {', '.join(map(str, shared))} also run with a different "
                                              f"config ({other.variant})")


# --- composition weights -----------------------------------------------------------------------


def composition_weights(record: ResultRecord) -> tuple[list[str], list[str], np.ndarray] | None:
    """The composition weights a record holds: (upstream names, matrix names, weights), `weights[i, n]` the
    weight of module `upstream[n]` in matrix `matrices[i]` (shape [len(matrices), len(upstream)]).

    From the typed `record.composition` (schema 3, `lorabench.specs.Composition`), else from a schema-2
    record's `extras["upstream"]` and `extras["learned_weights"]` ({matrix name: one weight per module}, in
    model order). None if the record holds no weights; all NaN if old-style values do not read as numbers
    of that shape (the record still counts as its seed's latest, and the heatmap leaves that K out)."""
    if record.composition is not None:
        c = record.composition
        return list(c.upstream), list(c.matrices), np.array(c.weights, dtype=float).reshape(len(c.matrices),
                                                                                          len(c.upstream))
    learned, upstream = record.extras.get("learned_weights"), record.extras.get("upstream")
    if not isinstance(learned, dict) or not upstream:
        return None
    names, matrices = [str(u) for u in upstream], [str(m) for m in learned]
    try:
        weights = np.array([learned[m] for m in learned], dtype=float)
    except (ValueError, TypeError):
        weights = None
    if weights is None or weights.shape != (len(matrices), len(names)):
        weights = np.full((len(matrices), len(names)), np.nan)
    return names, matrices, weights


def _heatmaps(recs: list[ResultRecord]) -> list[Heatmap]:
    """One heatmap per K (largest first): the latest weights of each seed, averaged over the seeds that
    share the first one's modules and matrices; a K where any of them does not read is left out."""
    by_k: dict[str, dict[int, tuple[list[str], list[str], np.ndarray]]] = defaultdict(dict)
    for r in sorted(recs, key=lambda r: r.created_at):
        read = composition_weights(r)
        if read is not None:
            by_k[str(r.k)][r.seed] = read
    out = []
    for k in sorted(by_k, key=k_order, reverse=True):
        runs = list(by_k[k].values())
        upstream, matrices, _ = runs[0]
        same = [w for u, m, w in runs if u == upstream and m == matrices]
        w = np.array(same).mean(0)
        if not matrices or not np.isfinite(w).all():
            continue
        out.append(Heatmap(k=k, n_seeds=len(same), upstream=upstream, matrices=matrices, weights=w.tolist(),
                           routed=any("routing" in r.extras for r in recs if str(r.k) == k)))
    return out
