"""REPORT.md's *Stacked MNIST* section and ``tables/stacked_{modes,verdicts,published}.*``:
written only for a stacked dataset (``stacked-mnist``, ``stacked-mnist-5k``, ...).

What it gives, from statistics the report has already computed:

* per variant, modes covered (of 1000) and KL(p_gen ‖ uniform) at the headline
  checkpoint: the mean over seeds and its 95% Student-t interval (n − 1 df; the
  report's :func:`ablate.report.summary.t_interval`), every seed's value, the N the modes
  were counted on and the collapse rate with its exact interval;
* per hack, the collapse verdicts: the design contrast (ON − OFF) of modes and of KL in
  the pooled model (``log``-free: both are tested on their own scale), its adjusted 95%
  interval and verdict (``ablate.report.sequential``; one look, Holm across hacks when
  they are secondary metrics), and the exact McNemar test of the collapse flag;
* the per-channel classifier: its single-digit test accuracy and its accuracy on the
  stacked test images (all three digits right), recorded by :mod:`ablate.metrics.stacked`
  in ``metrics.json``, and what the real stacked test images score under the same rule;
* all-on and all-off beside the published DCGAN figures (:mod:`ablate.report.published`),
  with every protocol difference this experiment has.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.layout import ExperimentDir
from ablate.report import failures, tables
from ablate.report.published import figures_for
from ablate.report.tables import interval, num, pval

MODES_TOTAL = failures.STACKED_MODES  # digit triples (one constant: failures counts them too)
PUBLISHED_N = 26_000  # samples the published mode counts use (VEEGAN / PacGAN)
KL_MAX = math.log(MODES_TOTAL)  # KL(p ‖ uniform) of a generator stuck in one mode


def applies(meta) -> bool:
    """Whether the experiment's dataset is a stacked one."""
    return meta.dataset.startswith("stacked")


def _col(ctx, metric: str) -> str:
    return f"{ctx.checkpoint}.classifier.{metric}"


def uniform_reference(n: int, k: int = MODES_TOTAL) -> tuple[float, float]:
    """What a generator drawing the ``k`` modes uniformly scores on ``n`` samples: the
    expected modes covered, k·(1 − (1 − 1/k)^n), and KL(p ‖ uniform) ≈ (k − 1)/(2n)
    (the plug-in KL's bias: 2n·KL is asymptotically χ² with k − 1 df)."""
    return k * -math.expm1(n * math.log1p(-1.0 / k)), (k - 1) / (2.0 * n)


def _values(frame: pd.DataFrame, variant: str, col: str) -> tuple[list[int], np.ndarray]:
    done = frame[(frame["status"] == "done") & (frame["variant"] == variant)]
    if col not in done.columns:
        return [], np.array([])
    x = pd.to_numeric(done[col], errors="coerce").to_numpy(float)
    ok = np.isfinite(x)
    order = np.argsort(done["seed"].to_numpy()[ok], kind="stable")
    return [int(s) for s in done["seed"].to_numpy()[ok][order]], x[ok][order]


def _summary_row(ctx, variant: str, metric: str) -> dict:
    s = ctx.summary
    r = s[(s["variant"] == variant) & (s["metric"] == _col(ctx, metric))]
    return r.iloc[0].to_dict() if len(r) else {}


def modes_frame(ctx) -> pd.DataFrame:
    """One row per variant: seeds, N counted on, modes and KL (mean, 95% t interval, per
    seed) and the collapse rate."""
    rows = []
    counts = ctx.counts.set_index("variant")
    for v in ctx.counts["variant"]:
        seeds, modes = _values(ctx.frame, v, _col(ctx, "modes"))
        _, kl = _values(ctx.frame, v, _col(ctx, "kl"))
        _, n_s = _values(ctx.frame, v, _col(ctx, "n_mode_samples"))
        m, k = _summary_row(ctx, v, "modes"), _summary_row(ctx, v, "kl")
        c = counts.loc[v]
        rows.append({"variant": v, "n": len(modes), "seeds": ",".join(map(str, seeds)),
                     "n_mode_samples": int(n_s.min()) if len(n_s) else math.nan,
                     "modes_mean": m.get("mean", math.nan), "modes_low": m.get("ci_low", math.nan),
                     "modes_high": m.get("ci_high", math.nan), "modes_sd": m.get("sd", math.nan),
                     "modes_per_seed": " ".join(str(int(x)) for x in modes),
                     "kl_mean": k.get("mean", math.nan), "kl_low": k.get("ci_low", math.nan),
                     "kl_high": k.get("ci_high", math.nan), "kl_sd": k.get("sd", math.nan),
                     "kl_per_seed": " ".join(num(x) for x in kl),
                     "collapsed": int(c.get("collapsed", 0)), "measured": int(c.get("measured", 0)),
                     "collapse_low": c.get("collapse_low", math.nan),
                     "collapse_high": c.get("collapse_high", math.nan)})
    return pd.DataFrame(rows)


