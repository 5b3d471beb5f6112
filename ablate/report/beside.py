"""REPORT.md's *Beside another budget* section: this experiment's verdicts next to those of
the experiments its file names in ``[report] beside`` (e.g. the same design at 1,000 steps
beside 20,000), ``tables/beside_<name>.{csv,md,tex}``.

Where the list comes from: the ``[report]`` table of the experiment file that
``experiment.json`` records as ``experiment.source`` (:func:`ablate.experiment.spec.load_report_spec`),
read at report time. So it is in no run key, it changes no ``experiment.json``, and a grid
started before the table existed still gets the section when its report is regenerated.
The file and the paths in it are looked up from the working directory and, failing that,
from the folder the grid ran in (the results directory minus its recorded ``results_dir``,
i.e. the repository root for ``results/<name>``); an experiment whose file is not found
has no section. A listed directory that is missing, has no report, or measures another
dataset or primary metric (another feature network or checkpoint) is a ConfigError naming
it and the fix.

The other experiments' verdicts and intervals are read from their reports through
:func:`ablate.report.compare.load_experiment` and :func:`~ablate.report.compare.by_experiment_frame`,
never recomputed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ablate.errors import ConfigError
from ablate.experiment.spec import load_report_spec
from ablate.layout import ExperimentDir
from ablate.report import compare, precision, tables
from ablate.report.columns import label, primary_metric
from ablate.report.results import Results

__all__ = ["references", "frame", "display", "write", "section"]

UNDECIDED = "undecided"


def _bases(results: Results) -> list[Path]:
    """Where relative paths of the experiment file are looked up: the working directory,
    then the folder the grid ran in (``results_dir`` minus its recorded relative path)."""
    out = [Path.cwd()]
    try:
        recorded = Path(str(ExperimentDir(results.results_dir).read_experiment().experiment.get("results_dir") or ""))
    except (OSError, ValueError, ConfigError):
        return out
    here = Path(results.results_dir).resolve()
    parts = recorded.parts
    if parts and not recorded.is_absolute() and here.parts[-len(parts):] == parts:
        out.append(Path(*here.parts[:-len(parts)]))
    return out


def references(results: Results) -> list[compare.Experiment]:
    """The experiments ``[report] beside`` names, loaded and checked comparable (ConfigError
    otherwise); none when the experiment file is not recorded or not found."""
    source = results.meta.source
    if not source:
        return []
    base = next((b for b in _bases(results) if (b / source).is_file()), None)
    if base is None:
        return []
    toml = base / source
    spec = load_report_spec(toml)
    mine = primary_metric(results.frame, results.meta.analysis.metric)
    out = []
    for entry in spec.beside:
        path = base / entry
        where = f"{toml}: [report].beside entry {entry!r}"
        fix = "fix the path (relative to the folder ablate runs in, like results_dir) or remove the entry"
        if not path.is_dir():
            raise ConfigError(f"{where}: {path} is not a directory; {fix}")
        if path.resolve() == Path(results.results_dir).resolve():
            raise ConfigError(f"{where} is this experiment's own results directory; {fix}")
        if not ExperimentDir(path).report.is_file():
            raise ConfigError(f"{where}: {path} has no REPORT.md: run `ablate report {path}` first, or {fix}")
        try:
            other = compare.load_experiment(path)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}; or {fix}") from exc
        theirs = sorted(set(other.effects["metric"]))
        if other.meta.dataset != results.meta.dataset:
            raise ConfigError(f"{where}: not comparable: {other.name} is on {other.meta.dataset}, this "
                              f"experiment on {results.meta.dataset}; {fix}")
        if mine is not None and theirs != [mine]:
            raise ConfigError(
                f"{where}: not comparable: {other.name}'s verdicts are on "
                f"{', '.join(label(m) for m in theirs) or 'no metric'} and this experiment's on {label(mine)} "
                "(another metric, feature network or checkpoint: ratios of different metrics say different "
                f"things); set the same [analysis] metric in both, or {fix}")
        out.append(other)
    return out


def _steps(e: compare.Experiment) -> str:
    s = e.meta.train.get("steps")
    return f"{s:,}" if isinstance(s, int) else "?"


def _names(ctx, other: compare.Experiment) -> tuple[str, str]:
    """Column labels: the budgets (``1,000 steps``) where they differ, else the names."""
    mine = ctx.meta.train.get("steps")
    if mine != other.meta.train.get("steps") and isinstance(mine, int):
        return f"{_steps(other)} steps", f"{mine:,} steps"
    return other.name, ctx.meta.name


def _closed(seeds, cap: int) -> bool:
    """A contrast (``"n_on/n_off"``) whose both variants have every seed the design gives."""
    try:
        return min(int(n) for n in str(seeds).split("/")) >= cap
    except ValueError:
        return False


def _change(a: str | None, b: str | None, closed: bool = False) -> str:
    """``closed``: the undecided side is at its design's last look, so it stays undecided."""
    if a is None or b is None:
        return "–"
    if UNDECIDED in (a, b):
        return "no" if a == b else ("no verdict" if closed else "not yet")
    return "yes" if a != b else "no"


