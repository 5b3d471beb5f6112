"""The primary analysis: one model per experiment and metric over all finished runs.

    y = log(metric)  ~  variant + seed        (fixed seed blocks, ordinary least squares)

Each hack's effect is the contrast ``variant(on) - variant(off)`` of the design's
comparison: on the log scale, ``exp`` of it is the ratio ON/OFF. Every run of the
experiment informs the residual variance, so a contrast is judged with the residual
degrees of freedom of the whole grid (24 in a 13-variant x 3-seed leave-one-out)
instead of the n - 1 = 2 of its own pairs. Fixed seed blocks keep the t distribution of
each contrast exact for any pattern of seeds (adaptive grids give the undecided variants
more seeds); where seeds are unbalanced a mixed model with a random seed intercept
(REML, its one variance ratio profiled: :func:`fit_mixed`) is fitted beside it as a
sensitivity check.

Besides it, per hack: the paired t-test on that hack's own pairs (the earlier
analysis, kept as a sensitivity column) and a bootstrap interval only from 10 pairs up.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special, stats

from ablate.report.columns import finished, uses_log
from ablate.report.results import Comparison

BOOTSTRAP_MIN_PAIRS = 10  # below this the percentile bootstrap is ~[min, max] (coverage ≈ 74% at n=3)
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # the report is deterministic
RESOLUTION = 1e-10  # relative: a residual sd below it is rounding noise of an exact fit


@dataclass(frozen=True)
class ContrastFit:
    """One hack's contrast in the pooled model, on the test scale (log ratio or difference)."""

    hack: str
    on: str
    off: str
    estimate: float
    se: float
    df: int
    n_on: int  # runs of the ON variant in the model
    n_off: int
    seeds: tuple[int, ...]  # seeds where both variants are in the model

    @property
    def t(self) -> float:
        return self.estimate / self.se if self.se > 0 else math.nan

    @property
    def p(self) -> float:
        """Two-sided p of ``estimate = 0`` (fixed-sample; see sequential.py for looks)."""
        return float(2 * special.stdtr(self.df, -abs(self.t))) if self.df > 0 and self.se > 0 else math.nan

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided ``1 - level`` interval, Student t on the model's residual df."""
        if not (self.df > 0 and self.se > 0):
            return (math.nan, math.nan)
        h = stats.t.isf(level / 2, self.df) * self.se
        return (self.estimate - h, self.estimate + h)


@dataclass(frozen=True)
class PooledFit:
    """The fitted model of one metric (see the module docstring)."""

    metric: str
    scale: str  # "log" or "raw"
    n_runs: int
    n_variants: int
    n_seeds: int
    df_resid: int
    sigma: float  # residual sd on the test scale
    balanced: bool  # every variant has the same seeds
    contrasts: tuple[ContrastFit, ...]
    fitted: np.ndarray = field(default_factory=lambda: np.empty(0))
    residuals: np.ndarray = field(default_factory=lambda: np.empty(0))
    residual_variants: np.ndarray = field(default_factory=lambda: np.empty(0))
    diverged_imputed: int = 0  # runs entered through the worst-value rule

    def contrast(self, hack: str) -> ContrastFit | None:
        return next((c for c in self.contrasts if c.hack == hack), None)

    def levene_p(self) -> float:
        """Brown-Forsythe test (Levene, median-centred) that residual variance is equal
        across variants; NaN when fewer than two variants have three or more runs. (With two
        runs a group's two deviations from its median are equal, so its spread is zero and
        the statistic divides by zero: p = 0 whatever the data.)"""
        groups = pd.Series(self.residuals).groupby(list(self.residual_variants))
        arrays = [g.to_numpy() for _, g in groups if len(g) >= 3 and np.ptp(g.to_numpy()) > 0]
        if len(arrays) < 2:
            return math.nan
        return float(stats.levene(*arrays, center="median").pvalue)

    def residual_shares(self) -> pd.Series:
        """Each variant's share of the residual sum of squares, largest first: one variant
        far noisier than the rest widens every contrast's interval through the pooled sd."""
        ss = pd.Series(np.asarray(self.residuals, float) ** 2).groupby(list(self.residual_variants)).sum()
        total = float(ss.sum())
        return (ss / total).sort_values(ascending=False, kind="stable") if total > 0 else ss.iloc[:0]

    def shapiro_p(self) -> float:
        """Shapiro-Wilk test of normal residuals (NaN below 3 residuals)."""
        r = np.asarray(self.residuals)
        if len(r) < 3 or np.ptp(r) == 0:
            return math.nan
        return float(stats.shapiro(r).pvalue)


