"""An experiment's classifier pin (``results/<experiment>/classifier/``): the grid driver
checks it before any run trains and writes it where it is missing and would state the
truth about the finished runs (docs/statistics.md, "Which classifier scored a run").
The pin itself (format, reading, writing) is :mod:`ablate.metrics.classifier`'s."""

from __future__ import annotations

from pathlib import Path

from ablate.data import base_dataset
from ablate.errors import ConfigError
from ablate.experiment.spec import Experiment
from ablate.grid import rundirs
from ablate.grid.keys import RunSpec
from ablate.grid.schedule import Log
from ablate.layout import ExperimentDir, RunDir
from ablate.metrics import classifier


def check(experiment: Experiment, results_dir: Path) -> None:
    """A pinned classifier that cannot be read or is not what its info records stops the
    grid before any run trains (a ConfigError naming the file and the fix), instead of
    failing every run at its first validation or its scoring."""
    base, folder = base_dataset(experiment.dataset), ExperimentDir(results_dir).classifier
    if classifier.pinned_file(folder, base).exists():
        with classifier.pinned_in(folder):
            classifier.load_classifier(base, train_if_missing=False)


def pin(experiment: Experiment, results_dir: Path, finished: list[RunSpec], log: Log) -> None:
    """Pin the classifier that scores the experiment's runs in its results directory, so
    that a later grid on any machine (another CPU kind trains other weights) scores new
    runs with the weights that scored the finished ones.

    The weights pinned: those of a ``reuse`` source's pin, or else this machine's, where
    every finished run agrees with them (it recorded them, or it was copied from that
    source). Nothing where a pin exists, or where no candidate fits every finished run
    (scored by other weights, or before the fingerprint was recorded): a pin would
    misstate them; the report names each training instead."""
    folder = ExperimentDir(results_dir).classifier
    base = base_dataset(experiment.dataset)
    if classifier.pinned_file(folder, base).exists():
        return
    recorded = {s.key: _scored_by(results_dir, s.key) for s in finished}
    recorded = {k: w for k, w in recorded.items() if w != ""}  # "": not scored
    disagree = list(recorded)
    for source in [*map(Path, experiment.reuse), None]:  # this machine's classifier last
        pin_dir = None if source is None else ExperimentDir(source).classifier
        if pin_dir is not None and not classifier.pinned_file(pin_dir, base).exists():
            continue
        try:
            with classifier.pinned_in(pin_dir):
                _, info = classifier.load_classifier(base, train_if_missing=False)
        except ConfigError:
            continue  # a damaged source pin; or no classifier here (warm_up said why)
        disagree = [k for k, w in recorded.items() if w != info["weights"]
                    and not (w is None and source is not None and rundirs.run_dir(source, k).is_dir())]
        if disagree:
            continue
        try:
            with classifier.pinned_in(pin_dir):
                info = classifier.pin(base, folder)  # another grid's, if it pinned first
        except (OSError, ValueError) as exc:  # a read-only results dir: runs score as before
            log(f"warning: could not pin the classifier in {folder} ({exc})")
            return
        log(f"pinned the classifier (weights {info['weights']}, test accuracy {info.get('test_accuracy')}"
            f"{'' if source is None else ', from ' + str(source)}) in {folder}: this experiment's "
            "runs are scored with it on any machine")
        return
    log(f"classifier not pinned: {len(disagree)} finished run(s) were scored by other weights than "
        "this machine's or did not record them; each report names the trainings that scored its runs")


def _scored_by(results_dir: Path, key: str) -> str | None:
    """The classifier weights a finished run recorded; None if it did not record them; ""
    if it was not scored (diverged before scoring, or no evaluation)."""
    try:
        doc = RunDir(rundirs.run_dir(results_dir, key)).read_metrics()
    except (OSError, ValueError):
        return ""
    feats = ((doc if isinstance(doc, dict) else {}).get("provenance") or {}).get("features") or {}
    return (feats.get("classifier") or {}).get("classifier_weights")
