"""Verdicts, and the adaptive-seed procedure that reaches them: a group-sequential design
with alpha spending.

Each hack's contrast (its log ratio ON/OFF in the pooled model, :mod:`effects`) is tested
at every *look* (seeds per variant ``min, min+step, ..., max``; a fixed design has one
look) for two things:

* **difference** (H0: ratio = 1, two-sided): *helps* or *hurts*;
* **equivalence** (H0: |log ratio| >= log(1 + SESOI), two one-sided tests, TOST):
  *equivalent within ±SESOI*.

A contrast is decided, and gets no more seeds, when either null is rejected (both: the
effect is real but smaller than the SESOI, and it reads *equivalent*); at the last look
an undecided contrast stays *undecided*, with the interval of what it could still be.

Error control, each family (difference; equivalence) at ``alpha`` family-wise across
the hacks and across looks:

* across looks, every hypothesis has a Lan-DeMets O'Brien-Fleming-type alpha-spending
  function (Lan & DeMets 1983, Biometrika 70:659), information fraction = planned seeds
  / ``max``; a two-sided test spends ``alpha/2`` per side (the convention of ld98 and
  gsDesign: K = 5 equally spaced looks at 0.05 give 4.877, 3.357, 2.680, 2.290, 2.031);
* across hacks, Holm's step-down procedure (Holm 1979) in its group-sequential
  graphical form (Maurer & Bretz 2013, Stat Biopharm Res 5:311): a hypothesis starts
  with ``alpha/m``; when one is rejected its level is shared among those not yet
  rejected, which are re-tested at the current look with their larger level;
* the t statistic of a contrast (unknown variance, the model's residual df) is mapped
  to the normal scale by matching p-values (Jennison & Turnbull 2000, ch. 3.8);
* intervals are repeated confidence intervals (Jennison & Turnbull 1989): the
  boundary of the look, so they hold over all looks and agree with the verdict.

The adaptive grid calls :func:`next_look` after each look; the report calls
:func:`analyse`. Both replay the looks from the store, so the decisions are a function
of the finished runs only: a grid killed between looks resumes to the same decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import special  # noqa: F401  (re-exported for the report's p values)

from ablate.config import AnalysisSpec, SeedPolicy
from ablate.errors import ConfigError
from ablate.report.boundaries import boundaries, spent, t_of_z, z_of_t  # noqa: F401  (public here too)
from ablate.report.columns import lower_is_better, primary_metric
from ablate.report.effects import ContrastFit, cell_comparisons, cells, fit_coded, model_data
from ablate.report.precision import round_array
from ablate.report.results import ExperimentMeta, parse_meta

VERDICTS = ("helps", "hurts", "equivalent", "undecided")
TERMINAL = ("done", "diverged", "failed")  # a run that will not change any more


# --------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """One hack's verdict and the numbers behind it (test scale: log ratio for FID)."""

    hack: str
    on: str
    off: str
    verdict: str  # helps / hurts / equivalent / undecided
    look: int | None  # look at which it was decided (None: undecided)
    estimate: float
    se: float
    df: int
    ci_low: float  # repeated CI at the difference test's level (agrees with the verdict)
    ci_high: float
    eq_low: float  # repeated CI of the TOST (1 - 2·level): inside ±margin <=> equivalent
    eq_high: float
    level: float  # the hypothesis' difference level when last tested (alpha/m .. alpha)
    eq_level: float  # the same for its equivalence (TOST) hypothesis
    n_on: int
    n_off: int
    seeds: tuple[int, ...]
    also_different: bool = False  # equivalent, and detectably != 1 (a small, real effect)

    @property
    def contrast(self) -> str:
        return f"{self.on} vs {self.off}"


@dataclass(frozen=True)
class Look:
    index: int                  # 1-based look just analysed
    done: bool                  # every contrast decided, or max seeds reached
    seeds: dict[str, int]       # variant -> number of seeds it must have for the next look (>= current)
    reasons: tuple[str, ...]    # one line per contrast: how it was decided or why it continues


