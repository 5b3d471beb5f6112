"""``ablate compare``: one summary over several experiments' committed results.

:func:`write_summary` ``(results_dirs, out_dir) -> Path`` reads, per results directory,
``experiment.json`` (through :func:`~ablate.report.results.parse_meta`) and the effects
table ``ablate report`` wrote (``tables/effects.csv``: one row per hack with the pooled
model's contrast ``estimate`` on the log scale, its unadjusted standard error ``se`` and
the multiplicity-adjusted interval ``ci_low``/``ci_high``) and writes

* ``OUT/SUMMARY.md``: the experiments, and per primary metric one table with each hack's
  verdict and ratio [adjusted interval] in each experiment beside the pooled ratio;
* ``OUT/summary/tables/{experiments,by_experiment,pooled}.{csv,md,tex}`` and, per primary
  metric, ``compact_<metric>.{csv,md,tex}`` (:mod:`ablate.report.latex`: fixed decimals);
* ``OUT/summary/figures/forest_<metric>.{png,pdf}``: one panel per hack.

Pooling: per hack and primary metric, a random-effects meta-analysis of the experiments'
log ratios with variance ``se**2``, by ``statsmodels.stats.meta_analysis.combine_effects``
(DerSimonian–Laird, ``method_re="dl"``), with the usual truncation of τ² at 0 (statsmodels
returns the untruncated moment estimate; where it is negative the random-effects result is
the fixed-effect one, which it also computes). The pooled interval is an ordinary 95%
normal interval (estimate ± 1.96·SE): not Holm-adjusted across hacks and not a repeated
confidence interval. Experiments with different primary metrics (another metric or feature
network) are never pooled together; a hack in one experiment is listed, not pooled.

Independence: a seed fixes a run's initial weights, data order and latent draws whatever the
experiment, so experiments on the same dataset with seeds in common observe the same
trajectories (at another budget, precision or design, or as the very same runs through
``reuse``) and their errors are correlated. :func:`seed_groups` joins such experiments into one
group; per hack, a group's experiments are first averaged into one composite (mean log ratio,
mean SE: the variance of a mean of correlated estimates at correlation 1, the conservative
bound of Borenstein et al. 2009, *Introduction to Meta-Analysis*, ch. 24), and the pooling is
over the groups' composites. A hack measured in one group is listed, not pooled.

The numbers pass through :mod:`ablate.report.precision` before any file is written, and the
figures carry no dates, so regenerating from the same results gives the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.errors import ConfigError
from ablate import layout
from ablate.layout import EXPERIMENT_JSON, ExperimentDir
from ablate.report import latex, precision, tables
from ablate.report.columns import label, lower_is_better
from ablate.report.publish import Stage, reading, staged
from ablate.report.results import ExperimentMeta, parse_meta

__all__ = ["Experiment", "composite", "load_experiment", "pool", "seed_groups", "write_summary"]

SUMMARY_MD = layout.SUMMARY_MD
SUMMARY_DIR = layout.SUMMARY_DIR
EFFECTS_CSV = Path(layout.TABLES) / layout.EFFECTS_CSV  # relative to a results directory
Z = 1.959963984540054  # the 97.5% normal quantile
METHOD = ("DerSimonian-Laird (statsmodels combine_effects, method_re='dl', tau2 truncated at 0) over "
          "independent seed groups, each a composite of its experiments at correlation 1")
NEEDED = ("metric", "hack", "on", "off", "scale", "verdict", "n_on", "n_off", "estimate", "se",
          "ci_low", "ci_high")


@dataclass(frozen=True)
class Experiment:
    """One experiment's results as the summary reads them."""

    name: str
    path: Path
    meta: ExperimentMeta
    effects: pd.DataFrame


def load_experiment(path: Path | str) -> Experiment:
    """``experiment.json`` and ``tables/effects.csv`` of one results directory, read under
    its report lock (a report being published there is not read half swapped)."""
    with reading(path):
        return _load_experiment(Path(path))


