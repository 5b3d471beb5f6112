"""Power, stated in both directions, for the pooled model and for the paired test.

For the pooled model (:mod:`effects`), a contrast with standard error ``se`` on ``df``
residual degrees of freedom is detected with power ``POWER`` at level ``alpha/m`` (the
first Holm step, so regardless of the other hacks) when its true size is at least

    mde = se · (t_{1 - alpha/(2m), df} + t_{POWER, df})

on the test scale: on the log scale a *decrease* to exp(-mde) or an *increase* to
exp(+mde) of the metric (the two differ in percent: -36% and +56% are the same log
distance). Equivalence: the chance that the TOST declares a hack with no effect at all
*equivalent within ±SESOI* (:func:`tost_power_at_zero`: exact for an estimate whose
standard error is itself estimated on df degrees of freedom), and the seeds per variant
it would take to make that chance ``POWER`` (se shrinks as 1/√seeds; large-sample
quantiles, so "about").

For a sequential design these are the numbers of a fixed design with the same runs
(the spending boundaries at the last look are a little wider).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.optimize import brentq

from ablate.config import AnalysisSpec

POWER = 0.80


def pooled_power(fit, analysis: AnalysisSpec, margin: float, m: int, power: float = POWER) -> dict:
    """Smallest detectable effect (both directions) and equivalence power of a fit."""
    ses = [c.se for c in fit.contrasts if np.isfinite(c.se)] if fit is not None else []
    if not ses or fit.df_resid < 1:
        return {}
    se, df, m = float(np.median(ses)), int(fit.df_resid), max(m, 1)
    crit = stats.t.isf(analysis.alpha / (2 * m), df)
    mde = se * (crit + stats.t.ppf(power, df))
    crit_e = stats.t.isf(analysis.alpha / m, df)
    eq_power = tost_power_at_zero(margin, se, df, crit_e) if np.isfinite(margin) else math.nan
    n_now = float(np.median([min(c.n_on, c.n_off) for c in fit.contrasts if np.isfinite(c.se)]))
    # se ∝ 1/√n; large-sample quantiles for the target (df grows with the seeds).
    se_needed = margin / (stats.norm.isf(analysis.alpha / m) + stats.norm.isf((1 - power) / 2))
    out = {"scale": fit.scale, "se": se, "df": df, "tests": m, "alpha_first_step": analysis.alpha / m,
           "mde": mde, "seeds": n_now, "equivalence_power": eq_power,
           "seeds_for_equivalence": math.ceil(n_now * (se / se_needed) ** 2) if np.isfinite(margin) else math.nan}
    if fit.scale == "log":
        out.update(decrease_pct=100 * (math.exp(-mde) - 1), increase_pct=100 * (math.exp(mde) - 1))
    return out


def tost_power_at_zero(margin: float, se: float, df: int, crit: float) -> float:
    """P(the TOST rejects both |effect| ≥ margin nulls | true effect 0): the estimate is
    N(0, se²) and its standard error se·s, s = √(χ²_df / df) independent of it; equivalence
    is declared when |estimate| ≤ margin − crit·se·s, so the power is
    E_s[(2Φ(margin/se − crit·s) − 1)⁺], integrated over s (scipy's quad). The common
    shortcut 2·T_df(margin/se − crit) − 1 is off by points either way at small df
    (0.16 instead of 0.38 at margin/se = 4, df = 6, α/m = 0.05/11; the tests simulate it)."""
    if not (se > 0 and df > 0 and margin > 0):
        return 0.0
    from scipy.integrate import quad

    a = margin / se
    s_max = a / crit  # beyond it the acceptance region is empty

    def integrand(s: float) -> float:  # density of s: chi2.pdf(df·s², df) · 2·df·s
        return (2 * stats.norm.cdf(a - crit * s) - 1) * stats.chi2.pdf(df * s * s, df) * 2 * df * s

    value, _ = quad(integrand, 0.0, s_max, limit=200)
    return float(min(max(value, 0.0), 1.0))


def paired_t_power(d: float, n: int, alpha: float) -> float:
    """Power of a two-sided paired t-test with n pairs at standardized effect d_z."""
    df, nc = n - 1, d * math.sqrt(n)
    tc = stats.t.ppf(1 - alpha / 2, df)
    # scipy's nct.cdf returns NaN far in the lower tail (df=2, large nc); that tail is ~0.
    lower = stats.nct.cdf(-tc, df, nc)
    return float(stats.nct.sf(tc, df, nc) + (0.0 if not np.isfinite(lower) else lower))


def min_detectable_d(n: int, alpha: float, power: float = POWER) -> float:
    """Smallest d_z a two-sided paired t-test with n pairs detects with ``power`` at
    ``alpha`` (root of the noncentral-t power).

    Hand-written on purpose: statsmodels' ``TTestPower.solve_power`` goes through the
    same scipy ``nct.cdf`` NaN at n=3 and returns d_z ≈ 5.0 where the power is only 61%
    (Monte Carlo and this function agree on 6.55 for n=3, α=0.0125).
    """
    if n < 2:
        return math.inf
    return float(brentq(lambda d: paired_t_power(d, n, alpha) - power, 1e-6, 1e4, xtol=1e-8))


def paired_power(pairs_sd: list[tuple[int, float]], scale: str, alpha: float, m: int,
                 power: float = POWER) -> dict:
    """The per-hack paired test's smallest detectable effect (both directions): the
    median number of pairs, the pooled sd of the paired differences."""
    ok = [(n, sd) for n, sd in pairs_sd if n >= 2 and np.isfinite(sd)]
    if not ok:
        return {}
    n = int(np.median([k for k, _ in ok]))
    sd = math.sqrt(sum((k - 1) * s ** 2 for k, s in ok) / sum(k - 1 for k, _ in ok))
    d = min_detectable_d(n, alpha / max(m, 1), power)
    out = {"scale": scale, "pairs": n, "sd": sd, "d_z_min": d, "mde": d * sd}
    if scale == "log":
        out.update(decrease_pct=100 * (math.exp(-d * sd) - 1), increase_pct=100 * (math.exp(d * sd) - 1))
    return out
