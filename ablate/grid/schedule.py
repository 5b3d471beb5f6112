"""Running a list of runs on an executor: at most ``executor.slots`` tasks (a run, or a
fused group of runs: :mod:`ablate.grid.groups`) in flight, each outcome accounted for,
worker deaths bounded, Ctrl-C and SIGTERM handled.

* A worker that dies (``died`` outcome) is charged to each key it was running
  (:meth:`ablate.grid.store.Store.record_death`): retried until :data:`MAX_DEATHS`
  deaths, then ``failed`` with the cause; the other runs go on. Co-workers the broken
  pool took down released their claims themselves and are simply resubmitted. A run
  whose worker died is retried alone (its group may have been what killed it).
* Ctrl-C: the first press starts nothing new and lets the running runs finish (they are
  kept); a second press or SIGTERM abandons them (each releases its claim and removes
  its tmp dir). Either way the grid returns normally and a rerun resumes.
* A full disk (an outcome with ``halt``) stops claiming; the running runs end.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ablate.grid.executors import Executor
from ablate.grid.groups import make_tasks, run_task
from ablate.grid.keys import RunSpec, Task
from ablate.grid.store import TERMINAL, Outcome, Status, Store

MAX_DEATHS = 3  # a key whose worker process died this many times is marked failed
Log = Callable[[str], None]


@dataclass
class Progress:
    """What one :func:`execute` call did."""

    trained: int = 0  # runs it took to done or diverged
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM
    halted: str | None = None  # why it stopped early (disk full, workers that cannot start)


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


def _claimable(store: Store, task: Task, waiting: dict[str, RunSpec], bar) -> Task:
    """The members of ``task`` to start now: finished ones are counted, held ones wait."""
    out = []
    for s in task:
        row = store.get(s.key) or {}
        if row.get("status") in TERMINAL:
            bar.update(1)  # finished by another process meanwhile
        elif store.claimable(s.key, s.retry_failed):
            out.append(s)
        elif row.get("status") == Status.RUNNING:
            waiting[s.key] = s
    return tuple(out)


def _execute(store: Store, todo: list[RunSpec], executor: Executor, summary: Progress,
             stop: _Interrupts, bar, say: Log, poll_s: float, max_k: int) -> None:
    queue: deque[Task] = deque(make_tasks(todo, max_k))
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
                task = _claimable(store, queue.popleft(), waiting, bar)
                if task:
                    batch.append(task)
            if batch:
                executor.submit(run_task, batch)
        if executor.in_flight == 0:
            if stop.presses or summary.halted or not (queue or waiting):
                return
            bar.set_description(f"waiting for {len(waiting)} run(s) held by another process")
            time.sleep(poll_s)
            queue.extend(make_tasks(list(waiting.values()), max_k))
            waiting.clear()
            continue
        for out in executor.poll(timeout=0.2):
            empty_deaths = _handle(out, store, by_key[out.key], queue, waiting, summary, stop,
                                   bar, say, empty_deaths)
            if empty_deaths >= MAX_DEATHS * executor.slots and not summary.halted:
                summary.halted = (f"the worker processes die before running anything "
                                  f"({empty_deaths} times): {out.error}")


def _handle(out: Outcome, store: Store, spec: RunSpec, queue: deque, waiting: dict,
            summary: Progress, stop: _Interrupts, bar, say: Log, empty_deaths: int) -> int:
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
        queue.appendleft((spec,))  # alone: a group's death may have been the group's size
    return 0 if settled is not None else empty_deaths + 1


def execute(store: Store, todo: list[RunSpec], executor: Executor, *, label: str,
            progress: bool = True, poll_s: float = 2.0, log: Log = print,
            max_k: int = 1) -> Progress:
    """Run ``todo`` (distinct keys) until each is finished or failed, or the grid is stopped;
    wait for keys other processes hold. ``max_k`` > 1 trains fusable runs in groups of
    at most that many (:func:`ablate.grid.groups.make_tasks`)."""
    from tqdm import tqdm  # import-time saving: only a running grid draws a bar

    done = Progress()
    bar = tqdm(total=len(todo), desc=label, unit="run", disable=not (progress and todo),
               dynamic_ncols=True, file=sys.stderr)
    say = (lambda m: tqdm.write(m, file=sys.stderr)) if progress else log  # under the bar
    with _handle_interrupts(say, executor.name == "inline") as stop:
        try:
            _execute(store, todo, executor, done, stop, bar, say, poll_s, max_k)
        except KeyboardInterrupt:  # the inline executor's run was abandoned
            pass
        finally:
            bar.close()
    done.interrupted = stop.presses > 0
    return done
