"""Tables in three formats: Markdown (for REPORT.md), CSV (full precision, for
re-analysis) and LaTeX (booktabs, through pandas Styler, for papers).

CSV files hold the numeric frame; Markdown and LaTeX hold a display frame of
formatted strings (mean, CI and N side by side).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.artefacts import write_atomic
from ablate.report.columns import label

# Unicode the report uses, and its LaTeX spelling (the .tex files stay ASCII).
_LATEX_SYMBOLS = {"×": r"$\times$", "Δ": r"$\Delta$", "±": r"$\pm$", "−": "-", "α": r"$\alpha$",
                  "≈": r"$\approx$", "–": "--", "≥": r"$\geq$", "≤": r"$\leq$", "‖": r"$\|$",
                  "τ": r"$\tau$", "²": r"$^2$", "→": r"$\rightarrow$",
                  # OT1, LaTeX's default font encoding, typesets a bare < or > as ¡ or ¿
                  # (pandas' Styler escape leaves them)
                  "<": r"\textless{}", ">": r"\textgreater{}"}


def num(x, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; NaN -> an en dash."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    if abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def pval(p) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def p_is(p, name: str = "p") -> str:
    """A p-value in prose: ``p = 0.034``, ``p < 0.001`` (never ``p = <0.001``)."""
    v = pval(p)
    return f"{name} < {v[1:]}" if v.startswith("<") else f"{name} = {v}"


def interval(lo, hi, digits: int = 3) -> str:
    """``[lo, hi]`` with ``digits`` significant digits. A bound that only rounds to ±1 gets
    the digits that tell it from 1 (up to 6): a ratio interval [1.0044, 1.56] that excludes
    no effect must not read [1, 1.56]."""
    if lo is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    return f"[{_bound(lo, digits)}, {_bound(hi, digits)}]"


def _bound(x, digits: int) -> str:
    text = num(x, digits)
    while text in ("1", "-1") and abs(float(x)) != 1 and digits < 6:
        digits += 1
        text = num(x, digits)
    return text


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (hand-written: tabulate is not a dependency)."""
    cells = lambda row: "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"  # noqa: E731
    lines = [cells(df.columns), "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += [cells(row) for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        out.append({"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "\\": r"\textbackslash{}"}.get(ch, ch))
    return _latex_symbols("".join(out))


def _latex_symbols(text: str) -> str:
    for k, v in _LATEX_SYMBOLS.items():
        text = text.replace(k, v)
    return text


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (\\toprule/\\midrule/\\bottomrule) via pandas Styler."""
    styler = (df.style.hide(axis="index")
              .format(escape="latex")
              .format_index(escape="latex", axis=1))
    text = styler.to_latex(hrules=True, caption=latex_escape(caption), label=f"tab:{label}",
                           column_format="l" * len(df.columns), position="htbp",
                           environment="table")
    text = _latex_symbols(text)
    return "% requires \\usepackage{booktabs}\n" + text


def write_text(path: Path, text: str) -> None:
    """Write a report file atomically."""
    write_atomic(path, lambda f: f.write(text), mode="w")


def write_table(numeric: pd.DataFrame, display: pd.DataFrame, tables_dir: Path, name: str,
                caption: str) -> dict[str, Path]:
    """Write ``name.csv`` (numeric), ``name.md`` and ``name.tex`` (display); return paths."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: tables_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    write_text(paths["csv"], numeric.to_csv(index=False))
    write_text(paths["md"], f"**{caption}**\n\n" + to_markdown(display))
    write_text(paths["tex"], to_latex(display, caption, name))
    return paths


# --------------------------------------------------------------------------------------
# The report's tables
# --------------------------------------------------------------------------------------
def pct(x) -> str:
    """A log ratio as a signed percent change: 0.0953 -> +10.0%."""
    return "–" if x is None or not np.isfinite(x) else f"{100 * (math.exp(x) - 1):+.1f}%"


