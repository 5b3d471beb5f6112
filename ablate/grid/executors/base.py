"""The executor interface every backend implements, and what they share."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from pathlib import Path

from ablate.grid.keys import Task
from ablate.grid.store import Outcome, Status

TaskFn = Callable[[Task], list[Outcome]]


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


def _died(task: Task, error: str) -> list[Outcome]:
    """A ``died`` outcome for each run of a task whose process is gone."""
    return [Outcome.of(s, Status.DIED, error=error) for s in task]


def gpu_count() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    import torch  # import-time saving: only executors that may use a GPU ask

    return torch.cuda.device_count()
