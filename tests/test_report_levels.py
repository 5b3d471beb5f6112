"""The report of an experiment with ``[axes]`` (issue #20 items 1-2), on a synthetic results
directory written by the real writers (tests/report_levels_synthetic.py): add-one-in over
four hacks crossed with lr_scale = [0.5, 1, 2] and noisy-labels.p = [0.05, 0.2].
Truth: batch-norm ×0.75 / ×1 / ×1.3 by lr_scale, label-smoothing ×0.8 everywhere,
leaky-relu and noisy-labels nothing.

The per-level contrasts and the heterogeneity F-tests are checked against an independent
computation written here: numpy least squares on the unique runs of the helper's own truth
table (cells = the helper's run conditions), the restricted model by the null space of the
constraints, F = ((RSS_r - RSS_u)/q) / (RSS_u/df_u)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import linalg, stats

sys.path.insert(0, str(Path(__file__).parent))
from report_levels_synthetic import make_axes_results  # noqa: E402

from ablate.report import build_report, context, levels, sequential  # noqa: E402
from ablate.report.effects import cells, model_data  # noqa: E402
from ablate.report.results import Results  # noqa: E402

HACKS = ("leaky-relu", "batch-norm", "label-smoothing", "noisy-labels")


@pytest.fixture(scope="module")
def axes_report(tmp_path_factory):
    root, truth = make_axes_results(tmp_path_factory.mktemp("axes"), artefacts=True,
                                    diverged=("+noisy-labels @ lr_scale=2, noisy-labels.p=0.2", 1))
    out = tmp_path_factory.mktemp("axes-report")
    res = Results.load(root)
    ctx = context.compute(res, out)
    build_report(res, out)
    return res, truth, ctx, out


# --------------------------------------------------------------------------------------
# The independent computation
# --------------------------------------------------------------------------------------
def _unique_runs(truth) -> pd.DataFrame:
    rows = [{"cell": cond, "seed": s, "y": y} for cond, s, y in truth["runs"].values() if y is not None]
    return pd.DataFrame(rows)


def _ols(data: pd.DataFrame):
    cell_names = sorted(set(data["cell"]))
    seeds = sorted(set(data["seed"]))
    X = np.zeros((len(data), len(cell_names) + len(seeds) - 1))
    for i, (c, s) in enumerate(zip(data["cell"], data["seed"])):
        X[i, cell_names.index(c)] = 1
        if s != seeds[0]:
            X[i, len(cell_names) + seeds.index(s) - 1] = 1
    y = data["y"].to_numpy(float)
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    rss = float(np.sum((y - X @ beta) ** 2))
    return X, y, beta, rss, {c: i for i, c in enumerate(cell_names)}


def _contrasts(res, truth, hack: str, col: dict) -> list[np.ndarray]:
    """The helper's cells of each comparison of ``hack``, as distinct contrast vectors."""
    out = []
    n = max(col.values()) + 1
    for c in res.meta.comparisons:
        if res.meta.hack_of(c.hack) != hack:
            continue
        L = np.zeros(n)
        L[col[truth["variant_cell"][c.on]]] += 1
        L[col[truth["variant_cell"][c.off]]] -= 1
        if not any(np.array_equal(L, x) for x in out):
            out.append(L)
    return out


def _f_test(X, y, rss_u, Ls):
    R = np.array([L - Ls[0] for L in Ls[1:]])
    R = np.hstack([R, np.zeros((len(R), X.shape[1] - R.shape[1]))])
    N = linalg.null_space(R)  # beta = N g satisfies R beta = 0
    g = np.linalg.lstsq(X @ N, y, rcond=None)[0]
    rss_r = float(np.sum((y - X @ N @ g) ** 2))
    q, df_u = len(R), len(y) - X.shape[1]
    f = ((rss_r - rss_u) / q) / (rss_u / df_u)
    return f, q, df_u, float(stats.f.sf(f, q, df_u))


