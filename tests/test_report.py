"""The report end to end on synthetic results directories written by the real writers
(tests/report_synthetic.py): batch-norm ON multiplies FID by 1.25, the other hacks do
nothing. Results contract, verdict-first REPORT.md, files, reproducibility, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_synthetic import HACKS, PRIMARY, make_results  # noqa: E402

from ablate.config import AnalysisSpec, SeedPolicy  # noqa: E402
from ablate.errors import ConfigError  # noqa: E402
from ablate.report import build_report, write_report  # noqa: E402
from ablate.report.results import Results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def loo(tmp_path_factory):
    """A leave-one-out results directory with every artefact, and its report."""
    root = make_results(tmp_path_factory.mktemp("loo"))
    return root, write_report(root)


# --------------------------------------------------------------------------------------
# The results contract
# --------------------------------------------------------------------------------------
def test_results_load_gives_typed_meta_and_the_designs_contrasts(loo):
    root, _ = loo
    r = Results.load(root)
    assert r.meta.design_kind == "leave-one-out" and r.meta.hacks == HACKS
    assert [(c.hack, c.on, c.off) for c in r.meta.comparisons] == [(h, "all-on", f"-{h}") for h in HACKS]
    assert r.meta.analysis == AnalysisSpec() and r.meta.seed_policy == SeedPolicy()  # defaults
    assert r.meta.variant_names[0] == "all-on" and r.meta.train["steps"] == 300
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.meta.name = "x"  # frozen
    assert set(r.frame["status"]) == {"done", "diverged", "pending"}


def test_analysis_and_seed_policy_are_read_from_experiment_json(tmp_path):
    root = make_results(tmp_path, artefacts=False, analysis={"sesoi": 0.2, "alpha": 0.1, "metric": None},
                        seed_policy={"seeds": [0, 1, 2, 3], "adaptive": True, "min": 3, "max": 4, "step": 1})
    meta = Results.load(root).meta
    assert meta.analysis == AnalysisSpec(sesoi=0.2, alpha=0.1)
    assert meta.seed_policy.adaptive and meta.seed_policy.looks() == (3, 4)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.pop("design"), "'design'"),
    (lambda m: m["design"].update(comparisons="x"), "'comparisons'"),
    (lambda m: m["design"]["comparisons"].append({"hack": "h", "on": "nope", "off": "all-on"}), "nope"),
    (lambda m: m.update(analysis={"sesoi": 0.1, "typo": 1}), "typo"),
    (lambda m: m.update(analysis={"sesoi": 3}), "sesoi"),
])
def test_malformed_experiment_json_is_a_config_error(tmp_path, edit, needle):
    root = make_results(tmp_path, artefacts=False)
    meta = json.loads((root / "experiment.json").read_text())
    edit(meta)
    (root / "experiment.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        Results.load(root)


def test_missing_or_corrupt_results_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Results.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="experiment.json"):
        Results.load(tmp_path / "empty")
    root = make_results(tmp_path / "r", artefacts=False)
    (root / "experiment.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        Results.load(root)
    root = make_results(tmp_path / "s", artefacts=False)
    for p in root.glob("runs.sqlite*"):
        p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="run store"):
        Results.load(root)


# --------------------------------------------------------------------------------------
# REPORT.md and its files
# --------------------------------------------------------------------------------------
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_report_leads_with_the_four_verdict_groups(loo):
    root, report = loo
    text = report.read_text()
    summary = text.split("## Question")[0]
    for group in ("**Helps**", "**Hurts** (1 of 4)", "**Equivalent within ±10%**", "**Undecided**"):
        assert group in summary
    hurts = summary.split("**Hurts**")[1].split("**Equivalent")[0]
    assert re.search(r"`batch-norm`: ×1\.2\d", hurts)
    eq = summary.split("**Equivalent within ±10%**")[1].split("**Undecided")[0]
    for hack in ("leaky-relu", "label-smoothing", "noisy-labels"):  # noise is 1%: ±10% is provable
        assert f"`{hack}`" in eq
    assert "**Power**" in summary and "a decrease of" in summary and "an increase of" in summary
    assert "seeds per variant, residual df" in summary  # one number of seeds: no range to state
    assert "-leaky-relu 1/3" in summary  # the collapsed run
    assert "all-on 1/4" in summary  # the diverged run (3 done + 1 diverged)
    method = text.split("## Statistical method")[1]
    for needle in ("Holm", "Lan & DeMets 1983", "Maurer & Bretz 2013", "Schuirmann 1987", "Jennison"):
        assert needle in method
    for target in _LINK.findall(text):
        assert (report.parent / target).is_file(), target
    assert "abc1234" in text and "classifier test accuracy 0.891" in text


def test_every_table_and_figure_is_written(loo):
    root, _ = loo
    for name in ("variants", "variant_metrics", "effects", "effects_all", "power", "failures", "over_training"):
        for ext in ("md", "csv", "tex"):
            assert (root / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    for name in ("primary_metric", "metrics", "effects", "residuals", "effects_over_training",
                 "val_fid_curves", "samples", "class_histograms"):
        png, pdf = root / "figures" / f"{name}.png", root / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000, name
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000, name
    effects = pd.read_csv(root / "tables" / "effects.csv").set_index("hack")
    assert effects.loc["batch-norm", "verdict"] == "hurts"
    assert (effects.drop("batch-norm")["verdict"] == "equivalent").all()


def _latex_balanced(text: str) -> None:
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", text):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"\\end{{{env}}} without matching \\begin"
    assert not stack, f"unclosed environments: {stack}"


def test_latex_is_well_formed_booktabs(loo):
    root, _ = loo
    for path in sorted((root / "tables").glob("*.tex")):
        text = path.read_text()
        _latex_balanced(text)
        assert text.isascii(), path.name
        for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
            assert text.count(rule) == 1, (path.name, rule)
        ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1))
        body = text.split("\\midrule")[1].split("\\bottomrule")[0]
        for line in filter(None, (ln.strip() for ln in body.splitlines())):
            assert line.endswith("\\\\") and line.count(" & ") == ncols - 1, line


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_report_is_byte_reproducible_and_never_writes_the_store(loo):
    root, _ = loo  # written once by the fixture: write it again over itself
    # runs.sqlite and its WAL; not -shm, SQLite's shared-memory index that every WAL
    # reader maps and updates by design (it is never committed).
    def store_files():
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.glob("runs.sqlite*")
                if not p.name.endswith("-shm")}

    store = store_files()
    first = {k: v for k, v in _digest(root).items() if not k.startswith(("runs", "experiment"))}
    write_report(root)
    again = {k: v for k, v in _digest(root).items() if not k.startswith(("runs", "experiment"))}
    assert again == first
    assert store_files() == store
    assert len([k for k in first if k.startswith("figures/")]) >= 16


def test_missing_artefacts_are_reported_not_fatal(tmp_path):
    root = make_results(tmp_path, artefacts=False)
    report = build_report(Results.load(root), tmp_path / "out")
    gaps = report.read_text().split("## Gaps")[1].split("##")[0]
    assert "config.json" in gaps and "samples.png" in gaps and "val_fid" in gaps
    assert "class-histogram figure is skipped" in gaps
    assert (tmp_path / "out" / "figures" / "effects.png").stat().st_size > 0


def test_add_one_in_contrasts_come_from_the_design(tmp_path):
    from ablate.report import sequential

    r = Results.load(make_results(tmp_path, "add-one-in", artefacts=False))
    d = {x.hack: x for x in sequential.analyse(r.frame, r.meta).decisions}
    assert (d["batch-norm"].on, d["batch-norm"].off, d["batch-norm"].verdict) == ("+batch-norm", "all-off", "hurts")


def test_factorial_design_report(tmp_path):
    root = make_results(tmp_path / "f", "full-factorial", artefacts=False, interaction=0.1)
    text = write_report(root).read_text()
    assert "## Factorial analysis" in text and "batch-norm×label-smoothing" in text
    assert "No hack verdicts" in text.split("## Question")[0]  # no one-hack contrasts in a factorial


# --------------------------------------------------------------------------------------
# CLI and repository files
# --------------------------------------------------------------------------------------
def test_cli_missing_results_dir_exits_2(tmp_path, capsys):
    from ablate.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "ablate grid" in err


def test_cli_writes_report(tmp_path, capsys):
    from ablate.cli import main

    root = make_results(tmp_path / "r", "add-one-in", artefacts=False)
    assert main(["report", str(root), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "REPORT.md")
    assert re.search(r"`batch-norm`: ×1\.2\d", (tmp_path / "o" / "REPORT.md").read_text())


def test_citation_cff():
    text = (REPO / "CITATION.cff").read_text()
    for needle in ("cff-version: 1.2.0", "title: ablate", 'name: "ablate contributors"', "license: MIT"):
        assert needle in text


def test_primary_metric_from_the_analysis_spec(tmp_path):
    from ablate.report import context

    root = make_results(tmp_path, artefacts=False, analysis={"metric": "last.classifier.fid"})
    ctx = context.compute(Results.load(root), tmp_path)
    assert ctx.primary == "last.classifier.fid" and set(ctx.effects["metric"]) == {"last.classifier.fid"}
    assert PRIMARY in set(ctx.secondary["metric"])


def test_malformed_run_artefacts_become_gaps_not_crashes(tmp_path):
    from ablate.report import context

    root = make_results(tmp_path, seeds=(0, 1, 2))
    runs = sorted((root / "runs").iterdir())
    (runs[0] / "metrics.json").write_text('{"best": [1, 2], "last": {"classifier": {"class_counts": ["a"]}}}')
    (runs[1] / "metrics.json").write_text("not json")
    (runs[2] / "log.jsonl").write_text('5\n"x"\n{"step": "a", "val_fid": true}\n{torn')
    (runs[3] / "log.jsonl").write_bytes(b"\xff\xfe\x00")
    ctx = context.compute(Results.load(root), tmp_path / "out")
    assert any("metrics.json" in n for n in ctx.runs.missing)
    js = ctx.flags.set_index("key")["js"]  # all runs flagged; two from the store's mode counts only
    assert len(js) == (ctx.frame["status"] == "done").sum() and js.isna().sum() == 2
    assert js[[runs[0].name, runs[1].name]].isna().all()
    assert not ctx.effects.empty and set(ctx.effects["verdict"]) <= {"helps", "hurts", "equivalent", "undecided"}


def test_unwritable_output_is_a_config_error(tmp_path, monkeypatch):
    from ablate.report import tables

    root = make_results(tmp_path, artefacts=False)

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tables, "write_atomic", full)
    with pytest.raises(ConfigError, match="No space left"):
        write_report(root, tmp_path / "out")


def test_run_times_are_summarised_on_the_log_scale_so_never_below_zero(loo):
    """A resumed run makes wall times right-skewed: the raw 3-seed t interval goes below zero,
    the report's (geometric mean, log-scale t interval) does not; both checked by hand."""
    import math

    import numpy as np
    from scipy import stats

    from ablate.report.summary import summarize

    res = Results.load(loo[0])
    frame = res.frame.copy()
    on = (frame["status"] == "done") & (frame["variant"] == "all-on")
    x = np.array([300.0, 4000.0, 900.0])
    assert on.sum() == len(x)
    frame.loc[on, "wall_time_s"] = x
    row = summarize(frame, res.meta, ["wall_time_s"]).set_index("variant").loc["all-on"]
    h = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert x.mean() - h * x.std(ddof=1) < 0  # what the raw scale would have shown
    lx = np.log(x)
    assert row["scale"] == "log" and row["centre"] == pytest.approx(math.exp(lx.mean()))
    assert row["ci_low"] == pytest.approx(math.exp(lx.mean() - h * lx.std(ddof=1))) and row["ci_low"] > 0
    assert row["ci_high"] == pytest.approx(math.exp(lx.mean() + h * lx.std(ddof=1)))


