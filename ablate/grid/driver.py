"""The grid driver: load and check an experiment (:func:`prepare`), then train every
unfinished key of its plan on an executor (:func:`run_grid`).

Before anything is written, :func:`run_grid` refuses (``ConfigError``, exit 2) a
corrupt store and a thread count that differs from the finished runs'. Then it records
the plan, sweeps dead attempts' tmp dirs, cross-checks the index with the run
directories (:mod:`ablate.grid.rundirs`: adopt, report missing, ``--repair``) and runs
the rest (:mod:`ablate.grid.schedule`: worker deaths, Ctrl-C, a full disk). Adaptive
seeds run in looks (see :func:`run_grid`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ablate.artefacts import read_json, signals_deferred
from ablate.hacks import registry
from ablate.config import AnalysisSpec, SeedPolicy
from ablate.data import check_batch_size
from ablate.experiment.design import Design, build_design
from ablate.environment import resolve_device
from ablate.errors import ConfigError
from ablate.metrics import classifier
from ablate.metrics.evaluate import feature_nets
from ablate.experiment.spec import Experiment, load_experiment
from ablate.grid import pinning, reuse, rundirs
from ablate.grid.executors import Executor
from ablate.grid.groups import fuse_limit
from ablate.grid.keys import CODE_VERSION, RunSpec, plan_runs
from ablate.grid.schedule import Log, execute
from ablate.grid.status import reconciled_lines
from ablate.grid.store import (
    TERMINAL,
    NoStore,
    Status,
    Store,
    StoreCorrupt,
    load_experiment_meta,
    load_frame,
)
from ablate.training.resolve import resolve
from ablate.layout import ExperimentDir, ExperimentRecord

# Without a ``log`` (the CLI passes its printer), the grid's messages go to logging.
_quiet = logging.getLogger(__name__).info


@dataclass(frozen=True)
class Grid:
    """A loaded, checked experiment and where its results go (see :func:`prepare`)."""

    experiment: Experiment
    design: Design
    results_dir: Path
    specs: tuple[RunSpec, ...]  # the plan: every (variant, seed); adaptive: look 1's
    warnings: tuple[str, ...] = ()


@dataclass
class GridSummary:
    planned: int  # variant x seed pairs
    keys: int  # distinct run keys
    reused: int  # keys already finished before this invocation
    trained: int = 0  # keys this invocation ran to done/diverged
    adopted: int = 0  # finished run directories indexed from disk
    counts: dict[str, int] = field(default_factory=dict)  # final status counts
    missing: list[str] = field(default_factory=list)  # finished keys whose results are gone
    no_checkpoint: list[str] = field(default_factory=list)  # finished keys without generator.pt
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM
    halted: str | None = None  # why the grid stopped early (disk full)
    wall_time_s: float = 0.0
    look: int = 1  # adaptive seeds: the last look decided
    look_reasons: tuple[str, ...] = ()  # ... and why the grid stopped or continues


MAX_RUNS = 100_000  # runs one grid may plan (variants x seeds): more is a typo


def other_owner(results: Path, experiment: Experiment) -> str | None:
    """The name of the other experiment whose results ``results`` holds (its
    ``experiment.json``), if it is on the same data (their keys may be shared); None when
    the folder is ``experiment``'s, or nobody's yet, or its record is damaged (the grid
    rewrites it). Another experiment's on other data is a ConfigError: they share no run."""
    try:
        recorded = read_json(ExperimentDir(results).experiment_json)["experiment"]
        name, dataset = recorded.get("name"), recorded["dataset"]
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return None
    if dataset != experiment.dataset:
        raise ConfigError(f"results directory {results} holds experiment {name!r} on {dataset} "
                          f"(its experiment.json), this one is on {experiment.dataset}: they "
                          "share no run; choose another --results-dir")
    return name if name != experiment.name else None


