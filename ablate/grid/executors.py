"""Executors: where :func:`ablate.grid.worker.run_one` runs. One interface, the same run
function everywhere: this process (inline), a local spawn process pool, Ray, SLURM.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError
from ablate.grid.keys import RunSpec
from ablate.grid.store import Outcome, Status


class Executor:
    """Runs ``fn(spec)`` for many specs, yielding outcomes as they complete."""

    name = "base"
    workers = 1

    def map(self, fn: Callable[[RunSpec], Outcome], specs: list[RunSpec]) -> Iterator[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


def _init_worker(threads: int | None, gpu_queue) -> None:
    """Pool worker setup: die with the driver, pin a GPU, set the thread count."""
    if sys.platform.startswith("linux"):  # a crashed driver takes its workers with it
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def gpu_count() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    import torch

    return torch.cuda.device_count()


class InlineExecutor(Executor):
    """Runs in this process, one run at a time (debugging; tests with in-process hacks)."""

    name = "inline"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def map(self, fn, specs):
        for s in specs:
            yield fn(s)

    def describe(self):
        return "inline (this process, one run at a time)"


class LocalExecutor(Executor):
    """A spawn process pool on this machine: one process per GPU, else CPU workers.

    With GPUs, worker i sees only GPU i (``CUDA_VISIBLE_DEVICES``); on CPU, ``workers``
    processes each use ``threads`` torch threads (default: the cores split evenly).
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None,
                 device: str = "auto") -> None:
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        gpus = gpu_count() if device in ("auto", "cuda") else 0
        cores = os.cpu_count() or 1
        self.gpus = gpus
        self.workers = workers or (gpus if gpus else max(1, cores // (threads or 1)))
        self.threads = threads or max(1, cores // self.workers)
        self.pool = None

    def _pool(self):
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is None:
            queue = None
            if self.gpus:
                queue = self.ctx.Queue()
                for i in range(self.workers):
                    queue.put(i % self.gpus)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=self.ctx,
                                            initializer=_init_worker, initargs=(self.threads, queue))
        return self.pool

    def map(self, fn, specs):
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        futures = {self._pool().submit(fn, s): s for s in specs}
        try:
            for fut in as_completed(futures):
                s = futures[fut]
                try:
                    yield fut.result()
                except BrokenProcessPool:  # a worker died (OOM, segfault): the store
                    self.pool = None       # row stays 'running' with a dead pid -> reclaimed
                    yield Outcome.of(s, Status.DIED)
        finally:
            for fut in futures:
                fut.cancel()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def describe(self):
        where = f"{self.gpus} GPU(s)" if self.gpus else f"CPU, {self.threads} thread(s) each"
        return f"local pool: {self.workers} worker(s), {where}"


class RayExecutor(Executor):
    """One Ray task per run (``num_cpus`` = threads, ``num_gpus`` = 1 on GPU clusters).

    ``address=None`` starts a local Ray instance; ``"auto"`` joins a running cluster.
    Workers must see the results directory (a shared filesystem) and have ablate
    installed.
    """

    name = "ray"

    def __init__(self, address: str | None = None, threads: int | None = None,
                 gpus_per_run: float | None = None, workers: int | None = None) -> None:
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
        self.workers = int(cpus // self.threads)

    def map(self, fn, specs):
        remote = self.ray.remote(num_cpus=self.threads, num_gpus=self.gpus_per_run,
                                 max_retries=0)(fn)
        pending = {remote.remote(s): s for s in specs}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                s = pending.pop(done[0])
                try:
                    yield self.ray.get(done[0])
                except self.ray.exceptions.RayError as exc:
                    yield Outcome.of(s, Status.DIED, error=str(exc))
        finally:
            for ref in pending:
                self.ray.cancel(ref, force=True)

    def describe(self):
        return f"ray: {self.ray.cluster_resources().get('CPU', 0):.0f} CPUs, " \
               f"{self.threads} per run, {self.gpus_per_run} GPU per run"


class SlurmExecutor(Executor):
    """One SLURM array task per run through submitit (``pip install 'ablate[slurm]'``).

    ``cluster="local"`` runs the tasks as local processes (submitit's test mode).
    """

    name = "slurm"

    def __init__(self, folder: Path, threads: int | None = None, gpus_per_run: int = 0,
                 timeout_min: int = 240, partition: str | None = None,
                 cluster: str | None = None) -> None:
        try:
            import submitit
        except ImportError as exc:
            raise ConfigError("--executor slurm needs submitit: pip install 'ablate[slurm]'") from exc
        self.submitit = submitit
        self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": threads or 1}
        if gpus_per_run:
            params["gpus_per_node"] = gpus_per_run
        if partition:
            params["slurm_partition"] = partition
        self.ex.update_parameters(**params)
        self.threads = threads or 1

    def map(self, fn, specs):
        jobs = self.ex.map_array(fn, specs)
        by_job = dict(zip(jobs, specs))
        for job in self.submitit.helpers.as_completed(jobs):
            s = by_job[job]
            try:
                yield job.result()
            except Exception as exc:  # job failed outside run_one (node loss, timeout)
                yield Outcome.of(s, Status.DIED, error=str(exc)[-500:])


def make_executor(name: str, *, workers: int | None = None, threads: int | None = None,
                  device: str = "auto", address: str | None = None,
                  results_dir: Path | None = None, partition: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor(workers, threads, device)
    if name == "inline":
        return InlineExecutor(threads)
    if name == "ray":
        return RayExecutor(address, threads, workers=workers,
                           gpus_per_run=0 if device == "cpu" else None)
    if name == "slurm":
        return SlurmExecutor(Path(results_dir or ".").resolve() / "slurm", threads,
                             gpus_per_run=0 if device == "cpu" else 1,
                             partition=partition, cluster="local" if address == "local" else None)
    raise ConfigError(f"unknown executor {name!r}; valid executors: local, inline, ray, slurm")
