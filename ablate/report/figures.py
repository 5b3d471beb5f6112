"""Figures: PNG for REPORT.md plus PDF for papers.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly (Agg canvas),
never through pyplot, so producing a report changes no global matplotlib state. Files
carry no creation date or software version, so the same runs give the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as sps

from ablate.report.columns import finished, label, lower_is_better

FORMATS = ("png", "pdf")
DPI = 150  # PNG resolution: sharp in a Markdown viewer, small on disk
VERDICT_COLOURS = {"helps": "tab:green", "hurts": "tab:red", "equivalent": "tab:blue",
                   "interacts": "tab:purple"}
# No timestamps or versions in the files: a report regenerated from unchanged runs is
# byte-identical (matplotlib otherwise writes the date into PDFs, its version into both).
METADATA = {"pdf": {"CreationDate": None, "Creator": None, "Producer": None},
            "png": {"Software": None}}


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, figures_dir: Path, name: str) -> Path:
    """Write ``name.png`` and ``name.pdf``; return the PNG path."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    for ext in FORMATS:
        tmp = figures_dir / f".{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=DPI, format=ext, metadata=METADATA[ext])
        tmp.replace(figures_dir / f"{name}.{ext}")
    return figures_dir / f"{name}.png"


def _colour(verdict: str) -> str:
    return VERDICT_COLOURS.get(verdict, "tab:gray")


def _ratio_axis(ax, axis: str = "x") -> None:
    """A log-scale axis labelled in plain numbers (0.8, 1, 1.25), not 8×10⁻¹."""
    from matplotlib.ticker import ScalarFormatter

    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    which = ax.xaxis if axis == "x" else ax.yaxis
    for set_formatter in (which.set_major_formatter, which.set_minor_formatter):
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        set_formatter(fmt)


def metric_per_variant(summary: pd.DataFrame, metric: str, variants: list[str], ax) -> None:
    """Centre (geometric mean on the log scale) with its 95% CI per variant."""
    s = summary[summary["metric"] == metric].set_index("variant").reindex(variants)
    y = np.arange(len(variants))
    centre = s["centre"].to_numpy(float)
    err = np.nan_to_num(np.vstack([centre - s["ci_low"].to_numpy(float),
                                   s["ci_high"].to_numpy(float) - centre]), nan=0.0)
    log = bool((s["scale"] == "log").any())
    ax.errorbar(centre, y, xerr=err, fmt="o", color="tab:blue", capsize=3,
                label="geometric mean, 95% CI" if log else "mean, 95% CI")
    if log:
        ax.set_xscale("log")
    ax.set_yticks(y, variants)
    ax.invert_yaxis()
    n = s["n"].fillna(0).astype(int)
    ax.set_xlabel(f"{label(metric)}{' (log axis)' if log else ''}  (N per variant: "
                  f"{', '.join(sorted(set(map(str, n))))})")
    ax.grid(axis="x", alpha=0.3)


def metric_figure(summary: pd.DataFrame, frame: pd.DataFrame, metric: str, variants: list[str],
                  figures_dir: Path, name: str) -> Path:
    fig = _figure(7, 0.35 * len(variants) + 1.5)
    ax = fig.add_subplot()
    metric_per_variant(summary, metric, variants, ax)
    done = finished(frame)
    pos = {v: i for i, v in enumerate(variants)}
    pts = done[done[metric].notna() & done["variant"].isin(variants)]
    ax.scatter(pts[metric], pts["variant"].map(pos) + 0.15, s=10, color="k", alpha=0.5, label="one seed")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{label(metric)} per variant")
    return save(fig, figures_dir, name)


def metrics_grid(summary: pd.DataFrame, metrics: list[str], variants: list[str],
                 figures_dir: Path, name: str = "metrics") -> Path:
    cols = 3
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(5 * cols, (0.3 * len(variants) + 1.2) * rows)
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        metric_per_variant(summary, m, variants, ax)
        if i % cols:
            ax.set_yticklabels([])
    return save(fig, figures_dir, name)


