"""Audit of the newest statistics against computations written here from scratch (numpy,
scipy, statsmodels; nothing from ablate's statistics), on the committed run stores of
results/label-smoothing-sides and results/noisy-labels-dose (axes, adaptive seeds, two looks)
and on results/SUMMARY.md's pooled table:

* per (hack, level): the contrast of log FID in OLS on the unique runs (cells + seed blocks),
  its standard error and residual df;
* the verdicts, Holm levels and repeated confidence intervals of both looks, with the
  O'Brien-Fleming-type Lan-DeMets boundaries of two looks by one-dimensional quadrature
  (not the recursive Simpson grid of ``report/boundaries.py``);
* the heterogeneity F-test by restricted vs unrestricted residual sums of squares, Holm
  across hacks, and the robust verdict's rules (Holm-adjusted p, strict ``< alpha``);
* the committed ``tables/effects.csv`` and ``tables/levels.csv`` against all of these;
* ``ablate compare``'s pooling (DerSimonian-Laird by hand) and its exclusions.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import integrate, linalg, optimize, stats

from ablate.report import across, compare, levels, sequential
from ablate.report.context import _effect_rows
from ablate.report.results import Results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # report_levels_synthetic
AXES_EXPERIMENTS = ("label-smoothing-sides", "noisy-labels-dose")
METRIC = "best.classifier.fid"
ALPHA, MARGIN = 0.05, math.log(1.1)


# --------------------------------------------------------------------------------------
# Inputs: the committed store (copied: the test opens nothing under results/)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=AXES_EXPERIMENTS)
def committed(request, tmp_path_factory):
    name = request.param
    src = ROOT / "results" / name
    dst = tmp_path_factory.mktemp(name) / name
    dst.mkdir()
    for f in ("experiment.json", "runs.sqlite"):
        shutil.copy(src / f, dst / f)
    res = Results.load(dst)
    doc = json.loads((src / "experiment.json").read_text())
    return name, res, doc


def _runs(doc, res) -> pd.DataFrame:
    """Unique finished runs: cell (variants sharing a run key are one cell), seed, y = log FID."""
    f = res.frame
    first: dict[str, str] = {}
    for v, k in zip(f["variant"], f["key"]):
        first.setdefault(k, v)
    # a cell is named by the first variant of any of its keys (union over shared keys)
    cell = {}
    for v, k in zip(f["variant"], f["key"]):
        cell.setdefault(v, first[k])
    for _ in range(len(cell)):  # close transitively
        cell = {v: cell.get(c, c) for v, c in cell.items()}
    done = f[(f["status"] == "done") & np.isfinite(f[METRIC])].drop_duplicates("key")
    return pd.DataFrame({"cell": done["variant"].map(cell).to_numpy(), "seed": done["seed"].astype(int).to_numpy(),
                         "y": np.log(done[METRIC].to_numpy(float))}), cell


def _rows(doc):
    return [(c["hack"] + (f" @ {c['level']}" if c.get("level") else ""), c["hack"], c["on"], c["off"])
            for c in doc["design"]["comparisons"]]


def _fit(data: pd.DataFrame):
    d = data.assign(cell=pd.Categorical(data["cell"]))
    return smf.ols("y ~ 0 + C(cell) + C(seed)", d).fit()


def _L(fit, on, off):
    names = list(fit.params.index)
    L = np.zeros(len(names))
    L[names.index(f"C(cell)[{on}]")] += 1
    L[names.index(f"C(cell)[{off}]")] -= 1
    return L


# --------------------------------------------------------------------------------------
# Group-sequential boundaries of two looks, by quadrature
# --------------------------------------------------------------------------------------
def _spent(t, a):
    return 2 * stats.norm.sf(stats.norm.isf(a / 2) / math.sqrt(t))


def _two_look_boundaries(level, t1, t2, two_sided):
    a = level / 2 if two_sided else level
    c1 = stats.norm.isf(_spent(t1, a))
    rho = math.sqrt(t1 / t2)
    inc = _spent(t2, a) - _spent(t1, a)
    lo = -c1 if two_sided else -np.inf

    def cross(c2):
        f = lambda z: stats.norm.pdf(z) * stats.norm.sf((c2 - rho * z) / math.sqrt(1 - rho ** 2))  # noqa: E731
        return integrate.quad(f, lo, c1, epsabs=1e-14, epsrel=1e-12, limit=200)[0] - inc

    return c1, optimize.brentq(cross, 0.5, 12, xtol=1e-13)


def _bound(level, look, fractions, two_sided):
    if look == 1:
        return stats.norm.isf(_spent(fractions[0], level / 2 if two_sided else level))
    return _two_look_boundaries(level, fractions[0], fractions[1], two_sided)[1]


def _z(t, df):  # the normal deviate with the same one-sided p as Student t
    return math.copysign(stats.norm.isf(stats.t.sf(abs(t), df)), t)


def _t(z, df):
    return stats.t.isf(stats.norm.sf(z), df)


def _replay(doc, res):
    """The adaptive looks (at most two here) written from the procedure's description:
    Holm in its graphical group-sequential form per family, OBF-type spending, t -> z by p."""
    runs, cell = _runs(doc, res)
    rows = _rows(doc)
    m = len(rows)
    sp = doc["seed_policy"]
    planned = list(range(sp["min"], sp["max"] + 1, sp["step"]))
    fractions = [n / sp["max"] for n in planned]
    n_looks = 0  # looks planned (a later look adds seeds) whose runs all finished
    for j, k in enumerate(planned):
        if (j and not (res.frame["seed"] >= planned[j - 1]).any()) or not (
                res.frame[res.frame["seed"] < k]["status"] == "done").all():
            break
        n_looks += 1
    assert n_looks <= 2, "this replay has two-look boundaries only"
    alloc = {v["name"]: planned[0] for v in doc["design"]["variants"]}
    active = {"d": {r[0] for r in rows}, "e": {r[0] for r in rows}}
    decided, latest = {}, {}
    for look in range(1, n_looks + 1):
        cell_alloc: dict[str, int] = {}
        for v, n in alloc.items():
            cell_alloc[cell[v]] = max(cell_alloc.get(cell[v], 0), n)
        fit = _fit(runs[runs["seed"] < runs["cell"].map(cell_alloc)])
        est = {}
        for row, _, on, off in rows:
            tt = fit.t_test(_L(fit, cell[on], cell[off]))
            est[row] = (float(tt.effect[0]), float(tt.sd[0, 0]), int(fit.df_resid))
        open_ = [r[0] for r in rows if r[0] not in decided]
        lev, rej = {"d": {}, "e": {}}, {"d": set(), "e": set()}
        for fam in ("d", "e"):
            while True:
                level = ALPHA / max(len(active[fam]), 1)
                c = _bound(level, look, fractions, fam == "d")
                new = []
                for h in open_:
                    if h not in active[fam]:
                        continue
                    e, se, df = est[h]
                    lev[fam][h] = level
                    hit = (abs(_z(e / se, df)) >= c if fam == "d" else
                           min(_z((e + MARGIN) / se, df), _z((MARGIN - e) / se, df)) >= c)
                    if hit:
                        new.append(h)
                if not new:
                    break
                rej[fam] |= set(new)
                active[fam] -= set(new)
        for h in open_:
            e, se, df = est[h]
            ld, le = lev["d"].get(h, ALPHA / m), lev["e"].get(h, ALPHA / m)
            hd = _t(_bound(ld, look, fractions, True), df) * se
            he = _t(_bound(le, look, fractions, False), df) * se
            eq, dif = h in rej["e"], h in rej["d"]
            verdict = "equivalent" if eq else ("helps" if e < 0 else "hurts") if dif else "undecided"
            latest[h] = dict(verdict=verdict, look=look if verdict != "undecided" else None, estimate=e, se=se,
                             df=df, ci_low=e - hd, ci_high=e + hd, eq_low=e - he, eq_high=e + he, level=ld,
                             eq_level=le, also_different=eq and dif)
            if verdict != "undecided":
                decided[h] = latest[h]
        for row, _, on, off in rows:
            if row not in decided and look < len(planned):
                for v in (on, off):
                    alloc[v] = max(alloc[v], planned[look])
    return {r[0]: decided.get(r[0]) or latest[r[0]] for r in rows}


def _heterogeneity(doc, res):
    """F-test of equal per-level contrasts, restricted vs unrestricted RSS; Holm across hacks."""
    runs, cell = _runs(doc, res)
    fit = _fit(runs)
    X, y = fit.model.exog, fit.model.endog
    by: dict[str, list[np.ndarray]] = {}
    for _, hack, on, off in _rows(doc):
        L = _L(fit, cell[on], cell[off])
        ls = by.setdefault(hack, [])
        if not any(np.array_equal(L, x) for x in ls):
            ls.append(L)
    out = {}
    for hack, ls in by.items():
        if len(ls) < 2:
            continue
        R = np.array([x - ls[0] for x in ls[1:]])
        N = linalg.null_space(R)
        g = np.linalg.lstsq(X @ N, y, rcond=None)[0]
        rss_r = float(np.sum((y - X @ N @ g) ** 2))
        q, df = len(R), int(fit.df_resid)
        f = ((rss_r - fit.ssr) / q) / (fit.ssr / df)
        out[hack] = dict(levels=len(ls), f=f, df_num=q, df_den=df, p=float(stats.f.sf(f, q, df)))
    ps = sorted(out, key=lambda h: out[h]["p"])
    running = 0.0
    for i, h in enumerate(ps):  # Holm by hand
        running = max(running, min(1.0, (len(ps) - i) * out[h]["p"]))
        out[h]["p_holm"] = running
    return out


def _robust_by_hand(verdicts: list[str], level_names: list[str], p_holm: float) -> str:
    text = "; ".join(f"{v} at {' / '.join(n for n, w in zip(level_names, verdicts) if w == v)}"
                     for v in ("helps", "hurts", "equivalent", "undecided") if v in verdicts)
    if len(set(verdicts)) == 1 and verdicts[0] != "undecided":
        return f"{verdicts[0]} at every level"
    if p_holm < ALPHA:
        return f"depends on the level ({text})"
    return "undecided" if set(verdicts) == {"undecided"} else f"mixed: {text}"


# --------------------------------------------------------------------------------------
def test_two_look_boundaries_by_quadrature_match_the_recursive_integration():
    for level, two in ((0.0125, True), (0.05 / 3, True), (0.025, False), (0.05, False)):
        c1, c2 = _two_look_boundaries(level, 3 / 8, 4 / 8, two)
        b = sequential.boundaries(level, tuple(n / 8 for n in range(3, 9)), two)
        assert b[0] == pytest.approx(c1, rel=1e-12) and b[1] == pytest.approx(c2, rel=1e-8)


def test_sequential_decisions_match_an_independent_replay(committed):
    name, res, doc = committed
    mine = _replay(doc, res)
    got = {d.hack: d for d in sequential.analyse(res.frame, res.meta).decisions}
    table = pd.read_csv(ROOT / "results" / name / "tables" / "effects.csv").set_index("hack")
    assert list(got) == list(mine) == list(table.index)
    for h, want in mine.items():
        d, t = got[h], table.loc[h]
        assert (d.verdict, d.look, d.also_different, d.df) == (want["verdict"], want["look"],
                                                               want["also_different"], want["df"]), h
        assert (t["verdict"], int(t["look"]), int(t["df"])) == (want["verdict"], want["look"], want["df"])
        for k in ("estimate", "se", "ci_low", "ci_high", "eq_low", "eq_high", "level", "eq_level"):
            assert getattr(d, k) == pytest.approx(want[k], rel=1e-8, abs=1e-12), (h, k)
            assert float(t[k]) == pytest.approx(want[k], rel=1e-8, abs=1e-12), (h, k)
        # the naive single-look p of the table: two-sided Student t on the residual df
        assert float(t["p"]) == pytest.approx(2 * stats.t.sf(abs(want["estimate"] / want["se"]), want["df"]),
                                              rel=1e-8)


def test_noisy_labels_dose_holm_levels_are_shared_as_stated():
    """At look 2 p = 0.2 is rejected at α/4 in the difference family and the other three
    levels are re-tested at α/3; in the equivalence family the three are rejected at α/4 and
    p = 0.2 keeps its share, re-tested at α."""
    t = pd.read_csv(ROOT / "results" / "noisy-labels-dose" / "tables" / "effects.csv").set_index("at_level")
    assert t.loc["noisy-labels.p=0.2", "level"] == pytest.approx(0.05 / 4)
    assert t.loc["noisy-labels.p=0.2", "eq_level"] == pytest.approx(0.05)
    for p in ("0.01", "0.05", "0.1"):
        assert t.loc[f"noisy-labels.p={p}", "level"] == pytest.approx(0.05 / 3)
        assert t.loc[f"noisy-labels.p={p}", "eq_level"] == pytest.approx(0.05 / 4)


def test_heterogeneity_and_robust_verdict_match_by_hand_and_the_committed_table(committed):
    name, res, doc = committed
    mine = _heterogeneity(doc, res)
    het = levels.heterogeneity(res.frame, res.meta, METRIC).set_index("hack")
    table = pd.read_csv(ROOT / "results" / name / "tables" / "levels.csv")
    assert set(het.index) == set(mine)
    for hack, want in mine.items():
        r = het.loc[hack]
        assert (int(r["levels"]), int(r["df_num"]), int(r["df_den"])) == (want["levels"], want["df_num"], want["df_den"])
        for k in ("f", "p", "p_holm"):
            assert float(r[k]) == pytest.approx(want[k], rel=1e-8), (hack, k)
        rows = table[table["hack"] == hack]
        assert (rows["het_df_num"] == want["df_num"]).all() and (rows["het_df_den"] == want["df_den"]).all()
        for k, col in (("f", "het_f"), ("p", "het_p"), ("p_holm", "het_p_holm")):
            np.testing.assert_allclose(rows[col].to_numpy(float), want[k], rtol=1e-8)
        replay = _replay(doc, res)
        verdicts = [replay[row]["verdict"] for row in rows["row"]]
        assert list(rows["verdict"]) == verdicts
        want_v = _robust_by_hand(verdicts, list(rows["level"]), want["p_holm"])
        assert set(rows["robust_verdict"]) == {want_v}
        # and the code, from its own inputs
        eff = _effect_rows(res.frame, res.meta, sequential.analyse(res.frame, res.meta), sensitivity=False)
        lv = levels.per_level(eff, res.meta)
        got = levels.robust(lv, het.reset_index(), ALPHA).set_index("hack").loc[hack, "verdict"]
        assert got == want_v
    if name == "noisy-labels-dose":  # the dose axis and doses, in level order
        assert list(table["dose"]) == [0.01, 0.05, 0.1, 0.2] and set(table["dose_axis"]) == {"noisy-labels.p"}


@pytest.mark.parametrize("p, p_holm, want", [
    (0.03, 0.06, "mixed: helps at a; undecided at b"),  # raw p < α but Holm-adjusted not: no claim
    (0.01, 0.05, "mixed: helps at a; undecided at b"),  # strict: p_holm = α does not reject
    (0.01, 0.0499, "depends on the level (helps at a; undecided at b)"),
])
def test_robust_verdict_uses_the_holm_adjusted_p_strictly_below_alpha(p, p_holm, want):
    lv = pd.DataFrame({"hack": ["h", "h"], "level": ["a", "b"], "verdict": ["helps", "undecided"]})
    het = pd.DataFrame([{"hack": "h", "levels": 2, "f": 5.0, "df_num": 1, "df_den": 9, "p": p, "p_holm": p_holm}])
    out = levels.robust(lv, het, ALPHA).iloc[0]
    assert out["verdict"] == want
    assert (out["p"], out["p_holm"], out["df_num"], out["df_den"]) == (p, p_holm, 1, 9)


def test_levels_display_names_numerator_then_denominator_df():
    lv = pd.DataFrame({"hack": ["h", "h"], "level": ["a", "b"], "row": ["h @ a", "h @ b"], "on": ["A", "C"],
                       "off": ["B", "B"], "dose_axis": ["", ""], "dose": [math.nan] * 2, "rest": ["", ""],
                       "scale": ["log", "log"], "verdict": ["helps", "undecided"], "estimate": [-0.2, 0.0],
                       "ci_low": [-0.3, -0.1], "ci_high": [-0.1, 0.1], "n_on": [3, 3], "n_off": [3, 3]})
    het = pd.DataFrame([{"hack": "h", "levels": 2, "f": 7.5, "df_num": 1, "df_den": 12, "p": 0.018,
                         "p_holm": 0.036}])
    t = levels.table(lv, levels.robust(lv, het, ALPHA))
    d = across.display(t)
    cell = d.iloc[0]["same effect at every level? (F-test)"]
    assert cell.startswith("F(1, 12) = 7.5") and "p = 0.018" in cell and "Holm p = 0.036" in cell
    assert d.iloc[0]["over the levels"].startswith("depends on the level") and d.iloc[1]["over the levels"] == ""


# --------------------------------------------------------------------------------------
# ablate compare
# --------------------------------------------------------------------------------------
def _dl(y, se):
    y, v = np.asarray(y, float), np.asarray(se, float) ** 2
    w = 1 / v
    fe = np.sum(w * y) / np.sum(w)
    q = float(np.sum(w * (y - fe) ** 2))
    k = len(y)
    tau2 = max(0.0, (q - (k - 1)) / (np.sum(w) - np.sum(w ** 2) / np.sum(w)))
    ws = 1 / (v + tau2)
    est = float(np.sum(ws * y) / np.sum(ws))
    se_ = math.sqrt(1 / np.sum(ws))
    z = stats.norm.ppf(0.975)
    return dict(k=k, estimate=est, se=se_, ci_low=est - z * se_, ci_high=est + z * se_, tau2=tau2,
                i2=max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0, q=q, q_df=k - 1, q_p=float(stats.chi2.sf(q, k - 1)))


def _seed_group_of(names):
    """Each experiment's seed group by hand from its experiment.json: experiments on one dataset
    with a seed in common (transitively) form one group, numbered by first member."""
    docs = {n: json.loads((ROOT / "results" / n / "experiment.json").read_text()) for n in names}
    group = {n: i for i, n in enumerate(names)}
    changed = True
    while changed:
        changed = False
        for a in names:
            for b in names:
                da, db = docs[a], docs[b]
                if (group[a] != group[b] and da["experiment"]["dataset"] == db["experiment"]["dataset"]
                        and set(da["seeds"]) & set(db["seeds"])):
                    old, new = max(group[a], group[b]), min(group[a], group[b])
                    group = {n: new if g == old else g for n, g in group.items()}
                    changed = True
    return group


def test_committed_summary_pooled_columns_match_dersimonian_laird_by_hand():
    """SUMMARY's pooled columns: per hack, the experiments sharing seeds on one dataset
    averaged (mean log ratio, SE at correlation 1 = the mean SE), then DerSimonian–Laird by
    hand over those composites."""
    pooled = pd.read_csv(ROOT / "results" / "summary" / "tables" / "pooled.csv")
    by = pd.read_csv(ROOT / "results" / "summary" / "tables" / "by_experiment.csv")
    assert len(pooled) and (pooled["k"] >= 2).any()
    group = _seed_group_of(list(dict.fromkeys(by["experiment"])))
    assert len(set(group.values())) >= 3
    for _, p in pooled.iterrows():
        g = by[(by["metric"] == p["metric"]) & (by["hack"] == p["hack"])]
        assert p["experiments"] == ";".join(g["experiment"])
        for _, r in g.iterrows():  # the by-experiment rows are the experiments' own effects rows
            e = pd.read_csv(ROOT / "results" / r["experiment"] / "tables" / "effects.csv").set_index("hack").loc[r["hack"]]
            assert (r["estimate"], r["se"]) == (pytest.approx(e["estimate"], rel=1e-9), pytest.approx(e["se"], rel=1e-9))
            assert r["z_low"] == pytest.approx(e["estimate"] - stats.norm.ppf(0.975) * e["se"], rel=1e-8)
        parts = {}
        for _, r in g.iterrows():
            parts.setdefault(group[r["experiment"]], []).append((r["estimate"], r["se"]))
        assert p["k"] == len(parts)
        if p["k"] < 2:
            assert np.isnan(p["estimate"]) and p["method"] == "not pooled"
            continue
        comp = [(sum(e for e, _ in v) / len(v), math.sqrt(sum(a * b for _, a in v for _, b in v)) / len(v))
                for v in parts.values()]
        want = _dl([c[0] for c in comp], [c[1] for c in comp])
        for k, v in want.items():
            assert float(p[k]) == pytest.approx(v, rel=1e-8, abs=1e-12), (p["hack"], k)


def test_pool_truncates_a_negative_tau2_to_the_fixed_effect_result():
    y, se = [0.02, 0.01, 0.03], [0.10, 0.12, 0.09]
    got = compare.pool(y, se)
    w = 1 / np.asarray(se) ** 2
    assert got["tau2"] == 0.0 and got["i2"] == 0.0
    assert got["estimate"] == pytest.approx(float(np.sum(w * y) / np.sum(w)), rel=1e-12)
    assert got["se"] == pytest.approx(math.sqrt(1 / np.sum(w)), rel=1e-12)


def test_pooled_frame_leaves_out_rows_without_a_positive_finite_se():
    base = dict(metric=METRIC, scale="log")
    by = pd.DataFrame([
        {**base, "hack": "h", "experiment": "a", "estimate": 0.10, "se": 0.05},
        {**base, "hack": "h", "experiment": "b", "estimate": 0.20, "se": 0.04},
        {**base, "hack": "h", "experiment": "c", "estimate": 0.30, "se": 0.0},  # no variance: not pooled
        {**base, "hack": "h", "experiment": "d", "estimate": 0.30, "se": math.nan},
        {**base, "hack": "h", "experiment": "e", "estimate": math.nan, "se": 0.05},
    ])
    p = compare.pooled_frame(by).iloc[0]
    assert p["k"] == 2 and p["experiments"] == "a;b"
    want = _dl([0.10, 0.20], [0.05, 0.04])
    for k in ("estimate", "se", "tau2", "i2", "q", "q_p"):
        assert float(p[k]) == pytest.approx(want[k], rel=1e-10, abs=1e-14), k


def _two_hack_axes(seed: int = 6):
    """Two hacks h1, h2 at levels a, b of an axis; the OFF variant does not see the axis (one
    run at both levels). Seed 6 gives heterogeneity p of 0.033 (h1) and 0.019 (h2): Holm
    adjusts them to 0.038 both, Bonferroni would give 0.066 for h1."""
    from ablate.report.results import Comparison, ExperimentMeta

    rng = np.random.default_rng(seed)
    mu = {"off": 0.0, "h1 @ a": -0.05, "h1 @ b": 0.0, "h2 @ a": 0.02, "h2 @ b": -0.03}
    seed_shift = [0.0, 0.03, -0.02, 0.01]
    rows = []
    for s in range(4):
        for c, m in mu.items():
            y = math.log(30) + m + seed_shift[s] + rng.normal(0, 0.02)
            names = ["off @ a", "off @ b"] if c == "off" else [c]
            for v in names:
                rows.append({"key": f"{c}|{s}", "variant": v, "seed": s, "status": "done", METRIC: math.exp(y)})
    frame = pd.DataFrame(rows)
    comps = tuple(Comparison(f"{h} @ {lv}", f"{h} @ {lv}", f"off @ {lv}", lv) for h in ("h1", "h2") for lv in "ab")
    meta = ExperimentMeta(
        name="x", dataset="fake", design_kind="explicit", hacks=("h1", "h2"),
        variants=tuple((v, ()) for v in dict.fromkeys(frame["variant"])), comparisons=comps,
        seeds=tuple(range(4)), axes={"ax": ("a", "b")}, row_hacks={c.hack: c.hack.split(" @ ")[0] for c in comps})
    data = pd.DataFrame({"cell": [r["key"].split("|")[0] for r in rows],
                         "seed": [r["seed"] for r in rows], "y": [math.log(r[METRIC]) for r in rows],
                         "key": [r["key"] for r in rows]}).drop_duplicates("key")
    return frame, meta, data


def test_heterogeneity_holm_across_hacks_on_distinguishing_data():
    frame, meta, data = _two_hack_axes()
    fit = _fit(data)
    X, y = fit.model.exog, fit.model.endog
    want = {}
    for h in ("h1", "h2"):
        R = (_L(fit, f"{h} @ a", "off") - _L(fit, f"{h} @ b", "off"))[None, :]
        N = linalg.null_space(R)
        g = np.linalg.lstsq(X @ N, y, rcond=None)[0]
        rss_r = float(np.sum((y - X @ N @ g) ** 2))
        f = (rss_r - fit.ssr) / (fit.ssr / fit.df_resid)
        want[h] = (f, float(stats.f.sf(f, 1, fit.df_resid)))
    het = levels.heterogeneity(frame, meta, METRIC).set_index("hack")
    assert list(het.index) == ["h1", "h2"]
    assert (het["df_num"] == 1).all() and (het["df_den"] == 20 - 5 - 3).all() and (het["levels"] == 2).all()
    for h, (f, p) in want.items():
        assert het.loc[h, "f"] == pytest.approx(f, rel=1e-9) and het.loc[h, "p"] == pytest.approx(p, rel=1e-8)
    lo, hi = sorted(p for _, p in want.values())
    holm = max(2 * lo, hi)  # Holm for two: the smaller doubled, the larger max(itself, that)
    assert het["p_holm"].to_numpy() == pytest.approx([holm, holm], rel=1e-9)
    assert holm < ALPHA < 2 * hi  # the data separate Holm from Bonferroni
    # both hacks' per-level verdicts differ: with the Holm p both depend on the level
    lv = pd.DataFrame({"hack": ["h1", "h1", "h2", "h2"], "level": ["a", "b", "a", "b"],
                       "verdict": ["helps", "undecided", "undecided", "helps"]})
    v = levels.robust(lv, het.reset_index(), ALPHA).set_index("hack")["verdict"]
    assert v["h1"].startswith("depends on the level") and v["h2"].startswith("depends on the level")


@pytest.mark.parametrize("verdicts, want", [
    (["helps", "undecided", "helps"], "mixed: helps at a / c; undecided at b"),
    (["equivalent", "equivalent", "hurts"], "mixed: hurts at c; equivalent at a / b"),
    (["hurts", "hurts", "hurts"], "hurts at every level"),
    (["undecided"] * 3, "undecided"),
])
def test_at_every_level_needs_every_level(verdicts, want):
    lv = pd.DataFrame({"hack": ["h"] * 3, "level": ["a", "b", "c"], "verdict": verdicts})
    het = pd.DataFrame([{"hack": "h", "levels": 3, "f": 1.0, "df_num": 2, "df_den": 9, "p": 0.4, "p_holm": 0.4}])
    assert levels.robust(lv, het, ALPHA).iloc[0]["verdict"] == want


# --------------------------------------------------------------------------------------
# Looks that were never planned are not finished looks (bug fixed with this audit)
# --------------------------------------------------------------------------------------
def test_completed_looks_counts_only_planned_looks():
    from ablate.config import SeedPolicy

    policy = SeedPolicy(seeds=(0, 1, 2, 3), adaptive=True, min=2, max=4, step=1)
    frame = pd.DataFrame({"variant": ["A", "B"] * 2, "seed": [0, 0, 1, 1], "status": ["done"] * 4})
    assert sequential.completed_looks(frame, None, policy) == 1  # look 2 not planned yet
    more = pd.concat([frame, pd.DataFrame({"variant": ["A"], "seed": [2], "status": ["pending"]})])
    assert sequential.completed_looks(more, None, policy) == 1  # planned, not finished
    more["status"] = "done"
    assert sequential.completed_looks(more, None, policy) == 2  # look 3 (seed 3) not planned
    assert sequential.completed_looks(frame.iloc[:0], None, policy) == 0


def test_a_grid_stopped_between_looks_is_analysed_at_its_last_finished_look(tmp_path, monkeypatch):
    """Only look 1's runs (2 seeds) exist: the report must decide at look 1 with look 1's
    boundaries, not replay looks 2 and 3 on the same runs with their smaller boundaries
    (which declared six label-smoothing comparisons 'helps' from 2 seeds before the fix)."""
    import report_levels_synthetic as rls

    monkeypatch.setattr(rls, "NOISE_SD", 0.06)
    root, _ = rls.make_axes_results(tmp_path, seeds=(0, 1, 2, 3), seed_policy={
        "seeds": [0, 1, 2, 3], "adaptive": True, "min": 2, "max": 4, "step": 1})
    res = Results.load(root)
    sub = res.frame[res.frame["seed"] < 2]
    a = sequential.analyse(sub, res.meta)
    assert len(a.looks) == 1 and not a.looks[0].done
    look1 = sequential._run_looks(sub, res.meta, res.meta.seed_policy, res.meta.analysis, METRIC, 1)
    assert [(d.verdict, d.ci_low, d.ci_high) for d in a.decisions] == \
        [(d.verdict, d.ci_low, d.ci_high) for d in look1.decisions]
    assert {d.verdict for d in a.decisions} >= {"undecided"}


def test_effect_rows_p_paired_and_worst_columns_by_hand(committed):
    """The effects table's naive p (two-sided Student t on the residual df), the paired t-test
    on the hack's own seeds (log scale, n - 1 df) and the worst-value interval at the
    decision's Holm level, from the code's rows, against the committed table and by hand."""
    name, res, doc = committed
    eff = _effect_rows(res.frame, res.meta, sequential.analyse(res.frame, res.meta), sensitivity=True)
    eff = eff.set_index("hack")
    table = pd.read_csv(ROOT / "results" / name / "tables" / "effects.csv").set_index("hack")
    runs, cell = _runs(doc, res)
    full = _fit(runs)  # every finished run (nothing diverged here: the worst-value fit is this one)
    done = res.frame[res.frame["status"] == "done"]
    assert eff["p_holm"].isna().all()  # adaptive: no single-look Holm column
    for row, _, on, off in _rows(doc):
        r, t = eff.loc[row], table.loc[row]
        want_p = 2 * stats.t.sf(abs(r["estimate"] / r["se"]), r["df"])
        assert r["p"] == pytest.approx(want_p, rel=1e-9) and float(t["p"]) == pytest.approx(want_p, rel=1e-8)
        a = done[done["variant"] == on].set_index("seed")[METRIC]
        b = done[done["variant"] == off].set_index("seed")[METRIC]
        seeds = sorted(set(a.index) & set(b.index))
        d = np.log(a[seeds].to_numpy()) - np.log(b[seeds].to_numpy())
        n = len(d)
        h = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
        want = {"pairs": n, "paired_mean": d.mean(), "paired_sd": d.std(ddof=1), "paired_low": d.mean() - h,
                "paired_high": d.mean() + h, "paired_p": stats.ttest_1samp(d, 0.0).pvalue,
                "paired_dz": d.mean() / d.std(ddof=1)}
        tt = full.t_test(_L(full, cell[on], cell[off]))
        e, se = float(tt.effect[0]), float(tt.sd[0, 0])
        hw = stats.t.isf(r["level"] / 2, full.df_resid) * se
        want.update(worst_estimate=e, worst_low=e - hw, worst_high=e + hw)
        for k, v in want.items():
            assert float(r[k]) == pytest.approx(v, rel=1e-8, abs=1e-12), (row, k)
            assert float(t[k]) == pytest.approx(v, rel=1e-8, abs=1e-12), (row, k)


def test_heterogeneity_df_is_the_rank_of_the_constraints():
    """Two axes; the ON variant sees only x, the OFF variant only y: the four per-level
    contrasts A_x - O_y have differences of rank 2, so the F-test has 2 numerator df (not
    L - 1 = 3), and F is the restricted-vs-unrestricted RSS statistic with q = 2."""
    from ablate.report.results import Comparison, ExperimentMeta

    rng = np.random.default_rng(3)
    mu = {"A1": 0.0, "A2": 0.15, "O1": 0.05, "O2": -0.1}
    rows, data = [], []
    for s in range(3):
        shift = 0.02 * s
        for c, m in mu.items():
            y = math.log(30) + m + shift + rng.normal(0, 0.03)
            data.append({"cell": c, "seed": s, "y": y})
            x_or_y = c[1]
            names = ([f"A @ x{x_or_y}, y{k}" for k in "12"] if c[0] == "A" else
                     [f"O @ x{k}, y{x_or_y}" for k in "12"])
            for v in names:
                rows.append({"key": f"{c}|{s}", "variant": v, "seed": s, "status": "done", METRIC: math.exp(y)})
    frame = pd.DataFrame(rows)
    comps = tuple(Comparison(f"h @ x{i}, y{j}", f"A @ x{i}, y{j}", f"O @ x{i}, y{j}", f"x{i}, y{j}")
                  for i in "12" for j in "12")
    meta = ExperimentMeta(
        name="x", dataset="fake", design_kind="explicit", hacks=("h",),
        variants=tuple((v, ()) for v in dict.fromkeys(frame["variant"])), comparisons=comps,
        seeds=(0, 1, 2), axes={"x": (1, 2), "y": (1, 2)}, row_hacks={c.hack: "h" for c in comps})
    fit = _fit(pd.DataFrame(data))
    X, y = fit.model.exog, fit.model.endog
    Ls = [_L(fit, f"A{i}", f"O{j}") for i in "12" for j in "12"]
    R = np.array([x - Ls[0] for x in Ls[1:]])
    N = linalg.null_space(R)
    g = np.linalg.lstsq(X @ N, y, rcond=None)[0]
    q = np.linalg.matrix_rank(R)
    f = ((float(np.sum((y - X @ N @ g) ** 2)) - fit.ssr) / q) / (fit.ssr / fit.df_resid)
    assert q == 2
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels says the constraints are not of full rank
        r = levels.heterogeneity(frame, meta, METRIC).iloc[0]
    assert (int(r["levels"]), int(r["df_num"]), int(r["df_den"])) == (4, 2, 12 - 4 - 2)
    assert r["f"] == pytest.approx(f, rel=1e-9)
    assert r["p"] == pytest.approx(stats.f.sf(f, 2, 6), rel=1e-8)
