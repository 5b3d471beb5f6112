"""Statistics behind the report: per-variant summaries, paired hack effects, Holm,
power, collapse rates and factorial (least-squares) effects.

Conventions (documented in REPORT.md too):

* A *run* is one (variant, seed). Only runs with status ``done`` enter means and tests;
  diverged, failed and unfinished runs are counted and shown beside them.
* An *effect* of hack ``h`` is ``metric(h ON) - metric(h OFF)``, paired by seed, over a
  pair of variants that differ only in ``h``: leave-one-out compares all-on with
  all-on-minus-h, add-one-in compares all-off-plus-h with all-off. For FID (lower is
  better) a negative effect means the hack helps.
* FID is tested on the log scale (effects of training choices on FID are closer to
  multiplicative, and the log tames the heavy collapse tail); the effect is also
  reported in FID units and as a ratio.
* A run counts as *collapsed* when its classifier mode coverage is below
  ``COLLAPSE_MODE_FRACTION`` of the dataset's modes (8 of 10; 800 of 1000 on Stacked
  MNIST) or its class KL(p_gen || p_real) exceeds ``COLLAPSE_KL`` nats.
"""

from __future__ import annotations

import gc
import itertools
import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05  # family-wise error rate per metric (Holm across hacks)
POWER = 0.80  # the power at which the minimum detectable effect is stated
CONFIDENCE = 0.95
COLLAPSE_MODE_FRACTION = 0.8  # modes covered below 80% of the dataset's modes -> collapsed
COLLAPSE_KL = 0.5  # KL(p_gen || p_real) above 0.5 nats -> collapsed (one-class output: log 10 = 2.3)
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # the report is deterministic

CHECKPOINTS = ("best", "last")
FEATURES = ("inception", "classifier")
METRICS = ("fid", "kid_mean", "modes", "kl", "precision", "recall", "density", "coverage")
RUN_METRICS = ("wall_time_s", "train_time_s", "images_per_s")
LOWER_IS_BETTER = {"fid", "kid_mean", "kl", "wall_time_s", "train_time_s"}
LOG_SCALE = {"fid"}  # tested on log scale
METRIC_LABELS = {
    "fid": "FID", "kid_mean": "KID", "modes": "modes", "kl": "class KL",
    "precision": "precision", "recall": "recall", "density": "density",
    "coverage": "coverage", "wall_time_s": "wall time (s)", "train_time_s": "train time (s)",
    "images_per_s": "images/s",
}
_METRIC_RE = re.compile(r"^(?P<ckpt>[a-z]+)\.(?P<feature>[a-z0-9_-]+)\.(?P<metric>[a-z_]+)$")
HACK_PREFIX = "hack:"


# --------------------------------------------------------------------------------------
# Column vocabulary
# --------------------------------------------------------------------------------------
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
    return base_metric(col) in LOG_SCALE


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
        if ckpt in CHECKPOINTS and metric in METRICS and pd.api.types.is_numeric_dtype(frame[col]):
            if frame[col].notna().any():
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


def primary_metric(frame: pd.DataFrame, meta: dict | None = None) -> str | None:
    """The metric the summary leads with: ``meta['primary_metric']`` or the first FID found
    (Inception before classifier features; best checkpoint before last)."""
    cols = metric_columns(frame)
    wanted = (meta or {}).get("primary_metric")
    if wanted in cols:
        return wanted
    for ckpt in CHECKPOINTS:
        for feature in FEATURES:
            if f"{ckpt}.{feature}.fid" in cols:
                return f"{ckpt}.{feature}.fid"
    fids = [c for c in cols if base_metric(c) == "fid"]
    return fids[0] if fids else (cols[0] if cols else None)


def hack_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(HACK_PREFIX)]


def hacks_in_scope(frame: pd.DataFrame, meta: dict | None = None) -> list[str]:
    """Hack names with a ``hack:<name>`` column, in the order of ``meta['hacks']`` when given."""
    names = [c[len(HACK_PREFIX):] for c in hack_columns(frame)]
    order = [h if isinstance(h, str) else h.get("name") for h in (meta or {}).get("hacks") or []]
    ranked = [h for h in order if h in names]
    return ranked + [h for h in names if h not in ranked]