def prepare(path: Experiment | Path | str, results_dir: Path | str | None = None, *,
            device: str = "auto", threads: int | None = None, check_device: bool = True,
            provision: bool = True) -> Grid:
    """Load (unless given an :class:`Experiment` already read), validate and expand an
    experiment; writes nothing in the results directory (``provision=False``: nor in the
    data root, where counting the training images would fetch the dataset).

    Every variant's hacks, parameters and Recipe values are checked, the batch size
    against the dataset, and (``check_device``) that the device exists here.
    """
    experiment = path if isinstance(path, Experiment) else load_experiment(path)
    results = Path(results_dir) if results_dir else experiment.results_dir
    if results.exists() and not results.is_dir():
        raise ConfigError(f"results directory {results} is a file; choose another --results-dir")
    try:
        warnings = []
        owner = other_owner(results, experiment)
        if owner is not None:  # same data: keys may be shared, but the report changes hands
            warnings.append(f"results directory {results} holds experiment {owner!r} (its "
                            f"experiment.json); this grid is {experiment.name!r}: its runs stay "
                            f"in runs/, but experiment.json and REPORT.md become "
                            f"{experiment.name!r}'s. Use another --results-dir (with reuse = "
                            f"[\"{results}\"]) to keep the two apart")
        here = ExperimentDir(results)  # each entry of the wrong kind: else every run fails alike
        kinds = [(folder, True, "finished runs are kept") for folder in (here.runs, here.tmp, here.broken)]
        kinds += [(here.experiment_json, False, "the grid rewrites it"),
                  (here.db, False, "`--rebuild-index` rebuilds the index from its runs/*/, nothing is retrained")]
        for path, folder, fix in kinds:
            if path.exists() and not (path.is_dir() if folder else path.is_file()):
                what = "a file where the grid keeps run directories" if folder else "not a file (a directory?)"
                raise ConfigError(f"{path} is {what}: move it aside (`mv {path} {path}.bad`) and rerun; {fix}")
        for entry in experiment.report.beside:  # else a typo fails the report after training
            if not Path(entry).is_dir():
                raise ConfigError(f"[report].beside entry {entry!r} is not a directory (paths are "
                                  "relative to the folder ablate runs in, like results_dir); fix the "
                                  "path or remove the entry")
        for source in experiment.reuse:  # a typo here would silently retrain every run
            if not source.is_dir():
                raise ConfigError(f"reuse: {source} is not a directory (paths are relative to the "
                                  "folder ablate runs in, like results_dir); fix the path or "
                                  "remove it from reuse")
        if check_device:
            resolve_device(device)
        design = build_design(experiment.design, experiment.hacks, experiment.axes)
        policy = experiment.policy
        seeds = policy.max if policy.adaptive else len(policy.seeds)
        if len(design.variants) * seeds > MAX_RUNS:  # planning alone would take hours
            raise ConfigError(f"{len(design.variants):,} variants x {seeds:,} seeds = "
                              f"{len(design.variants) * seeds:,} runs; at most {MAX_RUNS:,} (fewer "
                              "seeds, axis levels or hacks)")
        counts = {v.name: policy.looks()[0] for v in design.variants} if policy.adaptive else None
        specs = plan_runs(experiment, design, results, counts, device=device, threads=threads)
        for s in {s.variant: s for s in specs}.values():
            try:
                resolve(s.config)  # a bad hack value fails here, naming the hack
            except ConfigError as exc:
                raise ConfigError(f"variant {s.variant!r}: {exc}") from exc
        bs = specs[0].config.batch_size
        note = check_batch_size(experiment.dataset, bs, f"[budget].batch_size = {bs}", provision=provision)
        if note:
            warnings.append(note)
    except ConfigError as exc:
        raise ConfigError(f"{experiment.source or experiment.name}: {exc}") from exc
    return Grid(experiment, design, results, tuple(specs), tuple(warnings))


def write_experiment_meta(grid: Grid, n_runs: int, **extra: object) -> None:
    experiment, design = grid.experiment, grid.design
    hack_info = {}
    for h in design.hacks:
        cls = registry.get_hack(h)
        params = {k: v for hh, k, v in experiment.params if hh == h}
        hack_info[h] = {**cls.describe(), "provider": registry.provider(h),
                        "resolved_params": cls(cls.make_params(params)).params_dict()}
    ExperimentDir(grid.results_dir).write_experiment(ExperimentRecord(
        experiment=experiment.to_dict(), design=design.to_dict(), hacks=tuple(design.hacks),
        reference=design.reference(), variants=tuple(v.to_dict(design.hacks) for v in design.variants),
        seeds=tuple(experiment.seeds), runs=n_runs, code_version=CODE_VERSION, hack_info=hack_info,
        extra=dict(extra)))


