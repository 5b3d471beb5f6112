"""Per-variant summaries: how many runs, which seeds, and each metric's centre and 95%
interval on the scale its tests use (geometric mean and a log-scale t interval for FID,
KID and run times, so no interval reaches below zero; the arithmetic mean and a t
interval for the rest, clipped to the metric's range: recall never below 0, modes never
above the number of classes). Every seed's value is in tables/variant_metrics.csv and the
figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ablate.report.columns import finished, metric_range, parse_metric, uses_log
from ablate.report.results import ExperimentMeta

CONFIDENCE = 0.95


def t_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval of the mean (NaN when n < 2)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    h = stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return (x.mean() - h, x.mean() + h)


def variant_order(frame: pd.DataFrame, meta: ExperimentMeta) -> list[str]:
    """Variants in the design's order, then any the store has beyond it."""
    present = list(dict.fromkeys(frame["variant"]))
    return [v for v in meta.variant_names if v in present] + [v for v in present if v not in meta.variant_names]


def summarize(frame: pd.DataFrame, meta: ExperimentMeta, metrics: list[str]) -> pd.DataFrame:
    """Long table: variant, metric, scale, n, seeds, mean, sd, centre, ci_low, ci_high.

    ``centre`` is what the interval is around: the geometric mean on the log scale, the
    mean otherwise; ``sd`` is the sample sd (ddof = 1) on the metric's own scale and
    ``log_sd`` the sd of the logs. Raw-scale intervals are clipped to the metric's range
    (:func:`ablate.report.columns.metric_range`).
    """
    done = finished(frame)
    rows = []
    for v in variant_order(frame, meta):
        sub = done[done["variant"] == v]
        for col in metrics:
            x = pd.to_numeric(sub[col], errors="coerce").to_numpy(float)
            ok = np.isfinite(x)
            seeds = sub["seed"].to_numpy()[ok]
            x = x[ok]
            log = uses_log(col) and len(x) > 0 and bool((x > 0).all())
            if log:
                lo, hi = t_interval(np.log(x))
                centre, lo, hi = float(np.exp(np.log(x).mean())), math.exp(lo), math.exp(hi)
            else:
                lo, hi = t_interval(x)
                centre = float(x.mean()) if len(x) else math.nan
                floor, ceil = metric_range(col, _num_modes(sub, col))
                if np.isfinite(lo):
                    lo, hi = max(lo, floor), min(hi, ceil)
            rows.append({"variant": v, "metric": col, "scale": "log" if log else "raw", "n": len(x),
                         "seeds": ",".join(map(str, sorted(seeds.tolist()))),
                         "mean": float(x.mean()) if len(x) else math.nan,
                         "sd": float(x.std(ddof=1)) if len(x) > 1 else math.nan,
                         "log_sd": float(np.log(x).std(ddof=1)) if log and len(x) > 1 else math.nan,
                         "centre": centre, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["variant", "metric", "scale", "n", "seeds", "mean", "sd",
                                       "log_sd", "centre", "ci_low", "ci_high"])


def _num_modes(runs: pd.DataFrame, col: str) -> float | None:
    """The number of classes ``col``'s modes and KL were counted over (its run's
    ``num_modes`` beside it), or None when the runs do not record it."""
    ckpt, feature, _ = parse_metric(col)
    sibling = f"{ckpt}.{feature}.num_modes"
    if ckpt is None or sibling not in runs.columns:
        return None
    n = pd.to_numeric(runs[sibling], errors="coerce").dropna()
    return float(n.max()) if len(n) else None


def variant_counts(frame: pd.DataFrame, meta: ExperimentMeta) -> pd.DataFrame:
    """One row per variant: hacks on, planned runs, done (n), seeds, diverged, failed, unfinished."""
    hacks = meta.variant_hacks()
    rows = []
    for v in variant_order(frame, meta):
        runs = frame[frame["variant"] == v]
        done = runs[runs["status"] == "done"]
        on = hacks.get(v, frozenset())
        rows.append({"variant": v, "hacks_on": len(on),
                     "hacks_off": ", ".join(h for h in meta.hacks if h not in on)
                     if len(on) > len(meta.hacks) / 2 else "",
                     "runs": len(runs), "n": len(done),
                     "seeds": ",".join(map(str, sorted(done["seed"].astype(int).tolist()))),
                     "diverged": int((runs["status"] == "diverged").sum()),
                     "failed": int((runs["status"] == "failed").sum()),
                     "unfinished": int(runs["status"].isin(["pending", "running"]).sum())})
    return pd.DataFrame(rows)
