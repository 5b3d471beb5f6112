"""The grid driver: load and check an experiment (:func:`prepare`), then train every
unfinished key of its plan on an executor (:func:`run_grid`).

Before anything is written, :func:`run_grid` refuses (``ConfigError``, exit 2) a
corrupt store and a thread count that differs from the finished runs'. Then it records
the plan, sweeps dead attempts' tmp dirs, cross-checks the index with the run
directories (:mod:`ablate.grid.rundirs`) and runs the rest, at most ``executor.slots``
at a time.

Faults: a worker that dies is retried up to :data:`MAX_DEATHS` times in all, then its
key is ``failed`` with the cause; the other runs go on. A full disk stops the grid
(claims released). Ctrl-C: the first press starts nothing new and lets the running
runs finish; a second press (or SIGTERM) abandons them (their claims are released,
their tmp dirs removed). A rerun resumes either way.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ablate import registry
from ablate.artefacts import write_json
from ablate.config import EvalProtocol
from ablate.data import load
from ablate.errors import DataUnavailable
from ablate.design import Design, build_design
from ablate.environment import resolve_device
from ablate.errors import ConfigError
from ablate.evaluate import feature_nets
from ablate.experiment import Experiment, load_experiment
from ablate.grid import rundirs
from ablate.grid.executors import Executor
from ablate.grid.keys import CODE_VERSION, RunSpec, plan_runs
from ablate.grid.store import (
    DB_NAME,
    EXPERIMENT_JSON,
    TERMINAL,
    NoStore,
    Outcome,
    Status,
    Store,
    StoreCorrupt,
)
from ablate.grid.worker import run_one
from ablate.pipeline import check_plan
from ablate.resolve import resolve

MAX_DEATHS = 3  # a key whose worker process died this many times is marked failed
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class Grid:
    """A loaded, checked experiment and where its results go (see :func:`prepare`)."""

    experiment: Experiment
    design: Design
    results_dir: Path
    specs: tuple[RunSpec, ...]  # the plan: every (variant, seed)
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


def prepare(path: Path | str, results_dir: Path | str | None = None, *, device: str = "auto",
            threads: int | None = None, check_device: bool = True) -> Grid:
    """Load, validate and expand an experiment; writes nothing.

    Every variant's hacks, parameters and Recipe values are checked, the batch size
    against the dataset, and (``check_device``) that the device exists here.
    """
    experiment = load_experiment(path)
    results = Path(results_dir) if results_dir else experiment.results_dir
    if results.exists() and not results.is_dir():
        raise ConfigError(f"results directory {results} is a file; choose another --results-dir")
    warnings = []
    try:
        if check_device:
            resolve_device(device)
        design = build_design(experiment.design, experiment.hacks)
        specs = plan_runs(experiment, design, results, device=device, threads=threads)
        for s in {s.variant: s for s in specs}.values():
            try:
                check_plan(resolve(s.config))
            except ConfigError as exc:
                raise ConfigError(f"variant {s.variant!r}: {exc}") from exc
        try:
            n = len(load(experiment.dataset, "train"))
        except DataUnavailable as exc:
            warnings.append(f"could not check batch_size against {experiment.dataset} here: {exc}")
        else:
            bs = specs[0].config.batch_size
            if bs > n:
                raise ConfigError(f"[budget].batch_size = {bs} exceeds the {n} training images of "
                                  f"{experiment.dataset}; valid: 1 .. {n}")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return Grid(experiment, design, results, tuple(specs), tuple(warnings))


def write_experiment_meta(grid: Grid, n_runs: int, **extra: object) -> None:
    experiment, design = grid.experiment, grid.design
    hack_info = {}
    for h in design.hacks:
        cls = registry.get_hack(h)
        params = {k: v for hh, k, v in experiment.params if hh == h}
        hack_info[h] = {**cls.describe(), "provider": registry.provider(h),
                        "resolved_params": cls(cls.make_params(params)).params_dict()}
    write_json(grid.results_dir / EXPERIMENT_JSON, {
        "experiment": experiment.to_dict(), "design": design.to_dict(),
        "hacks": list(design.hacks), "reference": design.reference(),
        "variants": [v.to_dict(design.hacks) for v in design.variants],
        "seeds": list(experiment.seeds), "runs": n_runs, "code_version": CODE_VERSION,
        "hack_info": hack_info, **extra})


def warm_up(experiment: Experiment, device: str, log: Log) -> None:
    """Build the feature nets once in the driver, before the workers start.

    The first time on a machine this trains the dataset's classifier (cached
    afterwards) with every core, instead of inside one single-threaded worker while
    the others wait on the cache lock.
    """
    t0 = time.perf_counter()
    try:
        protocol = EvalProtocol.from_dict(experiment.evaluation_dict())
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
    if device != "cpu" or not (results_dir / DB_NAME).exists() and not (results_dir / "runs").is_dir():
        return
    try:
        store: Store | None = Store(results_dir, readonly=True)
    except (NoStore, StoreCorrupt):  # count the run directories instead
        store = None
    try:
        if store is not None and all((store.get(s.key) or {}).get("status") in TERMINAL
                                     for s in specs):
            return  # nothing to train
        have = rundirs.finished_threads(store, results_dir)
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


def _open_store(results_dir: Path, rebuild_index: bool, log: Log) -> Store:
    """The writer's store; ``rebuild_index`` moves a corrupt database aside first."""
    path = results_dir / DB_NAME
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


