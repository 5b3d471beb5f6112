"""``ablate report``: statistics, tables, figures and REPORT.md for one experiment.

Two entry points:

* :func:`write_report` ``(results_dir) -> Path`` reads the run store with
  :func:`ablate.store.load_frame` / :func:`ablate.store.load_experiment_meta` and writes
  the report into ``results_dir``; ``ablate grid`` calls it when the grid is done.
* :func:`build_report` ``(frame, meta, out_dir) -> Path`` is the pure part: it takes a
  frame in the store's schema (one row per run) and the experiment meta, and writes
  ``REPORT.md``, ``tables/`` and ``figures/`` under ``out_dir``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.errors import ConfigError

if TYPE_CHECKING:  # pandas, numpy and matplotlib load only when a report is built,
    import pandas as pd  # so importing ablate.report stays fast

__all__ = ["build_report", "write_report", "ReportContext"]


@dataclass
class ReportContext:
    """Everything REPORT.md is rendered from (also handy for tests and notebooks)."""

    frame: pd.DataFrame
    meta: dict
    out_dir: Path
    metrics: list[str]
    primary: str | None
    checkpoint: str
    counts: pd.DataFrame
    summary: pd.DataFrame
    effects: pd.DataFrame
    power: pd.DataFrame
    factorial: object | None  # stats.FactorialFit
    provenance: dict
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    curve_key: str | None = None


def headline_metrics(metrics: list[str], checkpoint: str, primary: str | None) -> list[str]:
    """The columns of the per-variant table: every FID and KID, modes, KL, precision,
    recall, density, coverage at the headline checkpoint, and wall time."""
    from ablate.report import stats

    picked = [m for m in metrics if stats.parse_metric(m)[0] == checkpoint
              and stats.base_metric(m) != "kid_std"]
    if primary in picked:
        picked.remove(primary)
    picked = ([primary] if primary else []) + picked
    return picked + [m for m in ("wall_time_s",) if m in metrics]


def build_report(frame: pd.DataFrame, meta: dict | None, out_dir: Path | str,
                 results_dir: Path | str | None = None) -> Path:
    """Compute the statistics and write REPORT.md, tables/ and figures/ under ``out_dir``.

    ``results_dir`` is where relative ``run_dir`` entries are resolved (default ``out_dir``).
    Returns the path of REPORT.md.
    """
    from ablate.report import figures, markdown, stats, tables
    from ablate.report.runs import RunArtefacts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    if frame is None or len(frame) == 0 or "variant" not in frame.columns:
        raise ConfigError(f"no runs to report on in {out_dir}: the run store is empty; "
                          "run `ablate grid EXPERIMENT.toml` first")
    frame = frame.copy()
    if "seed" not in frame.columns:
        frame["seed"] = 0
    runs = RunArtefacts(frame, Path(results_dir) if results_dir is not None else out_dir)

    metrics = stats.metric_columns(frame)
    primary = stats.primary_metric(frame, meta)
    checkpoint = stats.headline_checkpoint(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        counts = stats.variant_counts(frame, meta)
        summary = stats.summarize_variants(frame, meta, metrics)
        test_metrics = [m for m in metrics if stats.base_metric(m) != "kid_std"]
        effects = stats.hack_effects(frame, meta, test_metrics)
        power = stats.power_table(effects, summary)
        factorial = None
        if primary and stats.is_factorial(meta):
            factorial = stats.factorial_effects(frame, meta, primary)
    ctx = ReportContext(frame=frame, meta=meta, out_dir=out_dir, metrics=metrics, primary=primary,
                        checkpoint=checkpoint, counts=counts, summary=summary, effects=effects,
                        power=power, factorial=factorial, provenance=runs.provenance())
    if not metrics:
        ctx.notes.append("no metric columns in the run store (were the runs evaluated?)")

    # ---- tables -----------------------------------------------------------------------
    tdir = out_dir / "tables"
    head = headline_metrics(metrics, checkpoint, primary)
    n_txt = _n_text(counts)
    ctx.tables["variants"] = tables.write_table(
        tables.variant_numeric(counts, summary), tables.variant_display(counts, summary, head),
        tdir, "variants",
        f"Per variant: mean ± std [95% t CI] over seeds ({n_txt}); {checkpoint} checkpoint. "
        "Collapsed: runs under the collapse threshold.")
    ctx.tables["variant_metrics"] = tables.write_table(
        summary, summary.assign(metric=summary["metric"].map(stats.label)).pipe(_fmt_summary),
        tdir, "variant_metrics", f"Every metric per variant: mean, std, 95% t CI ({n_txt})")
    if not effects.empty:
        if primary is not None and (effects["metric"] == primary).any():
            ep = effects[effects["metric"] == primary]
            ctx.tables["effects"] = tables.write_table(
                tables.effects_numeric(ep), tables.effects_display(ep), tdir, "effects",
                f"Hack effects on {stats.label(primary)}: Δ = ON − OFF paired by seed; "
                "paired t-test on log FID, Holm-adjusted across hacks")
        ctx.tables["effects_all"] = tables.write_table(
            tables.effects_numeric(effects), tables.effects_display(effects, with_metric=True),
            tdir, "effects_all", "Hack effects on every metric (Holm within each metric)")
    if not power.empty:
        ctx.tables["power"] = tables.write_table(
            power, tables.power_display(power), tdir, "power",
            "Smallest effect detectable with 80% power at α=0.05 after Holm (first step: α/m)")
    if factorial is not None and not factorial.table.empty:
        ctx.tables["factorial"] = tables.write_table(
            factorial.table, tables.factorial_display(factorial), tdir, "factorial",
            f"Factorial effects on {stats.label(primary)} by least squares "
            f"({'log scale, ' if factorial.scale == 'log' else ''}seed-blocked, ±1 coding)")

    # ---- figures ----------------------------------------------------------------------
    fdir = out_dir / "figures"
    variants = plotted_variants(frame, meta, effects)
    if len(variants) < len(counts):
        ctx.notes.append(f"per-variant figures show {len(variants)} of {len(counts)} variants (the "
                         "reference variants and those in hack contrasts first); every variant is "
                         "in tables/variants.csv")
    _figure(ctx, "primary", lambda: figures.metric_figure(summary, frame, primary, variants, fdir,
                                                          "primary_metric"), when=primary is not None)
    _figure(ctx, "metrics", lambda: figures.metrics_grid(summary, head, variants, fdir, "metrics"),
            when=bool(head))
    _figure(ctx, "forest", lambda: figures.forest(effects, primary, fdir, "effects"),
            when=not effects.empty and primary is not None and (effects["metric"] == primary).any())
    _figure(ctx, "half_normal", lambda: figures.half_normal(factorial, fdir, "half_normal"),
            when=factorial is not None and not factorial.table.empty)
    curves, ctx.curve_key = runs.val_curves()
    _figure(ctx, "curves", lambda: figures.curves(curves, ctx.curve_key, variants, fdir, "val_fid_curves"),
            when=not curves.empty)
    samples = runs.sample_paths(variants)
    _figure(ctx, "samples", lambda: figures.sample_grid(samples, fdir, "samples"), when=bool(samples))
    hists, ref = runs.class_histograms(checkpoint)
    _figure(ctx, "class_histograms", lambda: figures.class_histograms(
        {v: hists[v] for v in variants if v in hists}, fdir, ref, "class_histograms"), when=bool(hists))
    ctx.notes.extend(runs.missing)

    path = out_dir / "REPORT.md"
    tables.write_text(path, markdown.render(ctx))
    return path


MAX_PLOTTED_VARIANTS = 40  # a per-variant figure stays readable (and finite) in large designs


def plotted_variants(frame: pd.DataFrame, meta: dict, effects: pd.DataFrame,
                     limit: int = MAX_PLOTTED_VARIANTS) -> list[str]:
    """The variants the per-variant figures show: all of them in small designs; in large
    ones all-on, all-off and the variants of hack contrasts first, then design order."""
    from ablate.report import stats

    order = stats.variant_order(frame, meta)
    if len(order) <= limit:
        return order
    hacks = stats.variant_hacks(frame, meta)
    scope = frozenset(stats.hacks_in_scope(frame, meta))
    first = [v for v in order if hacks[v] in (scope, frozenset())]
    if not effects.empty:
        first += list(dict.fromkeys(list(effects["on"]) + list(effects["off"])))
    ranked = list(dict.fromkeys(first + order))
    keep = set(ranked[:limit])
    return [v for v in order if v in keep]


def _figure(ctx: ReportContext, name: str, draw, when: bool) -> None:
    """Draw one figure; a failure becomes a note in the report, not a crash."""
    if not when:
        return
    try:
        ctx.figures[name] = draw()
    except Exception as exc:  # noqa: BLE001 - one bad figure must not lose the report
        ctx.notes.append(f"figure `{name}` could not be drawn: {type(exc).__name__}: {exc}")


def _n_text(counts: pd.DataFrame) -> str:
    ns = sorted(set(counts["n"].astype(int)))
    return "N = " + "/".join(map(str, ns)) + " seeds per variant"


def _fmt_summary(s: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    from ablate.report.tables import interval, num

    return pd.DataFrame({
        "variant": s["variant"], "metric": s["metric"], "N": s["n"], "seeds": s["seeds"],
        "mean": s["mean"].map(num), "std": s["std"].map(lambda x: num(x, 2)),
        "95% CI": [interval(a, b) for a, b in zip(s["ci_low"], s["ci_high"])]})


def write_report(results_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Load the run store of ``results_dir`` and write its report (default: into it)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ConfigError(
            f"results dir {results_dir} does not exist; produce it with "
            "`ablate grid experiments/<experiment>.toml` (it writes results/<experiment>/), "
            "then run `ablate report results/<experiment>`")
    try:
        from ablate.store import load_experiment_meta, load_frame
    except ImportError as exc:
        raise ConfigError(f"cannot read the run store: ablate.store is unavailable ({exc})") from exc
    frame = load_frame(results_dir)
    try:
        meta = load_experiment_meta(results_dir)
    except (OSError, KeyError, ValueError) as exc:
        warnings.warn(f"no experiment meta in {results_dir}: {exc}", stacklevel=2)
        meta = {}
    if isinstance(meta, object) and dataclasses.is_dataclass(meta):
        meta = dataclasses.asdict(meta)
    return build_report(frame, meta, out_dir or results_dir, results_dir=results_dir)
