"""Edge cases of the cross-experiment and factorial statistics that the existing tests leave
open (a mutation audit of report/compare.py and report/factorial.py): each test plants a
small data set and checks the numbers against an independent computation (statsmodels'
``combine_effects`` or formula OLS, scipy, a hand formula), never against the
implementation's own earlier output.

Found by mutating the code one operator at a time (comparisons, arithmetic, constants,
and/or, min/max, argument order): each test here fails on at least one mutant that
test_report_compare, test_report_factorial and test_stats_audit let pass, or that only the
byte comparison with the committed summary caught."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ablate.report import compare
from ablate.report.factorial import factorial_effects

FID = "best.classifier.fid"
PRECISION = "best.classifier.precision"  # raw scale, higher is better
Z = stats.norm.ppf(0.975)


# --------------------------------------------------------------------------------------
# Factorial designs
# --------------------------------------------------------------------------------------
def _factorial(metric, effects, n_seeds=3, rng_seed=1, log=True, noise=0.02):
    """A 2^3 full factorial over hacks a, b, c, ``n_seeds`` seeds with a seed shift, and the
    a×b interaction 0.05 on the ±1 coding."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in range(n_seeds):
        for code in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).T.reshape(-1, 3):
            lin = 3.0 + 0.1 * s + sum(e / 2 * c for e, c in zip(effects, code)) + 0.05 * code[0] * code[1]
            lin += rng.normal(0, noise)
            rows.append({"status": "done", "seed": s, "hack:a": code[0] > 0, "hack:b": code[1] > 0,
                         "hack:c": code[2] > 0, metric: math.exp(lin) if log else lin})
    return pd.DataFrame(rows)


def _ols_reference(frame, metric, log):
    """statsmodels formula OLS on ±1 coding with seed blocks, every two-factor interaction."""
    d = frame.copy()
    d["y"] = np.log(d[metric]) if log else d[metric]
    for h in "abc":
        d[h] = np.where(d[f"hack:{h}"], 1.0, -1.0)
    seeds = " + C(seed)" if d["seed"].nunique() > 1 else ""
    return smf.ols("y ~ a + b + c + a:b + a:c + b:c" + seeds, data=d).fit()


META = SimpleNamespace(hacks=("a", "b", "c"))  # factorial_effects reads only meta.hacks


@pytest.mark.parametrize("metric, log, n_seeds", [(FID, True, 3), (PRECISION, False, 2), (FID, True, 1)])
def test_factorial_table_matches_statsmodels_formula_ols(metric, log, n_seeds):
    """Every column of the table (effect, se, t, p, Holm p, ratio) and the fit's counts, against
    a formula OLS; one seed: no seed blocks."""
    frame = _factorial(metric, (-0.3, 0.0, 0.15), n_seeds=n_seeds)
    fit = factorial_effects(frame, META, metric)
    ref = _ols_reference(frame, metric, log)
    t = fit.table.set_index("term")
    names = {"a": "a", "b": "b", "c": "c", "a×b": "a:b", "a×c": "a:c", "b×c": "b:c"}
    assert list(t.index) == list(names) and fit.scale == ("log" if log else "raw")
    for term, rn in names.items():
        assert t.loc[term, "effect"] == pytest.approx(2 * ref.params[rn], abs=1e-10), term
        assert t.loc[term, "se"] == pytest.approx(2 * ref.bse[rn], rel=1e-9), term
        assert t.loc[term, "t"] == pytest.approx(ref.tvalues[rn], rel=1e-9), term
        assert t.loc[term, "p"] == pytest.approx(ref.pvalues[rn], rel=1e-8, abs=1e-300), term
        if log:
            assert t.loc[term, "ratio"] == pytest.approx(math.exp(2 * ref.params[rn]), rel=1e-10), term
        else:
            assert np.isnan(t.loc[term, "ratio"])
    holm = multipletests([ref.pvalues[rn] for rn in names.values()], method="holm")[1]
    np.testing.assert_allclose(t["p_holm"], holm, rtol=1e-8, atol=1e-300)
    assert t.loc["a×b", "kind"] == "interaction" and t.loc["a", "kind"] == "main"
    assert fit.n_runs == len(frame) and fit.n_variants == 8 and fit.df_resid == int(ref.df_resid)
    assert fit.blocked_by_seed == (n_seeds > 1) and fit.aliased == () and fit.note == ""