def _mean_ci(mean: float, lo: float, hi: float) -> str:
    """``mean [lo, hi]``; the summary has already clipped the interval to the metric's range
    (``columns.metric_range``)."""
    if not np.isfinite(mean):
        return "–"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return num(mean)
    return f"{num(mean)} {interval(lo, hi)}"


def modes_display(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "variant": t["variant"], "N (seeds)": [f"{n} ({s or '–'})" for n, s in zip(t["n"], t["seeds"])],
        "samples": t["n_mode_samples"].map(num),
        f"modes of {MODES_TOTAL} [95% CI]": [_mean_ci(*r) for r in
                                            zip(t["modes_mean"], t["modes_low"], t["modes_high"])],
        "modes per seed": t["modes_per_seed"].replace("", "–"),
        "KL [95% CI]": [_mean_ci(*r) for r in zip(t["kl_mean"], t["kl_low"], t["kl_high"])],
        "KL per seed": t["kl_per_seed"].replace("", "–"),
        "collapsed [95% CI]": [f"{c}/{m} {interval(lo, hi, 2)}" if m else "–" for c, m, lo, hi in
                               zip(t["collapsed"], t["measured"], t["collapse_low"], t["collapse_high"])]})


def verdict_frame(ctx) -> pd.DataFrame:
    """One row per hack: its contrast on modes and on KL (estimate ON − OFF, adjusted 95%
    interval, verdict, Holm p) and the McNemar test of the collapse flag."""
    parts = [e for e in (ctx.effects, ctx.secondary) if len(e) and "metric" in e.columns]
    effects = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["metric", "hack"])
    tests = ctx.failure_tests.set_index("hack") if len(ctx.failure_tests) else pd.DataFrame()
    rows = []
    for c in ctx.meta.comparisons:
        row = {"hack": c.hack, "on": c.on, "off": c.off}
        for metric in ("modes", "kl"):
            e = effects[(effects["metric"] == _col(ctx, metric)) & (effects["hack"] == c.hack)]
            r = e.iloc[0] if len(e) else {}
            for key in ("estimate", "ci_low", "ci_high", "verdict", "p_holm", "n_on", "n_off"):
                row[f"{metric}_{key}"] = r.get(key, math.nan) if len(e) else math.nan
        if c.hack in tests.index:
            t = tests.loc[c.hack]
            row.update(collapse_pairs=int(t["collapse_pairs"]), collapse_on_only=int(t["collapse_on_only"]),
                       collapse_off_only=int(t["collapse_off_only"]), collapse_p_holm=t["collapse_p_holm"])
        rows.append(row)
    return pd.DataFrame(rows)


def _contrast(r, metric: str) -> str:
    est = r.get(f"{metric}_estimate", math.nan)
    if not np.isfinite(est):
        return "–"
    return (f"{'+' if est > 0 else ''}{num(est)} {interval(r[f'{metric}_ci_low'], r[f'{metric}_ci_high'])} {r[f'{metric}_verdict']}")


