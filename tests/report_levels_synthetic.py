"""A synthetic results directory WITH ``[axes]`` and a known truth, written by the real
writers: ``build_design(spec, hacks, axes)`` (through ``parse_experiment``),
``write_experiment_meta`` and ``Store``; each run's key from the real level plumbing
(``axes.apply_level``), so a variant without an axis' hack shares its runs across the levels
of that axis, as in a grid.

Design: add-one-in over four hacks, crossed with ``lr_scale = [0.5, 1, 2]`` and
``noisy-labels.p = [0.05, 0.2]`` (6 levels). Truth on the log scale (``LOG_FID``):
batch-norm's effect depends on lr_scale (×0.75, ×1, ×1.3), label-smoothing is ×0.8 at every
level, leaky-relu and noisy-labels do nothing; lr_scale itself shifts every run.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ablate.experiment.axes import apply_level
from ablate.experiment.design import build_design
from ablate.experiment.spec import parse_experiment
from ablate.grid.driver import Grid, write_experiment_meta
from ablate.grid.store import Status, Store
from tests.report_synthetic import BASE_FID, SEED_OFFSET, _metrics, _write_run, experiment_doc

AXES = {"lr_scale": [0.5, 1, 2], "noisy-labels": {"p": [0.05, 0.2]}}
BN = {0.5: math.log(0.75), 1.0: 0.0, 2.0: math.log(1.3)}  # batch-norm's effect per lr_scale
LS = math.log(0.8)  # label-smoothing, every level
NOISE_SD = 0.01


def log_effect(hacks, level: dict) -> float:
    lr = float(level.get("lr_scale", 1.0))
    out = 0.1 * math.log(lr)  # the axis itself moves every variant
    if "batch-norm" in hacks:
        out += BN[lr]
    if "label-smoothing" in hacks:
        out += LS
    return out


def condition(hacks, level, params) -> str:
    """The run condition as the grid keys it: enabled hacks, and the params / train settings
    that the level gives this variant (``apply_level``: only enabled hacks take a param level)."""
    p, train = apply_level(level, frozenset(hacks), params, {})
    return json.dumps({"hacks": sorted(hacks), "params": [list(x) for x in p], "train": train}, sort_keys=True)


def make_axes_results(root: Path, seeds=(0, 1, 2), rng_seed: int = 5, artefacts: bool = False,
                      diverged: tuple[str, int] | None = None, axes: dict | None = None,
                      seed_policy: dict | None = None) -> tuple[Path, dict]:
    """Write the results directory; return it and the truth: ``{"runs": {key: (condition,
    seed, y or None)}, "variant_cell": {variant: condition}}`` (y = log FID; None: diverged)."""
    doc = experiment_doc("add-one-in", seeds)
    doc["name"] = "synthetic-axes"
    doc["axes"] = axes or AXES
    experiment = parse_experiment(doc, "synthetic-axes")
    d = build_design(experiment.design, experiment.hacks, experiment.axes)
    rng = np.random.default_rng(rng_seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows, runs, cell_of = [], {}, {}
    for s in seeds:
        for v in d.variants:
            cond = condition(v.hacks, v.level, experiment.params)
            cell_of[v.name] = cond
            key = hashlib.sha1(f"{cond}|{s}".encode()).hexdigest()[:16]
            rows.append({"variant": v.name, "seed": s, "key": key, "hacks": sorted(v.hacks),
                         "config": {"seed": s}})
            if key not in runs:  # a shared run: one draw, whatever variant name planned it
                y = (math.log(BASE_FID) + log_effect(v.hacks, dict(v.level)) + SEED_OFFSET[s]
                     + rng.normal(0, NOISE_SD))
                runs[key] = [cond, s, y, sorted(v.hacks)]
            if diverged == (v.name, s):
                runs[key][2] = None
    write_experiment_meta(Grid(experiment, d, root, ()), len(rows))
    if seed_policy is not None:
        meta = json.loads((root / "experiment.json").read_text())
        meta["seed_policy"] = seed_policy
        (root / "experiment.json").write_text(json.dumps(meta))
    store = Store(root)
    try:
        store.record_plan(rows)
        for key, (_cond, s, y, hacks) in runs.items():
            token = store.claim(key)
            if y is None:
                store.commit(key, token, Status.DIVERGED, lambda: None, steps=150, diverged_step=150,
                             wall_time_s=50.0, run_dir=f"runs/{key}")
                continue
            metrics = _metrics(math.exp(y), False, rng)
            if artefacts:
                _write_run(root / "runs" / key, hacks, s, metrics)
            store.commit(key, token, Status.DONE, lambda: None, steps=300, wall_time_s=100.0,
                         train_time_s=90.0, eval_time_s=5.0, images_per_s=600.0, metrics=metrics,
                         run_dir=f"runs/{key}")
    finally:
        store.close()
    return root, {"runs": {k: tuple(v[:3]) for k, v in runs.items()}, "variant_cell": cell_of,
                  "design": d}