def test_factorial_minimum_detectable_effect_is_the_t_formula():
    """mde (default α 0.05): median main-effect se times (t_{1-α/(2m)} + t_{power}) on the residual df, m the
    number of terms (Holm's first step), by scipy from the formula OLS; also at 1 df below."""
    frame = _factorial(FID, (-0.3, 0.0, 0.15)).drop(index=[0, 1, 10, 19])  # four runs less: uneven se
    fit = factorial_effects(frame, META, FID)  # the default α is 0.05
    ref = _ols_reference(frame, FID, True)
    ses = [2 * ref.bse[h] for h in "abc"]
    se_main = float(np.median(ses))
    assert abs(se_main - np.mean(ses)) > 1e-3 * se_main  # so the median is what is checked
    df, m = ref.df_resid, 6
    want = se_main * (stats.t.ppf(1 - 0.05 / (2 * m), df) + stats.t.ppf(0.80, df))
    assert fit.mde == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("metric, log, sign", [(FID, True, -1), (FID, True, 1), (PRECISION, False, 1),
                                               (PRECISION, False, -1)])
def test_factorial_verdict_direction_follows_the_metric(metric, log, sign):
    """Lower FID helps, higher precision helps: a clear main effect of a in each direction,
    and b with no effect gets no verdict."""
    frame = _factorial(metric, (sign * 0.3, 0.0, 0.0), noise=0.005)
    t = factorial_effects(frame, META, metric).table.set_index("term")
    helps = (sign < 0) == (metric == FID)
    assert t.loc["a", "verdict"] == ("helps" if helps else "hurts")
    assert t.loc["b", "verdict"] == "no detectable effect (3 seeds)"
    assert t.loc["b×c", "verdict"] == "no detectable interaction (3 seeds)"
    assert t.loc["a×b", "verdict"] == "interacts"


def test_factorial_fits_only_the_hacks_that_vary_and_needs_three_runs():
    """A hack that is OFF in every run (or has no column) is left out and the fit is the one
    over the others; no varying hack, or fewer than 3 finished runs: no fit."""
    frame = _factorial(FID, (-0.3, 0.0, 0.15)).assign(**{"hack:d": False})
    fit = factorial_effects(frame, SimpleNamespace(hacks=("a", "d", "b", "e", "c")), FID)
    ref = _ols_reference(frame, FID, True)
    t = fit.table.set_index("term")
    assert list(t.index) == ["a", "b", "c", "a×b", "a×c", "b×c"]
    assert t.loc["c", "effect"] == pytest.approx(2 * ref.params["c"], abs=1e-10)
    assert factorial_effects(frame, SimpleNamespace(hacks=("d", "e")), FID) is None
    assert factorial_effects(frame.iloc[[0, 7]], META, FID) is None


def test_factorial_leaves_out_unfinished_and_missing_runs_and_a_nonpositive_fid_is_raw():
    """Runs not ``done`` and NaN or infinite metrics are dropped before the fit; a FID of 0 keeps the
    scale raw (no log of 0)."""
    frame = _factorial(FID, (-0.3, 0.0, 0.15))
    extra = frame.iloc[:3].copy()
    extra[FID] = [1e6, np.nan, np.inf]
    extra["status"] = ["failed", "done", "done"]
    fit = factorial_effects(pd.concat([frame, extra], ignore_index=True), META, FID)
    ref = _ols_reference(frame, FID, True)
    assert fit.n_runs == len(frame)
    assert fit.table.set_index("term").loc["a", "effect"] == pytest.approx(2 * ref.params["a"], abs=1e-10)
    zero = frame.copy()
    zero.loc[0, FID] = 0.0
    fit0 = factorial_effects(zero, META, FID)
    ref0 = _ols_reference(zero, FID, False)
    assert fit0.scale == "raw"
    assert fit0.table.set_index("term").loc["a", "effect"] == pytest.approx(2 * ref0.params["a"], abs=1e-9)
    small = frame.copy()
    small.loc[0, FID] = 0.5  # positive, below 1: still the log scale
    assert factorial_effects(small, META, FID).scale == "log"