def _load_experiment(path: Path) -> Experiment:
    ej = ExperimentDir(path).experiment_json
    if not ej.is_file():
        raise ConfigError(f"{path} is not an experiment's results directory (no {EXPERIMENT_JSON}); "
                          "pass folders written by `ablate grid`, e.g. results/default")
    try:
        meta = parse_meta(json.loads(ej.read_text()), str(ej))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ej} is unreadable: {exc}") from exc
    if _interim(ExperimentDir(path).report):
        raise ConfigError(f"{path}'s report is interim (written before its look finished): its verdicts "
                          f"are provisional; finish its grid (rerun `ablate grid` on its experiment file, "
                          f"which rewrites the report) or leave {path} out")
    eff = ExperimentDir(path).effects_csv
    if not eff.is_file() and meta.evaluation.get("features") == []:
        raise ConfigError(f"{path} scores nothing ([evaluation] features = [] in its experiment), so "
                          "it has no effects to compare; leave it out, or score its runs: set "
                          "features = [\"classifier\"] and rerun `ablate grid` on its experiment file")
    if not eff.is_file():
        raise ConfigError(f"{path} has no report yet ({EFFECTS_CSV} missing): run `ablate report {path}` "
                          "once its grid is finished")
    try:
        raw = eff.read_bytes()
        effects = pd.read_csv(io.BytesIO(raw))
        torn = not raw.endswith(b"\n")  # the report writes whole lines
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and pandas' ParserError included
        raise ConfigError(f"{eff} is unreadable ({type(exc).__name__}): rerun `ablate report {path}`") from exc
    missing = [c for c in NEEDED if c not in effects.columns]
    if missing:
        raise ConfigError(f"{eff} lacks column(s) {missing}: rerun `ablate report {path}`")
    blank = [c for c in ("metric", "hack", "on", "off", "scale", "verdict", "n_on", "n_off")
             if effects[c].isna().any()]  # never empty in a whole row
    if torn or blank:
        raise ConfigError(f"{eff} is truncated ({'its last line is cut' if torn else f'empty {blank}'}): "
                          f"rerun `ablate report {path}`")
    bad = [c for c in ("estimate", "se", "n_on", "n_off") if c in effects.columns
           and pd.to_numeric(effects[c], errors="coerce").isna().ne(effects[c].isna()).any()]
    if bad:
        raise ConfigError(f"{eff} has non-numeric values in column(s) {bad}: rerun `ablate report {path}`")
    return Experiment(meta.name, path, meta, effects)


# The summary line a report written mid-look starts with (ablate.report.markdown): such a
# report's verdicts are provisional, so no summary pools them.
INTERIM_MARK = "**Interim report:"


def _interim(report: Path) -> bool:
    """Whether REPORT.md is one written mid-look (it carries :data:`INTERIM_MARK`)."""
    try:
        with open(report, encoding="utf-8", errors="replace") as f:
            head = f.read(8192)  # the mark is in the summary, at the top
    except OSError:
        return False
    return INTERIM_MARK in head


def pool(estimates, ses) -> dict:
    """Random-effects (DerSimonian–Laird) pooled estimate of ``estimates`` with standard
    errors ``ses``: estimate, se, 95% normal interval, τ², I², Cochran's Q and its df."""
    from scipy import stats as sps
    from statsmodels.stats.meta_analysis import combine_effects

    eff = np.asarray(estimates, dtype=float)
    var = np.asarray(ses, dtype=float) ** 2
    with warnings.catch_warnings():  # its HKSJ scale (unused here) takes sqrt of a negative
        warnings.simplefilter("ignore", RuntimeWarning)
        res = combine_effects(eff, var, method_re="dl")
    tau2 = float(res.tau2)
    if tau2 > 0:
        est, se = float(res.mean_effect_re), float(res.sd_eff_w_re)
    else:  # truncated at 0: the random-effects model is the fixed-effect one
        tau2, est, se = 0.0, float(res.mean_effect_fe), float(res.sd_eff_w_fe)
    q, df = float(res.q), int(len(eff) - 1)
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return {"k": len(eff), "estimate": est, "se": se, "ci_low": est - Z * se, "ci_high": est + Z * se,
            "tau2": tau2, "i2": i2, "q": q, "q_df": df, "q_p": float(sps.chi2.sf(q, df)) if df else np.nan}


