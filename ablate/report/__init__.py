"""``ablate report``: verdicts, tables, figures and REPORT.md for one experiment.

* :func:`write_report` ``(results_dir, out_dir=None) -> Path`` reads the results
  directory through :meth:`~ablate.report.results.Results.load` (``experiment.json`` and
  the run store) and writes REPORT.md, ``tables/`` and ``figures/`` (default: into the
  results directory); ``ablate grid`` calls it when the grid is done.
* :func:`build_report` ``(results, out_dir) -> Path`` is the same from loaded results.

The report only reads the store. Regenerated from unchanged runs it rewrites every
file with the same bytes, on any CPU, BLAS or thread count: the writers see the
statistics rounded to 10 significant digits (:mod:`ablate.report.precision`). The
statistics live in one module per job: ``effects`` (the pooled model), ``sequential``
(verdicts and the adaptive-seed looks), ``power``, ``failures``, ``training``,
``factorial``, ``summary``.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.artefacts import write_fix
from ablate.errors import ConfigError
from ablate.layout import FIGURES, REPORT_MD, TABLES, ExperimentDir
from ablate.report import publish

if TYPE_CHECKING:  # pandas, numpy and matplotlib load only when a report is built,
    from ablate.report.results import Results  # so importing ablate.report stays fast

__all__ = ["build_report", "write_report"]


def build_report(results: Results, out_dir: Path | str) -> Path:
    """Compute the statistics and write REPORT.md, tables/ and figures/ under ``out_dir``."""
    out_dir = Path(out_dir)
    frame = results.frame
    if frame is None or len(frame) == 0:
        raise ConfigError(f"no runs to report on in {results.results_dir}: the run store is empty; "
                          "run `ablate grid EXPERIMENT.toml` first")
    from ablate.report import beside

    others = beside.references(results)  # a bad [report] beside fails before any work is done
    # Built in a staging folder and swapped in whole (ablate.report.publish): a kill or a
    # second report racing this one never leaves REPORT.md beside another build's tables.
    with publish.staged(out_dir, (REPORT_MD, TABLES, FIGURES)) as stage:
        _build(results, others, stage)
    return ExperimentDir(out_dir).report


def _build(results: Results, others: list, stage: publish.Stage) -> None:
    from ablate.report import beside, context, figures, markdown, tables
    from ablate.report.columns import base_metric, label, parse_metric

    frame = results.frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ctx = context.compute(results, stage).rounded()  # the writers see rounded numbers only
    meta = results.meta
    primary = ctx.primary
    head = [m for m in ctx.metrics if parse_metric(m)[0] == ctx.checkpoint and base_metric(m) != "kid_std"]
    if primary in head:
        head.remove(primary)
    head = ([primary] if primary else []) + head + [m for m in ("val_fid_auc", "wall_time_s") if m in ctx.metrics]

    # ---- tables -----------------------------------------------------------------------
    tdir = ExperimentDir(stage.path).tables
    n_txt = "N = " + "/".join(map(str, sorted(set(ctx.counts["n"].astype(int))))) + " seeds per variant"
    ctx.tables["variants"] = tables.write_table(
        tables.variant_numeric(ctx.counts, ctx.summary), tables.variant_display(ctx.counts, ctx.summary, head),
        tdir, "variants", f"Per variant ({n_txt}, {ctx.checkpoint} checkpoint): centre [95% CI] "
        "(geometric mean and log-scale interval for FID/KID); diverged and collapsed with exact 95% CIs")
    ctx.tables["variant_metrics"] = tables.write_table(
        ctx.summary, tables.summary_display(ctx.summary), tdir, "variant_metrics",
        f"Every metric per variant: centre, sd, 95% CI ({n_txt})")
    if not ctx.effects.empty:
        ctx.tables["effects"] = tables.write_table(
            ctx.effects, tables.effects_display(ctx.effects, adaptive=meta.seed_policy.adaptive), tdir, "effects",
            f"Hack verdicts on {label(primary)}: pooled model (log metric ~ variant + seed), Holm across "
            f"hacks, SESOI ±{meta.analysis.sesoi:.0%}; paired t-test per hack as sensitivity"
            + ("; adaptive seeds: only the adjusted and TOST intervals are repeated confidence intervals"
               if meta.seed_policy.adaptive else ""))
        from ablate.report import latex

        ctx.tables["effects_compact"] = latex.write_effects(ctx.effects, tdir, label(primary), meta)
    if not ctx.secondary.empty:
        ctx.tables["effects_all"] = tables.write_table(
            ctx.secondary, tables.effects_display(ctx.secondary, with_metric=True), tdir, "effects_all",
            "Hack verdicts on every other metric (pooled model, one look, Holm within each metric)")
    if ctx.power:
        ctx.tables["power"] = tables.write_table(
            _frame(ctx.power), tables.power_display(ctx.power), tdir, "power",
            "Smallest change detectable with 80% power at α/m (both directions) and equivalence power")
    if not ctx.failure_tests.empty:
        ctx.tables["failures"] = tables.write_table(
            ctx.failure_tests, tables.failures_display(ctx.failure_tests), tdir, "failures",
            "Collapse and divergence per hack: seed-paired outcomes, exact McNemar test (Holm across hacks)")
    if not ctx.flags.empty:
        tables.write_table(ctx.flags, ctx.flags.round(4), tdir, "collapse_per_run",
                           "Per run: missing modes, class JS divergence and the collapse flag")
    if not ctx.by_step.empty:
        ctx.tables["over_training"] = tables.write_table(
            ctx.by_step, ctx.by_step.round(4), tdir, "over_training",
            "Ratio ON/OFF of validation FID per hack and step (pooled model, interval at α/m)")
    if ctx.factorial is not None and not ctx.factorial.table.empty:
        ctx.tables["factorial"] = tables.write_table(
            ctx.factorial.table, tables.factorial_display(ctx.factorial), tdir, "factorial",
            f"Factorial effects on {label(primary)} by least squares "
            f"({'log scale, ' if ctx.factorial.scale == 'log' else ''}seed-blocked, ±1 coding)")

    # ---- figures ----------------------------------------------------------------------
    fdir = ExperimentDir(stage.path).figures
    from ablate.report.summary import variant_order

    variants = context.plotted_variants(variant_order(frame, meta), meta)
    if len(variants) < len(ctx.counts):
        ctx.notes.append(f"per-variant figures show {len(variants)} of {len(ctx.counts)} variants (the "
                         "reference variants and those in hack contrasts first); every variant is in "
                         "tables/variants.csv")
    _figure(ctx, "primary", lambda: figures.metric_figure(ctx.summary, ctx.frame, primary, variants, fdir,
                                                          "primary_metric"), primary is not None)
    _figure(ctx, "metrics", lambda: figures.metrics_grid(ctx.summary, head, variants, fdir, "metrics"), bool(head))
    _figure(ctx, "forest", lambda: figures.forest(_forest_frame(ctx.effects), primary, meta.analysis.sesoi,
                                                  fdir, "effects"), not ctx.effects.empty)
    _figure(ctx, "residuals", lambda: figures.residuals(ctx.analysis.fit, fdir, "residuals"),
            ctx.analysis.fit is not None and ctx.analysis.fit.df_resid > 0)
    _figure(ctx, "over_training", lambda: figures.over_training(ctx.by_step, meta.analysis.sesoi, fdir,
                                                                "effects_over_training"), not ctx.by_step.empty)
    _figure(ctx, "half_normal", lambda: figures.half_normal(ctx.factorial, fdir, "half_normal"),
            ctx.factorial is not None and not ctx.factorial.table.empty)
    _figure(ctx, "curves", lambda: figures.curves(ctx.curves, variants, fdir, "val_fid_curves"),
            not ctx.curves.empty)
    samples = ctx.runs.sample_paths(variants)
    _figure(ctx, "samples", lambda: figures.sample_grid(samples, fdir, "samples"), bool(samples))
    hists = ctx.runs.class_counts(ctx.checkpoint)
    if hists.empty:
        ctx.notes.append("no per-class histograms (`class_counts`) in `metrics.json`: the class-histogram "
                         "figure is skipped and collapse is judged from the recorded mode counts")
    _figure(ctx, "class_histograms", lambda: figures.class_histograms(
        _mean_histograms(hists, variants), fdir, _real_share(hists), "class_histograms"), not hists.empty)

    from ablate.report import across

    across.write(ctx, tdir, fdir, lambda name, draw, when: _figure(ctx, name, draw, when))
    beside.write(ctx, others, tdir)
    tables.write_text(ExperimentDir(stage.path).report, markdown.render(ctx))


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def _forest_frame(effects):
    """Effects with the plotted coordinates: ratios on the log scale, differences otherwise."""
    import numpy as np

    from ablate.report import precision

    e = effects.copy()
    f = np.exp if (e["scale"] == "log").all() else (lambda x: x)
    for src, dst in (("estimate", "x"), ("ci_low", "low_x"), ("ci_high", "high_x"),
                     ("paired_low", "paired_low_x"), ("paired_high", "paired_high_x")):
        e[dst] = f(e[src].astype(float))
    e["seeds_text"] = [f"{a}/{b} seeds" for a, b in zip(e["n_on"], e["n_off"])]
    return precision.round_frame(e)  # exp() is a per-CPU kernel too


def _mean_histograms(hists, variants: list[str]) -> dict:
    import numpy as np

    out = {}
    for v in variants:
        hs = [h / h.sum() for h in hists.loc[hists["variant"] == v, "counts"] if h.sum() > 0]
        if hs and len({len(h) for h in hs}) == 1:
            out[v] = np.mean(hs, axis=0)
    return out


def _real_share(hists):
    real = hists["real_counts"].iloc[0]
    return real / real.sum()


def _figure(ctx, name: str, draw, when: bool) -> None:
    """Draw one figure; a failure becomes a note in the report, not a crash."""
    if not when:
        return
    try:
        ctx.figures[name] = draw()
    except Exception as exc:  # noqa: BLE001 - one bad figure must not lose the report
        ctx.notes.append(f"figure `{name}` could not be drawn: {type(exc).__name__}: {exc}")


def write_report(results_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Load ``results_dir`` and write its report (default: into it)."""
    from ablate.report.results import Results

    out = Path(out_dir or results_dir)
    if not ExperimentDir(results_dir).experiment_json.is_file():
        Results.load(results_dir)  # not a results folder: its error, before any lock or folder is made
    other = ExperimentDir(out)
    if out.resolve() != Path(results_dir).resolve() and (other.experiment_json.exists() or other.db.exists()):
        raise ConfigError(f"--out {out} is another experiment's results directory (it holds "
                          f"{(other.experiment_json if other.experiment_json.exists() else other.db).name}): "
                          f"a report of {results_dir} there would replace its REPORT.md, tables/ and "
                          "figures/; write it to its own results directory, or to a new folder with --out")
    try:
        # The lock is held from the load to the swap, so the report published last is the
        # one that read the latest runs (a report started mid-grid cannot overwrite the
        # grid's final one). A new --out folder is made only once the inputs are checked.
        with publish.lock(out) if out.is_dir() else contextlib.nullcontext():
            return build_report(Results.load(results_dir), out)
    except OSError as exc:  # disk full, read-only folder: every file is written atomically,
        where = Path(exc.filename).resolve() if isinstance(exc.filename, str) else None  # so none is torn
        if where is not None and (where.is_relative_to(ExperimentDir(results_dir).runs.resolve())
                                  or not where.is_relative_to(out.resolve())):  # an input, not the output
            raise ConfigError(f"cannot read {where}: {exc.strerror or exc}; the report needs every "
                              "run's files readable (check their permissions)") from exc
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}; "
                          f"the runs are untouched: {write_fix(exc)}, or pass --out DIR") from exc
