"""The static leaderboard: every result JSON under a folder -> an index page + one page per task.

Plain functions group records into the paper's table (rows = method configurations, columns = K,
cells = mean ± std over seeds), decide which cells the seeds back as best (paired by seed, see
`mark_columns`), compute SVG geometry, and render the jinja2 templates beside this
file with autoescape on, since every string in a result file is untrusted. Pages inline their CSS
and SVG, so the site opens from disk with no server and no network.

This code lives in the package `lorabench.leaderboard` (the folder that also holds the templates):
a sibling module `lorabench/leaderboard.py` would shadow it in an editable install.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import numpy as np
from pydantic import BaseModel

import lorabench
from lorabench.errors import ConfigError, LorabenchError
from lorabench.hashing import digest_json
from lorabench.results import load_results
from lorabench.specs import ResultRecord, TaskSpec, k_order
from lorabench.stats import PairedComparison, compare
from lorabench.validation import check_writable

TEMPLATES = Path(__file__).parent / "templates"
# Fields of a record's config that pick a configuration of a method (besides task/method/backbone,
# K and seed): the parts of the config hash that are not the grid position.
VARIANT_FIELDS = ("hparams", "upstream_dirs", "tune", "data_source")  # data_source: local pack vs hub copy
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac"]
# The range a record's value must lie in, per metric; anything else is left out and listed on the index.
METRIC_RANGES = {"accuracy": (0.0, 1.0)}
# Task names kept as page names; any other name gets a shortened slug plus a digest (see _slug).
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
# Sequential blues for the heatmap, light (low weight) to dark (high weight).
HEAT_STOPS = [(0.0, (0xf1, 0xf6, 0xfc)), (0.35, (0x9e, 0xc5, 0xe6)), (0.7, (0x3d, 0x85, 0xc6)),
              (1.0, (0x0b, 0x3c, 0x7d))]


class Cell(BaseModel):
    """One (row, K) cell: one value per seed, never averaged across configurations."""

    k: str
    values: dict[int, float] = {}
    expected_seeds: list[int] = []
    missing_seeds: list[int] = []
    mean: float | None = None
    std: float | None = None
    best: bool = False  # bold: its paired 95% CI against the column's runner-up is above zero
    tied: bool = False  # the seeds cannot separate it from the column's best mean (see mark_columns)
    versus: str = ""  # its paired comparison with the column's best (or, for the best, its runner-up), in words
    notes: list[str] = []  # disagreements, in words
    commands: list[str] = []


class Heatmap(BaseModel):
    k: str
    n_seeds: int
    svg: dict[str, Any]


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


class ColumnMark(BaseModel):
    """What one K column of a full-profile table decides: a best method, a tie, one method alone, or nothing."""

    k: str
    status: str = "none"  # "best" | "tied" | "alone" | "none" | "unranked" (smoke and other small profiles)
    rows: list[Row] = []  # the bold row ("best"), the tied rows, best mean first ("tied"), the only row ("alone")
    top_mean: float | None = None
    detail: str = ""  # why, in words: the paired comparison of the best mean with the runner-up


class Provenance(BaseModel):
    n_records: int
    lorabench_versions: list[str]
    git_commits: list[str]
    backbones: list[str]
    devices: list[str]
    torch_versions: list[str]
    first: str
    last: str


class UpstreamCheck(BaseModel):
    """One upstream module's own check: its accuracy on held-out data of its task beside a linear probe's."""

    name: str
    n_train: int | None = None
    n_heldout: int | None = None
    heldout_accuracy: float | None = None
    probe_accuracy: float | None = None
    steps: int | None = None
    beats_probe: bool | None = None


class StaleRecord(BaseModel):
    method: str
    k: str
    seed: int
    value: float
    created_at: str
    why: str


class TaskPage(BaseModel):
    name: str
    profile: str = "full"
    file: str
    setting: str
    suite: str
    backbones: list[str]
    metric: str
    registered: bool
    spec: dict[str, Any] | None = None
    ks: list[str]
    seeds: list[int]
    rows: list[Row]
    best: dict[str, list[Row]]  # per K: the bold row (at most one), only where the seeds back it
    marks: dict[str, ColumnMark] = {}
    plot: dict[str, Any]
    diff_plot: dict[str, Any] = {}  # paired differences of the main pairs against K (see diff_plot)
    unrun_ks: list[str] = []  # K values of the task's grid with no record on this page (no column, no plot slot)
    flags: list[str]
    provenance: Provenance
    upstream_checks: list[UpstreamCheck] = []
    stale: list[StaleRecord] = []


class SiteReport(BaseModel):
    out_dir: Path
    index: Path
    pages: list[Path]
    n_records: int
    bad_files: list[Path]
    bad_records: list[str] = []  # "<cell id> (config <hash>): why", for records left out for their values
    flags: int
    claims: Path | None = None  # claims.html
    claim_totals: dict[str, int] = {}  # verdict -> task x K rows, over every claim


# --- grouping ----------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    """Accuracy as the paper prints it: a percentage with two decimals."""
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def record_problem(rec: ResultRecord) -> str | None:
    """Why a record's numbers cannot be shown (None if they can). Pydantic reads NaN and Infinity from
    JSON as floats, and one such value (or a -3.5 accuracy) would poison every mean it enters."""
    if rec.metric not in METRIC_RANGES:
        return f"metric {rec.metric!r} is not one the leaderboard can show ({', '.join(METRIC_RANGES)})"
    lo, hi = METRIC_RANGES[rec.metric]
    if not (math.isfinite(rec.value) and lo <= rec.value <= hi):
        return f"value {rec.value} is not a finite {rec.metric} in [{lo:g}, {hi:g}]"
    if rec.n_test < 1:
        return f"n_test {rec.n_test} is not a positive number of test examples"
    for field in ("n_support", "trainable_params", "head_params"):
        if getattr(rec, field) < 0:
            return f"{field} {getattr(rec, field)} is negative"
    return None


def variant_of(rec: ResultRecord) -> dict[str, Any]:
    return {f: rec.config.get(f) for f in VARIANT_FIELDS}


def _describe_variants(variants: list[dict[str, Any]]) -> list[str]:
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
    by_seed: dict[int, list[ResultRecord]] = defaultdict(list)
    for r in recs:
        by_seed[r.seed].append(r)
    for seed, runs in sorted(by_seed.items()):
        runs.sort(key=lambda r: r.created_at)
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


def build_rows(records: list[ResultRecord], ks: list[str], seeds: list[int]) -> tuple[list[Row], list[str]]:
    """Rows of one task's table, plus page-level flags (disagreements) in words."""
    flags: list[str] = []
    by_method: dict[tuple[str, str], dict[str, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
    variants: dict[str, dict[str, Any]] = {}
    for r in records:
        key = json.dumps(variant_of(r), sort_keys=True, default=str)
        variants[key] = variant_of(r)
        by_method[(r.method, r.backbone)][key].append(r)
    rows: list[Row] = []
    for (method, backbone), groups in by_method.items():
        keys = sorted(groups)
        labels = _describe_variants([variants[k] for k in keys]) if len(keys) > 1 else [""] * len(keys)
        method_rows = []
        for key, label in zip(keys, labels):
            recs = groups[key]
            row = Row(anchor="", method=method, backbone=backbone, variant=label)
            for k in ks:
                cell = Cell(k=k, expected_seeds=seeds)
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


def _pts(x: float | None) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.2f}"


def _paired(a: Row, b: Row, k: str) -> PairedComparison | None:
    """a - b at K, paired by seed; None across backbones (a seed fixes the support set and head init only
    on one backbone, so scores from two backbones are not pairs)."""
    return compare(a.cells[k].values, b.cells[k].values) if a.backbone == b.backbone else None


def _decided(c: PairedComparison | None) -> bool:
    """Whether the seeds back `a` over `b`: n >= 2 matched seeds and the paired 95% t interval above zero."""
    return c is not None and c.n >= 2 and c.ci_low is not None and c.ci_low > 0


def _describe(c: PairedComparison | None, a: Row, b: Row) -> str:
    label_a, label_b = row_label(a), row_label(b)
    if c is None:
        return f"{label_a} ({a.backbone}) and {label_b} ({b.backbone}) ran on different backbones: not paired"
    dropped = (f"; seed(s) {', '.join(map(str, c.dropped))} left out, run by one side only" if c.dropped else "")
    if c.n < 2:
        return (f"{label_a} − {label_b}: {c.n} seed(s) run by both, too few for an interval (n ≥ 2 needed)"
                + dropped)
    return (f"{label_a} − {label_b} = {_pts(c.mean_diff)} pts, paired 95% CI [{_pts(c.ci_low)}, {_pts(c.ci_high)}] "
            f"over {c.n} seeds (wins/ties/losses {c.wins}/{c.ties}/{c.losses}){dropped}")


def mark_columns(rows: list[Row], ks: list[str]) -> dict[str, ColumnMark]:
    """Per K column: the best mean is bold only when its paired 95% CI against the runner-up (the second-best
    mean) lies above zero over matched seeds (n >= 2). Otherwise nothing is bold and the best, with every row
    whose paired CI against it holds zero or cannot be computed (n < 2, another backbone), is 'tied'.
    Means alone would crown whichever method a seed or two happened to favour."""
    marks = {}
    for k in ks:
        ranked = sorted((r for r in rows if r.cells[k].mean is not None), key=lambda r: -r.cells[k].mean)
        if not ranked:
            marks[k] = ColumnMark(k=k)
            continue
        top = ranked[0]
        mark = ColumnMark(k=k, top_mean=top.cells[k].mean)
        if len(ranked) == 1:
            mark.status, mark.rows = "alone", [top]
            mark.detail = f"K={k}: only {row_label(top)} was run; nothing to compare it with."
            marks[k] = mark
            continue
        runner = ranked[1]
        c = _paired(top, runner, k)
        top.cells[k].versus = "vs runner-up: " + _describe(c, top, runner)
        if _decided(c):
            top.cells[k].best = True
            mark.status, mark.rows = "best", [top]
            mark.detail = f"K={k}: {row_label(top)} is best. " + _describe(c, top, runner) + "."
        else:
            tied = [top]
            for r in ranked[1:]:
                cr = c if r is runner else _paired(top, r, k)
                r.cells[k].versus = "vs best mean: " + _describe(cr, top, r)
                if not _decided(cr):
                    tied.append(r)
            for r in tied:
                r.cells[k].tied = True
            mark.status, mark.rows = "tied", tied
            mark.detail = (f"K={k}: no method is ahead. " + _describe(c, top, runner) + f"; tied: "
                           + ", ".join(row_label(r) for r in tied) + ".")
        marks[k] = mark
    return marks


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


# --- SVG geometry ------------------------------------------------------------------------------


def _nice_step(span: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25):
        if span / step <= 6:
            return step
    return 0.25


def accuracy_plot(rows: list[Row], ks: list[str]) -> dict[str, Any]:
    """Accuracy against K (categorical axis, 'all' last), one line per row, ±std whiskers."""
    w, h, left, right, top, bottom = 680, 340, 58, 18, 18, 46
    pts = [(c.mean, c.std or 0.0) for r in rows for c in r.cells.values() if c.mean is not None]
    if not pts:
        return {"width": w, "height": h, "series": [], "xticks": [], "yticks": [], "empty": True}
    lo = max(0.0, min(m - s for m, s in pts))
    hi = min(1.0, max(m + s for m, s in pts))
    if hi - lo < 0.02:
        lo, hi = max(0.0, lo - 0.01), min(1.0, hi + 0.01)
    step = _nice_step(hi - lo)
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    hi = max(hi, lo + step)
    plot_w, plot_h = w - left - right, h - top - bottom

    def y(v: float) -> float:
        return round(top + plot_h * (1 - (v - lo) / (hi - lo)), 2)

    slot = plot_w / len(ks)
    xs = {k: left + slot * (i + 0.5) for i, k in enumerate(ks)}
    dodge = min(6.0, slot / (2 * max(1, len(rows))))
    series = []
    for i, r in enumerate(rows):
        off = (i - (len(rows) - 1) / 2) * dodge
        points = []
        for k in ks:
            c = r.cells[k]
            if c.mean is None:
                continue
            x = round(xs[k] + off, 2)
            points.append({"x": x, "y": y(c.mean), "y_lo": y(max(lo, c.mean - (c.std or 0))),
                           "y_hi": y(min(hi, c.mean + (c.std or 0))), "k": k, "mean": pct(c.mean),
                           "std": pct(c.std), "n": len(c.values)})
        series.append({"label": row_label(r), "color": r.color, "points": points,
                       "path": " ".join(f"{p['x']},{p['y']}" for p in points)})
    n_ticks = int(round((hi - lo) / step))
    yticks = [{"y": y(lo + j * step), "label": f"{100 * (lo + j * step):g}"} for j in range(n_ticks + 1)]
    xticks = [{"x": round(x, 2), "label": k} for k, x in xs.items()]
    return {"width": w, "height": h, "left": left, "right": w - right, "top": top, "bottom": h - bottom,
            "series": series, "xticks": xticks, "yticks": yticks, "empty": False}


# The paired differences A - B a task page plots against K, where both methods have rows on the page.
MAIN_PAIRS = [("uniform_composition", "classifier_tuning"), ("learned_composition", "lora"),
              ("learned_composition", "uniform_composition"), ("uniform_composition", "full_finetune")]
PAIR_COLOURS = ["#3d5a80", "#c2185b", "#e07a1f", "#2a9d8f"]  # one per main pair, the same on every page
DIFF_STEPS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5)