def cells(frame: pd.DataFrame) -> dict[str, str]:
    """Variants that are the same runs: ``{variant: its cell}``, the cell named by the first
    variant (frame order) sharing its run keys; ``{}`` when no run is shared.

    With ``[axes]``, a variant that does not enable an axis' hack has one run key at every
    level of that axis: several variant names, one run condition. The models count such a
    run once, in one cell (:func:`model_data`); without axes every variant has runs of its own.
    """
    if "key" not in frame or not frame["key"].dropna().duplicated().any():
        return {}
    parent: dict[str, str] = {}
    order = {v: i for i, v in enumerate(dict.fromkeys(frame["variant"]))}

    def root(v: str) -> str:
        while parent.setdefault(v, v) != v:
            v = parent[v]
        return v

    first: dict[str, str] = {}
    for v, k in zip(frame["variant"], frame["key"]):
        a = root(v)
        if k in first and (b := root(first[k])) != a:
            parent[max(a, b, key=order.get)] = min(a, b, key=order.get)
        first.setdefault(k, v)
    return {v: root(v) for v in parent if root(v) != v}


def in_cells(frame: pd.DataFrame, alias: dict[str, str], subset: tuple[str, ...] = ("key",)) -> pd.DataFrame:
    """``frame`` with each variant renamed to its cell and shared runs kept once."""
    if not alias:
        return frame
    out = frame.assign(variant=frame["variant"].map(lambda v: alias.get(v, v)))
    return out.drop_duplicates(list(subset)).reset_index(drop=True)


def cell_comparisons(comparisons, alias: dict[str, str]) -> list[Comparison]:
    """The comparisons between cells (names kept; ON and OFF read through ``alias``)."""
    return [c if not alias else Comparison(c.hack, alias.get(c.on, c.on), alias.get(c.off, c.off), c.level)
            for c in comparisons]


def model_data(frame: pd.DataFrame, metric: str, log: bool | None = None,
               diverged: str = "exclude") -> tuple[pd.DataFrame, bool, int]:
    """The runs a model of ``metric`` uses: variant, seed, y (test scale).

    ``diverged="worst"`` enters each diverged run with the worst finished value of the
    experiment (the largest y for lower-is-better metrics, else the smallest): the stated
    rule that keeps a hack that prevents divergence from looking neutral.
    Returns (data, log scale used, number of imputed runs). A run planned under several
    variant names (``[axes]``) is one row, named by its cell (:func:`cells`).
    """
    from ablate.report.columns import lower_is_better

    frame = in_cells(frame, cells(frame))  # a run shared by several variant names counts once
    done = finished(frame)
    x = pd.to_numeric(done[metric], errors="coerce").astype(float)
    ok = np.isfinite(x)
    if log is None:
        log = uses_log(metric) and bool((x[ok] > 0).all()) and ok.any()
    if log:
        ok &= x > 0
    y = np.log(x[ok]) if log else x[ok]
    data = pd.DataFrame({"variant": done.loc[ok, "variant"], "seed": done.loc[ok, "seed"].astype(int),
                         "y": y})
    imputed = 0
    if diverged == "worst" and len(data):
        div = frame[frame["status"] == "diverged"]
        worst = data["y"].max() if lower_is_better(metric) else data["y"].min()
        extra = pd.DataFrame({"variant": div["variant"], "seed": div["seed"].astype(int), "y": worst})
        imputed = len(extra)
        data = pd.concat([data, extra], ignore_index=True)
    return data.reset_index(drop=True), bool(log), imputed


def fit_arrays(metric: str, log: bool, variants: np.ndarray, seeds: np.ndarray, y: np.ndarray,
               comparisons: list[Comparison], imputed: int = 0) -> PooledFit:
    """Least squares of y on variant indicators + seed-block indicators (arrays in)."""
    vnames, vidx = np.unique(variants, return_inverse=True)
    snames, sidx = np.unique(seeds, return_inverse=True)
    return fit_coded(metric, log, vnames, vidx, snames, sidx, y, comparisons, imputed)