def variant_hacks(frame: pd.DataFrame, meta: dict | None = None) -> dict[str, frozenset[str]]:
    """variant -> the set of hacks switched on (from the ``hack:`` columns)."""
    hacks = hacks_in_scope(frame, meta)
    out: dict[str, frozenset[str]] = {}
    for variant, rows in frame.groupby("variant", sort=False):
        first = rows.iloc[0]
        out[variant] = frozenset(h for h in hacks if bool(first.get(HACK_PREFIX + h, False)))
    return out


def variant_order(frame: pd.DataFrame, meta: dict | None = None) -> list[str]:
    """Variants in the design's order (``meta['variants']``), unknown ones after."""
    present = list(dict.fromkeys(frame["variant"]))
    declared = [v for v, _ in _meta_variants(meta)]
    ranked = [v for v in declared if v in present]
    return ranked + [v for v in present if v not in ranked]


def _meta_variants(meta: dict | None) -> list[tuple[str, dict]]:
    variants = (meta or {}).get("variants") or []
    if isinstance(variants, dict):
        return [(k, v if isinstance(v, dict) else {"reference": v}) for k, v in variants.items()]
    out = []
    for v in variants:
        if isinstance(v, str):
            out.append((v, {}))
        elif isinstance(v, dict) and v.get("name"):
            out.append((v["name"], v))
    return out


