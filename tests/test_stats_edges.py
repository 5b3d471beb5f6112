"""Edge cases of the statistics that the fixture-based tests leave open (a mutation audit
of report/effects.py, sequential.py, boundaries.py and power.py): each test plants a
small data set or a boundary condition and checks the number against an independent
computation (statsmodels' formula API, scipy, a hand formula or a simulation), never
against the implementation's own earlier output.

Found by mutating the statistics code one operator at a time (comparisons, arithmetic,
constants, and/or, min/max, argument order): each test here fails on at least one mutant
that the targeted existing tests (test_report_effects, test_report_sequential,
test_stats_audit, test_report_pinned) let pass."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from ablate.config import AnalysisSpec, SeedPolicy
from ablate.report import effects, power, sequential
from ablate.report.results import Comparison, ExperimentMeta

FID = "best.classifier.fid"


def _ols(y, variants, seeds, on, off):
    """Estimate, se and residual df of ``on - off`` in ``y ~ variant + seed`` (statsmodels)."""
    d = pd.DataFrame({"y": y, "variant": variants, "seed": seeds})
    fit = smf.ols("y ~ 0 + C(variant) + C(seed)", data=d).fit()
    names = list(fit.params.index)
    L = np.zeros(len(names))
    L[names.index(f"C(variant)[{on}]")], L[names.index(f"C(variant)[{off}]")] = 1, -1
    t = fit.t_test(L)
    return float(t.effect[0]), float(t.sd[0][0]), int(fit.df_resid), math.sqrt(fit.scale)


def _grid(n_variants: int, n_seeds: int, rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    names = np.array([f"v{i}" for i in range(n_variants)])
    v = np.repeat(names, n_seeds)
    s = np.tile(np.arange(n_seeds), n_variants)
    y = rng.normal(0, 0.1, len(v)) + 0.7 * s  # a large seed effect: the blocks must be in the model
    return v, s, y


# --------------------------------------------------------------------------------------
# The pooled model at its smallest sizes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_variants, n_seeds", [(3, 2), (2, 2), (4, 3)])
def test_small_grids_match_statsmodels_ols(n_variants, n_seeds):
    """Two seeds (one seed-block column: a ``ns > 2`` guard would drop it) and 2 variants x
    2 seeds (one residual df: a ``df > 1`` guard would give NaN se and sigma)."""
    v, s, y = _grid(n_variants, n_seeds)
    comps = [Comparison("h", "v1", "v0")]
    fit = effects.fit_arrays(FID, True, v, s, y, comps)
    est, se, df, sigma = _ols(y, v, s, "v1", "v0")
    c = fit.contrast("h")
    assert fit.df_resid == c.df == df == n_variants * n_seeds - n_variants - n_seeds + 1
    assert c.estimate == pytest.approx(est, abs=1e-10) and c.se == pytest.approx(se, rel=1e-9)
    assert fit.sigma == pytest.approx(sigma, rel=1e-9)
    assert c.p == pytest.approx(2 * stats.t.sf(abs(est / se), df), rel=1e-9)
    d = pd.DataFrame({"y": y, "variant": v, "seed": s})
    ref = smf.ols("y ~ 0 + C(variant) + C(seed)", data=d).fit()
    L = np.zeros(len(ref.params))
    L[list(ref.params.index).index("C(variant)[v1]")], L[list(ref.params.index).index("C(variant)[v0]")] = 1, -1
    assert c.interval(0.05) == pytest.approx(tuple(ref.t_test(L).conf_int(alpha=0.05)[0]), rel=1e-9)


def test_a_contrast_with_zero_se_has_no_t_p_or_interval():
    """An exact fit (se 0) is not infinitely significant: t, p and the interval are NaN."""
    c = effects.ContrastFit("h", "on", "off", 0.3, 0.0, 5, 3, 3, ())
    assert math.isnan(c.t) and math.isnan(c.p) and all(map(math.isnan, c.interval(0.05)))
    c = effects.ContrastFit("h", "on", "off", 0.3, 0.1, 0, 3, 3, ())
    assert math.isnan(c.p) and all(map(math.isnan, c.interval(0.05)))
    c = effects.ContrastFit("h", "on", "off", -0.3, 0.1, 7, 3, 3, ())
    assert c.p == pytest.approx(2 * stats.t.cdf(-3.0, 7)) and c.interval(0.1) == pytest.approx(
        (-0.3 - stats.t.ppf(0.95, 7) * 0.1, -0.3 + stats.t.ppf(0.95, 7) * 0.1))


def test_a_variant_without_runs_is_not_estimable_and_counts_zero_runs():
    v, s, y = _grid(3, 3)
    fit = effects.fit_arrays(FID, True, v, s, y, [Comparison("gone", "v9", "v0"), Comparison("gone2", "v0", "v9")])
    for c in fit.contrasts:
        assert math.isnan(c.estimate) and math.isnan(c.se) and c.seeds == ()
    assert (fit.contrast("gone").n_on, fit.contrast("gone").n_off) == (0, 3)
    assert (fit.contrast("gone2").n_on, fit.contrast("gone2").n_off) == (3, 0)


def test_common_seeds_are_the_intersection_and_balance_sees_single_runs():
    """``seeds`` of a contrast: the seeds both variants have (not either). ``balanced``: a
    variant with one run (seed 0 only) unbalances the grid like any other."""
    v, s, y = _grid(3, 4)
    keep = ~((v == "v1") & (s >= 2)) & ~((v == "v0") & (s == 0))  # v1: seeds 0,1; v0: 1,2,3
    fit = effects.fit_arrays(FID, True, v[keep], s[keep], y[keep], [Comparison("h", "v1", "v0")])
    assert fit.contrast("h").seeds == (1,) and not fit.balanced
    est, se, df, _ = _ols(y[keep], v[keep], s[keep], "v1", "v0")
    assert fit.contrast("h").estimate == pytest.approx(est, abs=1e-10) and fit.contrast("h").se == pytest.approx(se)
    one = ~((v == "v2") & (s > 0))  # v2 has only seed 0
    assert not effects.fit_arrays(FID, True, v[one], s[one], y[one], []).balanced
    assert effects.fit_arrays(FID, True, v, s, y, []).balanced


def test_unused_variant_codes_do_not_unbalance_the_fit():
    """The sequential looks fit on integer codes of every variant, some with no runs kept at
    a look: those are absent, not unbalanced; and a coded fit imputes no run by default."""
    v, s, y = _grid(3, 3)
    vnames, vidx = np.unique(np.append(v, "zz"), return_inverse=True)
    snames, sidx = np.unique(s, return_inverse=True)
    fit = effects.fit_coded(FID, True, vnames, vidx[:-1], snames, sidx, y, [Comparison("h", "v1", "v0")])
    assert fit.balanced and fit.n_variants == 3 and fit.diverged_imputed == 0
    est, se, _, _ = _ols(y, v, s, "v1", "v0")
    assert fit.contrast("h").estimate == pytest.approx(est, abs=1e-10)


def test_brown_forsythe_with_two_groups_of_three_and_a_constant_group_left_out():
    """Two variants x 3 seeds is enough for the test (groups of 3 count); a group whose
    residuals are all equal is left out; one usable group is not a test (NaN)."""
    v, s, y = _grid(2, 3, rng_seed=1)
    fit = effects.fit_arrays(FID, True, v, s, y, [])
    groups = [fit.residuals[fit.residual_variants == g] for g in ("v0", "v1")]
    assert fit.levene_p() == pytest.approx(stats.levene(*groups, center="median").pvalue, rel=1e-12)
    a, b = np.array([0.1, -0.2, 0.1, 0.0]), np.array([0.3, -0.1, -0.2])
    r = np.concatenate([a, b, np.zeros(3)])
    names = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 3)
    manual = dataclasses.replace(fit, residuals=r, residual_variants=names)
    assert manual.levene_p() == pytest.approx(stats.levene(a, b, center="median").pvalue, rel=1e-12)
    single = dataclasses.replace(fit, residuals=np.concatenate([a, b[:2], np.zeros(3)]),
                                 residual_variants=np.array(["a"] * 4 + ["b"] * 2 + ["c"] * 3))
    assert math.isnan(single.levene_p())


def test_residual_shares_and_shapiro_by_hand():
    """Shares: each variant's sum of squared residuals over the total, largest first (none
    when the fit is exact). Shapiro-Wilk from 3 residuals; NaN for 2 or constant ones."""
    v, s, y = _grid(3, 3, rng_seed=2)
    fit = effects.fit_arrays(FID, True, v, s, y, [])
    ss = {g: float(np.sum(fit.residuals[fit.residual_variants == g] ** 2)) for g in ("v0", "v1", "v2")}
    want = sorted(((x / sum(ss.values()), g) for g, x in ss.items()), reverse=True)
    shares = fit.residual_shares()
    assert list(shares.index) == [g for _, g in want]
    assert shares.to_numpy() == pytest.approx([x for x, _ in want], rel=1e-12)
    exact = dataclasses.replace(fit, residuals=np.zeros(9))
    assert exact.residual_shares().empty
    r3 = np.array([0.2, -0.05, -0.15])
    three = dataclasses.replace(fit, residuals=r3, residual_variants=np.array(["a", "b", "c"]))
    assert three.shapiro_p() == pytest.approx(stats.shapiro(r3).pvalue, rel=1e-12)
    assert math.isnan(dataclasses.replace(fit, residuals=r3[:2]).shapiro_p())
    assert math.isnan(dataclasses.replace(fit, residuals=np.full(5, 0.1)).shapiro_p())
    assert math.isnan(dataclasses.replace(fit, residuals=np.full(5, 1.0)).shapiro_p())


# --------------------------------------------------------------------------------------
# model_data: the scale and the runs that enter
# --------------------------------------------------------------------------------------
def _frame(fid: list[float], status: list[str] | None = None) -> pd.DataFrame:
    n = len(fid)
    v = [f"v{i % 2}" for i in range(n)]
    return pd.DataFrame({"variant": v, "seed": [i // 2 for i in range(n)], "status": status or ["done"] * n,
                         FID: fid})


def test_a_zero_value_keeps_a_log_metric_on_the_raw_scale():
    """log is used only when every finished value is positive: one FID of exactly 0 keeps
    the metric raw with every run, and forcing log drops the zero (log 0 = -inf)."""
    fid = [10.0, 12.0, 0.0, 11.0, 9.0, 13.0]
    data, log, _ = effects.model_data(_frame(fid), FID)
    assert not log and len(data) == 6 and data["y"].tolist() == fid
    data, log, _ = effects.model_data(_frame(fid), FID, log=True)
    assert log and len(data) == 5 and np.isfinite(data["y"]).all()
    assert data["y"].tolist() == pytest.approx(np.log([10.0, 12.0, 11.0, 9.0, 13.0]).tolist())


def test_diverged_runs_are_left_out_unless_the_worst_value_rule_is_asked_for():
    """The default (``exclude``) is what the sequential verdicts use (they call model_data
    without the rule): no run imputed, the diverged run absent."""
    fid = [10.0, 12.0, 11.0, 14.0, 9.0, float("nan")]
    frame = _frame(fid, ["done"] * 5 + ["diverged"])
    data, log, imputed = effects.model_data(frame, FID)
    assert imputed == 0 and len(data) == 5 and log
    fit = effects.fit_pooled(frame, [Comparison("h", "v1", "v0")], FID)
    assert fit.diverged_imputed == 0 and fit.n_runs == 5
    data, _, imputed = effects.model_data(frame, FID, diverged="worst")
    assert imputed == 1 and data["y"].iloc[-1] == pytest.approx(math.log(14.0))  # largest FID: worst


def test_n_variants_counts_variants_with_runs():
    v, s, y = _grid(3, 3)
    one = ~((v == "v2") & (s > 0))  # v2: one run
    fit = effects.fit_arrays(FID, True, v[one], s[one], y[one], [])
    assert fit.n_variants == 3 and fit.n_seeds == 3 and fit.n_runs == 7


# --------------------------------------------------------------------------------------
# The paired sensitivity test and its bootstrap
# --------------------------------------------------------------------------------------
def _pairs(on: list[float], off: list[float]) -> pd.DataFrame:
    n = len(on)
    return pd.DataFrame({"variant": ["a"] * n + ["b"] * n, "seed": list(range(n)) * 2,
                         "status": ["done"] * (2 * n), FID: on + off})


def test_paired_test_on_the_raw_scale_by_hand():
    on, off = [1.0, 2.5, 2.0, 4.0], [1.5, 1.0, 1.2, 2.0]
    out = effects.paired_test(_pairs(on, off), Comparison("h", "a", "b"), FID, log=False)
    d = np.subtract(on, off)
    t = stats.ttest_rel(on, off)
    h = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert out["paired_mean"] == pytest.approx(d.mean()) and out["paired_sd"] == pytest.approx(d.std(ddof=1))
    assert out["paired_p"] == pytest.approx(t.pvalue) and out["pairs"] == 4
    assert (out["paired_low"], out["paired_high"]) == pytest.approx((d.mean() - h, d.mean() + h))


def test_paired_test_log_scale_only_when_asked_and_every_value_is_positive():
    """One pair on the log scale: the log ratio (no sd, no p). A non-positive OFF value
    falls back to the raw difference for every pair."""
    one = effects.paired_test(_pairs([20.0], [10.0]), Comparison("h", "a", "b"), FID, log=True)
    assert one["paired_mean"] == pytest.approx(math.log(2.0)) and math.isnan(one["paired_p"])
    small = effects.paired_test(_pairs([0.02, 0.03], [0.01, 0.02]), Comparison("h", "a", "b"), FID, log=True)
    assert small["paired_mean"] == pytest.approx(np.mean(np.log([2.0, 1.5])))  # KID-sized values: still log
    on, off = [20.0, 30.0, 25.0], [10.0, 0.0, 12.0]
    out = effects.paired_test(_pairs(on, off), Comparison("h", "a", "b"), FID, log=True)
    assert out["paired_mean"] == pytest.approx(np.mean(np.subtract(on, off)))
    assert out["paired_p"] == pytest.approx(stats.ttest_rel(on, off).pvalue)
    out = effects.paired_test(_pairs(off, on), Comparison("h", "a", "b"), FID, log=True)  # the zero ON
    assert out["paired_mean"] == pytest.approx(np.mean(np.subtract(off, on)))


def test_two_pairs_are_enough_for_the_paired_t_test():
    on, off = [20.0, 30.0], [10.0, 12.0]
    out = effects.paired_test(_pairs(on, off), Comparison("h", "a", "b"), FID, log=True)
    d = np.log(on) - np.log(off)
    assert out["paired_sd"] == pytest.approx(d.std(ddof=1))
    assert out["paired_p"] == pytest.approx(stats.ttest_rel(np.log(on), np.log(off)).pvalue)


def test_paired_test_with_identical_differences_has_no_test():
    """Every pair differs by the same amount: sd 0, so no t, p or d_z (not a division by 0)."""
    out = effects.paired_test(_pairs([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]), Comparison("h", "a", "b"), FID, log=False)
    assert out["paired_mean"] == pytest.approx(2.0) and out["paired_sd"] == 0
    assert all(math.isnan(out[k]) for k in ("paired_p", "paired_dz", "paired_low", "paired_high"))


def test_bootstrap_is_bca_from_exactly_ten_pairs():
    """The interval is scipy's BCa (not the percentile interval, which differs on skewed
    differences) with the report's seed; 10 pairs are enough, 9 are not; constant
    differences give the degenerate interval [d, d]."""
    d = np.random.default_rng(4).lognormal(0, 1, 10)
    lo, hi = effects.bootstrap_ci(d)
    ref = stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=9999, method="BCa",
                          rng=np.random.default_rng(0)).confidence_interval
    pct = stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=9999, method="percentile",
                          rng=np.random.default_rng(0)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert abs(pct.low - ref.low) > 1e-3  # the check above tells BCa from the percentile method
    assert math.isnan(effects.bootstrap_ci(d[:9])[0])
    assert effects.bootstrap_ci(np.full(12, 0.25)) == (0.25, 0.25)


# --------------------------------------------------------------------------------------
# Power: every number of the pooled and the paired rows
# --------------------------------------------------------------------------------------
def _fit_with(ses, runs, df, scale="log"):
    cs = tuple(effects.ContrastFit(f"h{i}", "on", "off", 0.0, se, df, n_on, n_off, ())
               for i, (se, (n_on, n_off)) in enumerate(zip(ses, runs)))
    return effects.PooledFit(FID, scale, 30, 5, 6, df, 0.1, True, cs)


def test_pooled_power_equivalence_numbers_against_a_simulation_and_the_normal_formula():
    """se and seeds: medians over the estimable contrasts (the NaN one left out). The
    equivalence power: simulated TOSTs at zero effect at alpha/m. The seeds for 80%: the
    smallest n whose se (∝ 1/√n) gives large-sample TOST power 2Φ(margin/se − z) − 1 ≥ 0.8."""
    ses, runs, df, m = [0.02, 0.035, 0.024, math.nan], [(3, 4), (6, 6), (4, 5), (2, 2)], 20, 4
    margin, alpha = math.log(1.1), 0.05
    out = power.pooled_power(_fit_with(ses, runs, df), AnalysisSpec(alpha=alpha), margin, m)
    assert out["se"] == pytest.approx(0.024) and out["seeds"] == 4 and out["df"] == df and out["tests"] == m
    assert out["alpha_first_step"] == pytest.approx(alpha / m)
    mde = 0.024 * (stats.t.isf(alpha / (2 * m), df) + stats.t.ppf(0.8, df))
    assert out["mde"] == pytest.approx(mde)
    assert (out["decrease_pct"], out["increase_pct"]) == pytest.approx((100 * math.expm1(-mde), 100 * math.expm1(mde)))
    rng = np.random.default_rng(2)
    est = rng.normal(0, 0.024, 400_000)
    s_hat = 0.024 * np.sqrt(rng.chisquare(df, 400_000) / df)
    crit = stats.t.isf(alpha / m, df)
    simulated = np.mean(np.abs(est) <= margin - crit * s_hat)
    assert 0.5 < simulated < 0.9 and out["equivalence_power"] == pytest.approx(simulated, abs=0.004)

    def large_sample(n):
        return 2 * stats.norm.cdf(margin / (0.024 * math.sqrt(4 / n)) - stats.norm.isf(alpha / m)) - 1

    n = out["seeds_for_equivalence"]
    assert large_sample(n) >= 0.8 > large_sample(n - 1)
    # A noisier fit with more seeds, where the rounding up cannot hide a wrong quantile.
    out = power.pooled_power(_fit_with([0.05], [(10, 12)], df), AnalysisSpec(alpha=alpha), margin, m)
    n = out["seeds_for_equivalence"]
    big = [2 * stats.norm.cdf(margin / (0.05 * math.sqrt(10 / k)) - stats.norm.isf(alpha / m)) - 1 for k in (n - 1, n)]
    assert n > 20 and big[1] >= 0.8 > big[0]


def test_tost_power_at_zero_with_one_residual_degree_of_freedom():
    se, crit, margin = 1.0, stats.t.isf(0.05, 1), 5.0
    rng = np.random.default_rng(6)
    est = rng.normal(0.0, se, 400_000)
    s_hat = se * np.sqrt(rng.chisquare(1, 400_000))
    simulated = np.mean(np.abs(est) <= margin - crit * s_hat)
    assert 0.3 < simulated < 0.9
    assert power.tost_power_at_zero(margin, se, 1, crit) == pytest.approx(simulated, abs=0.004)


def test_pooled_power_edge_cases():
    fit = _fit_with([0.05, 0.06], [(3, 3), (3, 3)], 10, scale="raw")
    out = power.pooled_power(fit, AnalysisSpec(), math.nan, 0)  # m = 0 counts as one test
    assert out["tests"] == 1 and out["alpha_first_step"] == pytest.approx(0.05)
    assert math.isnan(out["equivalence_power"]) and math.isnan(out["seeds_for_equivalence"])
    assert "decrease_pct" not in out  # a raw-scale metric has no ratio
    assert power.pooled_power(_fit_with([0.05], [(3, 3)], 0), AnalysisSpec(), 0.1, 2) == {}
    assert power.pooled_power(_fit_with([0.05], [(3, 3)], 1), AnalysisSpec(), 0.1, 2)["df"] == 1
    assert power.pooled_power(_fit_with([math.nan], [(3, 3)], 5), AnalysisSpec(), 0.1, 2) == {}
    assert power.tost_power_at_zero(0.0, 1.0, 5, 2.0) == power.tost_power_at_zero(0.1, 1.0, 0, 2.0) == 0.0


def test_paired_power_pools_the_sd_over_the_pairs_and_has_80_percent_power():
    """Variants with fewer than 2 pairs or no sd are left out; the pairs are their median
    (rounded down), the sd is pooled on its degrees of freedom (k - 1); the smallest d_z is
    detected with 80% power at alpha/m (simulated), alpha itself for one test or none."""
    pairs_sd = [(3, 0.1), (2, 0.3), (8, 0.15), (4, 0.2), (1, 0.5), (4, math.nan)]
    alpha = 0.05
    sd = math.sqrt((2 * 0.1 ** 2 + 1 * 0.3 ** 2 + 7 * 0.15 ** 2 + 3 * 0.2 ** 2) / 13)

    def simulated_power(d, n, level):
        x = np.random.default_rng(3).normal(d, 1.0, size=(100_000, n))
        t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
        return np.mean(np.abs(t) > stats.t.isf(level / 2, n - 1))

    for m in (4, 1):
        out = power.paired_power(pairs_sd, "log", alpha, m)
        assert out["pairs"] == 3 and out["sd"] == pytest.approx(sd) and out["scale"] == "log"
        d = out["d_z_min"]
        assert out["mde"] == pytest.approx(d * sd)
        assert (out["decrease_pct"], out["increase_pct"]) == pytest.approx((100 * math.expm1(-d * sd),
                                                                            100 * math.expm1(d * sd)))
        assert simulated_power(d, 3, alpha / m) == pytest.approx(0.8, abs=0.006)
    assert power.paired_power(pairs_sd, "log", alpha, 0) == power.paired_power(pairs_sd, "log", alpha, 1)
    assert "decrease_pct" not in power.paired_power(pairs_sd, "raw", alpha, 4)
    assert power.paired_power([(1, 0.3), (5, math.nan)], "log", alpha, 4) == {}
    d2 = power.min_detectable_d(2, alpha)  # two pairs: one df, still a finite effect
    assert math.isfinite(d2) and simulated_power(d2, 2, alpha) == pytest.approx(0.8, abs=0.006)


@pytest.mark.parametrize("d, n, alpha", [(-1.2, 6, 0.05), (0.9, 10, 0.0125), (0.0, 4, 0.05)])
def test_paired_t_power_counts_both_tails(d, n, alpha):
    x = np.random.default_rng(5).normal(d, 1.0, size=(100_000, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    simulated = np.mean(np.abs(t) > stats.t.isf(alpha / 2, n - 1))
    assert power.paired_t_power(d, n, alpha) == pytest.approx(simulated, abs=0.006)
    assert power.min_detectable_d(1, alpha) == math.inf


# --------------------------------------------------------------------------------------
# Verdicts on the raw scale, for a higher-is-better metric and for one with a negative mean
# --------------------------------------------------------------------------------------
def _meta(comparisons, variants, alpha=0.05, sesoi=0.10):
    return ExperimentMeta("x", "fake", "leave-one-out", tuple(c.hack for c in comparisons),
                          tuple((v, ()) for v in variants), tuple(comparisons), (0, 1, 2, 3, 4, 5),
                          AnalysisSpec(sesoi=sesoi, alpha=alpha))


def _holm_by_hand(p: dict[str, float], alpha: float) -> tuple[set[str], dict[str, float]]:
    """Holm in its graphical form (the module docstring): every hypothesis not yet rejected
    is tested at alpha / (number not rejected); the rejected pass their level on and the
    rest are tested again. Returns the rejected and the level each was last tested at."""
    active, rejected, levels = set(p), set(), {}
    while active:
        level = alpha / len(active)
        levels.update({h: level for h in active})
        new = {h for h in active if p[h] <= level}
        if not new:
            break
        rejected |= new
        active -= new
    return rejected, levels


@pytest.mark.parametrize("metric, centre, effect", [
    ("best.classifier.recall", 0.5, {"a": 0.06, "b": -0.06, "c": 0.0}),  # higher is better
    ("best.classifier.kid_mean", -0.4, {"a": -0.06, "b": 0.06, "c": 0.0}),  # lower is better, negative: raw
])
def test_fixed_design_verdicts_on_the_raw_scale_by_hand(metric, centre, effect):
    """One look: a hack *helps* when the Holm-adjusted t-test rejects and its effect goes the
    metric's good way (up for recall, down for KID), *equivalent* when the TOST rejects at
    the margin SESOI x |mean|. Estimates and se: statsmodels; levels: Holm by hand."""
    rng = np.random.default_rng(11)
    comps = [Comparison(h, "all", f"-{h}") for h in effect]
    variants = ["all"] + [f"-{h}" for h in effect]
    v = np.repeat(variants, 6)
    s = np.tile(np.arange(6), len(variants))
    mu = {"all": 0.0, **{f"-{h}": -e for h, e in effect.items()}}
    y = centre + np.array([mu[x] for x in v]) + 0.01 * s + rng.normal(0, 0.004, len(v))
    a = sequential.decide_arrays(v, s, y, _meta(comps, variants), SeedPolicy(seeds=tuple(range(6))),
                                 AnalysisSpec(), metric, log=False)
    margin = 0.10 * abs(y.mean())
    assert a.scale == "raw" and a.margin == pytest.approx(margin, rel=1e-12)
    ols = {c.hack: _ols(y, v, s, c.on, c.off)[:3] for c in comps}
    p_d = {h: 2 * stats.t.sf(abs(e / se), df) for h, (e, se, df) in ols.items()}
    p_e = {h: max(stats.t.sf((e + margin) / se, df), stats.t.sf((margin - e) / se, df))
           for h, (e, se, df) in ols.items()}
    diff, lev_d = _holm_by_hand(p_d, 0.05)
    equiv, lev_e = _holm_by_hand(p_e, 0.05)
    assert diff == {"a", "b"} and equiv == {"c"}  # the planted data separate the three verdicts
    got = {d.hack: d for d in a.decisions}
    assert {h: d.verdict for h, d in got.items()} == {"a": "helps", "b": "hurts", "c": "equivalent"}
    for h, (e, se, df) in ols.items():
        d = got[h]
        assert d.estimate == pytest.approx(e, abs=1e-12) and d.se == pytest.approx(se, rel=1e-9) and d.df == df
        assert d.level == pytest.approx(lev_d[h]) and d.eq_level == pytest.approx(lev_e[h])
        hd, he = stats.t.isf(lev_d[h] / 2, df) * se, stats.t.isf(lev_e[h], df) * se
        assert (d.ci_low, d.ci_high) == pytest.approx((e - hd, e + hd), rel=1e-9, abs=1e-12)
        assert (d.eq_low, d.eq_high) == pytest.approx((e - he, e + he), rel=1e-9, abs=1e-12)
        assert d.look == 1 and not d.also_different


# --------------------------------------------------------------------------------------
# Boundaries: a first look that spends nothing
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("two_sided", [True, False])
def test_a_look_that_spends_nothing_leaves_the_final_boundary_of_a_single_look(two_sided):
    """At 1% information the O'Brien-Fleming-type function spends ~1e-85: the first
    boundary is infinite, nothing is removed, and the last look is the fixed-sample test
    (z_{1-level/2} two-sided, z_{1-level} one-sided) up to the numerical integration."""
    c = sequential.boundaries(0.05, (0.01, 1.0), two_sided)
    assert c[0] == math.inf
    assert c[1] == pytest.approx(stats.norm.isf(0.025 if two_sided else 0.05), abs=1e-6)


def test_one_sided_boundaries_over_five_looks_spend_the_planned_alpha():
    """The continuation region of a one-sided design is not symmetric, so the density carried
    from look to look must be that of S_k (not of -S_k): at level 0.2 over 5 looks a wrong
    sign is 4e-3 off by look 4. Independent: scipy's multivariate normal of the Z_k."""
    t = (0.2, 0.4, 0.6, 0.8, 1.0)
    c = sequential.boundaries(0.2, t, False)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in (3, 4):
        mvn = stats.multivariate_normal(np.zeros(k), cov[:k, :k], maxpts=200_000 * k, abseps=1e-7)
        stay = mvn.cdf(np.array(c[:k]), lower_limit=np.full(k, -np.inf), rng=np.random.default_rng(0))
        assert 1 - stay == pytest.approx(sequential.spent(t[k - 1], 0.2), abs=1e-5)