def fit_coded(metric: str, log: bool, vnames: np.ndarray, vidx: np.ndarray, snames: np.ndarray,
              sidx: np.ndarray, y: np.ndarray, comparisons: list[Comparison], imputed: int = 0) -> PooledFit:
    """:func:`fit_arrays` on integer-coded variants and seeds (codes may be unused).

    Written with numpy's SVD instead of statsmodels' OLS on purpose: the sequential
    simulation (tests/test_report_sequential.py) fits this model tens of thousands of times
    and statsmodels costs ~50x more per fit; the tests check every number against
    statsmodels' formula API.
    """
    n, nv, ns = len(y), len(vnames), len(snames)
    X = np.zeros((n, nv + max(ns - 1, 0)))
    X[np.arange(n), vidx] = 1.0
    if ns > 1:  # seed blocks, treatment-coded: the first seed is the baseline
        rows = np.flatnonzero(sidx > 0)
        X[rows, nv + sidx[rows] - 1] = 1.0
    # One SVD gives the rank, the pseudo-inverse and the row space.
    u, sv, vt = np.linalg.svd(X, full_matrices=False)
    rank = int((sv > sv.max() * max(X.shape) * np.finfo(float).eps).sum()) if n else 0
    u, sv, vt = u[:, :rank], sv[:rank], vt[:rank]
    beta = vt.T @ ((u.T @ y) / sv)
    fitted = X @ beta
    resid = y - fitted
    df = n - rank
    sigma2 = float(resid @ resid / df) if df > 0 else math.nan
    # A metric constant within every variant (every run found all 10 modes) fits exactly:
    # its residuals and contrasts are rounding noise whose size and sign depend on the
    # CPU's kernels, and t = noise/noise would be a random p. Below the data's resolution
    # the residual sd is read as that resolution and the fit as exact, so such a contrast
    # has t = 0 (p = 1) or a clear difference, the same on every machine.
    # (a power of two, so estimates rounded to it are exact multiples on every machine)
    resolution = 2.0 ** math.ceil(math.log2(RESOLUTION * max(float(np.abs(y).max()) if n else 0.0, 1.0)))
    exact = df > 0 and sigma2 < resolution ** 2
    if exact:
        sigma2, fitted, resid = resolution ** 2, y.astype(float), np.zeros(n)
    half = vt.T / sv  # (X'X)^+ = half @ half.T
    pos = {v: i for i, v in enumerate(vnames.tolist())}
    runs = np.bincount(vidx, minlength=nv)
    contrasts = []
    for c in comparisons:
        i_on, i_off = pos.get(c.on), pos.get(c.off)
        n_on = int(runs[i_on]) if i_on is not None else 0
        n_off = int(runs[i_off]) if i_off is not None else 0
        est = se = math.nan
        common: tuple = ()
        if n_on and n_off:
            common = tuple(sorted(set(snames[sidx[vidx == i_on]].tolist())
                                  & set(snames[sidx[vidx == i_off]].tolist())))
            L = np.zeros(X.shape[1])
            L[i_on], L[i_off] = 1.0, -1.0
            # Estimable iff L lies in the row space of X (the variants are linked by seeds).
            if np.abs(vt.T @ (vt @ L) - L).max() < 1e-8:
                est = float(L @ beta)
                if exact:
                    est = round(est / resolution) * resolution + 0.0  # + 0.0: never -0
                se = math.sqrt(sigma2 * float(np.sum((L @ half) ** 2))) if df > 0 else math.nan
        contrasts.append(ContrastFit(c.hack, c.on, c.off, est, se, df, n_on, n_off, common))
    present = np.zeros((nv, ns), bool)
    present[vidx, sidx] = True
    present = present[runs > 0]
    return PooledFit(metric, "log" if log else "raw", n, int((runs > 0).sum()), len(np.unique(sidx)), df,
                     math.sqrt(sigma2) if df > 0 else math.nan, bool((present == present[:1]).all()),
                     tuple(contrasts), fitted, resid, vnames[vidx], imputed)


