"""Failures are outcomes: mode collapse and divergence, per run, per variant, per hack.

**Collapse rule.** A run is *collapsed* when its generator misses at least
``COLLAPSE_MODES`` = 2 modes. A mode is *missing* under the evaluation's own coverage
rule (``metrics.json`` ``mode_rule``: a share below ``mode_min_frac`` of its real share;
Stacked MNIST: no sample at all). The old rule also flagged KL(p_gen ‖ p_real) > 0.5,
which measures class imbalance and gives missing classes weight zero.

**Divergence.** Each run's class histogram is compared with the real one by the
Jensen-Shannon divergence (nats): bounded, no smoothing, and a missing class counts
(its real mass enters through the mixture). It is reported per run and per variant
(and tested as a secondary metric), beside two calibration points: its noise floor for
N real images (the 1 - 1e-6 quantile between two real samples, 8·N_eff·JS ~ χ²_{K-1})
and the JS of a generator that drops the two rarest modes (the rest rescaled). JS does
not enter the collapse flag: at the quick CPU budget most generators are further from
the real histogram than that two-modes value while covering every class (32 of the 39
runs of results/default), i.e. JS above it is class imbalance, not collapse.

**Calibration.** The count threshold is raised above 2 until N real images would miss
that many modes with probability below ``NULL_FLAG_PROB`` (a bound: multinomial counts
are negatively associated, so P(>= m missing) <= the m-th elementary symmetric
polynomial of the per-class miss probabilities). tests/test_report_failures.py checks that
samples of real labels are never flagged and generators missing two classes always are,
on a 10-class MNIST-like fixture and on Stacked MNIST's 1000 modes.

Per variant: collapse and divergence rates with exact (Clopper-Pearson) intervals. Per
hack: exact McNemar tests on the seed-paired outcomes, Holm across hacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from ablate.report.effects import holm
from ablate.report.results import Comparison

COLLAPSE_MODES = 2  # missing this many modes (or as far as that in JS) is collapse
NULL_FLAG_PROB = 1e-6  # real data is flagged with at most this probability
CONFIDENCE = 0.95


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in nats of two histograms (normalised here)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    return float(jensenshannon(p / p.sum(), q / q.sum()) ** 2)


def missing_modes(counts: np.ndarray, real_share: np.ndarray, min_frac: float | None,
                  min_count: int | None = None) -> int:
    """Modes the evaluation would not count as covered (ablate.metrics.modes' rule)."""
    counts = np.asarray(counts, float)
    if min_count is not None:
        return int((counts < min_count).sum())
    share = counts / counts.sum()
    covered = (share >= min_frac * real_share / real_share.sum()) & (counts > 0)
    return int((~covered).sum())


def _miss_probabilities(real_share: np.ndarray, n: int, min_frac: float | None,
                        min_count: int | None) -> np.ndarray:
    """Per class: P(a sample of n real images leaves it missing)."""
    q = real_share / real_share.sum()
    if min_count is not None:
        need = np.full(len(q), float(min_count))
    else:  # covered iff count >= min_frac * q * n (and > 0)
        need = np.maximum(np.ceil(min_frac * q * n - 1e-9), 1.0)
    return stats.binom.cdf(need - 1, n, q)


def _at_least(probs: np.ndarray, m: int) -> float:
    """m-th elementary symmetric polynomial of probs: bounds P(>= m events) for
    negatively associated events (union bound generalised)."""
    e = np.zeros(m + 1)
    e[0] = 1.0
    for p in probs:
        e[1:] = e[1:] + p * e[:-1]
    return float(min(1.0, e[m]))


@dataclass(frozen=True)
class CollapseRule:
    """Thresholds of the collapse rule for one (real shares, N) and how they were set."""

    modes: int  # collapsed when this many modes (or more) are missing
    js_two_modes: float  # calibration point: JS of a generator dropping the two rarest modes
    js_noise: float  # calibration point: 1 - 1e-6 quantile of JS between two real samples
    null_prob: float  # bound on P(N real images are flagged)
    n: int
    k: int

    def flags(self, missing: int) -> bool:
        return missing >= self.modes


def calibrate(real_counts: np.ndarray | None, k: int, n_gen: int, n_real: int | None = None,
              min_frac: float | None = 0.1, min_count: int | None = None) -> CollapseRule:
    """The collapse rule for ``n_gen`` generated samples against ``real_counts`` (None:
    uniform over ``k`` modes, as for Stacked MNIST)."""
    q = np.full(k, 1.0 / k) if real_counts is None else np.asarray(real_counts, float)
    q = q / q.sum()
    probs = _miss_probabilities(q, n_gen, min_frac, min_count)
    # the fewest missed modes (from COLLAPSE_MODES, at most k) that chance rarely reaches
    m = next((m for m in range(COLLAPSE_MODES, k) if not _at_least(probs, m) > NULL_FLAG_PROB),
             max(k, COLLAPSE_MODES))
    two = q.copy()
    two[np.argsort(q, kind="stable")[:2]] = 0.0
    js2 = js_divergence(two, q)
    n_eff = n_gen if not n_real else 1.0 / (1.0 / n_gen + 1.0 / n_real)
    noise = float(stats.chi2.isf(NULL_FLAG_PROB, k - 1) / (8 * n_eff))
    return CollapseRule(m, js2, noise, _at_least(probs, m), n_gen, k)


STACKED_MODES = 1000  # Stacked MNIST's digit triples (report.stacked reads it from here)


def run_flags(frame: pd.DataFrame, hists: pd.DataFrame, checkpoint: str, stacked: bool,
              min_frac: float) -> pd.DataFrame:
    """Per finished run: key, variant, seed, missing, js, collapsed, rule (text).

    From the class histograms where metrics.json has them; otherwise (Stacked MNIST) from
    the ``modes``/``num_modes``/``n_mode_samples`` columns, count part only."""
    rows = []
    by_key = {r["key"]: r for _, r in hists.iterrows()} if len(hists) else {}
    done = frame[frame["status"] == "done"]
    col = lambda name: f"{checkpoint}.classifier.{name}"  # noqa: E731
    for _, run in done.iterrows():
        h = by_key.get(run["key"])
        if h is not None:
            counts, real = h["counts"], h["real_counts"]
            rule = calibrate(real, len(real), int(counts.sum()), int(real.sum()), min_frac)
            missing = missing_modes(counts, real, min_frac)
            js = js_divergence(counts, real)
        elif col("modes") in frame.columns and np.isfinite(run.get(col("modes"), np.nan)):
            k = (int(run.get(col("num_modes"), np.nan)) if np.isfinite(run.get(col("num_modes"), np.nan))
                 else STACKED_MODES if stacked else 10)  # an older record: the dataset's modes
            n = run.get(col("n_mode_samples"), np.nan)
            n = int(n) if np.isfinite(n) else 10_000
            rule = calibrate(None, k, n, None, None if stacked else min_frac, 1 if stacked else None)
            missing, js = k - int(run[col("modes")]), math.nan
        else:
            continue
        rows.append({"key": run["key"], "variant": run["variant"], "seed": int(run["seed"]),
                     "missing": missing, "js": js, "collapsed": rule.flags(missing),
                     "rule_modes": rule.modes, "js_two_modes": rule.js_two_modes,
                     "js_noise": rule.js_noise, "null_prob": rule.null_prob})
    return pd.DataFrame(rows, columns=["key", "variant", "seed", "missing", "js", "collapsed", "rule_modes",
                                       "js_two_modes", "js_noise", "null_prob"])


def rule_text(flags: pd.DataFrame) -> str:
    """The collapse threshold as the runs in ``flags`` (:func:`run_flags`) were judged: "2",
    or "2–4" when the calibration (per N and class shares) set it differently for some."""
    m = pd.to_numeric(flags.get("rule_modes", pd.Series(dtype=float)), errors="coerce").dropna()
    if m.empty:
        return str(COLLAPSE_MODES)
    lo, hi = int(m.min()), int(m.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact binomial interval of k/n (statsmodels' ``beta`` method); NaN for n = 0."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return (math.nan, math.nan)
    lo, hi = proportion_confint(k, n, alpha=1 - confidence, method="beta")
    return (float(lo), float(hi))


def variant_rates(frame: pd.DataFrame, flags: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Per variant: collapsed / measured and diverged / finished, with exact intervals."""
    rows = []
    for v in variants:
        runs = frame[frame["variant"] == v]
        finished = int(runs["status"].isin(["done", "diverged"]).sum())
        diverged = int((runs["status"] == "diverged").sum())
        f = flags[flags["variant"] == v]
        collapsed, measured = int(f["collapsed"].sum()), len(f)
        c_lo, c_hi = clopper_pearson(collapsed, measured)
        d_lo, d_hi = clopper_pearson(diverged, finished)
        rows.append({"variant": v, "measured": measured, "collapsed": collapsed,
                     "collapse_rate": collapsed / measured if measured else math.nan,
                     "collapse_low": c_lo, "collapse_high": c_hi, "finished": finished,
                     "diverged": diverged, "divergence_rate": diverged / finished if finished else math.nan,
                     "divergence_low": d_lo, "divergence_high": d_hi})
    return pd.DataFrame(rows)


def _mcnemar(on: pd.Series, off: pd.Series) -> tuple[int, int, int, float]:
    """Seed-paired binary outcomes -> (pairs, on only, off only, exact McNemar p)."""
    from statsmodels.stats.contingency_tables import mcnemar

    both = pd.concat({"on": on, "off": off}, axis=1).dropna()
    a, b = both["on"].astype(bool), both["off"].astype(bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    p = float(mcnemar(table, exact=True).pvalue) if len(both) else math.nan
    return len(both), table[0][1], table[1][0], p


def hack_tests(frame: pd.DataFrame, flags: pd.DataFrame, comparisons: list[Comparison]) -> pd.DataFrame:
    """Per hack: exact McNemar tests of collapse and of divergence, ON vs OFF paired by
    seed, with Holm-adjusted p across the hacks (per outcome)."""
    rows = []
    for c in comparisons:
        f = flags.set_index(["variant", "seed"])["collapsed"] if len(flags) else pd.Series(dtype=bool)
        pick = lambda s, v: s[v] if v in s.index.get_level_values(0) else pd.Series(dtype=bool)  # noqa: E731
        n_c, on_c, off_c, p_c = _mcnemar(pick(f, c.on), pick(f, c.off))
        term = frame[frame["status"].isin(["done", "diverged"])]
        div = lambda v: (term[term["variant"] == v].set_index("seed")["status"] == "diverged")  # noqa: E731, B023
        n_d, on_d, off_d, p_d = _mcnemar(div(c.on), div(c.off))
        rows.append({"hack": c.hack, "on": c.on, "off": c.off,
                     "collapse_pairs": n_c, "collapse_on_only": on_c, "collapse_off_only": off_c,
                     "collapse_p": p_c, "diverge_pairs": n_d, "diverge_on_only": on_d,
                     "diverge_off_only": off_d, "diverge_p": p_d})
    out = pd.DataFrame(rows, columns=["hack", "on", "off", "collapse_pairs", "collapse_on_only",
                                      "collapse_off_only", "collapse_p", "diverge_pairs",
                                      "diverge_on_only", "diverge_off_only", "diverge_p"])
    out["collapse_p_holm"] = holm(out["collapse_p"])
    out["diverge_p_holm"] = holm(out["diverge_p"])
    return out
