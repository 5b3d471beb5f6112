"""Edge cases of the failure, summary, over-training and Stacked-MNIST statistics
(report/failures.py, summary.py, training.py, stacked.py) that the fixture-based tests
leave open (a mutation audit): each test plants a small hand-made input and checks the
output against an independent computation (exact binomial enumeration with ``math.comb``
and ``fractions``, beta quantiles, ``scipy.stats.binomtest``, the gamma form of chi²,
``scipy.stats.t.interval``, statsmodels' formula OLS, a trapezoid or Holm written out by
hand), never against the implementation's own helpers or earlier output.

Found by mutating those modules one operator at a time (comparisons, arithmetic,
constants, and/or, min/max, ceil/floor, sf/cdf, argument order, string keys): each test
here fails on at least one mutant that test_report_failures, test_report_stacked,
test_report_training and the summary tests of test_report / test_report_effects let pass."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

from ablate.report import failures, stacked, summary, training
from ablate.report.results import Comparison, ExperimentMeta

NAN = math.nan


def _kl(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    s = a > 0
    return float(np.sum(a[s] * np.log(a[s] / b[s])))


def _js(p, q) -> float:
    """JS divergence in nats, by hand: mean KL of each to the mixture."""
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    m = (p + q) / 2
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def _binom_pmf(c: int, n: int, q: Fraction) -> Fraction:
    return math.comb(n, c) * q ** c * (1 - q) ** (n - c)


def _miss_exact(q: Fraction, n: int, min_frac: Fraction | None, min_count: int | None) -> float:
    """P(a class of share q is missing in n real draws), summed over its count c in exact
    rationals: missing iff c < min_count, or (min_frac rule) c/n < min_frac·q or c = 0."""
    total = Fraction(0)
    for c in range(n + 1):
        miss = c < min_count if min_count is not None else (Fraction(c, n) < min_frac * q or c == 0)
        if miss:
            total += _binom_pmf(c, n, q)
    return float(total)


def _esym(p, m: int) -> float:
    """m-th elementary symmetric polynomial by enumerating the m-subsets."""
    return float(sum(math.prod(c) for c in itertools.combinations(p, m)))


def _chi2_isf(prob: float, df: int) -> float:
    """χ²_df upper quantile through its gamma form (shape df/2, scale 2)."""
    return float(stats.gamma.isf(prob, df / 2, scale=2))


def _cp(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson from beta quantiles."""
    a = 1 - conf
    lo = 0.0 if k == 0 else stats.beta.ppf(a / 2, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - a / 2, k + 1, n - k)
    return lo, hi


# --------------------------------------------------------------------------------------
# failures: JS, missing modes, the calibration
# --------------------------------------------------------------------------------------
def test_js_divergence_is_the_mixture_formula_and_not_its_root():
    """JS of unnormalised, unequal-total histograms against the mixture formula by hand
    (nats, the square of scipy's distance): 0 for proportional histograms, log 2 for
    disjoint ones, and a value below 1 where the root and the square differ."""
    p, q = np.array([5.0, 0.0, 3.0, 2.0]), np.array([1.0, 4.0, 4.0, 1.0])
    assert failures.js_divergence(p, q) == pytest.approx(_js(p, q), rel=1e-12)
    assert failures.js_divergence(p * 3, p) == pytest.approx(0.0, abs=1e-15)
    assert failures.js_divergence([1, 0], [0, 7]) == pytest.approx(math.log(2), rel=1e-12)


def test_missing_modes_at_the_share_threshold_and_for_empty_classes():
    """Written out by hand from the rule: covered iff share >= min_frac · real share (the
    real shares normalised here) and count > 0; ``min_count``: missing iff count < it."""
    real = np.array([2.0, 2.0, 2.0, 2.0])  # shares 1/4: threshold 0.1/4 = 0.025
    # 25/1000 sits on the threshold (covered), 24/1000 below it (missing)
    assert failures.missing_modes([25, 24, 475, 476], real, 0.1) == 1
    assert failures.missing_modes([25, 25, 475, 475], real, 0.1) == 0
    # min_frac 0: only the empty class is missing (share 0 >= 0, but no sample)
    assert failures.missing_modes([0, 1, 5, 5], real, 0.0) == 1
    # a large min_frac: shares 0.1, 0.2, 0.3, 0.4 against 0.9 · 0.25 = 0.225
    assert failures.missing_modes([1, 2, 3, 4], real, 0.9) == 2
    # count rule: below min_count is missing, at it is covered
    assert failures.missing_modes([0, 1, 2, 3], real, None, 2) == 2
    assert failures.missing_modes([0, 1, 2, 3], real, None, 1) == 1