def _pts_tick(v: float) -> str:
    v = round(100 * v, 6)
    return "0" if abs(v) < 1e-9 else f"{v:+g}"


def _diff_title(label: str, k: str, c: PairedComparison, a: Row, b: Row) -> str:
    dropped = f"; seed(s) {', '.join(map(str, c.dropped))} left out, run by one side only" if c.dropped else ""
    if c.ci is None:
        return f"{label}, K={k}: {_pts(c.mean_diff)} pts on {c.n} shared seed (too few for an interval){dropped}"
    says = {"A better": f"{row_label(a)} ahead", "B better": f"{row_label(b)} ahead", "tied": "tied on every seed"}
    return (f"{label}, K={k}: {_pts(c.mean_diff)} pts, paired 95% CI [{_pts(c.ci_low)}, {_pts(c.ci_high)}] over "
            f"{c.n} seeds (wins/ties/losses {c.wins}/{c.ties}/{c.losses}): "
            f"{says.get(c.verdict, 'the interval holds zero')}{dropped}")


def diff_plot(rows: list[Row], ks: list[str]) -> dict[str, Any]:
    """Paired difference A - B (percentage points) against K for each main pair (MAIN_PAIRS) with rows of both
    methods on one backbone: the mean over matched seeds with its paired 95% t interval (`stats.compare`), or a
    hollow marker and no bar where fewer than 2 seeds match. Same frame as `accuracy_plot`; x only at the K
    values where some pair has a matched seed."""
    w, h, left, right, top, bottom = 680, 340, 58, 18, 18, 46
    multi_backbone = len({r.backbone for r in rows}) > 1
    pairs = []
    for i, (ma, mb) in enumerate(MAIN_PAIRS):
        for a in (r for r in rows if r.method == ma):
            for b in (r for r in rows if r.method == mb and r.backbone == a.backbone):
                comps = {k: c for k in ks if (c := compare(a.cells[k].values, b.cells[k].values)).n}
                if comps:
                    label = f"{row_label(a)} − {row_label(b)}" + (f" ({a.backbone})" if multi_backbone else "")
                    pairs.append((i, a, b, label, comps))
    empty = {"width": w, "height": h, "series": [], "xticks": [], "yticks": [], "empty": True,
             "pairs": [f"{a} − {b}" for a, b in MAIN_PAIRS]}
    if not pairs:
        return empty
    used = [k for k in ks if any(k in p[4] for p in pairs)]
    vals = [0.0] + [v for p in pairs for c in p[4].values()
                    for v in (c.mean_diff, *(c.ci or ()))]
    lo, hi = max(-1.0, min(vals)), min(1.0, max(vals))  # a difference of accuracies lies in [-1, 1]
    step = next((s for s in DIFF_STEPS if max(hi - lo, 0.02) / s <= 6), DIFF_STEPS[-1])
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    hi = max(hi, lo + step)
    plot_w, plot_h = w - left - right, h - top - bottom

    def y(v: float) -> float:
        return round(top + plot_h * (1 - (min(hi, max(lo, v)) - lo) / (hi - lo)), 2)

    slot = plot_w / len(used)
    xs = {k: left + slot * (i + 0.5) for i, k in enumerate(used)}
    dodge = min(8.0, slot / (2 * len(pairs)))
    series = []
    for j, (i, a, b, label, comps) in enumerate(pairs):
        off = (j - (len(pairs) - 1) / 2) * dodge
        points = []
        for k in used:
            c = comps.get(k)
            if c is None:
                continue
            p = {"x": round(xs[k] + off, 2), "y": y(c.mean_diff), "k": k, "n": c.n, "mean": c.mean_diff,
                 "ci_low": c.ci_low, "ci_high": c.ci_high, "bar": c.ci is not None,
                 "title": _diff_title(label, k, c, a, b)}
            if c.ci is not None:
                p |= {"y_lo": y(c.ci_low), "y_hi": y(c.ci_high), "cap_lo": c.ci_low >= lo, "cap_hi": c.ci_high <= hi}
            points.append(p)
        series.append({"label": label, "pair": f"{a.method} − {b.method}", "color": PAIR_COLOURS[i],
                       "points": points, "path": " ".join(f"{p['x']},{p['y']}" for p in points)})
    n_ticks = int(round((hi - lo) / step))
    yticks = [{"y": y(lo + j * step), "label": _pts_tick(lo + j * step)} for j in range(n_ticks + 1)]
    xticks = [{"x": round(x, 2), "label": k} for k, x in xs.items()]
    return {**empty, "left": left, "right": w - right, "top": top, "bottom": h - bottom, "zero_y": y(0.0),
            "series": series, "xticks": xticks, "yticks": yticks, "empty": False}