# --------------------------------------------------------------------------------------
# ablate compare: pooling across experiments
# --------------------------------------------------------------------------------------
def _dl(y, se):
    """DerSimonian-Laird from statsmodels' ``combine_effects`` called directly, τ² truncated
    at 0 by hand (then the fixed-effect result), I² and the Q test by hand."""
    from statsmodels.stats.meta_analysis import combine_effects

    y, v = np.asarray(y, float), np.asarray(se, float) ** 2
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = combine_effects(y, v, method_re="dl")
    re = r.tau2 > 0
    est = float(r.mean_effect_re if re else r.mean_effect_fe)
    se_ = float(r.sd_eff_w_re if re else r.sd_eff_w_fe)
    w = 1 / v
    q = float(np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2))
    df = len(y) - 1
    return dict(k=len(y), estimate=est, se=se_, ci_low=est - Z * se_, ci_high=est + Z * se_,
                tau2=max(0.0, float(r.tau2)), i2=max(0.0, (q - df) / q) if q > 0 else 0.0, q=q, q_df=df,
                q_p=float(stats.chi2.sf(q, df)))


def test_pool_of_identical_estimates_has_q_zero_and_i2_zero():
    """Equal estimates: Q = 0 exactly, so I² must be 0 (not 0/0) and the Q test's p is 1."""
    got = compare.pool([0.0, 0.0, 0.0], [0.1, 0.2, 0.3])
    assert got["q"] == 0.0 and got["i2"] == 0.0 and got["tau2"] == 0.0
    assert got["q_p"] == pytest.approx(1.0) and got["estimate"] == 0.0
    assert got["se"] == pytest.approx(1 / math.sqrt(1 / 0.01 + 1 / 0.04 + 1 / 0.09), rel=1e-12)


def _copy_experiment(name, dst, dataset=None, seeds=None, as_name=None):
    """experiment.json and tables/effects.csv of a committed experiment (what compare reads),
    optionally under another dataset, seeds or name."""
    import json
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "results" / name
    (dst / "tables").mkdir(parents=True)
    doc = json.loads((src / "experiment.json").read_text())
    if dataset is not None:
        doc["experiment"]["dataset"] = dataset
    if seeds is not None:
        doc["seeds"] = doc["experiment"]["seeds"] = list(seeds)
    if as_name is not None:
        doc["experiment"]["name"] = as_name
    (dst / "experiment.json").write_text(json.dumps(doc))
    shutil.copy(src / "tables" / "effects.csv", dst / "tables" / "effects.csv")
    return dst


def _groups_by_hand(docs):
    """Seed groups from (name, dataset, seeds): connected components of "same dataset and a
    seed in common", by repeated merging of sets."""
    comps = [({n}, d, set(s)) for n, d, s in docs]
    merged = True
    while merged:
        merged = False
        for i in range(len(comps)):
            for j in range(i + 1, len(comps)):
                if comps[i][1] == comps[j][1] and comps[i][2] & comps[j][2]:
                    a, b = comps[i], comps.pop(j)
                    comps[i] = (a[0] | b[0], a[1], a[2] | b[2])
                    merged = True
                    break
            if merged:
                break
    return [c[0] for c in comps]