def test_bounded_metrics_intervals_are_clipped_to_their_range(loo):
    """recall near 0, modes near all 1000 and KL near 0: the raw 3-seed t intervals leave
    the metrics' ranges; the summary clips them there ([0, 1], [0, num_modes], [0, log
    num_modes]) and leaves intervals inside the range, and every centre, as they were."""
    import math

    import numpy as np
    from scipy import stats

    from ablate.report.summary import summarize

    res = Results.load(loo[0])
    frame = res.frame.copy()
    on = (frame["status"] == "done") & (frame["variant"] == "all-on")
    values = {"best.classifier.recall": [0.01, 0.12, 0.02], "best.classifier.modes": [999.0, 1000.0, 960.0],
              "best.classifier.kl": [0.02, 0.4, 0.03], "best.classifier.precision": [0.5, 0.55, 0.6]}
    for col, x in values.items():
        frame.loc[on, col] = x
    frame.loc[on, "best.classifier.num_modes"] = 1000.0
    s = summarize(frame, res.meta, list(values)).set_index(["variant", "metric"])
    h = stats.t.ppf(0.975, 2) / math.sqrt(3)
    ranges = {"best.classifier.recall": (0, 1), "best.classifier.modes": (0, 1000),
              "best.classifier.kl": (0, math.log(1000)), "best.classifier.precision": (0, 1)}
    for col, x in values.items():
        x = np.array(x)
        lo, hi = x.mean() - h * x.std(ddof=1), x.mean() + h * x.std(ddof=1)
        floor, ceil = ranges[col]
        row = s.loc[("all-on", col)]
        assert row["scale"] == "raw" and row["centre"] == pytest.approx(x.mean())
        assert row["ci_low"] == pytest.approx(max(lo, floor)) and row["ci_high"] == pytest.approx(min(hi, ceil))
    # the raw intervals did leave the range where the test means them to
    rec = np.array(values["best.classifier.recall"])
    assert rec.mean() - h * rec.std(ddof=1) < 0
    mod = np.array(values["best.classifier.modes"])
    assert mod.mean() + h * mod.std(ddof=1) > 1000