def variant_display(counts: pd.DataFrame, summary: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per variant: N (seeds), diverged and collapsed with exact 95% CIs, and each
    metric's centre [95% CI] (geometric mean on the log scale)."""
    rows = []
    for _, c in counts.iterrows():
        row = {"variant": c["variant"], "N": c["n"], "seeds": c["seeds"] or "–",
               "diverged [95% CI]": "–" if not c["finished"] else
               f"{c['diverged']}/{c['finished']} {interval(c['divergence_low'], c['divergence_high'], 2)}",
               "collapsed [95% CI]": "–" if not c["measured"] else
               f"{c['collapsed']}/{c['measured']} {interval(c['collapse_low'], c['collapse_high'], 2)}"}
        for m in metrics:
            s = summary[(summary["variant"] == c["variant"]) & (summary["metric"] == m)]
            if s.empty or s.iloc[0]["n"] == 0:
                row[label(m)] = "–"
                continue
            s = s.iloc[0]
            row[label(m)] = f"{num(s['centre'])} {interval(s['ci_low'], s['ci_high'])}"
        rows.append(row)
    return pd.DataFrame(rows)


def variant_numeric(counts: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Counts plus n/mean/sd/centre/CI of every metric, one row per variant (wide CSV)."""
    stats_ = ["n", "mean", "sd", "centre", "ci_low", "ci_high"]
    wide = summary.pivot(index="variant", columns="metric", values=stats_)
    wide.columns = [f"{metric}:{stat}" for stat, metric in wide.columns]
    order = [f"{m}:{s}" for m in dict.fromkeys(summary["metric"]) for s in stats_]
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    return counts.merge(wide, on="variant", how="left")


def summary_display(s: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "variant": s["variant"], "metric": s["metric"].map(label), "N": s["n"], "seeds": s["seeds"],
        "centre": s["centre"].map(num), "sd": s["sd"].map(lambda x: num(x, 2)),
        "95% CI": [interval(a, b) for a, b in zip(s["ci_low"], s["ci_high"])],
        "scale": s["scale"]})


def _effect_text(scale: str, x: float) -> str:
    return f"×{num(math.exp(x))}" if scale == "log" and np.isfinite(x) else num(x)


def _interval_text(scale: str, lo: float, hi: float) -> str:
    if scale == "log" and np.isfinite(lo) and np.isfinite(hi):
        return interval(math.exp(lo), math.exp(hi))
    return interval(lo, hi)


# Adaptive experiments: only the adjusted and TOST intervals are repeated confidence
# intervals (valid over all looks); these columns are single-look numbers, and say so.
SINGLE_LOOK = {"p (Holm)": "p (Holm; naive single-look)",
               "paired 95% CI (sensitivity)": "paired 95% CI (sensitivity; not a repeated CI)",
               "paired p": "paired p (naive single-look)",
               "incl. diverged (worst value)": "incl. diverged (worst value; not a repeated CI)",
               "mixed model": "mixed model (not a repeated CI)"}


def effects_display(e: pd.DataFrame, with_metric: bool = False, adaptive: bool = False) -> pd.DataFrame:
    """The verdict table: one row per hack (and metric). ``adaptive``: the columns that are
    not repeated confidence intervals, and the single-look p values, are labelled so."""
    rows = []
    for _, r in e.iterrows():
        sc = r["scale"]
        row = {"metric": label(r["metric"])} if with_metric else {}
        row.update({
            "hack": r["hack"], "contrast": f"{r['on']} vs {r['off']}", "verdict": r["verdict"],
            "seeds ON/OFF": f"{r['n_on']}/{r['n_off']}",
            ("ratio ON/OFF" if sc == "log" else "Δ ON − OFF"): _effect_text(sc, r["estimate"]),
            "adjusted 95% CI": _interval_text(sc, r["ci_low"], r["ci_high"]),
            "TOST interval": _interval_text(sc, r["eq_low"], r["eq_high"]),
            "p (Holm)": pval(r["p_holm"]),
            "paired 95% CI (sensitivity)": _interval_text(sc, r["paired_low"], r["paired_high"]),
            "paired p": pval(r["paired_p"])})
        if "worst_estimate" in r and np.isfinite(r.get("worst_estimate", np.nan)) and r.get("imputed", 0):
            row["incl. diverged (worst value)"] = (f"{_effect_text(sc, r['worst_estimate'])} "
                                                  f"{_interval_text(sc, r['worst_low'], r['worst_high'])}")
        if "mixed_estimate" in r and np.isfinite(r.get("mixed_estimate", np.nan)):
            row["mixed model"] = (f"{_effect_text(sc, r['mixed_estimate'])} "
                                  f"{_interval_text(sc, r['mixed_low'], r['mixed_high'])}")
        rows.append(row)
    # The worst-value and mixed-model columns exist only for rows whose deciding look has a
    # diverged run or unbalanced seeds: the other rows show an en dash there.
    out = pd.DataFrame(rows)
    for col in ("incl. diverged (worst value)", "mixed model"):
        if col in out:
            out[col] = out[col].fillna("–")
    return out.rename(columns=SINGLE_LOOK) if adaptive else out


def failures_display(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "hack": t["hack"], "contrast": t["on"] + " vs " + t["off"],
        "collapse: pairs, ON only / OFF only": [f"{a}: {b} / {c}" for a, b, c in
                                                zip(t["collapse_pairs"], t["collapse_on_only"], t["collapse_off_only"])],
        "exact McNemar p (Holm)": [f"{pval(p)} ({pval(h)})" for p, h in zip(t["collapse_p"], t["collapse_p_holm"])],
        "divergence: pairs, ON only / OFF only": [f"{a}: {b} / {c}" for a, b, c in
                                                  zip(t["diverge_pairs"], t["diverge_on_only"], t["diverge_off_only"])],
        "exact McNemar p (Holm) ": [f"{pval(p)} ({pval(h)})" for p, h in zip(t["diverge_p"], t["diverge_p_holm"])]})


def power_display(rows: list[dict]) -> pd.DataFrame:
    out = []
    for p in rows:
        log = p["scale"] == "log"
        size = (f"−{abs(p['decrease_pct']):.0f}% or +{p['increase_pct']:.0f}%" if log
                else f"±{num(p['mde'], 2)}")
        out.append({"analysis": p["analysis"], "metric": label(p["metric"]),
                    "seeds per variant": num(p.get("seeds", p.get("pairs"))),
                    "smallest detectable change (80% power, α/m)": size,
                    "P(equivalent | no effect)": "–" if "equivalence_power" not in p
                    else f"{p['equivalence_power']:.0%}",
                    "seeds for 80% equivalence power": num(p.get("seeds_for_equivalence"))})
    return pd.DataFrame(out)


def factorial_display(fit) -> pd.DataFrame:
    log = fit.scale == "log"
    return pd.DataFrame([{"term": t["term"], "kind": t["kind"],
                          "effect (OFF→ON)" + (" on log" if log else ""): num(t["effect"]),
                          "SE": num(t["se"], 2), "ratio": num(t["ratio"]) if log else "–",
                          "t": num(t["t"], 3), "p": pval(t["p"]), "p (Holm)": pval(t["p_holm"]),
                          "verdict": t["verdict"]} for _, t in fit.table.iterrows()])
