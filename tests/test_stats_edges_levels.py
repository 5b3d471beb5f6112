"""Edge cases of the across-levels statistics (report/levels.py) that the fixture-based tests
leave open (a mutation audit of dose_axis, per_level, design_matrix, heterogeneity, robust,
by_verdict and table): each test plants a small hand-made input and checks the output
against an independent computation (statsmodels' formula OLS and nested-model ``anova_lm``,
``multipletests``) or against the expected output written out by hand, never against the
implementation's own earlier output.

Found by mutating levels.py one operator at a time (comparisons, constants, and/or, argument
order, string keys): each test here fails on at least one mutant that test_report_levels
and test_stats_audit let pass."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests

from ablate.report import levels
from ablate.report.results import Comparison, ExperimentMeta

FID = "best.classifier.fid"
ALPHA = 0.05
NAN = math.nan


def _meta(comparisons, axes, variant_levels=None, variants=()):
    """An ``[axes]`` experiment: each comparison row ``<hack> @ <level>`` measures ``<hack>``."""
    comparisons = tuple(comparisons)
    return ExperimentMeta(
        name="x", dataset="fake", design_kind="explicit",
        hacks=tuple(dict.fromkeys(c.hack.split(" @ ")[0] for c in comparisons)),
        variants=tuple((v, ()) for v in variants), comparisons=comparisons, seeds=(0, 1, 2, 3, 4),
        axes=dict(axes), variant_levels=dict(variant_levels or {}),
        row_hacks={c.hack: c.hack.split(" @ ")[0] for c in comparisons})


# --------------------------------------------------------------------------------------
# dose_axis
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("axes, hack, want", [
    ({"lr_scale": (0.5, 1.0), "h.p": (0.1, 0.2), "h.q": (1, 2)}, "h", "h.p"),  # the first numeric one
    ({"h.mode": ("a", "b"), "h.q": (1, 2.5)}, "h", "h.q"),  # a string-valued parameter is no dose
    ({"h.mode": ("a", "b")}, "h", None),
    ({"h.flag": (True, False)}, "h", None),  # bool is an int to isinstance, not a dose
    ({"h.p": ()}, "h", None),  # no levels
    ({"hx.p": (1, 2), "g.p": (1, 2)}, "h", None),  # another hack's parameter
    ({"lr_scale": (0.5, 1.0)}, "lr_scale", None),  # a setting, not ``<hack>.<param>``
])
def test_dose_axis_is_the_first_numeric_parameter_of_the_hack(axes, hack, want):
    """The dose axis by the docstring's rule: named ``<hack>.<param>``, with levels that are
    all numbers (int or float, not bool); the first such axis in ``[axes]`` order."""
    assert levels.dose_axis(_meta([], axes), hack) == want


# --------------------------------------------------------------------------------------
# per_level
# --------------------------------------------------------------------------------------
def test_per_level_rows_written_out_by_hand():
    """Effects rows of two real hacks, interleaved in design order (z first), plus one row
    without a level. Expected, written out: one row per (hack, level), hacks in design order
    (z before h: not alphabetical), levels in order, a fresh 0..n-1 index and exactly the
    documented columns; ``dose`` from the ON variant's level where the hack's own parameter
    is an axis (z.p for z; none for h), ``rest`` the other axes of the level, bools written
    ``true``/``false`` and floats ``%g``; a row whose ON variant has no recorded level has
    no dose and no rest (not a KeyError)."""
    L1, L2, L3 = "z.p=0.1, g.on=true, lr_scale=2", "z.p=0.2, g.on=false, lr_scale=2", "z.p=0.3, g.on=true, lr_scale=2"
    comps = [Comparison("z @ " + L1, "Z1", "O1", L1), Comparison("h @ " + L1, "H1", "O1", L1),
             Comparison("z @ " + L2, "Z2", "O2", L2), Comparison("h @ " + L2, "H2", "O2", L2),
             Comparison("z @ " + L3, "Z3", "O3", L3), Comparison("solo", "S", "O1", "")]
    vl = {"Z1": {"z.p": 0.1, "g.on": True, "lr_scale": 2.0}, "H1": {"z.p": 0.1, "g.on": True, "lr_scale": 2.0},
          "Z2": {"z.p": 0.2, "g.on": False, "lr_scale": 2.0}, "H2": {"z.p": 0.2, "g.on": False, "lr_scale": 2.0}}
    # the OFF variants O1, O2 and the ON variant Z3 have no level record
    meta = _meta(comps, {"z.p": (0.1, 0.2, 0.3), "g.on": (True, False), "lr_scale": (2.0,)}, vl)
    rows = ["z @ " + L1, "h @ " + L1, "solo", "z @ " + L2, "h @ " + L2, "z @ " + L3]
    ons = ["Z1", "H1", "S", "Z2", "H2", "Z3"]
    offs = ["O1", "O1", "O1", "O2", "O2", "O3"]
    eff = pd.DataFrame({"hack": rows, "on": ons, "off": offs, "scale": "log",
                        "verdict": ["helps", "undecided", "hurts", "equivalent", "hurts", "undecided"],
                        "estimate": [-0.2, 0.01, 0.3, 0.0, 0.15, 0.02], "ci_low": [-0.3, -0.1, 0.2, -0.05, 0.05, -0.1],
                        "ci_high": [-0.1, 0.12, 0.4, 0.05, 0.25, 0.14], "n_on": [5, 5, 5, 4, 5, 3],
                        "n_off": [5, 5, 5, 5, 5, 3], "p": 0.5})
    got = levels.per_level(eff, meta)
    want = pd.DataFrame({
        "hack": ["z", "z", "z", "h", "h"], "level": [L1, L2, L3, L1, L2],
        "row": ["z @ " + L1, "z @ " + L2, "z @ " + L3, "h @ " + L1, "h @ " + L2],
        "on": ["Z1", "Z2", "Z3", "H1", "H2"], "off": ["O1", "O2", "O3", "O1", "O2"],
        "dose_axis": ["z.p", "z.p", "z.p", "", ""], "dose": [0.1, 0.2, NAN, NAN, NAN],
        "rest": ["g.on=true, lr_scale=2", "g.on=false, lr_scale=2", "",
                 "z.p=0.1, g.on=true, lr_scale=2", "z.p=0.2, g.on=false, lr_scale=2"],
        "scale": ["log"] * 5, "verdict": ["helps", "equivalent", "undecided", "undecided", "hurts"],
        "estimate": [-0.2, 0.0, 0.02, 0.01, 0.15], "ci_low": [-0.3, -0.05, -0.1, -0.1, 0.05],
        "ci_high": [-0.1, 0.05, 0.14, 0.12, 0.25], "n_on": [5, 4, 3, 5, 5], "n_off": [5, 5, 3, 5, 5]})
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


# --------------------------------------------------------------------------------------
# design_matrix
# --------------------------------------------------------------------------------------
def test_design_matrix_written_out_by_hand():
    """Cells in order of first appearance, each a 0/1 indicator; seeds sorted as numbers
    (2 < 3 < 10, not as text), the smallest the baseline, the others 0/1 indicators."""
    data = pd.DataFrame({"variant": ["B", "A", "B", "C", "A", "C"], "seed": [3, 10, 10, 2, 2, 3], "y": 0.0})
    X, names = levels.design_matrix(data)
    assert names == ["B", "A", "C", "seed=3", "seed=10"]
    want = np.array([[1, 0, 0, 1, 0],
                     [0, 1, 0, 0, 1],
                     [1, 0, 0, 0, 1],
                     [0, 0, 1, 0, 0],
                     [0, 1, 0, 0, 0],
                     [0, 0, 1, 1, 0]], float)
    np.testing.assert_array_equal(X, want)


# --------------------------------------------------------------------------------------
# heterogeneity
# --------------------------------------------------------------------------------------
def _run_rows(key, names, seed, y, status="done"):
    return [{"key": key, "variant": v, "seed": seed, "status": status,
             FID: math.exp(y) if status == "done" else NAN} for v in names]


def _three_hacks(rng_seed: int = 4):
    """Levels a, b, c of an axis ``ax``; five seeds with a seed shift.

    * OFF variant ``O @ a/b/c``: one run condition at every level (one key, cell O);
    * h1: its own runs at each level (H1a, H1b, H1c), effects -0.10 / 0 / +0.08, vs O;
      H1b's seed-4 run diverged (left out);
    * h2: its own OFF at each level (Pa, Pb: the OFF sees the axis), ON H2a, H2b with the
      same effect +0.02 at both; every run of H2 @ c diverged (no estimable contrast at c:
      two levels remain);
    * h3: ON and OFF the same runs at every level: one distinct contrast, no test.
    Returns the frame, meta and the unique finished runs named by cell (for the reference)."""
    rng = np.random.default_rng(rng_seed)
    mu = {"O": 0.0, "H1a": -0.10, "H1b": 0.0, "H1c": 0.08, "Pa": 0.05, "Pb": -0.04, "Pc": 0.0,
          "H2a": 0.07, "H2b": -0.02, "H2c": 0.0, "H3": -0.03}
    names = {"O": ["O @ a", "O @ b", "O @ c"], "H3": ["H3 @ a", "H3 @ b", "H3 @ c"]}
    shift = [0.0, 0.04, -0.03, 0.02, 0.06]
    rows, runs = [], []
    for s in range(5):
        for cell, m in mu.items():
            y = math.log(30) + m + shift[s] + rng.normal(0, 0.03)
            vnames = names.get(cell, [f"{cell[:-1]} @ {cell[-1]}"])
            diverged = (cell == "H1b" and s == 4) or cell == "H2c"
            rows += _run_rows(f"{cell}|{s}", vnames, s, y, "diverged" if diverged else "done")
            if not diverged:
                runs.append({"cell": cell, "seed": s, "y": y})
    frame = pd.DataFrame(rows)
    comps = ([Comparison(f"h1 @ ax={lv}", f"H1 @ {lv}", f"O @ {lv}", f"ax={lv}") for lv in "abc"]
             + [Comparison(f"h2 @ ax={lv}", f"H2 @ {lv}", f"P @ {lv}", f"ax={lv}") for lv in "abc"]
             + [Comparison(f"h3 @ ax={lv}", f"H3 @ {lv}", f"O @ {lv}", f"ax={lv}") for lv in "abc"])
    meta = _meta(comps, {"ax": ("a", "b", "c")}, variants=dict.fromkeys(frame["variant"]))
    return frame, meta, pd.DataFrame(runs)


def _nested_f(restricted, full):
    """F, numerator df, denominator df and p of ``restricted`` within ``full`` (anova_lm)."""
    t = anova_lm(restricted, full)
    return float(t["F"].iloc[1]), int(t["df_diff"].iloc[1]), int(t["df_resid"].iloc[1]), float(t["Pr(>F)"].iloc[1])


def test_heterogeneity_against_nested_statsmodels_models_and_holm():
    """Reference: statsmodels formula OLS ``y ~ 0 + C(cell) + C(seed)`` on the unique finished
    runs (cells named by hand), and per hack the restricted model in which its per-level
    contrasts are equal: h1 (one shared OFF) by one common ON mean for H1a/H1b/H1c; h2 (an
    OFF per level) by a common ON shift ``on2`` over each level's own OFF mean. F, df and p
    by ``anova_lm`` of restricted vs full; Holm by ``multipletests``. h3 (one distinct
    contrast) and h2's level c (no finished ON run) are left out, not an error."""
    frame, meta, runs = _three_hacks()
    full = smf.ols("y ~ 0 + C(cell) + C(seed)", data=runs).fit()
    r1 = runs.assign(cell=runs["cell"].replace({"H1a": "H1", "H1b": "H1", "H1c": "H1"}))
    restricted1 = smf.ols("y ~ 0 + C(cell) + C(seed)", data=r1).fit()
    r2 = runs.assign(cell=runs["cell"].replace({"H2a": "Pa", "H2b": "Pb"}),
                     on2=runs["cell"].isin(["H2a", "H2b"]).astype(float))
    restricted2 = smf.ols("y ~ 0 + C(cell) + on2 + C(seed)", data=r2).fit()
    want = {"h1": _nested_f(restricted1, full), "h2": _nested_f(restricted2, full)}
    assert want["h1"][1:3] == (2, len(runs) - 10 - 4) and want["h2"][1] == 1

    het = levels.heterogeneity(frame, meta, FID)
    assert list(het.columns) == levels.HET_COLUMNS
    assert list(het["hack"]) == ["h1", "h2"]
    het = het.set_index("hack")
    assert list(het["levels"]) == [3, 2]
    for h, (f, q, df, p) in want.items():
        assert (int(het.loc[h, "df_num"]), int(het.loc[h, "df_den"])) == (q, df), h
        assert het.loc[h, "f"] == pytest.approx(f, rel=1e-9), h
        assert het.loc[h, "p"] == pytest.approx(p, rel=1e-8), h
    holm = multipletests([want["h1"][3], want["h2"][3]], method="holm")[1]
    np.testing.assert_allclose(het["p_holm"].to_numpy(float), holm, rtol=1e-9)
    assert want["h1"][3] < 0.01 < want["h2"][3]  # the data do separate the two hacks