def test_t_to_z_at_one_degree_of_freedom_and_at_the_limits():
    z = sequential.z_of_t(3.0, 1)
    assert z == pytest.approx(stats.norm.isf(stats.t.sf(3.0, 1)), rel=1e-12)
    assert sequential.t_of_z(z, 1) == pytest.approx(3.0, rel=1e-9)
    assert math.isnan(sequential.z_of_t(math.inf, 5)) and math.isnan(sequential.z_of_t(2.0, 0))
    assert math.isnan(sequential.z_of_t(math.nan, 5))
    assert sequential.t_of_z(math.inf, 5) == math.inf


# --------------------------------------------------------------------------------------
# An adaptive design, replayed look by look from the procedure's description
# --------------------------------------------------------------------------------------
def _two_look_bounds(level: float, t1: float, two_sided: bool) -> tuple[float, float]:
    """O'Brien-Fleming-type spending at information (t1, 1), solved with scipy's bivariate
    normal: per side ``level/2`` (two-sided) or ``level``; P(cross at 1) = spent(t1),
    P(continue at 1, cross at 2) = spent(1) - spent(t1)."""
    a = level / 2 if two_sided else level

    def spent(t):
        return 2 * stats.norm.sf(stats.norm.isf(a / 2) / math.sqrt(t))

    c1 = stats.norm.isf(spent(t1))
    lo1 = -c1 if two_sided else -np.inf
    mvn = stats.multivariate_normal([0, 0], [[1, math.sqrt(t1)], [math.sqrt(t1), 1]])

    def excess(c2):
        cont = stats.norm.cdf(c1) - stats.norm.cdf(lo1)
        below = mvn.cdf([c1, c2], lower_limit=[lo1, -np.inf])
        return cont - below - (spent(1.0) - spent(t1))

    from scipy.optimize import brentq
    return c1, brentq(excess, 0.5, 8.0, xtol=1e-12)