def forest(effects: pd.DataFrame, metric: str, sesoi: float, figures_dir: Path,
           name: str = "effects") -> Path:
    """Each hack's ratio ON/OFF (log scale) or difference with its multiplicity-adjusted
    interval (thick), the per-hack paired 95% interval (thin, grey: sensitivity) and the
    ±SESOI band of equivalence."""
    e = effects.reset_index(drop=True)
    log = bool((e["scale"] == "log").all())
    fig = _figure(8, 0.45 * len(e) + 1.8)
    ax = fig.add_subplot()
    y = np.arange(len(e))
    if log:
        ax.axvspan(1 / (1 + sesoi), 1 + sesoi, color="tab:blue", alpha=0.08,
                   label=f"equivalence: ±{sesoi:.0%} (ratio 1/{1 + sesoi:g} to {1 + sesoi:g})")
    ax.axvline(1.0 if log else 0.0, color="k", lw=0.8)
    for i, r in e.iterrows():
        c = _colour(r["verdict"])
        ax.plot([r["paired_low_x"], r["paired_high_x"]], [i + 0.18, i + 0.18], color="0.6", lw=1)
        ax.plot([r["low_x"], r["high_x"]], [i, i], color=c, lw=3, alpha=0.7)
        ax.plot(r["x"], i, "o", color=c)
    if log:
        _ratio_axis(ax)
    ax.set_yticks(y, [f"{r.hack}\n({r.seeds_text})" for r in e.itertuples()], fontsize=8)
    ax.set_ylim(len(e) - 0.5, -0.5)
    right = ax.twinx()  # the verdict beside each row, as right-hand tick labels
    right.set_ylim(ax.get_ylim())
    right.set_yticks(y, list(e["verdict"]), fontsize=8)
    better = "lower" if lower_is_better(metric) else "higher"
    ax.set_xlabel(f"{'ratio ON/OFF of ' if log else 'Δ '}{label(metric)} ({better} is better)\n"
                  "thick: multiplicity-adjusted interval (pooled model); thin grey: paired 95% t CI")
    ax.set_title("Hack effects")
    ax.grid(axis="x", alpha=0.3)
    if log:
        ax.legend(fontsize=7, loc="lower right")
    return save(fig, figures_dir, name)