def verdict_display(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "hack": t["hack"], "contrast": t["on"] + " vs " + t["off"],
        "Δ modes ON − OFF [adj. 95% CI] verdict": [_contrast(r, "modes") for _, r in t.iterrows()],
        "Δ KL ON − OFF [adj. 95% CI] verdict": [_contrast(r, "kl") for _, r in t.iterrows()],
        "collapse: pairs, ON only / OFF only, McNemar p (Holm)": [
            f"{int(r['collapse_pairs'])}: {int(r['collapse_on_only'])} / {int(r['collapse_off_only'])}, "
            f"{pval(r['collapse_p_holm'])}" if np.isfinite(r.get("collapse_pairs", math.nan)) else "–"
            for _, r in t.iterrows()]})


def classifier_info(ctx) -> dict:
    """The classifier's provenance from metrics.json (the most common record), or {}."""
    for p, _ in ctx.provenance.get("metrics_provenance") or []:
        info = ((p or {}).get("features") or {}).get("classifier")
        if isinstance(info, dict):
            return info
    return {}


def published_frame(ctx, modes: pd.DataFrame) -> pd.DataFrame:
    """Published DCGAN figures (modes, KL) and this experiment's all-on and all-off."""
    rows = []
    by = {(f.source, f.model): f for f in figures_for(ctx.meta.dataset, "kl")}
    for f in figures_for(ctx.meta.dataset, "modes"):
        k = by.get((f.source, f.model))
        rows.append({"source": f.source, "model": f.model, "modes": f.value, "modes_sd": f.sd,
                     "modes_low": math.nan, "modes_high": math.nan, "kl": k.value if k else math.nan,
                     "kl_low": math.nan, "kl_high": math.nan, "protocol": f.protocol})
    scope, hacks = frozenset(ctx.meta.hacks), ctx.meta.variant_hacks()
    m = modes.set_index("variant")
    for want in (scope, frozenset()):  # all-on, all-off
        v = next((v for v in m.index if hacks.get(v) == want), None)
        if v is None or not m.loc[v, "n"]:
            continue
        r = m.loc[v]
        rows.append({"source": "this report", "model": f"DCGAN {v}", "modes": r["modes_mean"], "modes_sd": math.nan,
                     "modes_low": r["modes_low"], "modes_high": r["modes_high"], "kl": r["kl_mean"],
                     "kl_low": r["kl_low"], "kl_high": r["kl_high"],
                     "protocol": f"{int(r['n'])} seed{'s' if int(r['n']) != 1 else ''}, mean and 95% t CI; {_our_protocol(ctx, r)}"})
    return pd.DataFrame(rows)


def _our_protocol(ctx, r) -> str:
    train = {**(ctx.provenance.get("train") or {}), **ctx.meta.train}
    n = r["n_mode_samples"]
    return (f"width {train.get('ngf', '?')}/{train.get('ndf', '?')}, {train.get('steps', '?')} steps at batch "
            f"{train.get('batch_size', '?')}, {ctx.meta.dataset}, {f'{int(n):,}' if np.isfinite(n) else '?'} samples")


def published_display(t: pd.DataFrame) -> pd.DataFrame:
    def modes(r):
        if np.isfinite(r["modes_low"]):
            return _mean_ci(r["modes"], r["modes_low"], r["modes_high"])
        return num(r["modes"]) + (f" ± {num(r['modes_sd'])}" if np.isfinite(r["modes_sd"]) else "")

    return pd.DataFrame({
        "source": t["source"], "model": t["model"], f"modes of {MODES_TOTAL}": [modes(r) for _, r in t.iterrows()],
        "KL": [_mean_ci(a, b, c) if np.isfinite(b) else num(a)
               for a, b, c in zip(t["kl"], t["kl_low"], t["kl_high"])],
        "protocol": t["protocol"]})


