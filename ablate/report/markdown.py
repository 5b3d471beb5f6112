"""REPORT.md: the four verdict groups first (helps / hurts / equivalent within ±SESOI /
undecided), then protocol, tables, figures, the statistical method with its citations,
gaps, provenance and how to cite.

Every link is written through :meth:`_Doc.link`, which refuses files that do not exist,
so the report never points at a missing table or figure. Nothing here reads a clock:
the same runs give the same REPORT.md.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.layout import CLASSIFIER, ExperimentDir
from ablate.report import across, anchor, beside, failures, method, stacked
from ablate.report.compare import INTERIM_MARK
from ablate.report.publish import Stage
from ablate.report.columns import label, lower_is_better, parse_metric
from ablate.report.tables import interval, num, p_is, pct, to_markdown

CITATION_BIBTEX = """@software{ablate,
  title   = {ablate: which GAN training hacks actually matter},
  author  = {{ablate contributors}},
  version = {0.1.0},
  year    = {2026},
  license = {MIT}
}"""
GROUPS = (("helps", "Helps"), ("hurts", "Hurts"), ("equivalent", "Equivalent within ±{sesoi}"),
          ("undecided", "Undecided"))


class _Doc:
    def __init__(self, out_dir: Path | Stage):
        self.stage = Stage.at(out_dir)
        self.lines: list[str] = []

    def __call__(self, *lines: str) -> None:
        self.lines.extend(lines)

    def link(self, text: str, path: Path | None, image: bool = False) -> str:
        if path is None or not Path(path).is_file():
            return ""
        return f"{'!' if image else ''}[{text}]({self.stage.link(path)})"

    def table_links(self, paths: dict[str, Path] | None) -> str:
        links = [self.link(ext.upper(), p) for ext, p in (paths or {}).items()]
        return ", ".join(x for x in links if x)

    def include_table(self, paths: dict[str, Path] | None, max_rows: int = 80) -> None:
        """Inline a Markdown table (or, past ``max_rows`` rows, only link to its files)."""
        if paths and paths.get("md") and paths["md"].is_file():
            body = paths["md"].read_text().split("\n\n", 1)[-1]
            rows = body.count("\n") - 2
            if rows > max_rows:
                self(f"{rows} rows: too long to inline. Files: {self.table_links(paths)}", "")
                return
            self(body.rstrip(), "", f"Files: {self.table_links(paths)}", "")

    def figure(self, title: str, path: Path | None, caption: str) -> None:
        if path is None or not Path(path).is_file():
            return
        pdf = Path(path).with_suffix(".pdf")
        self(self.link(title, path, image=True), "",
             f"*{caption}* " + (f"({self.link('PDF', pdf)})" if pdf.is_file() else ""), "")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


def render(ctx) -> str:
    d = _Doc(ctx.stage)
    d(f"# ablate report: {ctx.meta.name}", "")
    _summary(d, ctx)
    _question(d, ctx)
    _protocol(d, ctx)
    _results(d, ctx)
    _effects(d, ctx)
    across.section(d, ctx)
    _failures(d, ctx)
    stacked.section(d, ctx)
    _training(d, ctx)
    beside.section(d, ctx)
    anchor.section(d, ctx)
    _factorial(d, ctx)
    _dynamics(d, ctx)
    method.section(d, ctx)
    _gaps(d, ctx)
    _provenance(d, ctx)
    _cite(d)
    return d.text()


# --------------------------------------------------------------------------------------
def seeds_text(ctx) -> str:
    ns = sorted(set(ctx.counts["n"].astype(int)))
    seeds = sorted(set(ctx.frame.loc[ctx.frame["status"] == "done", "seed"].astype(int)))
    return f"N = {'/'.join(map(str, ns))} finished seeds per variant (seeds {', '.join(map(str, seeds)) or 'none'})"


def _hack_line(r: pd.Series, sesoi: float, interim: bool = False, cap: int | None = None) -> str:
    """One hack's summary line; ``cap``: the seeds per variant of the design's last look (an
    undecided hack that has them stays undecided, more seeds would take a new design)."""
    log = r["scale"] == "log"
    eff = (f"×{num(math.exp(r['estimate']))} ({pct(r['estimate'])})" if log else f"Δ {num(r['estimate'])}")
    ci = (interval(math.exp(r["ci_low"]), math.exp(r["ci_high"])) if log and np.isfinite(r["ci_low"])
          else interval(r["ci_low"], r["ci_high"]))
    seeds = f"{r['n_on']}/{r['n_off']} seeds ON/OFF"
    when = ((f", interim: look {int(r['look'])} not finished" if interim else f", decided at look {int(r['look'])}")
            if pd.notna(r["look"]) else "")
    if r["verdict"] == "equivalent":
        eq = (interval(math.exp(r["eq_low"]), math.exp(r["eq_high"])) if log else interval(r["eq_low"], r["eq_high"]))
        extra = "; a real but negligible effect (its interval also excludes 1)" if r["also_different"] else ""
        return f"- `{r['hack']}`: {eff}, TOST interval {eq} inside ±{sesoi:.0%}{extra} ({seeds}{when})"
    if r["verdict"] == "undecided":
        if not np.isfinite(r["ci_low"]):
            return f"- `{r['hack']}`: not estimable ({seeds}: too few finished runs)"
        span = (f"anywhere from {pct(r['ci_low'])} to {pct(r['ci_high'])}" if log
                else f"anywhere in {ci}")
        if cap is not None and min(int(r["n_on"]), int(r["n_off"])) >= cap and not interim:
            return f"- `{r['hack']}`: {eff}; {span} with every seed the design gives ({seeds})"
        return f"- `{r['hack']}`: {eff}; could still be {span} ({seeds})"
    return f"- `{r['hack']}`: {eff}, adjusted 95% CI {ci} ({seeds}{when})"


def _power_seeds(e: pd.DataFrame, p: dict) -> str:
    """The seeds behind the power figures: the median contrast's, with the range where an
    adaptive design gave the hacks different numbers of seeds."""
    n = (e[["n_on", "n_off"]].min(axis=1)[np.isfinite(e["se"])] if len(e) and "se" in e else pd.Series(dtype=float))
    if len(n) and n.min() != n.max():
        return f"{num(p['seeds'])} seeds per variant at the median contrast, {int(n.min())}–{int(n.max())} across the hacks"
    return f"{num(p['seeds'])} seeds per variant"


def _summary(d: _Doc, ctx) -> None:
    meta, a = ctx.meta, ctx.analysis
    sesoi = meta.analysis.sesoi
    d("## Summary: which hacks matter here, by how much, how sure", "")
    if ctx.primary is None:
        d("**No quality metrics in the run store** (no FID, KID or mode metrics): the runs were not "
          "evaluated (`[evaluation] features = []`, or `ablate eval` not run yet). Run statistics "
          "only are compared below.", "")
    better = ("lower" if lower_is_better(ctx.primary) else "higher") if ctx.primary else "n/a"
    looks = (f"adaptive seeds {meta.seed_policy.min}–{meta.seed_policy.max}, look {len(a.looks)} of "
             f"{len(a.planned)}" if meta.seed_policy.adaptive else "fixed seeds")
    d(f"Design **{meta.design_kind}** on **{meta.dataset}**, {len(ctx.counts)} variants, {seeds_text(ctx)}; "
      f"{looks}. Primary metric: **{label(ctx.primary) if ctx.primary else 'none'}** ({better} is better). "
      f"Each hack is judged by its ratio ON/OFF in one model of all runs (log metric ~ variant + seed), "
      f"against a smallest effect of interest of ±{sesoi:.0%} (SESOI), family-wise α = "
      f"{meta.analysis.alpha} across the hacks (Holm) and across looks (alpha spending).", "")
    if a.interim:
        d(interim_notice(ctx), "")
    e = ctx.effects
    if e.empty:
        why = ("there is no quality metric to judge them by" if ctx.primary is None else
               "no pair of variants in this design differs in exactly one hack")
        d(f"No hack verdicts: {why}" + (" (see the factorial analysis below)." if ctx.factorial is not None
                                        else "."), "")
    else:
        for key, title in GROUPS:
            g = e[e["verdict"] == key]
            d(f"**{title.format(sesoi=f'{sesoi:.0%}')}** ({len(g)} of {len(e)})" + (":" if len(g) else ": none."))
            d(*[_hack_line(r, sesoi, a.interim, meta.seed_policy.looks()[-1]) for _, r in g.iterrows()])
            d("")
    for p in ctx.power:
        if p["analysis"] != "pooled model":
            continue
        size = (f"a decrease of {abs(p['decrease_pct']):.0f}% or an increase of {p['increase_pct']:.0f}%"
                if p["scale"] == "log" else f"a change of ±{num(p['mde'], 2)}")
        d(f"**Power** (pooled model, {_power_seeds(e, p)}, residual df {p['df']}): a hack "
          f"that changes {label(ctx.primary)} by {size} or more is detected with 80% power at α/m = "
          f"{num(p['alpha_first_step'], 2)}. A hack with no effect at all is declared equivalent within "
          f"±{sesoi:.0%} with probability {p['equivalence_power']:.0%}"
          + (f"; 80% would take about {p['seeds_for_equivalence']} seeds per variant."
             if p["equivalence_power"] < 0.8 else "."), "")
    _failure_bullets(d, ctx)
    sens = e[(e["paired_p"] < meta.analysis.alpha / max(len(e), 1)) != e["verdict"].isin(["helps", "hurts"])] \
        if len(e) else e
    if len(sens):
        d("*Sensitivity*: the per-hack paired t-test (Bonferroni across the hacks) disagrees with the pooled "
          "model on: " + ", ".join(f"`{h}`" for h in sens["hack"]) + " (see the effects table).", "")
    failed, unfinished = int(ctx.counts["failed"].sum()), int(ctx.counts["unfinished"].sum())
    if failed:
        d(f"{failed} run(s) failed; they are excluded.", "")
    if unfinished and not ctx.analysis.interim and ctx.analysis.looks:
        # A finished look of an adaptive grid whose next look is under way: say which look the
        # verdicts are, so a reader does not take the undecided ones for final.
        k = len(ctx.analysis.looks)
        d(f"{unfinished} run(s) of look {k + 1} (the undecided hacks' next seeds) had not finished when "
          f"this report was written: its verdicts are look {k}'s, and rerunning the same `ablate grid` "
          "command goes on with the undecided hacks.", "")
    elif unfinished:
        d(f"{unfinished} run(s) had not finished when this report was written; they are excluded.", "")


def interim_notice(ctx) -> str:
    """The warning a report written mid-look carries: its verdicts are provisional."""
    c = ctx.counts
    planned = int(c["runs"].sum())
    finished = planned - int(c["unfinished"].sum())
    look = len(ctx.analysis.looks) or 1
    return (f"{INTERIM_MARK} look {look} is not finished** ({finished} of its {planned} planned runs "
            f"finished). The verdicts below apply look {look}'s boundaries to part of its data: they are "
            "provisional, not the design's, and may change when its runs finish. Rerun the same "
            "`ablate grid` command to finish the look; the report it writes then is the one to cite.")


def _noisiest_text(n: dict, scale: str) -> str:
    """The model check's note on the variant that contributes most residual variance."""
    if not n:
        return ""
    text = f" The largest share of the residual sum of squares is `{n['variant']}`'s, {n['share']:.0%}"
    if "sigma_without" in n:
        text += (f"; it enters no contrast, and without it the residual sd would be "
                 f"{num(n['sigma_without'], 3)} on the {scale} scale ({n['df_without']} df): where that is much "
                 "smaller, the contrasts' intervals are wider than their own variants' spread needs "
                 "(the paired intervals in the effects table are the check)")
    return text + "."


