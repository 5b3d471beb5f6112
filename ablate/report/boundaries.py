"""Group-sequential boundaries: Lan-DeMets O'Brien-Fleming-type alpha spending, and the
map between Student t and normal deviates (see :mod:`ablate.report.sequential`)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special, stats
from scipy.optimize import brentq

_GRID = 801  # points of the numerical integration (odd: Simpson's rule)
_NEGLIGIBLE = 1e-15  # a spending increment below this is a boundary at infinity


# --------------------------------------------------------------------------------------
# Boundaries. No maintained Python package computes group-sequential boundaries
# (statsmodels has none; gsDesign, ldbounds and rpact are R), so the standard recursive
# numerical integration (Armitage, McPherson & Rowe 1969; Jennison & Turnbull ch. 19) is
# written here; tests check it against published values and scipy's multivariate normal.
# --------------------------------------------------------------------------------------
def spent(t: float, level: float) -> float:
    """One-sided Lan-DeMets O'Brien-Fleming-type spending: 2 - 2 Φ(z_{1-level/2} / √t)."""
    return float(2 * stats.norm.sf(stats.norm.isf(level / 2) / math.sqrt(t)))


def _simpson(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(lo, hi, _GRID)
    w = np.ones(_GRID)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return x, w * (hi - lo) / (_GRID - 1) / 3


@lru_cache(maxsize=4096)
def boundaries(level: float, fractions: tuple[float, ...], two_sided: bool) -> tuple[float, ...]:
    """Critical z values, one per look, for information ``fractions`` (increasing, the
    last normally 1). Two-sided: reject when |Z_k| >= c_k, ``level/2`` spent per side.
    One-sided: reject when Z_k >= c_k."""
    per_side = level / 2 if two_sided else level
    out: list[float] = []
    x = dens = w = None
    prev_t, prev_spent = 0.0, 0.0
    for t in fractions:
        now = spent(t, per_side)
        inc = now - prev_spent
        sd = math.sqrt(t)
        if x is None:  # first look: S_1 = Z_1 √t_1 ~ N(0, t_1)
            c = stats.norm.isf(inc) if inc > _NEGLIGIBLE else math.inf
        else:
            step = math.sqrt(t - prev_t)
            mass = dens * w

            def excess(cz: float) -> float:
                # Called at once by brentq below, within this iteration.
                return float(mass @ stats.norm.sf((cz * sd - x) / step)) - inc  # noqa: B023

            c = brentq(excess, -10.0, 40.0, xtol=1e-10) if inc > _NEGLIGIBLE else math.inf
        out.append(float(c))
        # Density of S_k on the continuation region, for the next look.
        hi = min(c * sd, 10 * sd)
        lo = -hi if two_sided else -10 * sd
        xn, wn = _simpson(lo, hi)
        if x is None:
            dens = stats.norm.pdf(xn, scale=sd)
        else:
            dens = (mass[None, :] * stats.norm.pdf((xn[:, None] - x[None, :]) / step)).sum(1) / step
        x, w = xn, wn
        prev_t, prev_spent = t, now
    return tuple(out)


def z_of_t(t: float, df: int) -> float:
    """The normal deviate with the same one-sided p as Student t on ``df`` (sign kept).
    (scipy.special's ufuncs: the distribution objects cost ~100x more per call.)"""
    if not np.isfinite(t) or df < 1:
        return math.nan
    return float(math.copysign(-special.ndtri(special.stdtr(df, -abs(t))), t))


def t_of_z(z: float, df: int) -> float:
    """Inverse of :func:`z_of_t`: the t quantile with the same one-sided p as ``z``."""
    if not np.isfinite(z):
        return z
    return float(-special.stdtrit(df, special.ndtr(-z)))
