"""Readers of an experiment's results for the report: :func:`load_frame` (one row per
planned run) and :func:`load_experiment_meta` (``experiment.json``). Both only read: they
work on a read-only results directory. Import them from :mod:`ablate.grid.store`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ablate import layout
from ablate.errors import ConfigError
from ablate.grid.db import NoStore, StoreCorrupt, connect_readonly, planned_rows

EXPERIMENT_JSON = layout.EXPERIMENT_JSON  # ablate.layout names it


def flatten_metrics(metrics: dict | None) -> dict[str, float]:
    """``{"last": {"classifier": {"fid": 3.1}}}`` -> ``{"last.classifier.fid": 3.1}``.

    Only numeric leaves are kept; ``protocol`` and ``provenance`` are skipped.
    """
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if not prefix and k in ("protocol", "provenance"):
                    continue
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[prefix] = float(node)
        elif node is None and prefix:
            out[prefix] = float("nan")

    walk("", metrics or {})
    return out


BASE_COLUMNS = ["key", "variant", "seed", "status", "diverged_step", "wall_time_s",
                "train_time_s", "images_per_s", "run_dir"]


# What every run of one experiment shares (axes vary widths, learning rates and hack
# parameters, never these): an index whose runs differ here belongs to another experiment.
_SHARED = ("dataset", "steps", "batch_size")


def _check_belongs(rows: list[dict], meta: dict, path: Path) -> None:
    """Refuse an index (``runs.sqlite``) whose runs were planned by another experiment than
    the ``experiment.json`` beside it (a copied or swapped file): its report would carry
    the other runs' numbers under this experiment's name."""
    exp = meta.get("experiment") if isinstance(meta.get("experiment"), dict) else {}
    want = {"dataset": exp.get("dataset"), **{k: (exp.get("train") or {}).get(k) for k in _SHARED[1:]}}
    variants = {v.get("name") for v in meta.get("variants") or [] if isinstance(v, dict)}
    for r in rows:
        try:
            train = json.loads(r.get("config") or "null")["train"]
        except (TypeError, ValueError, KeyError):
            train = None  # a row without its identity (pending, or an old index): names only
        differs = [f"{k} {train.get(k)!r} vs {want[k]!r}" for k in _SHARED
                   if isinstance(train, dict) and want[k] is not None and train.get(k) != want[k]]
        if variants and r["variant"] not in variants:
            differs.append(f"variant {r['variant']!r} not in its design")
        if differs:
            raise ConfigError(
                f"{path} indexes runs of another experiment than {path.parent / layout.EXPERIMENT_JSON} "
                f"describes ({exp.get('name')!r}): {differs[0]}. Put back this experiment's own index, "
                f"or run `ablate grid <its experiment file> --results-dir {path.parent} --rebuild-index`, "
                "which rebuilds it from the run directories (nothing is retrained)")


def load_frame(results_dir: Path | str):
    """One row per planned run (variant x seed) of an experiment, as a DataFrame.

    Columns: ``key, variant, seed, status, diverged_step, wall_time_s, train_time_s,
    images_per_s, run_dir`` (absolute path or None), then ``hack:<name>`` (bool) for
    every hack in scope, then metric columns ``<checkpoint>.<feature>.<metric>``
    flattened from each run's ``metrics.json`` (e.g. ``last.classifier.fid``), NaN
    where a run has no metrics (pending, failed, diverged). Extra columns
    ``eval_time_s``, ``attempts`` and ``error`` follow the base columns. Opens the
    store read-only.
    """
    import pandas as pd  # import-time saving: pandas loads only for readers of results

    results_dir = Path(results_dir).resolve()
    meta = load_experiment_meta(results_dir)
    scope = list(meta.get("hacks", []))
    path = layout.ExperimentDir(results_dir).db
    db = connect_readonly(path)
    try:
        rows = planned_rows(db)
    finally:
        db.close()
    _check_belongs(rows, meta, path)
    records = []
    metric_cols: dict[str, None] = {}
    for r in rows:
        try:
            hacks = set(json.loads(r["plan_hacks"]))
            metrics = flatten_metrics(json.loads(r["metrics"]) if r.get("metrics") else None)
        except (TypeError, ValueError) as exc:  # a damaged row: the run directory has it right
            raise StoreCorrupt(f"{path}: the row of run {r['key']} is unreadable ({exc}). The run "
                               f"directories are intact: `ablate grid <experiment> --rebuild-index` "
                               f"moves the file aside and rebuilds the index from "
                               f"{results_dir}/runs/*/ (nothing is retrained)") from exc
        rec: dict[str, Any] = {
            "key": r["key"], "variant": r["variant"], "seed": int(r["seed"]),
            "status": r["status"], "diverged_step": r.get("diverged_step"),
            "wall_time_s": r.get("wall_time_s"), "train_time_s": r.get("train_time_s"),
            "images_per_s": r.get("images_per_s"),
            "run_dir": str(results_dir / r["run_dir"]) if r.get("run_dir") else None,
            "eval_time_s": r.get("eval_time_s"), "attempts": r.get("attempts") or 0,
            "error": r.get("error"),
        }
        for h in scope:
            rec[f"hack:{h}"] = h in hacks
        metric_cols.update(dict.fromkeys(metrics))
        rec.update(metrics)
        records.append(rec)
    columns = BASE_COLUMNS + ["eval_time_s", "attempts", "error"] + [f"hack:{h}" for h in scope] \
        + sorted(metric_cols)
    frame = pd.DataFrame.from_records(records, columns=columns)
    for c in ("diverged_step",):
        frame[c] = frame[c].astype("Int64")
    for c in ("wall_time_s", "train_time_s", "images_per_s", "eval_time_s", *metric_cols):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    return frame


def load_experiment_meta(results_dir: Path | str) -> dict[str, Any]:
    """The ``experiment.json`` of a results directory.

    Keys: ``experiment`` (the parsed experiment file), ``design`` (kind, variants with
    their hacks, comparisons ``{hack, on, off}`` = each hack's variant and reference
    variant, resolution, aliasing), ``hacks`` (in scope, in order), ``reference``
    (``{hack: {"on": variant, "off": reference}}``), ``code_version``, ``hack_info``
    (each hack's description and resolved parameters) and ``runs`` (planned count).
    """
    path = layout.ExperimentDir(results_dir).experiment_json
    if not path.is_file():
        here = layout.ExperimentDir(results_dir)
        if here.db.is_file() or here.runs.is_dir():  # a grid's store that lost its record
            raise NoStore(f"{path} not found, though {Path(results_dir)} holds runs; `ablate grid` "
                          "on the experiment rewrites it (finished runs are kept)")
        raise NoStore(f"{path} not found: {Path(results_dir)} is not (yet) the results "
                      "directory of a grid; run `ablate grid` on the experiment first")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); `ablate grid` on the experiment "
                          "rewrites it") from exc
    damage = _damage(meta)
    if damage:  # hand-edited or written by something else: its readers would fail on it
        raise ConfigError(f"{path} is damaged ({damage}); `ablate grid` on the experiment "
                          "rewrites it (finished runs are kept)")
    return meta


# The parts of experiment.json its readers (status, load_frame, the looks) index into.
_SHAPE = {"hacks": list, "variants": list, "looks": list, "design": dict}


def _damage(meta: Any) -> str:
    """What is wrong with the shape of an ``experiment.json`` document, or ''."""
    if not isinstance(meta, dict):
        return f"a JSON {type(meta).__name__}, not an object"
    exp = meta.get("experiment")
    if not isinstance(exp, dict) or not isinstance(exp.get("name"), str):
        return "no 'experiment' object with a 'name'"
    for key, kind in _SHAPE.items():
        if key in meta and not isinstance(meta[key], kind):
            return f"'{key}' is a {type(meta[key]).__name__}, not a JSON {kind.__name__}"
    if not all(isinstance(x, dict) for x in meta.get("variants", []) + meta.get("looks", [])):
        return "'variants' and 'looks' must list JSON objects"
    return ""
