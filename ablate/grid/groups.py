"""Fused groups in the grid: which runs train together, and :func:`run_task`, the function
every executor calls for a task (one run, or a fused group of runs).

The store stays per run (docs/fused.md, "For the grid"):

1. :func:`make_tasks` groups the unfinished runs with :func:`ablate.fused.group_plans`
   (equal :func:`~ablate.fused.fusable_key`, at most ``max_k`` per group); a run that
   cannot fuse is a task of its own. ``max_k`` is 1 unless asked for (``--fuse``) or
   measured on a GPU (:func:`fuse_limit`): on the CPU fusion does not pay.
2. :func:`run_group` claims **each** member and keeps only those it got: a member
   finished elsewhere or held by a live process is not retrained (``held``).
3. It trains the claimed members with :func:`ablate.fused.train_group` into one tmp dir
   each, scores the finished ones together (:func:`ablate.fused.evaluate_group`), and
   commits each member exactly as a lone run is committed
   (:func:`ablate.grid.worker.commit`). A killed group leaves each member's claim with a
   dead owner: the next grid reclaims and regroups the unfinished members; a group of
   the same members resumes from their checkpoints (``ablate.fused.trainer``), any
   other grouping starts at step 0.
4. A group that raises is not charged to its members: a CUDA out-of-memory error splits
   it in halves; any other error trains each member alone, so a run fails for its own
   reason (the group's error is logged to stderr).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ablate.environment import apply_threads, resolve_device
from ablate.metrics.classifier import pinned_in
from ablate.metrics.evaluate import evaluate_run
from ablate.fused import evaluate_group, group_plans, max_group_size, train_group
from ablate.grid import worker
from ablate.grid.keys import RunSpec, Task
from ablate.layout import ExperimentDir
from ablate.grid.rundirs import checkpoints
from ablate.grid.store import Outcome, Status, Store
from ablate.experiment.pipeline import Scored, validator
from ablate.messages import say, show_on_stderr
from ablate.training.resolve import resolve
from ablate.training.loop import TrainPlan

GPU_CAP = 64  # beyond this a fused step stops getting cheaper per member (benchmarks/README.md)


def fuse_limit(spec: RunSpec, fuse: int | None) -> int:
    """The largest group to train: ``fuse`` if given; else 1 on the CPU, measured on a GPU.

    On the CPU a fused step costs about what its members' lone steps cost (0.84-1.10x
    per CPU-second, benchmarks/README.md), so fusing only adds rounding-level
    differences; on a GPU the group is capped by measured memory
    (:func:`ablate.fused.max_group_size`) and :data:`GPU_CAP`.
    """
    if fuse is not None:
        return fuse
    device = resolve_device(spec.config.device)
    if device.type != "cuda":
        return 1
    k = max_group_size(resolve(spec.config), device, cap=GPU_CAP)
    torch.cuda.empty_cache()  # the workers, not the driver, train
    return k


def make_tasks(specs: Sequence[RunSpec], max_k: int) -> list[Task]:
    """``specs`` as tasks: fused groups of at most ``max_k`` runs, in the plan's order."""
    if max_k <= 1:
        return [(s,) for s in specs]
    groups = group_plans([resolve(s.config) for s in specs], max_k)
    return [tuple(specs[i] for i in g) for g in groups]


def run_task(task: Task) -> list[Outcome]:
    """Run one task (a lone run or a fused group); one :class:`Outcome` per member."""
    show_on_stderr()  # this process's notes reach the user (a worker process has no CLI)
    if len(task) == 1:
        return [worker.run_one(task[0])]
    return run_group(task)


def run_group(specs: Sequence[RunSpec]) -> list[Outcome]:
    """Claim each member, train the claimed ones fused, commit each on its own."""
    worker.check_driver()
    worker.new_task()
    results_dir = Path(specs[0].results_dir)
    store: Store | None = None
    claims: list[tuple[RunSpec, str]] = []
    out: list[Outcome] = []
    try:
        store = Store(results_dir)
        for s in specs:
            token = worker.claim(store, s)
            if token is None:
                out.append(Outcome.of(s, Status.HELD))
            else:
                claims.append((s, token))
    except (sqlite3.Error, OSError) as exc:
        for s, token in claims:
            out.append(worker.halt(s, store, token, exc))
        done = {o.key for o in out}
        out += [worker.halt(s, None, None, exc) for s in specs if s.key not in done]
        if store is not None:
            store.close()
        return out
    try:
        with pinned_in(ExperimentDir(results_dir).classifier):  # the experiment's weights
            if len(claims) == 1:
                out.append(worker.attempt(claims[0][0], store, claims[0][1], results_dir))
            elif claims:
                out += _attempt_group(claims, store, results_dir)
        return out
    finally:
        store.close()