def _two_levels(runs: list[tuple[str, int, float]]):
    """Hack h at levels a (A2 vs A1) and b (B2 vs B1); ``runs``: (cell, seed, y)."""
    rows = [r for cell, s, y in runs for r in _run_rows(f"{cell}|{s}", [cell], s, y)]
    comps = [Comparison("h @ x=a", "A2", "A1", "x=a"), Comparison("h @ x=b", "B2", "B1", "x=b")]
    return pd.DataFrame(rows), _meta(comps, {"x": ("a", "b")}, variants=("A1", "A2", "B1", "B2"))


def test_heterogeneity_needs_seed_linked_cells_and_a_residual_df():
    """No test (an empty frame with the documented columns), by the docstring's two guards:
    cells A* on seeds 0, 1 and B* on seeds 2, 3 are not linked by any seed (rank-deficient,
    though 8 runs > 7 columns); five runs for five columns leave no residual df. One run
    more (one residual df) and the test is there, with F from the nested models by hand."""
    y = {("A1", 0): 3.0, ("A2", 0): 3.1, ("A1", 1): 3.2, ("A2", 1): 3.25,
         ("B1", 2): 3.0, ("B2", 2): 3.3, ("B1", 3): 3.1, ("B2", 3): 3.35}
    frame, meta = _two_levels([(c, s, v) for (c, s), v in y.items()])
    het = levels.heterogeneity(frame, meta, FID)
    assert het.empty and list(het.columns) == levels.HET_COLUMNS

    base = [("A1", 0, 3.0), ("A2", 0, 3.1), ("B1", 0, 3.05), ("B2", 0, 3.3), ("A1", 1, 3.2)]
    frame, meta = _two_levels(base)  # 5 runs, 4 cells + 1 seed column, full rank
    het = levels.heterogeneity(frame, meta, FID)
    assert het.empty and list(het.columns) == levels.HET_COLUMNS

    more = base + [("B2", 1, 3.45)]
    frame, meta = _two_levels(more)
    runs = pd.DataFrame(more, columns=["cell", "seed", "y"])
    full = smf.ols("y ~ 0 + C(cell) + C(seed)", data=runs).fit()
    r = runs.assign(cell=runs["cell"].replace({"A2": "A1", "B2": "B1"}), on=runs["cell"].isin(["A2", "B2"]) * 1.0)
    f, q, df, p = _nested_f(smf.ols("y ~ 0 + C(cell) + on + C(seed)", data=r).fit(), full)
    got = levels.heterogeneity(frame, meta, FID).iloc[0]
    assert (got["hack"], int(got["levels"]), int(got["df_num"]), int(got["df_den"])) == ("h", 2, 1, 1) == ("h", 2, q, df)
    assert got["f"] == pytest.approx(f, rel=1e-9) and got["p"] == pytest.approx(p, rel=1e-8)
    assert got["p_holm"] == pytest.approx(p, rel=1e-8)  # one hack: Holm leaves p as it is


