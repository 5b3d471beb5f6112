"""The sub-tables of an experiment file, each checked into a typed value.

:mod:`ablate.experiment.spec` reads the file and assembles the :class:`Experiment`; this
module checks ``[design]``, ``[evaluation]``, ``[analysis]``, ``[report]`` and an adaptive
``seeds`` table (every unknown key and bad value is a ConfigError naming it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ablate.config import AnalysisSpec, EvalProtocol, SeedPolicy
from ablate.errors import ConfigError
from ablate.hacks.params import check

MAX_SEED_COUNT = 1000  # a count expands to a list; more seeds than this is a typo

DESIGN_KINDS = ("leave-one-out", "add-one-in", "full-factorial", "fractional-factorial", "explicit")

@dataclass(frozen=True)
class DesignSpec:
    """The ``[design]`` table."""

    kind: str = "leave-one-out"
    include_all_off: bool = True  # leave-one-out: also train the naive baseline
    include_all_on: bool = True  # add-one-in: also train the full recipe
    method: str = "fracfact"  # fractional-factorial: "fracfact" or "plackett-burman"
    resolution: int = 4  # fractional-factorial (fracfact): IV keeps main effects clear of 2FIs
    generators: str | None = None  # fractional-factorial: explicit pyDOE3 generator string
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()  # explicit: (name, hacks)



@dataclass(frozen=True)
class ReportSpec:
    """The ``[report]`` table: what ``ablate report`` adds to REPORT.md. Report-only: never
    part of a run key nor of ``experiment.json`` (the report reads it from the experiment
    file, :func:`ablate.experiment.spec.load_report_spec`)."""

    # Results directories (paths as ``results_dir`` and ``reuse`` give them: from the folder
    # ablate runs in) whose verdicts the report puts beside its own, e.g. the same design
    # at another budget: ["results/fashion-mnist-1k"].
    beside: tuple[str, ...] = ()


_SEED_POLICY_KEYS = {"min", "max", "step"}
_ANALYSIS_KEYS = {"sesoi", "alpha", "metric"}
_REPORT_KEYS = {"beside"}


def parse_report(table: Any) -> ReportSpec:
    """``[report]``: ``beside``, a list of results directories (non-blank, no duplicates)."""
    if not isinstance(table, dict):
        raise ConfigError(f"[report] must be a table, got {type(table).__name__}")
    check_keys(table, _REPORT_KEYS, "[report]")
    beside = table.get("beside", [])
    if not isinstance(beside, list) or not all(isinstance(p, str) and p.strip() and "\0" not in p
                                               for p in beside):
        raise ConfigError(f"[report].beside must be a list of results directories whose verdicts the "
                          f"report shows beside its own, e.g. beside = [\"results/fashion-mnist-1k\"]; "
                          f"got {beside!r}")
    if len(set(beside)) != len(beside):
        raise ConfigError(f"[report].beside lists a results directory twice: {beside!r}")
    return ReportSpec(beside=tuple(beside))

# The experiment file's top-level keys that are not tables: written below a [table]
# header, TOML puts them into that table, and the message says so.
_TOP_LEVEL = {"name", "description", "results_dir", "seeds", "reuse"}


def check_keys(table: dict, valid: set[str], where: str, elsewhere: dict[str, str] | None = None) -> None:
    """Refuse keys not in ``valid``; ``elsewhere`` maps a key that belongs in another
    place (``ngf`` in ``[budget]``) to that place, which the message then names."""
    for key in table:
        if key not in valid:
            hint = f" ({key} belongs in {elsewhere[key]})" if key in (elsewhere or {}) else ""
            if not hint and key in _TOP_LEVEL and where != "experiment":
                hint = (f" ({key} is a top-level key: TOML puts a key written below a [table] "
                        "header into that table; move it above the first [table])")
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(sorted(valid))}")


def table_of(doc: dict, name: str) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table, got {type(value).__name__}")
    return value



def parse_evaluation(table: dict, where: str
                     ) -> tuple[EvalProtocol | None, tuple[tuple[str, Any], ...]]:
    """Validate ``[evaluation]`` into the :class:`~ablate.config.EvalProtocol` that scores
    the runs, and ``()``; or, when ``features = []`` scores nothing, None and the table as
    given (``features`` and ``n``, if set: recorded and keyed as given)."""
    table = dict(table)
    if "features" in table:
        feats = table["features"]
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            raise ConfigError(f"{where}.features must be a list of feature-net names, got {feats!r}")
        if len(set(feats)) != len(feats):
            raise ConfigError(f"{where}.features lists a feature net twice: {feats!r}")
        table["features"] = tuple(feats)
    skipped = table.get("features", ("x",)) == ()
    protocol_keys = {f.name for f in dataclasses.fields(EvalProtocol)}
    idle = sorted(set(table) & protocol_keys - {"features", "n"}) if skipped else []
    if idle:
        raise ConfigError(f"{where}: features = [] scores nothing, so {', '.join(map(repr, idle))} "
                          f"would do nothing; remove {'it' if len(idle) == 1 else 'them'} or name a "
                          "feature net (features = [\"classifier\"])")
    check_keys(table, {"features", "n"} if skipped else protocol_keys, where)
    try:  # skipped: n, if given, is still checked
        proto = EvalProtocol.from_dict({k: v for k, v in table.items() if not skipped or k == "n"})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if skipped:
        return None, tuple(sorted(table.items()))
    return proto, ()


def parse_seed_policy(table: dict) -> SeedPolicy:
    """``seeds = { min = 3, max = 10, step = 1 }``: adaptive seeds."""
    check_keys(table, _SEED_POLICY_KEYS, "seeds")
    for key in ("min", "max"):
        if key not in table:
            raise ConfigError(f"seeds: an adaptive range needs '{key}', e.g. seeds = {{ min = 3, max = 10 }}")
    values = {}
    for key in _SEED_POLICY_KEYS & set(table):
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"seeds.{key} must be an integer, got {value!r}")
        values[key] = value
    if values["max"] > MAX_SEED_COUNT:
        raise ConfigError(f"seeds.max = {values['max']}; valid: 2 .. {MAX_SEED_COUNT}")
    return SeedPolicy(seeds=tuple(range(max(values["max"], 0))), adaptive=True, **values)


def parse_analysis(table: Any, protocol: EvalProtocol | None) -> AnalysisSpec:
    """``[analysis]``: sesoi, alpha and the primary metric, checked against the protocol."""
    if not isinstance(table, dict):
        raise ConfigError(f"[analysis] must be a table, got {type(table).__name__}")
    check_keys(table, _ANALYSIS_KEYS, "[analysis]")
    kw: dict[str, Any] = {}
    for key in ("sesoi", "alpha"):
        if key in table:
            kw[key] = check(table[key], float, f"[analysis].{key}")
    if "metric" in table:
        metric = check(table["metric"], str, "[analysis].metric")
        parts = metric.split(".")
        features = protocol.features if protocol is not None else ()
        if len(parts) != 3 or parts[0] not in ("last", "best") or not parts[2]:
            raise ConfigError(f"[analysis].metric = {metric!r}; valid: <checkpoint>.<feature net>"
                              ".<metric> with checkpoint last or best, e.g. \"best.classifier.fid\"")
        if parts[1] not in features:
            raise ConfigError(f"[analysis].metric = {metric!r} names feature net {parts[1]!r}, "
                              f"but [evaluation].features = {list(features)}")
        if parts[0] == "best" and not (protocol is not None and protocol.val_every):
            raise ConfigError(f"[analysis].metric = {metric!r}: a best checkpoint needs "
                              "[evaluation].val_every > 0; use last.<...> or set val_every")
        kw["metric"] = metric
    return AnalysisSpec(**kw)


def parse_design(table: dict) -> DesignSpec:
    valid = {f.name for f in dataclasses.fields(DesignSpec)}
    check_keys(table, valid, "[design]")
    kind = table.get("kind", "leave-one-out")
    if kind not in DESIGN_KINDS:
        raise ConfigError(f"[design].kind: unknown design {kind!r}; valid designs: {', '.join(DESIGN_KINDS)}")
    kw: dict[str, Any] = {"kind": kind}
    for key in ("include_all_off", "include_all_on"):
        if key in table:
            kw[key] = check(table[key], bool, f"[design].{key}")
    if "method" in table:
        kw["method"] = check(table["method"], str, "[design].method")
        if kw["method"] not in ("fracfact", "plackett-burman"):
            raise ConfigError(f"[design].method: unknown method {kw['method']!r}; "
                              "valid: fracfact, plackett-burman")
    if "resolution" in table:
        kw["resolution"] = check(table["resolution"], int, "[design].resolution")
    if "generators" in table:
        kw["generators"] = check(table["generators"], str, "[design].generators")
    if "variants" in table:
        raw = table["variants"]
        if not isinstance(raw, dict):
            raise ConfigError("[design.variants] must be a table of name = [hacks]")
        out = []
        for vname, hacks in raw.items():
            if not vname.strip():
                raise ConfigError("[design.variants]: a variant name is blank; name it, "
                                  "e.g. \"all-on\" = [...]")
            if not isinstance(hacks, list) or not all(isinstance(h, str) for h in hacks):
                raise ConfigError(f"[design.variants].{vname} must be a list of hack names")
            twice = sorted({h for h in hacks if hacks.count(h) > 1})
            if twice:
                raise ConfigError(f"[design.variants].{vname} lists {', '.join(map(repr, twice))} "
                                  "twice; list each hack once")
            out.append((vname, tuple(hacks)))
        kw["variants"] = tuple(out)
    if kind == "explicit" and not kw.get("variants"):
        raise ConfigError("[design]: kind = \"explicit\" needs a [design.variants] table "
                          "of name = [hacks]")
    return DesignSpec(**kw)


