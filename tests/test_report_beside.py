"""REPORT.md's *Beside another budget* section (issue #17 item 2A): the experiment file's
``[report] beside`` found through ``experiment.json``'s recorded source (from the working
directory or the folder the grid ran in), each hack's verdict at both budgets with a changed
verdict named in words, the protocol differences, the not-comparable and missing-report
errors (exit 2 through `ablate report`), and that the table stays out of run keys and
``experiment.json``.

Fixtures: the committed fashion-mnist-1k report (experiment.json, tables/effects.csv) as the
1,000-step side, and a copy of it turned into a "20,000-step" experiment with two verdicts
changed; no runs are trained and no report is computed, so the file takes a second or two.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from ablate.errors import ConfigError
from ablate.experiment.spec import load_experiment, parse_experiment
from ablate.report import beside
from ablate.report.markdown import _Doc
from ablate.report.results import Results, parse_meta

ROOT = Path(__file__).resolve().parents[1]
ONE_K = ROOT / "results" / "fashion-mnist-1k"
PRIMARY = "best.classifier.fid"


def _other(dst: Path, metric: str | None = None, report: bool = True) -> Path:
    (dst / "tables").mkdir(parents=True)
    shutil.copy(ONE_K / "experiment.json", dst / "experiment.json")
    eff = pd.read_csv(ONE_K / "tables" / "effects.csv")
    if metric:
        eff["metric"] = metric
    eff.to_csv(dst / "tables" / "effects.csv", index=False)
    if report:
        (dst / "REPORT.md").write_text("# the 1k report\n")
    return dst


def _current(repo: Path, beside_entries: list[str]) -> Path:
    """A "20k" results directory at repo/results/fm-20k whose source is repo/experiments/fm-20k.toml."""
    res = repo / "results" / "fm-20k"
    res.mkdir(parents=True)
    doc = json.loads((ONE_K / "experiment.json").read_text())
    doc["experiment"].update(name="fm-20k", source="experiments/fm-20k.toml", results_dir="results/fm-20k")
    doc["experiment"]["train"].update(steps=20000, val_every=1000, val_n=2000)
    doc["experiment"]["evaluation"].update(n=10000, val_every=1000, val_n=2000)
    (res / "experiment.json").write_text(json.dumps(doc))
    (repo / "experiments").mkdir(exist_ok=True)
    (repo / "experiments" / "fm-20k.toml").write_text(
        "# report-only\n[report]\nbeside = [" + ", ".join(json.dumps(b) for b in beside_entries) + "]\n")
    return res


def _results(res: Path) -> Results:
    meta = parse_meta(json.loads((res / "experiment.json").read_text()))
    return Results(res, pd.DataFrame({PRIMARY: [30.0, 31.0], "status": ["done", "done"]}), meta)


def _ctx(res: Path, others) -> SimpleNamespace:
    eff = pd.read_csv(ONE_K / "tables" / "effects.csv")
    eff.loc[eff["hack"] == "batch-norm", "verdict"] = "equivalent"  # helps at 1k
    eff.loc[eff["hack"] == "adam-dcgan", "verdict"] = "undecided"  # helps at 1k
    eff.loc[eff["hack"] == "batch-norm", ["estimate", "ci_low", "ci_high"]] = [0.01, -0.05, 0.07]
    results = _results(res)
    ctx = SimpleNamespace(results=results, meta=results.meta, effects=eff, primary=PRIMARY, out_dir=res,
                          tables={}, figures={}, beside=[])
    beside.write(ctx, others, res / "tables")
    return ctx


def test_section_names_the_changed_verdicts_and_the_protocol_differences(tmp_path, monkeypatch):
    other = _other(tmp_path / "repo" / "results" / "fashion-mnist-1k")
    res = _current(tmp_path / "repo", ["results/fashion-mnist-1k"])
    monkeypatch.chdir(tmp_path)  # not the repo: found through the folder the grid ran in
    others = beside.references(_results(res))
    assert [o.name for o in others] == ["fashion-mnist-1k"] and others[0].path == other
    ctx = _ctx(res, others)
    f = pd.read_csv(res / "tables" / "beside_fashion-mnist-1k.csv")
    changed = dict(zip(f["hack"], f["changed"]))
    assert changed["batch-norm"] == "yes" and changed["adam-dcgan"] == "not yet"
    assert changed["strided-upsample"] == "no" and len(f) == 11
    d = _Doc(res)
    beside.section(d, ctx)
    text = d.text()
    assert "## Beside another budget: fashion-mnist-1k" in text
    assert "changes 1 verdict(s): `batch-norm`: helps at 1,000 steps → equivalent at 20,000 steps." in text
    assert "Still undecided at 20,000 steps, so not yet comparable: `adam-dcgan` (helps at 1,000 steps)." in text
    assert "| batch-norm | helps | ×0.855 [0.746, 0.979] | equivalent | ×1.01 [0.951, 1.07] | yes |" in text
    assert "[fashion-mnist-1k's report](../fashion-mnist-1k/REPORT.md)" in text
    assert text.count("`val_every`: 100 → 1000") == 1  # budget and evaluation record it: said once
    for word in ("budget `steps`: 1000 → 20000", "evaluation `n`: 5000 → 10000", "depends on N",
                 "every 100 vs 1000 steps"):
        assert word in text, word
    assert (res / "tables" / "beside_fashion-mnist-1k.tex").is_file()


@pytest.mark.parametrize("make, entry, words", [
    (lambda p: _other(p, metric="best.inception.fid"), "results/o", ["not comparable", "FID (inception, best)", "FID (classifier, best)"]),
    (lambda p: _other(p, report=False), "results/o", ["has no REPORT.md", "ablate report"]),
    (lambda p: None, "results/missing", ["is not a directory", "remove the entry"]),
    (lambda p: _other(p), "results/fm-20k", ["own results directory"]),
])
def test_bad_beside_entries_are_config_errors(tmp_path, monkeypatch, make, entry, words):
    make(tmp_path / "results" / "o")
    res = _current(tmp_path, [entry])
    monkeypatch.chdir(tmp_path)  # paths relative to the working directory
    with pytest.raises(ConfigError) as err:
        beside.references(_results(res))
    for w in words:
        assert w in str(err.value)
    assert "[report].beside" in str(err.value)


def test_report_table_is_validated_and_kept_out_of_keys_and_experiment_json(tmp_path, monkeypatch):
    base = {"seeds": [0], "data": {"dataset": "fake"}, "budget": {"steps": 10}, "evaluation": {"features": []}}
    plain = parse_experiment(dict(base), "x")
    with_beside = parse_experiment({**base, "report": {"beside": ["results/a"]}}, "x")
    assert with_beside.report.beside == ("results/a",) and with_beside.to_dict() == plain.to_dict()
    for bad, word in (({"beside": "results/a"}, "list of results directories"), ({"beside": [""]}, "list"),
                      ({"beside": ["a", "a"]}, "twice"), ({"next_to": []}, "unknown key 'next_to'")):
        with pytest.raises(ConfigError, match=word):
            parse_experiment({**base, "report": bad}, "x")
    # The committed 20k experiment file names the 1k report, and records the same experiment.json.
    monkeypatch.chdir(ROOT)
    exp = load_experiment("experiments/fashion-mnist-20k.toml")
    assert exp.report.beside == ("results/fashion-mnist-1k",)
    recorded = json.loads((ROOT / "results" / "fashion-mnist-20k" / "experiment.json").read_text())["experiment"]
    assert exp.to_dict() == recorded


def test_no_source_or_no_table_means_no_section(tmp_path):
    res = _current(tmp_path, [])
    assert beside.references(_results(res)) == []  # [report] without entries
    doc = json.loads((res / "experiment.json").read_text())
    doc["experiment"]["source"] = None
    (res / "experiment.json").write_text(json.dumps(doc))
    assert beside.references(_results(res)) == []


def test_ablate_report_adds_the_section_without_flags(tmp_path, monkeypatch, capsys):
    """End to end on two synthetic stores (tests/report_synthetic.py): batch-norm hurts (×1.25)
    at "300 steps" and has no effect at "3,000"; `ablate report` finds [report] beside through
    experiment.json's source. A bad entry exits 2 before anything is written."""
    from report_synthetic import make_results

    from ablate.cli import main

    other = make_results(tmp_path / "results" / "syn-300", artefacts=False, extra_runs=False)
    doc = json.loads((other / "experiment.json").read_text())
    doc["experiment"]["name"] = "syn-300"
    (other / "experiment.json").write_text(json.dumps(doc))
    assert main(["report", str(other)]) == 0
    cur = make_results(tmp_path / "results" / "syn-3000", artefacts=False, extra_runs=False,
                       log_effects={"batch-norm": 0.0, "label-smoothing": 0.0, "noisy-labels": 0.0, "leaky-relu": 0.0})
    doc = json.loads((cur / "experiment.json").read_text())
    doc["experiment"].update(name="syn-3000", source="experiments/syn-3000.toml", results_dir="results/syn-3000")
    doc["experiment"]["train"]["steps"] = 3000
    (cur / "experiment.json").write_text(json.dumps(doc))
    (tmp_path / "experiments").mkdir()
    toml = tmp_path / "experiments" / "syn-3000.toml"
    toml.write_text('[report]\nbeside = ["results/syn-300"]\n')
    monkeypatch.chdir(tmp_path)
    assert main(["report", "results/syn-3000"]) == 0
    text = (cur / "REPORT.md").read_text()
    assert "## Beside another budget: syn-300" in text
    assert "`batch-norm`: hurts at 300 steps → equivalent at 3,000 steps" in text
    assert (cur / "tables" / "beside_syn-300.md").is_file()
    toml.write_text('[report]\nbeside = ["results/nowhere"]\n')
    capsys.readouterr()
    assert main(["report", "results/syn-3000", "--out", str(tmp_path / "out")]) == 2
    assert "results/nowhere" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_undecided_at_the_designs_last_look_is_no_verdict_not_yet(tmp_path, monkeypatch):
    """A hack undecided with every seed its design gives (adaptive 3..10 here: 10/10) will never
    be decided, so it is "no verdict", not "not yet"; the same on the other side. One seed short
    of the cap it is still "not yet"."""
    other = _other(tmp_path / "repo" / "results" / "fashion-mnist-1k")
    cap = parse_meta(json.loads((other / "experiment.json").read_text())).seed_policy.max
    eff = pd.read_csv(other / "tables" / "effects.csv")
    eff.loc[eff["hack"] == "leaky-relu", ["verdict", "n_on", "n_off"]] = ["undecided", cap, cap]
    eff.to_csv(other / "tables" / "effects.csv", index=False)
    res = _current(tmp_path / "repo", ["results/fashion-mnist-1k"])
    monkeypatch.chdir(tmp_path)
    others = beside.references(_results(res))
    words = {}
    for n_on, n_off in ((cap, cap), (cap, cap - 1)):
        eff = pd.read_csv(ONE_K / "tables" / "effects.csv")
        eff.loc[eff["hack"] == "adam-dcgan", ["verdict", "n_on", "n_off"]] = ["undecided", n_on, n_off]
        ctx = SimpleNamespace(results=_results(res), meta=_results(res).meta, effects=eff, primary=PRIMARY,
                              out_dir=res, tables={}, figures={}, beside=[])
        f = beside.frame(ctx, others[0])
        changed = dict(zip(f["hack"], f["changed"]))
        words[(n_on, n_off)] = (changed, beside._words(f, beside._names(ctx, others[0])))
    changed, text = words[(cap, cap)]
    assert changed["adam-dcgan"] == "no verdict" and changed["leaky-relu"] == "no verdict"
    assert ("Undecided at 20,000 steps at the design's last look, so there is no verdict to compare: "
            "`adam-dcgan` (helps at 1,000 steps).") in text
    assert ("Undecided at 1,000 steps at the design's last look, so there is no verdict to compare: "
            "`leaky-relu` (equivalent at 20,000 steps).") in text
    assert "not yet comparable" not in text
    changed, text = words[(cap, cap - 1)]
    assert changed["adam-dcgan"] == "not yet" and changed["leaky-relu"] == "no verdict"
    assert "Still undecided at 20,000 steps, so not yet comparable: `adam-dcgan` (helps at 1,000 steps)." in text