# --------------------------------------------------------------------------------------
def test_meta_names_each_level_row_and_keeps_the_real_hack(axes_report):
    res, truth, _, _ = axes_report
    meta = res.meta
    assert meta.axes == {"lr_scale": (0.5, 1.0, 2.0), "noisy-labels.p": (0.05, 0.2)}
    assert len(meta.comparisons) == 4 * 6
    row = "batch-norm @ lr_scale=0.5, noisy-labels.p=0.2"
    c = next(c for c in meta.comparisons if c.hack == row)
    assert (c.on, c.off, c.level) == ("+batch-norm @ lr_scale=0.5, noisy-labels.p=0.2",
                                      "all-off @ lr_scale=0.5, noisy-labels.p=0.2",
                                      "lr_scale=0.5, noisy-labels.p=0.2")
    assert meta.hack_of(row) == "batch-norm" and meta.level_of(row) == c.level
    assert set(meta.hack_info) == set(HACKS)  # metadata stays keyed by the real hack
    assert meta.variant_levels[c.on] == {"lr_scale": 0.5, "noisy-labels.p": 0.2}


def test_shared_runs_are_counted_once(axes_report):
    res, truth, ctx, _ = axes_report
    frame = res.frame
    assert frame["key"].nunique() < len(frame)  # the plan shares runs between variant names
    alias = cells(frame)
    # all-off does not enable noisy-labels: one run per lr_scale and seed for both p levels
    assert alias["all-off @ lr_scale=1, noisy-labels.p=0.2"] == "all-off @ lr_scale=1, noisy-labels.p=0.05"
    assert "+noisy-labels @ lr_scale=1, noisy-labels.p=0.2" not in alias  # its own runs
    data, _, _ = model_data(frame, "best.classifier.fid")
    unique = _unique_runs(truth)
    assert len(data) == len(unique) == 71  # 72 distinct runs, one diverged
    assert data["variant"].nunique() == unique["cell"].nunique() == 24
    fit = ctx.analysis.fit
    assert fit.n_runs == 71 and fit.df_resid == 71 - 24 - 2
    # per variant, the shared runs still count for each name that planned them
    counts = ctx.counts.set_index("variant")["n"]
    assert counts["all-off @ lr_scale=1, noisy-labels.p=0.2"] == counts["all-off @ lr_scale=1, noisy-labels.p=0.05"] == 3


def test_per_level_rows_match_an_independent_fit(axes_report):
    res, truth, ctx, _ = axes_report
    X, y, beta, rss, col = _ols(_unique_runs(truth))
    lv = ctx.levels
    assert len(lv) == 24 and list(dict.fromkeys(lv["hack"])) == list(HACKS)
    for _, r in lv.iterrows():
        L = np.zeros(X.shape[1])
        L[col[truth["variant_cell"][r["on"]]]] += 1
        L[col[truth["variant_cell"][r["off"]]]] -= 1
        assert r["estimate"] == pytest.approx(float(L @ beta), abs=1e-9)
        e = ctx.effects.set_index("hack").loc[r["row"]]
        assert (r["verdict"], r["ci_low"], r["ci_high"]) == (e["verdict"], e["ci_low"], e["ci_high"])
        assert e["base_hack"] == r["hack"] and e["at_level"] == r["level"]
    bn = lv[lv["hack"] == "batch-norm"]
    lr = bn["level"].str.extract(r"lr_scale=([\d.]+)")[0].astype(float)
    assert list(bn.loc[lr == 0.5, "verdict"]) == ["helps"] * 2
    assert list(bn.loc[lr == 1.0, "verdict"]) == ["equivalent"] * 2
    assert list(bn.loc[lr == 2.0, "verdict"]) == ["hurts"] * 2
    assert set(lv.loc[lv["hack"] == "label-smoothing", "verdict"]) == {"helps"}
    nl = lv[lv["hack"] == "noisy-labels"]
    assert list(nl["dose"]) == [0.05, 0.2] * 3 and set(nl["dose_axis"]) == {"noisy-labels.p"}
    assert set(lv.loc[lv["hack"] == "batch-norm", "dose_axis"]) == {""}


def test_heterogeneity_f_and_p_match_restricted_vs_unrestricted_rss(axes_report):
    res, truth, ctx, _ = axes_report
    X, y, _, rss_u, col = _ols(_unique_runs(truth))
    het = levels.heterogeneity(res.frame, res.meta, "best.classifier.fid").set_index("hack")
    ps = {}
    for hack in HACKS:
        Ls = _contrasts(res, truth, hack, col)
        f, q, df_u, p = _f_test(X, y, rss_u, Ls)
        r = het.loc[hack]
        assert (int(r["levels"]), int(r["df_num"]), int(r["df_den"])) == (len(Ls), q, df_u)
        assert r["f"] == pytest.approx(f, rel=1e-8) and r["p"] == pytest.approx(p, rel=1e-6, abs=1e-300)
        ps[hack] = p
    # batch-norm, leaky-relu and label-smoothing compare the same runs at both p levels: 3 contrasts
    assert list(het["levels"]) == [3, 3, 3, 6]
    order = sorted(ps, key=ps.get)  # Holm by hand
    m, running = len(ps), 0.0
    for i, h in enumerate(order):
        running = max(running, min(1.0, (m - i) * ps[h]))
        assert het.loc[h, "p_holm"] == pytest.approx(running, rel=1e-9)
    assert het.loc["batch-norm", "p_holm"] < 1e-6
    assert (het.drop(index="batch-norm")["p_holm"] > 0.05).all()