def heat_colour(t: float) -> tuple[str, str]:
    """Fill for a value in [0, 1] on the blue scale, and a text colour that reads on it."""
    t = min(1.0, max(0.0, t))
    for (t0, c0), (t1, c1) in zip(HEAT_STOPS, HEAT_STOPS[1:]):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            rgb = [round(a + (b - a) * f) for a, b in zip(c0, c1)]
            break
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if lum < 140 else "#1a2433")


def heatmap_svg(matrices: list[str], upstream: list[str], weights: np.ndarray) -> dict[str, Any]:
    """Learned weights (rows = adapted matrices in model order, columns = upstream modules), like Figure 7."""
    label_w = 8 + 6.6 * max(len(m) for m in matrices)
    cw = min(130.0, max(52.0, 7.2 * max(len(u) for u in upstream) + 10))
    ch, top = 16, 30
    vmin, vmax = float(weights.min()), float(weights.max())
    span = (vmax - vmin) or 1.0
    cells = []
    for i, m in enumerate(matrices):
        for j, u in enumerate(upstream):
            v = float(weights[i, j])
            fill, ink = heat_colour((v - vmin) / span)
            cells.append({"x": round(label_w + j * cw, 2), "y": top + i * ch, "w": round(cw - 1, 2), "h": ch - 1,
                          "fill": fill, "ink": ink, "value": f"{v:.6f}", "text": f"{v:.2f}", "matrix": m,
                          "upstream": u})
    grid_w = label_w + cw * len(upstream)
    legend_x, legend_w = grid_w + 24, 14
    grid_h = ch * len(matrices)
    uniform = 1 / len(upstream)
    u_t = (uniform - vmin) / span
    return {
        "width": round(legend_x + legend_w + 60, 2), "height": top + grid_h + 8,
        "cells": cells, "label_w": label_w, "ch": ch, "top": top,
        "rows": [{"y": top + i * ch + ch / 2, "label": m} for i, m in enumerate(matrices)],
        "cols": [{"x": round(label_w + (j + 0.5) * cw, 2), "label": u} for j, u in enumerate(upstream)],
        "legend": {"x": round(legend_x, 2), "y": top, "w": legend_w, "h": grid_h,
                   "stops": [{"offset": f"{100 * t:g}%", "colour": heat_colour(t)[0]} for t, _ in HEAT_STOPS],
                   "max": f"{vmax:.3f}", "min": f"{vmin:.3f}",
                   "uniform_y": round(top + grid_h * (1 - u_t), 2) if 0 <= u_t <= 1 else None,
                   "uniform_label": 14 <= grid_h * (1 - u_t) <= grid_h - 14},
    }