@pytest.mark.parametrize("counts, n, min_frac, min_count", [
    ((1, 1, 1, 1), 80, Fraction(1, 10), None),  # 0.1·(1/4)·80 = 2 exactly (in floats 2.0000000000000004)
    ((1, 1, 1, 1), 90, Fraction(1, 10), None),  # 2.25: need 3
    ((1, 2, 3, 4), 30, Fraction(1, 2), None),  # unequal shares
    ((1, 1, 1, 1), 20, Fraction(1, 100), None),  # below one sample: still need 1
    ((1, 3), 5, Fraction(0), None),  # no share rule: an empty class is still missing
    ((1, 1, 3), 12, None, 3),  # count rule
])
def test_miss_probabilities_match_exact_binomial_enumeration(counts, n, min_frac, min_count):
    """P(class missing) per class against the sum of exact binomial probabilities over the
    counts the rule calls missing (rational arithmetic, no rounding at the threshold)."""
    real = np.array(counts, float)
    got = failures._miss_probabilities(real, n, None if min_frac is None else float(min_frac), min_count)
    want = [_miss_exact(Fraction(c, sum(counts)), n, min_frac, min_count) for c in counts]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_at_least_is_the_elementary_symmetric_polynomial_capped_at_one():
    """e_m by enumerating m-subsets for m = 0..4; an upper bound on the exact
    P(>= m of independent events) (enumerated over all 2^5 outcomes); capped at 1."""
    p = np.array([0.05, 0.2, 0.1, 0.3, 0.15])
    for m in range(5):
        want = 1.0 if m == 0 else _esym(p, m)
        assert failures._at_least(p, m) == pytest.approx(want, rel=1e-12)
        exact = sum(math.prod(pi if o else 1 - pi for pi, o in zip(p, out))
                    for out in itertools.product((0, 1), repeat=5) if sum(out) >= m)
        assert failures._at_least(p, m) >= exact - 1e-15
    assert failures._at_least(np.full(4, 0.9), 1) == 1.0  # e_1 = 3.6, capped
    assert failures._at_least(np.full(4, 0.9), 2) == 1.0  # e_2 = 4.86, capped


def _calibrate_by_hand(real_counts, k, n_gen, n_real, min_frac, min_count):
    """The docstring's calibration, from exact enumeration: the smallest m >= 2 (at most k)
    with e_m(miss probabilities) <= 1e-6; JS of dropping the two rarest modes; the χ²
    noise floor over 8·N_eff."""
    counts = [1] * k if real_counts is None else [int(c) for c in real_counts]
    tot = sum(counts)
    probs = [_miss_exact(Fraction(c, tot), n_gen, min_frac, min_count) for c in counts]
    m = 2
    while m < k and _esym(probs, m) > 1e-6:
        m += 1
    q = np.array(counts, float) / tot
    rare = sorted(range(k), key=lambda i: (q[i], i))[:2]
    two = q.copy()
    two[rare] = 0
    n_eff = n_gen if not n_real else n_gen * n_real / (n_gen + n_real)
    return m, _js(two, q), _chi2_isf(1e-6, k - 1) / (8 * n_eff), min(1.0, _esym(probs, m))


@pytest.mark.parametrize("real, k, n_gen, n_real, min_frac, min_count", [
    ((5, 1, 3, 2, 4, 6), 6, 40, 300, Fraction(1, 10), None),  # small N: threshold raised
    ((5, 1, 3, 2, 4, 6), 6, 400, None, Fraction(1, 10), None),  # no real N: N_eff = n_gen
    ((5, 1, 3, 2, 4, 6), 6, 400, 0, Fraction(1, 10), None),  # n_real 0 counts as none
    (None, 5, 60, None, None, 1),  # uniform modes, count rule (as Stacked MNIST)
    (None, 3, 2, None, None, 1),  # hopeless N: the threshold stops at k
])
def test_calibrate_matches_the_calibration_by_hand(real, k, n_gen, n_real, min_frac, min_count):
    """Threshold, calibration points and null bound against :func:`_calibrate_by_hand`;
    ``flags`` at the threshold and one below."""
    rule = failures.calibrate(None if real is None else np.array(real, float), k, n_gen, n_real,
                              None if min_frac is None else float(min_frac), min_count)
    m, js2, noise, null = _calibrate_by_hand(real, k, n_gen, n_real, min_frac, min_count)
    assert (rule.modes, rule.n, rule.k) == (m, n_gen, k)
    assert rule.js_two_modes == pytest.approx(js2, rel=1e-10)
    assert rule.js_noise == pytest.approx(noise, rel=1e-8)
    assert rule.null_prob == pytest.approx(null, rel=1e-8)
    assert rule.flags(m) and rule.flags(m + 1) and not rule.flags(m - 1)


def test_calibrate_defaults_to_the_ten_percent_share_rule():
    """Without ``min_frac`` the rule is the evaluation's 0.1 (not the count rule): at 40
    samples of 6 unequal classes the threshold is the by-hand one for 0.1."""
    real = (5, 1, 3, 2, 4, 6)
    rule = failures.calibrate(np.array(real, float), 6, 40, 300)
    assert rule.modes == _calibrate_by_hand(real, 6, 40, 300, Fraction(1, 10), None)[0]
    assert rule.null_prob == pytest.approx(_calibrate_by_hand(real, 6, 40, 300, Fraction(1, 10), None)[3],
                                           rel=1e-8)
    assert rule.null_prob != pytest.approx(_calibrate_by_hand(real, 6, 40, 300, Fraction(1, 8), None)[3], rel=1e-3)