def test_robust_verdicts(axes_report):
    _, _, ctx, _ = axes_report
    v = ctx.level_verdicts.set_index("hack")["verdict"]
    assert v["label-smoothing"] == "helps at every level"
    assert v["leaky-relu"] == "equivalent at every level"
    assert v["noisy-labels"] == "equivalent at every level"
    assert v["batch-norm"].startswith("depends on the level (helps at lr_scale=0.5, noisy-labels.p=0.05 / ")
    assert "; hurts at lr_scale=2" in v["batch-norm"] and "; equivalent at lr_scale=1" in v["batch-norm"]


@pytest.mark.parametrize("verdicts, p_holm, want", [
    (["helps", "helps"], 0.001, "helps at every level"),
    (["hurts", "hurts"], math.nan, "hurts at every level"),
    (["helps", "undecided"], 0.01, "depends on the level (helps at a; undecided at b)"),
    (["helps", "undecided"], 0.2, "mixed: helps at a; undecided at b"),
    (["undecided", "undecided"], 0.2, "undecided"),
    (["equivalent", "hurts"], math.nan, "mixed: hurts at b; equivalent at a"),
])
def test_robust_rules(verdicts, p_holm, want):
    lv = pd.DataFrame({"hack": ["h", "h"], "level": ["a", "b"], "verdict": verdicts})
    het = pd.DataFrame([{"hack": "h", "levels": 2, "f": 1.0, "df_num": 1, "df_den": 9, "p": p_holm,
                         "p_holm": p_holm}])
    assert levels.robust(lv, het, 0.05).iloc[0]["verdict"] == want


def test_report_has_the_across_levels_section_table_and_dose_figure(axes_report):
    res, _, ctx, out = axes_report
    text = (out / "REPORT.md").read_text()
    assert "## Across levels" in text and "- `label-smoothing`: **helps at every level**" in text
    assert "(hack, level) comparisons form one Holm family" in text  # method section
    assert "Holm's step-down procedure (Holm 1979) across the 24 (hack, level) comparisons" in text
    t = pd.read_csv(out / "tables" / "levels.csv")
    assert len(t) == 24 and {"het_f", "het_p_holm", "robust_verdict", "dose"} <= set(t.columns)
    for ext in ("md", "tex"):
        assert (out / "tables" / f"levels.{ext}").is_file()
    assert (out / "figures" / "dose_noisy-labels.png").is_file()
    assert not (out / "figures" / "dose_batch-norm.png").exists()  # lr_scale is not its parameter
    assert "figures/dose_noisy-labels.png" in text
    eff = pd.read_csv(out / "tables" / "effects.csv")
    assert "batch-norm @ lr_scale=2, noisy-labels.p=0.05" in set(eff["hack"])


def test_adaptive_look_covers_every_level_comparison(tmp_path):
    root, _ = make_axes_results(tmp_path, seeds=(0, 1, 2), seed_policy={"seeds": [0, 1, 2], "adaptive": True, "min": 2, "max": 3, "step": 1})
    res = Results.load(root)
    sub = res.frame[res.frame["seed"] < 2]
    look = sequential.next_look(sub, res.meta, res.meta.seed_policy, res.meta.analysis, 1)
    assert len(look.reasons) == 24
    assert set(look.seeds) == set(res.meta.variant_names)
    # the replayed decisions are those of the report's analysis on the same runs
    a = sequential.analyse(sub, res.meta)
    assert [d.hack for d in a.decisions] == [c.hack for c in res.meta.comparisons]


