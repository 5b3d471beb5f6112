"""Figures: PNG for REPORT.md plus PDF for papers.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly (Agg canvas),
never through pyplot, so producing a report changes no global matplotlib state.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as sps

from ablate.report import stats

FORMATS = ("png", "pdf")
DPI = 150  # PNG resolution: sharp in a Markdown viewer, small on disk
VERDICT_COLOURS = {"helps": "tab:green", "hurts": "tab:red", "interacts": "tab:purple"}


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, figures_dir: Path, name: str) -> Path:
    """Write ``name.png`` and ``name.pdf``; return the PNG path."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    for ext in FORMATS:
        tmp = figures_dir / f".{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=DPI, format=ext)
        tmp.replace(figures_dir / f"{name}.{ext}")
    return figures_dir / f"{name}.png"


def _colour(verdict: str) -> str:
    return VERDICT_COLOURS.get(verdict, "tab:gray")


def metric_per_variant(summary: pd.DataFrame, metric: str, variants: list[str], ax) -> None:
    """Mean with a 95% CI bar per variant, and every seed as a dot."""
    s = summary[summary["metric"] == metric].set_index("variant").reindex(variants)
    y = np.arange(len(variants))
    mean = s["mean"].to_numpy(float)
    lo = (mean - s["ci_low"].to_numpy(float))
    hi = (s["ci_high"].to_numpy(float) - mean)
    err = np.nan_to_num(np.vstack([lo, hi]), nan=0.0)
    ax.errorbar(mean, y, xerr=err, fmt="o", color="tab:blue", capsize=3, label="mean, 95% CI")
    ax.set_yticks(y, variants)
    ax.invert_yaxis()
    n = s["n"].fillna(0).astype(int)
    ax.set_xlabel(f"{stats.label(metric)}  (N per variant: {', '.join(sorted(set(map(str, n))))})")
    ax.grid(axis="x", alpha=0.3)


def metric_figure(summary: pd.DataFrame, frame: pd.DataFrame, metric: str, variants: list[str],
                  figures_dir: Path, name: str) -> Path:
    fig = _figure(7, 0.35 * len(variants) + 1.5)
    ax = fig.add_subplot()
    metric_per_variant(summary, metric, variants, ax)
    done = stats.finished(frame)
    pos = {v: i for i, v in enumerate(variants)}
    pts = done[done[metric].notna()]
    ax.scatter(pts[metric], pts["variant"].map(pos) + 0.15, s=10, color="k", alpha=0.5,
               label="one seed")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{stats.label(metric)} per variant")
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


def forest(effects: pd.DataFrame, metric: str, figures_dir: Path, name: str = "effects") -> Path:
    """Effect forest plot: Δ (ON − OFF) per contrast with its 95% t CI (thick: bootstrap)."""
    e = effects[effects["metric"] == metric].reset_index(drop=True)
    fig = _figure(8, 0.45 * len(e) + 1.6)
    ax = fig.add_subplot()
    y = np.arange(len(e))
    for i, r in e.iterrows():
        c = _colour(r["verdict"])
        ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=c, lw=1.5)
        ax.plot([r["boot_low"], r["boot_high"]], [i, i], color=c, lw=4, alpha=0.4)
        ax.plot(r["delta"], i, "o", color=c)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{r.hack}\n({r.kind}, n={r.n})" for r in e.itertuples()], fontsize=8)
    ax.set_ylim(len(e) - 0.5, -0.5)
    right = ax.twinx()  # the verdict beside each row, as right-hand tick labels
    right.set_ylim(ax.get_ylim())
    right.set_yticks(y, [f"{r.verdict}\np_Holm={r.p_holm:.3g}" if np.isfinite(r.p_holm) else r.verdict
                         for r in e.itertuples()], fontsize=7)
    better = "lower" if stats.lower_is_better(metric) else "higher"
    ax.set_xlabel(f"Δ {stats.label(metric)} = ON − OFF, paired by seed ({better} is better)\n"
                  "thin: 95% t CI; thick: bootstrap CI")
    ax.set_title("Hack effects")
    ax.grid(axis="x", alpha=0.3)
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
    ax.set_ylabel(f"|effect| on {stats.label(fit.metric)}" + (" (log scale)" if fit.scale == "log" else ""))
    ax.set_title("Half-normal plot of factorial effects")
    ax.legend(fontsize=8)
    return save(fig, figures_dir, name)


def curves(curves_df: pd.DataFrame, key: str, variants: list[str], figures_dir: Path,
           name: str = "val_fid_curves") -> Path:
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