def seed_groups(exps: list[Experiment]) -> dict[str, str]:
    """Each experiment's seed group: experiments on the same dataset that share a seed are
    joined (transitively). The label names the dataset and the group's seeds."""
    parent = {e.name: e.name for e in exps}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for i, a in enumerate(exps):
        for b in exps[i + 1:]:
            if a.meta.dataset == b.meta.dataset and set(a.meta.seeds) & set(b.meta.seeds):
                parent[root(b.name)] = root(a.name)
    members: dict[str, list[Experiment]] = {}
    for e in exps:
        members.setdefault(root(e.name), []).append(e)
    labels = {}
    for group in members.values():
        seeds = sorted({s for e in group for s in e.meta.seeds})
        text = (f"{seeds[0]}–{seeds[-1]}" if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1))
                else ",".join(map(str, seeds)))
        label_ = f"{group[0].meta.dataset}, seed{'s' if len(seeds) > 1 else ''} {text}"
        if sum(1 for g in members.values() if g[0].meta.dataset == group[0].meta.dataset) > 1:
            label_ += f" ({group[0].name}…)"  # two groups of one dataset: disjoint seeds
        for e in group:
            labels[e.name] = label_
    return labels


def composite(estimates, ses) -> tuple[float, float]:
    """One estimate from several of the same effect whose errors are correlated (experiments
    sharing seeds): their mean, with the mean standard error — the standard error of a mean
    at correlation 1, an upper bound whatever the real correlation (Borenstein et al. 2009,
    ch. 24)."""
    return float(np.mean(np.asarray(estimates, float))), float(np.mean(np.asarray(ses, float)))


# --------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------
def _width(train: dict) -> str:
    g, d = train.get("ngf"), train.get("ndf")
    return "–" if g is None and d is None else str(g) if g == d else f"G {g} / D {d}"


def _level(meta: ExperimentMeta, hack: str, doc_params: dict, axes_level: str = "") -> str:
    """The hack's parameters (``hack`` the real hack of a row ``<hack> @ <level>``), and the
    level of the experiment's ``[axes]`` the row was measured at."""
    p = doc_params.get(hack) or {}
    text = ", ".join(f"{k}={v}" for k, v in sorted(p.items())) if isinstance(p, dict) else str(p)
    return "; ".join(x for x in (text, f"at {axes_level}" if axes_level else "") if x)


def experiments_frame(exps: list[Experiment]) -> pd.DataFrame:
    rows = []
    groups = seed_groups(exps)
    for e in exps:
        m = e.meta
        metrics = sorted(set(e.effects["metric"]))
        rows.append({
            "experiment": e.name, "dataset": m.dataset, "steps": m.train.get("steps"),
            "width": _width(m.train), "design": m.design_kind,
            "seeds": f"{m.seed_policy.min}..{m.seed_policy.max} (adaptive)" if m.seed_policy.adaptive
            else str(len(m.seeds)),
            "primary_metric": ", ".join(metrics), "sesoi": m.analysis.sesoi, "alpha": m.analysis.alpha,
            "hacks": len(e.effects), "seed_group": groups[e.name]})
    return pd.DataFrame(rows)


def by_experiment_frame(exps: list[Experiment]) -> pd.DataFrame:
    rows = []
    groups = seed_groups(exps)
    for e in exps:
        params = json.loads(ExperimentDir(e.path).experiment_json.read_text()).get("experiment", {}).get("params") or {}
        for r in e.effects.itertuples(index=False):
            est, se = float(r.estimate), float(r.se)
            rows.append({
                "metric": r.metric, "hack": r.hack, "experiment": e.name, "dataset": e.meta.dataset,
                "steps": e.meta.train.get("steps"), "width": _width(e.meta.train),
                "design": e.meta.design_kind, "contrast": f"{r.on} vs {r.off}",
                "seeds": f"{int(r.n_on)}/{int(r.n_off)}",
                "level": _level(e.meta, e.meta.hack_of(r.hack), params, e.meta.level_of(r.hack)),
                "scale": r.scale, "verdict": r.verdict, "estimate": est, "se": se,
                "ci_low": float(r.ci_low), "ci_high": float(r.ci_high),
                "z_low": est - Z * se, "z_high": est + Z * se, "seed_group": groups[e.name]})
    return pd.DataFrame(rows)


