"""``run_one``: one run, claimed, trained, scored and committed (executors call it
through :func:`ablate.grid.groups.run_task`; a fused group reuses its pieces).

1. Claim the key in the store (atomic; a key another live process holds is left alone).
2. Train and score into ``tmp/<key>-<token>/`` (:func:`ablate.experiment.pipeline.train_and_score`)
   and write ``run.json`` (key, variant, seed, code version, threads, device).
3. Commit (:meth:`ablate.grid.store.Store.commit`): in one transaction, check the claim
   is still ours, rename the tmp dir to ``runs/<key>`` and mark the key finished.
   Ctrl-C and SIGTERM are held back for those few milliseconds.

A run that raises is ``failed``; one whose claim was taken over while it was stalled
(``kill -STOP``, Ctrl-Z) is ``lost`` whatever it was doing when it woke (training,
validating, evaluating, committing; another grid may have swept its tmp dir meanwhile,
so its next write fails): it commits nothing, records nothing and writes only into its
own tmp dir (named by its token), which the sweep removes; one that
is stopped (Ctrl-C in the inline executor, SIGTERM in a pool worker) releases its
claim; a full disk releases it too and tells the grid to stop. Nothing here ever
deletes ``runs/<key>``.

Resume: a run writes a training checkpoint into its tmp dir every ``checkpoint_every``
steps. An attempt that ends without finishing (killed, abandoned, lost) leaves it
there; the key's next owner resumes from the newest one another attempt left
(:func:`ablate.grid.rundirs.checkpoints`; read only, never written) and records the
steps it resumed from in ``run.json`` (``resumed_from``). A checkpoint written by
another thread count or code is not resumed: the run starts at step 0 and says why.
A run whose claim was taken over stops at its next log or checkpoint boundary (the
heartbeat thread sees the loss), not at its end.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from ablate.artefacts import fsync_dir, raise_dropped, signals_deferred, write_fix
from ablate.layout import ExperimentDir, RunDir
from ablate.training.checkpoint import STATE_FILES, CheckpointMismatch
from ablate.environment import resolve_device
from ablate.grid.keys import CODE_VERSION, RunSpec
from ablate.grid.rundirs import checkpoints, quarantine, run_dir
from ablate.grid.store import Outcome, Status, Store, heartbeat_interval
from ablate.messages import say
from ablate.metrics.classifier import pinned_in
from ablate.experiment.pipeline import Scored, train_and_score

# Set in local-pool workers by their initializer (ablate.grid.executors): the driver's
# pid, so that a worker whose driver died runs nothing more.
_DRIVER_PID: int | None = None
IN_RUN = threading.Event()  # a pool worker is inside run_one (SIGTERM then abandons it)
# Signals held back during a commit (SIGUSR2: SLURM's preemption warning, which makes
# submitit call executors.Requeueable.checkpoint -> release_for_requeue).
_HELD = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
# The claims this process is training now (results dir, key, token, tmp dir): what
# release_for_requeue() gives back when the job is preempted.
_TRAINING: list[tuple[str, str, str, Path]] = []
_FREE_BYTES = 1 << 20  # below this, an error writing results is a full disk


class Abandoned(BaseException):
    """Raised in a pool worker by SIGTERM (the grid abandons its runs): release, stop."""


def install_worker_signals(driver_pid: int) -> None:
    """Local-pool worker setup: ignore Ctrl-C (the driver decides), SIGTERM abandons."""
    global _DRIVER_PID
    _DRIVER_PID = driver_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    raise_dropped({Abandoned: signal.SIGTERM})  # for the worker's life: not lost in a finalizer


# Claims this process holds but is not yet training (results dir, key, token): a SIGTERM
# between the claim and the run gives them back, so that a co-worker the pool takes down
# is never charged with a worker death (``Store.record_death`` blames a dead claim).
_CLAIMED: list[tuple[str, str, str]] = []
_CLAIMING = threading.Event()  # inside Store.claim: SIGTERM waits until it returns
_TERM_PENDING = threading.Event()


def _on_sigterm(signum: int, frame: object) -> None:
    if IN_RUN.is_set():
        raise Abandoned
    if _CLAIMING.is_set():
        _TERM_PENDING.set()  # acted on once the claim is recorded (see claim)
        return
    _exit_releasing(128 + signum)


def _exit_releasing(code: int) -> None:
    """Give back the claims not yet in a run, then leave at once (no cleanup to do)."""
    for results_dir, key, token in _CLAIMED:
        try:
            with Store(Path(results_dir)) as store:
                store.release(key, token, "abandoned")
        except (sqlite3.Error, OSError):
            pass  # the claim goes stale when this process ends; the next grid retakes it
    os._exit(code)


def claim(store: Store, spec: RunSpec) -> str | None:
    """Claim ``spec``'s key (its token, or None if another process holds it or it is
    finished). A SIGTERM that arrives meanwhile waits for the claim, then releases it."""
    _CLAIMING.set()
    try:
        token = store.claim(spec.key, spec.retry_failed)
        if token is not None:
            _CLAIMED.append((str(spec.results_dir), spec.key, token))
    finally:
        _CLAIMING.clear()
        if _TERM_PENDING.is_set():  # even if the claim raised: the pool waits for this exit
            _exit_releasing(128 + signal.SIGTERM)
    return token


def new_task() -> None:
    """A task starts in this process: forget earlier tasks' claims (released or committed)."""
    _CLAIMED.clear()


