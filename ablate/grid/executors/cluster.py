"""Executors on a cluster: Ray tasks, and SLURM jobs through submitit (requeued on
preemption, resuming from their runs' checkpoints)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError
from ablate.experiment.execution import cores
from ablate.grid.executors.base import Executor, TaskFn, _died
from ablate.grid.keys import Task
from ablate.grid.store import Outcome
from ablate.grid.worker import release_for_requeue


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
        if cluster is None and submitit.SlurmExecutor.affinity() <= 0:
            # submitit falls back to local processes where SLURM is absent: refuse rather
            # than train the whole grid here at once, unasked.
            raise ConfigError("--executor slurm: no SLURM on this machine (sbatch/srun not found); "
                              "submit from a SLURM login node, pass --address local for submitit's "
                              "local mode (jobs as processes here), or use --executor local")
        self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": timeout_min, "cpus_per_task": threads or 1}
        if gpus_per_run:
            params["gpus_per_node"] = gpus_per_run
        if partition:
            params["slurm_partition"] = partition
        self.ex.update_parameters(**params)
        self.threads = threads or 1
        # Local mode runs every job here at once: at most one per core, as the local pool.
        self.on_this_machine = cluster == "local"
        self.slots = workers or (max(1, cores() // self.threads) if self.on_this_machine
                                 else 1000)  # a cluster's scheduler queues the rest
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