def _meta_comparisons(meta: dict | None) -> list[tuple[str, str]]:
    """(on, off) variant pairs from ``meta['reference']`` ({hack: {on, off}}) and
    ``meta['design']['comparisons']`` ([{hack, on, off}])."""
    meta = meta or {}
    out = []
    ref = meta.get("reference")
    if isinstance(ref, dict):
        out += [(c["on"], c["off"]) for c in ref.values() if isinstance(c, dict) and "on" in c and "off" in c]
    design = meta.get("design")
    if isinstance(design, dict):
        out += [(c["on"], c["off"]) for c in design.get("comparisons") or []
                if isinstance(c, dict) and "on" in c and "off" in c]
    return out


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that enter means and tests: status ``done``."""
    if "status" not in frame.columns:
        return frame
    return frame[frame["status"] == "done"]


# --------------------------------------------------------------------------------------
# Per-variant summaries
# --------------------------------------------------------------------------------------
def t_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t confidence interval of the mean (NaN when n < 2)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2:
        return (math.nan, math.nan)
    mean, se = x.mean(), x.std(ddof=1) / math.sqrt(n)
    h = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    return (mean - h, mean + h)


def num_modes(frame: pd.DataFrame, meta: dict | None = None) -> int:
    """How many modes the dataset has: ``meta['num_modes']``, else 1000 for Stacked MNIST
    (or when any run covers more than 10), else 10."""
    meta = meta or {}
    for key in ("num_modes", "num_classes"):
        if meta.get(key):
            return int(meta[key])
    recorded = [c for c in frame.columns if c.endswith(".classifier.num_modes")]
    if recorded and frame[recorded].notna().any().any():  # metrics.json records it per run
        return int(np.nanmax(frame[recorded].to_numpy(dtype=float)))
    dataset = str(meta.get("dataset") or (meta.get("experiment") or {}).get("dataset", ""))
    if "stacked" in dataset.lower():
        return 1000
    mode_cols = [c for c in frame.columns if base_metric(c) == "modes" and parse_metric(c)[0]]
    if mode_cols and frame[mode_cols].max().max() > 10:
        return 1000
    return 10


def collapse_flags(frame: pd.DataFrame, meta: dict | None = None,
                   checkpoint: str | None = None) -> pd.Series:
    """Per run: True if collapsed, False if not, NaN if no mode metrics were measured."""
    ckpt = checkpoint or headline_checkpoint(frame)
    modes = frame.get(f"{ckpt}.classifier.modes")
    kl = frame.get(f"{ckpt}.classifier.kl")
    if modes is None and kl is None:
        return pd.Series(np.nan, index=frame.index, dtype=object)
    threshold = COLLAPSE_MODE_FRACTION * num_modes(frame, meta)
    low = (modes < threshold) if modes is not None else pd.Series(False, index=frame.index)
    high = (kl > COLLAPSE_KL) if kl is not None else pd.Series(False, index=frame.index)
    known = pd.Series(False, index=frame.index)
    if modes is not None:
        known |= modes.notna()
    if kl is not None:
        known |= kl.notna()
    return (low.fillna(False) | high.fillna(False)).astype(object).where(known, np.nan)


def variant_counts(frame: pd.DataFrame, meta: dict | None = None) -> pd.DataFrame:
    """One row per variant: hacks on, runs, done, diverged, failed, unfinished, collapsed."""
    hacks = variant_hacks(frame, meta)
    all_hacks = set(hacks_in_scope(frame, meta))
    status = frame["status"] if "status" in frame.columns else pd.Series("done", index=frame.index)
    collapsed = collapse_flags(frame, meta)
    rows = []
    for v in variant_order(frame, meta):
        m = frame["variant"] == v
        done = m & (status == "done")
        c = collapsed[done]
        known = c.notna()
        rows.append({
            "variant": v,
            "hacks_on": len(hacks[v]),
            "hacks_off": ", ".join(sorted(all_hacks - hacks[v])) if len(hacks[v]) > len(all_hacks) / 2
            else "",
            "runs": int(m.sum()),
            "n": int(done.sum()),
            "seeds": ",".join(str(s) for s in sorted(frame.loc[done, "seed"].tolist())),
            "diverged": int((m & (status == "diverged")).sum()),
            "failed": int((m & (status == "failed")).sum()),
            "unfinished": int((m & status.isin(["pending", "running"])).sum()),
            "collapsed": int(c[known].astype(bool).sum()) if known.any() else np.nan,
            "collapse_rate": float(c[known].astype(bool).mean()) if known.any() else np.nan,
        })
    return pd.DataFrame(rows)


def summarize_variants(frame: pd.DataFrame, meta: dict | None = None,
                       metrics: list[str] | None = None) -> pd.DataFrame:
    """Long table: variant, metric, n, seeds, mean, std, ci_low, ci_high (95% t interval).

    For log-scale metrics (FID) the geometric mean is given too (``gmean``).
    """
    done = finished(frame)
    metrics = metrics if metrics is not None else metric_columns(frame)
    rows = []
    for v in variant_order(frame, meta):
        sub = done[done["variant"] == v]
        for col in metrics:
            ok = sub[col].notna() & np.isfinite(sub[col].astype(float))
            x = sub.loc[ok, col].to_numpy(dtype=float)
            lo, hi = t_interval(x)
            rows.append({
                "variant": v, "metric": col, "n": len(x),
                "seeds": ",".join(str(s) for s in sorted(sub.loc[ok, "seed"])),
                "mean": x.mean() if len(x) else np.nan,
                "std": x.std(ddof=1) if len(x) > 1 else np.nan,
                "ci_low": lo, "ci_high": hi,
                "gmean": float(np.exp(np.log(x).mean())) if uses_log(col) and len(x) and (x > 0).all()
                else np.nan,
            })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Paired hack effects
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contrast:
    """Two variants that differ only in ``hack``: ``on`` has it, ``off`` does not."""

    hack: str
    on: str
    off: str
    kind: str  # "leave-one-out", "add-one-in" or "reference"

    @property
    def description(self) -> str:
        if self.kind == "leave-one-out":
            return f"{self.on} vs {self.off} (all-on minus {self.hack})"
        if self.kind == "add-one-in":
            return f"{self.on} vs {self.off} (all-off plus {self.hack})"
        return f"{self.on} vs {self.off}"


def contrasts(frame: pd.DataFrame, meta: dict | None = None) -> list[Contrast]:
    """Every pair of variants that differ only in one hack and involve a reference.

    Leave-one-out pairs (on = all-on), add-one-in pairs (off = all-off), and any
    variant/reference pair that ``meta['variants']`` declares.
    """
    hacks = variant_hacks(frame, meta)
    scope = frozenset(hacks_in_scope(frame, meta))
    by_set: dict[frozenset, str] = {}
    for v, s in hacks.items():
        by_set.setdefault(s, v)
    found: dict[tuple[str, str, str], Contrast] = {}

    def add(a: str, b: str, kind: str | None) -> None:
        diff = hacks[a] ^ hacks[b]
        if len(diff) != 1:
            return
        (h,) = diff
        on, off = (a, b) if h in hacks[a] else (b, a)
        if kind is None:
            kind = ("leave-one-out" if hacks[on] == scope
                    else "add-one-in" if not hacks[off] else "reference")
        found.setdefault((h, on, off), Contrast(h, on, off, kind))

    all_on, all_off = by_set.get(scope), by_set.get(frozenset())
    for v in hacks:
        if all_on is not None and v != all_on:
            add(all_on, v, "leave-one-out")
        if all_off is not None and v != all_off:
            add(v, all_off, "add-one-in")
    for v, spec in _meta_variants(meta):
        ref = spec.get("reference")
        if isinstance(ref, str) and v in hacks and ref in hacks:
            add(v, ref, None)
    for on, off in _meta_comparisons(meta):  # the design's declared {hack, on, off} pairs
        if on in hacks and off in hacks:
            add(on, off, None)
    order = {h: i for i, h in enumerate(hacks_in_scope(frame, meta))}
    kinds = {"leave-one-out": 0, "add-one-in": 1, "reference": 2}
    return sorted(found.values(), key=lambda c: (kinds[c.kind], order.get(c.hack, 99), c.on, c.off))


def paired_values(frame: pd.DataFrame, c: Contrast, metric: str) -> pd.DataFrame:
    """Seeds where both variants finished with a finite value: columns seed, on, off."""
    done = finished(frame)
    pick = lambda v: (done[done["variant"] == v].groupby("seed")[metric].mean())  # noqa: E731
    both = pd.concat({"on": pick(c.on), "off": pick(c.off)}, axis=1).dropna()
    both = both[np.isfinite(both["on"]) & np.isfinite(both["off"])]
    return both.rename_axis("seed").reset_index()


def bootstrap_ci(d: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Bootstrap CI of the mean paired difference (percentile below n=10, BCa above)."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return (math.nan, math.nan)
    if np.ptp(d) == 0:
        return (float(d[0]), float(d[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((d,), np.mean, confidence_level=confidence,
                              n_resamples=BOOTSTRAP_RESAMPLES,
                              method="percentile" if len(d) < 10 else "BCa",
                              random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def min_rank_test_p(n: int) -> float:
    """The smallest two-sided p a sign-flip or signed-rank test can reach with n pairs."""
    return min(1.0, 2.0 / 2 ** n)


def paired_effect(on: np.ndarray, off: np.ndarray, log: bool) -> dict:
    """Effect of one contrast on one metric (see module docstring)."""
    on, off = np.asarray(on, float), np.asarray(off, float)
    n = len(on)
    d = on - off
    out = {"n": n, "delta": d.mean() if n else np.nan,
           "delta_sd": d.std(ddof=1) if n > 1 else np.nan}
    out["ci_low"], out["ci_high"] = t_interval(d)
    out["boot_low"], out["boot_high"] = bootstrap_ci(d)
    log = log and n > 0 and bool((on > 0).all() and (off > 0).all())
    dt = np.log(on) - np.log(off) if log else d
    out["scale"] = "log" if log else "raw"
    out["test_delta"] = dt.mean() if n else np.nan
    out["test_sd"] = dt.std(ddof=1) if n > 1 else np.nan
    if log and n:
        lo, hi = t_interval(dt)
        out.update(ratio=float(np.exp(dt.mean())), ratio_low=float(np.exp(lo)), ratio_high=float(np.exp(hi)))
    else:
        out.update(ratio=np.nan, ratio_low=np.nan, ratio_high=np.nan)
    p = np.nan
    if n >= 2 and out["test_sd"] > 0:
        p = float(stats.ttest_rel(np.log(on) if log else on, np.log(off) if log else off).pvalue)
    out["p"] = p
    out["effect_size"] = out["test_delta"] / out["test_sd"] if n > 1 and out["test_sd"] > 0 else np.nan
    # Rank tests only where they can reach the threshold at all (n >= 6 pairs).
    out["p_wilcoxon"] = (float(stats.wilcoxon(dt).pvalue)
                         if min_rank_test_p(n) < ALPHA and np.any(dt != 0) else np.nan)
    return out


def holm(p: pd.Series) -> pd.Series:
    """Holm-adjusted p values (NaN stays NaN)."""
    from statsmodels.stats.multitest import multipletests

    out = pd.Series(np.nan, index=p.index)
    ok = p.notna()
    if ok.any():
        # statsmodels' Holm branch calls gc.collect(), which costs ~0.3 s per call in a
        # process holding torch; freezing the heap first makes that collection trivial.
        gc.freeze()
        try:
            out[ok] = multipletests(p[ok].to_numpy(), alpha=ALPHA, method="holm")[1]
        finally:
            gc.unfreeze()
    return out


def verdict(row: pd.Series) -> str:
    """Plain words: helps / hurts / no detectable effect at n=N / not testable."""
    n = int(row["n"])
    if n < 2 or pd.isna(row["p_holm"]):
        return f"not testable (n={n})"
    if row["p_holm"] < ALPHA:
        good = (row["test_delta"] < 0) == lower_is_better(row["metric"])
        return "helps" if good else "hurts"
    return f"no detectable effect at n={n}"


def hack_effects(frame: pd.DataFrame, meta: dict | None = None,
                 metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per (metric, contrast): Δ with t and bootstrap CIs, ratio, paired t-test
    p (log scale for FID), Holm-adjusted p across the contrasts of that metric, the
    paired effect size d_z (mean/sd of the differences on the test scale), a verdict."""
    metrics = metrics if metrics is not None else metric_columns(frame)
    rows = []
    for col in metrics:
        for c in contrasts(frame, meta):
            pv = paired_values(frame, c, col)
            rows.append({"metric": col, "hack": c.hack, "kind": c.kind, "on": c.on, "off": c.off,
                         "contrast": c.description,
                         "seeds": ",".join(str(s) for s in pv["seed"]),
                         **paired_effect(pv["on"].to_numpy(), pv["off"].to_numpy(), uses_log(col))})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = table.groupby("metric", group_keys=False)["p"].apply(holm)
    table["verdict"] = table.apply(verdict, axis=1)
    return table