def _failure_bullets(d: _Doc, ctx) -> None:
    c = ctx.counts
    coll = c[c["collapsed"] > 0]
    if c["measured"].sum():
        d(f"**Collapse** (≥ {failures.rule_text(ctx.flags)} modes missing): " + (", ".join(
            f"{r['variant']} {r['collapsed']}/{r['measured']}" for _, r in coll.iterrows())
            if len(coll) else "no finished run") + ".")
    div = c[c["diverged"] > 0]
    d("**Diverged** (NaN/inf; enter the effects through the worst-value rule): " + (", ".join(
        f"{r['variant']} {r['diverged']}/{r['finished']}" for _, r in div.iterrows()) if len(div) else "none") + ".")
    t = ctx.failure_tests
    sig = t[(t["collapse_p_holm"] < ctx.meta.analysis.alpha) | (t["diverge_p_holm"] < ctx.meta.analysis.alpha)] \
        if len(t) else t
    d("Per-hack exact McNemar tests on collapse and divergence: " + (
        ", ".join(f"`{r['hack']}`" for _, r in sig.iterrows()) + " differ (Holm p < α)" if len(sig)
        else "no hack changes the collapse or divergence rate detectably") + ".", "")


def _question(d: _Doc, ctx) -> None:
    d("## Question", "",
      "Which GAN training hacks actually matter for a DCGAN, by how much, and with what certainty? "
      f"Hacks in scope ({len(ctx.meta.hacks)}): " + ", ".join(f"`{h}`" for h in ctx.meta.hacks) + ". "
      "Each hack is compared with its natural alternative (see `ablate hacks`).", "")