def fit_pooled(frame: pd.DataFrame, comparisons: tuple[Comparison, ...] | list[Comparison],
               metric: str, log: bool | None = None, diverged: str = "exclude") -> PooledFit | None:
    """Fit ``metric ~ variant + seed`` over all finished runs (see module docstring)."""
    data, log, imputed = model_data(frame, metric, log, diverged)
    if data.empty:
        return None
    return fit_arrays(metric, log, data["variant"].to_numpy(), data["seed"].to_numpy(),
                      data["y"].to_numpy(float), cell_comparisons(comparisons, cells(frame)), imputed)


MIXED_GRID = np.concatenate([[-math.inf], np.linspace(math.log(1e-8), math.log(1e6), 57)])  # log λ


def _reml(lam: float, y: np.ndarray, X: np.ndarray, Z: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """For y ~ X with V = σ²(I + λZZ') (Z: the 0/1 seed indicators, a column per seed): the
    REML deviance up to a constant, its derivative in λ, and the GLS fixed effects and their
    covariance. V⁻¹ = I - Z·diag(λ/(1 + λ·n_s))·Z' (Woodbury; Z'Z is diagonal), so a fit costs
    O(n·p²), not O(n³), and λ = 0 is exact."""
    n, p = X.shape
    counts = Z.sum(axis=0)
    w = lam / (1.0 + lam * counts)

    def vinv(a: np.ndarray) -> np.ndarray:
        return a - Z @ (w.reshape(-1, *[1] * (a.ndim - 1)) * (Z.T @ a))

    vx = vinv(X)
    xvx = X.T @ vx
    beta = np.linalg.solve(xvx, vx.T @ y)
    r = y - X @ beta
    vr = vinv(r)
    q = float(r @ vr)
    _, logdet_xvx = np.linalg.slogdet(xvx)
    dev = (n - p) * math.log(q) + float(np.log1p(lam * counts).sum()) + logdet_xvx
    # d/dλ of log|V| + log|X'V⁻¹X| + (n-p)·log(r'V⁻¹r), β profiled (dV/dλ = ZZ').
    a = Z.T @ vx
    zr = Z.T @ vr
    grad = (float(np.sum(counts / (1.0 + lam * counts))) - float(np.trace(np.linalg.solve(xvx, a.T @ a)))
            - (n - p) * float(zr @ zr) / q)
    return dev, grad, beta, q / (n - p) * np.linalg.inv(xvx)


def fit_mixed(frame: pd.DataFrame, comparisons, metric: str, log: bool | None = None) -> dict[str, tuple]:
    """Sensitivity model where seeds are unbalanced: y ~ variant with a random seed
    intercept, REML. hack -> (estimate, se); empty if it cannot be fitted.

    The model has one free ratio, λ = τ²/σ² (seed intercept over residual variance), and
    is fitted here by profiling it: the REML deviance over a grid of log λ (and λ = 0),
    then the root of its derivative between the best point's neighbours (scipy's brentq;
    a root is stable to rounding, where the minimum of a flat deviance moves by the square
    root of it); the fixed effects and their covariance are the GLS ones at that λ,
    σ²(X'V⁻¹X)⁻¹ with σ² the REML scale, as lme4 reports them. Hand-written on purpose:
    statsmodels' ``MixedLM.fit`` fails on these grids without saying so (on
    fashion-mnist-1k-lr's look 2 BFGS stops, the lbfgs retry lands on τ² = 0 with an
    infinite log-likelihood, and the interval it returns differs between machines: [1.11,
    1.37] on one AMD EPYC host, [1.09, 1.39] on another). The tests check the profile
    against statsmodels' ``MixedLM.loglike`` and the result against MixedLM fits that
    converge.
    """
    from scipy.optimize import brentq

    data, _, _ = model_data(frame, metric, log)
    if data.empty or data["seed"].nunique() < 3:
        return {}
    X = pd.get_dummies(data["variant"]).astype(float)
    y, x = data["y"].to_numpy(float), X.to_numpy()
    Z = pd.get_dummies(data["seed"]).to_numpy(float)
    if len(y) <= x.shape[1] or not np.ptp(y) > 0:
        return {}

    def fit(t: float) -> tuple:
        try:
            return _reml(math.exp(t), y, x, Z)
        except (ValueError, np.linalg.LinAlgError):
            return (math.inf, math.nan, None, None)

    dev = np.array([fit(t)[0] for t in MIXED_GRID])
    if not np.isfinite(dev).any():
        return {}
    i = int(np.argmin(dev))
    t = MIXED_GRID[i]
    if i > 0:  # the deviance's minimum lies between the neighbours of its best grid point
        lo, hi = MIXED_GRID[max(i - 1, 1)], MIXED_GRID[min(i + 1, len(MIXED_GRID) - 1)]
        slope = lambda u: fit(u)[1]  # noqa: E731  (d dev / dλ has the sign of d dev / d log λ)
        if slope(lo) < 0 < slope(hi):
            t = brentq(slope, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps)
    _, _, beta, cov = fit(t)
    if beta is None:
        return {}
    out = {}
    for c in cell_comparisons(comparisons, cells(frame)):
        if c.on in X.columns and c.off in X.columns:
            L = (X.columns == c.on).astype(float) - (X.columns == c.off).astype(float)
            out[c.hack] = (float(L @ beta), float(np.sqrt(max(L @ cov @ L, 0.0))))
    return out


# --------------------------------------------------------------------------------------
# Sensitivity: the per-hack paired t-test on the hack's own pairs
# --------------------------------------------------------------------------------------
def paired_values(frame: pd.DataFrame, c: Comparison, metric: str) -> pd.DataFrame:
    """Seeds where both variants finished with a finite value: columns seed, on, off."""
    done = finished(frame)
    pick = lambda v: done[done["variant"] == v].groupby("seed")[metric].mean()  # noqa: E731
    both = pd.concat({"on": pick(c.on), "off": pick(c.off)}, axis=1).dropna()
    both = both[np.isfinite(both["on"]) & np.isfinite(both["off"])]
    return both.rename_axis("seed").reset_index()


def bootstrap_ci(d: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap CI of the mean paired difference; NaN below BOOTSTRAP_MIN_PAIRS pairs
    (with 3 pairs only 10 distinct resamples exist and the interval is [min, max])."""
    d = np.asarray(d, dtype=float)
    if len(d) < BOOTSTRAP_MIN_PAIRS:
        return (math.nan, math.nan)
    if np.ptp(d) == 0:
        return (float(d[0]), float(d[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((d,), np.mean, confidence_level=confidence,
                              n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                              rng=np.random.default_rng(BOOTSTRAP_SEED))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def paired_test(frame: pd.DataFrame, c: Comparison, metric: str, log: bool,
                confidence: float = 0.95) -> dict:
    """The paired t-test of one contrast on its own seeds (test scale: log for FID)."""
    pv = paired_values(frame, c, metric)
    on, off = pv["on"].to_numpy(float), pv["off"].to_numpy(float)
    log = log and len(on) > 0 and bool((on > 0).all() and (off > 0).all())
    d = (np.log(on) - np.log(off)) if log else (on - off)
    n = len(d)
    out = {"pairs": n, "paired_seeds": ",".join(map(str, pv["seed"])),
           "paired_mean": float(d.mean()) if n else math.nan,
           "paired_sd": float(d.std(ddof=1)) if n > 1 else math.nan,
           "paired_low": math.nan, "paired_high": math.nan, "paired_p": math.nan, "paired_dz": math.nan}
    if n > 1 and out["paired_sd"] > 0:
        se = out["paired_sd"] / math.sqrt(n)
        h = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
        out.update(paired_low=out["paired_mean"] - h, paired_high=out["paired_mean"] + h,
                   paired_p=float(stats.ttest_rel(np.log(on) if log else on,
                                                  np.log(off) if log else off).pvalue),
                   paired_dz=out["paired_mean"] / out["paired_sd"])
    out["boot_low"], out["boot_high"] = bootstrap_ci(d, confidence)
    return out


def holm(p: pd.Series) -> pd.Series:
    """Holm-adjusted p values (statsmodels ``multipletests``); NaN stays NaN."""
    import gc

    from statsmodels.stats.multitest import multipletests

    out = pd.Series(np.nan, index=p.index, dtype=float)
    ok = p.notna()
    if ok.any():
        # statsmodels' Holm branch calls gc.collect(), which costs ~0.3 s per call in a
        # process holding torch; freezing the heap first makes that collection trivial.
        gc.freeze()
        try:
            out[ok] = multipletests(p[ok].to_numpy(float), method="holm")[1]
        finally:
            gc.unfreeze()
    return out
