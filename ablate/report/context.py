"""Everything REPORT.md, the tables and the figures are made from, computed once.

:func:`compute` takes :class:`~ablate.report.results.Results` and returns a
:class:`ReportContext`: the verdicts of the primary metric (sequential design), the same
analysis on every other metric (one look), per-variant summaries, power, failures,
effects over training and, for factorial designs, the factorial fit.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from ablate.config import SeedPolicy
from ablate.report import failures, levels, power, precision, sequential, summary, training
from ablate.report.columns import (
    base_metric,
    headline_checkpoint,
    metric_columns,
    parse_metric,
)
from ablate.report.effects import (
    cell_comparisons,
    cells,
    fit_mixed,
    fit_pooled,
    holm,
    in_cells,
    paired_test,
)
from ablate.report.factorial import FactorialFit, factorial_effects
from ablate.report.publish import Stage
from ablate.report.results import Comparison, ExperimentMeta, Results
from ablate.report.runs import RunArtefacts

MAX_PLOTTED_VARIANTS = 40  # a per-variant figure stays readable (and finite) in large designs
# The fields of ReportContext that hold statistics: what the writers see of them is rounded.
STATISTICS = ("frame", "counts", "summary", "analysis", "effects", "secondary", "power", "flags",
              "failure_tests", "curves", "by_step", "factorial", "levels", "level_verdicts")


@dataclass
class ReportContext:
    """The computed report (also handy for tests and notebooks)."""

    results: Results
    stage: Stage  # where the build writes (stage.path) and where the report will live (stage.final)
    frame: pd.DataFrame  # the store's frame plus the report's own columns (JS, AUC)
    metrics: list[str]
    primary: str | None
    checkpoint: str
    counts: pd.DataFrame
    summary: pd.DataFrame
    analysis: sequential.Analysis
    effects: pd.DataFrame  # primary metric, one row per hack
    secondary: pd.DataFrame  # every other metric (one look, fixed design)
    power: list[dict]
    flags: pd.DataFrame
    failure_tests: pd.DataFrame
    curves: pd.DataFrame
    by_step: pd.DataFrame
    factorial: FactorialFit | None
    provenance: dict
    runs: RunArtefacts
    levels: pd.DataFrame = field(default_factory=pd.DataFrame)  # [axes]: one row per (hack, level)
    level_verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)  # [axes]: one row per hack
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    beside: list = field(default_factory=list)  # [report] beside: compare.Experiment of each (beside.write)
    noisiest: dict = field(default_factory=dict)  # the variant with the largest residual share (_noisiest)

    @property
    def meta(self) -> ExperimentMeta:
        return self.results.meta

    @property
    def out_dir(self) -> Path:
        """The folder this build writes into (the staging folder while it is staged)."""
        return self.stage.path

    def rounded(self) -> ReportContext:
        """The context as the writers see it: every statistic to 10 significant digits
        (:mod:`ablate.report.precision`), so the report has the same bytes on every CPU,
        BLAS and thread count. The verdicts in it were decided before, on full precision."""
        return dataclasses.replace(self, **{name: precision.rounded(getattr(self, name)) for name in STATISTICS})


def _effect_rows(frame: pd.DataFrame, meta: ExperimentMeta, result: sequential.Analysis,
                 sensitivity: bool) -> pd.DataFrame:
    """One row per hack: the decision, its numbers and (primary metric) the sensitivity
    analyses: the per-hack paired t-test, the worst-value rule for diverged runs and,
    with unbalanced seeds, the mixed model."""
    metric = result.metric
    rows = []
    one_look = len(result.looks) <= 1
    # Each decision's sensitivity analyses use the runs of the look that decided it (the
    # last look for the undecided), so with no diverged run the worst-value estimate is the
    # estimate itself and the paired test has the decision's seeds.
    by_look: dict[int, tuple] = {}

    def models(look: int) -> tuple:
        if look not in by_look:
            sub = sequential.runs_at(frame, result, look)
            worst = mixed = None
            if sensitivity and result.fit is not None:
                worst = fit_pooled(sub, meta.comparisons, metric, diverged="worst")
                plain = fit_pooled(sub, meta.comparisons, metric)
                if plain is not None and not plain.balanced:
                    mixed = fit_mixed(sub, meta.comparisons, metric)
            by_look[look] = sub, worst, mixed
        return by_look[look]

    for d in result.decisions:
        scale = result.scale
        p = 2 * special.stdtr(d.df, -abs(d.estimate / d.se)) if d.df > 0 and d.se > 0 else math.nan
        row = {"metric": metric, "hack": d.hack, "on": d.on, "off": d.off, "scale": scale,
               "verdict": d.verdict, "look": d.look, "n_on": d.n_on, "n_off": d.n_off,
               "seeds": ",".join(map(str, d.seeds)), "estimate": d.estimate, "se": d.se, "df": d.df,
               "ci_low": d.ci_low, "ci_high": d.ci_high, "eq_low": d.eq_low, "eq_high": d.eq_high,
               "level": d.level, "eq_level": d.eq_level, "also_different": d.also_different, "p": float(p)}
        if meta.axes:  # the row is "<hack> @ <level>": its real hack and level, for readers of the CSV
            row.update(base_hack=meta.hack_of(d.hack), at_level=meta.level_of(d.hack))
        sub, worst, mixed = models(d.look or len(result.looks))
        row.update(paired_test(sub, Comparison(d.hack, d.on, d.off), metric, scale == "log"))
        if worst is not None and (c := worst.contrast(d.hack)) is not None:
            lo, hi = c.interval(d.level)
            row.update(worst_estimate=c.estimate, worst_low=lo, worst_high=hi, imputed=worst.diverged_imputed)
        if mixed and d.hack in mixed and d.df > 0:
            est, se = mixed[d.hack]
            h = stats.t.isf(d.level / 2, d.df) * se
            row.update(mixed_estimate=est, mixed_low=est - h, mixed_high=est + h)
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p"]) if one_look else np.nan
    return out


def _secondary(frame: pd.DataFrame, meta: ExperimentMeta, metrics: list[str], primary: str | None) -> pd.DataFrame:
    """The one-look (fixed design) analysis of every other metric."""
    parts = []
    fixed = SeedPolicy(seeds=tuple(sorted(set(frame["seed"].astype(int)))) or (0,))
    for col in metrics:
        if col == primary or base_metric(col) == "kid_std":
            continue
        res = sequential.analyse(frame, meta, fixed, dataclasses.replace(meta.analysis, metric=col))
        if res.metric == col and res.decisions:
            parts.append(_effect_rows(frame, meta, res, sensitivity=False))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def plotted_variants(order: list[str], meta: ExperimentMeta, limit: int = MAX_PLOTTED_VARIANTS) -> list[str]:
    """All variants in small designs; in large ones all-on, all-off and the variants of
    the design's contrasts first, then design order."""
    if len(order) <= limit:
        return order
    scope = frozenset(meta.hacks)
    hacks = meta.variant_hacks()
    first = [v for v in order if hacks.get(v) in (scope, frozenset())]
    first += [v for c in meta.comparisons for v in (c.on, c.off)]
    keep = set(list(dict.fromkeys(first + order))[:limit])
    return [v for v in order if v in keep]