def _kv(obj) -> str:
    if isinstance(obj, dict):
        return ", ".join(f"{k}={_kv(v)}" for k, v in obj.items())
    if isinstance(obj, list):
        return "[" + ", ".join(_kv(v) for v in obj) + "]"
    return str(obj)


def _protocol(d: _Doc, ctx) -> None:
    meta, prov = ctx.meta, ctx.provenance
    train = {**(prov.get("train") or {}), **meta.train}
    rows = []
    for data, n in prov.get("data") or []:
        rows.append(("dataset", f"{data.get('dataset', '?')} ({data.get('split', '?')} split), "
                     f"{data.get('num_images', '?')} images of shape {data.get('shape', '?')}, source: "
                     f"{data.get('source', '?')}" + (f" [{n} runs]" if len(prov['data']) > 1 else "")))
    if not prov.get("data"):
        rows.append(("dataset", f"{meta.dataset} (source and size not recorded)"))
    latent = ", ".join(map(str, prov.get("latent_dim") or [])) or "?"
    rows.append(("model", f"DCGAN, ngf={train.get('ngf', '?')}, ndf={train.get('ndf', '?')}, latent dim "
                          f"{latent}; non-saturating generator loss"))
    rows.append(("budget", f"{train.get('steps', '?')} generator steps, batch size {train.get('batch_size', '?')}"))
    for p, n in prov.get("protocol") or [(meta.evaluation, 0)]:
        rows.append(("evaluation (N)", _kv(p) + (f" [{n} runs]" if len(prov.get("protocol") or []) > 1 else "")))
    feats = sorted({parse_metric(m)[1] for m in ctx.metrics if parse_metric(m)[1]})
    acc = _feature_accuracy(prov)
    rows.append(("feature nets", ", ".join(f + (f" ({acc[f]})" if f in acc else "") for f in feats) or "none"))
    rows += [("pinned classifier", line) for line in _pinned(ctx.results.results_dir)]
    if prov.get("mode_rule"):
        rows.append(("mode coverage", "a class counts as covered when its " + " / ".join(prov["mode_rule"])))
    rows.append(("checkpoints", "`best` = lowest validation FID (validation split, never test); `last` = end "
                 f"of training; headline tables use `{ctx.checkpoint}`"))
    pol = meta.seed_policy
    rows.append(("seeds", seeds_text(ctx) + (f"; policy: adaptive, min {pol.min}, max {pol.max}, step {pol.step}"
                                             if pol.adaptive else f"; planned: {list(meta.seeds)}")))
    rows.append(("analysis", f"primary metric {ctx.primary}, SESOI ±{meta.analysis.sesoi:.0%}, α = {meta.analysis.alpha}"))
    extra = (f"; resolution {meta.resolution}" if meta.resolution else "") + "".join(f"; {n}" for n in meta.notes)
    rows.append(("design", f"{meta.design_kind}, {len(ctx.counts)} variants: "
                 + ", ".join(f"`{v}`" for v in ctx.counts["variant"]) + extra))
    if meta.aliasing:
        rows.append(("aliasing (design)", "; ".join(meta.aliasing)))
    d("## Protocol", "", to_markdown(pd.DataFrame(rows, columns=["item", "value"])))