class _Interrupts:
    """SIGINT/SIGTERM during a grid: 1st Ctrl-C stops claiming; 2nd (or SIGTERM) abandons."""

    def __init__(self, say: Log, inline: bool) -> None:
        self.presses, self.say, self.inline = 0, say, inline

    def __call__(self, signum: int, frame: object) -> None:
        before = self.presses
        self.presses += 2 if signum == signal.SIGTERM else 1
        if self.presses == 1:
            self.say("Ctrl-C: no new runs start; the running ones finish and are kept "
                     "(Ctrl-C again abandons them)")
        elif before < 2:
            self.say("stopping now: abandoning the running runs (their claims are released; "
                     "rerun `ablate grid` to resume)")
            if self.inline:
                raise KeyboardInterrupt


@contextmanager
def _handle_interrupts(say: Log, inline: bool) -> Iterator[_Interrupts]:
    state = _Interrupts(say, inline)
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    old = {s: signal.signal(s, state) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _execute(store: Store, todo: list[RunSpec], executor: Executor, summary: GridSummary,
             stop: _Interrupts, bar, say: Log, poll_s: float) -> None:
    """Run ``todo`` (distinct keys) to the end, or until stopped."""
    queue: deque[RunSpec] = deque(todo)
    waiting: dict[str, RunSpec] = {}  # held by other live processes
    by_key = {s.key: s for s in todo}
    abandoned, empty_deaths = False, 0
    while True:
        if stop.presses >= 2 and not abandoned:
            executor.abandon()
            abandoned = True
        if not stop.presses and not summary.halted:
            batch = []
            while queue and executor.in_flight + len(batch) < executor.slots:
                s = queue.popleft()
                row = store.get(s.key) or {}
                if row.get("status") in TERMINAL:
                    bar.update(1)  # finished by another process meanwhile
                elif store.claimable(s.key, s.retry_failed):
                    batch.append(s)
                elif row.get("status") == Status.RUNNING:
                    waiting[s.key] = s
            if batch:
                executor.submit(run_one, batch)
        if executor.in_flight == 0:
            if stop.presses or summary.halted or not (queue or waiting):
                return
            bar.set_description(f"waiting for {len(waiting)} run(s) held by another process")
            time.sleep(poll_s)
            queue.extend(waiting.values())
            waiting.clear()
            continue
        for out in executor.poll(timeout=0.2):
            empty_deaths = _handle(out, store, by_key[out.key], queue, waiting, summary, stop,
                                   bar, say, empty_deaths)
            if empty_deaths >= MAX_DEATHS * executor.slots and not summary.halted:
                summary.halted = (f"the worker processes die before running anything "
                                  f"({empty_deaths} times): {out.error}")


def _handle(out: Outcome, store: Store, spec: RunSpec, queue: deque, waiting: dict,
            summary: GridSummary, stop: _Interrupts, bar, say: Log, empty_deaths: int) -> int:
    """Account for one outcome; returns the count of deaths that blamed no run."""
    st, where = out.status, f"run {out.key} ({out.variant}, seed {out.seed})"
    if st in (Status.DONE, Status.DIVERGED, Status.FAILED):
        summary.trained += st in TERMINAL
        bar.update(1)
        if st == Status.FAILED:
            say(f"{where} failed: {out.error}")
        elif st == Status.DIVERGED:
            say(f"{where} diverged at step {out.diverged_step}")
        return 0
    if st == Status.HELD or st == Status.LOST:
        if st == Status.LOST:
            say(f"{where}: {out.error}; another process finishes it")
        if (store.get(out.key) or {}).get("status") in TERMINAL:
            bar.update(1)
        else:
            waiting[out.key] = spec
        return 0
    if st == Status.ABANDONED:
        if out.halt:
            summary.halted = out.error
        return 0
    # Status.DIED: the worker process is gone. Count it against the key it was running.
    settled = store.record_death(out.key, out.error or "unknown cause", MAX_DEATHS)
    if settled == Status.FAILED:
        bar.update(1)
        say(f"{where} failed: its worker died {MAX_DEATHS} times ({out.error})")
        return 0
    row = store.get(out.key) or {}
    if row.get("status") in TERMINAL:  # it committed just before the process went
        bar.update(1)
        return 0
    if not stop.presses and not summary.halted:
        if settled == Status.PENDING:
            say(f"{where}: its worker died ({out.error}); retrying")
        queue.appendleft(spec)
    return 0 if settled is not None else empty_deaths + 1


def run_grid(grid: Grid, executor: Executor, *, retry_failed: bool = False, repair: bool = False,
             rebuild_index: bool = False, progress: bool = True, poll_s: float = 2.0,
             log: Log = _stderr) -> GridSummary:
    """Train every unfinished key of ``grid``'s plan; wait for keys other processes hold."""
    from tqdm import tqdm  # import-time saving: only a running grid draws a bar

    t0 = time.perf_counter()
    results_dir, experiment = grid.results_dir, grid.experiment
    specs = [replace(s, retry_failed=retry_failed) for s in grid.specs]
    device = resolve_device(specs[0].config.device).type if executor.name in ("local", "inline") \
        else specs[0].config.device
    check_threads(results_dir, specs, executor.threads, device)
    with _open_store(results_dir, rebuild_index, log) as store:
        write_experiment_meta(grid, len(specs))
        store.record_plan([{"variant": s.variant, "seed": s.seed, "key": s.key,
                            "hacks": s.config.hacks, "config": s.identity} for s in specs])
        swept = rundirs.sweep_tmp(store)
        if swept:
            log(f"removed {swept} unfinished run dir(s) left by killed or superseded runs")
        found = rundirs.reconcile(store, specs, repair=repair)
        unique = list({s.key: s for s in specs}.values())
        status = {s.key: (store.get(s.key) or {}).get("status") for s in unique}
        finished = [s for s in unique if status[s.key] in TERMINAL]
        failed = [s for s in unique if status[s.key] == Status.FAILED and not retry_failed]
        todo = [s for s in unique if s not in finished and s not in failed]
        summary = GridSummary(planned=len(specs), keys=len(unique), reused=len(finished),
                              adopted=len(found.adopted), missing=found.missing,
                              no_checkpoint=found.no_checkpoint)
        log(f"{experiment.name}: {len(specs)} runs ({len(grid.design.variants)} variants x "
            f"{len(experiment.seeds)} seeds), {len(unique)} distinct keys, "
            f"{len(finished)} already finished, {len(todo)} to run"
            + (f" ({len(failed)} failed, skipped without --retry-failed)" if failed else "")
            + f"; executor: {executor.describe()}")
        for note in _notes(found, results_dir):
            log(note)
        if todo and experiment.evaluates():
            warm_up(experiment, todo[0].config.device, log)
        bar = tqdm(total=len(todo), desc=experiment.name, unit="run", disable=not progress,
                   dynamic_ncols=True, file=sys.stderr)
        say = bar.write if progress else log
        with _handle_interrupts(say, executor.name == "inline") as stop:
            try:
                _execute(store, todo, executor, summary, stop, bar, say, poll_s)
            except KeyboardInterrupt:  # the inline executor's run was abandoned
                pass
            finally:
                bar.close()
        summary.interrupted = stop.presses > 0
        final = [(store.get(s.key) or {}).get("status", "pending") for s in unique]
        summary.counts = {st: final.count(st) for st in dict.fromkeys(final)}
    summary.wall_time_s = time.perf_counter() - t0
    return summary


def _notes(found: rundirs.Reconciled, results_dir: Path) -> list[str]:
    out = []
    if found.adopted:
        out.append(f"indexed {len(found.adopted)} finished run dir(s) the store did not list "
                   "(adopted, not retrained)")
    if found.reopened:
        out.append(f"--repair: retraining {len(found.reopened)} run(s) whose directory, results "
                   f"or checkpoint were missing (remains moved to {results_dir / 'broken'})")
    elif found.missing:
        out.append(f"warning: {len(found.missing)} finished run(s) have lost their directory or "
                   f"result files ({', '.join(found.missing[:5])}); `--repair` retrains them")
    if found.no_checkpoint and not found.reopened:
        out.append(f"note: {len(found.no_checkpoint)} finished run(s) have no checkpoint "
                   "(generator.pt); their metrics are intact; `--repair` retrains them")
    return out
