"""Every statistic of the effects analysis against an independent computation on fixed
data (statsmodels' formula API, scipy, hand formulae). Each of these would catch one of
the mutations listed in issue 9: a normal 1.96 for the t quantile, ttest_ind for
ttest_rel, raw for log FID, ddof=0, 90% for 95% intervals, a ratio interval built from
the raw-difference interval, and a swapped reference arm."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import HACKS, PRIMARY, make_results  # noqa: E402

from ablate.report import context, effects, power, sequential, summary, tables  # noqa: E402
from ablate.report.results import Comparison, Results  # noqa: E402


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    """Leave-one-out, noise 8% per run: some hacks undecided, batch-norm hurts (×1.25)."""
    root = make_results(tmp_path_factory.mktemp("fx"), artefacts=False, noise_sd=0.08, rng_seed=3,
                        seeds=(0, 1, 2, 3))
    return Results.load(root)


@pytest.fixture(scope="module")
def ctx(res, tmp_path_factory):
    return context.compute(res, tmp_path_factory.mktemp("out"))


def _done(res) -> pd.DataFrame:
    d = res.frame[res.frame["status"] == "done"].copy()
    d["y"] = np.log(d[PRIMARY])
    return d


def _statsmodels_contrast(d: pd.DataFrame, on: str, off: str):
    fit = smf.ols("y ~ 0 + C(variant) + C(seed)", data=d).fit()
    names = list(fit.params.index)
    L = np.zeros(len(names))
    L[names.index(f"C(variant)[{on}]")] = 1
    L[names.index(f"C(variant)[{off}]")] = -1
    t = fit.t_test(L)
    return float(t.effect[0]), float(t.sd[0][0]), int(fit.df_resid), fit


def test_pooled_model_matches_statsmodels_ols_on_log_fid(res):
    d = _done(res)
    fit = effects.fit_pooled(res.frame, res.meta.comparisons, PRIMARY)
    assert fit.scale == "log" and fit.n_runs == len(d) and fit.balanced
    for c in res.meta.comparisons:
        est, se, df, sm_fit = _statsmodels_contrast(d, c.on, c.off)
        mine = fit.contrast(c.hack)
        assert mine.estimate == pytest.approx(est, abs=1e-10)  # raw FID or swapped arms: fails
        assert mine.se == pytest.approx(se, rel=1e-9) and mine.df == df == len(d) - 6 - 3
        assert mine.p == pytest.approx(float(2 * stats.t.sf(abs(est / se), df)), rel=1e-9)
        for level in (0.05, 0.0125):  # t quantile, 95%: 1.96 or 90% fails
            lo, hi = mine.interval(level)
            sm_lo, sm_hi = sm_fit.t_test(_L(sm_fit, c)).conf_int(alpha=level)[0]
            assert (lo, hi) == pytest.approx((sm_lo, sm_hi), abs=1e-10)
    assert fit.sigma == pytest.approx(math.sqrt(sm_fit.scale), rel=1e-9)
    bn = fit.contrast("batch-norm")
    assert (bn.on, bn.off) == ("all-on", "-batch-norm") and bn.estimate > 0  # ON has it: ×1.25


def _L(sm_fit, c):
    names = list(sm_fit.params.index)
    L = np.zeros(len(names))
    L[names.index(f"C(variant)[{c.on}]")] = 1
    L[names.index(f"C(variant)[{c.off}]")] = -1
    return L


def test_decision_intervals_are_exp_of_the_log_interval_at_the_holm_level(res, ctx):
    d = _done(res)
    e = ctx.effects.set_index("hack")
    for c in res.meta.comparisons:
        est, se, df, _ = _statsmodels_contrast(d, c.on, c.off)
        r = e.loc[c.hack]
        level = r["level"]
        holm_levels = [0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05]
        assert any(level == pytest.approx(x) for x in holm_levels)
        assert any(r["eq_level"] == pytest.approx(x) for x in holm_levels)
        h = stats.t.isf(level / 2, df) * se  # two-sided: level/2 per side
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((est - h, est + h), abs=1e-9)
        h_e = stats.t.isf(r["eq_level"], df) * se  # TOST: one-sided at its level
        assert (r["eq_low"], r["eq_high"]) == pytest.approx((est - h_e, est + h_e), abs=1e-9)
        shown = tables.effects_display(ctx.effects).set_index("hack").loc[c.hack]
        assert shown["ratio ON/OFF"] == f"×{tables.num(math.exp(est))}"
        assert shown["adjusted 95% CI"] == tables.interval(math.exp(est - h), math.exp(est + h))
    # The verdict agrees with the interval: helps/hurts iff it excludes 0 (ratio 1).
    for _, r in e.iterrows():
        assert (r["verdict"] in ("helps", "hurts") or r["also_different"]) == (r["ci_low"] > 0 or r["ci_high"] < 0)


def test_holm_p_matches_the_hand_procedure(ctx):
    p = ctx.effects["p"].to_numpy()
    order = np.argsort(p)
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adj[i] = running
    assert ctx.effects["p_holm"].to_numpy() == pytest.approx(adj, rel=1e-12)


def test_tost_interval_and_equivalence_decision_by_hand(res):
    d = _done(res)
    a = sequential.analyse(res.frame, res.meta)
    margin = math.log(1.10)
    assert a.margin == pytest.approx(margin)
    for dec in a.decisions:
        est, se, df, _ = _statsmodels_contrast(d, dec.on, dec.off)
        # one look: TOST at the level it was tested at: est ± t_{1-level} se inside ±margin
        lvl_e = [0.05 / k for k in (4, 3, 2, 1)]
        ok = [est - stats.t.isf(lv, df) * se > -margin and est + stats.t.isf(lv, df) * se < margin
              for lv in lvl_e]
        if dec.verdict == "equivalent":
            assert any(ok)
        else:
            assert not ok[0]  # not equivalent even at the first Holm step


def test_paired_sensitivity_matches_scipy_and_hand_formulae(res, ctx):
    e = ctx.effects.set_index("hack")
    done = res.frame[res.frame["status"] == "done"]
    for c in res.meta.comparisons:
        on = done[done["variant"] == c.on].set_index("seed")[PRIMARY]
        off = done[done["variant"] == c.off].set_index("seed")[PRIMARY]
        dlog = (np.log(on) - np.log(off)).dropna().to_numpy()
        n = len(dlog)
        sd = math.sqrt(((dlog - dlog.mean()) ** 2).sum() / (n - 1))  # ddof = 1 by hand
        t = dlog.mean() / (sd / math.sqrt(n))
        r = e.loc[c.hack]
        assert r["pairs"] == n == 4
        assert r["paired_sd"] == pytest.approx(sd, rel=1e-12)
        assert r["paired_p"] == pytest.approx(2 * stats.t.sf(abs(t), n - 1), rel=1e-9)  # ttest_ind: fails
        h = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        assert (r["paired_low"], r["paired_high"]) == pytest.approx((dlog.mean() - h, dlog.mean() + h), rel=1e-9)
        assert r["paired_dz"] == pytest.approx(dlog.mean() / sd, rel=1e-12)
        shown = tables.effects_display(ctx.effects).set_index("hack").loc[c.hack]
        assert shown["paired 95% CI (sensitivity)"] == tables.interval(math.exp(dlog.mean() - h),
                                                                       math.exp(dlog.mean() + h))
        assert math.isnan(r["boot_low"])  # no bootstrap below 10 pairs


def test_bootstrap_only_from_ten_pairs():
    d = np.random.default_rng(0).normal(1, 1, 12)
    lo, hi = effects.bootstrap_ci(d)
    assert lo < d.mean() < hi and math.isnan(effects.bootstrap_ci(d[:9])[0])


def test_per_variant_summary_log_scale_by_hand(res, ctx):
    s = ctx.summary.set_index(["variant", "metric"])
    done = res.frame[res.frame["status"] == "done"]
    for v in res.meta.variant_names:
        x = done.loc[done["variant"] == v, PRIMARY].to_numpy()
        n = len(x)
        lx = np.log(x)
        lsd = math.sqrt(((lx - lx.mean()) ** 2).sum() / (n - 1))
        h = stats.t.ppf(0.975, n - 1) * lsd / math.sqrt(n)
        r = s.loc[(v, PRIMARY)]
        assert r["n"] == n and r["scale"] == "log"
        assert r["sd"] == pytest.approx(math.sqrt(((x - x.mean()) ** 2).sum() / (n - 1)), rel=1e-12)
        assert r["log_sd"] == pytest.approx(lsd, rel=1e-12)
        assert r["centre"] == pytest.approx(math.exp(lx.mean()), rel=1e-12)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((math.exp(lx.mean() - h), math.exp(lx.mean() + h)),
                                                            rel=1e-12)
        assert r["ci_low"] > 0
        raw = s.loc[(v, "best.classifier.precision")]
        y = done.loc[done["variant"] == v, "best.classifier.precision"].to_numpy()
        hy = stats.t.ppf(0.975, n - 1) * y.std(ddof=1) / math.sqrt(n)
        assert (raw["ci_low"], raw["ci_high"]) == pytest.approx((y.mean() - hy, y.mean() + hy), rel=1e-12)
    assert summary.t_interval(np.array([1.0]))[0] != summary.t_interval(np.array([1.0]))[0]  # NaN at n=1


def test_power_both_directions_by_hand(res, ctx):
    fit = ctx.analysis.fit
    p = next(x for x in ctx.power if x["analysis"] == "pooled model")
    se = float(np.median([c.se for c in fit.contrasts]))
    df = fit.df_resid
    mde = se * (stats.t.isf(0.05 / 8, df) + stats.t.ppf(0.8, df))
    assert p["mde"] == pytest.approx(mde, rel=1e-12)
    assert p["decrease_pct"] == pytest.approx(100 * (math.exp(-mde) - 1))
    assert p["increase_pct"] == pytest.approx(100 * (math.exp(mde) - 1))
    # At that size the two-sided t-test at alpha/m has 80% power (simulation, independent).
    rng = np.random.default_rng(0)
    est = rng.normal(mde, se, 200_000)
    s_hat = se * np.sqrt(rng.chisquare(df, 200_000) / df)
    assert np.mean(np.abs(est / s_hat) > stats.t.isf(0.05 / 8, df)) == pytest.approx(0.8, abs=0.01)
    paired = next(x for x in ctx.power if x["analysis"].startswith("paired"))
    assert paired["pairs"] == 4


@pytest.mark.parametrize("a, df", [(3.5, 31), (2.8, 59), (4.0, 6), (1.0, 20)])
def test_tost_power_at_zero_matches_a_simulation(a, df):
    """The equivalence power of a hack with no effect, against simulated TOSTs: estimate
    N(0, se²), its se estimated on df degrees of freedom (chi-square), equivalence when both
    one-sided t-tests at alpha/m reject."""
    se, crit = 1.0, stats.t.isf(0.05 / 11, df)
    margin = a * se
    rng = np.random.default_rng(1)
    est = rng.normal(0.0, se, 400_000)
    s_hat = se * np.sqrt(rng.chisquare(df, 400_000) / df)
    simulated = np.mean(((est + margin) / s_hat >= crit) & ((margin - est) / s_hat >= crit))
    assert power.tost_power_at_zero(margin, se, df, crit) == pytest.approx(simulated, abs=0.003)
    assert power.tost_power_at_zero(margin, 0.0, df, crit) == 0.0


def test_paired_min_detectable_d_has_80_percent_power():
    d = power.min_detectable_d(3, 0.05 / 11)
    x = np.random.default_rng(0).normal(d, 1.0, size=(40000, 3))
    t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(3))
    assert (np.abs(t) > stats.t.ppf(1 - 0.05 / 22, 2)).mean() == pytest.approx(0.8, abs=0.01)


def test_worst_value_rule_for_diverged_runs_by_hand(res):
    d = _done(res)
    worst = d["y"].max()
    div = res.frame[res.frame["status"] == "diverged"].assign(y=worst)
    both = pd.concat([d, div])
    est, se, df, _ = _statsmodels_contrast(both, "all-on", "-batch-norm")
    fit = effects.fit_pooled(res.frame, res.meta.comparisons, PRIMARY, diverged="worst")
    assert fit.diverged_imputed == 1 and fit.contrast("batch-norm").estimate == pytest.approx(est, abs=1e-10)
    assert fit.contrast("batch-norm").se == pytest.approx(se, rel=1e-9)


def test_unbalanced_seeds_fixed_blocks_and_mixed_model(tmp_path):
    root = make_results(tmp_path, artefacts=False, noise_sd=0.08, extra_runs=False,
                        per_variant_seeds={"all-on": 6, "-batch-norm": 6})
    r = Results.load(root)
    d = _done(r)
    fit = effects.fit_pooled(r.frame, r.meta.comparisons, PRIMARY)
    assert not fit.balanced
    est, se, df, _ = _statsmodels_contrast(d, "all-on", "-batch-norm")
    assert fit.contrast("batch-norm").estimate == pytest.approx(est, abs=1e-10)
    assert fit.contrast("batch-norm").se == pytest.approx(se, rel=1e-9) and fit.df_resid == df
    mixed = effects.fit_mixed(r.frame, r.meta.comparisons, PRIMARY)
    ml = smf.mixedlm("y ~ 0 + C(variant)", d, groups=d["seed"]).fit(reml=True)
    want = ml.fe_params["C(variant)[all-on]"] - ml.fe_params["C(variant)[-batch-norm]"]
    assert mixed["batch-norm"][0] == pytest.approx(want, abs=1e-4)


def test_model_checks_match_scipy(ctx):
    fit = ctx.analysis.fit
    groups = [fit.residuals[fit.residual_variants == v] for v in np.unique(fit.residual_variants)]
    assert fit.levene_p() == pytest.approx(stats.levene(*groups, center="median").pvalue)
    assert fit.shapiro_p() == pytest.approx(stats.shapiro(fit.residuals).pvalue)


def test_brown_forsythe_leaves_out_groups_of_two_runs(ctx):
    """Two runs' deviations from their median are equal: such a group has zero spread and
    scipy's statistic divides by zero (p = 0 whatever the data), so it is left out."""
    import dataclasses

    fit = ctx.analysis.fit
    variants = np.unique(fit.residual_variants)
    two = np.concatenate([np.flatnonzero(fit.residual_variants == v)[:2] for v in variants])
    small = dataclasses.replace(fit, residuals=fit.residuals[two], residual_variants=fit.residual_variants[two])
    assert math.isnan(small.levene_p())