def _composite_by_hand(est, se):
    """The mean of correlated estimates and its SE from the full covariance matrix at
    correlation 1 (Σ = se seᵀ, weights 1/m): Borenstein et al. 2009, eq. 24.3."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    w = np.full(len(est), 1 / len(est))
    return float(w @ est), math.sqrt(float(w @ np.outer(se, se) @ w))


def test_by_experiment_and_pooled_frames_match_the_effects_tables_and_combine_effects(tmp_path):
    """The by-experiment rows are the experiments' effects rows with an unadjusted normal
    interval est ± z·se; per hack, the experiments that share seeds on one dataset are
    averaged into one composite (correlation 1) and the composites of the seed groups are
    pooled as combine_effects pools them; a hack in one group is listed with no numbers."""
    import json

    names = ("default", "fashion-mnist-1k", "bf16-check-1k", "label-smoothing-sides", "mnist-5k-quick",
             "stacked-mnist-5k")
    exps = [compare.load_experiment(_copy_experiment(n, tmp_path / n)) for n in names]
    by = compare.by_experiment_frame(exps)
    for e in exps:
        eff = pd.read_csv(tmp_path / e.path.name / "tables" / "effects.csv")
        mine = by[by["experiment"] == e.name].reset_index(drop=True)
        assert len(mine) == len(eff)
        for c in ("estimate", "se", "ci_low", "ci_high"):
            np.testing.assert_allclose(mine[c], eff[c].astype(float), rtol=1e-12)
        np.testing.assert_allclose(mine["z_low"], eff["estimate"] - Z * eff["se"], rtol=1e-12)
        np.testing.assert_allclose(mine["z_high"], eff["estimate"] + Z * eff["se"], rtol=1e-12)
        assert list(mine["seeds"]) == [f"{int(a)}/{int(b)}" for a, b in zip(eff["n_on"], eff["n_off"])]
        assert list(mine["contrast"]) == [f"{a} vs {b}" for a, b in zip(eff["on"], eff["off"])]
        assert list(mine["verdict"]) == list(eff["verdict"]) and list(mine["scale"]) == list(eff["scale"])
    docs = []
    for n in names:
        d = json.loads((tmp_path / n / "experiment.json").read_text())
        docs.append((d["experiment"]["name"], d["experiment"]["dataset"], d["seeds"]))
    groups = _groups_by_hand(docs)
    assert sorted(map(len, groups)) == [1, 1, 4]  # the Fashion-MNIST four share seeds 0-2
    group_of = {n: i for i, g in enumerate(groups) for n in g}
    pooled = compare.pooled_frame(by)
    # one row per (metric, hack), in the order of first appearance (the experiments' order)
    assert list(zip(pooled["metric"], pooled["hack"])) == list(dict.fromkeys(zip(by["metric"], by["hack"])))
    n_pooled = 0
    for _, p in pooled.iterrows():
        g = by[(by["metric"] == p["metric"]) & (by["hack"] == p["hack"])]
        assert p["experiments"] == ";".join(g["experiment"])
        parts = {}
        for _, r in g.iterrows():
            parts.setdefault(group_of[r["experiment"]], []).append(r)
        assert p["k"] == len(parts)
        assert sorted(p["groups"].split(";")) == sorted("+".join(r["experiment"] for r in rs) for rs in parts.values())
        if len(parts) < 2:
            assert np.isnan(p["estimate"]) and p["method"] == "not pooled"
            continue
        n_pooled += 1
        assert p["method"] == compare.METHOD
        comp = [_composite_by_hand([r["estimate"] for r in rs], [r["se"] for r in rs]) for rs in parts.values()]
        for k, v in _dl([c[0] for c in comp], [c[1] for c in comp]).items():
            assert float(p[k]) == pytest.approx(v, rel=1e-9, abs=1e-13), (p["hack"], k)
    assert n_pooled >= 3 and (pooled["k"] == 1).any() and (pooled["k"] == 3).any()


def test_seed_groups_join_shared_seeds_on_one_dataset_and_nothing_else(tmp_path):
    """Same dataset and a seed in common: one group, transitively (a~b, b~c, a and c disjoint);
    disjoint seeds on one dataset, or the same seeds on another dataset: separate groups."""
    spec = {"a": ("fashion-mnist", [0, 1, 2]), "b": ("fashion-mnist", [2, 3]), "c": ("fashion-mnist", [3, 4, 5]),
            "d": ("fashion-mnist", [10, 11, 12]), "e": ("mnist", [0, 1, 2]), "f": ("mnist", [5])}
    exps = [compare.load_experiment(_copy_experiment("default", tmp_path / n, dataset=ds, seeds=sd, as_name=n))
            for n, (ds, sd) in spec.items()]
    labels = compare.seed_groups(exps)
    got = {}
    for n, lab in labels.items():
        got.setdefault(lab, set()).add(n)
    want = _groups_by_hand([(n, ds, sd) for n, (ds, sd) in spec.items()])
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, want)) == [["a", "b", "c"], ["d"], ["e"], ["f"]]
    # the label: dataset and the group's seeds, and its first experiment where a dataset has two groups
    assert [labels[n] for n in "adef"] == ["fashion-mnist, seeds 0–5 (a…)", "fashion-mnist, seeds 10–12 (d…)",
                                           "mnist, seeds 0–2 (e…)", "mnist, seed 5 (f…)"]


def test_experiments_sharing_seeds_are_pooled_as_one_composite(tmp_path):
    """Two copies of one experiment (as `reuse` or a rerun in another precision would give) and a
    third on another dataset: the copies count once, as their composite; with disjoint seeds
    the same three are three groups. The composite's SE is the correlation-1 bound: never below
    any single SE of the group's, and equal to the shared SE when all are equal."""
    a = _copy_experiment("default", tmp_path / "a", as_name="a")
    b = _copy_experiment("default", tmp_path / "b", as_name="b")
    c = _copy_experiment("mnist-5k-quick", tmp_path / "c", as_name="c")
    exps = [compare.load_experiment(x) for x in (a, b, c)]
    pooled = compare.pooled_frame(compare.by_experiment_frame(exps)).set_index("hack")
    only_c = compare.pooled_frame(compare.by_experiment_frame([exps[0], exps[2]])).set_index("hack")
    for hack in ("separate-batches", "batch-norm"):
        assert pooled.loc[hack, "k"] == 2 and pooled.loc[hack, "groups"] == "a+b;c"
        for k in ("estimate", "se", "tau2", "i2", "q"):  # a copy adds no evidence
            assert float(pooled.loc[hack, k]) == pytest.approx(float(only_c.loc[hack, k]), rel=1e-12, abs=1e-15)
    alone = compare.pooled_frame(compare.by_experiment_frame(exps[:2]))  # one group: listed, not pooled
    assert (alone["k"] == 1).all() and (alone["groups"] == "a+b").all() and alone["estimate"].isna().all()
    cells = compare.main_table(compare.by_experiment_frame(exps[:2]), alone, FID, ["a", "b"])
    assert set(cells["pooled (random effects)"]) == {"one seed group: not pooled"}
    d = _copy_experiment("default", tmp_path / "d", seeds=[20, 21, 22], as_name="d")
    three = compare.pooled_frame(compare.by_experiment_frame(exps[:1] + [compare.load_experiment(d), exps[2]]))
    assert (three.set_index("hack").loc[["separate-batches", "batch-norm"], "k"] == 3).all()
    est, se = compare.composite([0.1, 0.3, -0.2], [0.05, 0.2, 0.1])
    want = _composite_by_hand([0.1, 0.3, -0.2], [0.05, 0.2, 0.1])
    assert (est, se) == (pytest.approx(want[0], rel=1e-12), pytest.approx(want[1], rel=1e-12))
    assert se > math.sqrt(1 / sum(1 / x ** 2 for x in (0.05, 0.2, 0.1)))  # wider than treating them as independent