@dataclass(frozen=True)
class Analysis:
    """The verdicts of the primary metric after the looks made so far."""

    metric: str | None
    margin: float  # log(1 + SESOI) on the log scale, SESOI × |mean| on the raw scale
    scale: str
    looks: tuple[Look, ...]
    planned: tuple[int, ...]  # seeds per variant at each planned look
    decisions: tuple[Decision, ...]
    fit: object | None  # the PooledFit at the last look
    # Per look: the seeds each variant (or [axes] cell) had in that look's fit; empty for a
    # fixed design, whose one look uses every run. :func:`runs_at` turns it into the runs.
    used: tuple[dict[str, int], ...] = ()
    # True while the look analysed has runs still to finish (a report written mid-grid):
    # its verdicts are the boundaries applied to part of the look's data, not the design's.
    interim: bool = False

    @property
    def last(self) -> Look | None:
        return self.looks[-1] if self.looks else None

    def by_verdict(self, verdict: str) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == verdict]


def _meta(meta) -> ExperimentMeta:
    return meta if isinstance(meta, ExperimentMeta) else parse_meta(meta)


def _margin(fit, analysis: AnalysisSpec) -> float:
    if fit is None:
        return math.nan
    if fit.scale == "log":
        return math.log1p(analysis.sesoi)
    # Raw scale: the SESOI as a share of the typical (mean) value.
    return analysis.sesoi * abs(float(np.mean(np.asarray(fit.fitted)))) if len(fit.fitted) else math.nan


def _good(estimate: float, metric: str) -> bool:
    return (estimate < 0) == lower_is_better(metric)


def _run_looks(frame: pd.DataFrame, meta: ExperimentMeta, policy: SeedPolicy, analysis: AnalysisSpec,
               metric: str, upto: int | None) -> Analysis:
    data, log, _ = model_data(frame, metric)
    counts = {v: int(n) for v, n in frame.groupby("variant")["seed"].nunique().items()}
    return decide_arrays(data["variant"].to_numpy(), data["seed"].to_numpy(), data["y"].to_numpy(float),
                         meta, policy, analysis, metric, log, upto, counts, cells(frame))