def test_swapping_the_reference_arm_inverts_the_ratio_not_the_verdict(res):
    swapped = tuple(Comparison(c.hack, c.off, c.on) for c in res.meta.comparisons)
    a = effects.fit_pooled(res.frame, res.meta.comparisons, PRIMARY).contrast("batch-norm")
    b = effects.fit_pooled(res.frame, swapped, PRIMARY).contrast("batch-norm")
    assert b.estimate == pytest.approx(-a.estimate) and b.se == pytest.approx(a.se)
    import dataclasses

    va = {x.hack: x.verdict for x in sequential.analyse(res.frame, res.meta).decisions}
    vb = {x.hack: x.verdict for x in sequential.analyse(res.frame, dataclasses.replace(
        res.meta, comparisons=swapped)).decisions}
    assert va["batch-norm"] == "hurts" and vb["batch-norm"] == "helps"
    assert {h: v for h, v in va.items() if v != "hurts"} == {h: v for h, v in vb.items() if v != "helps"}


def test_secondary_metrics_use_the_same_model(res, ctx):
    sec = ctx.secondary
    kid = sec[(sec["metric"] == "best.classifier.kid_mean") & (sec["hack"] == "batch-norm")].iloc[0]
    d = _done(res).assign(y=lambda f: np.log(f["best.classifier.kid_mean"]))
    est, se, df, _ = _statsmodels_contrast(d, "all-on", "-batch-norm")
    assert kid["estimate"] == pytest.approx(est, abs=1e-10) and kid["scale"] == "log"
    prec = sec[(sec["metric"] == "best.classifier.precision") & (sec["hack"] == "batch-norm")].iloc[0]
    d = _done(res).assign(y=lambda f: f["best.classifier.precision"])
    est, se, df, _ = _statsmodels_contrast(d, "all-on", "-batch-norm")
    assert prec["estimate"] == pytest.approx(est, abs=1e-10) and prec["scale"] == "raw"
    assert set(HACKS) == set(sec["hack"])


