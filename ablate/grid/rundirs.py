"""Run directories and the index, cross-checked.

Every committed run directory ``runs/<key>/`` describes itself: ``run.json`` (key,
variant, seed, code version, thread count, device), ``result.json`` (status, steps,
timings), ``metrics.json`` (when evaluated) and ``config.json``. So the index can be
rebuilt from the directories, and the two are checked against each other:

* a complete directory whose key the index does not list as finished (the store was
  lost, emptied or rebuilt, or a run was killed between its rename and its commit)
  is **adopted**: indexed as finished, never retrained;
* a finished key whose directory or result files are gone is **missing**, one whose
  ``generator.pt`` is gone or unreadable has **no checkpoint**; ``ablate status``
  and ``ablate grid`` report both and ``ablate grid --repair`` retrains exactly those;
* a directory is never deleted: one that must make way (``--repair``, an incomplete
  leftover) is moved to ``broken/<key>-<time>/``.

Unfinished attempts live in ``tmp/<key>-<token>/``. The sweep removes those no live
claim owns, except, for a key not finished, the one holding the newest training
checkpoint (``train_state.pt``): the key's next owner resumes from it
(:func:`checkpoints`) and never writes into it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate import layout
from ablate.grid.keys import CODE_VERSION, RunSpec
from ablate.grid.store import TERMINAL, Status, Store

RUN_FILES = layout.RUN_FILES  # every finished run has these
METRICS = layout.METRICS  # evaluated runs that finished training
CHECKPOINT = layout.GENERATOR
# a run's training checkpoint and, for a fused group's member, its previous one
TRAIN_STATES = layout.TRAIN_STATES


def run_dir(results_dir: Path, key: str) -> Path:
    return layout.ExperimentDir(results_dir).run(key).path


def missing_files(path: Path, evaluates: bool) -> list[str]:
    """What a finished run directory lacks of its result files (not the checkpoint): each
    missing or unreadable (a truncated or garbled JSON file counts as lost)."""
    if not path.is_dir():
        return ["the directory"]
    docs = {f: _read(path, f) for f in RUN_FILES}
    status = (docs[layout.RESULT] or {}).get("status")
    if evaluates and status == Status.DONE:
        m = _read(path, METRICS)
        # Parsing is not enough: '{}' or '"best": null' would be indexed as scored and
        # silently drop out of the report's metrics (the "last" section is always written,
        # "best" where there is a best checkpoint).
        whole = isinstance(m, dict) and isinstance(m.get("last"), dict) and bool(m["last"]) \
            and isinstance(m.get("best", {}), dict)
        docs[METRICS] = m if whole else None
    lost = [f for f, doc in docs.items() if doc is None]
    if layout.RESULT not in lost and status not in TERMINAL:  # parses, but says no finish
        lost.append(layout.RESULT)
    return lost


def readable_checkpoint(path: Path) -> bool:
    """Whether ``path`` can be a checkpoint: torch.save writes a zip archive, so a
    truncated or garbled file fails this cheap check (its end of central directory)."""
    return path.is_file() and zipfile.is_zipfile(path)


def _status(path: Path) -> str | None:
    try:
        return json.loads(layout.RunDir(path).result.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _read(path: Path, name: str) -> dict[str, Any] | None:
    return layout.RunDir(path).read(name)


def execution_of(path: Path) -> tuple[int | None, str | None]:
    """(torch threads, device type) a run directory was trained with.

    From ``run.json``; runs committed before it recorded them say it in ``config.json``
    (``train.threads``, ``device``).
    """
    run = _read(path, layout.RUN_INFO) or {}
    if "threads" in run:
        threads, device = run.get("threads"), run.get("device")
    else:
        cfg = _read(path, layout.CONFIG) or {}
        threads = (cfg.get("train") or {}).get("threads") if isinstance(cfg.get("train"), dict) else None
        device = cfg.get("device")
        device = str(device).split(":")[0] if device else None
    # A hand-edited or damaged record reads as unknown, not as a crash of the grid.
    return (threads if isinstance(threads, int) and not isinstance(threads, bool) else None,
            device if isinstance(device, str) else None)


def committed_wall(run: dict[str, Any], result: dict[str, Any]) -> Any:
    """The wall time the commit stored for a run (``worker.commit``): this attempt's, as
    ``run.json`` keeps it, plus the earlier attempts' up to the checkpoint it resumed; so an
    index rebuilt from the run directories says what the original one said. Runs from
    before ``attempt_wall_s`` was recorded have ``result.json``'s."""
    attempt = run.get("attempt_wall_s")
    extra = result.get("extra") if isinstance(result.get("extra"), dict) else {}
    resumed = extra.get("resumed_wall_s", 0.0)
    if isinstance(attempt, (int, float)) and isinstance(resumed, (int, float)):
        return float(attempt) + float(resumed)
    return result.get("wall_time_s")