def residuals(fit, figures_dir: Path, name: str = "residuals") -> Path:
    """The pooled model's residuals against fitted values, and a normal Q-Q plot."""
    fig = _figure(10, 4)
    ax, qq = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.scatter(fit.fitted, fit.residuals, s=12, color="tab:blue", alpha=0.7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(f"fitted ({'log ' if fit.scale == 'log' else ''}{label(fit.metric)})")
    ax.set_ylabel("residual")
    bf = fit.levene_p()
    ax.set_title("Residuals vs fitted" + (f" (Brown-Forsythe p = {bf:.3g})" if np.isfinite(bf) else ""))
    (osm, osr), (slope, icpt, _) = sps.probplot(np.asarray(fit.residuals, float))
    qq.scatter(osm, osr, s=12, color="tab:blue", alpha=0.7)
    qq.plot(osm, slope * np.asarray(osm) + icpt, "k--", lw=0.8)
    qq.set_xlabel("normal quantile")
    qq.set_ylabel("ordered residual")
    qq.set_title(f"Normal Q-Q (Shapiro-Wilk p = {fit.shapiro_p():.3g})")
    return save(fig, figures_dir, name)


def over_training(by_step: pd.DataFrame, sesoi: float, figures_dir: Path,
                  name: str = "effects_over_training") -> Path:
    """Effect of each hack over training: ratio ON/OFF of validation FID at each
    validation step with its alpha/m interval, one panel per hack."""
    hacks = list(dict.fromkeys(by_step["hack"]))
    cols = min(4, len(hacks))
    rows = math.ceil(len(hacks) / cols)
    fig = _figure(3.2 * cols, 2.5 * rows)
    for i, h in enumerate(hacks):
        ax = fig.add_subplot(rows, cols, i + 1)
        g = by_step[by_step["hack"] == h].sort_values("step")
        ax.axhspan(1 / (1 + sesoi), 1 + sesoi, color="tab:blue", alpha=0.08)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.fill_between(g["step"], g["low"], g["high"], color="tab:orange", alpha=0.3)
        ax.plot(g["step"], g["ratio"], "o-", color="tab:orange", ms=3)
        _ratio_axis(ax, "y")
        ax.set_title(h, fontsize=8)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("ratio ON/OFF (val FID)", fontsize=7)
        if i >= len(hacks) - cols:
            ax.set_xlabel("generator step", fontsize=7)
    fig.suptitle("Effect of each hack over training (shaded: ±SESOI; band: interval at α/m)")
    return save(fig, figures_dir, name)


def half_normal(fit, figures_dir: Path, name: str = "half_normal") -> Path:
    """Half-normal (Daniel) plot of |effects| from the factorial fit."""
    t = fit.table.assign(abs_effect=fit.table["effect"].abs()).sort_values("abs_effect")
    m = len(t)
    q = sps.halfnorm.ppf((np.arange(1, m + 1) - 0.5) / m)
    fig = _figure(6, 5)
    ax = fig.add_subplot()
    colours = [_colour(v) for v in t["verdict"]]
    ax.scatter(q, t["abs_effect"], c=colours)
    for qi, (_, r) in zip(q, t.iterrows()):
        if r["verdict"] in VERDICT_COLOURS or qi == q[-1]:
            ax.annotate(r["term"], (qi, r["abs_effect"]), fontsize=7, xytext=(3, 0),
                        textcoords="offset points")
    # Reference line through the small effects (median-based slope).
    small = t["abs_effect"].to_numpy()[: max(1, m // 2)]
    slope = np.median(small / q[: len(small)]) if len(small) else 0
    ax.plot([0, q[-1]], [0, slope * q[-1]], "k--", lw=0.8, label="noise line")
    ax.set_xlabel("half-normal quantile")
    ax.set_ylabel(f"|effect| on {label(fit.metric)}" + (" (log scale)" if fit.scale == "log" else ""))
    ax.set_title("Half-normal plot of factorial effects")
    ax.legend(fontsize=8)
    return save(fig, figures_dir, name)


def curves(curves_df: pd.DataFrame, variants: list[str], figures_dir: Path,
           name: str = "val_fid_curves", key: str = "val_fid") -> Path:
    """Validation FID against step: mean over seeds per variant, band = min..max."""
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    styles = ("-", "--", ":", "-.")  # tab10 has 10 colours: a new line style per cycle
    for i, v in enumerate(variants):
        c = curves_df[curves_df["variant"] == v]
        if c.empty:
            continue
        g = c.groupby("step")["value"]
        mean, lo, hi = g.mean(), g.min(), g.max()
        line, = ax.plot(mean.index, mean.values, styles[(i // 10) % len(styles)],
                        color=f"C{i % 10}", label=f"{v} (n={c['seed'].nunique()})")
        ax.fill_between(mean.index, lo.values, hi.values, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("generator step")
    ax.set_ylabel(f"validation FID (`{key}`), log scale" if (curves_df["value"] > 0).all()
                  else f"validation FID (`{key}`)")
    if (curves_df["value"] > 0).all():
        from matplotlib.ticker import ScalarFormatter

        ax.set_yscale("log")
        for axis_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            fmt = ScalarFormatter()
            fmt.set_scientific(False)
            axis_formatter(fmt)
    ax.set_title("Validation FID during training (mean over seeds; band: min–max)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return save(fig, figures_dir, name)


def sample_grid(samples: dict[str, tuple[int, Path]], figures_dir: Path,
                name: str = "samples") -> Path:
    """Each variant's 8×8 sample grid (one shared latent batch; the lowest seed) side by side."""
    from PIL import Image

    cols = min(4, len(samples))
    rows = math.ceil(len(samples) / cols)
    fig = _figure(3 * cols, 3.2 * rows)
    for i, (variant, (seed, path)) in enumerate(samples.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        with Image.open(path) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_title(f"{variant} (seed {seed})", fontsize=8)
        ax.axis("off")
    return save(fig, figures_dir, name)


def class_histograms(hists: dict[str, np.ndarray], figures_dir: Path, reference=None,
                     name: str = "class_histograms") -> Path:
    """Share of generated samples per class (mean over seeds) per variant."""
    cols = min(4, len(hists))
    rows = math.ceil(len(hists) / cols)
    fig = _figure(3 * cols, 2.4 * rows)
    for i, (variant, h) in enumerate(hists.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        h = np.asarray(h, float)
        h = h / h.sum() if h.sum() > 0 else h
        x = np.arange(len(h))
        ax.bar(x, h, color="tab:blue", width=0.8 if len(h) <= 50 else 1.0)
        ref = np.full(len(h), 1 / len(h)) if reference is None else np.asarray(reference, float)
        ax.step(np.append(x, x[-1] + 1) - 0.5, np.append(ref, ref[-1]), where="post", color="k",
                lw=0.8, label="real" if reference is not None else "uniform")
        ax.set_title(variant, fontsize=8)
        ax.set_ylim(0, max(h.max(), ref.max()) * 1.15)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle("Generated class histograms under the classifier (mean over seeds)")
    return save(fig, figures_dir, name)
