"""Executors: where :func:`ablate.grid.groups.run_task` runs. One interface, the same task
function everywhere: this process (inline), a local spawn process pool, Ray, SLURM.

A task is one run or a fused group of runs (:data:`ablate.grid.keys.Task`); the task
function returns one outcome per run. The driver keeps at most ``slots`` tasks in
flight (:meth:`Executor.submit`), so that a first Ctrl-C starts nothing more: nothing
is queued inside an executor. It collects outcomes with :meth:`Executor.poll`; a worker
process that dies (OOM killer, segfault, ``kill -9``) comes back as a ``died`` outcome
for each run of its task, never as an exception.
"""

from __future__ import annotations

import abc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    Future,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError
from ablate.experiment.execution import EXECUTORS
from ablate.grid.keys import Task
from ablate.grid.store import Outcome, Status
from ablate.grid.worker import install_worker_signals, release_for_requeue

TaskFn = Callable[[Task], list[Outcome]]
ABANDON_GRACE_S = 20.0  # abandoned workers get this long to release their claims, then SIGKILL


class Executor(abc.ABC):
    """Runs ``fn(task)`` for tasks the driver submits, at most ``slots`` at a time.

    A subclass names itself (``name``, one of :data:`ablate.experiment.execution.EXECUTORS`)
    and builds itself from the grid's settings (:meth:`from_settings`); :func:`make_executor`
    looks it up in :data:`CLASSES`."""

    name = "base"
    slots = 1  # tasks in flight at once
    threads = 1  # torch threads per run
    on_this_machine = True  # runs execute here: the driver may measure this machine for them

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, *, workers: int | None, threads: int | None, device: str,
                      address: str | None, results_dir: Path | None,
                      partition: str | None) -> Executor:
        """The executor for the grid's settings (the ones it does not use are ignored)."""

    @abc.abstractmethod
    def submit(self, fn: TaskFn, tasks: list[Task]) -> None:
        """Start ``fn(task)`` for each task (the driver never exceeds ``slots``)."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[Outcome]:
        """Outcomes of the runs of tasks that ended, waiting up to ``timeout`` seconds."""

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Tasks submitted whose outcomes :meth:`poll` has not returned yet."""

    # Optional: an executor with nothing to stop or release keeps these do-nothing defaults.
    def abandon(self) -> None:  # noqa: B027
        """Stop the running runs now; each releases its claim (second Ctrl-C)."""

    def close(self) -> None:  # noqa: B027
        """Release the executor's resources (pool, Ray connection)."""

    def describe(self) -> str:
        return self.name


def _init_worker(threads: int, gpu_queue: Any, driver_pid: int) -> None:
    """Pool worker setup: die with the driver, pin a GPU, set the thread count."""
    if sys.platform.startswith("linux"):  # a crashed driver takes its workers with it
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != driver_pid:  # the driver died before PDEATHSIG was armed
        os._exit(1)
    install_worker_signals(driver_pid)
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch  # the worker imports it anyway; here only to set the thread count

    torch.set_num_threads(threads)


@contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Spawn processes that ignore Ctrl-C from their first instruction on.

    An ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt handler; so a Ctrl-C while a worker is still importing cannot
    kill it with a traceback. SIGINT is blocked meanwhile, so a press during the
    spawn reaches the driver's handler afterwards instead of being lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _died(task: Task, error: str) -> list[Outcome]:
    """A ``died`` outcome for each run of a task whose process is gone."""
    return [Outcome.of(s, Status.DIED, error=error) for s in task]


def gpu_count() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    import torch  # import-time saving: only executors that may use a GPU ask

    return torch.cuda.device_count()


class InlineExecutor(Executor):
    """Runs in this process, one run at a time (debugging; tests with in-process hacks)."""

    name = "inline"

    @classmethod
    def from_settings(cls, *, threads, **_):
        return cls(threads)

    def __init__(self, threads: int | None = None) -> None:
        import torch  # the runs need it anyway; read the process's thread count

        self.threads = threads or torch.get_num_threads()
        self._done: list[Outcome] = []

    def submit(self, fn, tasks):
        for t in tasks:
            self._done.append(fn(t))

    def poll(self, timeout):
        out, self._done = self._done, []
        return [o for outs in out for o in outs]

    @property
    def in_flight(self):
        return len(self._done)

    def describe(self):
        return f"inline (this process, one run at a time, {self.threads} thread(s))"