def warm_up(experiment: Experiment, device: str, log: Log) -> None:
    """Build the feature nets once in the driver, before the workers start.

    The first time on a machine this trains the dataset's classifier (cached
    afterwards) with every core, instead of inside one single-threaded worker while
    the others wait on the cache lock.
    """
    t0 = time.perf_counter()
    try:
        protocol = experiment.protocol
        assert protocol is not None, "warm_up is for an experiment that scores its runs"
        feature_nets(experiment.dataset, protocol.features, resolve_device(device))
    except Exception as exc:  # the runs will report it; the grid itself goes on
        log(f"warning: could not prepare the feature nets ({type(exc).__name__}: {exc})")
        return
    if time.perf_counter() - t0 > 10:
        log(f"prepared the feature nets in {time.perf_counter() - t0:.0f} s (cached from now on)")


def check_threads(results_dir: Path, specs: list[RunSpec], threads: int, device: str) -> None:
    """Refuse to add CPU runs trained with another thread count than the finished ones.

    The thread count changes results (the order of floating-point reductions) but is
    not part of the run key (that would change every committed key), so one results
    directory holds one thread count. Reads only.
    """
    if device != "cpu" or not ExperimentDir(results_dir).db.exists() and not ExperimentDir(results_dir).runs.is_dir():
        return
    try:
        store: Store | None = Store(results_dir, readonly=True)
    except (NoStore, StoreCorrupt):  # count the run directories instead
        store = None
    try:
        try:
            if store is not None and all((store.get(s.key) or {}).get("status") in TERMINAL
                                         for s in specs):
                return  # nothing to train
            have = rundirs.finished_threads(store, results_dir)
        except sqlite3.DatabaseError:  # damaged past its header (the open reads only that):
            have = rundirs.finished_threads(None, results_dir)  # the run directories say it
    finally:
        if store is not None:
            store.close()
    other = {t: n for t, n in have.items() if t != threads}
    if other:
        counts = ", ".join(f"{n} with {t}" for t, n in sorted(other.items()))
        raise ConfigError(
            f"{results_dir}: its finished CPU runs were trained with another torch thread count "
            f"({counts} thread(s) per run); this grid would train with {threads}. The thread "
            "count changes results but is not part of the run key, so one results directory "
            f"keeps one: rerun with --threads {max(other, key=other.get)} (workers x threads "
            "<= cores), or give another --results-dir")


def _probe_writable(here: ExperimentDir) -> None:
    """Make and remove a directory in ``tmp/`` and ``runs/``, where every run trains and is
    published: an unwritable one (permissions, an immutable flag, which ``os.access`` does
    not see for root) raises PermissionError here, before hours of training."""
    import tempfile

    for folder in (here.tmp, here.runs):
        folder.mkdir(parents=True, exist_ok=True)
        with signals_deferred():  # not left behind by a signal between its mkdir and rmdir
            os.rmdir(tempfile.mkdtemp(prefix=".ablate-probe-", dir=folder))


def _open_store(results_dir: Path, rebuild_index: bool, log: Log) -> Store:
    """The writer's store; ``rebuild_index`` moves a corrupt database aside first."""
    path = ExperimentDir(results_dir).db
    if rebuild_index and path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(side.with_name(f"{side.name}.corrupt-{stamp}"))
        log(f"moved the old index aside ({path.name}.corrupt-{stamp}); rebuilding it from runs/*/")
    store = Store(results_dir)
    try:
        store.check()
    except ConfigError:
        store.close()
        raise
    return store


NextLook = Callable[..., Any]  # (frame, meta, policy, analysis, look_index) -> Look