# --------------------------------------------------------------------------------------
# Power
# --------------------------------------------------------------------------------------
def paired_t_power(d: float, n: int, alpha: float) -> float:
    """Power of a two-sided paired t-test with n pairs at standardized effect d_z."""
    df, nc = n - 1, d * math.sqrt(n)
    tc = stats.t.ppf(1 - alpha / 2, df)
    # scipy's nct.cdf returns NaN far in the lower tail (df=2, large nc); that tail is ~0.
    lower = stats.nct.cdf(-tc, df, nc)
    return float(stats.nct.sf(tc, df, nc) + (0.0 if not np.isfinite(lower) else lower))


def min_detectable_d(n: int, alpha: float, power: float = POWER) -> float:
    """Smallest standardized paired effect d_z that a two-sided paired t-test with n pairs
    detects with the given power at level alpha (root of the noncentral-t power).

    Hand-written on purpose: statsmodels' ``TTestPower.solve_power`` goes through the
    same scipy ``nct.cdf`` NaN at n=3 and returns d_z ≈ 5.0 where the power is only 61%
    (Monte Carlo and this function agree on 6.55 for n=3, α=0.0125).
    """
    if n < 2:
        return math.inf
    from scipy.optimize import brentq

    return float(brentq(lambda d: paired_t_power(d, n, alpha) - power, 1e-6, 1e4, xtol=1e-8))