def test_run_flags_per_run_from_histograms_and_from_mode_counts():
    """Three kinds of run: one with a class histogram (missing, JS and the rule from the
    histogram, N_eff from both totals), one with only mode counts (count part only) and
    one with neither (skipped); a diverged run is never flagged. Every number by hand."""
    M = "best.classifier."
    frame = pd.DataFrame({
        "key": ["a", "b", "c", "d", "e"], "variant": ["v", "v", "w", "w", "w"], "seed": [0, 1, 0, 1, 2],
        "status": ["done", "done", "done", "diverged", "done"],
        M + "modes": [NAN, 7.0, 9.0, 3.0, NAN], M + "num_modes": [NAN, 10.0, NAN, 10.0, NAN],
        M + "n_mode_samples": [NAN, 50.0, NAN, 50.0, NAN]})
    real = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0])
    counts = np.array([10.0, 0.0, 8.0, 0.0, 9.0, 13.0])  # 40 samples, classes 1 and 3 empty
    hists = pd.DataFrame({"key": ["a", "d"], "counts": [counts, counts], "real_counts": [real, real]})
    out = failures.run_flags(frame, hists, "best", stacked=False, min_frac=0.1).set_index("key")
    assert list(out.index) == ["a", "b", "c"]
    assert (out.loc["a", "variant"], out.loc["a", "seed"]) == ("v", 0)
    m, js2, noise, null = _calibrate_by_hand(real, 6, 40, 21, Fraction(1, 10), None)
    assert out.loc["a", "missing"] == 2 and out.loc["a", "js"] == pytest.approx(_js(counts, real), rel=1e-10)
    assert (out.loc["a", "rule_modes"], bool(out.loc["a", "collapsed"])) == (m, 2 >= m)
    assert (out.loc["a", "js_two_modes"], out.loc["a", "js_noise"], out.loc["a", "null_prob"]) == pytest.approx(
        (js2, noise, null), rel=1e-8)
    # b: 7 of 10 modes on 50 samples, share rule (stacked=False); no JS without a histogram
    m, _, noise, null = _calibrate_by_hand(None, 10, 50, None, Fraction(1, 10), None)
    assert out.loc["b", "missing"] == 3 and math.isnan(out.loc["b", "js"])
    assert (out.loc["b", "rule_modes"], bool(out.loc["b", "collapsed"])) == (m, 3 >= m)
    assert out.loc["b", "js_noise"] == pytest.approx(noise, rel=1e-8)
    # c: no num_modes or N recorded: 10 modes and 10,000 samples
    m, _, noise, _ = _calibrate_by_hand(None, 10, 10_000, None, Fraction(1, 10), None)
    assert out.loc["c", "missing"] == 1 and out.loc["c", "rule_modes"] == m and not out.loc["c", "collapsed"]
    assert out.loc["c", "js_noise"] == pytest.approx(noise, rel=1e-8)


def test_run_flags_stacked_uses_the_count_rule():
    """``stacked=True``: a mode is missing when it has no sample (count rule 1); the
    threshold from 30 uniform draws over 10 modes by hand (raised above 2)."""
    M = "best.classifier."
    frame = pd.DataFrame({"key": ["b"], "variant": ["v"], "seed": [3], "status": ["done"],
                          M + "modes": [6.0], M + "num_modes": [10.0], M + "n_mode_samples": [30.0]})
    out = failures.run_flags(frame, pd.DataFrame(), "best", stacked=True, min_frac=0.1).iloc[0]
    m, _, noise, null = _calibrate_by_hand(None, 10, 30, None, None, 1)
    assert m > 2 and (out["missing"], out["rule_modes"]) == (4, m)
    assert bool(out["collapsed"]) == (4 >= m)
    assert (out["js_noise"], out["null_prob"]) == pytest.approx((noise, null), rel=1e-8)


def test_run_flags_stacked_without_a_recorded_mode_count_counts_of_1000():
    """A stacked run whose record lacks ``num_modes`` counts its missing modes of Stacked
    MNIST's 1,000 (it fell back to 10: 990 covered gave -980 missing, never collapsed)."""
    M = "best.classifier."
    frame = pd.DataFrame({"key": ["b"], "variant": ["v"], "seed": [0], "status": ["done"],
                          M + "modes": [990.0], M + "num_modes": [math.nan], M + "n_mode_samples": [26000.0]})
    out = failures.run_flags(frame, pd.DataFrame(), "best", stacked=True, min_frac=0.1).iloc[0]
    m, _, _, _ = _calibrate_by_hand(None, 1000, 26000, None, None, 1)
    assert (out["missing"], out["rule_modes"], bool(out["collapsed"])) == (10, m, 10 >= m)


# --------------------------------------------------------------------------------------
# failures: exact intervals and McNemar
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n, conf", [(0, 4, 0.95), (1, 4, 0.95), (4, 4, 0.95), (3, 11, 0.9), (2, 7, 0.8),
                                         (0, 1, 0.95), (1, 1, 0.95)])
