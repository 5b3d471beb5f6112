"""The report on a synthetic run store with known effects (tests/report_synthetic.py):
batch-norm ON adds +5 FID with small noise, the other hacks add nothing."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import EFFECTS, HACKS, make_store  # noqa: E402

from ablate.report import build_report, stats  # noqa: E402

PRIMARY = "best.classifier.fid"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def loo(tmp_path_factory):
    """Leave-one-out store with every artefact, and its report."""
    root = tmp_path_factory.mktemp("loo")
    frame, meta = make_store(root, "leave-one-out")
    report = build_report(frame, meta, root)
    return frame, meta, root, report


def _row(effects, hack, metric=PRIMARY, kind=None):
    e = effects[(effects["metric"] == metric) & (effects["hack"] == hack)]
    if kind:
        e = e[e["kind"] == kind]
    assert len(e) == 1, e
    return e.iloc[0]


# --------------------------------------------------------------------------------------
# Known effects are recovered; the null is not flagged
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["leave-one-out", "add-one-in"])
def test_recovers_known_effect_and_not_the_null(tmp_path, design):
    frame, meta = make_store(tmp_path, design, artefacts=False)
    effects = stats.hack_effects(frame, meta, [PRIMARY, "best.classifier.modes"])
    kind = design
    bn = _row(effects, "batch-norm", kind=kind)
    assert bn["n"] == 3 and bn["seeds"] == "0,1,2"
    assert bn["delta"] > 0  # ON − OFF: +5 FID, so the hack hurts here
    assert bn["ci_low"] <= EFFECTS["batch-norm"] <= bn["ci_high"]
    assert abs(bn["delta"] - 5.0) < 1.0
    assert bn["ci_low"] > 0  # the CI excludes zero
    assert bn["scale"] == "log" and bn["ratio"] > 1 and bn["ratio_low"] > 1
    assert bn["p_holm"] < 0.05 and bn["p_holm"] >= bn["p"]
    assert bn["verdict"] == "hurts"
    assert bn["effect_size"] > 3
    for hack in ("label-smoothing", "noisy-labels"):
        null = _row(effects, hack, kind=kind)
        assert null["p_holm"] >= 0.05
        assert null["ci_low"] < 0 < null["ci_high"]
        assert null["verdict"] == "no detectable effect at n=3"
    # Rank tests are not reported at n=3: they cannot reach p < 0.05.
    assert effects["p_wilcoxon"].isna().all()
    assert stats.min_rank_test_p(3) == 0.25 and stats.min_rank_test_p(6) < 0.05


def test_sign_convention_negative_delta_means_helps(tmp_path):
    effects = dict(EFFECTS, **{"batch-norm": -5.0})
    frame, meta = make_store(tmp_path, "leave-one-out", effects=effects, artefacts=False)
    bn = _row(stats.hack_effects(frame, meta, [PRIMARY]), "batch-norm")
    assert bn["delta"] < 0 and bn["verdict"] == "helps"


def test_holm_matches_definition():
    p = pd.Series([0.01, 0.04, 0.03, np.nan])
    adj = stats.holm(p)
    # sorted 0.01, 0.03, 0.04 -> ×3, ×2, ×1 with running max: 0.03, 0.06, 0.06
    assert adj.tolist()[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adj.iloc[3])


def test_power_is_the_smallest_detectable_effect(loo):
    frame, meta, _, _ = loo
    effects = stats.hack_effects(frame, meta, [PRIMARY])
    power = stats.power_table(effects, stats.summarize_variants(frame, meta, [PRIMARY]))
    row = power.iloc[0]
    assert row["tests"] == len(HACKS) and row["n"] == 3
    assert row["alpha_first_step"] == pytest.approx(0.05 / len(HACKS))
    # At d_z_min the paired t-test has 80% power (noncentral t, df = 2).
    # Checked by simulation: paired differences ~ N(d_z_min, 1), n = 3.
    from scipy import stats as sps

    x = np.random.default_rng(0).normal(row["d_z_min"], 1.0, size=(40000, 3))
    t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(3))
    tc = sps.t.ppf(1 - row["alpha_first_step"] / 2, 2)
    assert (np.abs(t) > tc).mean() == pytest.approx(0.8, abs=0.01)
    assert row["d_z_min"] == pytest.approx(6.546, abs=0.01)
    # The detected +5 FID (≈12%) is above the detectable size; the nulls are far below it.
    assert 0 < row["mde_percent"] < 12


def test_collapse_and_divergence_are_counted(loo):
    frame, meta, _, _ = loo
    counts = stats.variant_counts(frame, meta).set_index("variant")
    assert counts.loc["-leaky-relu", "collapsed"] == 1
    assert counts.loc["-leaky-relu", "collapse_rate"] == pytest.approx(1 / 3)
    assert counts.loc["all-on", "collapsed"] == 0
    assert counts.loc["all-on", "diverged"] == 1 and counts.loc["all-on", "unfinished"] == 1
    assert counts.loc["all-on", "n"] == 3  # the diverged and pending runs are not averaged
    summary = stats.summarize_variants(frame, meta, [PRIMARY]).set_index("variant")
    assert summary.loc["all-on", "n"] == 3
    assert summary.loc["all-on", "ci_low"] < summary.loc["all-on", "mean"] < summary.loc["all-on", "ci_high"]


def test_factorial_recovers_main_effects_and_interaction(tmp_path):
    frame, meta = make_store(tmp_path, "full-factorial", interaction=3.0, artefacts=False)
    fit = stats.factorial_effects(frame, meta, PRIMARY)
    t = fit.table.set_index("term")
    assert fit.scale == "log" and fit.blocked_by_seed and not fit.aliased
    assert len(t) == 4 + 6  # every main effect and every two-factor interaction
    assert t.loc["batch-norm", "verdict"] == "hurts" and t.loc["batch-norm", "effect"] > 0
    assert t.loc["batch-norm×label-smoothing", "verdict"] == "interacts"
    # SE of an effect = 2σ/√runs (σ ≈ noise on log scale); the detectable size is a few SEs.
    assert 2 * t.loc["noisy-labels", "se"] < fit.mde < t.loc["batch-norm", "effect"]
    for term in ("noisy-labels", "leaky-relu", "noisy-labels×leaky-relu"):
        assert t.loc[term, "p_holm"] >= 0.05
    # The same fit on the raw scale: a main effect is the mean OFF->ON change (2β).
    raw = frame.assign(**{"best.classifier.gain": frame[PRIMARY]})
    # kid_mean is FID/1000 in the synthetic store: raw-scale effect = (5 + 3/2)/1000.
    kid = stats.factorial_effects(raw, meta, "best.classifier.kid_mean").table.set_index("term")
    assert kid.loc["batch-norm", "effect"] == pytest.approx(6.5e-3, abs=5e-4)


def test_fractional_factorial_flags_aliased_interactions(tmp_path):
    frame, meta = make_store(tmp_path, "full-factorial", artefacts=False)
    coded = np.prod([np.where(frame[f"hack:{h}"], 1, -1) for h in HACKS], axis=0)
    half = frame[coded == 1]  # 2^(4-1), resolution IV: 2FIs aliased in pairs
    meta = dict(meta, design=dict(meta["design"], kind="fractional-factorial", resolution=4))
    fit = stats.factorial_effects(half, meta, PRIMARY)
    assert set(fit.table["kind"]) == {"main"}
    assert len(fit.aliased) == 6
    assert fit.table.set_index("term").loc["batch-norm", "verdict"] == "hurts"


# --------------------------------------------------------------------------------------
# Files: LaTeX, figures, REPORT.md
# --------------------------------------------------------------------------------------
def _latex_balanced(text: str) -> None:
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", text):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"\\end{{{env}}} without matching \\begin"
    assert not stack, f"unclosed environments: {stack}"
    assert text.count("{") - text.count("\\{") == text.count("}") - text.count("\\}")


def test_latex_is_well_formed_booktabs(loo):
    _, _, root, _ = loo
    texs = sorted((root / "tables").glob("*.tex"))
    assert {p.stem for p in texs} >= {"variants", "variant_metrics", "effects", "effects_all", "power"}
    for path in texs:
        text = path.read_text()
        _latex_balanced(text)
        assert "\\begin{tabular}" in text and "\\begin{table}" in text
        for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
            assert text.count(rule) == 1, (path.name, rule)
        assert text.index("\\toprule") < text.index("\\midrule") < text.index("\\bottomrule")
        assert text.isascii(), path.name  # Δ, ±, × are spelled in LaTeX
        body_text = re.sub(r"\\label\{[^}]*\}", "", text.split("\n", 1)[1])  # labels may hold _
        for line in body_text.splitlines():  # math mode ($\Delta$) opens and closes per line
            assert (line.count("$") - line.count("\\$")) % 2 == 0, line
        text_mode = re.sub(r"(?<!\\)\$[^$]*\$", "", body_text)
        assert not re.search(r"(?<!\\)[_%#$^~]", text_mode), path.name  # special chars escaped
        ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1))
        body = text.split("\\midrule")[1].split("\\bottomrule")[0]
        for line in filter(None, (ln.strip() for ln in body.splitlines())):
            assert line.endswith("\\\\") and line.count(" & ") == ncols - 1, line


def test_every_table_has_md_csv_tex(loo):
    _, _, root, _ = loo
    for name in ("variants", "effects", "power"):
        for ext in ("md", "csv", "tex"):
            assert (root / "tables" / f"{name}.{ext}").stat().st_size > 0
    effects = pd.read_csv(root / "tables" / "effects.csv")
    assert set(effects["hack"]) == set(HACKS)
    assert (effects.set_index("hack").loc["batch-norm", "verdict"]) == "hurts"


FIGURES = ("primary_metric", "metrics", "effects", "val_fid_curves", "samples", "class_histograms")


def test_every_figure_is_written_and_non_empty(loo):
    _, _, root, _ = loo
    for name in FIGURES:
        png, pdf = root / "figures" / f"{name}.png", root / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000, name
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000, name


def test_half_normal_plot(tmp_path):
    from ablate.report import figures

    frame, meta = make_store(tmp_path, "full-factorial", interaction=3.0, artefacts=False)
    fit = stats.factorial_effects(frame, meta, PRIMARY)
    png = figures.half_normal(fit, tmp_path / "figures")
    assert png.stat().st_size > 2000 and png.with_suffix(".pdf").stat().st_size > 1000


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _assert_links_resolve(report: Path) -> list[str]:
    links = _LINK.findall(report.read_text())
    for target in links:
        assert not re.match(r"[a-z]+://", target), target
        assert (report.parent / target).is_file(), f"REPORT.md links to missing {target}"
    return links


def test_report_md_links_resolve_and_answers_first(loo):
    _, _, root, report = loo
    links = _assert_links_resolve(report)
    assert len(links) >= 20
    for name in FIGURES:
        assert f"figures/{name}.png" in links
    text = report.read_text()
    head = text.split("## Question")[0]  # the short answer comes first
    assert "batch-norm hurts" in head and "Holm" in head
    assert "No detectable effect at n=3" in head and "label-smoothing" in head
    assert "Power" in head and "Collapse" in head and "-leaky-relu 1/3" in head
    for section in ("## Protocol", "## Results per variant", "## Hack effects", "## Provenance",
                    "## How to cite", "CITATION.cff"):
        assert section in text
    assert "classifier test accuracy 0.891" in text  # feature net with its accuracy
    assert "/usr/share/datasets/fashion-mnist" in text and "60000 images" in text
    assert "abc1234" in text  # the runs' git commit
    assert "2/2^n = 0.25" in text  # why no sign-flip / rank tests


def test_missing_artefacts_are_reported_not_fatal(tmp_path):
    frame, meta = make_store(tmp_path, "leave-one-out", artefacts=False)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("last.")])
    report = build_report(frame, meta, tmp_path / "out")
    _assert_links_resolve(report)
    text = report.read_text()
    gaps = text.split("## Gaps")[1].split("##")[0]
    assert "config.json" in gaps and "samples.png" in gaps and "validation-FID" in gaps
    assert "class-histogram figure is skipped" in gaps
    assert not (tmp_path / "out" / "figures" / "samples.png").exists()
    assert (tmp_path / "out" / "figures" / "effects.png").stat().st_size > 0


# --------------------------------------------------------------------------------------
# CLI and repository files
# --------------------------------------------------------------------------------------
def test_cli_missing_results_dir_exits_2(tmp_path, capsys):
    from ablate.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "ablate grid" in err


def test_cli_writes_report_through_the_store(tmp_path, monkeypatch, capsys):
    from ablate.cli import main

    frame, meta = make_store(tmp_path, "add-one-in", artefacts=False, flat=True)
    fake = types.ModuleType("ablate.store")
    fake.load_frame = lambda results_dir: frame
    fake.load_experiment_meta = lambda results_dir: meta
    monkeypatch.setitem(sys.modules, "ablate.store", fake)
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "REPORT.md")
    assert "batch-norm hurts" in (tmp_path / "REPORT.md").read_text()


def test_citation_cff():
    text = (REPO / "CITATION.cff").read_text()
    for needle in ("cff-version: 1.2.0", "title: ablate", "version: 0.1.0",
                   'date-released: "2026-11-28"', 'name: "ablate contributors"', "license: MIT"):
        assert needle in text


def test_explicit_design_pairs_declared_references():
    rows = []
    variants = {"bn": {"batch-norm"}, "bn+ls": {"batch-norm", "label-smoothing"},
                "ls+nl": {"label-smoothing", "noisy-labels"}}
    for v, on in variants.items():
        for seed in (0, 1, 2):
            rows.append({"variant": v, "seed": seed, "status": "done",
                         **{f"hack:{h}": h in on for h in HACKS},
                         PRIMARY: 30.0 + 4 * ("label-smoothing" in on) + 2 * ("noisy-labels" in on)
                         + seed + 0.1 * np.sin(seed + len(v))})
    frame = pd.DataFrame(rows)
    meta = {"design": {"kind": "explicit", "comparisons": [{"hack": "label-smoothing", "on": "bn+ls",
                                                              "off": "bn"}]},
            "hacks": list(HACKS), "variants": [{"name": v} for v in variants]}
    cs = stats.contrasts(frame, meta)
    assert [(c.hack, c.on, c.off, c.kind) for c in cs] == [("label-smoothing", "bn+ls", "bn", "reference")]
    e = stats.hack_effects(frame, meta, [PRIMARY]).iloc[0]
    assert e["delta"] == pytest.approx(4.0, abs=0.3) and e["verdict"] == "hurts"
    assert not stats.is_factorial(meta)
