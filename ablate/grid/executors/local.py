"""Executors on this machine: inline (this process) and a local spawn process pool."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    Future,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from ablate.environment import apply_threads
from ablate.grid.executors.base import Executor, _died, gpu_count
from ablate.grid.keys import Task
from ablate.grid.store import Outcome
from ablate.grid.worker import install_worker_signals

ABANDON_GRACE_S = 20.0  # abandoned workers get this long to release their claims, then SIGKILL


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
    apply_threads(threads, environ=True)


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
        # Tasks submitted after a worker died but before poll() saw it (the pool refuses
        # them): they start in the next pool, once poll() has reported the broken one's runs.
        self.deferred: list[tuple[Any, Task]] = []

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
                if self.deferred:  # keep the order: after the ones already waiting
                    self.deferred.append((fn, t))
                    continue
                try:
                    self.futures[self._pool().submit(fn, t)] = t
                except BrokenProcessPool:  # a worker died since the last poll
                    self.deferred.append((fn, t))

    @property
    def in_flight(self):
        return len(self.futures) + len(self.deferred)

    def _restart_deferred(self) -> None:
        """Start the deferred tasks in a fresh pool (the broken one's runs are reported)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        deferred, self.deferred = self.deferred, []
        for fn, t in deferred:
            self.submit(fn, [t])

    def poll(self, timeout):
        if self.deferred and not self.futures:
            self._restart_deferred()
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
        if self.deferred and not self.futures:
            self._restart_deferred()
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
        try:
            while multiprocessing.active_children() and time.monotonic() < deadline:
                time.sleep(0.05)
        except KeyboardInterrupt:  # one more Ctrl-C while the workers wind down: stop waiting
            pass  # (the grid already stopped; its resume message still gets printed)
        for p in multiprocessing.active_children():  # stuck in a C call: no more waiting
            p.kill()
        self.pool.shutdown(wait=True)
        self.pool = None

    def describe(self):
        where = f"{self.gpus} GPU(s)" if self.gpus else f"CPU, {self.threads} thread(s) each"
        return f"local pool: {self.slots} worker(s), {where}"