def test_clopper_pearson_is_the_beta_quantile_interval(k, n, conf):
    """Against beta quantiles written out (0 and 1 at the ends; one trial included); NaN
    for no trials."""
    got = failures.clopper_pearson(k, n, conf) if conf != 0.95 else failures.clopper_pearson(k, n)
    assert got == pytest.approx(_cp(k, n, conf), abs=1e-10)
    assert all(math.isnan(x) for x in failures.clopper_pearson(0, 0))


def test_variant_rates_count_by_hand():
    """Collapsed of measured and diverged of finished (done or diverged; failed and pending
    runs do not count) per variant, with beta-quantile intervals; a variant without flags
    has NaN rate and interval."""
    frame = pd.DataFrame({"variant": ["v"] * 6 + ["w"] * 3,
                          "status": ["done", "done", "done", "diverged", "failed", "pending",
                                     "diverged", "diverged", "done"]})
    flags = pd.DataFrame({"variant": ["v", "v", "v"], "collapsed": [True, False, False]})
    out = failures.variant_rates(frame, flags, ["v", "w"]).set_index("variant")
    v, w = out.loc["v"], out.loc["w"]
    assert (v["measured"], v["collapsed"], v["finished"], v["diverged"]) == (3, 1, 4, 1)
    assert v["collapse_rate"] == pytest.approx(1 / 3) and v["divergence_rate"] == pytest.approx(1 / 4)
    assert (v["collapse_low"], v["collapse_high"]) == pytest.approx(_cp(1, 3), abs=1e-10)
    assert (v["divergence_low"], v["divergence_high"]) == pytest.approx(_cp(1, 4), abs=1e-10)
    assert (w["measured"], w["finished"], w["diverged"]) == (0, 3, 2)
    assert math.isnan(w["collapse_rate"]) and math.isnan(w["collapse_low"]) and math.isnan(w["collapse_high"])
    assert w["divergence_rate"] == pytest.approx(2 / 3)
    assert (w["divergence_low"], w["divergence_high"]) == pytest.approx(_cp(2, 3), abs=1e-10)


def test_mcnemar_counts_discordant_pairs_and_is_the_exact_binomial_test():
    """Seed-paired outcomes (seeds present on one side only are dropped): pairs, ON-only
    and OFF-only counted by hand; p = scipy's two-sided exact binomial test of the smaller
    discordant count at 1/2."""
    on = pd.Series([1, 1, 1, 1, 0, 0, 1, 1.0], index=[0, 1, 2, 3, 4, 5, 6, 7])
    off = pd.Series([0, 0, 0, 0, 0, 1, 1, NAN, 0.0], index=[0, 1, 2, 3, 4, 5, 6, 7, 8])
    n, on_only, off_only, p = failures._mcnemar(on, off)
    assert (n, on_only, off_only) == (7, 4, 1)
    assert p == pytest.approx(stats.binomtest(1, 5, 0.5).pvalue, rel=1e-12)
    n, a, b, p = failures._mcnemar(pd.Series([1.0, 0.0]), pd.Series([1.0, 0.0]))
    assert (n, a, b, p) == (2, 0, 0, 1.0)


def test_hack_tests_per_hack_pairs_and_holm():
    """Two hacks: collapse pairs from the flags and divergence pairs from the run statuses
    (failed runs are no pair), counts and exact p by hand (scipy binomtest), Holm across
    the hacks written out; a hack whose ON variant has no flags has no collapse test."""
    seeds = list(range(6))
    frame = pd.DataFrame({
        "variant": ["A"] * 6 + ["B"] * 6 + ["C"] * 6, "seed": seeds * 3,
        "status": ["done"] * 6 + ["diverged", "diverged", "diverged", "done", "done", "failed"]
        + ["done"] * 5 + ["diverged"]})
    flags = pd.DataFrame({"variant": ["A"] * 6 + ["B"] * 2, "seed": seeds + [3, 4],
                          "collapsed": [False, False, False, False, False, True] + [True, True]})
    comps = [Comparison("hb", "A", "B"), Comparison("hc", "C", "A")]
    out = failures.hack_tests(frame, flags, comps).set_index("hack")
    hb, hc = out.loc["hb"], out.loc["hc"]
    assert (hb["on"], hb["off"]) == ("A", "B")
    # collapse, A vs B on seeds 3, 4: B only twice
    assert (hb["collapse_pairs"], hb["collapse_on_only"], hb["collapse_off_only"]) == (2, 0, 2)
    # divergence, A (none) vs B (0, 1, 2; seed 5 failed): 5 pairs, OFF only 3
    assert (hb["diverge_pairs"], hb["diverge_on_only"], hb["diverge_off_only"]) == (5, 0, 3)
    # C has no flags: no collapse pairs
    assert hc["collapse_pairs"] == 0 and math.isnan(hc["collapse_p"]) and math.isnan(hc["collapse_p_holm"])
    assert (hc["diverge_pairs"], hc["diverge_on_only"], hc["diverge_off_only"]) == (6, 1, 0)
    p_c = stats.binomtest(0, 2, 0.5).pvalue
    p_b, p_cd = stats.binomtest(0, 3, 0.5).pvalue, stats.binomtest(0, 1, 0.5).pvalue
    assert hb["collapse_p"] == pytest.approx(p_c) and hb["collapse_p_holm"] == pytest.approx(p_c)
    assert (hb["diverge_p"], hc["diverge_p"]) == pytest.approx((p_b, p_cd))
    lo, hi = sorted([p_b, p_cd])  # Holm over two by hand
    holm_lo = min(1.0, 2 * lo)
    assert hb["diverge_p_holm"] == pytest.approx(holm_lo)
    assert hc["diverge_p_holm"] == pytest.approx(max(holm_lo, min(1.0, hi)))


