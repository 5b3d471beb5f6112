"""Compact tables a paper can take as they are (issue #20 item 5).

* ``tables/effects_compact.{csv,md,tex}`` of a report: one row per hack with its verdict,
  ratio ON/OFF, the multiplicity-adjusted 95% interval (the ``adjusted 95% CI`` of
  ``tables/effects``) and the seeds ON/OFF;
* ``summary/tables/compact_<metric>.{csv,md,tex}`` of ``ablate compare``: one row per hack,
  one column per experiment (per level for an experiment with ``[axes]``) holding
  ``ratio [interval] symbol``, and the pooled ratio with its 95% interval.

Numbers have a fixed number of decimals (ratios 2: ``×1.00``, ``[1.00, 1.56]``; a
difference on the linear scale as many as its narrowest interval needs, 2 to 4), so a
column lines up. The ``.tex`` file is a bare booktabs ``tabular`` (no float, caption or
label: the paper wraps it in its own ``table``); ``\\input`` it after ``\\small``. The
effects table fits a portrait page's text width; the summary needs a landscape page for
more than two or three experiments.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report import precision, tables

# The verdict of a cell of the summary table, in Markdown and in LaTeX.
SYMBOLS = {"helps": ("+", "$+$"), "hurts": ("−", "$-$"), "equivalent": ("≈", r"$\approx$"),
           "undecided": ("?", "?")}
LEGEND = "+ helps, − hurts, ≈ equivalent within ±SESOI, ? undecided"
RATIO_DECIMALS = 2


def fixed(x, decimals: int) -> str:
    """``x`` with exactly ``decimals`` decimals (``-0.00`` written ``0.00``); NaN -> an en dash."""
    if x is None or not np.isfinite(x):
        return "–"
    text = f"{float(x):.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def decimals(scale: str, lows, highs) -> int:
    """Decimals of a column: 2 for ratios; on the linear scale enough for two significant
    digits of the narrowest interval, from 2 to 4."""
    if scale == "log":
        return RATIO_DECIMALS
    widths = [h - lo for lo, h in zip(lows, highs) if np.isfinite(lo) and np.isfinite(h) and h > lo]
    return 2 if not widths else int(min(4, max(2, 1 - math.floor(math.log10(min(widths))))))


def _value(scale: str, x) -> float:
    """A log-scale statistic as a ratio (rounded like every number the report writes)."""
    x = float(x)
    return precision.significant(math.exp(x)) if scale == "log" and np.isfinite(x) else x


def effect(scale: str, x, d: int) -> str:
    if not np.isfinite(float(x)):
        return "–"
    return f"×{fixed(_value(scale, x), d)}" if scale == "log" else f"{float(x):+.{d}f}".replace("-", "−")


def ci(scale: str, lo, hi, d: int) -> str:
    if not (np.isfinite(float(lo)) and np.isfinite(float(hi))):
        return "–"
    return f"[{fixed(_value(scale, lo), d)}, {fixed(_value(scale, hi), d)}]".replace("-", "−")


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def tex(text: str) -> str:
    """``tables.latex_escape`` with a minus sign (not a hyphen) for ``−``."""
    return tables.latex_escape(str(text).replace("−", "\x00")).replace("\x00", "$-$")


def tabular(display: pd.DataFrame, align: str, note: str = "", header: list[list[str]] | None = None) -> str:
    """A bare booktabs tabular of ``display`` (strings), escaped for LaTeX, ASCII only.
    A cell may be a pair ``(markdown, latex)`` to give its LaTeX spelling; ``header``: the
    header rows (default: the column names)."""
    def cell(c) -> str:
        return c[1] if isinstance(c, tuple) else tex(c)

    head = " \\\\\n".join(" & ".join(tex(c) for c in row) for row in (header or [list(display.columns)]))
    body = [" & ".join(cell(c) for c in row) + r" \\" for row in display.itertuples(index=False)]
    lines = ["% requires \\usepackage{booktabs}; a tabular without float, caption or label:",
             "% \\input it inside your own table environment, e.g. after \\small"]
    lines += [f"% {tables.latex_escape(line)}" for line in note.splitlines()]
    lines += [f"\\begin{{tabular}}{{{align}}}", r"\toprule", head + r" \\", r"\midrule", *body,
              r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def write(numeric: pd.DataFrame, display: pd.DataFrame, tables_dir: Path, name: str, caption: str,
          align: str, header: list[list[str]] | None = None) -> dict[str, Path]:
    """``name.csv`` (numeric), ``name.md`` (with ``caption``) and ``name.tex`` (the bare tabular)."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: tables_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    md = display.map(lambda c: c[0] if isinstance(c, tuple) else c)
    tables.write_text(paths["csv"], numeric.to_csv(index=False))
    tables.write_text(paths["md"], f"**{caption}**\n\n" + tables.to_markdown(md))
    tables.write_text(paths["tex"], tabular(display, align, caption, header))
    return paths


