"""Factorial designs: main effects, and the two-factor interactions the design resolves,
by least squares on ±1-coded hacks with seed blocks (statsmodels OLS), Holm across terms.
An *effect* is the change from OFF to ON (2β), on the log scale for FID."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ablate.report.columns import HACK_PREFIX, finished, lower_is_better, uses_log
from ablate.report.effects import holm
from ablate.report.power import POWER
from ablate.report.results import ExperimentMeta


@dataclass(frozen=True)
class FactorialFit:
    metric: str
    scale: str
    table: pd.DataFrame  # term, kind, effect, se, t, p, ratio, p_holm, verdict
    aliased: tuple[str, ...] = ()
    n_runs: int = 0
    n_variants: int = 0
    df_resid: int = 0
    blocked_by_seed: bool = False
    note: str = ""
    mde: float = float("nan")  # smallest main effect detectable (80% power, α/m), test scale
    extra: dict = field(default_factory=dict)


def _rank(m: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(m)) if m.size else 0


def factorial_effects(frame: pd.DataFrame, meta: ExperimentMeta, metric: str,
                      alpha: float = 0.05) -> FactorialFit | None:
    """OLS on ±1-coded hacks (+ seed blocks): main effects, plus the two-factor
    interactions the design resolves (those not aliased with any other term)."""
    import statsmodels.api as sm

    done = finished(frame)
    done = done[pd.to_numeric(done[metric], errors="coerce").notna() & np.isfinite(done[metric].astype(float))]
    hacks = [h for h in meta.hacks if HACK_PREFIX + h in done.columns
             and done[HACK_PREFIX + h].astype(bool).nunique() == 2]
    if len(done) < 3 or not hacks:
        return None
    y = done[metric].to_numpy(float)
    log = uses_log(metric) and bool((y > 0).all())
    scale = "log" if log else "raw"
    if log:
        y = np.log(y)
    X = pd.DataFrame({h: np.where(done[HACK_PREFIX + h].astype(bool), 1.0, -1.0) for h in hacks},
                     index=done.index)
    variants = X.drop_duplicates()
    pairs = list(itertools.combinations(hacks, 2))
    inter = pd.DataFrame({f"{a}×{b}": variants[a] * variants[b] for a, b in pairs}, index=variants.index)
    mains = np.column_stack([np.ones(len(variants)), variants.to_numpy()])
    if _rank(mains) < 1 + len(hacks):
        return FactorialFit(metric, scale, pd.DataFrame(), n_runs=len(done), n_variants=len(variants),
                            note="the design does not resolve every main effect (aliased); not fitted")
    full = np.column_stack([mains, inter.to_numpy()]) if pairs else mains
    r = _rank(full)
    resolved, aliased = [], []
    for j, name in enumerate(inter.columns):
        keep = np.delete(full, 1 + len(hacks) + j, axis=1)
        (resolved if _rank(keep) == r - 1 else aliased).append(name)
    seeds = done["seed"].astype(str)
    blocked = seeds.nunique() > 1
    blocks = [pd.get_dummies(seeds, prefix="seed", drop_first=True).astype(float)] if blocked else []

    def design_with(terms: list[str]) -> pd.DataFrame:
        cols = X.copy()
        for name in terms:
            a, b = name.split("×")
            cols[name] = X[a] * X[b]
        return sm.add_constant(pd.concat([cols] + blocks, axis=1), has_constant="add")

    design, note = design_with(resolved), ""
    if len(design) - _rank(design.to_numpy()) < 1 or _rank(design.to_numpy()) < design.shape[1]:
        aliased, resolved = aliased + resolved, []  # too few runs for the interactions
        design, note = design_with([]), "too few runs to estimate interactions: main effects only"
    df_resid = len(design) - _rank(design.to_numpy())
    if df_resid < 1:
        return FactorialFit(metric, scale, pd.DataFrame(), aliased=tuple(aliased), n_runs=len(done),
                            n_variants=len(variants), blocked_by_seed=blocked,
                            note="no residual degrees of freedom: add seeds or variants")
    fit = sm.OLS(y, design).fit()
    rows = [{"term": t, "kind": "interaction" if "×" in t else "main", "effect": 2 * fit.params[t],
             "se": 2 * fit.bse[t], "t": fit.tvalues[t], "p": fit.pvalues[t],
             "ratio": math.exp(2 * fit.params[t]) if log else np.nan} for t in hacks + resolved]
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"])
    n_seeds = seeds.nunique()

    def words(kind, e, ph):
        if kind == "interaction":
            return "interacts" if ph < alpha else f"no detectable interaction ({n_seeds} seeds)"
        if ph < alpha:
            return "helps" if (e < 0) == lower_is_better(metric) else "hurts"
        return f"no detectable effect ({n_seeds} seeds)"

    table["verdict"] = [words(k, e, ph) for k, e, ph in zip(table["kind"], table["effect"], table["p_holm"])]
    se_main = float(table.loc[table["kind"] == "main", "se"].median())
    df = max(int(fit.df_resid), 1)
    mde = se_main * (stats.t.ppf(1 - alpha / (2 * len(table)), df) + stats.t.ppf(POWER, df))
    return FactorialFit(metric, scale, table, aliased=tuple(aliased), n_runs=len(done),
                        n_variants=len(variants), df_resid=int(fit.df_resid), blocked_by_seed=blocked,
                        note=note, mde=mde)