# --------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, conf", [([1.0, 4.0], 0.95), ([2.0, 3.5, 7.0, 1.0], 0.95), ([2.0, 3.5, 7.0], 0.8)])
def test_t_interval_matches_scipy(x, conf):
    """scipy.stats.t.interval on n − 1 df around the mean with the standard error."""
    x = np.array(x)
    want = stats.t.interval(conf, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    got = summary.t_interval(x, conf) if conf != 0.95 else summary.t_interval(x)
    assert got == pytest.approx(want, rel=1e-12)


def _meta(variants):
    return ExperimentMeta(name="x", dataset="fake", design_kind="explicit", hacks=(),
                          variants=tuple((v, ()) for v in variants), comparisons=(), seeds=(0, 1, 2, 3))


def test_summarize_log_and_raw_scales_clipping_and_edges():
    """Per variant and metric against scipy: FID on the log scale (geometric mean = gmean,
    interval = exp of the t interval of the logs); a FID column with a zero falls back to
    the raw scale; recall clipped at 0; modes clipped at the largest recorded num_modes;
    NaNs and unfinished runs dropped (seeds listed sorted); one run: no sd or interval; no
    run: NaN, raw. Variants in design order, then extras."""
    M = "best.classifier."
    frame = pd.DataFrame({
        "variant": ["b"] * 5 + ["a"] * 2 + ["x"],
        "seed": [3, 0, 2, 1, 4, 1, 0, 0],
        "status": ["done", "done", "done", "done", "diverged", "done", "done", "done"],
        M + "fid": [40.0, 10.0, 20.0, NAN, 5.0, 30.0, NAN, NAN],
        M + "kid_mean": [0.0, 0.02, 0.03, 0.01, 0.5, 0.1, 0.2, NAN],
        M + "recall": [0.01, 0.2, 0.02, 0.03, 0.9, 0.5, 0.6, NAN],
        M + "modes": [9.0, 10.0, 9.9, 8.0, 1.0, 5.0, 5.0, NAN],
        M + "num_modes": [8.0, 10.0, 9.0, 9.0, 10.0, 10.0, 10.0, NAN],
        "last.inception.precision": [0.9, 0.95, 0.99, 0.97, 0.1, 0.5, 0.5, NAN]})  # no num_modes beside it
    metrics = [M + "fid", M + "kid_mean", M + "recall", M + "modes", "last.inception.precision"]
    s = summary.summarize(frame, _meta(["b", "a"]), metrics)
    assert list(dict.fromkeys(s["variant"])) == ["b", "a", "x"]
    s = s.set_index(["variant", "metric"])
    fid = np.array([40.0, 10.0, 20.0])  # seeds 3, 0, 2 (seed 1 NaN, seed 4 diverged)
    r = s.loc[("b", M + "fid")]
    lo, hi = stats.t.interval(0.95, 2, loc=np.log(fid).mean(), scale=stats.sem(np.log(fid)))
    assert (r["scale"], r["n"], r["seeds"]) == ("log", 3, "0,2,3")
    assert r["centre"] == pytest.approx(stats.gmean(fid), rel=1e-12)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-12)
    assert r["mean"] == pytest.approx(fid.mean()) and r["sd"] == pytest.approx(np.std(fid, ddof=1))
    assert r["log_sd"] == pytest.approx(np.std(np.log(fid), ddof=1), rel=1e-12)
    kid = np.array([0.0, 0.02, 0.03, 0.01])  # a zero: raw scale
    r = s.loc[("b", M + "kid_mean")]
    lo, hi = stats.t.interval(0.95, 3, loc=kid.mean(), scale=stats.sem(kid))
    assert r["scale"] == "raw" and r["centre"] == pytest.approx(kid.mean()) and math.isnan(r["log_sd"])
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)  # KID may go below 0
    rec = np.array([0.01, 0.2, 0.02, 0.03])
    lo, hi = stats.t.interval(0.95, 3, loc=rec.mean(), scale=stats.sem(rec))
    assert s.loc[("b", M + "recall"), "scale"] == "raw" and math.isnan(s.loc[("b", M + "recall"), "log_sd"])
    assert lo < 0 and (s.loc[("b", M + "recall"), "ci_low"], s.loc[("b", M + "recall"), "ci_high"]) == \
        pytest.approx((0.0, hi), rel=1e-12)
    mod = np.array([9.0, 10.0, 9.9, 8.0])
    lo, hi = stats.t.interval(0.95, 3, loc=mod.mean(), scale=stats.sem(mod))
    assert hi > 10  # clipped at the largest num_modes of the variant's runs (10), not 9 or 8
    assert (s.loc[("b", M + "modes"), "ci_low"], s.loc[("b", M + "modes"), "ci_high"]) == pytest.approx(
        (lo, 10.0), rel=1e-12)
    pr = np.array([0.9, 0.95, 0.99, 0.97])
    lo, hi = stats.t.interval(0.95, 3, loc=pr.mean(), scale=stats.sem(pr))
    assert hi > 1 and (s.loc[("b", "last.inception.precision"), "ci_low"],
                       s.loc[("b", "last.inception.precision"), "ci_high"]) == pytest.approx((lo, 1.0), rel=1e-12)
    r = s.loc[("a", M + "fid")]  # one run
    assert (r["n"], r["seeds"], r["scale"], r["centre"], r["mean"]) == (1, "1", "log", pytest.approx(30.0),
                                                                        pytest.approx(30.0))
    assert all(math.isnan(r[c]) for c in ("sd", "log_sd", "ci_low", "ci_high"))
    r = s.loc[("a", M + "kid_mean")]  # positive values below 1 are logged too
    assert r["scale"] == "log" and r["centre"] == pytest.approx(math.sqrt(0.1 * 0.2), rel=1e-12)
    assert r["log_sd"] == pytest.approx(np.std(np.log([0.1, 0.2]), ddof=1), rel=1e-12)
    r = s.loc[("a", M + "recall")]  # two runs: t on 1 df
    lo, hi = stats.t.interval(0.95, 1, loc=0.55, scale=stats.sem([0.5, 0.6]))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((max(lo, 0.0), min(hi, 1.0)), rel=1e-12)
    assert r["sd"] == pytest.approx(np.std([0.5, 0.6], ddof=1), rel=1e-12)
    r = s.loc[("x", M + "fid")]  # no finite value
    assert (r["n"], r["seeds"], r["scale"]) == (0, "", "raw")
    assert all(math.isnan(r[c]) for c in ("mean", "sd", "centre", "ci_low", "ci_high"))


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def _trap(x, y) -> float:
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1)) / (x[-1] - x[0])