def power_table(effects: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per metric: the smallest effect detectable at α=0.05 after Holm (the first Holm
    step's α/m, so regardless of the other hacks) with 80% power, given the number of
    paired seeds and the observed seed spread (pooled sd of the paired differences)."""
    rows = []
    if effects.empty:
        return pd.DataFrame(rows)
    for col, grp in effects.groupby("metric", sort=False):
        g = grp[grp["n"] >= 2]
        if g.empty:
            continue
        m = int(g["p"].notna().sum()) or len(g)
        n = int(g["n"].median())
        dfs = g["n"] - 1
        var = (g["test_sd"] ** 2 * dfs).sum() / dfs.sum()
        sd = math.sqrt(var) if np.isfinite(var) else np.nan
        d_min = min_detectable_d(n, ALPHA / m)
        mde = d_min * sd if sd > 0 else np.nan  # no seed spread observed: nothing to scale
        row = {"metric": col, "tests": m, "n": n, "alpha_first_step": ALPHA / m,
               "scale": g["scale"].iloc[0], "pooled_sd": sd, "d_z_min": d_min, "mde": mde,
               "mde_percent": np.nan, "mde_raw": mde, "min_rank_p": min_rank_test_p(n)}
        if row["scale"] == "log":
            row["mde_percent"] = 100 * (math.exp(mde) - 1) if np.isfinite(mde) else np.nan
            typical = np.nan
            if summary is not None and not summary.empty:
                s = summary[summary["metric"] == col]["gmean"].dropna()
                typical = float(np.exp(np.log(s).mean())) if len(s) else np.nan
            row["mde_raw"] = typical * (math.exp(mde) - 1) if np.isfinite(mde) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Factorial designs: least squares main effects and resolved two-factor interactions
# --------------------------------------------------------------------------------------
FACTORIAL_DESIGNS = ("full-factorial", "fractional-factorial", "factorial", "plackett-burman")


def is_factorial(meta: dict | None) -> bool:
    return any(k in design_name(meta).lower() for k in ("factorial", "plackett"))


def design_name(meta: dict | None) -> str:
    """``meta['design']`` as a name: a string, or a dict's ``kind`` (ablate.design) or ``name``."""
    d = (meta or {}).get("design")
    if isinstance(d, dict):
        return str(d.get("kind") or d.get("name") or "unknown")
    return str(d or "unknown")


@dataclass
class FactorialFit:
    metric: str
    scale: str
    table: pd.DataFrame  # term, kind, effect, se, t, p, p_holm, ratio
    aliased: list[str] = field(default_factory=list)
    n_runs: int = 0
    n_variants: int = 0
    df_resid: int = 0
    blocked_by_seed: bool = False
    note: str = ""
    mde: float = float("nan")  # smallest main effect detectable (80% power, α/m), test scale


def _rank(m: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(m)) if m.size else 0


def factorial_effects(frame: pd.DataFrame, meta: dict | None, metric: str) -> FactorialFit | None:
    """OLS on ±1-coded hacks (+ seed blocks): main effects, plus the two-factor
    interactions that the design resolves (those not aliased with any other term).
    An *effect* is the change from OFF to ON (2β), on the log scale for FID."""
    import statsmodels.api as sm

    done = finished(frame)
    done = done[done[metric].notna() & np.isfinite(done[metric].astype(float))]
    hacks = [h for h in hacks_in_scope(frame, meta) if done[HACK_PREFIX + h].astype(bool).nunique() == 2]
    if len(done) < 3 or not hacks:
        return None
    y = done[metric].to_numpy(float)
    log = uses_log(metric) and bool((y > 0).all())
    if log:
        y = np.log(y)
    X = pd.DataFrame({h: np.where(done[HACK_PREFIX + h].astype(bool), 1.0, -1.0) for h in hacks},
                     index=done.index)
    # Which interactions does the design resolve? Check on the variant-level matrix.
    variants = X.drop_duplicates()
    pairs = list(itertools.combinations(hacks, 2))
    inter = pd.DataFrame({f"{a}×{b}": variants[a] * variants[b] for a, b in pairs}, index=variants.index)
    full = np.column_stack([np.ones(len(variants)), variants.to_numpy(), inter.to_numpy()]) \
        if pairs else np.column_stack([np.ones(len(variants)), variants.to_numpy()])
    mains_rank = _rank(np.column_stack([np.ones(len(variants)), variants.to_numpy()]))
    if mains_rank < 1 + len(hacks):
        return FactorialFit(metric, "log" if log else "raw", pd.DataFrame(), n_runs=len(done),
                            n_variants=len(variants),
                            note="the design does not resolve every main effect (aliased); not fitted")
    r = _rank(full)
    resolved, aliased = [], []
    for j, name in enumerate(inter.columns):
        keep = np.delete(full, 1 + len(hacks) + j, axis=1)
        (resolved if _rank(keep) == r - 1 else aliased).append(name)
    terms = X.copy()
    for name in resolved:
        a, b = name.split("×")
        terms[name] = X[a] * X[b]
    seeds = done["seed"].astype(str)
    blocked = seeds.nunique() > 1
    design = terms
    if blocked:
        design = pd.concat([terms, pd.get_dummies(seeds, prefix="seed", drop_first=True).astype(float)],
                           axis=1)
    design = sm.add_constant(design, has_constant="add")
    note = ""
    if len(design) - _rank(design.to_numpy()) < 1 or _rank(design.to_numpy()) < design.shape[1]:
        # Too few runs for the interactions: fall back to main effects only.
        aliased, resolved = aliased + resolved, []
        design = sm.add_constant(pd.concat(
            [X] + ([pd.get_dummies(seeds, prefix="seed", drop_first=True).astype(float)] if blocked else []),
            axis=1), has_constant="add")
        note = "too few runs to estimate interactions: main effects only"
    df_resid = len(design) - _rank(design.to_numpy())
    if df_resid < 1:
        return FactorialFit(metric, "log" if log else "raw", pd.DataFrame(), aliased=aliased,
                            n_runs=len(done), n_variants=len(variants), blocked_by_seed=blocked,
                            note="no residual degrees of freedom: add seeds or variants")
    fit = sm.OLS(y, design).fit()
    rows = []
    for term in list(hacks) + resolved:
        beta, se = fit.params[term], fit.bse[term]
        rows.append({"term": term, "kind": "interaction" if "×" in term else "main",
                     "effect": 2 * beta, "se": 2 * se, "t": fit.tvalues[term], "p": fit.pvalues[term],
                     "ratio": math.exp(2 * beta) if log else np.nan})
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"])
    n_seeds = seeds.nunique()

    def words(kind, e, ph):
        if kind == "interaction":
            return "interacts" if ph < ALPHA else f"no detectable interaction ({n_seeds} seeds)"
        if ph < ALPHA:
            return "helps" if (e < 0) == lower_is_better(metric) else "hurts"
        return f"no detectable effect ({n_seeds} seeds)"

    table["verdict"] = [words(k, e, ph) for k, e, ph in zip(table["kind"], table["effect"], table["p_holm"])]
    # Normal-approximation-free MDE: SE × (t_{1-α/2m} + t_{power}) on the residual df.
    se_main = float(table.loc[table["kind"] == "main", "se"].median())
    df = max(int(fit.df_resid), 1)
    mde = se_main * (stats.t.ppf(1 - ALPHA / (2 * len(table)), df) + stats.t.ppf(POWER, df))
    return FactorialFit(metric, "log" if log else "raw", table, aliased=aliased, n_runs=len(done),
                        n_variants=len(variants), df_resid=int(fit.df_resid), blocked_by_seed=blocked,
                        note=note, mde=mde)
