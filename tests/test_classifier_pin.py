"""An experiment pins the classifier that scores its runs (``results/<exp>/classifier/``),
so that runs added later on another machine (another CPU kind trains other weights from
one recipe) are scored with the weights that scored the finished ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ablate.errors import ConfigError
from ablate.grid.driver import prepare, run_grid
from ablate.grid.executors import InlineExecutor
from ablate.layout import ExperimentDir
from ablate.metrics import classifier as clf
from ablate.metrics.cache import load_tensors, save_tensors
from ablate.report import write_report

SMOKE = Path(__file__).resolve().parent.parent / "experiments/smoke.toml"


def _other_training(folder: Path, dataset: str, shift: float) -> str:
    """Make the pin in ``folder`` another training's: every weight moved, its info updated
    to match (as a pin made on another machine would be). Returns the new fingerprint."""
    pt = clf.pinned_file(folder, dataset)
    state = {k: v + shift if v.is_floating_point() else v for k, v in load_tensors(pt).items()}
    save_tensors(pt, state)
    net = clf.ClassifierNet((1, 28, 28), 10, clf.recipe_for(dataset))
    net.load_state_dict(state)
    info = json.loads(pt.with_suffix(".json").read_text())
    info["weights"] = clf.weights_fingerprint(net)
    pt.with_suffix(".json").write_text(json.dumps(info))
    clf._MEMO.clear()
    return info["weights"]


def test_a_pinned_classifier_is_read_before_the_cache_and_checked(tmp_path):
    _, cached = clf.load_classifier("fake")
    folder = tmp_path / "classifier"
    info = clf.pin("fake", folder)
    assert info["weights"] == cached["weights"]
    assert json.loads(clf.pinned_file(folder, "fake").with_suffix(".json").read_text())["weights"] == cached["weights"]
    other = _other_training(folder, "fake", 0.01)
    assert other != cached["weights"]
    with clf.pinned_in(folder):
        net, got = clf.load_classifier("fake")
        assert got["weights"] == other == clf.weights_fingerprint(net)
        with clf.pinned_in(None):  # an inner block without a pin: the cache
            assert clf.load_classifier("fake")[1]["weights"] == cached["weights"]
    assert clf.load_classifier("fake")[1]["weights"] == cached["weights"]  # outside: the cache
    with clf.pinned_in(tmp_path / "empty"):  # a folder without a pin: the cache
        assert clf.load_classifier("fake")[1]["weights"] == cached["weights"]

    # Weights that are not the ones the info records (a hand-copied file): an error naming
    # both and the fix, never a silent score with unknown weights.
    pt = clf.pinned_file(folder, "fake")
    save_tensors(pt, {k: v * 2 if v.is_floating_point() else v for k, v in load_tensors(pt).items()})
    clf._MEMO.clear()
    with clf.pinned_in(folder), pytest.raises(ConfigError, match=f"records '{other}'.*git checkout"):
        clf.load_classifier("fake")
    pt.write_bytes(b"torn")
    with clf.pinned_in(folder), pytest.raises(ConfigError, match="cannot be read"):
        clf.load_classifier("fake")
    clf._MEMO.clear()


def _experiment(tmp_path: Path, seeds: str) -> Path:
    text = SMOKE.read_text()
    for old, new in {"features = []": 'features = ["classifier"]\nn = 200',
                     "seeds = [0, 1]": f"seeds = {seeds}",
                     'scope = ["batch-norm", "adam-dcgan", "label-smoothing"]': 'scope = ["batch-norm"]'}.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"exp-{len(seeds)}.toml"
    path.write_text(text)
    return path


def _grid(exp: Path, results: Path) -> list[str]:
    lines: list[str] = []
    run_grid(prepare(exp, results, threads=1), InlineExecutor(threads=1), progress=False,
             log=lines.append)
    return lines


def _scored_by(results: Path) -> dict[str, str]:
    out = {}
    for metrics in (results / "runs").glob("*/metrics.json"):
        prov = json.loads(metrics.read_text())["provenance"]["features"]["classifier"]
        out[metrics.parent.name] = prov.get("classifier_weights")
    return out


def test_a_grid_pins_its_classifier_and_scores_later_runs_with_it(tmp_path):
    results = tmp_path / "res"
    lines = _grid(_experiment(tmp_path, "[0]"), results)
    folder = ExperimentDir(results).classifier
    _, cached = clf.load_classifier("fake")
    assert any(line.startswith("pinned the classifier") for line in lines), lines
    first = _scored_by(results)
    assert len(first) == 2 and set(first.values()) == {cached["weights"]}
    assert clf.pinned_file(folder, "fake").exists()

    # The pin is now another machine's training: the runs a second seed adds are scored
    # with it, not with this machine's cache, and the finished runs are kept as they are.
    other = _other_training(folder, "fake", 0.005)
    torch.manual_seed(0)
    _grid(_experiment(tmp_path, "[0, 1]"), results)
    second = _scored_by(results)
    assert len(second) == 4
    assert {k: w for k, w in second.items() if k in first} == first
    assert {w for k, w in second.items() if k not in first} == {other}

    # The report names the pin in its protocol (and mixes of weights, as before).
    write_report(results)
    report = (results / "REPORT.md").read_text()
    assert f"| pinned classifier | `classifier/{clf.classifier_key('fake')}.pt`: weights {other}" in report
    assert "2 trainings of one recipe" in report
    clf._MEMO.clear()


def test_no_pin_where_finished_runs_were_scored_by_other_weights(tmp_path):
    results = tmp_path / "res"
    _grid(_experiment(tmp_path, "[0]"), results)
    folder = ExperimentDir(results).classifier
    for f in folder.iterdir():
        f.unlink()
    # One finished run records other weights (another machine scored it): a pin of this
    # machine's weights would misstate it, so the grid scores with the cache and says why.
    metrics = sorted((results / "runs").glob("*/metrics.json"))[0]
    doc = json.loads(metrics.read_text())
    doc["provenance"]["features"]["classifier"]["classifier_weights"] = "0123456789abcdef"
    metrics.write_text(json.dumps(doc))
    lines = _grid(_experiment(tmp_path, "[0, 1]"), results)
    assert any(line.startswith("classifier not pinned: 1 finished run(s)") for line in lines), lines
    assert not clf.pinned_file(folder, "fake").exists()
    _, cached = clf.load_classifier("fake")
    assert set(_scored_by(results).values()) == {cached["weights"], "0123456789abcdef"}


def test_a_damaged_pin_stops_the_grid_before_any_run_and_keeps_the_finished_ones(tmp_path):
    results = tmp_path / "res"
    _grid(_experiment(tmp_path, "[0]"), results)
    before = {m: m.read_bytes() for m in (results / "runs").glob("*/*.json")}
    pt = clf.pinned_file(ExperimentDir(results).classifier, "fake")
    save_tensors(pt, {k: v + 1 if v.is_floating_point() else v for k, v in load_tensors(pt).items()})
    clf._MEMO.clear()
    with pytest.raises(ConfigError, match=f"pinned classifier {pt} holds weights"):
        _grid(_experiment(tmp_path, "[0, 1]"), results)
    assert {m: m.read_bytes() for m in (results / "runs").glob("*/*.json")} == before  # nothing trained or lost
    clf._MEMO.clear()


def test_an_experiment_reusing_a_pinned_one_adopts_its_pin(tmp_path):
    """As a plugin's re-benchmark beside results/default would: its copied runs recorded no
    weights (scored before the fingerprint), but their source is pinned, so the new
    experiment pins the same weights and scores its own runs with them."""
    source = tmp_path / "source"
    _grid(_experiment(tmp_path, "[0]"), source)
    other = _other_training(ExperimentDir(source).classifier, "fake", 0.005)
    for metrics in (source / "runs").glob("*/metrics.json"):
        doc = json.loads(metrics.read_text())
        del doc["provenance"]["features"]["classifier"]["classifier_weights"]
        metrics.write_text(json.dumps(doc))
    exp = _experiment(tmp_path, "[0, 1]")
    exp.write_text(f'reuse = ["{source}"]\n' + exp.read_text())
    results = tmp_path / "derived"
    lines = _grid(exp, results)
    assert any(line.startswith("pinned the classifier") and f"from {source}" in line for line in lines), lines
    info = json.loads(clf.pinned_file(ExperimentDir(results).classifier, "fake").with_suffix(".json").read_text())
    assert info["weights"] == other
    scored = _scored_by(results)
    assert len(scored) == 4 and sorted(map(str, scored.values())) == sorted(["None", "None", other, other])
    clf._MEMO.clear()


def test_a_pin_is_never_replaced(tmp_path):
    """Two grids pinning one results directory: the first pin stays, and the second
    learns which weights it holds (so both grids' runs are scored alike)."""
    folder = tmp_path / "classifier"
    first = clf.pin("fake", folder)
    other = _other_training(folder, "fake", 0.003)
    assert other != first["weights"]
    again = clf.pin("fake", folder)  # this machine's weights offered again
    assert again["weights"] == other
    with clf.pinned_in(folder):
        assert clf.load_classifier("fake")[1]["weights"] == other
    clf._MEMO.clear()