def test_auc_trapezoid_by_hand_and_runs_without_an_area():
    """Unevenly spaced, unsorted steps: the trapezoid sum over sorted steps / the span, by
    hand, rows sorted by (variant, seed); runs with one step, a NaN value or a zero span
    have no AUC."""
    curves = pd.DataFrame({
        "variant": ["b", "b", "b", "a", "a", "a", "a", "c", "c", "d", "d", "f", "f", "f"],
        "seed": [0, 0, 0, 1, 1, 1, 1, 2, 2, 5, 5, 0, 0, 0],
        "step": [100, 200, 300, 300, 100, 1000, 200, 100, 100, 100, 200, 100, 300, 100],
        "value": [5.0, 6.0, 7.0, 30.0, 80.0, 10.0, 50.0, 1.0, 2.0, 9.0, NAN, 4.0, 2.0, 4.0]})
    curves = pd.concat([curves, pd.DataFrame({"variant": ["e"], "seed": [0], "step": [100], "value": [3.0]})])
    out = training.auc(curves)
    assert list(zip(out["variant"], out["seed"])) == [("a", 1), ("b", 0), ("f", 0)]  # sorted
    a = out.set_index(["variant", "seed"])["val_fid_auc"]
    assert a[("a", 1)] == pytest.approx(_trap([100, 200, 300, 1000], [80, 50, 30, 10]), rel=1e-12)
    assert a[("b", 0)] == pytest.approx(_trap([100, 200, 300], [5, 6, 7]), rel=1e-12)
    # a repeated first step still spans 100..300 (the span is last - first, not second - first)
    assert a[("f", 0)] == pytest.approx(_trap([100, 100, 300], [4, 4, 2]), rel=1e-12)