def test_noisiest_variant_share_and_refit_by_hand(loo):
    """all-off made far noisier than the rest: its share of the residual sum of squares and
    the residual sd without it (it enters no leave-one-out contrast) match a two-way
    additive fit done by hand on the balanced variants x seeds table."""
    import numpy as np

    from ablate.report import sequential
    from ablate.report.context import _noisiest
    from ablate.report.effects import fit_pooled

    res = Results.load(loo[0])
    frame = res.frame[res.frame["status"] == "done"].copy()
    off = frame["variant"] == "all-off"
    frame.loc[off, PRIMARY] = frame.loc[off, PRIMARY] * np.array([1.0, 4.0, 0.3])[: off.sum()]
    result = sequential.analyse(frame, res.meta)
    fit = result.fit
    assert fit.residual_shares().equals(fit_pooled(frame, res.meta.comparisons, PRIMARY).residual_shares())
    n = _noisiest(frame, res.meta, result)

    def resid(table):
        y = table.to_numpy()
        return y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()

    table = frame.assign(y=np.log(frame[PRIMARY].astype(float))).pivot(index="variant", columns="seed", values="y")
    r = resid(table)
    ss = (r ** 2).sum(1)
    assert n["variant"] == "all-off" and not n["in_contrast"]
    assert n["share"] == pytest.approx(ss[list(table.index).index("all-off")] / ss.sum())
    rest = table.drop(index="all-off")
    r2 = resid(rest)
    df = (rest.shape[0] - 1) * (rest.shape[1] - 1)
    assert n["df_without"] == df
    assert n["sigma_without"] == pytest.approx(np.sqrt((r2 ** 2).sum() / df))
    assert fit.sigma > 2 * n["sigma_without"]  # the case the note is for


