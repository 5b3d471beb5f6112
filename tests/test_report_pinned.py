"""Properties of the verdicts that the other fixtures cannot tell apart (issue 20, item 6).

Each test plants data that separates the correct procedure from one plausible wrong one,
and computes what to expect independently (statsmodels' formula API, scipy, hand Holm):

* Holm shares the level of a rejected hack (Bonferroni does not);
* Holm steps down (Hochberg, stepping up, rejects more on the same p values);
* the equivalence margin is ±log(1.1) on the log scale (not log(0.9) below, nor ±0.1);
* the equivalence family runs its own Holm: a hack shown *different* keeps its share of
  the equivalence family's level (its equivalence null is not rejected: it may be true),
  so it is not passed on to the other hacks;
* the mixed model's interval uses the MixedLM standard error of the contrast (with the
  covariance of the two arms that the random seed intercept induces);
* a diverged run enters with the worst finished value of the experiment, in a seed block
  shared with finished runs (so the imputed value moves the estimates).

Planted data (:func:`_planted`): y = log 40 + seed offset + k·r + μ_variant, with r the
least-squares residuals of a synthetic store's log FID: r is orthogonal to the design, so
each contrast's estimate is exactly μ_on − μ_off and its standard error is k times r's.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import PRIMARY, make_results  # noqa: E402

from ablate.report import context, sequential  # noqa: E402
from ablate.report.results import Results  # noqa: E402

ALPHA = 0.05
MARGIN = math.log(1.10)  # SESOI 10%, symmetric on the log scale: ×1/1.1 .. ×1.1
SEEDS = tuple(range(6))  # leave-one-out over 4 hacks: 6 variants x 6 seeds, residual df 25
DF = 6 * 6 - 6 - 5


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Results:
    return Results.load(make_results(tmp_path_factory.mktemp("pin"), artefacts=False, extra_runs=False,
                                     noise_sd=0.05, rng_seed=5, seeds=SEEDS))


def _y(frame: pd.DataFrame) -> pd.DataFrame:
    d = frame[frame["status"] == "done"].copy()
    d["y"] = np.log(d[PRIMARY].astype(float))
    d["seed"] = d["seed"].astype(int)
    return d


def _ols(d: pd.DataFrame, comparisons) -> dict[str, tuple[float, float, int]]:
    """hack -> (estimate, se, df) of its contrast in y ~ variant + seed (statsmodels)."""
    fit = smf.ols("y ~ 0 + C(variant) + C(seed)", data=d).fit()
    names = list(fit.params.index)
    out = {}
    for c in comparisons:
        L = np.zeros(len(names))
        L[names.index(f"C(variant)[{c.on}]")], L[names.index(f"C(variant)[{c.off}]")] = 1, -1
        t = fit.t_test(L)
        out[c.hack] = (float(t.effect[0]), float(t.sd[0][0]), int(fit.df_resid))
    return out


def _planted(res: Results, estimates: dict[str, float], se: float) -> pd.DataFrame:
    """``res.frame`` with log FID = log 40 + seed offset + k·residual + μ_variant: each
    hack's contrast estimate is ``estimates[hack]`` and every contrast's SE is ``se``."""
    f = res.frame.copy()
    d = _y(f)
    fit = smf.ols("y ~ 0 + C(variant) + C(seed)", data=d).fit()
    se0 = next(iter(_ols(d, res.meta.comparisons).values()))[1]
    mu = {c.off: -estimates[c.hack] for c in res.meta.comparisons}  # all-on (every ON arm) at 0
    y = (math.log(40) + 0.02 * (d["seed"] - 1) + (se / se0) * fit.resid
         + d["variant"].map(mu).fillna(0.0))
    f.loc[d.index, PRIMARY] = np.exp(y)
    return f


def _holm(p: dict[str, float], alpha: float = ALPHA) -> tuple[set[str], dict[str, float]]:
    """Holm (1979) by hand: rejected hypotheses, and the level each was last tested at."""
    order = sorted(p, key=p.get)
    rejected, levels = set(), {}
    for k, h in enumerate(order):
        level = alpha / (len(p) - k)
        if p[h] > level:
            levels.update({rest: level for rest in order[k:]})
            break
        rejected.add(h)
        levels[h] = level
    return rejected, levels


def _hochberg(p: dict[str, float], alpha: float = ALPHA) -> set[str]:
    """Hochberg (1988), step-up: reject every p at or below the largest p_(k) <= alpha/(m-k+1)."""
    order = sorted(p, key=p.get)
    m = len(order)
    for k in range(m, 0, -1):
        if p[order[k - 1]] <= alpha / (m - k + 1):
            return set(order[:k])
    return set()


def _p_difference(ols) -> dict[str, float]:
    return {h: float(2 * stats.t.sf(abs(est / se), df)) for h, (est, se, df) in ols.items()}


def _p_equivalence(ols, margin: float = MARGIN) -> dict[str, float]:
    """TOST p: the larger of the two one-sided t-test p values against -margin and +margin."""
    return {h: float(max(stats.t.sf((est + margin) / se, df), stats.t.sf((margin - est) / se, df)))
            for h, (est, se, df) in ols.items()}


def _different(a) -> set[str]:
    return {d.hack for d in a.decisions if d.verdict in ("helps", "hurts") or d.also_different}


def _equivalent(a) -> set[str]:
    return {d.hack for d in a.decisions if d.verdict == "equivalent"}


def _t_at(p_two_sided: float) -> float:
    return float(stats.t.isf(p_two_sided / 2, DF))


# --------------------------------------------------------------------------------------
# Holm across hacks: level sharing, step-down
# --------------------------------------------------------------------------------------
def test_holm_shares_the_level_of_a_rejected_hack(base):
    """p = 0.001, 0.015, 0.03, 0.5: Holm rejects two (0.015 <= 0.05/3 once the first is
    out), Bonferroni (0.05/4 for all) only one."""
    se = 0.06
    want = {"leaky-relu": 0.001, "batch-norm": 0.015, "label-smoothing": 0.03, "noisy-labels": 0.5}
    frame = _planted(base, {h: _t_at(p) * se for h, p in want.items()}, se)
    ols = _ols(_y(frame), base.meta.comparisons)
    p = _p_difference(ols)
    assert p == pytest.approx(want, rel=1e-6)
    rejected, levels = _holm(p)
    assert rejected == {"leaky-relu", "batch-norm"}
    assert {h for h in p if p[h] <= ALPHA / len(p)} == {"leaky-relu"}  # what Bonferroni would reject
    a = sequential.analyse(frame, base.meta)
    assert _different(a) == rejected and not _equivalent(a)
    got = {d.hack: d.level for d in a.decisions}
    assert got == pytest.approx(levels)  # 0.0125, 0.0167, then 0.025 for the two left
    assert {d.hack: d.verdict for d in a.decisions}["leaky-relu"] == "hurts"


def test_holm_steps_down_not_up(base):
    """p = 0.001, 0.03, 0.035, 0.045: step-down Holm stops at 0.03 > 0.05/3 (one
    rejection); step-up Hochberg rejects all four (the largest, 0.045, is <= 0.05)."""
    se = 0.06
    want = {"leaky-relu": 0.001, "batch-norm": 0.03, "label-smoothing": 0.035, "noisy-labels": 0.045}
    frame = _planted(base, {h: _t_at(p) * se for h, p in want.items()}, se)
    p = _p_difference(_ols(_y(frame), base.meta.comparisons))
    assert p == pytest.approx(want, rel=1e-6)
    rejected, levels = _holm(p)
    assert rejected == {"leaky-relu"} and _hochberg(p) == set(want)
    a = sequential.analyse(frame, base.meta)
    assert _different(a) == rejected and not _equivalent(a)
    assert {d.hack: d.level for d in a.decisions} == pytest.approx(levels)


# --------------------------------------------------------------------------------------
# Equivalence: the margin, and the family's own Holm
# --------------------------------------------------------------------------------------
def test_equivalence_margin_is_symmetric_log_1_1_and_the_family_shares_levels(base):
    """SE 0.002. leaky-relu sits just inside log(0.9) = -0.1054 but outside -log(1.1) =
    -0.0953 (TOST p 0.10 at the true margin, < 0.001 at log 0.9); batch-norm mirrors it
    above (+0.0953 vs +0.1 or -log 0.9). noisy-labels (estimate 0) is equivalent at
    0.05/4; label-smoothing (TOST p 0.015) only at 0.05/3, after noisy-labels passes its
    level on."""
    se = 0.002
    t10 = float(stats.t.isf(0.10, DF))
    est = {"leaky-relu": -MARGIN + t10 * se, "batch-norm": MARGIN - t10 * se,
           "label-smoothing": MARGIN - float(stats.t.isf(0.015, DF)) * se, "noisy-labels": 0.0}
    frame = _planted(base, est, se)
    ols = _ols(_y(frame), base.meta.comparisons)
    p_e = _p_equivalence(ols)
    assert p_e["leaky-relu"] == pytest.approx(0.10, rel=1e-6) and p_e["batch-norm"] == pytest.approx(0.10, rel=1e-6)
    assert p_e["label-smoothing"] == pytest.approx(0.015, rel=1e-6)
    # The margins this fixture separates: log(0.9) below, 0.1 or -log(0.9) above.
    lower = {h: stats.t.sf((e - math.log(0.9)) / s, df) for h, (e, s, df) in ols.items()}
    assert lower["leaky-relu"] < 0.001 and _p_equivalence(ols, 0.10)["batch-norm"] < 0.005
    rejected, levels = _holm(p_e)
    assert rejected == {"noisy-labels", "label-smoothing"}
    a = sequential.analyse(frame, base.meta)
    assert a.margin == pytest.approx(MARGIN, rel=1e-12)
    assert _equivalent(a) == rejected
    assert {d.hack: d.eq_level for d in a.decisions} == pytest.approx(levels)
    v = {d.hack: d for d in a.decisions}
    assert v["leaky-relu"].verdict == "helps" and v["batch-norm"].verdict == "hurts"
    assert v["label-smoothing"].also_different and not v["noisy-labels"].also_different
    # The TOST interval at its level: leaky-relu's lower end lies between the two margins.
    lo = ols["leaky-relu"][0] - stats.t.isf(levels["leaky-relu"], DF) * se
    assert math.log(0.9) < lo < -MARGIN and v["leaky-relu"].eq_low == pytest.approx(lo, rel=1e-9)


def test_a_hack_shown_different_keeps_its_share_of_the_equivalence_level(base):
    """leaky-relu (×e^0.5) and batch-norm (×e^-0.5) are different, not equivalent: their
    equivalence nulls are not rejected, so the equivalence family still has 4 hypotheses
    and label-smoothing and noisy-labels (estimate 0, TOST p 0.02) are tested at 0.05/4
    and stay undecided. Recycling the level of the hacks decided by the difference test
    (0.05/2) would call them equivalent."""
    se = MARGIN / float(stats.t.isf(0.02, DF))  # TOST p 0.02 at estimate 0
    est = {"leaky-relu": 0.5, "batch-norm": -0.5, "label-smoothing": 0.0, "noisy-labels": 0.0}
    frame = _planted(base, est, se)
    ols = _ols(_y(frame), base.meta.comparisons)
    p_e = _p_equivalence(ols)
    assert p_e["label-smoothing"] == pytest.approx(0.02, rel=1e-6) == p_e["noisy-labels"]
    different, _ = _holm(_p_difference(ols))
    assert different == {"leaky-relu", "batch-norm"}
    rejected, levels = _holm(p_e)  # all four in the equivalence family
    assert rejected == set() and levels == {h: ALPHA / 4 for h in est}
    a = sequential.analyse(frame, base.meta)
    assert _different(a) == different and _equivalent(a) == rejected
    assert {d.hack: d.verdict for d in a.decisions} == {"leaky-relu": "hurts", "batch-norm": "helps",
                                                        "label-smoothing": "undecided", "noisy-labels": "undecided"}
    assert {d.hack: d.eq_level for d in a.decisions} == pytest.approx(levels)


# --------------------------------------------------------------------------------------
# Sensitivity columns: the worst-value rule and the mixed model, as the report shows them
# --------------------------------------------------------------------------------------
DIVERGED = (("-batch-norm", 2), ("all-on", 4), ("all-on", 1))  # in seed blocks where others finished


@pytest.fixture(scope="module")
def sensitivity(base, tmp_path_factory):
    """base with a large seed effect (sd 0.3: the random intercept matters) and three
    diverged runs, which also unbalance the seeds (so the mixed model is fitted)."""
    f = base.frame.copy()
    shift = np.random.default_rng(1).normal(0, 0.3, len(SEEDS))
    f[PRIMARY] = f[PRIMARY] * np.exp(shift[f["seed"].astype(int)])
    for v, s in DIVERGED:
        row = (f["variant"] == v) & (f["seed"] == s)
        assert row.sum() == 1
        f.loc[row, "status"] = "diverged"
        f.loc[row, PRIMARY] = np.nan
    res = dataclasses.replace(base, frame=f)
    return res, context.compute(res, tmp_path_factory.mktemp("out")).effects.set_index("hack")


def test_worst_value_rule_imputes_the_largest_finished_log_fid_in_shared_seed_blocks(sensitivity):
    res, e = sensitivity
    d = _y(res.frame)
    worst, best = d["y"].max(), d["y"].min()
    div = pd.DataFrame([{"variant": v, "seed": s} for v, s in DIVERGED])
    with_worst = _ols(pd.concat([d, div.assign(y=worst)], ignore_index=True), res.meta.comparisons)
    with_best = _ols(pd.concat([d, div.assign(y=best)], ignore_index=True), res.meta.comparisons)
    finished_only = _ols(d, res.meta.comparisons)
    for h, (est, se, df) in with_worst.items():
        r = e.loc[h]
        assert r["imputed"] == len(DIVERGED)
        assert r["worst_estimate"] == pytest.approx(est, abs=1e-10)
        half = stats.t.isf(r["level"] / 2, df) * se
        assert (r["worst_low"], r["worst_high"]) == pytest.approx((est - half, est + half), abs=1e-9)
        # Not vacuous: the imputed value moves every contrast (all-on diverged at seeds 1 and 4).
        assert abs(est - with_best[h][0]) > 0.05 and abs(est - finished_only[h][0]) > 1e-3


def test_mixed_model_column_uses_the_mixedlm_standard_error(sensitivity):
    res, e = sensitivity
    d = _y(res.frame)
    ml = smf.mixedlm("y ~ 0 + C(variant)", d, groups=d["seed"]).fit(reml=True)
    names = [f"C(variant)[{v}]" for v in sorted(d["variant"].unique())]
    cov = ml.cov_params().loc[names, names].to_numpy()
    fe = ml.fe_params[names].to_numpy()
    assert ml.cov_re.iloc[0, 0] > 10 * ml.scale  # the seed intercept dominates: cov(on, off) matters
    for c in res.meta.comparisons:
        L = np.array([(n == f"C(variant)[{c.on}]") - (n == f"C(variant)[{c.off}]") for n in names], float)
        est, se = float(L @ fe), float(np.sqrt(L @ cov @ L))
        r = e.loc[c.hack]
        half = stats.t.isf(r["level"] / 2, r["df"]) * se
        assert r["mixed_estimate"] == pytest.approx(est, abs=1e-5)
        assert r["mixed_high"] - r["mixed_low"] == pytest.approx(2 * half, rel=1e-4)
        assert (r["mixed_low"], r["mixed_high"]) == pytest.approx((est - half, est + half), abs=1e-5)


# --------------------------------------------------------------------------------------
# Adaptive reports: what is not a repeated confidence interval says so
# --------------------------------------------------------------------------------------
def test_adaptive_report_labels_single_look_columns(tmp_path):
    from ablate.report import build_report, tables

    policy = {"seeds": list(range(6)), "adaptive": True, "min": 3, "max": 6, "step": 1}
    root = make_results(tmp_path / "r", artefacts=False, noise_sd=0.1, rng_seed=1, seed_policy=policy,
                        per_variant_seeds={"all-on": 3, "-leaky-relu": 4, "-label-smoothing": 4,
                                           "-noisy-labels": 4},  # unbalanced: the mixed model is shown
                        extra_seed=3)  # all-on's 4th seed diverged, inside look 2: the worst-value column
    out = tmp_path / "out"
    build_report(Results.load(root), out)
    header = (out / "tables" / "effects.md").read_text().split("\n")[2]
    cols = [c.strip() for c in header.strip("|").split("|")]
    labelled = ["p (Holm; naive single-look)", "paired 95% CI (sensitivity; not a repeated CI)",
                "paired p (naive single-look)", "incl. diverged (worst value; not a repeated CI)",
                "mixed model (not a repeated CI)"]
    assert set(labelled) <= set(cols), cols
    assert {"adjusted 95% CI", "TOST interval"} <= set(cols)  # the repeated CIs keep their names
    report = (out / "REPORT.md").read_text()
    assert "only the adjusted and TOST intervals are repeated confidence intervals" in report
    assert "naive single-look p values" in report and "paired p (naive single-look)" in report
    # A fixed-seed report keeps the plain names.
    e = pd.read_csv(out / "tables" / "effects.csv")
    plain = list(tables.effects_display(e).columns)
    assert "paired p" in plain and "mixed model" in plain and not set(labelled) & set(plain)