def test_a_cell_gets_the_seeds_of_its_most_seeded_variant_name():
    """Adaptive looks: A @ 1 and A @ 2 are one run condition (one cell, named A @ 1). After
    look 1, h @ 1 is decided and h @ 2 is not, so only A @ 2 is given seed 4; the run the grid
    trains for it is the cell's, and look 2 must use it (5 runs OFF, not A @ 1's 4)."""
    from ablate.config import AnalysisSpec, SeedPolicy
    from ablate.report.results import Comparison, ExperimentMeta
    from ablate.report.sequential import decide_arrays

    meta = ExperimentMeta(
        name="x", dataset="fake", design_kind="add-one-in", hacks=("h",),
        variants=(("A @ 1", ()), ("B @ 1", ("h",)), ("A @ 2", ()), ("B @ 2", ("h",))),
        comparisons=(Comparison("h @ 1", "B @ 1", "A @ 1", "1"), Comparison("h @ 2", "B @ 2", "A @ 2", "2")),
        seeds=tuple(range(5)), axes={"h.p": (1, 2)}, row_hacks={"h @ 1": "h", "h @ 2": "h"})
    rng = np.random.default_rng(0)
    v, s, y = [], [], []
    for name, mu in (("A @ 1", 0.0), ("B @ 1", 2.0), ("B @ 2", 0.1)):  # the arrays name the cell
        v += [name] * 5
        s += list(range(5))
        y += list(mu + rng.normal(0, 0.05, 5))
    policy = SeedPolicy(seeds=tuple(range(5)), adaptive=True, min=4, max=5, step=1)
    a = decide_arrays(np.array(v), np.array(s), np.array(y), meta, policy, AnalysisSpec(),
                      "best.classifier.fid", True, alias={"A @ 2": "A @ 1"})
    d1, d2 = a.decisions
    assert (d1.verdict, d1.look, d1.n_on, d1.n_off) == ("hurts", 1, 4, 4)
    assert a.looks[0].seeds == {"A @ 1": 4, "B @ 1": 4, "A @ 2": 5, "B @ 2": 5}
    assert (d2.n_on, d2.n_off) == (5, 5)


def test_p_values_in_prose_read_p_less_than():
    from ablate.report.tables import p_is
    assert p_is(0.0344) == "p = 0.034" and p_is(2e-5) == "p < 0.001"
    assert p_is(1e-4, "Holm p") == "Holm p < 0.001" and p_is(float("nan")) == "p = –"


def test_dependent_level_contrasts_test_on_a_basis_of_their_span():
    rows = [np.array([1.0, -1, 0, 0]), np.array([0.0, 0, 1, -1]), np.array([1.0, -1, 1, -1])]
    basis = levels._independent(rows)
    assert basis.shape == (2, 4) and np.linalg.matrix_rank(basis) == np.linalg.matrix_rank(np.array(rows))


def test_latex_escapes_less_and_greater_than():
    """OT1, LaTeX's default font encoding, typesets a bare '<' as '¡' ('p < 0.001')."""
    from ablate.report.tables import latex_escape
    assert latex_escape("p < 0.001, F > 1") == r"p \textless{} 0.001, F \textgreater{} 1"
    import pandas as pd
    from ablate.report.tables import to_latex
    text = to_latex(pd.DataFrame({"p": ["<0.001"]}), "p < alpha", "x")  # pandas' Styler path
    assert "<" not in text and r"\textless{}0.001" in text and r"p \textless{} alpha" in text


def test_provenance_counts_a_run_shared_by_several_levels_once(axes_report):
    """A reference run is planned under one variant name per level; the provenance rows and
    the wall-time sum count it once (counted per name, the fixture's 71 finished runs read as 107)."""
    res, truth, ctx, out = axes_report
    n_names = len(res.frame)
    runs = truth["runs"]
    done = sum(1 for _c, _s, y in runs.values() if y is not None)
    assert n_names > len(runs)  # the fixture does share runs
    assert ctx.provenance["hardware"] == [({"cpu": "Synthetic CPU", "cpu_count": 2}, done)]
    assert ctx.provenance["git_commit"] == [("abc1234", done)]
    assert ctx.provenance["runs_with_config"] == done
    wall = 100.0 * done + 50.0 * (len(runs) - done)  # the helper's committed wall times
    text = (out / "REPORT.md").read_text()
    assert f"| wall time | {wall / 3600:.2f} h summed over {len(runs)} runs |" in text
    assert f"| hardware | cpu=Synthetic CPU, cpu_count=2 ({done} runs) |" in text
