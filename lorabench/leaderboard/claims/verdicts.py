"""Verdicts: one (task, backbone, K) stratum decided from its paired interval, a comparison pooled over its
strata (random effects, `lorabench.stats.pool_effects`), and the seeds a stratum would need to be decided."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from lorabench.leaderboard.formatting import pts
from lorabench.leaderboard.svg import forest_plot
from lorabench.stats import PairedComparison, pool_effects, seeds_needed
from lorabench.leaderboard.claims.schema import Comparison

SUPPORTED, CONTRADICTED, UNDECIDED, NOT_RUN = "supported", "contradicted", "undecided", "not run"
VERDICTS = (SUPPORTED, CONTRADICTED, UNDECIDED, NOT_RUN)


class ClaimRow(BaseModel):
    """One comparison of one claim on one task, backbone and K."""

    comparison: int  # index in the claim's comparisons
    label: str  # "uniform_composition > full_finetune"
    a: str
    b: str
    relation: str
    margin: float | None = None
    task: str
    task_file: str | None = None  # its page on the site, if it has one
    backbone: str = ""
    k: str
    variant: str = ""  # which configurations, when a method was run more than one way
    verdict: str = NOT_RUN
    why: str = ""
    n: int = 0
    seeds: list[int] = []
    dropped: dict[int, str] = {}
    mean_diff: float | None = None  # A - B, accuracy fraction
    sd_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    wins: int = 0
    ties: int = 0
    losses: int = 0
    seeds_needed: int | None = None
    seeds_needed_note: str = ""
    params_a: list[int] = []
    params_b: list[int] = []
    params_ok: bool | None = None  # the claim's `params` relation holds (None: not asked, or not run)
    paper_a: float | None = None  # the paper's numbers (%), where transcribed
    paper_b: float | None = None
    paper_backbone: str = ""  # the backbone the paper's numbers are on (never ours)


class ClaimPooled(BaseModel):
    """One comparison of a claim over all its strata (task, backbone, K): the pooled paired effect
    (`lorabench.stats.pool_effects`), its verdict, the heterogeneity between strata and the forest plot."""

    comparison: int
    label: str
    verdict: str = NOT_RUN
    why: str = ""
    strata: int = 0
    tasks: list[str] = []
    seeds: int = 0  # seed pairs over the pooled strata
    mean_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    tau2: float | None = None
    i2: float | None = None
    q_pvalue: float | None = None
    left_out: list[str] = []  # strata that were run but cannot be pooled, and why
    forest: dict[str, Any] = {}


def decide(c: PairedComparison, relation: str, margin: float | None = None) -> tuple[str, str]:
    """The verdict for `A relation B` from the paired comparison A - B, and why in words.
    `margin` is in accuracy points (fraction * 100), as the claims file gives it."""
    if c.n < 2 or c.ci is None:
        return UNDECIDED, (f"{c.n} seed(s) run by both: too few for an interval (n ≥ 2 needed)")
    return decide_interval(c.ci, relation, margin)


def decide_interval(interval: tuple[float, float], relation: str, margin: float | None = None) -> tuple[str, str]:
    """The verdict for `A relation B` from a 95% interval of A - B (one stratum's, or a claim's pooled one)."""
    lo, hi = interval
    words = f"95% CI [{pts(lo)}, {pts(hi)}] pts"
    if relation == ">":
        if lo > 0:
            return SUPPORTED, f"{words} lies above 0"
        if hi < 0:
            return CONTRADICTED, f"{words} lies below 0: B is better"
        return UNDECIDED, f"{words} holds 0"
    if relation == "<":
        if hi < 0:
            return SUPPORTED, f"{words} lies below 0"
        if lo > 0:
            return CONTRADICTED, f"{words} lies above 0: A is better"
        return UNDECIDED, f"{words} holds 0"
    if relation == "≈":
        if margin is None:
            raise ValueError("relation '≈' needs a margin")
        m = margin / 100
        band = f"[−{margin:g}, +{margin:g}]"
        if -m <= lo and hi <= m:
            return SUPPORTED, f"{words} lies within {band}"
        if lo > m or hi < -m:
            return CONTRADICTED, f"{words} lies entirely outside {band}"
        return UNDECIDED, f"{words} overlaps the edge of {band}"
    raise ValueError(f"unknown relation {relation!r}")


def pool_comparison(index: int, comp: Comparison, rows: list[ClaimRow]) -> ClaimPooled:
    """Pool one comparison's strata: every row with an interval (≥ 2 seeds) and a single configuration per side."""
    run = [r for r in rows if r.verdict != NOT_RUN]
    usable = [r for r in run if r.n >= 2 and r.sd_diff is not None and r.mean_diff is not None and not r.variant]
    left_out = [f"{r.task} K={r.k}: " + ("several configurations" if r.variant else "fewer than 2 seeds")
                for r in run if r not in usable]
    out = ClaimPooled(comparison=index, label=comp.label, left_out=left_out, strata=len(usable),
                      tasks=sorted({r.task for r in usable}), seeds=sum(r.n for r in usable))
    if not usable:
        out.verdict = NOT_RUN if not run else UNDECIDED
        out.why = "no stratum has both methods" if not run else "no stratum has an interval to pool"
        return out
    multi_backbone = len({r.backbone for r in usable}) > 1
    label = {id(r): f"{r.task}{f' ({r.backbone})' if multi_backbone else ''}, K={r.k}" for r in usable}
    if len(usable) == 1:
        r = usable[0]
        out.mean_diff, out.ci_low, out.ci_high, out.verdict = r.mean_diff, r.ci_low, r.ci_high, r.verdict
        out.why = f"one stratum ({label[id(r)]}): its own paired interval; nothing to pool"
        weights = [1.0]
    else:
        p = pool_effects([r.mean_diff for r in usable], [r.sd_diff ** 2 / r.n for r in usable])
        out.mean_diff, out.ci_low, out.ci_high = p.mean, p.ci_low, p.ci_high
        out.tau2, out.i2, out.q_pvalue = p.tau2, p.i2, p.q_pvalue
        out.verdict, why = decide_interval(p.ci, comp.relation, comp.margin)
        out.why = (f"{why}; random effects over {p.k} strata ({len(out.tasks)} task(s), {out.seeds} seed pairs), "
                   f"HKSJ interval on t({p.k - 1}); τ² = {1e4 * p.tau2:.2f} pts², I² = {100 * p.i2:.0f}%")
        weights = p.weights
    strata = [{"label": label[id(r)], "task": r.task, "k": r.k, "mean": r.mean_diff, "ci_low": r.ci_low,
               "ci_high": r.ci_high, "weight": w} for r, w in zip(usable, weights)]
    pooled = ({"mean": out.mean_diff, "ci_low": out.ci_low, "ci_high": out.ci_high}
              if len(usable) > 1 else None)
    out.forest = forest_plot(strata, pooled, comp.margin if comp.relation == "≈" else None)
    return out


def seeds_to_decide(c: PairedComparison, relation: str, margin: float | None = None) -> tuple[int | None, str]:
    """Seeds a paired t-test (alpha 0.05, power 0.8) needs at the observed mean difference and spread, for
    the distance between the mean and the boundary the interval has to clear."""
    if c.n < 2 or c.mean_diff is None or c.sd_diff is None:
        return None, "needs ≥ 2 seeds run by both to estimate the spread"
    mean = c.mean_diff
    if relation == "≈":
        dist = abs(abs(mean) - (margin or 0) / 100)
        what = f"the ±{margin:g} pts band"
    else:
        dist, what = abs(mean), "0"
    if dist < 1e-12:
        return None, f"the mean difference sits on {what}: no number of seeds decides it"
    n = seeds_needed(dist, c.sd_diff)
    if n is None:
        return None, "more than 100,000 seeds at this effect and spread"
    return n, (f"paired t-test, α = 0.05, 80% power, for a mean {pts(mean)} pts {pts(dist, signed=False)} pts "
               f"from {what} with per-seed sd {pts(c.sd_diff, signed=False)} pts")