def test_adaptive_two_looks_replayed_by_hand():
    """Looks at 3 and 6 seeds. Look 1 fits seeds 0-2 of every variant; a hack decided there
    keeps its OFF variant at 3 seeds and the others go on to 6. At each look, Holm's
    graphical procedure per family at the look's spending boundary, the t statistic mapped
    to z by its p value; the intervals are the boundary's t quantile times the se."""
    rng = np.random.default_rng(21)
    effect = {"a": 0.5, "b": 0.09, "c": 0.0}
    variants = ["all", "-a", "-b", "-c"]
    comps = [Comparison(h, "all", f"-{h}") for h in effect]
    mu = {"all": 0.0, **{f"-{h}": -e for h, e in effect.items()}}
    v = np.repeat(variants, 6)
    s = np.tile(np.arange(6), 4)
    y = np.log(40) + np.array([mu[x] for x in v]) + 0.03 * s + rng.normal(0, 0.03, len(v))
    policy = SeedPolicy(seeds=tuple(range(6)), adaptive=True, min=3, max=6, step=3)
    a = sequential.decide_arrays(v, s, y, _meta(comps, variants), policy, AnalysisSpec(), FID, log=True)

    alpha, margin, fractions = 0.05, math.log(1.1), (0.5, 1.0)
    alloc = {x: 3 for x in variants}
    active = {"d": set(effect), "e": set(effect)}
    decided: dict[str, tuple] = {}
    for look in (1, 2):
        keep = s < np.array([alloc[x] for x in v])
        ols = {c.hack: _ols(y[keep], v[keep], s[keep], c.on, c.off)[:3] for c in comps}

        def z(t, df):
            return math.copysign(stats.norm.isf(stats.t.sf(abs(t), df)), t)

        rejected: dict[str, set] = {"d": set(), "e": set()}
        levels: dict[str, dict] = {"d": {}, "e": {}}
        for fam in ("d", "e"):
            while True:
                level = alpha / max(len(active[fam]), 1)
                c = _two_look_bounds(level, fractions[0], fam == "d")[look - 1]
                new = set()
                for h in [h for h in effect if h not in decided and h in active[fam]]:
                    e, se, df = ols[h]
                    levels[fam][h] = level
                    hit = (abs(z(e / se, df)) >= c if fam == "d" else
                           min(z((e + margin) / se, df), z((margin - e) / se, df)) >= c)
                    if hit:
                        new.add(h)
                if not new:
                    break
                rejected[fam] |= new
                active[fam] -= new
        for h in [h for h in effect if h not in decided]:
            if h in rejected["e"] or h in rejected["d"]:
                decided[h] = (look, ols[h], levels["d"].get(h, alpha / 3), levels["e"].get(h, alpha / 3),
                              "equivalent" if h in rejected["e"] else ("helps" if ols[h][0] < 0 else "hurts"))
        if look == 1:
            assert set(decided) == {"a"}  # the planted data: one hack decided at look 1
            assert a.looks[0].seeds == {"all": 6, "-a": 3, "-b": 6, "-c": 6} and not a.looks[0].done
            alloc = dict(a.looks[0].seeds)
    assert a.looks[-1].done and len(a.looks) == 2 and a.used == ({x: 3 for x in variants}, alloc)
    got = {d.hack: d for d in a.decisions}
    assert {h: got[h].look for h in decided} == {h: x[0] for h, x in decided.items()}
    assert {h for h in effect if got[h].verdict != "undecided"} == set(decided) and len(decided) >= 2
    for h, (look, (e, se, df), lev_d, lev_e, verdict) in decided.items():
        d = got[h]
        assert d.verdict == verdict and d.df == df
        assert d.estimate == pytest.approx(e, abs=1e-12) and d.se == pytest.approx(se, rel=1e-9)
        assert (d.level, d.eq_level) == pytest.approx((lev_d, lev_e))
        c_d = _two_look_bounds(lev_d, 0.5, True)[look - 1]
        c_e = _two_look_bounds(lev_e, 0.5, False)[look - 1]
        hd, he = stats.t.isf(stats.norm.sf(c_d), df) * se, stats.t.isf(stats.norm.sf(c_e), df) * se
        assert (d.ci_low, d.ci_high) == pytest.approx((e - hd, e + hd), rel=1e-7)
        assert (d.eq_low, d.eq_high) == pytest.approx((e - he, e + he), rel=1e-7)