def in_run() -> None:
    """From here SIGTERM abandons the run (``Abandoned``): its handler releases the claims."""
    IN_RUN.set()
    _CLAIMED.clear()


class Heartbeat(threading.Thread):
    """Refreshes claims' heartbeats from a thread with its own connection.

    One thread serves all the claims of a process (a fused group holds several); it
    stops refreshing a claim that was taken over (the commit will say so). Once every
    claim is taken over, :meth:`all_lost` is True: the training loop asks it at each log
    and checkpoint boundary and stops (no signal: the loop itself raises).
    """

    def __init__(self, results_dir: str, claims: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{claims[0][0]}")
        self.results_dir, self.claims = results_dir, list(claims)
        self.stop = threading.Event()
        self.lost = threading.Event()

    def all_lost(self) -> bool:
        return self.lost.is_set()

    def run(self) -> None:
        live = list(self.claims)
        try:
            with Store(self.results_dir) as store:
                while live and not self.stop.wait(heartbeat_interval()):
                    live = [(k, t) for k, t in live if store.heartbeat(k, t)]
                if not live and not self.stop.is_set():
                    self.lost.set()
        except (sqlite3.Error, OSError):
            return  # a full disk: the claims go stale; the runs' own writes report it


def _under(path: Any, results_dir: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(results_dir))
    except (TypeError, ValueError):
        return False


def disk_full(results_dir: Path, exc: BaseException) -> bool:
    """Whether ``exc`` (anywhere in its chain) means the disk is full or unwritable: then
    every other run would fail the same way, so the grid stops instead of failing them one
    by one (a permission refused inside the results folder counts: an immutable ``runs/``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return True
        if (isinstance(seen, OSError) and seen.errno in (errno.EACCES, errno.EPERM)
                and _under(seen.filename, results_dir)):
            return True
        if isinstance(seen, sqlite3.OperationalError) and any(
                s in str(seen) for s in ("disk is full", "readonly database", "disk I/O error")):
            return True
        seen = seen.__cause__ or seen.__context__
    try:  # torch.save reports ENOSPC as a RuntimeError ("file write failed")
        return shutil.disk_usage(results_dir).free < _FREE_BYTES
    except OSError:
        return False


def write_problem(results_dir: Path, exc: BaseException) -> str:
    """What stopped a write, for the user: the full disk, read-only file system or refused
    permission, naming the path it concerns (which may lie outside the results folder: the
    feature cache), else the exception itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:  # the fix: artefacts.write_fix
            where = seen.filename or results_dir
            if seen.errno in (errno.ENOSPC, errno.EDQUOT):
                return f"the disk holding {where} is full ({seen.strerror}); {write_fix(seen)}"
            if seen.errno == errno.EROFS:
                return f"{where} is on a read-only file system; {write_fix(seen)} or point ablate elsewhere"
            if seen.errno in (errno.EACCES, errno.EPERM):
                return (f"{where} cannot be written ({seen.strerror}); {write_fix(seen)} "
                        "(an immutable flag shows in `lsattr`)")
        if isinstance(seen, sqlite3.OperationalError) and "readonly database" in str(seen):
            return (f"the index {ExperimentDir(results_dir).db} (or its -wal/-shm files) cannot be "
                    "written; give this user write permission there (an immutable flag shows in `lsattr`)")
        seen = seen.__cause__ or seen.__context__
    try:
        free = shutil.disk_usage(results_dir).free
    except OSError:
        free = None
    if free is not None and free < _FREE_BYTES:  # torch.save's RuntimeError on ENOSPC
        return f"the disk holding {results_dir} is full ({free} bytes free; {type(exc).__name__}: {exc}); free disk space"
    return f"cannot write results under {results_dir}: {type(exc).__name__}: {exc}"


def _publish(tmp: Path, final: Path, results_dir: Path) -> None:
    """Rename the run's tmp dir to ``runs/<key>`` (inside the commit transaction)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # an incomplete leftover (complete ones are adopted, not retrained)
        quarantine(results_dir, final)
    os.rename(tmp, final)
    fsync_dir(final.parent)


def halt(spec: RunSpec, store: Store | None, token: str | None, exc: BaseException) -> Outcome:
    """The disk is full (or the store unwritable): release the claim if we can, stop."""
    if store is not None and token is not None:
        try:
            store.release(spec.key, token, "disk full")
        except (sqlite3.Error, OSError):
            pass  # the claim goes stale when this process ends; the next grid retakes it
    return Outcome.of(spec, Status.ABANDONED, halt=True, error=write_problem(Path(spec.results_dir), exc))


def check_driver() -> None:
    """In a pool worker whose driver died, run nothing more (exit)."""
    if _DRIVER_PID is not None and os.getppid() != _DRIVER_PID:
        os._exit(1)  # the driver died (it may have been killed before PDEATHSIG was set)


def run_one(spec: RunSpec) -> Outcome:
    """Claim, train, evaluate and commit one run; return its :class:`Outcome`."""
    check_driver()
    new_task()
    results_dir = Path(spec.results_dir)
    store: Store | None = None
    token: str | None = None
    try:
        store = Store(results_dir)
        token = claim(store, spec)
    except (sqlite3.Error, OSError) as exc:
        if store is not None:
            store.close()
        return halt(spec, None, None, exc)
    try:
        if token is None:
            return Outcome.of(spec, Status.HELD)
        with pinned_in(ExperimentDir(results_dir).classifier):  # the experiment's weights
            return attempt(spec, store, token, results_dir)
    finally:
        store.close()


def attempt(spec: RunSpec, store: Store, token: str, results_dir: Path) -> Outcome:
    """Train, score and commit a run this process has claimed (``token``)."""
    tmp = ExperimentDir(results_dir).attempt(spec.key, token).path
    beat = Heartbeat(spec.results_dir, [(spec.key, token)])
    beat.start()
    t0 = time.perf_counter()
    try:
        in_run()
        _TRAINING[:] = [(spec.results_dir, spec.key, token, tmp)]
        scored = train_resumed(spec, tmp, checkpoints(results_dir, spec.key, token),
                               beat.all_lost)
        return commit(spec, store, token, tmp, scored, time.perf_counter() - t0)
    except (Abandoned, KeyboardInterrupt) as exc:
        abandon(store, [(spec, token, tmp)], exc)
        raise
    except Exception as exc:  # a failed run must not stop the grid
        return fail(spec, store, token, tmp, exc, time.perf_counter() - t0)
    finally:
        IN_RUN.clear()
        _TRAINING.clear()
        beat.stop.set()
        beat.join(timeout=10)  # its connection closes before the run is reported


def training(claims: list[tuple[str, str, str, Path]]) -> None:
    """Record the claims this process trains now (a fused group's, for instance)."""
    _TRAINING[:] = claims


def release_for_requeue(why: str = "preempted") -> int:
    """The job is preempted and will be requeued: release the claims it is training,
    keeping their tmp dirs where they hold a checkpoint (the requeued job resumes from
    them). Returns how many claims were released."""
    n = 0
    for results_dir, key, token, tmp in list(_TRAINING):
        try:
            with Store(results_dir) as store:
                n += store.release(key, token, why)
        except (sqlite3.Error, OSError):
            pass  # the claim goes stale; the next grid retakes it
        if not any((tmp / name).exists() for name in STATE_FILES):
            shutil.rmtree(tmp, ignore_errors=True)
    _TRAINING.clear()
    return n


def train_resumed(spec: RunSpec, tmp: Path, resume: list[Path], stop) -> Scored:
    """:func:`~ablate.experiment.pipeline.train_and_score` into ``tmp``, scored with the run's
    protocol, resumed from the newest of ``resume`` this run wrote; from step 0 (saying why)
    if none was."""
    try:
        return train_and_score(spec.config, spec.protocol, tmp, resume=resume,
                               fingerprint=spec.key, stop=stop)
    except CheckpointMismatch as exc:
        say(f"run {spec.key} ({spec.variant}, seed {spec.seed}) starts at step 0: {exc}")
    return train_and_score(spec.config, spec.protocol, tmp, fingerprint=spec.key, stop=stop)


def commit(spec: RunSpec, store: Store, token: str, tmp: Path, scored: Scored, wall: float,
           **run_info: Any) -> Outcome:
    """Write ``run.json`` into the trained run's ``tmp`` dir and commit it as ``spec.key``.

    ``run_info`` adds fields to ``run.json`` (a fused run's group). A claim taken over
    while the run was stalled commits nothing (``lost``; the tmp dir is swept later).
    """
    results_dir = Path(spec.results_dir)
    result = scored.result
    # A resumed run's wall time counts its earlier attempts up to the checkpoint it resumed
    # (what a user waits for, and what the ETA divides by); run.json keeps this attempt's.
    # Rounded as run.json keeps it, so an index rebuilt from run directories (rundirs.
    # committed_wall) stores the same number.
    attempt = round(wall, 3)
    wall = attempt + float(result.extra.get("resumed_wall_s", 0.0))
    threads = torch.get_num_threads()  # what the run trained with (results depend on it)
    device = resolve_device(spec.config.device).type
    RunDir(tmp).write_run_info({
        "key": spec.key, "variant": spec.variant, "seed": spec.seed,
        "code_version": CODE_VERSION, "token": token, "host": store.host, "pid": os.getpid(),
        "threads": threads, "device": device, "eval_time_s": scored.eval_time_s,
        "resumed_from": result.extra.get("resumed_from", []), "attempt_wall_s": attempt,
        **run_info})
    final = run_dir(results_dir, spec.key)
    status = Status(result.status)
    with signals_deferred(_HELD):  # no Ctrl-C, SIGTERM or requeue mid-commit
        committed = store.commit(
            spec.key, token, status, lambda: _publish(tmp, final, results_dir),
            steps=result.steps, diverged_step=result.diverged_step, wall_time_s=wall,
            train_time_s=result.train_time_s, eval_time_s=scored.eval_time_s,
            images_per_s=result.images_per_s, metrics=scored.metrics,
            run_dir=str(final.relative_to(results_dir)), threads=threads, device=device)
    if not committed:  # taken over while stalled: the new owner commits; tmp is swept
        return lost(spec, wall)
    return Outcome.of(spec, status, diverged_step=result.diverged_step, wall_time_s=wall)


def lost(spec: RunSpec, wall: float) -> Outcome:
    """The outcome of a run whose claim another process took over while this one stalled."""
    return Outcome.of(spec, Status.LOST, wall_time_s=wall,
                      error="its claim was taken over while this process was stopped")


def taken_over(store: Store, key: str, token: str) -> bool:
    try:
        return not store.owns(key, token)
    except (sqlite3.Error, OSError):
        return False  # the store cannot answer: let fail() decide (disk full halts)


def abandon(store: Store, claims: list[tuple[RunSpec, str, Path]], exc: BaseException) -> None:
    """Ctrl-C or SIGTERM inside runs: release each claim, remove each tmp dir that holds
    no training checkpoint (one that does is left for the key's next owner to resume).

    SIGTERM (``Abandoned``) then leaves the pool without touching its queues.
    """
    try:
        for spec, token, tmp in claims:
            try:
                store.release(spec.key, token, "abandoned")
            finally:
                if not any((tmp / name).exists() for name in STATE_FILES):
                    shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if isinstance(exc, Abandoned):
            os._exit(143)


def fail(spec: RunSpec, store: Store, token: str, tmp: Path, exc: Exception,
         wall: float) -> Outcome:
    """Record a run that raised as ``failed`` (or, on a full disk, release it and halt).

    A run whose claim was taken over is ``lost``, not failed: its error is most likely
    the sweep of its tmp dir by the new owner's grid while this process was stopped.
    """
    results_dir = Path(spec.results_dir)
    if taken_over(store, spec.key, token):
        shutil.rmtree(tmp, ignore_errors=True)  # our own attempt's dir (it carries our token)
        return lost(spec, wall)
    if disk_full(results_dir, exc):
        shutil.rmtree(tmp, ignore_errors=True)  # free what we took
        return halt(spec, store, token, exc)
    err = "".join(traceback.format_exception(exc))[-4000:]
    try:
        recorded = store.fail(spec.key, token, err, wall_time_s=wall)
    except (sqlite3.Error, OSError) as exc2:
        return halt(spec, store, token, exc2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not recorded:  # taken over between the check above and this transaction
        return lost(spec, wall)
    return Outcome.of(spec, Status.FAILED, error=f"{type(exc).__name__}: {exc}")