def _heatmaps(recs: list[ResultRecord]) -> list[Heatmap]:
    """One heatmap per K (largest first), learned weights averaged over seeds."""
    by_k: dict[str, dict[int, ResultRecord]] = defaultdict(dict)
    for r in sorted(recs, key=lambda r: r.created_at):
        if isinstance(r.extras.get("learned_weights"), dict) and r.extras.get("upstream"):
            by_k[str(r.k)][r.seed] = r
    out = []
    for k in sorted(by_k, key=k_order, reverse=True):
        runs = list(by_k[k].values())
        upstream = [str(u) for u in runs[0].extras["upstream"]]
        matrices = [str(m) for m in runs[0].extras["learned_weights"]]
        same = [r for r in runs if r.extras["upstream"] == upstream and list(r.extras["learned_weights"]) == matrices]
        try:
            w = np.array([[r.extras["learned_weights"][m] for m in matrices] for r in same], dtype=float).mean(0)
        except (ValueError, TypeError):
            continue
        if w.shape != (len(matrices), len(upstream)) or not matrices or not np.isfinite(w).all():
            continue
        out.append(Heatmap(k=k, n_seeds=len(same), svg=heatmap_svg(matrices, upstream, w)))
    return out


# --- pages -------------------------------------------------------------------------------------


