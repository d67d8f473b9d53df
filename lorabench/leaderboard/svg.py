"""SVG geometry for the pages: accuracy against K, paired differences against K, composition heatmaps.

Plain dicts of pixel coordinates and labels that the templates draw inline, so every page opens from disk
with no script and no network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lorabench.leaderboard.formatting import pct, pts
from lorabench.leaderboard.marks import dropped_note, interval_words
from lorabench.leaderboard.rows import Row, row_label
from lorabench.stats import PairedComparison, compare

FRAME = (680, 340, 58, 18, 18, 46)  # both plots: width, height, left, right, top, bottom margin (px)
# The paired differences A - B a task page plots against K, where both methods have rows on the page.
MAIN_PAIRS = [("uniform_composition", "classifier_tuning"), ("learned_composition", "lora"),
              ("learned_composition", "uniform_composition"), ("uniform_composition", "full_finetune")]
PAIR_COLOURS = ["#3d5a80", "#c2185b", "#e07a1f", "#2a9d8f"]  # one per main pair, the same on every page
DIFF_STEPS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5)
# Sequential blues for the heatmap, light (low weight) to dark (high weight).
HEAT_STOPS = [(0.0, (0xf1, 0xf6, 0xfc)), (0.35, (0x9e, 0xc5, 0xe6)), (0.7, (0x3d, 0x85, 0xc6)),
              (1.0, (0x0b, 0x3c, 0x7d))]


# --- the shared frame ----------------------------------------------------------------------------


def _empty(**extra: Any) -> dict[str, Any]:
    w, h = FRAME[:2]
    return {"width": w, "height": h, "series": [], "xticks": [], "yticks": [], "empty": True, **extra}


def _whole_steps(lo: float, hi: float, step: float) -> tuple[float, float]:
    """[lo, hi] widened outward to whole steps (at least one step wide)."""
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    return lo, max(hi, lo + step)


def _diff_scale(vals: list[float]) -> tuple[float, float, float]:
    """(lo, hi, step) for paired differences of accuracies: their range within [-1, 1] and the first of
    DIFF_STEPS that gives at most 6 ticks."""
    lo, hi = max(-1.0, min(vals)), min(1.0, max(vals))
    return lo, hi, next((s for s in DIFF_STEPS if max(hi - lo, 0.02) / s <= 6), DIFF_STEPS[-1])


def _axes(lo: float, hi: float, step: float, ks: list[str], tick: Callable[[float], str], clamp: bool = False
          ) -> tuple[float, float, Callable[[float], float], dict[str, float], float, dict[str, Any]]:
    """[lo, hi] widened to whole steps, and the frame both plots share: (lo, hi, y(value) in px, x per K,
    the width of one K slot, the frame's keys with its ticks). `clamp`: y pins values outside [lo, hi]."""
    w, h, left, right, top, bottom = FRAME
    lo, hi = _whole_steps(lo, hi, step)
    plot_w, plot_h = w - left - right, h - top - bottom

    def y(v: float) -> float:
        return round(top + plot_h * (1 - ((min(hi, max(lo, v)) if clamp else v) - lo) / (hi - lo)), 2)

    slot = plot_w / len(ks)
    xs = {k: left + slot * (i + 0.5) for i, k in enumerate(ks)}
    n_ticks = int(round((hi - lo) / step))
    frame = {"width": w, "height": h, "left": left, "right": w - right, "top": top, "bottom": h - bottom,
             "yticks": [{"y": y(lo + j * step), "label": tick(lo + j * step)} for j in range(n_ticks + 1)],
             "xticks": [{"x": round(x, 2), "label": k} for k, x in xs.items()]}
    return lo, hi, y, xs, slot, frame


def _path(points: list[dict[str, Any]]) -> str:
    return " ".join(f"{p['x']},{p['y']}" for p in points)


# --- accuracy against K --------------------------------------------------------------------------


def _nice_step(span: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25):
        if span / step <= 6:
            return step
    return 0.25


def accuracy_plot(rows: list[Row], ks: list[str]) -> dict[str, Any]:
    """Accuracy against K (categorical axis, 'all' last), one line per row, ±std whiskers."""
    points_all = [(c.mean, c.std or 0.0) for r in rows for c in r.cells.values() if c.mean is not None]
    if not points_all:
        return _empty()
    lo = max(0.0, min(m - s for m, s in points_all))
    hi = min(1.0, max(m + s for m, s in points_all))
    if hi - lo < 0.02:
        lo, hi = max(0.0, lo - 0.01), min(1.0, hi + 0.01)
    lo, hi, y, xs, slot, frame = _axes(lo, hi, _nice_step(hi - lo), ks, lambda v: f"{100 * v:g}")
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
        series.append({"label": row_label(r), "color": r.color, "points": points, "path": _path(points)})
    return {**frame, "series": series, "empty": False}


# --- paired differences against K ----------------------------------------------------------------


def _pts_tick(v: float) -> str:
    v = round(100 * v, 6)
    return "0" if abs(v) < 1e-9 else f"{v:+g}"


def _diff_title(label: str, k: str, c: PairedComparison, a: Row, b: Row) -> str:
    if c.ci is None:
        return f"{label}, K={k}: {pts(c.mean_diff)} pts on {c.n} shared seed (too few for an interval){dropped_note(c)}"
    says = {"A better": f"{row_label(a)} ahead", "B better": f"{row_label(b)} ahead", "tied": "tied on every seed"}
    return f"{label}, K={k}: {interval_words(c)}: {says.get(c.verdict, 'the interval holds zero')}{dropped_note(c)}"


def diff_plot(rows: list[Row], ks: list[str]) -> dict[str, Any]:
    """Paired difference A - B (percentage points) against K for each main pair (MAIN_PAIRS) with rows of both
    methods on one backbone: the mean over matched seeds with its paired 95% t interval (`stats.compare`), or a
    hollow marker and no bar where fewer than 2 seeds match. Same frame as `accuracy_plot`; x only at the K
    values where some pair has a matched seed."""
    multi_backbone = len({r.backbone for r in rows}) > 1
    pairs = []
    for i, (ma, mb) in enumerate(MAIN_PAIRS):
        for a in (r for r in rows if r.method == ma):
            for b in (r for r in rows if r.method == mb and r.backbone == a.backbone):
                comps = {k: c for k in ks if (c := compare(a.cells[k].values, b.cells[k].values)).n}
                if comps:
                    label = f"{row_label(a)} − {row_label(b)}" + (f" ({a.backbone})" if multi_backbone else "")
                    pairs.append((i, a, b, label, comps))
    empty = _empty(pairs=[f"{a} − {b}" for a, b in MAIN_PAIRS])
    if not pairs:
        return empty
    used = [k for k in ks if any(k in p[4] for p in pairs)]
    vals = [0.0] + [v for p in pairs for c in p[4].values()
                    for v in (c.mean_diff, *(c.ci or ()))]
    lo, hi, y, xs, slot, frame = _axes(*_diff_scale(vals), used, _pts_tick, clamp=True)
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
                       "points": points, "path": _path(points)})
    return {**empty, **frame, "zero_y": y(0.0), "series": series, "empty": False}