def test_main_table_cells_carry_each_experiments_numbers_and_the_pooled_ones():
    """One row per hack of the metric asked for: each experiment's verdict, ratio and adjusted
    interval (– where the hack was not measured), the pooled ratio and 95% interval with τ²
    and I² (hand DerSimonian-Laird), or 'not pooled' for a hack in one experiment."""
    from ablate.report import tables

    rows = [("h1", "a", 0.30, 0.05, "hurts"), ("h1", "b", -0.10, 0.08, "undecided"),
            ("h1", "c", 0.05, 0.10, "undecided"), ("h2", "b", -0.20, 0.04, "helps"),
            ("h3", "a", -0.25, 0.06, "helps"), ("h3", "c", 0.02, 0.09, "undecided")]  # h3: exactly two
    by = pd.DataFrame([{"metric": FID, "hack": h, "experiment": e, "scale": "log", "verdict": v,
                        "estimate": est, "se": se, "ci_low": est - 2.5 * se, "ci_high": est + 2.5 * se}
                       for h, e, est, se, v in rows])
    other = by.iloc[[0, 1]].assign(metric="best.inception.fid", estimate=[9.0, 9.5])  # never in FID's table
    by = pd.concat([by, other], ignore_index=True)
    table = compare.main_table(by, compare.pooled_frame(by), FID, ["a", "b", "c"]).set_index("hack")
    assert list(table.index) == ["h1", "h2", "h3"]

    def cell(v, est, se):
        return f"{v} {tables._effect_text('log', est)} {tables._interval_text('log', est - 2.5 * se, est + 2.5 * se)}"

    for h, e, est, se, v in rows:
        assert table.loc[h, e] == cell(v, est, se), (h, e)
    assert table.loc["h2", "a"] == "–" and table.loc["h2", "c"] == "–" and table.loc["h3", "b"] == "–"
    for h, est, se in (("h1", [0.30, -0.10, 0.05], [0.05, 0.08, 0.10]), ("h3", [-0.25, 0.02], [0.06, 0.09])):
        want = _dl(est, se)  # two experiments are pooled too
        assert 0.1 < want["i2"] < 0.9 and want["tau2"] > 0, h
        assert table.loc[h, "pooled (random effects)"] == \
            f"{tables._effect_text('log', want['estimate'])} {tables._interval_text('log', want['ci_low'], want['ci_high'])}"
        assert table.loc[h, "τ²"] == tables.num(want["tau2"])
        assert table.loc[h, "I²"] == f"{round(100 * want['i2'])}%"
    assert list(table.loc["h2", ["pooled (random effects)", "τ²", "I²"]]) == ["one experiment: not pooled", "–", "–"]