def row_label(row: Row) -> str:
    return row.method + (f" ({row.variant})" if row.variant else "")


def provenance(records: list[ResultRecord]) -> Provenance:
    dates = sorted(r.created_at for r in records)
    return Provenance(
        n_records=len(records),
        lorabench_versions=sorted({r.lorabench_version for r in records}),
        git_commits=sorted({r.git_commit or "unknown (not run from a git checkout)" for r in records}),
        backbones=sorted({r.backbone for r in records}),
        devices=sorted({r.device for r in records}),
        torch_versions=sorted({r.versions.get("torch", "?") for r in records}),
        first=dates[0] if dates else "", last=dates[-1] if dates else "",
    )


def _task_spec(name: str) -> TaskSpec | None:
    from lorabench.task_registry import get_task

    try:
        return get_task(name)
    except LorabenchError:
        return None


def _slug(name: str, taken: set[str]) -> str:
    """A page name any filesystem accepts: short plain names as they are (links to them stay stable),
    others cut to 60 safe characters plus a digest of the full name, so distinct names stay distinct.
    `taken` holds lower-cased slugs, since some filesystems ignore case."""
    if SAFE_NAME.fullmatch(name):
        base = name
    else:
        cut = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60].rstrip("-.")
        base = f"{cut or 'task'}-{digest_json(name, 10)}"
    slug, i = base, 2
    while slug.lower() in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug.lower())
    return slug


