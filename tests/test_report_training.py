"""Effects over training and the validation-FID AUC against independent computations."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import statsmodels.formula.api as smf
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import make_results  # noqa: E402

from ablate.report import training  # noqa: E402
from ablate.report.results import Results  # noqa: E402
from ablate.report.runs import RunArtefacts  # noqa: E402


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return Results.load(make_results(tmp_path_factory.mktemp("tr"), noise_sd=0.05))


def test_curves_read_val_fid_once_per_step(res):
    curves = RunArtefacts(res.frame).val_curves()
    assert sorted(set(curves["step"])) == [100, 200, 300]
    assert len(curves) == 3 * 6 * 3  # 3 steps x 6 variants x 3 finished seeds


def test_auc_is_the_trapezoid_mean_by_hand(res):
    curves = RunArtefacts(res.frame).val_curves()
    a = training.auc(curves).set_index(["variant", "seed"])
    g = curves[(curves["variant"] == "all-on") & (curves["seed"] == 1)].sort_values("step")
    x, y = g["step"].to_numpy(float), g["value"].to_numpy(float)
    hand = sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1)) / (x[-1] - x[0])
    assert a.loc[("all-on", 1), "val_fid_auc"] == pytest.approx(hand, rel=1e-12)
    frame = training.with_auc(res.frame, curves)
    assert frame.loc[frame["status"] != "done", "val_fid_auc"].isna().all()


def test_effects_by_step_match_statsmodels(res):
    curves = RunArtefacts(res.frame).val_curves()
    by = training.effects_by_step(curves, list(res.meta.comparisons), 0.05)
    d = curves[curves["step"] == 200].assign(y=lambda f: np.log(f["value"]))
    fit = smf.ols("y ~ 0 + C(variant) + C(seed)", data=d).fit()
    names = list(fit.params.index)
    L = np.zeros(len(names))
    L[names.index("C(variant)[all-on]")], L[names.index("C(variant)[-batch-norm]")] = 1, -1
    t = fit.t_test(L)
    lo, hi = t.conf_int(alpha=0.05 / 4)[0]
    row = by[(by["step"] == 200) & (by["hack"] == "batch-norm")].iloc[0]
    assert row["ratio"] == pytest.approx(math.exp(float(t.effect[0])), rel=1e-10)
    assert (row["low"], row["high"]) == pytest.approx((math.exp(lo), math.exp(hi)), rel=1e-10)
    assert stats.t.isf(0.05 / 8, fit.df_resid) > 2  # the Bonferroni level, not 1.96