def _attempt_group(claims: list[tuple[RunSpec, str]], store: Store, results_dir: Path
                   ) -> list[Outcome]:
    specs = [s for s, _ in claims]
    tmps = [ExperimentDir(results_dir).attempt(s.key, t).path for s, t in claims]
    beat = worker.Heartbeat(str(results_dir), [(s.key, t) for s, t in claims])
    beat.start()
    t0 = time.perf_counter()
    try:
        worker.in_run()
        worker.training([(str(results_dir), s.key, t, tmp) for (s, t), tmp in zip(claims, tmps)])
        try:
            plans = _plans(specs)
            results = train_group(plans, tmps, [validator(p) for p in plans],
                                  resume=[checkpoints(results_dir, s.key, t) for s, t in claims],
                                  fingerprints=[s.key for s in specs], stop=beat.all_lost)
            train_wall = time.perf_counter() - t0
            scored = _score(specs, tmps, results)
        except torch.cuda.OutOfMemoryError:
            if len(claims) == 1:
                raise  # a lone run that does not fit: the fallback below records it
            _clean(tmps)
            half = len(claims) // 2
            say(f"a fused group of {len(claims)} ran out of GPU memory; training it in halves")
            return (_attempt_group(claims[:half], store, results_dir)
                    + _attempt_group(claims[half:], store, results_dir))
    except (worker.Abandoned, KeyboardInterrupt) as exc:
        worker.abandon(store, [(s, t, tmp) for (s, t), tmp in zip(claims, tmps)], exc)
        raise
    except Exception as exc:  # not the members' fault: each trains alone and fails for itself
        _clean(tmps)
        if worker.disk_full(results_dir, exc):
            return [worker.halt(s, store, t, exc) for s, t in claims]
        beat.stop.set()
        worker.IN_RUN.clear()
        # Members taken over while this process was stopped are lost, not retrained.
        gone = {s.key for s, t in claims if worker.taken_over(store, s.key, t)}
        if len(gone) < len(claims):
            say(f"a fused group of {len(claims)} failed ({type(exc).__name__}: {exc}); "
                 "training its members alone")
        return [worker.lost(s, time.perf_counter() - t0) if s.key in gone
                else worker.attempt(s, store, t, results_dir) for s, t in claims]
    finally:
        worker.IN_RUN.clear()
        worker.training([])
        beat.stop.set()
        beat.join(timeout=10)
    return _commit_members(claims, tmps, scored, store, t0, train_wall)


def _commit_members(claims: list[tuple[RunSpec, str]], tmps: list[Path], scored: list,
                    store: Store, t0: float, train_wall: float) -> list[Outcome]:
    """Commit each trained member on its own (a member's error is its own ``failed``)."""
    wall = time.perf_counter() - t0
    k = len(claims)
    info = {"fused": {"k": k, "members": [s.key for s, _ in claims],
                      "group_wall_time_s": round(wall, 3),
                      "group_train_time_s": round(train_wall, 3)}}
    out = []
    for (s, t), tmp, sc in zip(claims, tmps, scored):
        # Each member is charged its share of the group's wall time (what it cost).
        try:
            out.append(worker.commit(s, store, t, tmp, sc, wall / k, **info)
                       if isinstance(sc, Scored) else worker.fail(s, store, t, tmp, sc, wall / k))
        except Exception as exc:  # as a lone run's commit error: failed (or halt, disk full)
            out.append(worker.fail(s, store, t, tmp, exc, wall / k))
    return out


def _plans(specs: Sequence[RunSpec]) -> list[TrainPlan]:
    config = specs[0].config
    apply_threads(config.threads)  # before anything builds a net, as train_and_score does
    return [resolve(s.config) for s in specs]


def _score(specs: Sequence[RunSpec], tmps: Sequence[Path], results: Sequence
           ) -> list[Scored | Exception]:
    """Score the finished members together; a member that cannot be scored fails alone."""
    spec0 = specs[0]
    protocol = spec0.protocol
    done = [i for i, r in enumerate(results) if r.status == "done"] if protocol else []
    metrics: dict[int, dict] = {}
    t0 = time.perf_counter()
    try:
        if done:
            docs = evaluate_group([tmps[i] for i in done], protocol, spec0.config.device)
            metrics = dict(zip(done, docs))
    except Exception as exc:  # score each alone: a broken member must not sink the others
        say(f"scoring the group together failed ({type(exc).__name__}: {exc}); "
             "scoring each member alone")
        for i in done:
            try:
                metrics[i] = evaluate_run(tmps[i], protocol, spec0.config.device)
            except Exception as exc_i:
                metrics[i] = exc_i  # type: ignore[assignment]
    share = (time.perf_counter() - t0) / max(1, len(done))
    out: list[Scored | Exception] = []
    for i, r in enumerate(results):
        m = metrics.get(i)
        out.append(m if isinstance(m, Exception)
                   else Scored(r, m, share if i in metrics else 0.0))
    return out


def _clean(tmps: Sequence[Path]) -> None:
    for tmp in tmps:
        shutil.rmtree(tmp, ignore_errors=True)

