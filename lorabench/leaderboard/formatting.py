"""How numbers read on every page (tables, plots, claims): one place, so the same value never prints two ways."""

from __future__ import annotations

import math


def pct(x: float | None) -> str:
    """Accuracy as the paper prints it: a percentage with two decimals."""
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def pts(x: float | None, signed: bool = True) -> str:
    """A difference of accuracies in percentage points, signed unless `signed=False` (a distance or a spread)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"