def run_grid(grid: Grid, executor: Executor, *, next_look: NextLook | None = None,
             retry_failed: bool = False, repair: bool = False, rebuild_index: bool = False,
             progress: bool = True, poll_s: float = 2.0, log: Log = _quiet,
             fuse: int | None = None) -> GridSummary:
    """Train every unfinished key of ``grid``'s plan; wait for keys other processes hold.

    Adaptive seeds (``seeds = { min, max }``) run in looks: look k trains the seeds
    planned so far, then ``next_look(frame, meta, policy, analysis, k)`` (the
    statistics' decision, ``ablate.report.sequential.next_look``) says whether to stop
    and which variants need how many seeds for look k+1. Decisions depend only on
    finished runs, so a restarted grid replays looks 1..k without training anything
    twice.

    ``fuse`` caps fused groups (1 trains every run alone); None decides per device
    (:func:`ablate.grid.groups.fuse_limit`: alone on the CPU, measured on a GPU).
    """
    t0 = time.perf_counter()
    results_dir, experiment = grid.results_dir, grid.experiment
    policy, analysis = experiment.policy, experiment.analysis
    if policy.adaptive and next_look is None:
        raise ConfigError("adaptive seeds (seeds = { min, max }) need the decision function "
                          "next_look (ablate.report.sequential)")
    if results_dir.exists() and not os.access(results_dir, os.W_OK):
        raise ConfigError(f"results directory {results_dir} is read-only; `ablate status` and "
                          "`ablate grid --dry-run` read it, a grid needs --results-dir elsewhere")
    specs = [replace(s, retry_failed=retry_failed) for s in grid.specs]
    config0 = specs[0].config
    device = resolve_device(config0.device).type if executor.on_this_machine \
        else config0.device
    check_threads(results_dir, specs, executor.threads, device)
    counts = {v.name: policy.looks()[0] for v in grid.design.variants} if policy.adaptive else None
    history: list[dict[str, Any]] = []
    first_look: dict[tuple[str, int], int] = {}
    summary = GridSummary(planned=0, keys=0, reused=0)
    with _open_store(results_dir, rebuild_index, log) as store:
        for k in range(1, len(policy.looks()) + 1):
            if k > 1:
                specs = [replace(s, retry_failed=retry_failed) for s in plan_runs(
                    experiment, grid.design, results_dir, counts, device=config0.device,
                    threads=config0.threads)]
                check_threads(results_dir, specs, executor.threads, device)
            for s in specs:
                first_look.setdefault((s.variant, s.seed), k)
            write_experiment_meta(grid, len(specs), **_adaptive_meta(policy, analysis, history))
            plan = [{"variant": s.variant, "seed": s.seed, "key": s.key, "hacks": s.config.hacks,
                     "config": s.identity, "look": first_look[(s.variant, s.seed)]} for s in specs]
            store.record_plan(plan, keep_superset=policy.adaptive)
            _run_look(store, grid, specs, executor, summary, k, counts,
                      retry_failed=retry_failed, repair=repair, progress=progress,
                      poll_s=poll_s, log=log, fuse=fuse)
            if summary.interrupted or summary.halted or not policy.adaptive:
                break
            look = next_look(load_frame(results_dir), load_experiment_meta(results_dir), policy,
                             analysis, k)
            new = {v: min(policy.max, max(n, int(look.seeds.get(v, n)))) for v, n in counts.items()}
            reasons = list(look.reasons)
            stop = bool(look.done) or new == counts or k == len(policy.looks())
            if not look.done and new == counts:
                reasons.append("the decision asked for no new seeds: stopping")
            elif not look.done and k == len(policy.looks()):
                reasons.append(f"reached the maximum of {policy.max} seeds per variant")
            history.append({"look": k, "seeds": dict(counts), "done": stop, "reasons": reasons,
                            "next": None if stop else new})
            summary.look, summary.look_reasons = k, tuple(reasons)
            log(f"look {k}: " + ("stop" if stop else "continue with " + ", ".join(
                f"{v} {n}" for v, n in new.items() if n > counts[v])) + "; " + "; ".join(reasons))
            write_experiment_meta(grid, len(specs), **_adaptive_meta(policy, analysis, history))
            if stop:
                store.record_plan(plan)  # the last look's plan, exactly
                break
            counts = new
    summary.wall_time_s = time.perf_counter() - t0
    return summary