def decide_arrays(v_all: np.ndarray, s_all: np.ndarray, y_all: np.ndarray, meta: ExperimentMeta,
                  policy: SeedPolicy, analysis: AnalysisSpec, metric: str, log: bool = True,
                  upto: int | None = None, counts: dict[str, int] | None = None,
                  alias: dict[str, str] | None = None) -> Analysis:
    """The looks on finished runs given as arrays (variant, seed, value on the test
    scale): what :func:`analyse` and :func:`next_look` do after reading the frame, and
    what the error-rate simulation calls directly. ``counts``: seeds per variant for a
    fixed design's :class:`Look` (default: those in the arrays). ``alias``: variant -> its
    cell where variants share runs (``[axes]``; :func:`~ablate.report.effects.cells`): the
    arrays then name cells, and a cell has the seeds of its most-seeded variant."""
    comparisons = list(meta.comparisons)
    alias = alias or {}
    in_cells = cell_comparisons(comparisons, alias)
    m = len(comparisons)
    planned = policy.looks() if policy.adaptive else (None,)
    n_max = policy.max if policy.adaptive else None
    alpha = analysis.alpha
    active_d = {c.hack for c in comparisons}  # difference nulls not yet rejected
    active_e = set(active_d)  # equivalence nulls not yet rejected
    decided: dict[str, Decision] = {}
    latest: dict[str, Decision] = {}
    looks: list[Look] = []
    used: list[dict[str, int]] = []
    fit = None
    margin = math.nan
    last = len(planned) if upto is None else min(upto, len(planned))
    # Seeds each variant has at the current look: all start at the first look's count;
    # after a look only the variants of undecided contrasts get more.
    alloc = {v: planned[0] for v in meta.variant_names}
    if counts is None:
        counts = {v: len(set(s_all[v_all == v].tolist())) for v in meta.variant_names}
    vnames, vidx = np.unique(v_all, return_inverse=True)  # coded once for every look
    snames, sidx = np.unique(s_all, return_inverse=True)
    for i in range(1, last + 1):
        if n_max is None:
            keep = np.ones(len(y_all), bool)
        else:
            cell_alloc = dict(alloc)
            for v, n in alloc.items():
                if v in alias:
                    cell_alloc[alias[v]] = max(cell_alloc.get(alias[v], 0), n)
            limits = {v: cell_alloc.get(v, planned[i - 1]) for v in vnames.tolist()}
            keep = s_all < np.array([limits[v] for v in vnames.tolist()])[vidx]
            used.append(limits)
        fit = (fit_coded(metric, log, vnames, vidx[keep], snames, sidx[keep], y_all[keep], in_cells)
               if keep.any() else None)
        margin = _margin(fit, analysis)
        # Every boundary up to look i depends only on the fractions up to i: computing
        # the whole planned schedule once lets the cache serve every look.
        fractions = (1.0,) if n_max is None else tuple(n / n_max for n in planned)
        cf = {c.hack: (fit.contrast(c.hack) if fit else None) for c in comparisons}
        open_ = [c for c in comparisons if c.hack not in decided]
        level_d: dict[str, float] = {}
        level_e: dict[str, float] = {}
        rejected_d: set[str] = set()
        rejected_e: set[str] = set()
        # Holm, group-sequential: test, share the level of what was rejected, test again.
        # Each round rejects at least one active hypothesis or stops: m + 1 rounds at most.
        for family, active, rejected, levels, two_sided in (
                ("d", active_d, rejected_d, level_d, True), ("e", active_e, rejected_e, level_e, False)):
            for _ in range(len(active) + 1):
                level = alpha / max(len(active), 1)
                c_z = boundaries(level, fractions, two_sided)[i - 1]
                new = []
                for c in open_:
                    f = cf[c.hack]
                    if c.hack not in active or f is None or not (f.se > 0 and f.df > 0):
                        continue
                    levels[c.hack] = level
                    if family == "d":
                        hit = abs(z_of_t(f.t, f.df)) >= c_z
                    else:
                        hit = (z_of_t((f.estimate + margin) / f.se, f.df) >= c_z
                               and z_of_t((margin - f.estimate) / f.se, f.df) >= c_z)
                    if hit:
                        new.append(c.hack)
                if not new:
                    break
                rejected.update(new)
                active.difference_update(new)
        for c in open_:
            f: ContrastFit | None = cf[c.hack]
            decision = _decision(c, f, i, fractions, level_d.get(c.hack, alpha / m),
                                 level_e.get(c.hack, alpha / m), c.hack in rejected_d,
                                 c.hack in rejected_e, metric, margin)
            latest[c.hack] = decision
            if decision.verdict != "undecided":
                decided[c.hack] = decision
        done = len(decided) == m or i == len(planned)
        if n_max is not None and not done:
            alloc = _next_seeds(alloc, meta, decided, planned[i])
        seeds = dict(alloc) if n_max is not None else dict(counts)
        looks.append(Look(i, done, seeds,
                          tuple(_reason(latest[c.hack], i, decided, fit, i == len(planned))
                                for c in comparisons)))
        if done:
            break
    decisions = tuple(decided.get(c.hack) or latest.get(c.hack) or _empty(c) for c in comparisons)
    return Analysis(metric, margin, fit.scale if fit else "log", tuple(looks),
                    tuple(planned) if n_max else (max(counts.values(), default=0),),
                    decisions, fit, used=tuple(used))


