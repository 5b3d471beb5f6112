"""Across levels: does a hack's effect depend on the level of the experiment's ``[axes]``?

With ``[axes]`` each hack has one comparison per level (rows ``<hack> @ <level>`` of the
effects table, all in one Holm family of the sequential design). Here, per real hack:

* :func:`per_level`: each level's ratio, adjusted interval and verdict, read from those rows;
* :func:`heterogeneity`: one joint least-squares fit of the primary metric (log scale for
  FID) over the unique runs: one cell per distinct run condition (variant names at several
  levels that share their run keys are one cell, :func:`~ablate.report.effects.cells`) plus
  seed blocks; with the per-level contrasts ``d_l = mean(on_l) - mean(off_l)``, the F-test
  (statsmodels ``f_test``) of ``d_1 = ... = d_L`` (numerator df: the rank of the
  constraints, L - 1 with one axis), Holm across hacks;
* :func:`robust`: one verdict per hack: *helps / hurts / equivalent at every level* when the
  per-level verdicts agree (they are family-wise controlled already, so the intersection
  needs no further adjustment), *depends on the level (...)* when heterogeneity is
  significant after Holm, otherwise *mixed: ...* or *undecided*.

Diverged runs follow the primary analysis: finished runs only (the worst-value rule stays a
sensitivity column of the effects table). Pure functions: DataFrames in, DataFrames out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate.report.effects import cell_comparisons, cells, holm, model_data
from ablate.report.results import ExperimentMeta

AT_EVERY_LEVEL = {"helps": "helps at every level", "hurts": "hurts at every level",
                  "equivalent": "equivalent at every level"}
PER_LEVEL_COLUMNS = ["hack", "level", "row", "on", "off", "dose_axis", "dose", "rest", "scale",
                     "verdict", "estimate", "ci_low", "ci_high", "n_on", "n_off"]
HET_COLUMNS = ["hack", "levels", "f", "df_num", "df_den", "p", "p_holm"]


def dose_axis(meta: ExperimentMeta, hack: str) -> str | None:
    """The first axis that is a numeric parameter of ``hack`` (``noisy-labels.p``), or None."""
    for name, values in meta.axes.items():
        if name.partition(".")[0] == hack and "." in name and values and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return name
    return None


def per_level(effects: pd.DataFrame, meta: ExperimentMeta) -> pd.DataFrame:
    """One row per (real hack, level) from the effects rows (primary metric): the level's
    label, its dose where the hack's own parameter is an axis (and the rest of the level),
    verdict, estimate (test scale) and adjusted interval."""
    rows = []
    for _, r in effects.iterrows():
        row = str(r["hack"])
        hack, level = meta.hack_of(row), meta.level_of(row)
        if not level:
            continue
        axis = dose_axis(meta, hack)
        at = meta.variant_levels.get(str(r["on"]), {})
        dose = float(at[axis]) if axis and axis in at else math.nan
        rest = ", ".join(f"{k}={_text(v)}" for k, v in at.items() if k != axis)
        rows.append({"hack": hack, "level": level, "row": row, "on": r["on"], "off": r["off"],
                     "dose_axis": axis or "", "dose": dose, "rest": rest, "scale": r["scale"],
                     "verdict": r["verdict"], "estimate": r["estimate"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "n_on": r["n_on"], "n_off": r["n_off"]})
    out = pd.DataFrame(rows, columns=PER_LEVEL_COLUMNS)
    first = {h: i for i, h in enumerate(dict.fromkeys(out["hack"]))}  # hacks in design order,
    return out.sort_values("hack", key=lambda h: h.map(first), kind="stable").reset_index(drop=True)  # levels in order


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def design_matrix(data: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Cell indicators (every cell its own mean) and treatment-coded seed blocks (the first
    seed the baseline); the column names."""
    cells_ = list(dict.fromkeys(data["variant"]))
    seeds = sorted(set(data["seed"].astype(int)))
    X = np.zeros((len(data), len(cells_) + len(seeds) - 1))
    pos = {c: i for i, c in enumerate(cells_)}
    X[np.arange(len(data)), [pos[v] for v in data["variant"]]] = 1.0
    for j, s in enumerate(seeds[1:]):
        X[:, len(cells_) + j] = (data["seed"].astype(int) == s).to_numpy(float)
    return X, cells_ + [f"seed={s}" for s in seeds[1:]]