class LocalExecutor(Executor):
    """A spawn process pool on this machine: one process per GPU, else CPU workers.

    With GPUs, worker i sees only GPU i (``CUDA_VISIBLE_DEVICES``); on CPU, ``workers``
    processes each use ``threads`` torch threads (default: the cores split evenly).
    Workers ignore Ctrl-C (the driver decides) and release their claim on SIGTERM.
    """

    name = "local"

    @classmethod
    def from_settings(cls, *, workers, threads, device, **_):
        return cls(workers, threads, device)

    def __init__(self, workers: int | None = None, threads: int | None = None,
                 device: str = "auto") -> None:
        self.ctx = multiprocessing.get_context("spawn")
        gpus = gpu_count() if device in ("auto", "cuda") or device.startswith("cuda:") else 0
        cores = os.cpu_count() or 1
        self.gpus = gpus
        self.slots = workers or (gpus if gpus else max(1, cores // (threads or 1)))
        self.threads = threads or max(1, cores // self.slots)
        self.pool: ProcessPoolExecutor | None = None
        self.futures: dict[Future, Task] = {}

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            queue = None
            if self.gpus:
                queue = self.ctx.Queue()
                for i in range(self.slots):
                    queue.put(i % self.gpus)
            self.pool = ProcessPoolExecutor(self.slots, mp_context=self.ctx, initializer=_init_worker,
                                            initargs=(self.threads, queue, os.getpid()))
        return self.pool

    def submit(self, fn, tasks):
        with _children_ignore_sigint():
            for t in tasks:
                self.futures[self._pool().submit(fn, t)] = t

    @property
    def in_flight(self):
        return len(self.futures)

    def poll(self, timeout):
        if not self.futures:
            return []
        done, _ = wait(self.futures, timeout=timeout, return_when=FIRST_COMPLETED)
        broken = any(not f.cancelled() and isinstance(f.exception(), BrokenProcessPool)
                     for f in done)
        if broken:
            # A worker died; the pool fails every run in flight and terminates the other
            # workers (which release their claims). Wait for that, then report them all.
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
            done = [f for f in self.futures if f.done()]
        out = []
        for f in done:
            t = self.futures.pop(f)
            exc = CancelledError("cancelled before it started") if f.cancelled() else f.exception()
            if exc is None:
                out.extend(f.result())
            else:  # the process died (BrokenProcessPool) or run_task itself could not run
                out.extend(_died(t, f"{type(exc).__name__}: {exc}"))
        return out

    def abandon(self):
        for p in multiprocessing.active_children():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def close(self):
        if self.pool is None:
            return
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + ABANDON_GRACE_S
        while multiprocessing.active_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in multiprocessing.active_children():  # stuck in a C call: no more waiting
            p.kill()
        self.pool.shutdown(wait=True)
        self.pool = None

    def describe(self):
        where = f"{self.gpus} GPU(s)" if self.gpus else f"CPU, {self.threads} thread(s) each"
        return f"local pool: {self.slots} worker(s), {where}"


class RayExecutor(Executor):
    """One Ray task per run (``num_cpus`` = threads, ``num_gpus`` = 1 on GPU clusters).

    ``address=None`` starts a local Ray instance; ``"auto"`` joins a running cluster.
    Workers must see the results directory (a shared filesystem) and have ablate
    installed.
    """

    name = "ray"

    @classmethod
    def from_settings(cls, *, workers, threads, device, address, **_):
        return cls(address, threads, workers=workers, gpus_per_run=0 if device == "cpu" else None)

    def __init__(self, address: str | None = None, threads: int | None = None,
                 gpus_per_run: float | None = None, workers: int | None = None) -> None:
        self.on_this_machine = address is None  # a local Ray instance
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--executor ray needs Ray: pip install 'ablate[ray]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": address, "ignore_reinit_error": True,
                                  "include_dashboard": False, "log_to_driver": False}
            if address is None and workers:
                kw["num_cpus"] = workers * (threads or 1)
            ray.init(**kw)
        self.threads = threads or 1
        if gpus_per_run is None:
            gpus_per_run = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.gpus_per_run = gpus_per_run
        cpus = ray.cluster_resources().get("CPU", 1)
        self.slots = max(1, int(cpus // self.threads))
        self.pending: dict[Any, Task] = {}

    def submit(self, fn, tasks):
        remote = self.ray.remote(num_cpus=self.threads, num_gpus=self.gpus_per_run,
                                 max_retries=0)(fn)
        for t in tasks:
            self.pending[remote.remote(t)] = t

    @property
    def in_flight(self):
        return len(self.pending)

    def poll(self, timeout):
        if not self.pending:
            return []
        done, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        out = []
        for ref in done:
            t = self.pending.pop(ref)
            try:
                out.extend(self.ray.get(ref))
            except self.ray.exceptions.RayError as exc:  # worker crash, node loss, cancel
                out.extend(_died(t, str(exc)[-500:]))
        return out

    def abandon(self):
        for ref in self.pending:  # KeyboardInterrupt in the task: run_one releases
            self.ray.cancel(ref, force=False)

    def describe(self):
        return f"ray: {self.ray.cluster_resources().get('CPU', 0):.0f} CPUs, " \
               f"{self.threads} per run, {self.gpus_per_run} GPU per run"


class Requeueable:
    """A task function that submitit requeues when its job is preempted or times out.

    submitit calls :meth:`checkpoint` from its SIGUSR2 handler (SLURM's warning before
    preemption or the time limit; ``job._interrupt()`` in local mode): the claims the job
    trains are released, their tmp dirs kept where they hold a training checkpoint, and
    the same task is resubmitted; the requeued job claims the runs again and resumes from
    those checkpoints (losing at most ``checkpoint_every`` steps).
    """

    def __init__(self, fn: TaskFn) -> None:
        self.fn = fn

    def __call__(self, task: Task) -> list[Outcome]:
        return self.fn(task)

    def checkpoint(self, task: Task) -> Any:
        from submitit.helpers import DelayedSubmission

        release_for_requeue()
        return DelayedSubmission(self, task)


class SlurmExecutor(Executor):
    """One SLURM job per run through submitit (``pip install 'ablate[slurm]'``).

    ``cluster="local"`` runs the jobs as local processes (submitit's test mode). A
    preempted or timed-out job is requeued and resumes from its runs' checkpoints
    (:class:`Requeueable`).
    """

    name = "slurm"
    on_this_machine = False

    @classmethod
    def from_settings(cls, *, workers, threads, device, address, results_dir, partition):
        return cls(Path(results_dir or ".").resolve() / "slurm", threads,
                   gpus_per_run=0 if device == "cpu" else 1, partition=partition,
                   cluster="local" if address == "local" else None, workers=workers)

    def __init__(self, folder: Path, threads: int | None = None, gpus_per_run: int = 0,
                 timeout_min: int = 240, partition: str | None = None,
                 cluster: str | None = None, workers: int | None = None) -> None:
        try:
            import submitit
        except ImportError as exc:
            raise ConfigError("--executor slurm needs submitit: pip install 'ablate[slurm]'") from exc
        self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": threads or 1}
        if gpus_per_run:
            params["gpus_per_node"] = gpus_per_run
        if partition:
            params["slurm_partition"] = partition
        self.ex.update_parameters(**params)
        self.threads = threads or 1
        self.slots = workers or 1000  # the cluster's scheduler queues the rest
        self.jobs: dict[Any, Task] = {}

    def submit(self, fn, tasks):
        jobs = self.ex.map_array(Requeueable(fn), tasks)  # one array per batch
        self.jobs.update(zip(jobs, tasks))

    @property
    def in_flight(self):
        return len(self.jobs)

    def poll(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            done = [j for j in self.jobs if j.done()]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, timeout))
        out = []
        for job in done:
            t = self.jobs.pop(job)
            try:
                out.extend(job.result())
            except Exception as exc:  # the job failed outside run_task (node loss, timeout)
                out.extend(_died(t, str(exc)[-500:]))
        return out

    def abandon(self):
        for job in self.jobs:
            job.cancel(check=False)


def make_executor(name: str, *, workers: int | None = None, threads: int | None = None,
                  device: str = "auto", address: str | None = None,
                  results_dir: Path | None = None, partition: str | None = None) -> Executor:
    """The executor called ``name`` (one of :data:`CLASSES`)."""
    if name not in CLASSES:
        raise ConfigError(f"unknown executor {name!r}; valid executors: {', '.join(CLASSES)}")
    return CLASSES[name].from_settings(workers=workers, threads=threads, device=device,
                                       address=address, results_dir=results_dir,
                                       partition=partition)


# The one list of executors: the names experiment files and --executor accept
# (EXECUTORS, below the grid so that parsing an experiment needs no executor) are these.
CLASSES: dict[str, type[Executor]] = {c.name: c for c in (LocalExecutor, InlineExecutor,
                                                          RayExecutor, SlurmExecutor)}
assert tuple(CLASSES) == EXECUTORS, "ablate.experiment.execution.EXECUTORS names every executor"