def upstream_checks(records: list[ResultRecord]) -> list[UpstreamCheck]:
    """The upstream modules' own scores, from the latest record that composed them."""
    with_quality = [r for r in records if r.config.get("upstream_quality")]
    if not with_quality:
        return []
    latest = max(with_quality, key=lambda r: r.created_at)
    out = []
    for q in latest.config["upstream_quality"]:
        check = UpstreamCheck(**{k: q.get(k) for k in UpstreamCheck.model_fields if k in q})
        h, p = check.heldout_accuracy, check.probe_accuracy
        if h is not None and p is not None and math.isfinite(h) and math.isfinite(p):
            check.beats_probe = h > p
        out.append(check)
    return out


def task_page(name: str, records: list[ResultRecord], file: str, profile: str = "full",
              stale: list[tuple[ResultRecord, str]] = ()) -> TaskPage:
    spec = _task_spec(name)
    # Only the K values something was run at: a grid K with no record gets no column and no plot slot.
    ks = sorted({str(r.k) for r in records}, key=k_order)
    unrun_ks = sorted({str(k) for k in spec.k_grid} - set(ks), key=k_order) if spec else []
    seeds = list(spec.seeds) if spec else sorted({r.seed for r in records})
    rows, flags = build_rows(records, ks, seeds)
    if profile == "full":
        marks = mark_columns(rows, ks)
    else:  # never ranked: a smoke number is a test of the pipeline, not a benchmark result
        marks = {k: ColumnMark(k=k, status="unranked") for k in ks}
        flags.insert(0, f"These are {profile}-profile records: a small version of the protocol for tests and CI. "
                        "They are not benchmark results and are never ranked or averaged with full-profile ones.")
    best = {k: [r for r in rows if r.cells[k].best] for k in ks}
    checks = upstream_checks(records)
    weak = [c.name for c in checks if c.beats_probe is False]
    if weak:
        flags.append(f"Upstream module(s) {', '.join(weak)} do not beat a linear probe on their own held-out data "
                     "(see the upstream table): they may have learned little their task needs.")
    stale_rows = [StaleRecord(method=r.method, k=str(r.k), seed=r.seed, value=r.value, created_at=r.created_at, why=why)
                  for r, why in sorted(stale, key=lambda rw: (rw[0].method, k_order(rw[0].k), rw[0].seed))]
    if stale_rows:
        flags.append(f"{len(stale_rows)} stale record(s) (their inputs changed since they were run) are left out of "
                     "the table and listed below; re-run those cells for current results.")
    incomplete = sum(1 for r in rows for c in r.cells.values() if c.values and c.missing_seeds)
    if incomplete:
        flags.append(f"{incomplete} cell(s) have fewer seeds than the task's {len(seeds)} ({', '.join(map(str, seeds))}).")
    latest = max(records, key=lambda r: r.created_at)
    return TaskPage(
        name=name, profile=profile, upstream_checks=checks, stale=stale_rows, file=file, setting=latest.setting, suite=latest.suite,
        backbones=sorted({r.backbone for r in records}), metric=latest.metric, registered=spec is not None,
        spec=spec.model_dump(mode="json") if spec else None, ks=ks, seeds=seeds, rows=rows, best=best, marks=marks,
        plot=accuracy_plot(rows, ks), diff_plot=diff_plot(rows, ks), unrun_ks=unrun_ks, flags=flags,
        provenance=provenance(records),
    )