def test_with_auc_merges_by_variant_and_seed_and_blanks_unfinished_runs():
    """Left join on (variant, seed): a run without a curve keeps NaN, an old column is
    replaced, non-done runs get NaN even with a curve."""
    frame = pd.DataFrame({"variant": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                          "status": ["done", "done", "diverged", "done"], "val_fid_auc": [1.0, 2.0, 3.0, 4.0]})
    curves = pd.DataFrame({"variant": ["a", "a", "b", "b", "a", "a"], "seed": [0, 0, 0, 0, 1, 1],
                           "step": [0, 10, 0, 10, 0, 10], "value": [4.0, 2.0, 6.0, 8.0, 1.0, 3.0]})
    out = training.with_auc(frame, curves)
    assert list(zip(out["variant"], out["seed"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    got = out["val_fid_auc"].tolist()
    assert got[:2] == [3.0, 2.0] and math.isnan(got[2]) and math.isnan(got[3])


def test_effects_by_step_match_statsmodels_with_bonferroni_and_unbalanced_steps():
    """Per step (in step order), the log-FID contrast of each of two hacks in ``y ~ variant
    + seed`` (statsmodels formula OLS, t interval at alpha/2; at alpha for one hack),
    excluding non-positive and NaN values (a FID below 1 stays); n_on / n_off counted by
    hand where they differ."""
    rng = np.random.default_rng(4)
    rows = []
    for step in (100, 200):
        for s in range(4):
            for v, mu in (("on", 3.0), ("off1", 3.3), ("off2", 2.9)):
                rows.append({"variant": v, "seed": s, "step": step, "value": math.exp(mu + 0.2 * s + rng.normal(0, .1))})
    curves = pd.DataFrame(rows)
    bad = (curves["step"] == 200) & (curves["variant"] == "off1")
    curves.loc[bad & (curves["seed"] == 0), "value"] = 0.0
    curves.loc[bad & (curves["seed"] == 1), "value"] = NAN
    curves.loc[(curves["step"] == 100) & (curves["variant"] == "off2") & (curves["seed"] == 0), "value"] = 0.5
    curves = curves.sample(frac=1, random_state=1)  # rows in no particular step order
    comps = [Comparison("h1", "on", "off1"), Comparison("h2", "on", "off2")]
    out = training.effects_by_step(curves, comps, 0.1)
    one = training.effects_by_step(curves, comps[:1], 0.1)  # one hack: no Bonferroni split
    assert list(out["step"]) == [100, 100, 200, 200] and list(out["hack"]) == ["h1", "h2", "h1", "h2"]
    for step in (100, 200):
        d = curves[(curves["step"] == step) & (curves["value"] > 0)].assign(y=lambda f: np.log(f["value"]))
        fit = smf.ols("y ~ 0 + C(variant) + C(seed)", data=d).fit()
        names = list(fit.params.index)
        for hack, off in (("h1", "off1"), ("h2", "off2")):
            L = np.zeros(len(names))
            L[names.index("C(variant)[on]")], L[names.index(f"C(variant)[{off}]")] = 1, -1
            t = fit.t_test(L)
            lo, hi = t.conf_int(alpha=0.1 / 2)[0]
            r = out[(out["step"] == step) & (out["hack"] == hack)].iloc[0]
            assert r["ratio"] == pytest.approx(math.exp(float(t.effect[0])), rel=1e-9)
            assert (r["low"], r["high"]) == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-9)
            if hack == "h1":
                lo, hi = t.conf_int(alpha=0.1)[0]
                r = one[one["step"] == step].iloc[0]
                assert (r["low"], r["high"]) == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-9)
            assert (r["n_on"], r["n_off"]) == (4, 2 if (step, hack) == (200, "h1") else 4)


# --------------------------------------------------------------------------------------
# stacked
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, n", [(3, 4), (4, 2), (2, 5)])
def test_uniform_reference_expected_modes_by_enumeration(k, n):
    """Expected modes covered by n uniform draws of k modes: the mean number of distinct
    values over all k^n equally likely sequences; KL reference (k − 1)/(2n) by hand."""
    distinct = [len(set(seq)) for seq in itertools.product(range(k), repeat=n)]
    modes, kl = stacked.uniform_reference(n, k)
    assert modes == pytest.approx(sum(distinct) / len(distinct), rel=1e-12)
    assert kl == pytest.approx((k - 1) / (2 * n), rel=1e-12)
    assert stacked.uniform_reference(1000)[0] == pytest.approx(1000 * (1 - (999 / 1000) ** 1000), rel=1e-12)


def _ctx(frame, summary_rows, counts, effects=None, secondary=None, failure_tests=None, comparisons=()):
    return SimpleNamespace(checkpoint="best", frame=frame, summary=pd.DataFrame(summary_rows),
                           counts=pd.DataFrame(counts), effects=effects if effects is not None else pd.DataFrame(),
                           secondary=secondary if secondary is not None else pd.DataFrame(),
                           failure_tests=failure_tests if failure_tests is not None else pd.DataFrame(),
                           meta=SimpleNamespace(comparisons=comparisons))


def test_modes_frame_reads_seeds_in_order_and_the_summary_columns():
    """Seeds sorted with their values (not in store order), unfinished and NaN runs left
    out, the smallest N; mean, low, high and sd taken from the summary's modes and KL rows
    (each its own), the collapse counts and interval from the per-variant counts."""
    M = "best.classifier."
    frame = pd.DataFrame({
        "variant": ["v", "v", "v", "v", "w"], "seed": [2, 0, 1, 3, 0],
        "status": ["done", "done", "done", "diverged", "done"],
        M + "modes": [990.0, 970.0, NAN, 1.0, 500.0], M + "kl": [0.25, 0.5, 0.75, 9.0, 2.0],
        M + "n_mode_samples": [26000.0, 20000.0, 25000.0, 1.0, 26000.0]})
    summ = [{"variant": "v", "metric": M + "modes", "mean": 980.0, "ci_low": 900.0, "ci_high": 1000.0, "sd": 14.0},
            {"variant": "v", "metric": M + "kl", "mean": 0.5, "ci_low": 0.1, "ci_high": 0.9, "sd": 0.25},
            {"variant": "w", "metric": M + "kl", "mean": 2.0, "ci_low": NAN, "ci_high": NAN, "sd": NAN}]
    counts = {"variant": ["v", "w"], "collapsed": [1, 0], "measured": [2, 1],
              "collapse_low": [0.01, 0.0], "collapse_high": [0.99, 0.97]}
    t = stacked.modes_frame(_ctx(frame, summ, counts)).set_index("variant")
    v = t.loc["v"]
    assert (v["n"], v["seeds"], v["modes_per_seed"], v["kl_per_seed"]) == (2, "0,2", "970 990", "0.5 0.75 0.25")
    assert v["n_mode_samples"] == 20000
    assert (v["modes_mean"], v["modes_low"], v["modes_high"], v["modes_sd"]) == (980.0, 900.0, 1000.0, 14.0)
    assert (v["kl_mean"], v["kl_low"], v["kl_high"], v["kl_sd"]) == (0.5, 0.1, 0.9, 0.25)
    assert (v["collapsed"], v["measured"], v["collapse_low"], v["collapse_high"]) == (1, 2, 0.01, 0.99)
    w = t.loc["w"]
    assert (w["n"], w["seeds"], w["modes_per_seed"], w["kl_mean"]) == (1, "0", "500", 2.0)
    assert math.isnan(w["modes_mean"]) and (w["collapse_low"], w["collapse_high"]) == (0.0, 0.97)
    # counts without collapse columns (no flags computed): 0 of 0, no interval
    t = stacked.modes_frame(_ctx(frame, summ, {"variant": ["v", "w"]})).set_index("variant")
    assert (t.loc["v", "collapsed"], t.loc["v", "measured"]) == (0, 0) and math.isnan(t.loc["v", "collapse_low"])


def test_verdict_frame_takes_each_metric_and_hack_its_own_row():
    """Per comparison: the modes row and the KL row of its own hack (from the primary or
    the secondary effects), NaN where a metric is missing; the collapse McNemar counts."""
    M = "best.classifier."
    keys = ("estimate", "ci_low", "ci_high", "verdict", "p_holm", "n_on", "n_off")
    sec = pd.DataFrame([
        dict(zip(("metric", "hack") + keys, (M + "modes", "h2", 5.0, 1.0, 9.0, "helps", 0.01, 3, 4)), p=0.5),
        dict(zip(("metric", "hack") + keys, (M + "kl", "h1", -0.2, -0.3, -0.1, "hurts", 0.02, 5, 6)), p=0.6),
        dict(zip(("metric", "hack") + keys, (M + "modes", "h1", 7.0, 2.0, 12.0, "undecided", 0.3, 5, 6)), p=0.7),
        dict(zip(("metric", "hack") + keys, ("last.classifier.kl", "h2", 1, 1, 1, "x", 1, 1, 1)), p=0.8)])
    tests = pd.DataFrame({"hack": ["h2"], "collapse_pairs": [4], "collapse_on_only": [1], "collapse_off_only": [3],
                          "collapse_p_holm": [0.625]})
    comps = (Comparison("h1", "A", "B"), Comparison("h2", "A", "C"))
    t = stacked.verdict_frame(_ctx(pd.DataFrame(), [], {"variant": []}, secondary=sec, failure_tests=tests,
                                   comparisons=comps)).set_index("hack")
    h1, h2 = t.loc["h1"], t.loc["h2"]
    assert (h1["on"], h1["off"], h2["off"]) == ("A", "B", "C")
    assert [h1[f"modes_{k}"] for k in keys] == [7.0, 2.0, 12.0, "undecided", 0.3, 5, 6]
    assert [h1[f"kl_{k}"] for k in keys] == [-0.2, -0.3, -0.1, "hurts", 0.02, 5, 6]
    assert [h2[f"modes_{k}"] for k in keys] == [5.0, 1.0, 9.0, "helps", 0.01, 3, 4]
    assert all(not isinstance(h2[f"kl_{k}"], str) and math.isnan(h2[f"kl_{k}"]) for k in keys)
    assert (h2["collapse_pairs"], h2["collapse_on_only"], h2["collapse_off_only"], h2["collapse_p_holm"]) == \
        (4, 1, 3, 0.625)
    assert math.isnan(h1["collapse_pairs"])
    # effects rows without a metric column (nothing analysed) are no contrast: NaN, not an error
    t = stacked.verdict_frame(_ctx(pd.DataFrame(), [], {"variant": []}, effects=pd.DataFrame({"hack": ["h1"]}),
                                   comparisons=comps)).set_index("hack")
    assert math.isnan(t.loc["h1", "modes_estimate"]) and math.isnan(t.loc["h2", "kl_p_holm"])
