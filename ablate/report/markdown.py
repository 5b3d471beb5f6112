"""REPORT.md: a short answer first ("which hacks matter here, by how much, how sure"),
then protocol, tables, figures, statistical method, gaps, provenance and citation.

Every link is written through :func:`_link`, which refuses files that do not exist,
so the report never points at a missing table or figure.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.report import stats
from ablate.report.tables import interval, num, pval, to_markdown

CITATION_BIBTEX = """@software{ablate,
  title   = {ablate: which GAN training hacks actually matter},
  author  = {{ablate contributors}},
  version = {0.1.0},
  year    = {2026},
  license = {MIT}
}"""


def _get(meta: dict, *keys, default=None):
    """Look a key up in the meta, then breadth-first in its nested blocks (experiment.json
    nests ``experiment -> train / evaluation``); the shallowest match wins."""
    level = [meta]
    for _ in range(4):
        for key in keys:
            for node in level:
                if node.get(key) not in (None, "", [], {}):
                    return node[key]
        level = [v for node in level for k, v in node.items()
                 if isinstance(v, dict) and k not in ("hack_info", "reference")]
        if not level:
            break
    return default


class _Doc:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.lines: list[str] = []

    def __call__(self, *lines: str) -> None:
        self.lines.extend(lines)

    def link(self, text: str, path: Path | None, image: bool = False) -> str:
        if path is None or not Path(path).is_file():
            return ""
        rel = os.path.relpath(Path(path), self.out_dir).replace(os.sep, "/")
        return f"{'!' if image else ''}[{text}]({rel})"

    def table_links(self, paths: dict[str, Path] | None) -> str:
        if not paths:
            return ""
        return "Files: " + ", ".join(self.link(ext.upper(), p) for ext, p in paths.items()
                                     if self.link(ext, p))

    def include_table(self, paths: dict[str, Path] | None, max_rows: int = 80) -> None:
        """Inline a Markdown table (or, past ``max_rows`` rows, only link to its files)."""
        if paths and paths.get("md") and paths["md"].is_file():
            body = paths["md"].read_text().split("\n\n", 1)[-1]
            rows = body.count("\n") - 2
            if rows > max_rows:
                self(f"{rows} rows: too long to inline. {self.table_links(paths)}", "")
                return
            self(body.rstrip(), "", self.table_links(paths), "")

    def figure(self, title: str, path: Path | None, caption: str) -> None:
        if path is None or not Path(path).is_file():
            return
        pdf = Path(path).with_suffix(".pdf")
        self(self.link(title, path, image=True), "",
             f"*{caption}* " + (f"({self.link('PDF', pdf)})" if pdf.is_file() else ""), "")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------
def render(ctx) -> str:
    d = _Doc(ctx.out_dir)
    meta, counts, effects = ctx.meta, ctx.counts, ctx.effects
    name = _get(meta, "name", "experiment_name", default=None) or ctx.out_dir.name
    if isinstance(name, dict):
        name = ctx.out_dir.name
    d(f"# ablate report: {name}", "")
    _summary(d, ctx)
    _question(d, ctx)
    _protocol(d, ctx)
    _results(d, ctx)
    _effects(d, ctx)
    _factorial(d, ctx)
    _dynamics(d, ctx)
    _method(d, ctx)
    _gaps(d, ctx)
    _provenance(d, ctx)
    _cite(d)
    return d.text()


def _seeds_text(ctx) -> str:
    done = stats.finished(ctx.frame)
    seeds = sorted(set(done["seed"].tolist()))
    ns = sorted(set(ctx.counts["n"].astype(int)))
    return f"N = {'/'.join(map(str, ns))} seeds per variant (seeds {', '.join(map(str, seeds)) or 'none'})"


def _effect_sentence(e: pd.Series) -> str:
    unit = stats.label(e["metric"])
    s = (f"switching it on changes {unit} by **{num(e['delta'])}** "
         f"(95% CI {interval(e['ci_low'], e['ci_high'])}")
    if e["scale"] == "log" and np.isfinite(e["ratio"]):
        s += f"; ×{num(e['ratio'])}, CI {interval(e['ratio_low'], e['ratio_high'])}"
    s += (f"), {_p('p', e['p'])}, {_p('Holm p', e['p_holm'])}, d_z = {num(e['effect_size'], 2)}, "
          f"n = {e['n']} paired seeds ({e['seeds']}); {e['contrast']}")
    return s


def _p(name: str, p) -> str:
    text = pval(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def _summary(d: _Doc, ctx) -> None:
    primary, effects = ctx.primary, ctx.effects
    design = stats.design_name(ctx.meta)
    dataset = _get(ctx.meta, "dataset", default="?")
    d("## Summary: which hacks matter here, by how much, how sure", "")
    d(f"Design **{design}** on **{dataset}**, {len(ctx.counts)} variants, {_seeds_text(ctx)}. "
      f"Primary metric: **{stats.label(primary) if primary else 'none'}** "
      f"({'lower' if primary and stats.lower_is_better(primary) else 'higher'} is better). "
      "Effects are Δ = metric(hack ON) − metric(hack OFF), paired by seed, tested with a paired "
      "t-test (on log FID for FID), Holm-corrected across hacks at α = 0.05.", "")
    if primary is None or stats.parse_metric(primary)[0] is None:
        d("- **No quality metrics in the run store** (no FID, KID or mode metrics): the runs were "
          "not evaluated (e.g. `[evaluation] features = []`, or `ablate eval` not run yet). "
          "Only run statistics are compared below.")
    _factorial_bullet(d, ctx)  # a factorial design's own analysis leads
    ep = effects[effects["metric"] == primary] if not effects.empty and primary else pd.DataFrame()
    if ep.empty:
        d("- No pair of variants differs in exactly one hack, so no paired hack effects are "
          "reported" + (" (see the factorial analysis below)." if ctx.factorial is not None else "."), "")
    else:
        sig = ep[ep["verdict"].isin(["helps", "hurts"])]
        for _, e in sig.iterrows():
            d(f"- **{e['hack']} {e['verdict']}**: {_effect_sentence(e)}.")
        null = ep[~ep.index.isin(sig.index)]
        if len(null):
            items = "; ".join(f"{e['hack']} (Δ {num(e['delta'])}, CI {interval(e['ci_low'], e['ci_high'])}"
                              f"{', ' + e['kind'] if ep['kind'].nunique() > 1 else ''})"
                              for _, e in null.iterrows())
            ns = sorted(set(null["n"]))
            d(f"- **No detectable effect at n={'/'.join(map(str, ns))}** on {stats.label(primary)}: {items}. "
              "“No detectable effect” is not “no effect”: see the power line below. CIs are "
              "per-comparison 95% intervals; verdicts use the Holm-adjusted p, so a CI that just "
              "excludes 0 can still read “no detectable effect”.")
        untested = [h for h in stats.hacks_in_scope(ctx.frame, ctx.meta) if h not in set(ep["hack"])]
        if untested:
            d("- No paired contrast in this design for: " + ", ".join(untested)
              + (" (see the factorial analysis)." if ctx.factorial is not None else "."))
        if sig.empty:
            d("- No paired hack contrast has a detectable effect on the primary metric at this "
              "number of seeds" + (" (the factorial fit above pools every variant and is the "
                                   "stronger analysis here)." if ctx.factorial is not None else "."))
    pw = ctx.power[ctx.power["metric"] == primary] if not ctx.power.empty and primary else pd.DataFrame()
    if not pw.empty:
        p = pw.iloc[0]
        size = (f"{num(p['mde_percent'], 2)}% of FID (≈ {num(p['mde_raw'], 2)} FID units)"
                if p["scale"] == "log" else f"{num(p['mde'], 2)} ({stats.label(primary)})")
        d(f"- **Power{' (paired contrasts)' if ctx.factorial is not None else ''}**: with n = {p['n']} paired seeds and the observed seed spread "
          f"(sd of paired Δ{' log' if p['scale'] == 'log' else ''} = {num(p['pooled_sd'], 2)}), "
          "this design detects, with 80% power at "
          f"α = 0.05 after Holm over {p['tests']} tests, only effects of about **{size}** or larger.")
    coll = ctx.counts.dropna(subset=["collapse_rate"])
    coll = coll[coll["collapsed"] > 0]
    if len(coll):
        d("- **Collapse** (modes < {:.0%} of the dataset's modes or class KL > {} nats): ".format(
            stats.COLLAPSE_MODE_FRACTION, stats.COLLAPSE_KL)
          + ", ".join(f"{r['variant']} {int(r['collapsed'])}/{r['n']}" for _, r in coll.iterrows()) + ".")
    elif ctx.counts["collapse_rate"].notna().any():
        d("- **Collapse**: no finished run crossed the collapse threshold.")
    div = ctx.counts[ctx.counts["diverged"] > 0]
    if len(div):
        d("- **Diverged** (NaN/inf, excluded from means and tests): "
          + ", ".join(f"{r['variant']} {r['diverged']}/{r['runs']}" for _, r in div.iterrows()) + ".")
    other = effects[(effects["metric"] != primary)
                    & effects["verdict"].isin(["helps", "hurts"])
                    & effects["metric"].map(lambda m: stats.parse_metric(m)[0] in (ctx.checkpoint, None))] \
        if not effects.empty else effects
    if len(other):
        shown = other.head(8)
        d("- Other metrics with a detectable effect: " + "; ".join(
            f"{r['hack']} {r['verdict']} {stats.label(r['metric'])} (Δ {num(r['delta'])}, "
            f"CI {interval(r['ci_low'], r['ci_high'])}, Holm p {pval(r['p_holm'])})"
            for _, r in shown.iterrows()) + (f"; and {len(other) - len(shown)} more" if len(other) > len(shown) else "")
          + f" — full list in {d.link('effects_all', (ctx.tables.get('effects_all') or {}).get('md'))}.")
    unfinished = int(ctx.counts["unfinished"].sum()) + int(ctx.counts["failed"].sum())
    if unfinished:
        d(f"- {unfinished} run(s) failed or had not finished when this report was written; they are excluded.")
    d("")


def _factorial_bullet(d: _Doc, ctx) -> None:
    if ctx.factorial is not None and not ctx.factorial.table.empty:
        t = ctx.factorial.table
        sig = t[t["p_holm"] < stats.ALPHA]
        if len(sig):
            log = " on log scale" if ctx.factorial.scale == "log" else ""
            parts = "; ".join(f"{r['term']} {r['verdict']} (effect{log} {num(r['effect'])} ± {num(r['se'], 2)} SE"
                              + (f", ×{num(r['ratio'])}" if np.isfinite(r["ratio"]) else "") + ")"
                              for _, r in sig.iterrows())
            d(f"- **Factorial (least squares)**: {parts}.")
        else:
            d("- **Factorial (least squares)**: no main effect or interaction is detectable after Holm.")
        f = ctx.factorial
        if np.isfinite(f.mde):
            size = (f"{num(100 * (np.exp(f.mde) - 1), 2)}% of FID" if f.scale == "log"
                    else f"{num(f.mde, 2)}")
            d(f"- **Power (factorial)**: pooling all {f.n_runs} runs, a main effect of about **{size}** "
              f"is detectable with 80% power at α = 0.05 after Holm over {len(f.table)} terms.")


def _question(d: _Doc, ctx) -> None:
    hacks = stats.hacks_in_scope(ctx.frame, ctx.meta)
    d("## Question", "",
      "Which GAN training hacks actually matter for a DCGAN, by how much, and with what certainty? "
      f"Hacks in scope ({len(hacks)}): " + ", ".join(f"`{h}`" for h in hacks) + ". "
      "Each hack is compared with its natural alternative (see `ablate hacks`).", "")


def _protocol(d: _Doc, ctx) -> None:
    meta, prov = ctx.meta, ctx.provenance
    train = prov.get("train") or {}
    d("## Protocol", "")
    rows = []
    datas = prov.get("data") or []
    if datas:
        for data, n in datas:
            rows.append(("dataset", f"{data.get('dataset', '?')} ({data.get('split', '?')} split), "
                         f"{data.get('num_images', '?')} images of shape {data.get('shape', '?')}, "
                         f"source: {data.get('source', '?')}" + (f" [{n} runs]" if len(datas) > 1 else "")))
    else:
        rows.append(("dataset", f"{_get(meta, 'dataset', default='?')} (source and size not recorded)"))
    ngf = _get(meta, "ngf", default=train.get("ngf", "?"))
    ndf = _get(meta, "ndf", default=train.get("ndf", "?"))
    latent = ", ".join(map(str, prov.get("latent_dim") or [])) or "?"
    rows.append(("model", f"DCGAN, generator width ngf={ngf}, discriminator width ndf={ndf}, "
                          f"latent dim {latent}; non-saturating generator loss"))
    steps = _get(meta, "steps", default=train.get("steps", "?"))
    bs = _get(meta, "batch_size", default=train.get("batch_size", "?"))
    rows.append(("budget", f"{steps} generator steps, batch size {bs}"))
    protocols = prov.get("protocol") or []
    ev = _get(meta, "evaluation", "eval", "protocol", default=None)
    if protocols:
        for p, n in protocols:
            rows.append(("evaluation (N)", _kv(p) + (f" [{n} runs]" if len(protocols) > 1 else "")))
    elif isinstance(ev, dict):
        rows.append(("evaluation (N)", _kv(ev)))
    else:
        rows.append(("evaluation (N)", "not recorded (FID depends on N: compare only at equal N)"))
    feats = sorted({stats.parse_metric(m)[1] for m in ctx.metrics if stats.parse_metric(m)[1]})
    acc = _feature_accuracy(prov)
    rows.append(("feature nets", ", ".join(f"{f}" + (f" ({acc[f]})" if f in acc else "") for f in feats)
                 or "none"))
    if prov.get("mode_rule"):
        rows.append(("mode coverage", "a class counts as covered when its "
                     + " / ".join(prov["mode_rule"]) + " (from metrics.json)"))
    rows.append(("checkpoints", "`best` = lowest validation FID (validation split, never test); "
                 "`last` = end of training; headline tables use "
                 f"`{ctx.checkpoint}`"))
    rows.append(("seeds", _seeds_text(ctx) + (f"; planned: {_get(meta, 'seeds')}" if _get(meta, "seeds") else "")))
    design = meta.get("design") if isinstance(meta.get("design"), dict) else {}
    extra = ""
    if design.get("resolution"):
        extra += f"; resolution {design['resolution']}"
    if design.get("notes"):
        extra += "; " + "; ".join(map(str, design["notes"]))
    rows.append(("design", f"{stats.design_name(meta)}, {len(ctx.counts)} variants: "
                 + ", ".join(f"`{v}`" for v in ctx.counts["variant"]) + extra))
    if design.get("aliasing"):
        rows.append(("aliasing (design)", "; ".join(map(str, design["aliasing"]))))
    d(to_markdown(pd.DataFrame(rows, columns=["", ""]).set_axis(["item", "value"], axis=1)))


def _kv(obj) -> str:
    if isinstance(obj, dict):
        return ", ".join(f"{k}={_kv(v)}" for k, v in obj.items())
    if isinstance(obj, list):
        return "[" + ", ".join(_kv(v) for v in obj) + "]"
    return str(obj)


def _feature_accuracy(prov: dict) -> dict[str, str]:
    """Feature net -> 'classifier test accuracy 0.891' from metrics.json provenance: any
    numeric key mentioning 'acc', attributed to the nearest enclosing feature-net name."""
    out: dict[str, str] = {}

    def walk(node, net):
        if not isinstance(node, dict):
            return
        for k, v in node.items():
            here = k if k in stats.FEATURES else net
            if isinstance(v, dict):
                walk(v, here)
            elif "acc" in str(k).lower() and isinstance(v, (int, float)) and not isinstance(v, bool):
                if "target" not in str(k).lower():
                    out.setdefault(here or "classifier", f"{str(k).replace('_', ' ')} {v:.3g}")

    for p, _ in prov.get("metrics_provenance") or []:
        walk(p, None)
    return out


def _results(d: _Doc, ctx) -> None:
    d("## Results per variant", "",
      f"Mean ± std [95% t CI] over seeds; {_seeds_text(ctx)}. `collapsed` counts finished runs "
      f"whose classifier mode coverage is below {stats.COLLAPSE_MODE_FRACTION:.0%} of the dataset's "
      f"modes or whose class KL exceeds {stats.COLLAPSE_KL} nats. Diverged runs have no metrics "
      "and are excluded from the means.", "")
    d.include_table(ctx.tables.get("variants"))
    t = ctx.tables.get("variant_metrics")
    if t:
        d(f"Every metric (both checkpoints, every feature net) in long form: {d.table_links(t)[7:]}.", "")
    if ctx.primary:
        d.figure(f"{stats.label(ctx.primary)} per variant", ctx.figures.get("primary"),
                 f"{stats.label(ctx.primary)} per variant: mean and 95% CI; dots are single seeds.")
    d.figure("metrics per variant", ctx.figures.get("metrics"),
             f"Every headline metric per variant ({ctx.checkpoint} checkpoint), mean and 95% CI.")


def _effects(d: _Doc, ctx) -> None:
    d("## Hack effects", "")
    if ctx.effects.empty:
        d("No two variants differ in exactly one hack, so there are no paired effects.", "")
        return
    d("For each hack, every pair of variants that differ only in that hack and involve a reference "
      "(leave-one-out: all-on vs all-on minus the hack; add-one-in: all-off plus the hack vs "
      "all-off). Δ = ON − OFF per seed, averaged; for FID a negative Δ means the hack helps.", "")
    d.include_table(ctx.tables.get("effects"))
    d.figure("effect forest plot", ctx.figures.get("forest"),
             "Δ per hack with 95% t CI (thin) and bootstrap CI (thick), coloured by verdict.")
    t = ctx.tables.get("effects_all")
    if t:
        d(f"Effects on every metric: {d.table_links(t)[7:]}.", "")
    d("### Power", "")
    d.include_table(ctx.tables.get("power"))
    ns = sorted(set(ctx.effects["n"]))
    n = min(ns) if ns else 0
    d(f"Sign-flip (permutation) and signed-rank tests are not reported: with n paired seeds their "
      f"smallest possible two-sided p is 2/2^n = {stats.min_rank_test_p(n):.3g} at n = {n}, "
      "so they cannot reach p < 0.05 below n = 6; at n ≥ 6 the Wilcoxon p appears in the CSV.", "")


def _factorial(d: _Doc, ctx) -> None:
    f = ctx.factorial
    if f is None:
        return
    d("## Factorial analysis", "")
    if f.table.empty:
        d(f"Not fitted: {f.note}.", "")
        return
    d(f"Ordinary least squares (statsmodels) on {f.n_runs} runs of {f.n_variants} variants, each hack "
      f"coded −1 (OFF) / +1 (ON), {'seed blocks as fixed effects, ' if f.blocked_by_seed else ''}"
      f"response {'log ' if f.scale == 'log' else ''}{stats.label(f.metric)}; residual df = {f.df_resid}. "
      "An effect is the OFF→ON change (2β) with its standard error; Holm across terms.", "")
    d.include_table(ctx.tables.get("factorial"))
    if f.aliased:
        d(f"Two-factor interactions the design does not resolve (aliased with other terms; "
          f"not estimated): {', '.join(f.aliased)}.", "")
    if f.note:
        d(f"Note: {f.note}.", "")
    d.figure("half-normal plot", ctx.figures.get("half_normal"),
             "Half-normal plot of |effects|: terms far above the noise line are real effects.")


def _dynamics(d: _Doc, ctx) -> None:
    d("## Training curves, samples and mode coverage", "")
    d.figure("validation FID curves", ctx.figures.get("curves"),
             f"Validation FID (`{ctx.curve_key}` in log.jsonl) per variant, mean over seeds, band min–max.")
    d.figure("sample grids", ctx.figures.get("samples"),
             "8×8 samples per variant from one shared latent batch (lowest finished seed).")
    d.figure("class histograms", ctx.figures.get("class_histograms"),
             "Generated class histogram under the classifier, mean over seeds, against the real one.")
    missing = [n for n in ("curves", "samples", "class_histograms") if n not in ctx.figures]
    if missing:
        d(f"Not drawn for lack of data: {', '.join(missing)} (see *Gaps* below).", "")


def _method(d: _Doc, ctx) -> None:
    d("## Statistical method", "",
      "- **Per variant**: mean, sample std and a Student-t 95% CI over the finished seeds. "
      "Diverged, failed and unfinished runs are counted, not averaged; a hack that makes runs "
      "diverge shows in the `diverged` column, not in Δ (pairs need both runs finished).",
      "- **Effects**: paired by seed, Δ = ON − OFF. CIs: Student-t on the paired differences "
      f"(primary) and a bootstrap of the mean difference (`scipy.stats.bootstrap`, "
      f"{stats.BOOTSTRAP_RESAMPLES} resamples, percentile below 10 pairs, BCa above; with 3 pairs "
      "only 10 distinct resamples exist, so the bootstrap CI is too narrow and is shown for reference only).",
      "- **Test**: paired t-test (`scipy.stats.ttest_rel`) on log FID (effects of training choices "
      "on FID are closer to multiplicative, and the log tames the heavy tail of collapsed seeds); on the "
      "raw value for other metrics. Holm correction (`statsmodels multipletests`) across all hack "
      "contrasts of each metric (leave-one-out and add-one-in together where both exist). Effect size d_z = mean / sd of the paired differences on the test scale.",
      f"- **Verdict**: “helps” or “hurts” when the Holm-adjusted p < {stats.ALPHA} (direction from the "
      "sign of Δ and whether lower is better), otherwise “no detectable effect at n=N”.",
      f"- **Power**: the smallest paired effect detectable with {stats.POWER:.0%} power by a two-sided "
      "paired t-test at α/m (the first Holm step, so regardless of the other hacks), from the noncentral "
      "t distribution, times the pooled sd of the paired differences.",
      f"- **Collapse**: a run is collapsed when classifier mode coverage < {stats.COLLAPSE_MODE_FRACTION:.0%} "
      f"of the dataset's modes (8 of 10; 800 of 1000 on Stacked MNIST) or class KL(p_gen ‖ p_real) > "
      f"{stats.COLLAPSE_KL} nats (a one-class generator has KL ≈ log 10 ≈ 2.3).",
      "- **Factorial designs**: OLS on ±1-coded hacks with seed blocks; an interaction is estimated "
      "only if dropping its column lowers the rank of the model with every main effect and every "
      "two-factor interaction (i.e. it is not aliased).", "")


def _gaps(d: _Doc, ctx) -> None:
    notes = list(dict.fromkeys(ctx.notes))
    d("## Gaps", "")
    if notes:
        d(*[f"- {n}" for n in notes], "")
    else:
        d("Nothing missing: every run had its config, log, samples and metrics.", "")


def _provenance(d: _Doc, ctx) -> None:
    from ablate.environment import git_commit, versions

    prov = ctx.provenance
    d("## Provenance", "")
    rows = []
    commits = prov.get("git_commit") or []
    rows.append(("git commit (runs)", ", ".join(f"{c} ({n} runs)" for c, n in commits) or "not recorded"))
    rows.append(("git commit (report)", git_commit()))
    for v, n in prov.get("versions") or []:
        rows.append(("library versions (runs)", _kv(v) + f" ({n} runs)"))
    rep = versions()
    for pkg in ("pandas", "statsmodels", "matplotlib"):
        try:
            rep[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    rows.append(("library versions (report)", _kv(rep)))
    for h, n in prov.get("hardware") or []:
        rows.append(("hardware", _kv(h) + f" ({n} runs)"))
    for dev, n in prov.get("device") or []:
        rows.append(("device", f"{dev} ({n} runs)"))
    f = ctx.frame
    if "wall_time_s" in f.columns:
        wall = float(pd.to_numeric(f["wall_time_s"], errors="coerce").sum())
        rows.append(("wall time", f"{wall / 3600:.2f} h summed over {int(f['wall_time_s'].notna().sum())} runs"))
    rows.append(("report written", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    d(to_markdown(pd.DataFrame(rows, columns=["item", "value"])))


def _cite(d: _Doc) -> None:
    d("## How to cite", "",
      "Cite the software through `CITATION.cff` at the root of the ablate repository, and cite "
      "numbers together with their protocol (dataset, N, feature net), seeds, CI and the git "
      "commit above. BibTeX:", "", "```bibtex", CITATION_BIBTEX, "```", "")
