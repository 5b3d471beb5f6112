"""Execution settings: how a grid runs its runs, never what they compute.

``workers``, ``threads``, ``fuse``, ``device`` and ``executor`` come from an experiment's
``[execution]`` table or from the grid command's flags (a flag wins); ``ablate train``
and ``ablate eval`` take ``--threads`` too. None of them enters a run key.
Their rules live here, so every source is checked alike and before anything is written;
an error names the key or flag it came from (``[execution].threads``, ``--threads``):

* ``workers``, ``threads``, ``fuse``: positive integers (not bools, not floats);
* ``workers`` at most :data:`MAX_WORKERS` (a larger number is a typo: no executor keeps
  more runs in flight); where the runs execute on this machine (the local pool, a Ray
  started here) more workers than CPU cores are capped at the cores, with a note, since
  extra processes only share the cores and multiply memory;
* ``threads``, where runs execute on this machine (local, inline, a Ray started here,
  ``ablate train``/``eval``), at most the CPU cores: more oversubscribes them (a grid
  with 1,000 threads per run on 2 cores hung) and, unlike ``workers``, the thread count
  changes CPU results and is recorded with each run, so it is refused, not capped;
* ``device``: auto, cpu, cuda or cuda:N; ``executor``: one of :data:`EXECUTORS`.
"""

from __future__ import annotations

import os
from typing import Any

from ablate.errors import ConfigError

EXECUTORS = ("local", "inline", "ray", "slurm")
KEYS = {"workers", "threads", "device", "executor", "fuse"}
MAX_WORKERS = 1000  # what the SLURM executor keeps in flight when workers is not given


def cores() -> int:
    """CPU cores of this machine (as the local pool counts them)."""
    return os.cpu_count() or 1


def positive(value: Any, where: str) -> int | None:
    """``value`` if it is a positive integer (None passes): workers, threads, fuse."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")
    return value


def parse_table(table: dict) -> dict[str, Any]:
    """Validate an experiment's ``[execution]`` table (defaults for the grid command)."""
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"[execution]: unknown key {key!r}; valid keys: {', '.join(sorted(KEYS))}")
    for key in ("threads", "fuse"):
        positive(table.get(key), f"[execution].{key}")
    check_workers(table.get("workers"), "[execution].workers")
    if "device" in table:
        check_device(table["device"], "[execution].device")
    if "executor" in table and table["executor"] not in EXECUTORS:
        raise ConfigError(f"[execution].executor must be one of {', '.join(EXECUTORS)}, "
                          f"got {table['executor']!r}")
    return table


def check_device(device: Any, where: str) -> str:
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")
                                           and device[5:].isdigit()):
        raise ConfigError(f"{where} must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def here(executor: str, address: str | None = None) -> bool:
    """Whether ``executor``'s runs execute on this machine (a local Ray instance and
    submitit's local mode included)."""
    return executor in ("local", "inline") or (executor == "ray" and address is None) \
        or (executor == "slurm" and address == "local")


def check_workers(workers: int | None, where: str) -> int | None:
    workers = positive(workers, where)
    if workers is not None and workers > MAX_WORKERS:
        raise ConfigError(f"{where} = {workers}; valid: 1 .. {MAX_WORKERS} (runs in flight at "
                          "once; the local pool is further capped at this machine's cores)")
    return workers


def cap_workers(workers: int | None, where: str, executor: str,
                address: str | None = None) -> tuple[int | None, str | None]:
    """``workers`` checked, capped at the cores where the runs execute here; and a note
    saying so (None when nothing was capped)."""
    workers = check_workers(workers, where)
    if workers is None or executor == "inline" or not here(executor, address) or workers <= cores():
        return workers, None
    return cores(), (f"{where} = {workers} capped at {cores()}, the CPU cores of this machine "
                     "(more worker processes than cores only share them)")


def check_threads(threads: int | None, where: str, executor: str = "local",
                  address: str | None = None) -> int | None:
    """``threads`` checked: positive and, where the runs execute here, at most the cores."""
    threads = positive(threads, where)
    if threads is not None and here(executor, address) and threads > cores():
        raise ConfigError(f"{where} = {threads} exceeds the {cores()} CPU cores of this machine; "
                          f"valid: 1 .. {cores()} (torch threads per run)")
    return threads
