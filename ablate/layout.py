"""The results-directory contract: every file a run directory and an experiment's
results directory hold, named once (docs/design.md, "Layout" and "The store").

A **run directory** (:class:`RunDir`; ``runs/<key>/`` of a grid, ``tmp/<key>-<token>/``
while it trains, or wherever ``ablate train`` writes)::

    config.json         the run's configuration and provenance (training writes it first)
    log.jsonl           one JSON line per log interval and validation
    result.json         status, steps, timings (the last file training writes)
    metrics.json        the scores (``ablate evaluate``, the grid)
    run.json            key, variant, seed, code version, threads, device (the grid)
    samples.png         a sample grid of the final generator
    generator.pt        the final generator's state_dict
    generator_best.pt   the generator at the best validation FID
    discriminator.pt    the final discriminator (when kept)
    train_state.pt      the training checkpoint (deleted when the run ends)
    train_state.prev.pt a fused member's previous checkpoint

An **experiment's results directory** (:class:`ExperimentDir`; ``results/<experiment>/``)::

    experiment.json     :class:`ExperimentRecord`, written by ``ablate grid``, read by the report
    runs.sqlite         the run store (one row per key)
    runs/<key>/         committed run directories
    tmp/<key>-<token>/  attempts in progress or left unfinished
    broken/             directories moved aside, never deleted
    REPORT.md, tables/, figures/   ``ablate report``'s outputs
    anchor.json         ``ablate anchor``'s TF-Inception FID of chosen runs (the report's protocol anchor)
    classifier/         the classifier that scores the runs, pinned (``<key>.pt`` and ``.json``)

``ablate compare`` writes ``SUMMARY.md`` and ``summary/{tables,figures}/`` beside them.

No torch here (plain configuration code imports it): callers that load or save tensors
do it themselves at the paths this module gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.artefacts import append_jsonl, read_json, read_jsonl, write_json
from ablate.errors import ConfigError

__all__ = ["RunDir", "ExperimentDir", "ExperimentRecord", "need",
           "CONFIG", "LOG", "RESULT", "METRICS", "RUN_INFO", "SAMPLES", "GENERATOR",
           "GENERATOR_BEST", "DISCRIMINATOR", "TRAIN_STATE", "TRAIN_STATE_PREV", "TRAIN_STATES",
           "RUN_FILES", "EXPERIMENT_JSON", "DB_NAME", "RUNS", "TMP", "BROKEN", "REPORT_MD", "TABLES",
           "FIGURES", "EFFECTS_CSV", "ANCHOR", "CLASSIFIER", "SUMMARY_MD", "SUMMARY_DIR"]

# ---- a run directory ------------------------------------------------------------------
CONFIG = "config.json"
LOG = "log.jsonl"
RESULT = "result.json"
METRICS = "metrics.json"
RUN_INFO = "run.json"
SAMPLES = "samples.png"
GENERATOR = "generator.pt"
GENERATOR_BEST = "generator_best.pt"
DISCRIMINATOR = "discriminator.pt"
TRAIN_STATE = "train_state.pt"
# A fused group's member keeps its previous checkpoint too: the members' files are
# written one after another, so a kill between two writes leaves a step they all share.
TRAIN_STATE_PREV = "train_state.prev.pt"
TRAIN_STATES = (TRAIN_STATE, TRAIN_STATE_PREV)
RUN_FILES = (CONFIG, RESULT, RUN_INFO)  # every finished run of a grid has these

# ---- an experiment's results directory ------------------------------------------------
EXPERIMENT_JSON = "experiment.json"
DB_NAME = "runs.sqlite"
RUNS = "runs"
TMP = "tmp"
BROKEN = "broken"
REPORT_MD = "REPORT.md"
TABLES = "tables"
FIGURES = "figures"
EFFECTS_CSV = "effects.csv"  # under tables/: what ``ablate compare`` reads of a report
ANCHOR = "anchor.json"  # ``ablate anchor``: TF-Inception FID of chosen runs, never in metrics.json
CLASSIFIER = "classifier"  # the pinned classifier (ablate.metrics.classifier.pin)
# ``ablate compare``'s outputs, in the folder holding the results directories
SUMMARY_MD = "SUMMARY.md"
SUMMARY_DIR = "summary"


@dataclass(frozen=True)
class RunDir:
    """One run's directory: the path of each file in it, and readers/writers of its JSON."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # paths
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def result(self) -> Path:
        return self.path / RESULT

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def run_info(self) -> Path:
        return self.path / RUN_INFO

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def generator(self) -> Path:
        return self.path / GENERATOR

    @property
    def generator_best(self) -> Path:
        return self.path / GENERATOR_BEST

    @property
    def discriminator(self) -> Path:
        return self.path / DISCRIMINATOR

    @property
    def train_state(self) -> Path:
        return self.path / TRAIN_STATE

    @property
    def train_state_prev(self) -> Path:
        return self.path / TRAIN_STATE_PREV

    @property
    def train_states(self) -> tuple[Path, ...]:
        """The training checkpoint and (fused members) the previous one."""
        return tuple(self.path / n for n in TRAIN_STATES)

    # readers and writers (JSON as ``ablate.artefacts`` writes it: indented, atomic)
    def read_config(self) -> Any:
        return read_json(self.config)

    def write_config(self, doc: Any) -> None:
        write_json(self.config, doc)

    def read_result(self) -> Any:
        return read_json(self.result)

    def write_result(self, doc: Any) -> None:
        write_json(self.result, doc)

    def read_metrics(self) -> Any:
        return read_json(self.metrics)

    def write_metrics(self, doc: Any) -> None:
        write_json(self.metrics, doc)

    def read_run_info(self) -> Any:
        return read_json(self.run_info)

    def write_run_info(self, doc: Any) -> None:
        write_json(self.run_info, doc)

    def read_log(self) -> list[dict]:
        """``log.jsonl``'s records (a torn last line from a killed writer skipped)."""
        return read_jsonl(self.log)

    def append_log(self, record: dict) -> None:
        append_jsonl(self.log, record)

    def read(self, name: str) -> dict[str, Any] | None:
        """The JSON object in file ``name`` (e.g. :data:`RESULT`), or None where it is
        missing, unreadable or not an object."""
        try:
            doc = json.loads((self.path / name).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return doc if isinstance(doc, dict) else None


@dataclass(frozen=True)
class ExperimentDir:
    """An experiment's results directory (``results/<experiment>/``)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def experiment_json(self) -> Path:
        return self.path / EXPERIMENT_JSON

    @property
    def db(self) -> Path:
        return self.path / DB_NAME

    @property
    def runs(self) -> Path:
        return self.path / RUNS

    @property
    def tmp(self) -> Path:
        return self.path / TMP

    @property
    def broken(self) -> Path:
        return self.path / BROKEN

    @property
    def report(self) -> Path:
        return self.path / REPORT_MD

    @property
    def tables(self) -> Path:
        return self.path / TABLES

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def effects_csv(self) -> Path:
        return self.tables / EFFECTS_CSV

    @property
    def anchor(self) -> Path:
        return self.path / ANCHOR

    @property
    def classifier(self) -> Path:
        return self.path / CLASSIFIER

    @staticmethod
    def run_rel(key: str) -> Path:
        """A committed run's directory relative to the results directory (``runs/<key>``),
        as the store's ``run_dir`` column records it."""
        return Path(RUNS) / key

    def run(self, key: str) -> RunDir:
        """The committed run directory of ``key``."""
        return RunDir(self.path / self.run_rel(key))

    def attempt(self, key: str, token: str | None) -> RunDir:
        """The directory attempt ``token`` at ``key`` trains in (``tmp/<key>-<token>/``)."""
        return RunDir(self.tmp / f"{key}-{token}")

    def read_experiment(self) -> ExperimentRecord:
        return ExperimentRecord.from_json(read_json(self.experiment_json), str(self.experiment_json))

    def write_experiment(self, record: ExperimentRecord) -> None:
        write_json(self.experiment_json, record.to_json())


def need(doc: dict, key: str, typ: type | tuple[type, ...], where: str) -> Any:
    """``doc[key]``, checked to be a ``typ``; a ConfigError naming the key otherwise."""
    if key not in doc:
        raise ConfigError(f"{where}: missing key {key!r}; was it written by `ablate grid`? "
                          "Rerun `ablate grid EXPERIMENT.toml` to rewrite it (finished runs are kept)")
    value = doc[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is not bool:
        raise ConfigError(f"{where}: {key!r} has the wrong type ({type(value).__name__}); "
                          "rerun `ablate grid EXPERIMENT.toml` to rewrite it")
    return value


@dataclass(frozen=True)
class ExperimentRecord:
    """``experiment.json``: what ``ablate grid`` records of an experiment for its readers.

    ``experiment`` is the parsed experiment file (``Experiment.to_dict()``), ``design`` the
    expanded design (``Design.to_dict()``: kind, hacks, variants, comparisons
    ``{hack, on, off}``, plus ``level`` with axes, resolution, aliasing, notes), ``hacks`` the hacks in scope in
    order, ``reference`` ``{hack: {"on": variant, "off": reference}}``, ``variants`` each
    variant with its hacks, ``seeds``, ``runs`` (planned count), ``code_version``,
    ``hack_info`` (each hack's description, provider and resolved parameters). ``extra``
    holds the rest in the order written: ``seed_policy`` and ``analysis`` (as dicts),
    and for adaptive seeds ``looks`` and ``max_looks``. Dict values are read-only by
    convention. ``ExperimentRecord.from_json(doc).to_json() == doc`` for every file the
    grid writes.
    """

    experiment: dict[str, Any]
    design: dict[str, Any]
    hacks: tuple[str, ...]
    reference: dict[str, Any] = field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ()
    seeds: tuple[int, ...] = ()
    runs: int = 0
    code_version: str = ""
    hack_info: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("experiment", "design", "hacks", "reference", "variants", "seeds", "runs",
             "code_version", "hack_info")

    def to_json(self) -> dict[str, Any]:
        """The JSON object, keys in the order the grid has always written them."""
        return {"experiment": self.experiment, "design": self.design, "hacks": list(self.hacks),
                "reference": self.reference, "variants": list(self.variants),
                "seeds": list(self.seeds), "runs": self.runs, "code_version": self.code_version,
                "hack_info": self.hack_info, **self.extra}

    @classmethod
    def from_json(cls, doc: Any, where: str = EXPERIMENT_JSON) -> ExperimentRecord:
        """Parse what :meth:`to_json` wrote; a ConfigError naming ``where`` and the key
        when a required key (experiment, design, hacks) is missing or of the wrong type.
        ``seeds`` defaults to the experiment's."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        exp = need(doc, "experiment", dict, where)
        design = need(doc, "design", dict, where)
        hacks = need(doc, "hacks", list, where)
        seeds = doc.get("seeds", exp.get("seeds", []))
        if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
            raise ConfigError(f"{where}: 'seeds' must be a list of integers, got {seeds!r}")
        return cls(experiment=exp, design=design, hacks=tuple(hacks),
                   reference=dict(doc.get("reference") or {}),
                   variants=tuple(doc.get("variants") or ()), seeds=tuple(seeds),
                   runs=doc.get("runs", 0), code_version=str(doc.get("code_version", "")),
                   hack_info=dict(doc.get("hack_info") or {}),
                   extra={k: v for k, v in doc.items() if k not in cls._KEYS})

    @property
    def name(self) -> str:
        return self.experiment.get("name", "")
