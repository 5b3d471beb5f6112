"""Runs reused from other results directories (an experiment's ``reuse = [...]``).

A run key names what a run computes, so a finished run of the same key in another
experiment's results directory is this experiment's run too: an axis over
``lr_scale = [0.5, 1, 2]`` on top of ``fashion-mnist-1k`` copies the x1 level's finished
runs from ``results/fashion-mnist-1k`` and trains only x0.5 and x2. A run is copied
whole (result, metrics, log, config; not its training checkpoints) into ``tmp/`` and
renamed into ``runs/<key>`` in one step, then indexed like any complete run directory
found on disk (:func:`ablate.grid.rundirs.reconcile`); the source is only read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ablate import layout
from ablate.grid.keys import RunSpec
from ablate.grid.rundirs import index_fields, run_dir
from ablate.grid.store import TERMINAL, Status, Store


def sources_of(spec: RunSpec, sources: Iterable[Path]) -> Path | None:
    """The first source results directory holding a complete run of ``spec``'s key."""
    for root in sources:
        path = run_dir(Path(root), spec.key)
        if path.is_dir() and index_fields(path, spec.key, spec.evaluates) is not None:
            return path
    return None


def reusable(store: Store | None, specs: Iterable[RunSpec], sources: Iterable[Path]
             ) -> dict[str, Path]:
    """``{key: source run directory}`` of the planned keys not finished here (read-only)."""
    sources = [Path(s) for s in sources]
    out: dict[str, Path] = {}
    for s in specs:
        if s.key in out or (store is not None and (store.get(s.key) or {}).get("status") in TERMINAL):
            continue
        src = sources_of(s, sources)
        if src is not None:
            out[s.key] = src
    return out


def import_runs(store: Store, specs: Iterable[RunSpec], sources: Iterable[Path]) -> list[str]:
    """Copy the runs :func:`reusable` finds into this results directory; their keys.

    A key that a live claim holds here, or whose directory exists here, is left alone."""
    here = layout.ExperimentDir(store.results_dir)
    copied = []
    for key, src in reusable(store, specs, sources).items():
        dest = run_dir(store.results_dir, key)
        if dest.exists() or (store.get(key) or {}).get("status") == Status.RUNNING:
            continue
        tmp = here.tmp / f"{key}-reuse{os.getpid()}"  # swept like any dead attempt if we die
        try:
            shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*layout.TRAIN_STATES))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, dest)
        except OSError:  # a vanished source or a concurrent sweep: train it instead
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        copied.append(key)
    return copied
