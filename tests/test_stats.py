"""lorabench.stats against values worked out by hand (the arithmetic is written beside each number)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from lorabench.specs import ResultRecord
from lorabench.stats import (A_BETTER, B_BETTER, TIED, UNDECIDED, compare, compare_records, match_seeds,
                             paired_t_interval, paired_t_power, per_seed, seeds_needed, sign_test, verdict,
                             wilcoxon_test)

T_975_2 = 4.302652729911275  # t_{0.975, df=2}, from tables: 4.30265...
T_975_4 = 2.776445105197799  # t_{0.975, df=4}: 2.77645...


def test_three_seeds_mean_se_t_interval_and_tests_by_hand():
    # diffs A - B = [0.02, 0.04, 0.03]
    c = compare({0: 0.52, 1: 0.54, 2: 0.53}, {0: 0.50, 1: 0.50, 2: 0.50})
    assert c.seeds == [0, 1, 2] and c.n == 3 and c.dropped == {}
    assert c.diffs == pytest.approx([0.02, 0.04, 0.03], abs=1e-15)
    # mean = 0.09 / 3 = 0.03; deviations -0.01, 0.01, 0 -> sum of squares 0.0002, / (n-1 = 2) -> var 0.0001
    assert c.mean_diff == pytest.approx(0.03)
    assert c.sd_diff == pytest.approx(0.01)
    assert c.se == pytest.approx(0.01 / math.sqrt(3))
    # 95% t interval: 0.03 ± 4.302652729911275 * 0.01 / sqrt(3) = 0.03 ± 0.0248413771175...
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert half == pytest.approx(0.0248413771175, abs=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.03 - half, 0.03 + half), abs=1e-12)
    assert c.ci == pytest.approx((0.005158622882, 0.054841377118), abs=1e-11)
    assert c.ci_method == "t" and c.confidence == 0.95
    assert (c.wins, c.ties, c.losses) == (3, 0, 0)
    assert c.verdict == A_BETTER  # the interval is entirely above zero
    # paired t: t = 0.03 / (0.01/sqrt(3)) = sqrt(27); for df=2 the two-sided p is 1 - t/sqrt(t^2 + 2) = 1 - sqrt(27/29)
    assert c.t_pvalue == pytest.approx(1 - math.sqrt(27 / 29), rel=1e-9)
    # sign test: 3 wins of 3, P(X = 3) = 1/8, two-sided 2/8
    assert c.sign_pvalue == pytest.approx(0.25)
    # Wilcoxon: ranks of |d| 1, 3, 2 all positive, W- = 0; of the 2^3 sign patterns only one has W- = 0 -> 2 * 1/8
    assert c.wilcoxon_pvalue == pytest.approx(0.25) and c.wilcoxon_method == "exact"


def test_the_t_interval_agrees_with_scipys_paired_t_test():
    a, b = [0.61, 0.72, 0.55, 0.80, 0.66], [0.58, 0.70, 0.57, 0.71, 0.60]
    c = compare(dict(enumerate(a)), dict(enumerate(b)))
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert c.ci == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert c.t_pvalue == pytest.approx(ref.pvalue, rel=1e-9)
    # diffs 0.03, 0.02, -0.02, 0.09, 0.06: mean 0.036; half-width t_{0.975,4} * sd / sqrt(5)
    d = [0.03, 0.02, -0.02, 0.09, 0.06]
    m = sum(d) / 5
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / 4)
    assert c.ci == pytest.approx((m - T_975_4 * sd / math.sqrt(5), m + T_975_4 * sd / math.sqrt(5)), abs=1e-12)
    assert (c.wins, c.ties, c.losses) == (4, 0, 1) and c.verdict == UNDECIDED  # lower bound below zero


def test_all_five_seeds_positive_exact_sign_and_wilcoxon_p_is_2_over_32():
    c = compare({s: 0.5 + 0.01 * (s + 1) for s in range(5)}, {s: 0.5 for s in range(5)})  # diffs .01 .. .05
    assert (c.wins, c.ties, c.losses) == (5, 0, 0)
    assert c.sign_pvalue == pytest.approx(2 / 32)  # 2 * (1/2)^5
    assert c.wilcoxon_pvalue == pytest.approx(2 / 32) and c.wilcoxon_method == "exact"  # only + + + + + has W- = 0


def test_one_loss_in_five_by_hand():
    # diffs 0.01, 0.02, 0.03, 0.04, -0.05: the loss has the largest |d| (rank 5), so W- = 5.
    c = compare({0: 0.51, 1: 0.52, 2: 0.53, 3: 0.54, 4: 0.45}, {s: 0.5 for s in range(5)})
    assert (c.wins, c.ties, c.losses) == (4, 0, 1)
    # sign test: P(X <= 1) with X ~ Bin(5, 1/2) = (1 + 5)/32, two-sided 12/32
    assert c.sign_pvalue == pytest.approx(12 / 32)
    # Wilcoxon: subsets of ranks {1..5} summing to <= 5: {}, {1}, {2}, {3}, {4}, {5}, {1,2}, {1,3}, {1,4}, {2,3}
    # = 10 of 32 sign patterns, two-sided 20/32
    assert c.wilcoxon_pvalue == pytest.approx(20 / 32)


def test_sign_test_and_wilcoxon_helpers_directly():
    assert sign_test(0, 0) == 1.0  # nothing but ties: no evidence
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(1, 1) == pytest.approx(1.0)
    assert wilcoxon_test([0.0, 1e-13, -1e-13]) == (1.0, "exact")  # all within the tie tolerance
    p, how = wilcoxon_test([0.01, 0.01, 0.02])  # tied ranks: every sign flip enumerated
    assert how == "permutation"
    # |d| ranks 1.5, 1.5, 3, all positive: W- = 0; of the 8 sign patterns W- = 0 only for + + +, two-sided 2/8
    assert p == pytest.approx(0.25)


def test_identical_methods_are_a_tie_with_a_zero_interval():
    vals = {0: 0.7547, 1: 0.5813, 2: 0.9281}
    c = compare(vals, dict(vals))
    assert c.diffs == [0.0, 0.0, 0.0] and (c.wins, c.ties, c.losses) == (0, 3, 0)
    assert c.ci == (0.0, 0.0) and c.verdict == TIED
    assert c.mean_diff == 0.0 and c.sd_diff == 0.0 and c.se == 0.0
    assert c.sign_pvalue == 1.0 and c.wilcoxon_pvalue == 1.0 and c.t_pvalue == 1.0


def test_float_noise_below_the_tolerance_is_a_tie_not_a_win():
    c = compare({0: 0.75, 1: 0.6}, {0: 0.75 - 1e-13, 1: 0.6 + 1e-13})
    assert (c.wins, c.ties, c.losses) == (0, 2, 0) and c.verdict == TIED


def test_a_partial_tie_counts_as_neither_win_nor_loss():
    c = compare({0: 0.50, 1: 0.52, 2: 0.54}, {0: 0.50, 1: 0.50, 2: 0.50})  # diffs 0, 0.02, 0.04
    assert (c.wins, c.ties, c.losses) == (2, 1, 0)
    assert c.sign_pvalue == pytest.approx(0.5)  # 2 of 2 non-tied seeds: 2 * (1/2)^2
    assert c.wilcoxon_pvalue == pytest.approx(0.5)  # zero dropped; ranks 1, 2 positive: 2 * 1/4
    # mean 0.02, sd 0.02, CI 0.02 ± 4.3027 * 0.02 / sqrt(3) holds zero
    assert c.ci_low == pytest.approx(0.02 - T_975_2 * 0.02 / math.sqrt(3)) and c.verdict == UNDECIDED


def test_one_seed_has_no_interval_and_is_undecided():
    c = compare({0: 0.9}, {0: 0.1})
    assert c.n == 1 and c.mean_diff == pytest.approx(0.8) and (c.wins, c.losses) == (1, 0)
    assert c.ci is None and c.sd_diff is None and c.se is None and c.t_pvalue is None
    assert c.verdict == UNDECIDED
    assert paired_t_interval([0.8]) is None


def test_a_missing_seed_is_dropped_and_reported():
    a = {0: 0.60, 1: 0.70, 2: 0.65, 3: 0.99}
    b = {0: 0.50, 1: 0.62, 2: 0.55, 4: 0.10}
    assert match_seeds(a, b) == ([0, 1, 2], {3: "B missing", 4: "A missing"})
    c = compare(a, b)
    assert c.seeds == [0, 1, 2] and c.n == 3 and c.dropped == {3: "B missing", 4: "A missing"}
    # only seeds 0, 1, 2: diffs 0.10, 0.08, 0.10 -> mean 0.28/3; seed 3's 0.99 never enters
    assert c.mean_diff == pytest.approx(0.28 / 3)
    none = compare({0: 0.5}, {1: 0.5})
    assert none.n == 0 and none.mean_diff is None and none.verdict == UNDECIDED
    assert none.dropped == {0: "B missing", 1: "A missing"}


def test_b_better_is_the_mirror_image():
    a, b = {0: 0.52, 1: 0.54, 2: 0.53}, {0: 0.50, 1: 0.50, 2: 0.50}
    ab, ba = compare(a, b), compare(b, a)
    assert ba.verdict == B_BETTER and (ba.wins, ba.losses) == (0, 3)
    assert ba.ci == pytest.approx((-ab.ci_high, -ab.ci_low))


def test_verdict_helper():
    assert verdict((0.001, 0.2)) == A_BETTER
    assert verdict((-0.2, -0.001)) == B_BETTER
    assert verdict((-0.1, 0.1)) == UNDECIDED
    assert verdict((0.0, 0.1)) == UNDECIDED  # a lower bound of exactly zero has not left zero behind
    assert verdict((0.0, 0.0)) == TIED
    assert verdict(None) == UNDECIDED


def test_constant_nonzero_differences_are_decided():
    c = compare({s: 0.6 + 0.01 * s for s in range(5)}, {s: 0.5 + 0.01 * s for s in range(5)})  # every diff 0.1
    assert c.diffs == [0.1] * 5 and c.sd_diff == 0.0 and c.ci == pytest.approx((0.1, 0.1))
    assert c.verdict == A_BETTER


def test_paired_bootstrap_option():
    a, b = {0: 0.52, 1: 0.54, 2: 0.53, 3: 0.56, 4: 0.51}, {s: 0.50 for s in range(5)}
    c1 = compare(a, b, ci="bootstrap", n_resamples=2000, bootstrap_seed=1)
    c2 = compare(a, b, ci="bootstrap", n_resamples=2000, bootstrap_seed=1)
    assert c1.ci_method == "bootstrap" and c1.ci == c2.ci  # deterministic for a seed
    # a resampled mean of diffs [0.02, 0.04, 0.03, 0.06, 0.01] lies within [0.01, 0.06] and the interval holds the mean
    assert 0.01 - 1e-12 <= c1.ci_low <= c1.mean_diff <= c1.ci_high <= 0.06 + 1e-12
    assert c1.verdict == A_BETTER
    with pytest.raises(ValueError, match="ci must be one of"):
        compare(a, b, ci="jackknife")


def test_seeds_needed_for_a_paired_t_test():
    # Cohen's d = mean/sd = 1: the paired (one-sample) t-test needs n = 10 for 80% power at alpha 0.05
    # (the normal approximation: ((1.95996 + 0.84162) / 1)^2 = 7.85 -> 8, which undercounts)
    assert seeds_needed(0.02, 0.02) == 10
    assert seeds_needed(0.02, 0.02, method="normal") == 8
    # d = 0.5: ((1.95996 + 0.84162) / 0.5)^2 = 31.4 -> 32 (normal); the t-test needs 34
    assert seeds_needed(0.01, 0.02, method="normal") == 32
    assert seeds_needed(0.01, 0.02) == 34
    n = seeds_needed(0.01, 0.02)
    assert paired_t_power(0.01, 0.02, n) >= 0.8 > paired_t_power(0.01, 0.02, n - 1)  # the fewest that suffice
    # monotone: a larger effect needs fewer seeds, more noise / more power / a stricter alpha need more
    by_effect = [seeds_needed(m, 0.02) for m in (0.005, 0.01, 0.02, 0.04, 0.08)]
    assert by_effect == sorted(by_effect, reverse=True) and by_effect[0] > by_effect[-1] >= 2
    assert seeds_needed(0.01, 0.04) > seeds_needed(0.01, 0.02) > seeds_needed(0.01, 0.01)
    assert seeds_needed(0.01, 0.02, power=0.9) > seeds_needed(0.01, 0.02, power=0.8)
    assert seeds_needed(0.01, 0.02, alpha=0.01) > seeds_needed(0.01, 0.02, alpha=0.05)
    assert seeds_needed(-0.02, 0.02) == seeds_needed(0.02, 0.02)  # the sign does not matter (two-sided)
    assert seeds_needed(0.0, 0.02) is None  # no difference: no number of seeds finds one
    assert seeds_needed(0.01, 0.0) == 2  # no spread: two seeds show it
    assert seeds_needed(1e-6, 1.0, max_n=1000) is None
    with pytest.raises(ValueError):
        seeds_needed(0.01, 0.02, alpha=1.5)
    with pytest.raises(ValueError):
        seeds_needed(0.01, -0.02)


def record(value: float, seed: int, *, method: str = "a", k: int = 1, backbone: str = "bb", profile: str = "full",
           created_at: str = "2024-01-01T00:00:00+00:00", config_hash: str | None = None) -> ResultRecord:
    return ResultRecord(cell_id=f"t/{method}/{backbone}/k={k}/seed={seed}", config_hash=config_hash or f"{method}{k}{seed}",
                        task="t", suite="tests", setting="label_shift", method=method, backbone=backbone, k=k,
                        seed=seed, profile=profile, metric="accuracy", value=value, n_support=2, n_test=10,
                        trainable_params=0, head_params=1, timings={}, peak_memory_mb=0.0, device="cpu",
                        versions={}, git_commit=None, lorabench_version="0", created_at=created_at, command="",
                        config={})


def test_records_pair_by_seed_and_keep_the_latest_rerun():
    a = [record(0.52, 0), record(0.54, 1), record(0.53, 2),
         record(0.10, 2, created_at="2023-01-01T00:00:00+00:00", config_hash="a12")]  # older run of seed 2
    b = [record(0.50, s, method="b") for s in (0, 1, 2, 3)]
    assert per_seed(a) == {0: 0.52, 1: 0.54, 2: 0.53}
    c = compare_records(a, b)
    assert c.mean_diff == pytest.approx(0.03) and c.dropped == {3: "A missing"}


def test_records_that_do_not_pair_are_refused():
    with pytest.raises(ValueError, match="share task, profile, backbone and K"):
        compare_records([record(0.5, 0)], [record(0.5, 0, method="b", backbone="other")])
    with pytest.raises(ValueError, match="share task, profile, backbone and K"):
        compare_records([record(0.5, 0)], [record(0.5, 0, method="b", profile="smoke")])
    with pytest.raises(ValueError, match="more than one"):
        per_seed([record(0.5, 0), record(0.5, 1, k=5)])
    with pytest.raises(ValueError, match="different configurations"):
        per_seed([record(0.5, 0), record(0.6, 0, config_hash="other", created_at="2025-01-01T00:00:00+00:00")])


def test_compare_cli_prints_the_paired_numbers_of_real_records(monkeypatch, capsys):
    """`lorabench compare` on the committed full-protocol PACS records: the mean paired difference and the
    t interval it prints are those recomputed here from the per-seed values; a K without records says so."""
    import sys
    from pathlib import Path

    from lorabench import cli
    from lorabench.results import load_results

    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    from lorabench.identity import staleness

    recs, _ = load_results(results)
    val = {(r.method, str(r.k), r.seed): r.value for r in recs
           if r.task == "pacs_art_painting" and r.profile == "full" and staleness(r) is None}  # current records only
    seeds = sorted({s for m, k, s in val if (m, k) == ("learned_composition", "1")}
                   & {s for m, k, s in val if (m, k) == ("uniform_composition", "1")})
    assert len(seeds) >= 3
    diffs = np.array([val[("learned_composition", "1", s)] - val[("uniform_composition", "1", s)] for s in seeds])
    half = sps.t.ppf(0.975, len(seeds) - 1) * diffs.std(ddof=1) / np.sqrt(len(seeds))
    monkeypatch.setattr(sys, "argv", ["lorabench", "compare", "learned_composition", "uniform_composition", "-t",
                                      "pacs_art_painting", "--k", "1,50", "--results-dir", str(results)])
    cli.main()
    out = " ".join(capsys.readouterr().out.split())
    assert f"{100 * diffs.mean():+.2f}" in out
    assert f"[{100 * (diffs.mean() - half):+.2f}, {100 * (diffs.mean() + half):+.2f}]" in out
    assert "no current records" in out  # K = 50 was not run


# --- pooling strata (random-effects meta-analysis) --------------------------------------------------


def _by_hand(y, v):
    """Paule-Mandel τ² (the root of the generalised Q = k - 1, 0 if Q(0) <= k - 1), the random-effects mean and the
    modified Hartung-Knapp-Sidik-Jonkman interval on t(k - 1), written out from their definitions."""
    from scipy.optimize import brentq
    y, v = np.asarray(y, float), np.asarray(v, float)
    k = len(y)

    def q(tau2):
        w = 1 / (v + tau2)
        return float((w * (y - (w * y).sum() / w.sum()) ** 2).sum())

    tau2 = 0.0 if q(0.0) <= k - 1 else brentq(lambda t: q(t) - (k - 1), 0.0, 1.0, xtol=1e-14)
    w = 1 / (v + tau2)
    mean = float((w * y).sum() / w.sum())
    se = max(math.sqrt(float((w * (y - mean) ** 2).sum()) / ((k - 1) * w.sum())), math.sqrt(1 / w.sum()))
    half = sps.t.ppf(0.975, k - 1) * se
    return tau2, mean, mean - half, mean + half, list(w / w.sum())


def test_pooling_three_strata_matches_the_definitions_by_hand():
    from lorabench.stats import pool_effects
    y, v = [0.010, 0.020, -0.005], [1e-5, 4e-5, 2e-5]  # three (task, K) strata: mean differences and SE²
    p = pool_effects(y, v)
    tau2, mean, lo, hi, weights = _by_hand(y, v)
    assert p.k == 3 and p.tau2 == pytest.approx(tau2, rel=1e-6) and p.mean == pytest.approx(mean, rel=1e-6)
    assert (p.ci_low, p.ci_high) == (pytest.approx(lo, rel=1e-6), pytest.approx(hi, rel=1e-6))
    assert p.weights == pytest.approx(weights, rel=1e-6)
    w = [1 / x for x in v]  # Cochran's Q with fixed-effect weights, and I² = (Q - df) / Q
    fe = sum(a * b for a, b in zip(w, y)) / sum(w)
    q = sum(a * (b - fe) ** 2 for a, b in zip(w, y))
    assert p.i2 == pytest.approx((q - 2) / q) and p.q_pvalue == pytest.approx(sps.chi2.sf(q, 2))


def test_homogeneous_strata_pool_to_the_fixed_effect_and_the_interval_does_not_shrink_below_it():
    from lorabench.stats import pool_effects
    y, v = [0.010, 0.011, 0.0105], [4e-6, 4e-6, 4e-6]  # closer together than their noise: Q < df, τ² = 0
    p = pool_effects(y, v)
    assert p.tau2 == 0 and p.i2 == 0 and p.mean == pytest.approx(sum(y) / 3)
    fixed_se = math.sqrt(1 / sum(1 / x for x in v))
    assert p.se == pytest.approx(fixed_se)  # the modified HKSJ: never below the plain random-effects SE
    assert p.ci_high - p.ci_low == pytest.approx(2 * sps.t.ppf(0.975, 2) * fixed_se)


def test_strata_that_disagree_widen_the_pooled_interval_instead_of_averaging_it_away():
    """+5 points on two tasks, -5 on two others, each stratum precise: the pool must not call a winner, and its
    interval must be wider than any stratum's own and than the fixed-effect one."""
    from lorabench.stats import pool_effects
    y, v = [0.05, 0.052, -0.05, -0.048], [1e-5] * 4
    p = pool_effects(y, v)
    stratum_half = 1.96 * math.sqrt(1e-5)
    fixed_half = 1.96 * math.sqrt(1e-5 / 4)
    assert p.ci_low < 0 < p.ci_high and (p.ci_high - p.ci_low) / 2 > 10 * stratum_half > 10 * fixed_half
    assert p.i2 > 0.95 and p.tau2 == pytest.approx(_by_hand(y, v)[0], rel=1e-6)
    agree = pool_effects([0.05, 0.052, 0.05, 0.048], v)  # the same precision, agreeing: decided, narrow
    assert agree.ci_low > 0 and agree.ci_high - agree.ci_low < (p.ci_high - p.ci_low) / 10


def test_pooling_needs_two_strata():
    from lorabench.stats import pool_effects
    with pytest.raises(ValueError, match="at least 2 strata"):
        pool_effects([0.1], [1e-4])