def pooled_frame(by: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, hack): the experiments with a finite estimate and a positive SE, their seed
    groups (``groups``: ``;`` between groups, ``+`` within one), and the DerSimonian–Laird pool
    of the groups' composites where there are two or more (``k``: the groups pooled). Without a
    ``seed_group`` column each experiment is its own group."""
    rows = []
    for (metric, hack), g in by.groupby(["metric", "hack"], sort=False):
        g = g[np.isfinite(g["estimate"]) & np.isfinite(g["se"]) & (g["se"] > 0)]
        key = g["seed_group"] if "seed_group" in g.columns else g["experiment"]
        parts = [(list(m["experiment"]), *composite(m["estimate"], m["se"]))
                 for _, m in g.groupby(key, sort=False)]
        row = {"metric": metric, "hack": hack, "scale": by.loc[by["metric"] == metric, "scale"].iloc[0],
               "experiments": ";".join(g["experiment"]), "groups": ";".join("+".join(n) for n, *_ in parts),
               "method": METHOD if len(parts) > 1 else "not pooled"}
        stats = pool([e for _, e, _ in parts], [s for *_, s in parts]) if len(parts) > 1 else {"k": len(parts)}
        for k in ("k", "estimate", "se", "ci_low", "ci_high", "tau2", "i2", "q", "q_df", "q_p"):
            row[k] = stats.get(k, np.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["k"] = out["k"].astype(int)
    return out


def _not_pooled(p) -> str:
    """Why a hack's row has no pooled ratio: one experiment, or one group of them sharing seeds."""
    return "one experiment: not pooled" if ";" not in p.experiments else "one seed group: not pooled"


# --------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------
def _ratio(scale: str, x) -> str:
    return tables._effect_text(scale, float(x)) if np.isfinite(x) else "–"


def _ci(scale: str, lo, hi) -> str:
    return tables._interval_text(scale, float(lo), float(hi))


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", metric).strip("-")


OPPOSED = "†"  # marks a pooled ratio whose seed group holds both a "helps" and a "hurts"
OPPOSED_NOTE = (f"{OPPOSED} In one seed group the hack helps in one experiment and hurts in another (another "
                "budget or setting): the group's composite averages opposite effects, and τ² and I² do not "
                "see it. Cite the experiment that matches your question, not the pooled ratio.")


def opposed(b: pd.DataFrame, p) -> bool:
    """Whether a seed group of pooled row ``p`` (``groups``: ``;`` between groups, ``+``
    within) has verdicts ``helps`` and ``hurts`` for the hack among its experiments."""
    for group in str(p.groups).split(";"):
        verdicts = set(b.loc[(b["hack"] == p.hack) & b["experiment"].isin(group.split("+")), "verdict"])
        if {"helps", "hurts"} <= verdicts:
            return True
    return False


def main_table(by: pd.DataFrame, pooled: pd.DataFrame, metric: str, names: list[str]) -> pd.DataFrame:
    """One row per hack: each experiment's verdict, ratio and adjusted interval, then the pooled
    ratio, its 95% interval and the heterogeneity."""
    rows = []
    b = by[by["metric"] == metric]
    for p in pooled[pooled["metric"] == metric].itertuples(index=False):
        row = {"hack": p.hack}
        for n in names:
            r = b[(b["hack"] == p.hack) & (b["experiment"] == n)]
            if r.empty:
                row[n] = "–"
            else:
                r = r.iloc[0]
                row[n] = f"{r['verdict']} {_ratio(r['scale'], r['estimate'])} {_ci(r['scale'], r['ci_low'], r['ci_high'])}"
        if p.k > 1:
            mark = f" {OPPOSED}" if "groups" in pooled.columns and opposed(b, p) else ""
            row["pooled (random effects)"] = f"{_ratio(p.scale, p.estimate)} {_ci(p.scale, p.ci_low, p.ci_high)}{mark}"
            row["τ²"], row["I²"] = tables.num(p.tau2), f"{100 * p.i2:.0f}%"
        else:
            row["pooled (random effects)"], row["τ²"], row["I²"] = _not_pooled(p), "–", "–"
        rows.append(row)
    return pd.DataFrame(rows)


