"""REPORT.md's *Across levels* section, ``tables/levels.{csv,md,tex}`` and the dose-response
figures ``figures/dose_<hack>.{png,pdf}``: written only for an experiment with ``[axes]``
(the statistics are :mod:`ablate.report.levels`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report import figures, levels, tables
from ablate.report.columns import label
from ablate.report.tables import num, p_is


def display(t: pd.DataFrame) -> pd.DataFrame:
    """The levels table for Markdown/LaTeX: the hack's test and robust verdict on its first row."""
    rows, seen = [], set()
    for _, r in t.iterrows():
        first = r["hack"] not in seen
        seen.add(r["hack"])
        het = (f"F({int(r['het_df_num'])}, {int(r['het_df_den'])}) = {num(r['het_f'], 3)}, "
               f"{p_is(r['het_p'])} ({p_is(r['het_p_holm'], 'Holm p')})"
               if first and np.isfinite(r["het_f"]) else ("–" if first else ""))
        rows.append({"hack": r["hack"] if first else "", "level": r["level"],
                     "contrast": f"{r['on']} vs {r['off']}", "verdict": r["verdict"],
                     "ratio ON/OFF" if r["scale"] == "log" else "Δ ON − OFF": tables._effect_text(r["scale"], r["estimate"]),
                     "adjusted 95% CI": tables._interval_text(r["scale"], r["ci_low"], r["ci_high"]),
                     "same effect at every level? (F-test)": het,
                     "over the levels": r["robust_verdict"] if first else ""})
    return pd.DataFrame(rows)


def write(ctx, tables_dir: Path, figures_dir: Path, draw) -> None:
    """Write the levels table and the dose figures (``draw``: the report's figure guard)."""
    if ctx.levels.empty:
        return
    t = levels.table(ctx.levels, ctx.level_verdicts)
    meta = ctx.meta
    ctx.tables["levels"] = tables.write_table(
        t, display(t), tables_dir, "levels",
        f"Each hack across the levels of {', '.join(meta.axes)}: per level its ratio ON/OFF of "
        f"{label(ctx.primary)}, adjusted 95% CI and verdict (one Holm family over every (hack, level)); "
        "the F-test that the effect is the same at every level (Holm across hacks); the verdict over the levels")
    for hack, g in t.groupby("hack", sort=False):
        if g["dose"].notna().all() and g["dose_axis"].iloc[0]:
            name = f"dose_{hack}"
            draw(name, lambda g=g, name=name: dose_response(g, ctx.primary, meta.analysis.sesoi,
                                                            figures_dir, name), True)


def dose_response(g: pd.DataFrame, metric: str, sesoi: float, figures_dir: Path, name: str) -> Path:
    """Ratio ON/OFF (log axis) with its adjusted 95% interval against the hack's parameter,
    one line per level of the other axes; a line at 1 and the ±SESOI band."""
    log = bool((g["scale"] == "log").all())
    f = np.exp if log else (lambda x: x)
    fig = figures._figure(6, 4)
    ax = fig.add_subplot()
    if log:
        ax.axhspan(1 / (1 + sesoi), 1 + sesoi, color="tab:blue", alpha=0.08,
                   label=f"equivalence: ±{sesoi:.0%}")
    ax.axhline(1.0 if log else 0.0, color="k", lw=0.8)
    for k, (rest, s) in enumerate(g.groupby("rest", sort=False)):
        s = s.sort_values("dose")
        x = s["dose"].to_numpy(float)
        y, lo, hi = (f(s[c].to_numpy(float)) for c in ("estimate", "ci_low", "ci_high"))
        line, = ax.plot(x, y, "-", lw=1, color=f"C{k}", label=rest or None)
        for xi, yi, a, b, v in zip(x, y, lo, hi, s["verdict"]):
            if np.isfinite(a) and np.isfinite(b):
                ax.plot([xi, xi], [a, b], color=line.get_color(), lw=2, alpha=0.6)
            ax.plot(xi, yi, "o", color=figures._colour(v), mec=line.get_color())
    if log:
        figures._ratio_axis(ax, "y")
    ax.set_xlabel(g["dose_axis"].iloc[0])
    ax.set_ylabel(f"{'ratio ON/OFF of ' if log else 'Δ '}{label(metric)}")
    ax.set_title(f"{g['hack'].iloc[0]}: effect against its {g['dose_axis'].iloc[0].partition('.')[2]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figures.save(fig, figures_dir, name)


def section(d, ctx) -> None:
    """REPORT.md: the verdict of each hack over the levels, then the table and figures."""
    v = ctx.level_verdicts
    if ctx.levels.empty:
        return
    meta = ctx.meta
    d("## Across levels", "",
      "Axes: " + "; ".join(f"`{a}` = {list(vals)}" for a, vals in meta.axes.items())
      + f" ({len(ctx.levels)} (hack, level) comparisons). Per hack, the verdict over its levels: "
      "*at every level* when every per-level verdict agrees (those are family-wise controlled in one "
      "Holm family, so no further adjustment is needed); *depends on the level* when the F-test that "
      "the effect is the same at every level rejects after Holm across hacks; otherwise *mixed* or "
      "*undecided*.", "")
    for _, r in v.iterrows():
        test = (f"F({r['df_num']}, {r['df_den']}) = {num(r['f'], 3)}, {p_is(r['p_holm'], 'Holm p')}"
                if math.isfinite(r["f"]) else "no heterogeneity test")
        d(f"- `{r['hack']}`: **{r['verdict']}** ({test})")
    d("")
    d.include_table(ctx.tables.get("levels"))
    for hack in v["hack"]:
        d.figure(f"{hack} dose-response", ctx.figures.get(f"dose_{hack}"),
                 f"`{hack}`: ratio ON/OFF per value of its parameter with the adjusted 95% interval "
                 "(points coloured by verdict), on a log axis; the line at 1 and the ±SESOI band.")


def method_lines(ctx) -> list[str]:
    """The method section's bullet on axes (none without axes)."""
    meta = ctx.meta
    if not meta.axes:
        return []
    return [
        f"- **Axes** ({', '.join(meta.axes)}): every variant is planned at every level and each "
        f"hack compared within each level; the {len(meta.comparisons)} (hack, level) comparisons form one "
        "Holm family (difference and equivalence, each at α, over the looks too): the adaptive grid's "
        "decision after each look covers all of them. A run that several variant names share (a variant "
        "without the axis' hack is the same run at every level of it) enters every model once, in one "
        "cell. *Across levels*: per hack, the joint least-squares fit over the unique finished runs "
        "(one cell per distinct run condition, seed blocks) tests that its contrast is the same at every "
        "level (F-test, statsmodels `f_test`; numerator df the rank of its constraints, L − 1 with one axis), Holm across hacks at α. A hack "
        "*helps / hurts / is equivalent at every level* when each per-level verdict says so: each is "
        "controlled family-wise already, so their intersection holds at α with no further adjustment "
        "(intersection-union test, Berger 1982)."]