def _stale_only_page(name: str, profile: str, stale: list[tuple[ResultRecord, str]], file: str) -> TaskPage:
    """A task whose every record is stale: an empty table, the stale list, and a flag saying so."""
    page = task_page(name, [r for r, _ in stale], file, profile, stale)
    page.rows, page.best = [], {k: [] for k in page.ks}
    page.marks = {k: ColumnMark(k=k, status="unranked" if profile != "full" else "none") for k in page.ks}
    page.plot, page.diff_plot = accuracy_plot([], page.ks), diff_plot([], page.ks)
    return page


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = pct
    env.filters["count"] = lambda n: f"{n:,}"
    # Escaped, with a line-break chance after each underscore: long snake_case method names wrap there.
    env.filters["wbr"] = lambda text: markupsafe.Markup("_<wbr>").join(str(text).split("_"))
    env.globals["row_label"] = row_label
    return env


def _check_targets(paths: list[Path], out_dir: Path) -> None:
    """Refuse to write through a link, into a FIFO (it would block) or over a folder left in `out_dir`."""
    for path in paths:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ConfigError(f"--out {out_dir}: {path} exists and is not a regular file; remove it or choose "
                              "another --out.")


def build_site(results_dir: str | Path, out_dir: str | Path, claims_files: list[str | Path] | tuple = ()) -> SiteReport:
    """Render every valid record under `results_dir` into `out_dir` (index.html + task-<name>.html + claims.html:
    the paper's claims, plus those of each of `claims_files`, checked against the current full-profile records)."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"--results-dir {results_dir}: no such folder (it should hold <task>/*.json result files "
                          "written by `lorabench run`).")
    check_writable(out_dir, "--out")
    from lorabench.leaderboard.claims import CLAIMS_PAGE, evaluate_claims, load_claims, render_claims_page

    claims = load_claims(claims_files)  # a bad claims file fails before anything is read or written
    loaded, bad = load_results(results_dir)
    records, bad_records = [], []
    for r in loaded:
        why = record_problem(r)
        (bad_records.append(f"{r.cell_id} (config {r.config_hash}): {why}") if why else records.append(r))
    if not records:
        extra = f"; {len(bad)} JSON file(s) there did not validate as result records" if bad else ""
        if bad_records:
            extra += f"; {len(bad_records)} record(s) hold values that cannot be shown, e.g. {bad_records[0]}"
        raise ConfigError(f"No result records under {results_dir}{extra}. Run `lorabench run ... --results-dir "
                          f"{results_dir}` first.")
    from lorabench.identity import staleness

    by_task: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    stale: dict[tuple[str, str], list[tuple[ResultRecord, str]]] = defaultdict(list)
    for r in records:
        why = staleness(r)
        (stale[(r.task, r.profile)].append((r, why)) if why else by_task[(r.task, r.profile)].append(r))
    for key in stale:
        by_task.setdefault(key, [])
    taken: set[str] = {"index"}
    pages = []
    for (t, profile), recs in sorted(by_task.items(), key=lambda kv: (kv[0][1] != "full", kv[0])):
        slug = _slug(t if profile == "full" else f"{t}-{profile}", taken)
        file = f"task-{slug}.html"
        pages.append(task_page(t, recs, file, profile, stale[(t, profile)]) if recs else
                     _stale_only_page(t, profile, stale[(t, profile)], file))
    env = environment()
    meta = {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "version": lorabench.__version__,
            "results_dir": str(results_dir), "bad_files": [str(p) for p in bad], "bad_records": bad_records}
    claims_report = evaluate_claims(claims, [r for (_, p), recs in by_task.items() if p == "full" for r in recs],
                                    {page.name: page.file for page in pages if page.profile == "full"})
    index, claims_path = out_dir / "index.html", out_dir / CLAIMS_PAGE
    written = [out_dir / page.file for page in pages]
    _check_targets([index, claims_path, *written], out_dir)
    html = [env.get_template("task.html").render(page=page, pages=pages, meta=meta) for page in pages]
    html.append(render_claims_page(env, claims_report, pages, meta))
    html.append(env.get_template("index.html").render(pages=pages, meta=meta, provenance=provenance(records),
                                                      claims=claims_report))
    path = out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, text in zip([*written, claims_path, index], html):
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot write {path}: {exc.strerror or exc}.") from None
    return SiteReport(out_dir=out_dir, index=index, pages=written, n_records=len(records), bad_files=bad,
                      bad_records=bad_records, flags=sum(len(p.flags) for p in pages), claims=claims_path,
                      claim_totals=claims_report.totals)
