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
from ablate.report import stats

# Unicode the report uses, and its LaTeX spelling (the .tex files stay ASCII).
_LATEX_SYMBOLS = {"×": r"$\times$", "Δ": r"$\Delta$", "±": r"$\pm$", "−": "-", "α": r"$\alpha$",
                  "≈": r"$\approx$", "–": "--", "≥": r"$\geq$", "≤": r"$\leq$", "‖": r"$\|$"}


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
    return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}g}"


def pval(p) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def interval(lo, hi, digits: int = 3) -> str:
    if lo is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    return f"[{num(lo, digits)}, {num(hi, digits)}]"


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
def variant_display(counts: pd.DataFrame, summary: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per variant: N (seeds), diverged, collapsed, and mean ± std [95% CI] per metric."""
    rows = []
    for _, c in counts.iterrows():
        row = {"variant": c["variant"], "N": c["n"], "seeds": c["seeds"] or "–",
               "diverged": c["diverged"],
               "collapsed": "–" if pd.isna(c["collapse_rate"])
               else f"{int(c['collapsed'])}/{c['n']} ({c['collapse_rate']:.0%})"}
        for m in metrics:
            s = summary[(summary["variant"] == c["variant"]) & (summary["metric"] == m)]
            if s.empty or s.iloc[0]["n"] == 0:
                row[stats.label(m)] = "–"
                continue
            s = s.iloc[0]
            cell = num(s["mean"])
            if np.isfinite(s["std"]):
                cell += f" ± {num(s['std'], 2)} {interval(s['ci_low'], s['ci_high'])}"
            row[stats.label(m)] = cell
        rows.append(row)
    return pd.DataFrame(rows)


def variant_numeric(counts: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Counts plus mean/std/CI/N of every metric, one row per variant (wide CSV)."""
    wide = summary.pivot(index="variant", columns="metric",
                         values=["n", "mean", "std", "ci_low", "ci_high"])
    wide.columns = [f"{metric}:{stat}" for stat, metric in wide.columns]
    order = [f"{m}:{s}" for m in dict.fromkeys(summary["metric"])
             for s in ("n", "mean", "std", "ci_low", "ci_high")]
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    return counts.merge(wide, on="variant", how="left")


def effects_display(effects: pd.DataFrame, with_metric: bool = False) -> pd.DataFrame:
    rows = []
    for _, e in effects.iterrows():
        log = e["scale"] == "log"
        row = {}
        if with_metric:
            row["metric"] = stats.label(e["metric"])
        row.update({
            "hack": e["hack"], "contrast": e["contrast"], "N": e["n"], "seeds": e["seeds"] or "–",
            "Δ (ON − OFF)": num(e["delta"]), "95% CI (t)": interval(e["ci_low"], e["ci_high"]),
            "95% CI (bootstrap)": interval(e["boot_low"], e["boot_high"]),
            "ratio ON/OFF [95% CI]": f"{num(e['ratio'])} {interval(e['ratio_low'], e['ratio_high'])}"
            if log else "–",
            "test": "paired t on log" if log else "paired t",
            "p": pval(e["p"]), "p (Holm)": pval(e["p_holm"]), "d_z": num(e["effect_size"], 2),
            "verdict": e["verdict"]})
        rows.append(row)
    return pd.DataFrame(rows)


def effects_numeric(effects: pd.DataFrame) -> pd.DataFrame:
    cols = ["metric", "hack", "kind", "on", "off", "contrast", "n", "seeds", "delta", "delta_sd",
            "ci_low", "ci_high", "boot_low", "boot_high", "scale", "test_delta", "test_sd",
            "ratio", "ratio_low", "ratio_high", "p", "p_holm", "effect_size", "p_wilcoxon", "verdict"]
    return effects[[c for c in cols if c in effects.columns]]


def power_display(power: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, p in power.iterrows():
        mde = (f"{num(p['mde_percent'], 2)}% (≈ {num(p['mde_raw'], 2)} units)" if p["scale"] == "log"
               else num(p["mde"], 2))
        rows.append({"metric": stats.label(p["metric"]), "tests (Holm family)": p["tests"],
                     "N pairs": p["n"], "α, first Holm step": num(p["alpha_first_step"], 2),
                     "seed spread (sd of paired Δ)": num(p["pooled_sd"], 2)
                     + (" (log)" if p["scale"] == "log" else ""),
                     "min d_z (80% power)": num(p["d_z_min"], 3),
                     "smallest detectable effect": mde,
                     "best rank-test p": num(p["min_rank_p"], 2)})
    return pd.DataFrame(rows)


def factorial_display(fit) -> pd.DataFrame:
    log = fit.scale == "log"
    rows = []
    for _, t in fit.table.iterrows():
        rows.append({"term": t["term"], "kind": t["kind"],
                     "effect (OFF→ON)" + (" on log" if log else ""): num(t["effect"]),
                     "SE": num(t["se"], 2),
                     "ratio": num(t["ratio"]) if log else "–",
                     "t": num(t["t"], 3), "p": pval(t["p"]), "p (Holm)": pval(t["p_holm"]),
                     "verdict": t["verdict"]})
    return pd.DataFrame(rows)