def _two_hacks(codes, n_seeds=1, rng_seed=3):
    rng = np.random.default_rng(rng_seed)
    return pd.DataFrame([{"status": "done", "seed": s, "hack:a": a > 0, "hack:b": b > 0,
                          FID: math.exp(3.0 - 0.2 * a + 0.1 * b + 0.05 * s + rng.normal(0, 0.02))}
                         for s in range(n_seeds) for a, b in codes])


TWO = SimpleNamespace(hacks=("a", "b"))


def test_factorial_without_runs_for_the_interaction_fits_main_effects_only():
    """2^2 with one seed: the interaction is resolved but leaves no residual df, so the fit is
    main effects only (1 df), as the formula OLS y ~ a + b gives."""
    frame = _two_hacks([(-1, -1), (1, -1), (-1, 1), (1, 1)])
    fit = factorial_effects(frame, TWO, FID)
    d = frame.assign(y=np.log(frame[FID]), a=np.where(frame["hack:a"], 1.0, -1.0),
                     b=np.where(frame["hack:b"], 1.0, -1.0))
    ref = smf.ols("y ~ a + b", data=d).fit()
    t = fit.table.set_index("term")
    assert list(t.index) == ["a", "b"] and fit.aliased == ("a×b",) and fit.df_resid == 1
    assert fit.note == "too few runs to estimate interactions: main effects only"
    for h in "ab":
        assert t.loc[h, "effect"] == pytest.approx(2 * ref.params[h], abs=1e-10)
        assert t.loc[h, "se"] == pytest.approx(2 * ref.bse[h], rel=1e-9)
    se_main = float(np.median([2 * ref.bse[h] for h in "ab"]))
    assert fit.mde == pytest.approx(se_main * (stats.t.ppf(1 - 0.05 / 4, 1) + stats.t.ppf(0.80, 1)), rel=1e-9)