def frame(ctx, other: compare.Experiment) -> pd.DataFrame:
    """One row per hack (this experiment's order, then the other's): each side's verdict,
    log ratio and adjusted interval, and whether the verdict changed (``yes``, ``no``,
    ``not yet``: undecided on one side whose design may add seeds, ``no verdict``: undecided on
    one side at its design's last look, so never comparable, ``–``: measured on one side only)."""
    sides = [compare.Experiment(side, e.path, e.meta, e.effects) for side, e in (  # names may be equal
        ("other", other), ("this", compare.Experiment(ctx.meta.name, Path(ctx.results.results_dir), ctx.meta,
                                                      ctx.effects)))]
    by = compare.by_experiment_frame(sides)
    cols = ["verdict", "scale", "estimate", "ci_low", "ci_high", "seeds"]
    a, b = (by[by["experiment"] == side].set_index("hack")[cols] for side in ("other", "this"))
    rows = []
    for hack in dict.fromkeys([*b.index, *a.index]):
        row = {"hack": hack}
        for side, t in (("other", a), ("this", b)):
            r = t.loc[hack] if hack in t.index else None
            for c in cols:
                row[f"{side}_{c}"] = None if r is None else r[c]
        caps = {"other": other.meta.seed_policy.looks()[-1], "this": ctx.meta.seed_policy.looks()[-1]}
        closed = any(row[f"{side}_verdict"] == UNDECIDED and _closed(row[f"{side}_seeds"], caps[side])
                     for side in caps)
        row["changed"] = _change(row["other_verdict"], row["this_verdict"], closed)
        rows.append(row)
    return precision.round_frame(pd.DataFrame(rows))


def _cell(r, side: str) -> tuple[str, str]:
    if r[f"{side}_verdict"] is None or pd.isna(r[f"{side}_verdict"]):
        return "–", "–"
    scale = r[f"{side}_scale"]
    return r[f"{side}_verdict"], (f"{tables._effect_text(scale, float(r[f'{side}_estimate']))} "
                                  f"{tables._interval_text(scale, float(r[f'{side}_ci_low']), float(r[f'{side}_ci_high']))}")


def display(f: pd.DataFrame, names: tuple[str, str]) -> pd.DataFrame:
    """:func:`frame` for Markdown/LaTeX: verdict and ``×ratio [interval]`` per side, ``names`` the labels."""
    rows = []
    for _, r in f.iterrows():
        (va, ra), (vb, rb) = _cell(r, "other"), _cell(r, "this")
        rows.append({"hack": r["hack"], f"verdict, {names[0]}": va, f"ratio [adj. 95% CI], {names[0]}": ra,
                     f"verdict, {names[1]}": vb, f"ratio [adj. 95% CI], {names[1]}": rb,
                     "verdict changed": r["changed"]})
    return pd.DataFrame(rows)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


def write(ctx, others: list[compare.Experiment], tables_dir: Path) -> None:
    """Write ``tables/beside_<name>`` per reference experiment; remember them on ``ctx``."""
    ctx.beside = others
    if ctx.effects.empty:
        return
    for other in others:
        f = frame(ctx, other)
        names = _names(ctx, other)
        ctx.tables[f"beside:{other.name}"] = tables.write_table(
            f, display(f, names), tables_dir, f"beside_{_slug(other.name)}",
            f"Verdicts and ratios ON/OFF [multiplicity-adjusted 95% CI] of {other.name} ({names[0]}) beside "
            f"{ctx.meta.name} ({names[1]}), each from its own report")