def runs_at(frame: pd.DataFrame, result: Analysis, look: int | None = None) -> pd.DataFrame:
    """The rows of ``frame`` that look ``look`` (default: the last) analysed: each variant's
    seeds below its allocation at that look. A sensitivity analysis of a decision, or a
    diagnostic of the last look's model, uses these runs, so it speaks to the same data as
    the verdict. A fixed design's one look uses every run."""
    look = look or len(result.looks)
    if not (1 <= look <= len(result.used)):
        return frame
    limits = result.used[look - 1]
    alias = cells(frame)
    limit = frame["variant"].map(lambda v: limits.get(alias.get(v, v), math.inf)).astype(float)
    return frame[frame["seed"].astype(float) < limit]


def _empty(c) -> Decision:
    nan = math.nan
    return Decision(c.hack, c.on, c.off, "undecided", None, nan, nan, 0, nan, nan, nan, nan, nan, nan, 0, 0, ())


def _decision(c, f: ContrastFit | None, look: int, fractions, level_d: float, level_e: float,
              diff: bool, equiv: bool, metric: str, margin: float) -> Decision:
    if f is None or not (f.se > 0 and f.df > 0):
        d = _empty(c)
        return Decision(**{**d.__dict__, "estimate": f.estimate if f else math.nan,
                           "n_on": f.n_on if f else 0, "n_off": f.n_off if f else 0,
                           "seeds": f.seeds if f else ()})
    i = look - 1
    h_d = t_of_z(boundaries(level_d, fractions, True)[i], f.df) * f.se
    h_e = t_of_z(boundaries(level_e, fractions, False)[i], f.df) * f.se
    verdict = ("equivalent" if equiv else ("helps" if _good(f.estimate, metric) else "hurts")
               if diff else "undecided")
    return Decision(c.hack, c.on, c.off, verdict, look if verdict != "undecided" else None,
                    f.estimate, f.se, f.df, f.estimate - h_d, f.estimate + h_d,
                    f.estimate - h_e, f.estimate + h_e, level_d, level_e, f.n_on, f.n_off, f.seeds,
                    also_different=equiv and diff)


def _next_seeds(alloc: dict[str, int], meta: ExperimentMeta, decided: dict, n_next: int) -> dict[str, int]:
    """Seeds per variant for the next look: the variants of undecided contrasts get
    ``n_next``, every other variant keeps what it has."""
    out = dict(alloc)
    for c in meta.comparisons:
        if c.hack not in decided:
            for v in (c.on, c.off):
                out[v] = max(out[v], n_next)
    return out


def _reason(d: Decision, i: int, decided: dict, fit, last: bool = False) -> str:
    """One contrast's line at look ``i``; ``last``: the design's last planned look, after
    which an undecided contrast does not continue but stays undecided."""
    pct = lambda x: f"{100 * (math.exp(x) - 1):+.1f}%"  # noqa: E731
    log = fit is not None and fit.scale == "log"
    show = pct if log else (lambda x: f"{x:+.3g}")
    if not np.isfinite(d.estimate) or not np.isfinite(d.ci_low):
        return (f"{d.hack}: undecided (not estimable at the last look, {i}: too few finished runs)" if last
                else f"{d.hack}: continues (not estimable at look {i}: too few finished runs)")
    # Text for the report and `ablate status`: written from the numbers rounded as the
    # report rounds them (report/precision.py), so it is the same on every CPU.
    est, lo, hi, eq_lo, eq_hi = round_array([d.estimate, d.ci_low, d.ci_high, d.eq_low, d.eq_high])
    ci = f"[{show(lo)}, {show(hi)}]"
    if d.hack in decided and decided[d.hack].look != i:
        return f"{d.hack}: {d.verdict} since look {decided[d.hack].look}"
    if d.verdict == "undecided":
        if last:
            return (f"{d.hack}: undecided at the last look ({i}): effect {show(est)}, anywhere in {ci} "
                    "(includes no effect and effects beyond the SESOI)")
        return (f"{d.hack}: continues at look {i}: effect {show(est)}, could still be "
                f"anywhere in {ci} (includes no effect and effects beyond the SESOI)")
    if d.verdict == "equivalent":
        return (f"{d.hack}: equivalent at look {i}: effect {show(est)}, TOST interval "
                f"[{show(eq_lo)}, {show(eq_hi)}] inside the SESOI")
    return f"{d.hack}: {d.verdict} at look {i}: effect {show(est)}, interval {ci} excludes no effect"


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------
def _checked(frame: pd.DataFrame, meta, policy, analysis) -> tuple[ExperimentMeta, str | None]:
    meta = _meta(meta)
    if not isinstance(policy, SeedPolicy) or not isinstance(analysis, AnalysisSpec):
        raise ConfigError("sequential analysis needs a SeedPolicy and an AnalysisSpec (ablate.config)")
    return meta, primary_metric(frame, analysis.metric)