def test_factorial_with_no_residual_df_or_aliased_main_effects_is_not_fitted():
    """Three variants of two hacks, one run each: 3 parameters, 0 residual df; and hacks
    a and b always switched together: their main effects are aliased. Neither is fitted."""
    fit = factorial_effects(_two_hacks([(-1, -1), (1, -1), (-1, 1)]), TWO, FID)
    assert fit.table.empty and fit.note == "no residual degrees of freedom: add seeds or variants"
    assert fit.n_runs == 3 and fit.n_variants == 3 and fit.aliased == ("a×b",)
    assert (fit.metric, fit.scale) == (FID, "log")
    fit = factorial_effects(_two_hacks([(-1, -1), (1, 1)], n_seeds=3), TWO, FID)
    assert fit.table.empty and "does not resolve every main effect" in fit.note
    assert fit.n_runs == 6 and fit.n_variants == 2 and (fit.metric, fit.scale) == (FID, "log")


def test_half_fraction_of_four_hacks_aliases_every_interaction_and_fits_the_mains():
    """2^(4-1) with d = abc and 3 seeds: each two-factor interaction is aliased with another
    (ab = cd, ...), so none is fitted; the main effects are those of y ~ a + b + c + d + seed."""
    rng = np.random.default_rng(5)
    rows = []
    for s in range(3):
        for a, b, c in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).T.reshape(-1, 3):
            d = a * b * c
            rows.append({"status": "done", "seed": s, "hack:a": a > 0, "hack:b": b > 0, "hack:c": c > 0,
                         "hack:d": d > 0, FID: math.exp(3 - 0.1 * a + 0.05 * d + 0.1 * s + rng.normal(0, 0.02))})
    frame = pd.DataFrame(rows)
    fit = factorial_effects(frame, SimpleNamespace(hacks=("a", "b", "c", "d")), FID)
    assert sorted(fit.aliased) == ["a×b", "a×c", "a×d", "b×c", "b×d", "c×d"] and fit.note == ""
    x = frame.assign(y=np.log(frame[FID]), **{h: np.where(frame[f"hack:{h}"], 1.0, -1.0) for h in "abcd"})
    ref = smf.ols("y ~ a + b + c + d + C(seed)", data=x).fit()
    t = fit.table.set_index("term")
    assert list(t.index) == ["a", "b", "c", "d"] and fit.df_resid == int(ref.df_resid)
    for h in "abcd":
        assert t.loc[h, "effect"] == pytest.approx(2 * ref.params[h], abs=1e-10)


def test_a_pooled_ratio_over_opposite_verdicts_within_a_seed_group_is_marked():
    """Two experiments of one seed group, one 'helps' and one 'hurts' (another budget), and a
    third group: the pooled cell carries the mark; without the opposition it does not."""
    rows = [("h", "a", -0.30, 0.05, "helps", "g1"), ("h", "b", 0.25, 0.06, "hurts", "g1"),
            ("h", "c", 0.02, 0.09, "undecided", "g2"),
            ("k", "a", -0.30, 0.05, "helps", "g1"), ("k", "b", -0.10, 0.06, "undecided", "g1"),
            ("k", "c", 0.02, 0.09, "undecided", "g2")]
    by = pd.DataFrame([{"metric": FID, "hack": h, "experiment": e, "scale": "log", "verdict": v,
                        "estimate": est, "se": se, "ci_low": est - 2.5 * se, "ci_high": est + 2.5 * se,
                        "seed_group": g} for h, e, est, se, v, g in rows])
    pooled = compare.pooled_frame(by)
    assert list(pooled["groups"]) == ["a+b;c", "a+b;c"] and (pooled["k"] == 2).all()
    table = compare.main_table(by, pooled, FID, ["a", "b", "c"]).set_index("hack")
    assert table.loc["h", "pooled (random effects)"].endswith(compare.OPPOSED)
    assert not table.loc["k", "pooled (random effects)"].endswith(compare.OPPOSED)
