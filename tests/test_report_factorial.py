"""Factorial designs: least-squares main effects and resolved interactions."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import statsmodels.formula.api as smf

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import HACKS, PRIMARY, make_results  # noqa: E402

from ablate.report.factorial import factorial_effects  # noqa: E402
from ablate.report.results import Results  # noqa: E402


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return Results.load(make_results(tmp_path_factory.mktemp("ff"), "full-factorial", artefacts=False,
                                     interaction=0.1, extra_runs=False, noise_sd=0.02))


def test_factorial_recovers_main_effects_and_interaction(full):
    fit = factorial_effects(full.frame, full.meta, PRIMARY)
    t = fit.table.set_index("term")
    assert fit.scale == "log" and fit.blocked_by_seed and not fit.aliased
    assert len(t) == 4 + 6
    assert t.loc["batch-norm", "verdict"] == "hurts"
    assert t.loc["batch-norm×label-smoothing", "verdict"] == "interacts"
    assert t.loc["noisy-labels", "p_holm"] >= 0.05
    # Independent: statsmodels formula OLS on ±1 coding; effect = 2β.
    d = full.frame.copy()
    d["y"] = np.log(d[PRIMARY])
    for h in HACKS:
        d[h.replace("-", "_")] = np.where(d[f"hack:{h}"], 1.0, -1.0)
    terms = [h.replace("-", "_") for h in HACKS]
    inter = [f"{a}:{b}" for i, a in enumerate(terms) for b in terms[i + 1:]]
    sm = smf.ols("y ~ " + " + ".join(terms + inter) + " + C(seed)", data=d).fit()
    assert t.loc["batch-norm", "effect"] == pytest.approx(2 * sm.params["batch_norm"], abs=1e-10)
    assert t.loc["batch-norm", "se"] == pytest.approx(2 * sm.bse["batch_norm"], rel=1e-9)


def test_half_fraction_flags_aliased_interactions(full):
    coded = np.prod([np.where(full.frame[f"hack:{h}"], 1, -1) for h in HACKS], axis=0)
    half = full.frame[coded == 1]
    meta = dataclasses.replace(full.meta, design_kind="fractional-factorial", resolution=4)
    fit = factorial_effects(half, meta, PRIMARY)
    assert set(fit.table["kind"]) == {"main"} and len(fit.aliased) == 6
    assert fit.table.set_index("term").loc["batch-norm", "verdict"] == "hurts"