def split_level(level: str) -> tuple[str, str]:
    """``"lr_scale=0.5, noisy-labels.p=0.05"`` -> ``("lr_scale, noisy-labels.p", "0.5, 0.05")``."""
    parts = [p.partition("=") for p in level.split(", ")] if level else []
    return ", ".join(p[0] for p in parts), ", ".join(p[2] for p in parts)


# --------------------------------------------------------------------------------------
# A report's effects
# --------------------------------------------------------------------------------------
def effects_compact(e: pd.DataFrame, meta=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The numeric and display frames of ``tables/effects_compact``: per hack its verdict,
    ratio ON/OFF (or difference), adjusted 95% interval and seeds ON/OFF. With ``[axes]``
    (``meta``: the experiment's) one row per (hack, level), grouped by hack, the level as
    its values (the axes are named in the caption)."""
    scale = e["scale"].iloc[0]
    d = decimals(scale, e["ci_low"], e["ci_high"])
    hack_of = meta.hack_of if meta is not None else (lambda h: h)
    level_of = meta.level_of if meta is not None else (lambda h: "")
    e = e.assign(_hack=[hack_of(h) for h in e["hack"]], _level=[level_of(h) for h in e["hack"]])
    levels = bool(e["_level"].any())
    if levels:  # grouped by hack (first appearance), levels in the design's order
        order = {h: i for i, h in enumerate(dict.fromkeys(e["_hack"]))}
        e = e.iloc[sorted(range(len(e)), key=lambda i: order[e["_hack"].iloc[i]])]
    numeric = pd.DataFrame({
        "metric": e["metric"], "hack": e["_hack"], "level": e["_level"], "verdict": e["verdict"],
        "scale": e["scale"], "effect": [_value(s, x) for s, x in zip(e["scale"], e["estimate"])],
        "ci_low": [_value(s, x) for s, x in zip(e["scale"], e["ci_low"])],
        "ci_high": [_value(s, x) for s, x in zip(e["scale"], e["ci_high"])],
        "n_on": e["n_on"], "n_off": e["n_off"]})
    if not levels:
        numeric = numeric.drop(columns="level")
    shown = [h if i == 0 or h != prev else "" for i, (h, prev) in enumerate(zip(e["_hack"], [None, *e["_hack"]]))]
    display = pd.DataFrame({"hack": shown, **({"level": [split_level(x)[1] for x in e["_level"]]} if levels else {}),
                            "verdict": list(e["verdict"]),
                            "ratio" if scale == "log" else "Δ": [effect(s, x, d) for s, x in zip(e["scale"], e["estimate"])],
                            "95% CI (adj.)": [ci(s, lo, hi, d) for s, lo, hi in zip(e["scale"], e["ci_low"], e["ci_high"])],
                            "seeds": [f"{int(a)}/{int(b)}" for a, b in zip(e["n_on"], e["n_off"])]})
    return precision.round_frame(numeric.reset_index(drop=True)), display


def write_effects(e: pd.DataFrame, tables_dir: Path, what: str, meta=None) -> dict[str, Path]:
    """Write ``tables/effects_compact.{csv,md,tex}`` (``what``: the metric, for the caption)."""
    numeric, display = effects_compact(e, meta)
    log = e["scale"].iloc[0] == "log"
    axes = next((split_level(meta.level_of(h))[0] for h in e["hack"] if meta is not None and meta.level_of(h)), "")
    caption = (f"Hack verdicts on {what}: {'ratio ON/OFF' if log else 'Δ ON − OFF'} of the pooled model, "
               "its multiplicity-adjusted 95% CI (as in tables/effects) and seeds ON/OFF"
               + (f"; level: {axes}" if axes else ""))
    align = "ll" + ("l" if "level" in display.columns else "") + "rrc"
    return write(numeric, display, tables_dir, "effects_compact", caption, align)


# --------------------------------------------------------------------------------------
# ablate compare
# --------------------------------------------------------------------------------------
def summary_compact(by: pd.DataFrame, pooled: pd.DataFrame, metric: str, exps):
    """Per real hack one row; per experiment (and level) one column ``ratio [adjusted 95%
    CI] symbol``; then the pooled ratio [95% CI] (random effects, as SUMMARY.md's pooled
    column for the hack's own row: a level's rows are pooled only with the same level).
    Returns the numeric frame, the display frame and the LaTeX header rows (experiment,
    then the level's values where a column has a level)."""
    b = by[by["metric"] == metric]
    p = pooled[pooled["metric"] == metric]
    scale = b["scale"].iloc[0]
    d = decimals(scale, pd.concat([b["ci_low"], p["ci_low"]]), pd.concat([b["ci_high"], p["ci_high"]]))
    cells: dict[str, dict[str, tuple[str, str]]] = {}
    numeric, columns = [], {}
    for e in exps:
        for r in b[b["experiment"] == e.name].itertuples(index=False):
            hack, level = e.meta.hack_of(r.hack), e.meta.level_of(r.hack)
            col = f"{e.name} ({level})" if level else e.name
            columns[col] = (e.name, split_level(level)[1])
            text = f"{effect(r.scale, r.estimate, d)} {ci(r.scale, r.ci_low, r.ci_high, d)}"
            md, symbol = SYMBOLS.get(r.verdict, (r.verdict, tex(r.verdict)))
            cells.setdefault(hack, {})[col] = (f"{text} {md}", f"{tex(text)} {symbol}")
            numeric.append({"metric": metric, "hack": hack, "column": col, "verdict": r.verdict,
                            "effect": _value(r.scale, r.estimate), "ci_low": _value(r.scale, r.ci_low),
                            "ci_high": _value(r.scale, r.ci_high)})
    pooled_col = "pooled (RE)"
    rows = []
    for hack, row in cells.items():
        out = {"hack": hack, **{c: row.get(c, "–") for c in columns}}
        q = p[p["hack"] == hack]
        if len(q) and q.iloc[0]["k"] > 1:
            q = q.iloc[0]
            out[pooled_col] = f"{effect(q['scale'], q['estimate'], d)} {ci(q['scale'], q['ci_low'], q['ci_high'], d)}"
            numeric.append({"metric": metric, "hack": hack, "column": pooled_col, "verdict": "",
                            "effect": _value(q["scale"], q["estimate"]), "ci_low": _value(q["scale"], q["ci_low"]),
                            "ci_high": _value(q["scale"], q["ci_high"])})
        else:
            out[pooled_col] = "–"
        rows.append(out)
    header = [["hack", *(n for n, _ in columns.values()), "pooled"]]
    if any(v for _, v in columns.values()):
        header.append(["", *(v for _, v in columns.values()), ""])
    else:
        header[0][-1] = pooled_col
    return precision.round_frame(pd.DataFrame(numeric)), pd.DataFrame(rows), header


def write_summary(by: pd.DataFrame, pooled: pd.DataFrame, metric: str, exps, tables_dir: Path, name: str,
                  what: str) -> dict[str, Path]:
    """Write ``summary/tables/<name>.{csv,md,tex}`` for one primary metric (``what``: its label)."""
    numeric, display, header = summary_compact(by, pooled, metric, exps)
    axes = sorted({split_level(e.meta.level_of(h))[0] for e in exps for h in e.effects["hack"]} - {""})
    caption = (f"{what}: per experiment{' (and level: ' + '; '.join(axes) + ')' if axes else ''} "
               f"ratio ON/OFF [multiplicity-adjusted 95% CI] and verdict ({LEGEND}); pooled (RE): random-effects "
               "(DerSimonian-Laird) ratio [ordinary 95% CI] over independent seed groups (experiments sharing "
               "seeds on one dataset averaged first), – where the hack is in one seed group")
    return write(numeric, display, tables_dir, name, caption, "l" + "r" * (len(display.columns) - 1), header)