def _noisiest(frame: pd.DataFrame, meta: ExperimentMeta, result: sequential.Analysis) -> dict:
    """The variant with the largest share of the pooled model's residual sum of squares
    and, when it enters no contrast (all-off in a leave-one-out), the residual sd the model
    would have without it (refitted on the last look's runs, those of the shares): a
    diagnostic beside the verdicts, which it does not change."""
    fit = result.fit
    shares = fit.residual_shares() if fit is not None else pd.Series(dtype=float)
    if shares.empty:
        return {}
    v = str(shares.index[0])
    out = {"variant": v, "share": float(shares.iloc[0]),
           "in_contrast": any(v in (c.on, c.off) for c in fit.contrasts)}
    if not out["in_contrast"]:
        runs = sequential.runs_at(frame, result)
        refit = fit_pooled(runs[runs["variant"] != v], meta.comparisons, fit.metric, fit.scale == "log")
        if refit is not None and refit.df_resid > 0:
            out.update(sigma_without=refit.sigma, df_without=refit.df_resid)
    return out


def compute(results: Results, out_dir: Path | Stage) -> ReportContext:
    """The report's statistics. ``out_dir``: where its files go, or the :class:`Stage` of a
    staged build (:mod:`ablate.report.publish`)."""
    stage = Stage.at(out_dir)
    meta, frame = results.meta, results.frame.copy()
    runs = RunArtefacts(frame)
    checkpoint = headline_checkpoint(frame)
    stacked = meta.dataset.startswith("stacked")
    flags = failures.run_flags(frame, runs.class_counts(checkpoint), checkpoint, stacked,
                               float(meta.evaluation.get("mode_min_frac", 0.1)))
    if len(flags) and flags["js"].notna().any():
        js = flags[["key", "js"]].drop_duplicates("key")  # [axes]: a shared run is one key
        frame = frame.merge(js.rename(columns={"js": f"{checkpoint}.classifier.js"}),
                            on="key", how="left")
    curves = runs.val_curves()
    if len(curves):
        frame = training.with_auc(frame, curves)
    metrics = metric_columns(frame)
    primary = sequential.primary_metric(frame, meta.analysis.metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sequential.analyse(frame, meta)
        effects = _effect_rows(frame, meta, result, sensitivity=True) if result.decisions else pd.DataFrame()
        secondary = _secondary(frame, meta, metrics, primary)
        counts = summary.variant_counts(frame, meta).merge(
            failures.variant_rates(frame, flags, summary.variant_order(frame, meta)).drop(columns="diverged"),
            on="variant")
        summ = summary.summarize(frame, meta, [m for m in metrics if base_metric(m) != "kid_std"])
        pw = []
        if result.fit is not None:
            pooled = power.pooled_power(result.fit, meta.analysis, result.margin, len(meta.comparisons))
            if pooled:
                pw.append({"analysis": "pooled model", "metric": primary, **pooled})
            if len(effects):
                paired = power.paired_power(list(zip(effects["pairs"], effects["paired_sd"])), result.scale,
                                            meta.analysis.alpha, len(meta.comparisons))
                if paired:
                    pw.append({"analysis": "paired t per hack (sensitivity)", "metric": primary, **paired})
        tests = failures.hack_tests(frame, flags, list(meta.comparisons))
        alias = cells(frame)  # [axes]: a run planned under several variant names counts once
        by_step = (training.effects_by_step(in_cells(curves, alias, ("variant", "seed", "step")),
                                            cell_comparisons(meta.comparisons, alias), meta.analysis.alpha)
                   if len(curves) and meta.comparisons else pd.DataFrame())
        per_level = het = pd.DataFrame()
        if meta.axes and len(effects):
            per_level = levels.per_level(effects, meta)
            het = levels.robust(per_level, levels.heterogeneity(frame, meta, primary), meta.analysis.alpha)
        fact = (factorial_effects(frame, meta, primary, meta.analysis.alpha)
                if primary and meta.is_factorial else None)
    ctx = ReportContext(results=results, stage=stage, frame=frame, metrics=metrics, primary=primary,
                        checkpoint=checkpoint, counts=counts, summary=summ, analysis=result,
                        effects=effects, secondary=secondary, power=pw, flags=flags, failure_tests=tests,
                        curves=curves, by_step=by_step, factorial=fact, provenance=runs.provenance(), runs=runs,
                        levels=per_level, level_verdicts=het)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ctx.noisiest = _noisiest(frame, meta, result)
    if not metrics or primary is None or parse_metric(primary)[0] is None:
        ctx.notes.append("no quality metrics in the run store (were the runs evaluated?)")
    return ctx
