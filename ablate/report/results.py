"""The results contract: what the report reads from a results directory, typed.

:meth:`Results.load` reads ``experiment.json`` (written by the grid driver) and the run
store (``runs.sqlite``, through :func:`ablate.grid.store.load_frame`) and returns

* ``frame``: one row per planned run, in the store's schema (see ``load_frame``);
* ``meta``: an :class:`ExperimentMeta`, a frozen value parsed from ``experiment.json``
  with the design's contrasts exactly as the design wrote them (``design.comparisons``)
  and the ``analysis`` / ``seed_policy`` blocks as :class:`~ablate.config.AnalysisSpec`
  and :class:`~ablate.config.SeedPolicy` (their defaults when the file has none, as in
  results written before they existed).

Nothing here guesses: an ``experiment.json`` that lacks a required key or has one of
the wrong type raises :class:`~ablate.errors.ConfigError` naming the key. The report
never writes to the results directory's store.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ablate.config import AnalysisSpec, SeedPolicy
from ablate.errors import ConfigError
from ablate.experiment.design import Comparison  # the design's type, re-exported for the report
from ablate.grid.store import load_frame
from ablate.layout import EXPERIMENT_JSON, ExperimentDir, ExperimentRecord, need

__all__ = ["Comparison", "ExperimentMeta", "Results", "parse_meta"]


@dataclass(frozen=True)
class ExperimentMeta:
    """``experiment.json``, typed. Dict-valued fields are read-only by convention."""

    name: str
    dataset: str
    design_kind: str
    hacks: tuple[str, ...]  # in scope, in design order
    variants: tuple[tuple[str, tuple[str, ...]], ...]  # (name, enabled hacks), design order
    comparisons: tuple[Comparison, ...]  # the design's one-factor contrasts
    seeds: tuple[int, ...]
    analysis: AnalysisSpec = AnalysisSpec()
    seed_policy: SeedPolicy = SeedPolicy()
    description: str = ""
    source: str | None = None
    resolution: int | None = None
    aliasing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluation: dict[str, Any] = dataclasses.field(default_factory=dict)
    code_version: str = ""
    hack_info: dict[str, Any] = dataclasses.field(default_factory=dict)
    # ``[axes]`` (absent without them): {axis: levels}, each variant's level {axis: value},
    # and per comparison row name ``"<hack> @ <level>"`` the real hack it measures
    axes: dict[str, tuple] = dataclasses.field(default_factory=dict)
    variant_levels: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    row_hacks: dict[str, str] = dataclasses.field(default_factory=dict)

    def hack_of(self, row: str) -> str:
        """The real hack of a comparison row (``noisy-labels @ lr_scale=2`` -> ``noisy-labels``)."""
        return self.row_hacks.get(row, row)

    def level_of(self, row: str) -> str:
        """The level label of a comparison row (``""`` without axes)."""
        return next((c.level for c in self.comparisons if c.hack == row), "")

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.variants)

    @property
    def is_factorial(self) -> bool:
        return self.design_kind in ("full-factorial", "fractional-factorial")

    def variant_hacks(self) -> dict[str, frozenset[str]]:
        return {v: frozenset(h) for v, h in self.variants}


def _spec(cls, doc: Any, where: str):
    """A frozen config dataclass from its dict (defaults where the file has none)."""
    if doc is None:
        return cls()
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} must be a table, got {type(doc).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(names)}")
    doc = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
    try:
        return cls(**doc)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_meta(doc: dict | ExperimentRecord, where: str = EXPERIMENT_JSON) -> ExperimentMeta:
    """The typed view of ``experiment.json`` (an :class:`~ablate.layout.ExperimentRecord`,
    or its JSON object, which ``ablate.grid.driver.write_experiment_meta`` writes)."""
    rec = doc if isinstance(doc, ExperimentRecord) else ExperimentRecord.from_json(doc, where)
    exp, design, hacks = rec.experiment, rec.design, rec.hacks
    variants, levels = [], {}
    for v in need(design, "variants", list, f"{where}: design"):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) \
                or not isinstance(v.get("hacks"), list):
            raise ConfigError(f"{where}: design.variants entries need a name and a hacks list, got {v!r}")
        variants.append((v["name"], tuple(v["hacks"])))
        if isinstance(v.get("level"), dict):
            levels[v["name"]] = dict(v["level"])
    names = {v for v, _ in variants}
    comparisons, row_hacks = [], {}
    for c in need(design, "comparisons", list, f"{where}: design"):
        if not isinstance(c, dict) or not all(isinstance(c.get(k), str) for k in ("hack", "on", "off")):
            raise ConfigError(f"{where}: design.comparisons entries need hack, on and off, got {c!r}")
        if c["on"] not in names or c["off"] not in names:
            raise ConfigError(f"{where}: comparison {c!r} names a variant the design does not have")
        level = c.get("level")
        if level is not None and not isinstance(level, str):
            raise ConfigError(f"{where}: design.comparisons level must be a string, got {c!r}")
        if level:  # one comparison of the hack per level of the axes: its row is "<hack> @ <level>"
            row = f"{c['hack']} @ {level}"
            row_hacks[row] = c["hack"]
            comparisons.append(Comparison(row, c["on"], c["off"], level))
        else:
            comparisons.append(Comparison(c["hack"], c["on"], c["off"]))
    axes = exp.get("axes") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()):
        raise ConfigError(f"{where}: experiment.axes must be a table of axis = [levels], got {axes!r}")
    return ExperimentMeta(
        name=str(need(exp, "name", str, f"{where}: experiment")),
        dataset=str(need(exp, "dataset", str, f"{where}: experiment")),
        design_kind=str(need(design, "kind", str, f"{where}: design")),
        hacks=hacks, variants=tuple(variants), comparisons=tuple(comparisons),
        seeds=rec.seeds,
        analysis=_spec(AnalysisSpec, rec.extra.get("analysis"), f"{where}: analysis"),
        seed_policy=_spec(SeedPolicy, rec.extra.get("seed_policy"), f"{where}: seed_policy"),
        description=str(exp.get("description") or ""), source=exp.get("source"),
        resolution=design.get("resolution"), aliasing=tuple(design.get("aliasing") or ()),
        notes=tuple(design.get("notes") or ()), train=dict(exp.get("train") or {}),
        evaluation=dict(exp.get("evaluation") or {}),
        code_version=rec.code_version, hack_info=rec.hack_info,
        axes={k: tuple(v) for k, v in axes.items()}, variant_levels=levels, row_hacks=row_hacks)


@dataclass(frozen=True)
class Results:
    """A results directory, read: the run frame and the typed experiment meta."""

    results_dir: Path
    frame: pd.DataFrame
    meta: ExperimentMeta

    @classmethod
    def load(cls, results_dir: Path | str) -> Results:
        results_dir = Path(results_dir)
        if results_dir.exists() and not results_dir.is_dir():
            raise ConfigError(f"{results_dir} is a file, not a results directory; give the "
                              "folder `ablate grid` wrote (results/<experiment>/)")
        if not results_dir.is_dir():
            raise ConfigError(
                f"results dir {results_dir} does not exist; produce it with "
                "`ablate grid experiments/<experiment>.toml` (it writes results/<experiment>/), "
                "then run `ablate report results/<experiment>`")
        path = ExperimentDir(results_dir).experiment_json
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: {results_dir} is not a results directory written "
                              "by `ablate grid` (if it holds runs, `ablate grid EXPERIMENT.toml` "
                              "rewrites it; finished runs are kept)") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is unreadable ({exc}); rerun `ablate grid EXPERIMENT.toml` "
                              "to rewrite it (finished runs are kept)") from exc
        meta = parse_meta(doc, str(path))
        try:
            frame = load_frame(results_dir)
        except FileNotFoundError as exc:
            raise ConfigError(f"no run store in {results_dir} ({exc}); run `ablate grid` first") from exc
        except Exception as exc:  # sqlite3.DatabaseError and kin: a corrupt store
            raise ConfigError(f"cannot read the run store of {results_dir}: "
                              f"{type(exc).__name__}: {exc}") from exc
        return cls(results_dir, frame, meta)