def _pinned(results_dir: Path) -> list[str]:
    """A line per classifier pinned in the results directory (ablate.metrics.classifier.pin)."""
    out = []
    for info_file in sorted(ExperimentDir(results_dir).classifier.glob("*.json")):
        if not info_file.with_suffix(".pt").exists():
            continue  # a pin stopped before its weights were written is none
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            info = None
        info = info if isinstance(info, dict) else {}
        out.append(f"`{CLASSIFIER}/{info_file.stem}.pt`: weights {info.get('weights', '?')}, test accuracy "
                   f"{info.get('test_accuracy', '?')}; every new run of this experiment is scored with "
                   "these weights, on any machine")
    return out


def _feature_accuracy(prov: dict) -> dict[str, str]:
    """Feature net -> 'classifier test accuracy 0.928' from metrics.json provenance, or,
    where the runs were scored by differently trained classifiers of one recipe (another
    CPU kind or thread count trains other weights), each one with its runs."""
    found: dict[str, Counter] = {}
    for p, n in prov.get("metrics_provenance") or []:
        for net, info in ((p or {}).get("features") or {}).items():
            acc = (info or {}).get("classifier_test_accuracy")
            if isinstance(acc, (int, float)) and not isinstance(acc, bool):
                # Runs scored before the fingerprint was recorded: their accuracy tells
                # weights apart (equal accuracies are taken for the same weights).
                which = (float(acc), str(info.get("classifier_weights") or ""))
                found.setdefault(net, Counter())[which] += n
    out: dict[str, str] = {}
    for net, counts in found.items():
        if len({acc for acc, _ in counts}) == 1 and len({w for _, w in counts if w}) <= 1:
            out[net] = f"classifier test accuracy {next(iter(counts))[0]:.3g}"
            continue
        each = ", ".join(f"{acc:.4f}" + (f" [weights {w}]" if w else "") + f" for {n} runs"
                         for (acc, w), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        out[net] = (f"{len(counts)} trainings of one recipe, on different CPU kinds or thread counts, "
                    f"scored these runs: test accuracy {each}; how far a run's FID moves between "
                    "two trainings: docs/statistics.md, \"Which classifier scored a run\"")
    return out


def _results(d: _Doc, ctx) -> None:
    d("## Results per variant", "",
      f"Per variant, {seeds_text(ctx)}: each metric's centre and 95% t interval (FID, KID, the "
      "validation-FID AUC, wall and train times, images/s: geometric mean and an interval on the log "
      "scale, so never below zero; for the rest the mean and a t interval clipped to the metric's "
      "range: precision, recall and coverage 0–1, modes 0 to the number of classes, KL, JS and "
      "density from 0); diverged and collapsed runs "
      "with exact (Clopper-Pearson) 95% intervals. Diverged runs have no metrics.", "")
    d.include_table(ctx.tables.get("variants"))
    if ctx.tables.get("variant_metrics"):
        d(f"Every metric (both checkpoints, every feature net) in long form: {d.table_links(ctx.tables['variant_metrics'])}.", "")
    if ctx.primary:
        d.figure(f"{label(ctx.primary)} per variant", ctx.figures.get("primary"),
                 f"{label(ctx.primary)} per variant: centre and 95% CI; dots are single seeds.")
    d.figure("metrics per variant", ctx.figures.get("metrics"),
             f"Every headline metric per variant ({ctx.checkpoint} checkpoint), centre and 95% CI.")


def _effects(d: _Doc, ctx) -> None:
    d("## Hack effects", "")
    if ctx.effects.empty:
        d("The design has no one-hack contrasts, so there are no verdicts here.", "")
        return
    d(f"Per hack, its design contrast (ON vs OFF variant) in the pooled model of {label(ctx.primary)}: the "
      "ratio ON/OFF, its multiplicity-adjusted 95% interval (agrees with the verdict), the TOST interval "
      "(inside ±SESOI: equivalent) and, as sensitivity, the paired t-test on the hack's own pairs.", "")
    if ctx.meta.seed_policy.adaptive:
        d("Adaptive seeds: only the adjusted and TOST intervals are repeated confidence intervals (they hold "
          "over all looks and agree with the verdicts). The paired, worst-value and mixed-model intervals "
          "are single-look intervals and the p values naive single-look p values, which ignore the looks "
          "(labelled so in the table): read them as sensitivity, not as tests. Each is computed on the runs "
          "of the look that decided its hack (the last look for an undecided one); the mixed model only "
          "where that look's seeds are unbalanced (– elsewhere).", "")
    d.include_table(ctx.tables.get("effects"))
    if ctx.tables.get("effects_compact"):
        d(f"For a paper: hack, verdict, ratio, adjusted 95% CI and seeds with fixed decimals, a bare booktabs "
          f"tabular that fits a portrait page: {d.table_links(ctx.tables['effects_compact'])}.", "")
    d.figure("effect forest plot", ctx.figures.get("forest"),
             "Ratio ON/OFF per hack: thick, the adjusted interval of the pooled model, coloured by verdict; "
             "thin grey, the per-hack paired 95% t interval; shaded, the ±SESOI equivalence band.")
    fit = ctx.analysis.fit
    if fit is not None:
        d(f"Model check: residual sd {num(fit.sigma, 3)} on the {fit.scale} scale, {fit.df_resid} residual df; "
          "equal variance across variants, " + (f"Brown-Forsythe {p_is(fit.levene_p())}" if np.isfinite(
              fit.levene_p()) else "Brown-Forsythe not computable (it needs two variants with 3 or more runs)")
          + "; normal residuals, "
          f"Shapiro-Wilk {p_is(fit.shapiro_p())}." + _noisiest_text(ctx.noisiest, fit.scale), "")
        d.figure("residuals", ctx.figures.get("residuals"), "Residuals of the pooled model: against fitted "
                 "values, and a normal Q-Q plot.")
    if len(ctx.analysis.looks) > 1 or ctx.meta.seed_policy.adaptive:
        d("### Looks", "", f"Seeds per variant at each planned look: {list(ctx.analysis.planned)}.", "")
        for look in ctx.analysis.looks:
            interim = ctx.analysis.interim and look is ctx.analysis.looks[-1]
            d(f"- look {look.index}" + (" (interim: its runs are not all finished)" if interim
                                        else " (final)" if look.done else "") + ": "
              + "; ".join(look.reasons))
        d("")
    if ctx.tables.get("effects_all"):
        d(f"Every other metric (one look, same model and rules): {d.table_links(ctx.tables['effects_all'])}.", "")
    d("### Power", "")
    d.include_table(ctx.tables.get("power"))


def _failures(d: _Doc, ctx) -> None:
    d("## Failures: collapse and divergence", "")
    f = ctx.flags
    if len(f):
        rule = f.iloc[0]
        js = pd.to_numeric(f["js"], errors="coerce")
        # Stacked MNIST runs record mode counts, not class histograms: no JS to calibrate.
        d(f"A run is *collapsed* when it misses ≥ {failures.rule_text(f)} modes (rule of "
          "`ablate.report.failures`; calibrated per run so that real data of the same size is flagged with "
          f"probability ≤ {failures.NULL_FLAG_PROB:g}). " + (
              f"Class JS divergence per run: median {num(js.median(), 2)} (noise floor for real data of "
              f"this size {num(rule['js_noise'], 2)}; a generator dropping the two rarest classes: "
              f"{num(rule['js_two_modes'], 2)})." if js.notna().any() else
              "Class JS divergence: not computed (these runs record mode counts, not class histograms)."),
          "")
    d.include_table(ctx.tables.get("failures"))


def _training(d: _Doc, ctx) -> None:
    if ctx.by_step.empty:
        return
    d("## Effects over training", "",
      "Each hack's ratio ON/OFF of the validation FID at every validation step (pooled model at that "
      "step, interval at α/m, not adjusted across steps). The area under each run's validation-FID curve "
      "(its mean over training) is a secondary metric in the effects-on-every-metric table.", "")
    d.figure("effect of each hack over training", ctx.figures.get("over_training"),
             "Effect of each hack over training: ratio ON/OFF of validation FID per step; band: interval "
             "at α/m; shaded: ±SESOI.")
    if ctx.tables.get("over_training"):
        d(f"Numbers: {d.table_links(ctx.tables['over_training'])}.", "")


def _factorial(d: _Doc, ctx) -> None:
    f = ctx.factorial
    if f is None:
        return
    d("## Factorial analysis", "")
    if f.table.empty:
        d(f"Not fitted: {f.note}.", "")
        return
    d(f"Ordinary least squares (statsmodels) on {f.n_runs} runs of {f.n_variants} variants, each hack coded "
      f"−1 (OFF) / +1 (ON), {'seed blocks as fixed effects, ' if f.blocked_by_seed else ''}response "
      f"{'log ' if f.scale == 'log' else ''}{label(f.metric)}; residual df = {f.df_resid}. An effect is the "
      "OFF→ON change (2β) with its standard error; Holm across terms.", "")
    d.include_table(ctx.tables.get("factorial"))
    if f.aliased:
        d("Two-factor interactions the design does not resolve (aliased; not estimated): "
          + ", ".join(f.aliased) + ".", "")
    if f.note:
        d(f"Note: {f.note}.", "")
    d.figure("half-normal plot", ctx.figures.get("half_normal"),
             "Half-normal plot of |effects|: terms far above the noise line are real effects.")


def _dynamics(d: _Doc, ctx) -> None:
    d("## Training curves, samples and mode coverage", "")
    d.figure("validation FID curves", ctx.figures.get("curves"),
             "Validation FID (`val_fid` in log.jsonl) per variant, mean over seeds, band min–max.")
    d.figure("sample grids", ctx.figures.get("samples"),
             "8×8 samples per variant from one shared latent batch (lowest finished seed).")
    d.figure("class histograms", ctx.figures.get("class_histograms"),
             "Generated class histogram under the classifier, mean over seeds, against the real one.")
    missing = [n for n in ("curves", "samples", "class_histograms") if n not in ctx.figures]
    if missing:
        d(f"Not drawn for lack of data: {', '.join(missing)} (see *Gaps* below).", "")


def _gaps(d: _Doc, ctx) -> None:
    notes = list(dict.fromkeys(ctx.notes + ctx.runs.missing))
    d("## Gaps", "")
    d(*([f"- {n}" for n in notes] or ["Nothing missing: every run had its config, log, samples and metrics."]), "")


def _provenance(d: _Doc, ctx) -> None:
    from ablate.environment import code_commit, versions

    prov = ctx.provenance
    rows = [("git commit (runs)", ", ".join(f"{c} ({n} runs)" for c, n in prov.get("git_commit") or [])
             or "not recorded"), ("code commit (report)", code_commit())]
    rows += [("library versions (runs)", _kv(v) + f" ({n} runs)") for v, n in prov.get("versions") or []]
    rows += [("hack plugins (runs)", f"{p} {v}: {', '.join(names)} ({n} runs)")
             for p, v, names, n in prov.get("plugins") or []]
    rep = versions()
    for pkg in ("pandas", "scipy", "statsmodels", "matplotlib"):
        try:
            rep[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    rows.append(("library versions (report)", _kv(rep)))
    rows += [("hardware", _kv(h) + f" ({n} runs)") for h, n in prov.get("hardware") or []]
    rows += [("device", f"{dev} ({n} runs)") for dev, n in prov.get("device") or []]
    runs = ctx.frame.drop_duplicates("key") if "key" in ctx.frame else ctx.frame  # [axes]: a shared run once
    wall = pd.to_numeric(runs["wall_time_s"], errors="coerce")
    rows.append(("wall time", f"{wall.sum() / 3600:.2f} h summed over {int(wall.notna().sum())} runs"))
    d("## Provenance", "", to_markdown(pd.DataFrame(rows, columns=["item", "value"])))


def _cite(d: _Doc) -> None:
    d("## How to cite", "",
      "Cite the software through `CITATION.cff` at the root of the ablate repository, and cite numbers "
      "together with their protocol (dataset, N, feature net), seeds, interval and the git commit above. "
      "BibTeX:", "", "```bibtex", CITATION_BIBTEX, "```", "")