def test_protocol_names_each_classifier_training_that_scored_the_runs(tmp_path):
    """Two trainings of one classifier recipe (another CPU kind or thread count) score a
    run differently: the protocol lists each with its runs; one training keeps one line."""
    from ablate.report.markdown import _feature_accuracy

    def prov(*entries):
        return {"metrics_provenance": [({"features": {"classifier": info}}, n) for info, n in entries]}

    one = prov(({"classifier_test_accuracy": 0.9301, "classifier_weights": "aa"}, 30),
               ({"classifier_test_accuracy": 0.9301}, 9))  # scored before fingerprints: same accuracy
    assert _feature_accuracy(one) == {"classifier": "classifier test accuracy 0.93"}
    by_accuracy = _feature_accuracy(prov(({"classifier_test_accuracy": 0.9301}, 42),
                                         ({"classifier_test_accuracy": 0.9297}, 6)))["classifier"]
    assert by_accuracy.startswith("2 trainings of one recipe")
    assert "test accuracy 0.9301 for 42 runs, 0.9297 for 6 runs;" in by_accuracy
    by_weights = _feature_accuracy(prov(({"classifier_test_accuracy": 0.93, "classifier_weights": "aa"}, 5),
                                        ({"classifier_test_accuracy": 0.93, "classifier_weights": "bb"}, 4)))
    assert "0.9300 [weights aa] for 5 runs, 0.9300 [weights bb] for 4 runs" in by_weights["classifier"]
    assert _feature_accuracy(prov(({"classifier_test_accuracy": True}, 3))) == {}  # not a number

    # End to end: three runs rescored by another training show up in REPORT.md's protocol.
    root = make_results(tmp_path, extra_runs=False)
    for m in sorted((root / "runs").glob("*/metrics.json"))[:3]:
        doc = json.loads(m.read_text())
        doc["provenance"]["features"]["classifier"]["classifier_test_accuracy"] = 0.905
        m.write_text(json.dumps(doc))
    text = build_report(Results.load(root), tmp_path / "out").read_text().split("## Protocol")[1]
    assert "2 trainings of one recipe" in text and "0.9050 for 3 runs" in text


