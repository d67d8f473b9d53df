"""Paired statistics over seeds: does method A beat method B on a task at one K, or can we not tell?

Every method of a (task, K, seed) cell sees the same support set, head initialisation and batch stream,
so two methods' scores are paired by seed: the seed-to-seed spread they share (an easy or a hard support
set) cancels in the difference A - B, and a difference that is small next to each method's own std can
still be one the seeds agree on. Comparing means ± std side by side ignores that pairing, and ranking by
the mean alone calls a winner that the seeds do not back.

Everything here is a pure function of per-seed values (a `{seed: value}` dict per method) or of result
records; the caller chooses which records are comparable and current (same task, profile, backbone and
K; stale, smoke and invalid records left out). Tests, intervals and the bootstrap come from `scipy.stats`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from lorabench.results import runs_by_seed

# |A - B| at or below this counts as a tie: float noise from identical runs, never a real win.
TIE_TOL = 1e-12
DIFF_DECIMALS = 12
A_BETTER, B_BETTER, TIED, UNDECIDED = "A better", "B better", "tied", "undecided"
CI_METHODS = ("t", "bootstrap")


@dataclass(frozen=True)
class PairedComparison:
    """A - B over the seeds both sides have. CI fields are None when n < 2 (one seed has no spread)."""

    seeds: list[int]  # matched seeds, sorted: the only ones any statistic below uses
    diffs: list[float]  # A - B per matched seed, in `seeds` order
    dropped: dict[int, str] = field(default_factory=dict)  # seed -> "A missing" / "B missing"
    mean_diff: float | None = None
    sd_diff: float | None = None  # sample std of the differences (n - 1)
    se: float | None = None  # sd_diff / sqrt(n)
    confidence: float = 0.95
    ci_method: str = "t"  # "t" (paired t interval) or "bootstrap" (paired bootstrap over seeds)
    ci_low: float | None = None
    ci_high: float | None = None
    wins: int = 0  # seeds where A > B (beyond TIE_TOL)
    ties: int = 0
    losses: int = 0
    t_pvalue: float | None = None  # two-sided paired t-test
    wilcoxon_pvalue: float | None = None  # two-sided Wilcoxon signed-rank, ties (|d| <= tol) dropped
    wilcoxon_method: str = ""  # "exact", "permutation" (exact over sign flips, with ties) or "asymptotic"
    sign_pvalue: float | None = None  # two-sided exact sign test (binomial, p = 1/2) over non-tied seeds
    verdict: str = UNDECIDED

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.ci_low is None or self.ci_high is None else (self.ci_low, self.ci_high)


def match_seeds(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[int], dict[int, str]]:
    """Seeds both sides ran, and the ones dropped because one side is missing (a difference needs both)."""
    seeds = sorted(set(a) & set(b))
    dropped = {s: "B missing" for s in a if s not in b} | {s: "A missing" for s in b if s not in a}
    return seeds, dict(sorted(dropped.items()))


def verdict(ci: tuple[float, float] | None, tol: float = TIE_TOL) -> str:
    """'A better' if the whole interval for A - B is above zero, 'B better' if below, 'tied' if it is
    [0, 0] (every seed the same), else 'undecided': an interval that holds zero has not picked a side."""
    if ci is None:
        return UNDECIDED
    lo, hi = ci
    if lo > 0:
        return A_BETTER
    if hi < 0:
        return B_BETTER
    if abs(lo) <= tol and abs(hi) <= tol:
        return TIED
    return UNDECIDED


def paired_t_interval(diffs: Iterable[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """mean ± t_{(1+c)/2, n-1} · sd/sqrt(n) over the differences; None for fewer than two."""
    d = np.asarray(list(diffs), dtype=float)
    if len(d) < 2:
        return None
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d))
    if se == 0.0:  # every seed moved by the same amount: the interval has no width (scipy wants scale > 0)
        return mean, mean
    lo, hi = sps.t.interval(confidence, len(d) - 1, loc=mean, scale=se)
    return float(lo), float(hi)


def paired_bootstrap_interval(diffs: Iterable[float], confidence: float = 0.95, n_resamples: int = 9999,
                              seed: int = 0, method: str = "BCa") -> tuple[float, float] | None:
    """A bootstrap interval for the mean difference, resampling seeds (so pairs stay together).
    Deterministic for a given `seed`. With a handful of seeds it is narrower than the t interval
    (it cannot see tails it never sampled), so the t interval stays the default."""
    d = np.asarray(list(diffs), dtype=float)
    if len(d) < 2:
        return None
    if np.ptp(d) == 0.0:  # a constant sample: every resample has the same mean
        return float(d[0]), float(d[0])
    with warnings.catch_warnings():  # BCa warns (and may give NaN) on very small or lumpy samples
        warnings.simplefilter("ignore")
        res = sps.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method=method,
                            rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isfinite(lo) and math.isfinite(hi)) and method != "percentile":
            res = sps.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                method="percentile", rng=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def wilcoxon_test(diffs: Iterable[float], tol: float = TIE_TOL) -> tuple[float | None, str]:
    """Two-sided Wilcoxon signed-rank p-value and how it was computed. Differences within `tol` of zero
    are ties and dropped (zero_method='wilcox'); with no tied ranks and n <= 50 scipy's p is exact, with
    tied ranks and n <= 13 it enumerates every sign flip (exact given the ties), else it is asymptotic."""
    d = np.asarray([x for x in diffs if abs(x) > tol], dtype=float)
    if len(d) == 0:  # every seed tied: no evidence either way
        return 1.0, "exact"
    ranks_tied = len(np.unique(np.abs(d))) < len(d)
    how = ("permutation" if len(d) <= 13 else "asymptotic") if ranks_tied else ("exact" if len(d) <= 50 else "asymptotic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto").pvalue)
    return (p if math.isfinite(p) else None), how


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: under 'no difference' each non-tied seed is a fair coin (ties dropped)."""
    if wins + losses == 0:
        return 1.0
    return float(sps.binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def compare(a: Mapping[int, float], b: Mapping[int, float], *, confidence: float = 0.95, ci: str = "t",
            n_resamples: int = 9999, bootstrap_seed: int = 0, tol: float = TIE_TOL) -> PairedComparison:
    """A - B paired by seed: only seeds both have count (the others are reported in `dropped`)."""
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, not {ci!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    seeds, dropped = match_seeds(a, b)
    # Rounded to 12 decimals: 0.75 - 0.73 and 0.77 - 0.75 are the same difference, not two ranks apart.
    diffs = [round(float(a[s]) - float(b[s]), DIFF_DECIMALS) for s in seeds]
    if not all(math.isfinite(x) for x in diffs):
        raise ValueError("per-seed values must be finite numbers")
    base = dict(seeds=seeds, diffs=diffs, dropped=dropped, confidence=confidence, ci_method=ci)
    if not seeds:
        return PairedComparison(**base)
    d = np.asarray(diffs)
    wins, losses = int((d > tol).sum()), int((d < -tol).sum())
    ties = len(d) - wins - losses
    p_w, how = wilcoxon_test(diffs, tol)
    base |= dict(mean_diff=float(d.mean()), wins=wins, ties=ties, losses=losses, wilcoxon_pvalue=p_w,
                 wilcoxon_method=how, sign_pvalue=sign_test(wins, losses))
    if len(d) < 2:  # one seed: a difference, but no spread to judge it by
        return PairedComparison(**base)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(len(d))
    if ties == len(d):  # every seed identical (within tol): a tie, not an undecided interval
        interval, t_p = (0.0, 0.0), 1.0
    else:
        interval = (paired_t_interval(d, confidence) if ci == "t"
                    else paired_bootstrap_interval(d, confidence, n_resamples, bootstrap_seed))
        with warnings.catch_warnings():  # near-constant differences warn about precision; the p is still right
            warnings.simplefilter("ignore")
            t_p = float(sps.ttest_1samp(d, 0.0).pvalue) if se > 0 else 0.0
    return PairedComparison(**base, sd_diff=sd, se=se, ci_low=interval[0], ci_high=interval[1], t_pvalue=t_p,
                            verdict=verdict(interval, tol))


def per_seed(records: Iterable) -> dict[int, float]:
    """{seed: value} from the result records of ONE (task, profile, method, backbone, K) configuration.
    A seed run more than once with the same config keeps its latest record (as the leaderboard shows it);
    records that are not one configuration, or not comparable, are refused rather than mixed."""
    recs = list(records)
    keys = {(r.task, r.profile, r.method, r.backbone, str(r.k)) for r in recs}
    if len(keys) > 1:
        raise ValueError(f"records of more than one (task, profile, method, backbone, K): {sorted(keys)}")
    out = {}
    for seed, runs in runs_by_seed(recs).items():
        other = next((r for r in runs if r.config_hash != runs[0].config_hash), None)
        if other is not None:
            raise ValueError(f"seed {seed} has records of different configurations ({runs[0].config_hash}, "
                             f"{other.config_hash}): compare one configuration at a time")
        out[seed] = float(runs[-1].value)
    return out


def compare_records(records_a: Iterable, records_b: Iterable, **kwargs) -> PairedComparison:
    """`compare` over result records: each side one configuration, both on the same task, profile,
    backbone and K (a seed only pairs like with like). Pass only current, valid records."""
    recs_a, recs_b = list(records_a), list(records_b)
    where = {(r.task, r.profile, r.backbone, str(r.k)) for r in recs_a + recs_b}
    if len(where) > 1:
        raise ValueError(f"A and B must share task, profile, backbone and K, got {sorted(where)}")
    return compare(per_seed(recs_a), per_seed(recs_b), **kwargs)


def paired_t_power(mean_diff: float, sd_diff: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n pairs: P(|T| > t_{1-a/2, n-1}) with T noncentral t,
    df = n - 1 and noncentrality (mean/sd)·sqrt(n)."""
    if n < 2:
        return 0.0
    if sd_diff == 0:
        return 1.0 if mean_diff != 0 else alpha
    crit = sps.t.ppf(1 - alpha / 2, n - 1)
    nc = abs(mean_diff) / sd_diff * math.sqrt(n)
    return float(sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc))


def seeds_needed(mean_diff: float, sd_diff: float, alpha: float = 0.05, power: float = 0.8, *,
                 method: str = "noncentral_t", max_n: int = 100_000) -> int | None:
    """The fewest seeds for a two-sided paired t-test at level `alpha` to detect a true mean difference
    `mean_diff` (per-seed differences with std `sd_diff`) with probability `power`.

    method="noncentral_t" (default) steps n = 2, 3, ... until the exact power (noncentral t, see
    `paired_t_power`) reaches `power`; method="normal" gives the textbook approximation
    n = ceil(((z_{1-a/2} + z_power) · sd / |mean|)^2), which undercounts for few seeds. Returns None when
    no n up to `max_n` suffices (e.g. mean_diff = 0), and 2 when sd_diff = 0 and mean_diff != 0."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    if not (math.isfinite(mean_diff) and math.isfinite(sd_diff)) or sd_diff < 0:
        raise ValueError(f"mean_diff must be finite and sd_diff finite and >= 0, got {mean_diff}, {sd_diff}")
    if mean_diff == 0:
        return None
    if sd_diff == 0:
        return 2
    if method == "normal":
        n = math.ceil(((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * sd_diff / abs(mean_diff)) ** 2)
        n = max(2, n)
        return n if n <= max_n else None
    if method != "noncentral_t":
        raise ValueError(f"method must be 'noncentral_t' or 'normal', not {method!r}")
    # Start near the normal answer (the exact n is never below it by more than a couple) and step up.
    guess = ((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * sd_diff / abs(mean_diff)) ** 2
    if guess > max_n:
        return None
    n = max(2, math.floor(guess) - 2)
    while n > 2 and paired_t_power(mean_diff, sd_diff, n - 1, alpha) >= power:
        n -= 1
    while paired_t_power(mean_diff, sd_diff, n, alpha) < power:
        n += 1
        if n > max_n:
            return None
    return n


# --- pooling strata: one effect per claim across tasks and K -------------------------------------

# A stratum whose seeds all tie has no spread; its variance is floored here (an SE of 0.01 accuracy points) so it
# counts as very precise instead of infinitely so.
MIN_STRATUM_VARIANCE = 1e-8


@dataclass(frozen=True)
class PooledEffect:
    """Random-effects pool of per-stratum paired mean differences (accuracy fractions)."""

    k: int  # strata pooled
    mean: float
    ci_low: float
    ci_high: float
    se: float  # of the pooled mean: Hartung-Knapp-Sidik-Jonkman, never below the plain random-effects one
    tau2: float  # between-strata variance of the true effects (Paule-Mandel)
    i2: float  # share of the spread between strata that is heterogeneity, not sampling error (0..1)
    q_pvalue: float  # Cochran's Q test of homogeneity
    weights: list[float]  # relative random-effects weight of each stratum (sums to 1)
    confidence: float = 0.95

    @property
    def ci(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high


def pool_effects(effects: Iterable[float], variances: Iterable[float], confidence: float = 0.95) -> PooledEffect:
    """Pool k >= 2 strata (e.g. the (task, K) rows of one claim), each a paired mean difference over seeds with its
    squared standard error: a random-effects meta-analysis (`statsmodels.stats.meta_analysis.combine_effects`,
    Paule-Mandel τ²) whose interval is the Hartung-Knapp-Sidik-Jonkman one on t(k - 1), its standard error
    never below the plain random-effects one (the "modified" HKSJ, so strata that agree more closely than their
    noise predicts do not shrink the interval below what their own variances give).

    Why this shape: seeds are paired within a stratum (its variance is the paired SE²); strata are different tasks
    and K, whose true effects may differ, so τ² lets them, and the HKSJ interval widens with the observed spread
    between strata on few degrees of freedom instead of trusting normal quantiles for 3-6 strata. Paule-Mandel,
    not DerSimonian-Laird: statsmodels' DL does not truncate a negative τ² at 0 (Q below its degrees of freedom
    gives negative weights), and PM is the estimator the meta-analysis literature recommends over DL anyway."""
    from statsmodels.stats.meta_analysis import combine_effects

    y = np.asarray(list(effects), dtype=float)
    v = np.maximum(np.asarray(list(variances), dtype=float), MIN_STRATUM_VARIANCE)
    if len(y) < 2 or len(y) != len(v):
        raise ValueError(f"pooling needs at least 2 strata with one variance each; got {len(y)} and {len(v)}")
    with warnings.catch_warnings():  # I² = 1 - 1/H² divides by zero when the strata agree exactly (Q = 0)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = combine_effects(y, v, method_re="pm")
    mean, se = float(res.mean_effect_re), max(float(res.sd_eff_w_re_hksj), float(res.sd_eff_w_re))
    half = float(sps.t.ppf(0.5 + confidence / 2, len(y) - 1)) * se
    q = float(res.q)
    return PooledEffect(k=len(y), mean=mean, ci_low=mean - half, ci_high=mean + half, se=se, tau2=float(res.tau2),
                        i2=float(max(0.0, (q - (len(y) - 1)) / q)) if q > 0 else 0.0,
                        q_pvalue=float(sps.chi2.sf(q, len(y) - 1)), weights=[float(w) for w in res.weights_rel_re],
                        confidence=confidence)