def _differences(ctx, other: compare.Experiment) -> list[str]:
    """``key: theirs → ours`` for every protocol setting the two experiments set differently."""
    out = []
    for part, a, b in (("budget", other.meta.train, ctx.meta.train),
                       ("evaluation", other.meta.evaluation, ctx.meta.evaluation)):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k) and not (part == "evaluation" and k in other.meta.train):  # once
                out.append(f"{part} `{k}`: {a.get(k, '–')} → {b.get(k, '–')}")
    pa, pb = other.meta.seed_policy, ctx.meta.seed_policy
    if (pa.adaptive, pa.min, pa.max) != (pb.adaptive, pb.min, pb.max):
        seeds = lambda p: f"adaptive {p.min}..{p.max}" if p.adaptive else f"{len(p.seeds)} fixed"  # noqa: E731
        out.append(f"seeds: {seeds(pa)} → {seeds(pb)}")
    for k in ("sesoi", "alpha"):
        if getattr(other.meta.analysis, k) != getattr(ctx.meta.analysis, k):
            out.append(f"analysis `{k}`: {getattr(other.meta.analysis, k)} → {getattr(ctx.meta.analysis, k)}")
    if other.meta.design_kind != ctx.meta.design_kind:
        out.append(f"design: {other.meta.design_kind} → {ctx.meta.design_kind} (the contrasts differ)")
    return out


def _words(f: pd.DataFrame, names: tuple[str, str]) -> str:
    a, b = names
    moved = [f"`{r['hack']}`: {r['other_verdict']} at {a} → {r['this_verdict']} at {b}"
             for _, r in f[f["changed"] == "yes"].iterrows()]
    same = [f"`{h}`" for h in f.loc[f["changed"] == "no", "hack"]]
    text = (f"Going from {a} to {b} changes {len(moved)} verdict(s): " + "; ".join(moved) + "."
            if moved else f"Going from {a} to {b} changes no verdict decided at both.")
    if same:
        text += f" The same at both: {', '.join(same)}."
    for side, there, other_side, elsewhere in (("this", b, "other", a), ("other", a, "this", b)):
        for changed, words in (("not yet", f"Still undecided at {there}, so not yet comparable"),
                               ("no verdict", f"Undecided at {there} at the design's last look, so there "
                                             "is no verdict to compare")):
            open_ = f[(f["changed"] == changed) & (f[f"{side}_verdict"] == UNDECIDED)]
            if len(open_):
                text += f" {words}: " + ", ".join(
                    f"`{r['hack']}` ({r[f'{other_side}_verdict']} at {elsewhere})" for _, r in open_.iterrows()) + "."
    return text


def section(d, ctx) -> None:
    """The section (nothing when ``[report] beside`` names no experiment)."""
    for other in ctx.beside:
        names = _names(ctx, other)
        budget = names[0].endswith("steps")
        d(f"## Beside {'another budget' if budget else 'another experiment'}: {other.name}", "")
        if ctx.effects.empty:
            d("No verdicts here to put beside it.", "")
            continue
        link = d.link(f"{other.name}'s report", ExperimentDir(other.path).report)
        d(f"Each hack's verdict and ratio ON/OFF with its multiplicity-adjusted 95% interval in "
          f"{link or other.name} ({names[0]}) beside this experiment ({names[1]}), both on "
          f"{label(ctx.primary)}, each as its own report decided it (its own seeds, looks and Holm family).", "")
        f = frame(ctx, other)
        interim = getattr(getattr(ctx, "analysis", None), "interim", False)
        d(("*Interim*: this experiment's look is not finished, so its side of the table is "
           "provisional (see the summary). " if interim else "") + _words(f, names), "")
        d.include_table(ctx.tables.get(f"beside:{other.name}"))
        diffs = _differences(ctx, other)
        d("Protocol differences (" + names[0] + " → " + names[1] + "): " + ("; ".join(diffs) or "none") + ".", "")
        ev_a, ev_b = other.meta.evaluation, ctx.meta.evaluation
        if ev_a.get("n") != ev_b.get("n"):
            d(f"FID is biased upwards by an amount that depends on N (here {ev_a.get('n')} vs {ev_b.get('n')} "
              "generated images): raw FIDs of the two experiments are not comparable. Compare the ratios "
              "ON/OFF and the verdicts, each measured within one experiment at one N.", "")
        if ev_a.get("val_every") != ev_b.get("val_every"):
            d(f"The `best` checkpoint is chosen among validation points every {ev_a.get('val_every')} vs "
              f"{ev_b.get('val_every')} steps, so it is picked from a different set of candidates.", "")
        if budget and ctx.figures.get("over_training"):
            d(f"How each ratio moves between the budgets within this experiment: *Effects over training* "
              f"above ({d.link('figure', ctx.figures['over_training'])}), one point per validation step.", "")