def _adaptive_meta(policy: SeedPolicy, analysis: AnalysisSpec | None,
                   history: list[dict[str, Any]]) -> dict[str, Any]:
    """experiment.json's ``seed_policy``, ``analysis`` and (adaptive) ``looks``."""
    out: dict[str, Any] = {"seed_policy": dataclasses.asdict(policy),
                           "analysis": dataclasses.asdict(analysis) if analysis else None}
    if policy.adaptive:
        out.update(looks=history, max_looks=len(policy.looks()))
    return out


def _run_look(store: Store, grid: Grid, specs: list[RunSpec], executor: Executor,
              summary: GridSummary, look: int, counts: dict[str, int] | None, *,
              retry_failed: bool, repair: bool, progress: bool, poll_s: float, log: Log,
              fuse: int | None = None) -> None:
    """Sweep, cross-check and train one look's plan (the whole plan for fixed seeds)."""
    experiment, results_dir = grid.experiment, grid.results_dir
    swept = rundirs.sweep_tmp(store)
    if swept:
        log(f"removed {swept} unfinished run dir(s) left by killed or superseded runs")
    if experiment.reuse:  # finished runs of the same keys elsewhere: copied, then indexed
        copied = reuse.import_runs(store, specs, experiment.reuse)
        if copied:
            log(f"copied {len(copied)} finished run(s) of the same keys from "
                f"{', '.join(map(str, experiment.reuse))} (reuse): not trained again")
    found = rundirs.reconcile(store, specs, repair=repair)
    unique = list({s.key: s for s in specs}.values())
    status = {s.key: (store.get(s.key) or {}).get("status") for s in unique}
    finished = [s for s in unique if status[s.key] in TERMINAL]
    failed = [s for s in unique if status[s.key] == Status.FAILED and not retry_failed]
    todo = [s for s in unique if s not in finished and s not in failed]
    summary.planned, summary.keys = len(specs), len(unique)
    summary.reused = len(finished) - summary.trained  # finished before this invocation
    summary.adopted += len(found.adopted)
    summary.missing, summary.no_checkpoint = found.missing, found.no_checkpoint
    shape = (f"{len(grid.design.variants)} variants x {len(experiment.seeds)} seeds" if counts is None
             else f"look {look}: {min(counts.values())}-{max(counts.values())} seeds per variant")
    log(f"{experiment.name}: {len(specs)} runs ({shape}), {len(unique)} distinct keys, "
        f"{len(finished)} already finished, {len(todo)} to run"
        + (f" ({len(failed)} failed, skipped without --retry-failed)" if failed else "")
        + f"; executor: {executor.describe()}")
    for note in reconciled_lines(found, results_dir, done=True):
        log(note)
    if todo:  # before any training: else each run would train in full, then fail to publish
        _probe_writable(ExperimentDir(results_dir))
    if todo and experiment.evaluates():
        with classifier.pinned_in(ExperimentDir(results_dir).classifier):
            pinning.check(experiment, results_dir)
            warm_up(experiment, todo[0].config.device, log)
        pinning.pin(experiment, results_dir, finished, log)
    max_k = fuse_limit(todo[0], fuse) if todo and executor.on_this_machine \
        else (fuse or 1)  # a remote executor's device is not this machine's to measure
    if max_k > 1:
        log(f"fused training: groups of at most {max_k} runs ({_fuse_reason(fuse)})")
    done = execute(store, todo, executor, label=experiment.name, progress=progress,
                   poll_s=poll_s, log=log, max_k=max_k)
    summary.trained += done.trained
    summary.interrupted, summary.halted = done.interrupted, done.halted
    final = [(store.get(s.key) or {}).get("status", "pending") for s in unique]
    summary.counts = {st: final.count(st) for st in dict.fromkeys(final)}


def _fuse_reason(fuse: int | None) -> str:
    return "--fuse" if fuse is not None else "measured from GPU memory"