def test_power_line_states_the_median_contrasts_seeds_and_their_range():
    """The power figures use the median contrast's se and seeds; an adaptive design gives the
    hacks different seeds, so the line says so with the range (non-estimable contrasts left out)."""
    import math

    from ablate.report.markdown import _power_seeds

    e = pd.DataFrame({"n_on": [3, 4, 8, 8, 2], "n_off": [3, 4, 8, 7, 2],
                      "se": [0.05, 0.04, 0.026, 0.027, math.nan]})
    assert _power_seeds(e, {"seeds": 4.0}) == "4 seeds per variant at the median contrast, 3–8 across the hacks"
    same = pd.DataFrame({"n_on": [3, 3], "n_off": [3, 3], "se": [0.05, 0.05]})
    assert _power_seeds(same, {"seeds": 3.0}) == "3 seeds per variant"


def test_undecided_line_says_when_the_design_gives_no_more_seeds():
    """An undecided hack with every seed of the design's last look "could" not "still" move:
    its line says the design is spent; one seed short (or an interim report) it could still."""
    import math

    from ablate.report.markdown import _hack_line

    r = pd.Series({"hack": "lsgan", "scale": "log", "verdict": "undecided", "estimate": math.log(1.064),
                   "ci_low": math.log(0.991), "ci_high": math.log(1.142), "n_on": 8, "n_off": 8, "look": math.nan})
    spent = _hack_line(r, 0.1, cap=8)
    assert "anywhere from -0.9% to +14.2% with every seed the design gives (8/8 seeds ON/OFF)" in spent
    assert "could still" not in spent
    assert "could still be anywhere" in _hack_line(r, 0.1, cap=9)
    assert "could still be anywhere" in _hack_line(r, 0.1, interim=True, cap=8)
    assert "could still be anywhere" in _hack_line(r, 0.1)


def test_the_provenance_names_each_plugin_package_its_hacks_and_runs(tmp_path):
    """Plugin versions are part of the run keys: the report says which packages (and
    versions) a reader must install to rerun the runs, counting each run once."""
    import pandas as pd

    from ablate.report.runs import RunArtefacts

    def record(name, provider, version):
        return {"name": name, "params": {}, "provider": provider, "version": version}

    docs = [[record("batch-norm", "ablate", "0.1.0"), record("ttur", "tricks", "0.1.0"),
             record("r1-penalty", "tricks", "0.1.0")],
            [record("ttur", "tricks", "0.2.0"), record("spectral-norm", "sn", "1.0")],
            [record("ttur", "tricks", "0.1.0"), "not a record", {"provider": 3}],
            [record("batch-norm", "ablate", "0.1.0")]]
    rows = []
    for i, hacks in enumerate(docs):
        run = tmp_path / f"run{i}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"hacks": hacks}))
        rows.append({"run_dir": str(run), "status": "done", "variant": f"v{i}", "seed": 0})
    rows.append({**rows[0], "variant": "same-run-again"})  # [axes]: one run, two names
    plugins = RunArtefacts(pd.DataFrame(rows)).provenance()["plugins"]
    assert plugins == [("tricks", "0.1.0", ["r1-penalty", "ttur"], 2), ("sn", "1.0", ["spectral-norm"], 1),
                       ("tricks", "0.2.0", ["ttur"], 1)]