def write(ctx, tables_dir: Path) -> None:
    """Write the three stacked tables into ``ctx.tables`` (nothing for other datasets;
    :func:`section` calls it when ``build_report`` has not)."""
    if not applies(ctx.meta) or _col(ctx, "modes") not in ctx.frame.columns:
        return
    m = modes_frame(ctx)
    ctx.tables["stacked_modes"] = tables.write_table(
        m, modes_display(m), tables_dir, "stacked_modes",
        f"Stacked MNIST per variant ({ctx.checkpoint} checkpoint): modes covered of {MODES_TOTAL} and "
        "KL(p_gen ‖ uniform), mean and 95% Student-t interval over seeds (clipped to the metric's "
        "range), every seed, and the collapse rate with its exact 95% CI")
    if len(ctx.meta.comparisons):
        v = verdict_frame(ctx)
        ctx.tables["stacked_verdicts"] = tables.write_table(
            v, verdict_display(v), tables_dir, "stacked_verdicts",
            "Collapse verdicts per hack: Δ modes and Δ KL ON − OFF in the pooled model (adjusted 95% CI, "
            "verdict), and the exact McNemar test of the collapse flag (Holm across hacks)")
    p = published_frame(ctx, m)
    if len(p):
        ctx.tables["stacked_published"] = tables.write_table(
            p, published_display(p), tables_dir, "stacked_published",
            "All-on and all-off beside the published DCGAN figures on Stacked MNIST (context, not a target)")


def _classifier_lines(ctx) -> list[str]:
    info = classifier_info(ctx)
    if "stacked_test_accuracy" not in info:
        acc = info.get("classifier_test_accuracy")
        return [f"Per-channel classifier: single-digit test accuracy {num(acc, 3)}"
                if isinstance(acc, (int, float)) else "Per-channel classifier: accuracy not recorded",
                "; its accuracy on the stacked test images is not in these runs' `metrics.json` (scored "
                "before ablate recorded it: `ablate.metrics.stacked`).", ""]
    ch = info.get("stacked_channel_accuracy") or []
    n = int(info.get("stacked_test_n", 0))
    exp_modes, exp_kl = uniform_reference(n)
    pool = info.get("stacked_pool_train"), info.get("stacked_pool_test")
    return [
        f"**Per-channel classifier** (`{info.get('classifier_key', '?')}`, trained on "
        f"{info.get('classifier_dataset', '?')}): single-digit test accuracy "
        f"{num(info.get('classifier_test_accuracy'), 4)}; on the {n:,} stacked test images "
        f"({info.get('stacked_dataset', '?')}) all three digits right "
        f"{num(info['stacked_test_accuracy'], 4)}, per channel " + ", ".join(num(a, 4) for a in ch)
        + f". The real stacked test images cover {info.get('stacked_test_modes', '?')} modes as predicted "
        f"({info.get('stacked_test_true_modes', '?')} by their true labels) with KL to uniform "
        f"{num(info.get('stacked_test_kl'))} (true labels {num(info.get('stacked_test_true_kl'))}) at "
        f"their N = {n:,}, where uniform draws would give {num(exp_modes, 4)} modes and KL ≈ {num(exp_kl)}."
        + (f" Base pools: {pool[0]:,} training and {pool[1]:,} test digits." if all(pool) else ""), ""]


