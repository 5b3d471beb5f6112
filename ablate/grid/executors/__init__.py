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

from pathlib import Path

from ablate.errors import ConfigError
from ablate.experiment.execution import EXECUTORS
from ablate.grid.executors.base import Executor, TaskFn, gpu_count
from ablate.grid.executors.cluster import RayExecutor, Requeueable, SlurmExecutor
from ablate.grid.executors.local import ABANDON_GRACE_S, InlineExecutor, LocalExecutor

__all__ = ["ABANDON_GRACE_S", "CLASSES", "Executor", "InlineExecutor", "LocalExecutor",
           "RayExecutor", "Requeueable", "SlurmExecutor", "TaskFn", "gpu_count", "make_executor"]


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