def index_fields(path: Path, key: str, evaluates: bool) -> dict[str, Any] | None:
    """The store row of a complete run directory, or None if it is not one of ``key``."""
    run, result = _read(path, layout.RUN_INFO), _read(path, layout.RESULT)
    if not run or not result or run.get("key") != key or run.get("code_version") != CODE_VERSION:
        return None
    if result.get("status") not in TERMINAL or missing_files(path, evaluates):
        return None
    metrics = _read(path, METRICS)
    threads, device = execution_of(path)
    return {"status": result["status"], "variant": run.get("variant"), "seed": run.get("seed"),
            "steps": result.get("steps"), "diverged_step": result.get("diverged_step"),
            "wall_time_s": committed_wall(run, result), "train_time_s": result.get("train_time_s"),
            "eval_time_s": run.get("eval_time_s"), "images_per_s": result.get("images_per_s"),
            "metrics": json.dumps(metrics) if metrics else None, "threads": threads,
            "device": device, "finished": path.stat().st_mtime,
            "run_dir": str(layout.ExperimentDir.run_rel(key))}


def quarantine(results_dir: Path, path: Path) -> Path:
    """Move ``path`` to ``broken/<name>-<time>/`` (never delete a run directory)."""
    dest = layout.ExperimentDir(results_dir).broken / f"{path.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while dest.exists():
        dest = dest.with_name(f"{dest.name}.{n}")
        n += 1
    os.rename(path, dest)
    return dest


def attempt_dirs(results_dir: Path, key: str) -> list[Path]:
    """Every attempt's tmp dir of ``key`` (``tmp/<key>-<token>/``), live or not."""
    tmp = layout.ExperimentDir(results_dir).tmp
    return sorted(tmp.glob(f"{key}-*")) if tmp.is_dir() else []


def checkpoints(results_dir: Path, key: str, token: str | None = None) -> list[Path]:
    """The training checkpoints other attempts at ``key`` left (not ``token``'s own)."""
    return [d / name for d in attempt_dirs(results_dir, key) if d.name != f"{key}-{token}"
            for name in TRAIN_STATES if (d / name).is_file()]


def _newest_checkpoint(dirs: list[Path]) -> Path | None:
    """The dir whose checkpoint has the highest step (then the newest file)."""
    from ablate.training.checkpoint import step_of  # torch: only where a checkpoint exists

    best: tuple[int, float, Path] | None = None
    for d in dirs:
        for path in (d / name for name in TRAIN_STATES):
            if not path.is_file():
                continue
            step = step_of(path)
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if step is not None and (best is None or (step, mtime) > best[:2]):
                best = (step, mtime, d)
    return best[2] if best else None


def sweep_tmp(store: Store) -> int:
    """Delete tmp dirs of attempts that are no longer live (killed, failed, lost claims,
    abandoned), but keep, for each key not finished, the dir with its newest training
    checkpoint (its next owner resumes from it). Returns how many were deleted."""
    tmp = layout.ExperimentDir(store.results_dir).tmp
    n = 0
    if not tmp.is_dir():
        return 0
    by_key: dict[str, list[Path]] = {}
    for d in tmp.iterdir():
        # Only real directories are attempts; anything else stays (rmtree would open a FIFO
        # and block the grid forever).
        if d.is_dir() and not d.is_symlink():
            by_key.setdefault(d.name.rpartition("-")[0], []).append(d)
    for key, dirs in by_key.items():
        live = store.live_token(key)
        row = store.get(key) or {}
        keep = None if row.get("status") in TERMINAL else _newest_checkpoint(dirs)
        for d in dirs:
            if d.name.rpartition("-")[2] != live and d != keep:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
    return n