# --- composition heatmaps ------------------------------------------------------------------------


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


def draw_heatmaps(rows: list[Row]) -> None:
    """Fill in the SVG of every row's heatmaps (rows.build_rows averages the weights; this draws them)."""
    for row in rows:
        for h in row.heatmaps:
            h.svg = heatmap_svg(h.matrices, h.upstream, np.array(h.weights))


# --- forest plot: a claim's strata and their pool ---------------------------------------------------


FOREST = (680, 200, 16, 22, 26)  # width, label column, right margin, row height, top/bottom margin (px)


def forest_plot(strata: list[dict[str, Any]], pooled: dict[str, Any] | None, margin: float | None = None
                ) -> dict[str, Any]:
    """One row per stratum (`label`, `mean`, `ci_low`, `ci_high`, `weight` in the pool) as a square sized by its
    weight on its interval, the pooled mean and interval as a diamond below, a zero line and, for an
    equivalence claim, its ±`margin` (points) band. Values are accuracy fractions, drawn in points."""
    w, label_w, right, row_h, pad = FOREST
    vals = [0.0] + [v for s in strata for v in (s["ci_low"], s["ci_high"])]
    if pooled:
        vals += [pooled["ci_low"], pooled["ci_high"]]
    if margin is not None:
        vals += [-margin / 100, margin / 100]
    lo, hi, step = _diff_scale(vals)
    lo, hi = _whole_steps(lo, hi, step)
    x0, x1 = label_w + 10, w - right

    def x(v: float) -> float:
        return round(x0 + (x1 - x0) * (min(hi, max(lo, v)) - lo) / (hi - lo), 2)

    rows = []
    top_w = max([s["weight"] for s in strata] or [1.0]) or 1.0
    for i, s in enumerate(strata):
        y = pad + row_h * (i + 0.5)
        size = round(3 + 5 * math.sqrt(s["weight"] / top_w), 2)
        rows.append({**s, "y": round(y, 2), "x": x(s["mean"]), "x_lo": x(s["ci_low"]), "x_hi": x(s["ci_high"]),
                     "size": size})
    bottom = pad + row_h * (len(strata) + (1.5 if pooled else 0.5))
    out: dict[str, Any] = {"width": w, "height": round(bottom + pad, 2), "left": x0, "right": x1, "top": pad / 2,
                           "axis_y": round(bottom, 2), "zero_x": x(0.0), "rows": rows, "label_x": label_w,
                           "ticks": [{"x": x(lo + j * step), "label": _pts_tick(lo + j * step)}
                                     for j in range(int(round((hi - lo) / step)) + 1)], "band": None, "diamond": None}
    if margin is not None:
        out["band"] = {"x": x(-margin / 100), "w": round(x(margin / 100) - x(-margin / 100), 2)}
    if pooled:
        y = round(pad + row_h * (len(strata) + 0.75), 2)
        xm, xl, xh = x(pooled["mean"]), x(pooled["ci_low"]), x(pooled["ci_high"])
        out["diamond"] = {**pooled, "y": y, "points": f"{xl},{y} {xm},{y - 7} {xh},{y} {xm},{y + 7}"}
    return out
