"""Which cells of a K column the seeds back as best: paired comparisons between rows, in words and as marks.

Means alone would crown whichever method a seed or two happened to favour, so a cell is bold only when a
paired 95% interval over matched seeds says so; the statistics themselves are `lorabench.stats`.
"""

from __future__ import annotations

from pydantic import BaseModel

from lorabench.leaderboard.formatting import pts
from lorabench.leaderboard.rows import Row, row_label
from lorabench.stats import PairedComparison, compare


class ColumnMark(BaseModel):
    """What one K column of a full-profile table decides: a best method, a tie, one method alone, or nothing."""

    k: str
    status: str = "none"  # "best" | "tied" | "alone" | "none" | "unranked" (smoke and other small profiles)
    rows: list[Row] = []  # the bold row ("best"), the tied rows, best mean first ("tied"), the only row ("alone")
    top_mean: float | None = None
    detail: str = ""  # why, in words: the paired comparison of the best mean with the runner-up


def _paired(a: Row, b: Row, k: str) -> PairedComparison | None:
    """a - b at K, paired by seed; None across backbones (a seed fixes the support set and head init only
    on one backbone, so scores from two backbones are not pairs)."""
    return compare(a.cells[k].values, b.cells[k].values) if a.backbone == b.backbone else None


def _decided(c: PairedComparison | None) -> bool:
    """Whether the seeds back `a` over `b`: n >= 2 matched seeds and the paired 95% t interval above zero."""
    return c is not None and c.n >= 2 and c.ci_low is not None and c.ci_low > 0


def dropped_note(c: PairedComparison) -> str:
    """The seeds a paired comparison left out, as a clause to append ("" if none)."""
    return f"; seed(s) {', '.join(map(str, c.dropped))} left out, run by one side only" if c.dropped else ""


def interval_words(c: PairedComparison) -> str:
    """'<mean> pts, paired 95% CI [lo, hi] over n seeds (wins/ties/losses w/t/l)', for n >= 2."""
    return (f"{pts(c.mean_diff)} pts, paired 95% CI [{pts(c.ci_low)}, {pts(c.ci_high)}] over {c.n} seeds "
            f"(wins/ties/losses {c.wins}/{c.ties}/{c.losses})")


def _describe(c: PairedComparison | None, a: Row, b: Row) -> str:
    label_a, label_b = row_label(a), row_label(b)
    if c is None:
        return f"{label_a} ({a.backbone}) and {label_b} ({b.backbone}) ran on different backbones: not paired"
    if c.n < 2:
        return (f"{label_a} − {label_b}: {c.n} seed(s) run by both, too few for an interval (n ≥ 2 needed)"
                + dropped_note(c))
    return f"{label_a} − {label_b} = {interval_words(c)}{dropped_note(c)}"


def mark_columns(rows: list[Row], ks: list[str]) -> dict[str, ColumnMark]:
    """Per K column: the best mean is bold only when its paired 95% CI against the runner-up (the second-best
    mean) lies above zero over matched seeds (n >= 2). Otherwise nothing is bold and the best, with every row
    whose paired CI against it holds zero or cannot be computed (n < 2, another backbone), is 'tied'."""
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
            mark.detail = (f"K={k}: no method is ahead. " + _describe(c, top, runner) + "; tied: "
                           + ", ".join(row_label(r) for r in tied) + ".")
        marks[k] = mark
    return marks