def section(d, ctx) -> None:
    """The *Stacked MNIST* section of REPORT.md (nothing for other datasets)."""
    if not applies(ctx.meta):
        return
    d("## Stacked MNIST: modes covered and KL", "")
    if "stacked_modes" not in ctx.tables:
        write(ctx, ExperimentDir(ctx.out_dir).tables)
    if "stacked_modes" not in ctx.tables:
        d("No mode metrics in the run store (the runs were not scored with the classifier).", "")
        return
    m = modes_frame(ctx)
    ns = sorted({int(x) for x in m["n_mode_samples"] if np.isfinite(x)})
    d(f"A mode is a digit triple (1000); it is covered when at least one of the N = "
      f"{'/'.join(f'{x:,}' for x in ns) or '?'} generated samples is classified into it (each channel by "
      f"the per-channel classifier); KL is KL(p_gen ‖ uniform) in nats; `{ctx.checkpoint}` checkpoint. "
      "Per variant: mean over seeds and its 95% Student-t interval (n − 1 df), every seed shown.", "")
    d.include_table(ctx.tables.get("stacked_modes"))
    d("Read against a perfect generator, one that draws the 1000 modes uniformly: at " + "; at ".join(
        f"N = {x:,} it covers {num(uniform_reference(x)[0], 4)} modes on average and scores KL ≈ "
        f"{num(uniform_reference(x)[1])} (sampling noise alone)" for x in ns) + ". Intervals are shown "
      f"clipped to the metrics' ranges (modes 0–1000, KL 0–log 1000 = {num(KL_MAX)}).", "")
    f = ctx.flags
    if len(f) and "rule_modes" in f.columns:
        # Stated because the flag reads as "collapsed" for a run that covers 97% of the modes.
        flagged = f[f["collapsed"].astype(bool)]
        most = int(flagged["missing"].min()) if len(flagged) else None
        d(f"The collapse flag (≥ {failures.rule_text(f)} modes missing, the failures "
          "rule) is strict at 1000 modes: real data of this N misses that many with probability "
          f"≤ {failures.NULL_FLAG_PROB:g}, so a run flagged here is "
          "detectably short of the data's modes, not necessarily collapsed in the sense of the published "
          "DCGAN's 99 of 1000" + (f"; the flagged run closest to full coverage misses {most} of 1000"
                                  if most is not None else "") +
          ". Read the modes and KL columns for how far short.", "")
    d(*_classifier_lines(ctx))
    if "stacked_verdicts" in ctx.tables:
        sesoi = ctx.meta.analysis.sesoi
        d("### Collapse verdicts per hack", "",
          f"Does switching each hack off change modes or KL? Each hack's design contrast (ON − OFF) in the "
          f"pooled model of modes and of KL (seed blocks; tested on their own scale; equivalent means within "
          f"±{sesoi:.0%} of the mean), its adjusted 95% interval and verdict; and the exact McNemar test of "
          "the collapse flag on seed pairs.", "")
        d.include_table(ctx.tables.get("stacked_verdicts"))
    if "stacked_published" in ctx.tables:
        d("### Beside the published DCGAN figures", "")
        d.include_table(ctx.tables.get("stacked_published"))
        d(*_differences(ctx, m))


def _differences(ctx, m: pd.DataFrame) -> list[str]:
    info = classifier_info(ctx)
    train = {**(ctx.provenance.get("train") or {}), **ctx.meta.train}
    ns = sorted({int(x) for x in m["n_mode_samples"] if np.isfinite(x)})
    pool = info.get("stacked_pool_train")
    small = ctx.meta.dataset.endswith("-5k")
    drawn = (f"every triple is drawn from {pool:,} training digits (about {pool // 10:,} per digit)" if pool
             else "every triple is drawn from the training digits of the 5,000-image MNIST subset")
    acc = info.get("classifier_test_accuracy")
    out = ["Protocol differences (read the published figures as context, not as a target):", "",
           f"- **Networks and budget**: here DCGAN width {train.get('ngf', '?')}/{train.get('ndf', '?')}, "
           f"{train.get('steps', '?')} generator steps at batch {train.get('batch_size', '?')}; the published "
           "DCGANs are the wider (64-filter-style) DCGAN trained for longer.",
           f"- **Data**: here {ctx.meta.dataset}"
           + (f": {drawn} instead of full MNIST's "
              "60,000 (about 6,000 per digit). All 1000 triples still occur in training, so every mode is "
              "there to learn, but each digit of a triple is one of few images: a generator that "
              "reproduces a few images per digit covers the modes (modes measure which digit triples "
              "appear, not their variety), while a discriminator can memorise so small a pool sooner, "
              "which is a known route to collapse. The two pull in opposite directions: the counts are "
              "not comparable in level, only in kind." if small
              else " (full MNIST)."),
           f"- **Classifier**: here the per-channel classifier has single-digit test accuracy "
           f"{num(acc, 3) if isinstance(acc, (int, float)) else '?'}"
           + (f" ({num(info['stacked_test_accuracy'], 3)} on whole stacked triples)"
              if "stacked_test_accuracy" in info else "")
           + "; the published ones about 0.99. Misclassified channels move samples to neighbouring "
           "triples: they can add modes a generator does not really make and spread KL.",
           f"- **N**: modes here on {'/'.join(f'{x:,}' for x in ns) or '?'} samples; published on "
           f"{PUBLISHED_N:,}." + (" Fewer samples cover fewer modes even for a perfect generator."
                                  if ns and min(ns) < PUBLISHED_N else ""),
           "- **Seeds**: here a mean and 95% interval over seeds; the published DCGAN figures are a "
           "single number or a mean ± sd over their runs.", ""]
    return out