def test_a_fixed_design_plans_the_seeds_of_its_most_seeded_variant():
    """One look over every run; ``planned`` is the largest number of seeds a variant has."""
    v, s, y = _grid(3, 5)
    keep = ~((v != "v2") & (s >= 3))  # v2: 5 seeds, the others 3
    comps = [Comparison("h", "v1", "v0"), Comparison("k", "v2", "v0")]
    a = sequential.decide_arrays(v[keep], s[keep], y[keep], _meta(comps, ["v0", "v1", "v2"]), SeedPolicy(),
                                 AnalysisSpec(), FID, log=True)
    assert a.planned == (5,) and a.looks[0].seeds == {"v0": 3, "v1": 3, "v2": 5} and a.used == ()
    est, se, df, _ = _ols(y[keep], v[keep], s[keep], "v2", "v0")
    got = {d.hack: d for d in a.decisions}["k"]
    assert got.estimate == pytest.approx(est, abs=1e-12) and got.se == pytest.approx(se) and got.df == df


def test_one_residual_df_can_decide_and_no_runs_decide_nothing():
    """2 variants x 2 seeds leave one residual df: a huge, clean effect is still detected
    there (t far beyond t_{0.975, 1} = 12.7, statsmodels' p below alpha). With no runs at
    all there is no fit: every hack is undecided, with no estimate."""
    v = np.array(["on", "on", "off", "off"])
    s = np.array([0, 1, 0, 1])
    y = np.array([1.0, 1.3, 0.0, 0.3001])  # ON - OFF = 0.99995, residual sd tiny
    comps = [Comparison("h", "on", "off")]
    a = sequential.decide_arrays(v, s, y, _meta(comps, ["on", "off"]), SeedPolicy(seeds=(0, 1)), AnalysisSpec(),
                                 FID, log=True)
    est, se, df, _ = _ols(y, v, s, "on", "off")
    assert df == 1 and 2 * stats.t.sf(est / se, df) < 0.05
    d = a.decisions[0]
    assert d.verdict == "hurts" and d.df == 1 and d.estimate == pytest.approx(est)  # higher FID: hurts
    h = stats.t.isf(0.025, 1) * se
    assert (d.ci_low, d.ci_high) == pytest.approx((est - h, est + h), rel=1e-9)
    empty = np.array([], dtype=str), np.array([], dtype=int), np.array([], dtype=float)
    none = sequential.decide_arrays(*empty, _meta(comps, ["on", "off"]), SeedPolicy(seeds=(0, 1)), AnalysisSpec(),
                                    FID, log=True)
    assert none.fit is None and none.scale == "log" and math.isnan(none.margin)
    assert none.decisions[0].verdict == "undecided" and math.isnan(none.decisions[0].estimate)
    assert (none.decisions[0].n_on, none.decisions[0].n_off) == (0, 0)


def test_a_store_without_the_metric_has_no_verdicts():
    """Runs not evaluated yet (no metric column): nothing to decide, no fit, no error."""
    frame = _frame([10.0, 12.0, 11.0, 14.0]).drop(columns=FID)
    comps = [Comparison("h", "v1", "v0")]
    a = sequential.analyse(frame, _meta(comps, ["v0", "v1"]), SeedPolicy(seeds=(0, 1)), AnalysisSpec())
    assert a.metric is None and a.decisions == () and a.fit is None and a.looks == () and a.scale == "log"