def next_look(frame: pd.DataFrame, meta, policy: SeedPolicy, analysis: AnalysisSpec, index: int) -> Look:
    """The decision after look ``index`` (1-based) of an adaptive grid.

    ``frame`` is ``load_frame()`` restricted to the runs planned up to this look. The
    looks before ``index`` are replayed from the same frame, so the result depends only
    on the finished runs. Returns :class:`Look`; ``seeds`` says how many seeds each
    variant must have at the next look.
    """
    meta, metric = _checked(frame, meta, policy, analysis)
    n_looks = len(policy.looks()) if policy.adaptive else 1
    if not 1 <= index <= n_looks:
        raise ConfigError(f"look {index} is outside the seed policy's {n_looks} look(s) "
                          f"(seeds per variant at each look: {list(policy.looks())})")
    if metric is None or not meta.comparisons:
        counts = frame.groupby("variant")["seed"].nunique().to_dict()
        why = ("no primary metric in the run store (were the runs evaluated?)" if metric is None
               else "the design has no one-hack contrasts")
        return Look(index, True, {v: int(counts.get(v, 0)) for v in meta.variant_names}, (why,))
    return _run_looks(frame, meta, policy, analysis, metric, index).looks[-1]


def completed_looks(frame: pd.DataFrame, meta: ExperimentMeta, policy: SeedPolicy) -> int:
    """How many looks of an adaptive grid have all their runs finished (0 if none).

    A look after the first counts only when it was planned: some run has a seed beyond the
    previous look's count (a look that continues gives every undecided variant more seeds).
    Without that rule a grid stopped between looks (look k finished, look k+1 not yet
    planned) would have looks k+1, k+2, ... counted as finished, and the report would
    replay them on look k's runs with the later, smaller boundaries of larger information
    fractions: verdicts the design does not allow.
    """
    if not policy.adaptive:
        return 1
    looks = policy.looks()
    n = 0
    for j, k in enumerate(looks):
        sub = frame[frame["seed"] < k]
        if sub.empty or not sub["status"].isin(TERMINAL).all():
            break
        if j and not (frame["seed"] >= looks[j - 1]).any():
            break  # never planned: no run has a seed of this look
        n += 1
    return n


def analyse(frame: pd.DataFrame, meta, policy: SeedPolicy | None = None,
            analysis: AnalysisSpec | None = None) -> Analysis:
    """The report's verdicts on the primary metric: every look whose runs are finished."""
    meta = _meta(meta)
    policy = policy or meta.seed_policy
    analysis = analysis or meta.analysis
    meta, metric = _checked(frame, meta, policy, analysis)
    if metric is None or not meta.comparisons:
        return Analysis(metric, math.nan, "log", (), policy.looks(), (), None)
    done = completed_looks(frame, meta, policy)
    if not policy.adaptive:
        done = int(frame["status"].isin(TERMINAL).all())
    result = _run_looks(frame, meta, policy, analysis, metric, max(done, 1))
    return replace(result, interim=done == 0)
