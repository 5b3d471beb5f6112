"""The report's column vocabulary: which frame columns are metrics, their labels, their
direction (lower or higher is better) and the scale their tests use.

Metric columns come from :func:`ablate.grid.store.load_frame`, which flattens each run's
``metrics.json`` into ``<checkpoint>.<feature net>.<metric>`` (``best.classifier.fid``).
The report adds run-level columns of its own (``val_fid_auc``, ``js``).
"""

from __future__ import annotations

import math
import re

import pandas as pd

from ablate.config import FEATURES

CHECKPOINTS = ("best", "last")  # best: chosen on the validation split; last: end of training
METRICS = ("fid", "kid_mean", "modes", "js", "kl", "precision", "recall", "density", "coverage")
RUN_METRICS = ("val_fid_auc", "wall_time_s", "train_time_s", "images_per_s")
LOWER_IS_BETTER = {"fid", "kid_mean", "kl", "js", "val_fid_auc", "wall_time_s", "train_time_s"}
# Tested on the log scale: effects of training choices on FID-like scores are closer to
# multiplicative, the log tames the heavy tail of collapsed seeds, and a ratio ON/OFF
# is what the smallest effect of interest (±10%) is stated in. Run times and rates too:
# positive and right-skewed (resumed or contended runs), and a cost reads as a ratio; on
# the raw scale a 3-seed interval of wall times went below zero.
LOG_SCALE = {"fid", "kid_mean", "val_fid_auc", "wall_time_s", "train_time_s", "images_per_s"}
METRIC_LABELS = {
    "fid": "FID", "kid_mean": "KID", "modes": "modes", "kl": "class KL", "js": "class JS",
    "precision": "precision", "recall": "recall", "density": "density",
    "coverage": "coverage", "val_fid_auc": "validation-FID AUC", "wall_time_s": "wall time (s)",
    "train_time_s": "train time (s)", "images_per_s": "images/s",
}
# Bounded metrics: their intervals are clipped to the range (a clipped t interval covers the
# true mean whenever the raw one does, and a reader is not shown a recall below 0 or 1,003
# modes of 1,000). modes and KL depend on the number of classes, read from each run.
UNIT_RANGE = {"precision", "recall", "coverage"}
NONNEGATIVE = {"density", "kl", "js", "modes", "fid", "val_fid_auc", "wall_time_s", "train_time_s",
               "images_per_s"}
_METRIC_RE = re.compile(r"^(?P<ckpt>[a-z]+)\.(?P<feature>[a-z0-9_-]+)\.(?P<metric>[a-z_]+)$")
HACK_PREFIX = "hack:"


def parse_metric(col: str) -> tuple[str | None, str | None, str]:
    """``best.classifier.fid`` -> ("best", "classifier", "fid"); ``wall_time_s`` -> (None, None, ...)."""
    m = _METRIC_RE.match(col)
    if m:
        return m["ckpt"], m["feature"], m["metric"]
    return None, None, col


def base_metric(col: str) -> str:
    return parse_metric(col)[2]


def lower_is_better(col: str) -> bool:
    return base_metric(col) in LOWER_IS_BETTER


def uses_log(col: str) -> bool:
    """Whether ``col`` is tested on the log scale (FID, KID, validation-FID AUC, run times)."""
    return base_metric(col) in LOG_SCALE


def metric_range(col: str, num_modes: float | None = None) -> tuple[float, float]:
    """The values ``col`` can take: [0, 1] for precision, recall and coverage; [0, classes]
    for modes and [0, log classes] for KL(p_gen ‖ uniform) when ``num_modes`` is known;
    [0, log 2] for the class JS divergence (nats); [0, inf) for the other non-negative
    metrics; unbounded otherwise (KID's unbiased estimate can be negative)."""
    m = base_metric(col)
    known = num_modes is not None and math.isfinite(num_modes) and num_modes > 0
    if m in UNIT_RANGE:
        return 0.0, 1.0
    if m == "modes" and known:
        return 0.0, float(num_modes)
    if m == "kl" and known:
        return 0.0, math.log(num_modes)
    if m == "js":
        return 0.0, math.log(2)
    if m in NONNEGATIVE:
        return 0.0, math.inf
    return -math.inf, math.inf


def label(col: str) -> str:
    """``best.classifier.fid`` -> ``FID (classifier, best)``."""
    ckpt, feature, metric = parse_metric(col)
    name = METRIC_LABELS.get(metric, metric)
    return f"{name} ({feature}, {ckpt})" if ckpt else name


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns in a stable order: checkpoint, feature net, metric; then run metrics."""
    found = []
    for col in frame.columns:
        ckpt, feature, metric = parse_metric(col)
        if ckpt in CHECKPOINTS and metric in METRICS and pd.api.types.is_numeric_dtype(frame[col]) \
                and frame[col].notna().any():
            found.append(col)

    def order(col):
        ckpt, feature, metric = parse_metric(col)
        f = FEATURES.index(feature) if feature in FEATURES else len(FEATURES)
        return (CHECKPOINTS.index(ckpt), f, feature, METRICS.index(metric))

    found.sort(key=order)
    runs = [c for c in RUN_METRICS if c in frame.columns and frame[c].notna().any()]
    return found + runs


def headline_checkpoint(frame: pd.DataFrame) -> str:
    """``best`` (chosen on the validation split) where measured, else ``last``."""
    for ckpt in CHECKPOINTS:
        if any(parse_metric(c)[0] == ckpt and base_metric(c) == "fid" for c in metric_columns(frame)):
            return ckpt
    return "last"


def primary_metric(frame: pd.DataFrame, wanted: str | None = None) -> str | None:
    """The metric the verdicts are about: ``[analysis] metric`` when the frame has it, else
    FID of the headline checkpoint (classifier features before Inception: the classifier
    is what every run is scored with)."""
    cols = metric_columns(frame)
    if wanted in cols:
        return wanted
    for ckpt in CHECKPOINTS:
        for feature in FEATURES:
            if f"{ckpt}.{feature}.fid" in cols:
                return f"{ckpt}.{feature}.fid"
    fids = [c for c in cols if base_metric(c) == "fid"]
    return fids[0] if fids else None


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that enter means and tests: status ``done``."""
    return frame[frame["status"] == "done"]
