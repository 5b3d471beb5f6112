"""``run_one``: the one run function every executor calls.

1. Claim the key in the store (atomic; a key another live process holds is left alone).
2. Train and score into ``tmp/<key>-<token>/`` (:func:`ablate.pipeline.train_and_score`)
   and write ``run.json`` (key, variant, seed, code version, threads, device).
3. Commit (:meth:`ablate.grid.store.Store.commit`): in one transaction, check the claim
   is still ours, rename the tmp dir to ``runs/<key>`` and mark the key finished.
   Ctrl-C and SIGTERM are held back for those few milliseconds.

A run that raises is ``failed``; one whose claim was taken over while it was stalled
(``kill -STOP``, Ctrl-Z) commits nothing and leaves its tmp dir to the sweep; one that
is stopped (Ctrl-C in the inline executor, SIGTERM in a pool worker) releases its
claim; a full disk releases it too and tells the grid to stop. Nothing here ever
deletes ``runs/<key>``.
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

import torch

from ablate.artefacts import fsync_dir, write_json
from ablate.config import EvalProtocol
from ablate.environment import resolve_device
from ablate.grid.keys import CODE_VERSION, RunSpec
from ablate.grid.rundirs import quarantine, run_dir
from ablate.grid.store import Outcome, Status, Store, heartbeat_interval
from ablate.pipeline import train_and_score

# Set in local-pool workers by their initializer (ablate.grid.executors): the driver's
# pid, so that a worker whose driver died runs nothing more.
_DRIVER_PID: int | None = None
_IN_RUN = threading.Event()  # a pool worker is inside run_one (SIGTERM then abandons it)
_HELD = {signal.SIGINT, signal.SIGTERM}  # signals held back during a commit
_FREE_BYTES = 1 << 20  # below this, an error writing results is a full disk


class Abandoned(BaseException):
    """Raised in a pool worker by SIGTERM (the grid abandons its runs): release, stop."""


def install_worker_signals(driver_pid: int) -> None:
    """Local-pool worker setup: ignore Ctrl-C (the driver decides), SIGTERM abandons."""
    global _DRIVER_PID
    _DRIVER_PID = driver_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    if _IN_RUN.is_set():
        raise Abandoned
    os._exit(128 + signum)  # idle: nothing to clean up


class _Heartbeat(threading.Thread):
    """Refreshes a claim's heartbeat from a thread with its own connection."""

    def __init__(self, results_dir: str, key: str, token: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{key}")
        self.args_ = (results_dir, key, token)
        self.stop = threading.Event()

    def run(self) -> None:
        results_dir, key, token = self.args_
        try:
            with Store(results_dir) as store:
                while not self.stop.wait(heartbeat_interval()):
                    if not store.heartbeat(key, token):
                        return  # the claim was taken over: the commit will say so
        except (sqlite3.Error, OSError):
            return  # a full disk: the claim goes stale; the run's own writes report it


def disk_full(results_dir: Path, exc: BaseException) -> bool:
    """Whether ``exc`` (anywhere in its chain) means the disk is full or unwritable."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return True
        if isinstance(seen, sqlite3.OperationalError) and any(
                s in str(seen) for s in ("disk is full", "readonly database", "disk I/O error")):
            return True
        seen = seen.__cause__ or seen.__context__
    try:  # torch.save reports ENOSPC as a RuntimeError ("file write failed")
        return shutil.disk_usage(results_dir).free < _FREE_BYTES
    except OSError:
        return False


def _publish(tmp: Path, final: Path, results_dir: Path) -> None:
    """Rename the run's tmp dir to ``runs/<key>`` (inside the commit transaction)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # an incomplete leftover (complete ones are adopted, not retrained)
        quarantine(results_dir, final)
    os.rename(tmp, final)
    fsync_dir(final.parent)


def _halt(spec: RunSpec, store: Store | None, token: str | None, exc: BaseException) -> Outcome:
    """The disk is full (or the store unwritable): release the claim if we can, stop."""
    if store is not None and token is not None:
        try:
            store.release(spec.key, token, "disk full")
        except (sqlite3.Error, OSError):
            pass  # the claim goes stale when this process ends; the next grid retakes it
    return Outcome.of(spec, Status.ABANDONED, halt=True,
                      error=f"cannot write results under {spec.results_dir}: "
                            f"{type(exc).__name__}: {exc}")


def run_one(spec: RunSpec) -> Outcome:
    """Claim, train, evaluate and commit one run; return its :class:`Outcome`."""
    if _DRIVER_PID is not None and os.getppid() != _DRIVER_PID:
        os._exit(1)  # the driver died (it may have been killed before PDEATHSIG was set)
    results_dir = Path(spec.results_dir)
    store: Store | None = None
    token: str | None = None
    try:
        store = Store(results_dir)
        token = store.claim(spec.key, spec.retry_failed)
    except (sqlite3.Error, OSError) as exc:
        if store is not None:
            store.close()
        return _halt(spec, None, None, exc)
    try:
        if token is None:
            return Outcome.of(spec, Status.HELD)
        return _attempt(spec, store, token, results_dir)
    finally:
        store.close()


def _attempt(spec: RunSpec, store: Store, token: str, results_dir: Path) -> Outcome:
    tmp = results_dir / "tmp" / f"{spec.key}-{token}"
    beat = _Heartbeat(spec.results_dir, spec.key, token)
    beat.start()
    t0 = time.perf_counter()
    _IN_RUN.set()
    try:
        protocol = EvalProtocol.from_dict(dict(spec.evaluation)) if spec.evaluates else None
        scored = train_and_score(spec.config, protocol, tmp)
        result = scored.result
        threads = torch.get_num_threads()  # what the run trained with (results depend on it)
        device = resolve_device(spec.config.device).type
        write_json(tmp / "run.json", {
            "key": spec.key, "variant": spec.variant, "seed": spec.seed,
            "code_version": CODE_VERSION, "token": token, "host": store.host, "pid": os.getpid(),
            "threads": threads, "device": device, "eval_time_s": scored.eval_time_s})
        final = run_dir(results_dir, spec.key)
        status = Status(result.status)
        wall = time.perf_counter() - t0
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)  # no Ctrl-C mid-commit
        try:
            committed = store.commit(
                spec.key, token, status, lambda: _publish(tmp, final, results_dir),
                steps=result.steps, diverged_step=result.diverged_step, wall_time_s=wall,
                train_time_s=result.train_time_s, eval_time_s=scored.eval_time_s,
                images_per_s=result.images_per_s, metrics=scored.metrics,
                run_dir=str(final.relative_to(results_dir)), threads=threads, device=device)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if not committed:  # taken over while stalled: the new owner commits; tmp is swept
            return Outcome.of(spec, Status.LOST, wall_time_s=wall,
                              error="the claim was taken over before the commit")
        return Outcome.of(spec, status, diverged_step=result.diverged_step, wall_time_s=wall)
    except (Abandoned, KeyboardInterrupt) as exc:
        try:
            store.release(spec.key, token, "abandoned")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Abandoned):
            os._exit(143)  # SIGTERM: leave the pool without touching its queues
        raise
    except Exception as exc:  # a failed run must not stop the grid
        if disk_full(results_dir, exc):
            shutil.rmtree(tmp, ignore_errors=True)  # free what we took
            return _halt(spec, store, token, exc)
        err = "".join(traceback.format_exception(exc))[-4000:]
        try:
            store.fail(spec.key, token, err, wall_time_s=time.perf_counter() - t0)
        except (sqlite3.Error, OSError) as exc2:
            return _halt(spec, store, token, exc2)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Outcome.of(spec, Status.FAILED, error=f"{type(exc).__name__}: {exc}")
    finally:
        _IN_RUN.clear()
        beat.stop.set()
        beat.join(timeout=10)  # its connection closes before the run is reported