def heterogeneity(frame: pd.DataFrame, meta: ExperimentMeta, metric: str | None) -> pd.DataFrame:
    """Per real hack with two or more estimable levels: the F-test that its contrast is the
    same at every level, in one OLS fit over the unique finished runs (module docstring);
    ``levels``: its distinct contrasts (levels of an axis the hack's variants do not see, as
    ``noisy-labels.p`` for ``batch-norm``, compare the same runs: one contrast); ``p_holm``:
    Holm across the hacks."""
    import statsmodels.api as sm

    out = pd.DataFrame(columns=HET_COLUMNS)
    if metric is None or not meta.axes:
        return out
    data, _, _ = model_data(frame, metric)  # finished runs, one row per run, named by cell
    if data.empty:
        return out
    X, names = design_matrix(data)
    if np.linalg.matrix_rank(X) < X.shape[1] or len(data) <= X.shape[1]:
        return out  # cells not linked by seeds, or no residual df: no test
    fit = sm.OLS(data["y"].to_numpy(float), X).fit()
    col = {n: i for i, n in enumerate(names)}
    by_hack: dict[str, list[np.ndarray]] = {}
    for c in cell_comparisons(meta.comparisons, cells(frame)):
        if not c.level or c.on not in col or c.off not in col:
            continue
        L = np.zeros(len(names))
        L[col[c.on]], L[col[c.off]] = 1.0, -1.0
        ls = by_hack.setdefault(meta.hack_of(c.hack), [])
        if not any(np.array_equal(L, x) for x in ls):  # levels with the same runs: one contrast
            ls.append(L)
    rows = []
    for hack, ls in by_hack.items():
        if len(ls) < 2:
            continue
        R = _independent([ls[i] - ls[0] for i in range(1, len(ls))])
        t = fit.f_test(R)
        rows.append({"hack": hack, "levels": len(ls), "f": float(np.squeeze(t.fvalue)),
                     "df_num": int(t.df_num), "df_den": int(t.df_denom), "p": float(t.pvalue)})
    if not rows:
        return out
    out = pd.DataFrame(rows, columns=HET_COLUMNS[:-1])
    out["p_holm"] = holm(out["p"])
    return out


def _independent(rows: list[np.ndarray]) -> np.ndarray:
    """A basis of the rows' span taken from the rows themselves: the Wald F is the same
    for any basis, and statsmodels warns on dependent constraints (two axes can make a
    hack's level contrasts dependent)."""
    basis: list[np.ndarray] = []
    for r in rows:
        if np.linalg.matrix_rank(np.array(basis + [r])) > len(basis):
            basis.append(r)
    return np.array(basis)


def robust(levels: pd.DataFrame, het: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """One verdict per real hack over its levels (module docstring); columns hack, levels,
    verdicts (``helps at x; undecided at y``), f, df_num, df_den, p, p_holm, verdict."""
    rows = []
    for hack, g in levels.groupby("hack", sort=False):
        verdicts = list(g["verdict"])
        h = het[het["hack"] == hack]
        hr = h.iloc[0] if len(h) else None
        p_holm = float(hr["p_holm"]) if hr is not None else math.nan
        text = by_verdict(g)
        if len(set(verdicts)) == 1 and verdicts[0] in AT_EVERY_LEVEL:
            verdict = AT_EVERY_LEVEL[verdicts[0]]
        elif np.isfinite(p_holm) and p_holm < alpha:
            verdict = f"depends on the level ({text})"
        elif set(verdicts) == {"undecided"}:
            verdict = "undecided"
        else:
            verdict = f"mixed: {text}"
        rows.append({"hack": hack, "levels": len(g), "verdicts": text,
                     "f": float(hr["f"]) if hr is not None else math.nan,
                     "df_num": int(hr["df_num"]) if hr is not None else 0,
                     "df_den": int(hr["df_den"]) if hr is not None else 0,
                     "p": float(hr["p"]) if hr is not None else math.nan, "p_holm": p_holm,
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=["hack", "levels", "verdicts", "f", "df_num", "df_den", "p",
                                       "p_holm", "verdict"])


def by_verdict(g: pd.DataFrame) -> str:
    """``helps at a / b; undecided at c``: the levels grouped by verdict, verdicts in order."""
    parts = []
    for v in ("helps", "hurts", "equivalent", "undecided"):
        at = [str(x) for x in g.loc[g["verdict"] == v, "level"]]
        if at:
            parts.append(f"{v} at {' / '.join(at)}")
    return "; ".join(parts)


def table(levels: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """tables/levels.csv: one row per (hack, level), the hack's heterogeneity test and
    robust verdict repeated on each of its rows."""
    if levels.empty:
        return levels
    keep = verdicts.rename(columns={"verdict": "robust_verdict", "p": "het_p", "p_holm": "het_p_holm",
                                    "f": "het_f", "df_num": "het_df_num", "df_den": "het_df_den"})
    return levels.merge(keep.drop(columns=["levels", "verdicts"]), on="hack", how="left")
