"""`ablate compare`: the pooled statistics against a hand-written DerSimonian–Laird, the CLI
on the committed results (byte-identical when rerun and equal to the committed summary),
incomparable metrics kept apart, and a folder that is not an experiment."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablate.cli import main
from ablate.report import publish
from ablate.report.compare import pool, write_summary

ROOT = Path(__file__).resolve().parents[1]
# What `make ablation` summarises: every committed experiment with a report (the same rule
# as the Makefile's), so a newly committed experiment is covered without editing this list.
COMMITTED = sorted(d.name for d in (ROOT / "results").iterdir()
                   if all((d / f).is_file() for f in ("experiment.json", "REPORT.md", "tables/effects.csv"))
                   and "**Interim report:" not in (d / "REPORT.md").read_text())


def dersimonian_laird(y, se):
    """The textbook estimator (DerSimonian & Laird 1986), numpy only."""
    y, v = np.asarray(y, float), np.asarray(se, float) ** 2
    w = 1 / v
    mu_fe = np.sum(w * y) / np.sum(w)
    q = np.sum(w * (y - mu_fe) ** 2)
    df = len(y) - 1
    c = np.sum(w) - np.sum(w ** 2) / np.sum(w)
    tau2 = max(0.0, (q - df) / c)
    ws = 1 / (v + tau2)
    mu = np.sum(ws * y) / np.sum(ws)
    se_mu = np.sqrt(1 / np.sum(ws))
    i2 = max(0.0, (q - df) / q)
    return mu, se_mu, mu - 1.959963984540054 * se_mu, mu + 1.959963984540054 * se_mu, tau2, i2, q


@pytest.mark.parametrize("y, se, heterogeneous", [
    ([0.21, -0.16, 0.30, 0.05], [0.11, 0.025, 0.26, 0.15], True),
    ([0.02, 0.01, 0.03], [0.10, 0.12, 0.09], False),  # Q < df: tau2 truncated at 0 (fixed effect)
    ([-1.1, 0.4], [0.2, 0.3], True),
])
def test_pool_matches_hand_written_dersimonian_laird(y, se, heterogeneous):
    got = pool(y, se)
    mu, se_mu, lo, hi, tau2, i2, q = dersimonian_laird(y, se)
    assert (tau2 > 0) == heterogeneous
    np.testing.assert_allclose([got["estimate"], got["se"], got["ci_low"], got["ci_high"], got["q"]],
                               [mu, se_mu, lo, hi, q], rtol=1e-10, atol=1e-14)
    assert got["tau2"] == pytest.approx(tau2, rel=1e-10, abs=1e-15)
    assert got["i2"] == pytest.approx(i2, rel=1e-10, abs=1e-15)
    assert got["k"] == len(y) and got["q_df"] == len(y) - 1


def test_compare_cli_on_committed_results_is_byte_identical(tmp_path, capsys):
    # The inputs compare reads (experiment.json, tables/effects.csv), laid out as in results/,
    # so SUMMARY.md's relative links are those of the committed one.
    res = tmp_path / "results"
    for n in COMMITTED:
        (res / n / "tables").mkdir(parents=True)
        shutil.copy(ROOT / "results" / n / "experiment.json", res / n / "experiment.json")
        shutil.copy(ROOT / "results" / n / "tables" / "effects.csv", res / n / "tables" / "effects.csv")
    dirs = [str(res / n) for n in COMMITTED]
    assert main(["compare", *dirs, "--out", str(res)]) == 0
    files = sorted(p.relative_to(res) for p in res.rglob("*")  # the build's lock file is not an output
                   if p.is_file() and p.relative_to(res).parts[0] not in COMMITTED and p.name != publish.LOCK)
    first = {f: (res / f).read_bytes() for f in files}
    assert main(["compare", *reversed(dirs)]) == 0  # default --out: their parent; order does not matter
    assert Path("SUMMARY.md") in files
    for name in ("experiments", "by_experiment", "pooled"):
        for ext in ("csv", "md", "tex"):
            assert Path("summary/tables") / f"{name}.{ext}" in files
    assert Path("summary/figures/forest_best-classifier-fid.png") in files
    for f in files:
        assert (res / f).read_bytes() == first[f], f"{f} changed when regenerated"
        # the committed summary is this code's output on the committed results
        assert first[f] == (ROOT / "results" / f).read_bytes(), f"{f} differs from the committed one"
    pooled = pd.read_csv(res / "summary/tables/pooled.csv")
    sb = pooled[pooled["hack"] == "separate-batches"].iloc[0]
    with_sb = [n for n in COMMITTED if any(
        c["hack"] == "separate-batches" and not c.get("level") for c in
        json.loads((ROOT / "results" / n / "experiment.json").read_text())["design"]["comparisons"])]
    assert len(with_sb) >= 3  # every committed experiment that measured it, once each
    assert sb["experiments"].split(";") == with_sb
    datasets = {json.loads((ROOT / "results" / n / "experiment.json").read_text())["experiment"]["dataset"]
                for n in with_sb}  # the committed ones: seeds from 0, so one seed group per dataset
    assert sb["k"] == len(datasets) >= 3 and sb["tau2"] > 0 and 0 < sb["i2"] < 1
    # a hack measured in one experiment is listed, not pooled; in two or more, pooled
    for hack, k in pooled.groupby("hack")["k"].first().items():
        est = pooled.loc[pooled["hack"] == hack, "estimate"]
        assert np.isnan(est).all() if k == 1 else np.isfinite(est).all(), hack
    assert (pooled["k"] == 1).any() and (pooled["k"] >= 2).any()


def _copy_experiment(src: str, dst: Path, metric: str | None = None, name: str | None = None) -> Path:
    (dst / "tables").mkdir(parents=True)
    doc = json.loads((ROOT / "results" / src / "experiment.json").read_text())
    if name:
        doc["experiment"]["name"] = name
    (dst / "experiment.json").write_text(json.dumps(doc))
    eff = pd.read_csv(ROOT / "results" / src / "tables" / "effects.csv")
    if metric:
        eff["metric"] = metric
    eff.to_csv(dst / "tables" / "effects.csv", index=False)
    return dst


def test_incomparable_metrics_are_kept_apart(tmp_path):
    a = _copy_experiment("default", tmp_path / "a")
    b = _copy_experiment("stacked-mnist-5k", tmp_path / "b")  # another dataset: not default's seed group
    c = _copy_experiment("mnist-5k-quick", tmp_path / "c", metric="best.inception.fid", name="mnist-inception")
    write_summary([a, b, c], tmp_path / "out")
    pooled = pd.read_csv(tmp_path / "out/summary/tables/pooled.csv")
    inc = pooled[pooled["metric"] == "best.inception.fid"]
    assert len(inc) == 11 and (inc["k"] == 1).all() and set(inc["experiments"]) == {"mnist-inception"}
    cls = pooled[pooled["metric"] == "best.classifier.fid"]
    assert (cls["k"] == 2).all() and set(cls["experiments"]) == {"default;stacked-mnist-5k"}
    text = (tmp_path / "out/SUMMARY.md").read_text()
    assert "2 different primary metrics" in text and "not comparable" in text
    assert (tmp_path / "out/summary/figures/forest_best-inception-fid.png").is_file()


def test_a_folder_that_is_not_an_experiment_exits_2_naming_it(tmp_path, capsys):
    bogus = tmp_path / "not-an-experiment"
    bogus.mkdir()
    code = main(["compare", str(ROOT / "results" / "default"), str(bogus), "--out", str(tmp_path / "out")])
    assert code == 2
    assert str(bogus) in capsys.readouterr().err
    assert not (tmp_path / "out" / "SUMMARY.md").exists()


def test_an_experiment_without_a_report_exits_2(tmp_path, capsys):
    d = tmp_path / "running"
    d.mkdir()
    shutil.copy(ROOT / "results" / "default" / "experiment.json", d / "experiment.json")
    assert main(["compare", str(d), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(d) in err and "ablate report" in err


def test_an_interim_report_is_refused_naming_the_fix(tmp_path, capsys):
    """A report written before its look finished (here a fixed design with a run still
    pending) carries the interim mark; no summary pools its provisional verdicts."""
    sys.path.insert(0, str(Path(__file__).parent))
    from report_synthetic import make_results

    from ablate.report.compare import INTERIM_MARK

    root = make_results(tmp_path / "mid", artefacts=False)  # all-on seed 8: pending
    assert main(["report", str(root)]) == 0
    assert INTERIM_MARK in (root / "REPORT.md").read_text()
    capsys.readouterr()
    assert main(["compare", str(ROOT / "results" / "default"), str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "report is interim" in err and "rerun `ablate grid`" in err and str(root) in err
    assert not (tmp_path / "out").exists()