@dataclass
class Reconciled:
    """What :func:`reconcile` found and did."""

    adopted: list[str] = field(default_factory=list)  # indexed from their directories
    missing: list[str] = field(default_factory=list)  # finished, directory or results gone
    no_checkpoint: list[str] = field(default_factory=list)  # finished, generator.pt gone
    reopened: list[str] = field(default_factory=list)  # --repair: pending again


def check(store: Store, specs: Iterable[RunSpec]) -> Reconciled:
    """Compare the index with the run directories of ``specs``; change nothing."""
    out = Reconciled()
    seen: set[str] = set()
    for s in specs:
        if s.key in seen:
            continue
        seen.add(s.key)
        row = store.get(s.key) or {}
        path = run_dir(store.results_dir, s.key)
        if row.get("status") in TERMINAL:
            if missing_files(path, s.evaluates):
                out.missing.append(s.key)
            elif not readable_checkpoint(path / CHECKPOINT):
                out.no_checkpoint.append(s.key)
        elif path.is_dir() and index_fields(path, s.key, s.evaluates) is not None \
                and not (row.get("status") == Status.RUNNING and store.live_token(s.key)):
            out.adopted.append(s.key)  # would be adopted
    return out


def reconcile(store: Store, specs: Iterable[RunSpec], repair: bool = False) -> Reconciled:
    """Adopt complete run directories the index does not count as finished; with
    ``repair``, reopen finished keys whose directory, results or checkpoint are gone
    (their remains moved to ``broken/``). Also backfills thread counts and devices."""
    specs = list(specs)
    found = check(store, specs)
    by_key = {s.key: s for s in specs}
    out = Reconciled(missing=found.missing, no_checkpoint=found.no_checkpoint)
    for key in found.adopted:
        fields = index_fields(run_dir(store.results_dir, key), key, by_key[key].evaluates)
        if fields and store.adopt(key, {**fields, "config": json.dumps(by_key[key].identity,
                                                                        sort_keys=True)}):
            out.adopted.append(key)
    if repair:
        for key in found.missing + found.no_checkpoint:
            path = run_dir(store.results_dir, key)
            if path.exists():
                quarantine(store.results_dir, path)
            if store.reopen(key, "missing" if key in found.missing else "no checkpoint"):
                out.reopened.append(key)
    for row in store.runs():  # thread counts of runs indexed before they were recorded
        if row["status"] in TERMINAL and row.get("threads") is None and row.get("run_dir"):
            threads, device = execution_of(store.results_dir / row["run_dir"])
            if threads is not None:
                store.set_execution(row["key"], threads, device)
    return out


def finished_threads(store: Store | None, results_dir: Path) -> dict[int, int]:
    """{torch threads: finished CPU runs} of a results directory (read-only).

    Without a store (missing or empty index), the run directories are counted.
    """
    counts: dict[int, int] = {}
    if store is not None:
        rows = [r for r in store.runs() if r["status"] in TERMINAL]
    else:
        runs = layout.ExperimentDir(results_dir).runs
        rows = [{"run_dir": str(p.relative_to(results_dir))} for p in
                (sorted(runs.iterdir()) if runs.is_dir() else []) if _status(p) in TERMINAL]
    for row in rows:
        threads, device = row.get("threads"), row.get("device")
        if threads is None and row.get("run_dir"):
            threads, device = execution_of(Path(results_dir) / row["run_dir"])
        if threads is not None and (device or "cpu") == "cpu":
            counts[int(threads)] = counts.get(int(threads), 0) + 1
    return counts