def experiments_display(x: pd.DataFrame) -> pd.DataFrame:
    d = x.copy()
    d["primary_metric"] = [label(m) for m in d["primary_metric"]]
    d["sesoi"] = [f"±{s:.0%}" for s in d["sesoi"]]
    return d


def by_experiment_display(by: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in by.iterrows():
        rows.append({"metric": label(r["metric"]), "hack": r["hack"], "experiment": r["experiment"],
                     "dataset": r["dataset"], "steps": r["steps"], "width": r["width"], "design": r["design"],
                     "contrast": r["contrast"], "seeds ON/OFF": r["seeds"], "level": r["level"] or "–",
                     "verdict": r["verdict"], "ratio ON/OFF": _ratio(r["scale"], r["estimate"]),
                     "adjusted 95% CI": _ci(r["scale"], r["ci_low"], r["ci_high"]),
                     "unadjusted 95% CI (pooled)": _ci(r["scale"], r["z_low"], r["z_high"]),
                     "seed group": r["seed_group"]})
    return pd.DataFrame(rows)


def pooled_display(p: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in p.iterrows():
        one = r["k"] < 2
        rows.append({"metric": label(r["metric"]), "hack": r["hack"],
                     "experiments": len(str(r["experiments"]).split(";")) if r["experiments"] else 0,
                     "seed groups pooled": r["k"] if not one else "–",
                     "pooled ratio": "–" if one else _ratio(r["scale"], r["estimate"]),
                     "95% CI": "–" if one else _ci(r["scale"], r["ci_low"], r["ci_high"]),
                     "τ²": "–" if one else tables.num(r["tau2"]),
                     "I²": "–" if one else f"{100 * r['i2']:.0f}%",
                     "Q (df)": "–" if one else f"{tables.num(r['q'])} ({int(r['q_df'])})",
                     "p (Q)": "–" if one else tables.pval(r["q_p"])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------
def forest_panels(by: pd.DataFrame, pooled: pd.DataFrame, metric: str, names: list[str],
                  figures_dir: Path, name: str) -> Path:
    """One panel per hack: each experiment's ratio with its unadjusted 95% interval (the one
    the pooling uses), coloured by its verdict, and the pooled ratio as a diamond."""
    from ablate.report import figures

    hacks = list(pooled.loc[pooled["metric"] == metric, "hack"])
    b = by[by["metric"] == metric]
    log = bool((b["scale"] == "log").all())
    f = np.exp if log else (lambda v: v)
    ncols = min(3, len(hacks))
    nrows = math.ceil(len(hacks) / ncols)
    rows_per = len(names) + 1
    fig = figures._figure(4.2 * ncols, nrows * (0.28 * rows_per + 0.9) + 0.8)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
    y_labels = names + ["pooled"]
    for i, ax in enumerate(axes.ravel()):
        if i >= len(hacks):
            ax.set_visible(False)
            continue
        hack = hacks[i]
        ax.axvline(1.0 if log else 0.0, color="k", lw=0.8)
        for j, n in enumerate(names):
            r = b[(b["hack"] == hack) & (b["experiment"] == n)]
            if r.empty:
                continue
            r = r.iloc[0]
            c = figures._colour(r["verdict"])
            ax.plot([f(r["z_low"]), f(r["z_high"])], [j, j], color=c, lw=2, alpha=0.7)
            ax.plot(f(r["estimate"]), j, "o", color=c, ms=4)
        p = pooled[(pooled["metric"] == metric) & (pooled["hack"] == hack)].iloc[0]
        if p["k"] > 1:
            j = len(names)
            lo, est, hi = f(p["ci_low"]), f(p["estimate"]), f(p["ci_high"])
            ax.fill([lo, est, hi, est], [j, j - 0.3, j, j + 0.3], color="k")
        ax.set_yticks(range(rows_per), y_labels, fontsize=7)
        ax.set_ylim(rows_per - 0.5, -0.5)
        title = hack if p["k"] > 1 else f"{hack} (not pooled)"
        ax.set_title(title + (f"  I²={100 * p['i2']:.0f}%" if p["k"] > 1 else ""), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    if log:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

        for ax in axes.ravel():  # one log axis for all panels, ticks at powers of 2
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator([0.125, 0.25, 0.5, 1, 2, 4, 8]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
    better = "lower" if lower_is_better(metric) else "higher"
    fig.supxlabel(f"{'ratio ON/OFF of ' if log else 'Δ '}{label(metric)} ({better} is better); each experiment "
                  "with its unadjusted 95% interval (colour: its verdict), pooled random effects (DL, over seed groups) as a diamond",
                  fontsize=8)
    return figures.save(fig, figures_dir, name)


# --------------------------------------------------------------------------------------
# SUMMARY.md
# --------------------------------------------------------------------------------------
def render(exps: list[Experiment], xs: pd.DataFrame, by: pd.DataFrame, pooled: pd.DataFrame,
           figs: dict[str, Path], out_dir: Path | Stage, compact: dict[str, dict[str, Path]] | None = None) -> str:
    """SUMMARY.md's text; links are relative to ``out_dir`` (or where a :class:`Stage` publishes)."""
    stage = Stage.at(out_dir)
    _link = stage.link
    names = [e.name for e in exps]
    lines = ["# Summary across experiments", ""]
    lines.append("Written by `ablate compare` from each experiment's committed report (`experiment.json` and "
                "`tables/effects.csv`), nothing recomputed from the runs. Per hack: its verdict, ratio ON/OFF and "
                "multiplicity-adjusted 95% interval in each experiment (as in that experiment's REPORT.md), and "
                "a random-effects pooled ratio (DerSimonian–Laird on the log ratios, each weighted by the "
                "unadjusted standard error of its pooled-model contrast) with an ordinary 95% interval — "
                "not Holm-adjusted across hacks, not a repeated confidence interval — and the heterogeneity "
                "τ² (between-group variance of the log ratio) and I². What is pooled are independent "
                "**seed groups**, not experiments: a seed fixes a run's initial weights, data order and latent "
                "draws in every experiment, so experiments on the same dataset with seeds in common observe "
                "the same training trajectories (at another budget, precision or design, or as the same runs "
                "copied by `reuse`) and their errors are correlated. A group's experiments are first averaged "
                "into one composite (mean log ratio, mean standard error: the correlation-1 bound of Borenstein "
                "et al. 2009, ch. 24, conservative whatever the real correlation).")
    lines += ["", "## Experiments", ""]
    xd = experiments_display(xs)
    xd["experiment"] = [f"[{n}]({_link(ExperimentDir(e.path).report)})" for n, e in zip(xd["experiment"], exps)]
    lines += [tables.to_markdown(xd), ""]
    metrics = list(dict.fromkeys(by["metric"]))
    if len(metrics) > 1:
        lines += [f"The experiments have {len(metrics)} different primary metrics ("
                  + ", ".join(label(m) for m in metrics) + "): their effects are not comparable and are "
                  "pooled only within a metric, in separate sections below.", ""]
    for metric in metrics:
        used = [n for n in names if ((by["metric"] == metric) & (by["experiment"] == n)).any()]
        p = pooled[pooled["metric"] == metric]
        n_pooled = int((p["k"] > 1).sum())
        b = by[by["metric"] == metric]
        groups = {}
        for n, grp in zip(b["experiment"], b["seed_group"]):
            groups.setdefault(grp, []).append(n)
        lines += [f"## {label(metric)}", "",
                  f"Experiments: {', '.join(used)}. Seed groups: "
                  + "; ".join(f"{grp} ({', '.join(dict.fromkeys(ns))})" for grp, ns in groups.items())
                  + f". {n_pooled} of {len(p)} hacks are measured in two or more seed groups and pooled; the "
                  "others are listed, not pooled. Cells: verdict ×ratio [adjusted 95% CI].", ""]
        table = main_table(by, pooled, metric, used)
        lines += [tables.to_markdown(table), ""]
        if table["pooled (random effects)"].str.endswith(OPPOSED).any():
            lines += [OPPOSED_NOTE, ""]
        if metric in figs:
            lines += [f"![forest plot]({_link(figs[metric])})", ""]
        if metric in (compact or {}):
            lines += ["Compact table for a paper (fixed decimals; cells ratio [interval] and the verdict as "
                      f"{latex.LEGEND}): " + ", ".join(f"[{k.upper()}]({_link(v)})"
                                                       for k, v in compact[metric].items()) + ".", ""]
    lines += ["## Caveats", "",
              "* The experiments differ in dataset, budget, design and reference (leave-one-out contrasts are "
              "all-on vs all-on minus the hack; add-one-in ones are the hack alone vs all-off): a pooled ratio "
              "averages over those settings, and a large I² says the effect depends on them.",
              "* Within a seed group the composite averages the group's settings (budgets, precisions) at the "
              "largest possible correlation: how the effect differs between them shows in the experiments' "
              "columns, not in τ² or I², which measure only the differences between groups.",
              "* With two or three seed groups per hack τ² is poorly estimated; the DerSimonian–Laird interval "
              "ignores that uncertainty and is optimistic.",
              "* An adaptive experiment's standard error is its final look's, treated as fixed-sample.",
              "", "Tables: " + ", ".join(f"[`{n}`]({SUMMARY_DIR}/tables/{n}.md)" for n in ("experiments", "by_experiment", "pooled"))
              + " (CSV and LaTeX beside them).", ""]
    return "\n".join(lines)


def write_summary(results_dirs: list[Path | str], out_dir: Path | str) -> Path:
    """Read the experiments and write SUMMARY.md, summary/tables/ and summary/figures/."""
    if not results_dirs:
        raise ConfigError("ablate compare needs at least one results directory")
    exps = sorted((load_experiment(d) for d in results_dirs), key=lambda e: e.name)
    seen = [e.name for e in exps]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise ConfigError(f"experiment(s) {dup} given more than once")
    out_dir = Path(out_dir)
    xs = experiments_frame(exps)
    by = precision.round_frame(by_experiment_frame(exps))
    if by.empty:
        raise ConfigError("the effects tables of " + ", ".join(seen) + " are empty: nothing to compare")
    pooled = precision.round_frame(pooled_frame(by))
    # Built in a staging folder and swapped in whole, as a report is (ablate.report.publish).
    with staged(out_dir, (SUMMARY_MD, SUMMARY_DIR)) as stage:
        _write(exps, xs, by, pooled, stage)
    return out_dir / SUMMARY_MD


def _write(exps: list[Experiment], xs: pd.DataFrame, by: pd.DataFrame, pooled: pd.DataFrame, stage: Stage) -> None:
    seen = [e.name for e in exps]
    sdir = stage.path / SUMMARY_DIR
    tdir, fdir = sdir / layout.TABLES, sdir / layout.FIGURES
    tables.write_table(xs, experiments_display(xs), tdir, "experiments", "The experiments compared")
    tables.write_table(by, by_experiment_display(by), tdir, "by_experiment",
                       "Each hack in each experiment: verdict, ratio ON/OFF, adjusted 95% CI (as in its report) "
                       "and the unadjusted 95% CI (estimate ± 1.96 SE) that the pooling uses")
    tables.write_table(pooled, pooled_display(pooled), tdir, "pooled",
                       "Random-effects pooled ratio per hack over independent seed groups (each the composite of "
                       "its experiments at correlation 1; DerSimonian–Laird on log ratios; ordinary 95% CI, "
                       "not Holm-adjusted), τ², I² and Cochran's Q between the groups")
    figs, compact = {}, {}
    for metric in dict.fromkeys(by["metric"]):
        used = [n for n in seen if ((by["metric"] == metric) & (by["experiment"] == n)).any()]
        figs[metric] = forest_panels(by, pooled, metric, used, fdir, f"forest_{_slug(metric)}")
        compact[metric] = latex.write_summary(by, pooled, metric, [e for e in exps if e.name in used], tdir,
                                              f"compact_{_slug(metric)}", label(metric))
    tables.write_text(stage.path / SUMMARY_MD, render(exps, xs, by, pooled, figs, stage, compact))
