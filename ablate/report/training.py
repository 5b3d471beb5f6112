"""Effects over training, from the validation-FID curves in each run's ``log.jsonl``.

* The area under the validation-FID curve of a run (trapezoid rule over its validation
  steps, divided by the span: the mean validation FID over training) enters the report
  as a secondary metric, ``val_fid_auc``, analysed with the same pooled model.
* At every validation step, each hack's contrast in the pooled model of log validation
  FID at that step, with a Bonferroni (alpha/m) t interval: does the effect grow or
  shrink with training? These per-step intervals are descriptive (not adjusted across
  steps, and not the sequential design's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.report.effects import fit_arrays
from ablate.report.results import Comparison

AUC_COLUMN = "val_fid_auc"


def auc(curves: pd.DataFrame) -> pd.DataFrame:
    """variant, seed, val_fid_auc: trapezoid area under each run's curve / its step span
    (runs with fewer than two validation steps have none)."""
    rows = []
    for (v, s), g in curves.groupby(["variant", "seed"], sort=True):
        g = g.sort_values("step")
        x, y = g["step"].to_numpy(float), g["value"].to_numpy(float)
        if len(x) >= 2 and np.isfinite(y).all() and x[-1] > x[0]:
            rows.append({"variant": v, "seed": int(s), AUC_COLUMN: float(np.trapezoid(y, x) / (x[-1] - x[0]))})
    return pd.DataFrame(rows, columns=["variant", "seed", AUC_COLUMN])


def with_auc(frame: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``val_fid_auc`` column (NaN where a run has no curve)."""
    a = auc(curves)
    out = frame.drop(columns=[AUC_COLUMN], errors="ignore").merge(a, on=["variant", "seed"], how="left")
    out.loc[out["status"] != "done", AUC_COLUMN] = np.nan
    return out


def effects_by_step(curves: pd.DataFrame, comparisons: list[Comparison], alpha: float) -> pd.DataFrame:
    """step, hack, ratio, low, high, n_on, n_off: each hack's ratio ON/OFF of validation
    FID at each step, pooled model (log scale, seed blocks), t interval at alpha/m."""
    rows = []
    m = max(len(comparisons), 1)
    ok = curves[np.isfinite(curves["value"]) & (curves["value"] > 0)]
    for step, g in ok.groupby("step", sort=True):
        fit = fit_arrays("val_fid", True, g["variant"].to_numpy(), g["seed"].to_numpy(),
                         np.log(g["value"].to_numpy(float)), comparisons)
        for c in fit.contrasts:
            lo, hi = c.interval(alpha / m)
            rows.append({"step": int(step), "hack": c.hack, "ratio": float(np.exp(c.estimate)),
                         "low": float(np.exp(lo)), "high": float(np.exp(hi)),
                         "n_on": c.n_on, "n_off": c.n_off})
    return pd.DataFrame(rows, columns=["step", "hack", "ratio", "low", "high", "n_on", "n_off"])