def test_heterogeneity_without_a_metric_or_without_axes_is_empty():
    """``metric=None`` (no quality metric in the store) and an experiment without ``[axes]``:
    no test, an empty frame with the documented columns, not an error."""
    frame, meta, _ = _three_hacks()
    for m, metric in ((meta, None), (_meta(meta.comparisons, {}), FID)):
        het = levels.heterogeneity(frame, m, metric)
        assert het.empty and list(het.columns) == levels.HET_COLUMNS


# --------------------------------------------------------------------------------------
# robust, by_verdict and table
# --------------------------------------------------------------------------------------
def _per_level_frame():
    return pd.DataFrame({
        "hack": ["z", "z", "z", "a", "m", "m"], "level": ["x=1", "x=2", "x=3", "x=1", "x=1", "x=2"],
        "row": ["z @ x=1", "z @ x=2", "z @ x=3", "a @ x=1", "m @ x=1", "m @ x=2"],
        "verdict": ["undecided", "helps", "helps", "hurts", "equivalent", "helps"],
        "estimate": [0.0, -0.2, -0.3, 0.2, 0.01, -0.1]})


def test_robust_rows_written_out_by_hand():
    """Three hacks in design order z, a, m (not alphabetical); a has a single level; m has no
    heterogeneity row (one distinct contrast: no test). Expected, written out: hacks in the
    order given, the single level is 'at every level', a hack without a test has NaN F and
    p and 0 df, and the heterogeneity row of a hack not in the levels is ignored."""
    het = pd.DataFrame([{"hack": "q", "levels": 2, "f": 9.0, "df_num": 1, "df_den": 8, "p": 0.001, "p_holm": 0.002},
                        {"hack": "z", "levels": 3, "f": 4.5, "df_num": 2, "df_den": 11, "p": 0.02, "p_holm": 0.04}])
    got = levels.robust(_per_level_frame(), het, ALPHA)
    want = pd.DataFrame({
        "hack": ["z", "a", "m"], "levels": [3, 1, 2],
        "verdicts": ["helps at x=2 / x=3; undecided at x=1", "hurts at x=1", "helps at x=2; equivalent at x=1"],
        "f": [4.5, NAN, NAN], "df_num": [2, 0, 0], "df_den": [11, 0, 0], "p": [0.02, NAN, NAN],
        "p_holm": [0.04, NAN, NAN],
        "verdict": ["depends on the level (helps at x=2 / x=3; undecided at x=1)", "hurts at every level",
                    "mixed: helps at x=2; equivalent at x=1"]})
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_table_keeps_every_level_row_and_renames_the_test_columns():
    """tables/levels.csv: every (hack, level) row of the per-level frame, in its order, with
    its hack's test and robust verdict under the ``het_*`` / ``robust_verdict`` names; a hack
    missing from the verdicts keeps its rows (left join, empty test columns); an empty
    per-level frame stays empty."""
    lv = _per_level_frame()
    verdicts = pd.DataFrame([
        {"hack": "m", "levels": 2, "verdicts": "…", "f": 1.5, "df_num": 1, "df_den": 9, "p": 0.25, "p_holm": 0.5,
         "verdict": "mixed: …"},
        {"hack": "z", "levels": 3, "verdicts": "…", "f": 4.5, "df_num": 2, "df_den": 11, "p": 0.02, "p_holm": 0.04,
         "verdict": "depends on the level (…)"}])
    t = levels.table(lv, verdicts)
    assert list(t.columns) == list(lv.columns) + ["het_f", "het_df_num", "het_df_den", "het_p", "het_p_holm",
                                                  "robust_verdict"]
    pd.testing.assert_frame_equal(t[list(lv.columns)], lv)
    assert list(t["robust_verdict"].fillna("-")) == ["depends on the level (…)"] * 3 + ["-"] + ["mixed: …"] * 2
    np.testing.assert_array_equal(t["het_p_holm"].to_numpy(float), [0.04] * 3 + [NAN] + [0.5] * 2)
    np.testing.assert_array_equal(t["het_df_den"].to_numpy(float), [11] * 3 + [NAN] + [9] * 2)
    assert levels.table(lv.iloc[:0], verdicts).empty