def test_an_interval_bound_near_one_is_never_shown_as_one():
    """A ratio interval that excludes 1 by a little must not read as touching it: the bound
    gets the digits that tell it from 1; exact ones and other bounds keep 3 digits."""
    assert tables.interval(1.0044, 1.5612) == "[1.004, 1.56]"
    assert tables.interval(0.6503, 0.99962) == "[0.65, 0.9996]"
    assert tables.interval(0.9, 1.0) == "[0.9, 1]"  # a bound that is 1 (a clipped share) stays 1
    assert tables.interval(-1.0002, -0.5) == "[-1.0002, -0.5]"
    assert tables.interval(0.99999999, 1.2) == "[1, 1.2]"  # at most 6 digits
    assert tables.interval(1.3, 1.56) == "[1.3, 1.56]"


def test_mixed_model_is_the_reml_optimum_where_statsmodels_default_fit_fails():
    """fashion-mnist-1k-lr's look 2 (committed runs): statsmodels' default MixedLM.fit stops
    at τ² = 0 with an infinite log-likelihood there. The profiled fit agrees with a MixedLM
    fit that converges (derivative-free Powell) on the contrast's estimate and standard
    error, and its REML profile with statsmodels' MixedLM.loglike up to a constant."""
    import statsmodels.api as sm
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    root = Path(__file__).resolve().parents[1] / "results" / "fashion-mnist-1k-lr"
    r = Results.load(root)
    result = sequential.analyse(r.frame, r.meta)
    d = next(x for x in result.decisions if x.hack == "strided-upsample @ lr_scale=1")
    sub = sequential.runs_at(r.frame, result, d.look)
    data, _, _ = effects.model_data(sub, result.metric)
    X = pd.get_dummies(data["variant"]).astype(float)
    y, seeds = data["y"].to_numpy(float), data["seed"].to_numpy()
    model = sm.MixedLM(y, X, groups=seeds)
    ml = model.fit(reml=True, method="powell")
    assert np.isfinite(ml.llf) and ml.cov_re.iloc[0, 0] > 0
    L = (X.columns == d.on).astype(float) - (X.columns == d.off).astype(float)
    want_est = float(L @ ml.fe_params.to_numpy())
    want_se = float(np.sqrt(L @ ml.cov_params().loc[X.columns, X.columns].to_numpy() @ L))
    est, se = effects.fit_mixed(sub, r.meta.comparisons, result.metric)[d.hack]
    assert est == pytest.approx(want_est, rel=1e-8) and se == pytest.approx(want_se, rel=1e-6)
    # The profile: deviance differences between values of λ = τ²/σ² are -2 × statsmodels'
    # REML log-likelihood differences (model.fit above set up model.loglike).
    Z = pd.get_dummies(seeds).to_numpy(float)
    lams = [1e-3, 0.02, 0.5, 4.0]
    ours = [effects._reml(lam, y, X.to_numpy(), Z)[0] for lam in lams]
    theirs = [-2 * model.loglike(MixedLMParams.from_components(cov_re=np.array([[lam]])), profile_fe=True)
              for lam in lams]
    assert np.diff(ours) == pytest.approx(np.diff(theirs), rel=1e-9, abs=1e-9)
    # Its derivative, against a central difference of the deviance.
    for lam in lams:
        h = 1e-6 * lam
        numeric = (effects._reml(lam + h, y, X.to_numpy(), Z)[0] - effects._reml(lam - h, y, X.to_numpy(), Z)[0]) / (2 * h)
        assert effects._reml(lam, y, X.to_numpy(), Z)[1] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def test_a_metric_constant_in_every_run_fits_exactly_and_the_same_on_every_machine():
    """Every run found all 10 modes: the contrasts are 0 and their p is 1, not the ratio of
    two rounding errors. Rounding noise of either sign (what another CPU's kernels leave)
    gives the same numbers; a variant that differs in every seed is a clear difference."""
    v = np.array(["all-on", "-a", "-b"] * 5)
    s = np.repeat(np.arange(5), 3)
    comps = [Comparison("a", "all-on", "-a"), Comparison("b", "all-on", "-b")]
    fits = []
    for noise in (0.0, 3e-15, -2e-15):
        y = np.full(len(v), 10.0) + noise * np.sin(np.arange(len(v)))
        y[v == "-b"] -= 1.0  # -b loses one mode in every seed
        fits.append(effects.fit_arrays("best.classifier.modes", False, v, s, y, comps))
    for f in fits:
        a, b = f.contrast("a"), f.contrast("b")
        assert a.estimate == 0.0 and a.p == 1.0 and a.se > 0
        assert b.estimate == pytest.approx(1.0, abs=1e-9) and b.p < 1e-30
        assert (a.estimate, b.estimate) == (fits[0].contrast("a").estimate, fits[0].contrast("b").estimate)
        assert (a.se, b.se) == pytest.approx((fits[0].contrast("a").se, fits[0].contrast("b").se), rel=1e-12)
        assert not np.any(f.residuals)
    # A real metric keeps its own residuals (the resolution is 1e-10 of the largest value).
    y = np.full(len(v), 10.0) + 1e-6 * np.sin(np.arange(len(v)))
    f = effects.fit_arrays("best.classifier.modes", False, v, s, y, comps)
    assert np.any(f.residuals) and 0 < f.sigma < 1e-5
