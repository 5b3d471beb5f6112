"""``ablate grid``: train and score every run of an experiment (resumable)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sqlite3
import sys
import traceback
from pathlib import Path

from ablate.experiment import execution
from ablate.artefacts import check_creatable, directory
from ablate.errors import ConfigError, Terminated
from ablate.experiment.execution import EXECUTORS
from ablate.messages import show_on_stderr
from ablate.report import write_report

HELP = "train and score every run of an experiment (resumable)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", type=Path, help="experiment file (TOML), e.g. experiments/smoke.toml")
    p.add_argument("--dry-run", action="store_true",
                   help="print the variants, run count and aliasing; write nothing")
    p.add_argument("--retry-failed", action="store_true", help="run failed keys again")
    p.add_argument("--repair", action="store_true",
                   help="retrain finished runs whose directory, result files or checkpoint "
                        "are missing (their remains are moved to broken/)")
    p.add_argument("--rebuild-index", action="store_true",
                   help="move a corrupt runs.sqlite aside and rebuild the index from runs/*/")
    p.add_argument("--results-dir", default=None,
                   help="override the experiment's results directory")
    p.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="where runs execute: local process pool (default), inline (this "
                        "process, serial), ray (--address), slurm (submitit)")
    p.add_argument("--address", default=None,
                   help="ray: cluster address (auto joins a running cluster); slurm: 'local' "
                        "runs the job array as local processes (submitit's test mode)")
    p.add_argument("--partition", default=None, help="slurm: the partition to submit to")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel runs (default: one per GPU, else cores / threads; at most "
                        f"{execution.MAX_WORKERS}, and at most the cores for the local pool)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (at most the cores where runs execute here)")
    p.add_argument("--fuse", type=int, default=None, metavar="K",
                   help="train up to K runs that share an architecture as one fused model "
                        "(1: every run alone). Default: alone on the CPU, where fusion does "
                        "not pay; on a GPU, as many as measured memory allows (<= 64). "
                        "A run's numbers change only at the rounding level (docs/fused.md)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")


def run(args: argparse.Namespace) -> int:
    # Import-time saving (see ablate/cli/__init__.py): the grid stack loads torch.
    from ablate.experiment.spec import load_experiment
    from ablate.grid.driver import prepare, run_grid
    from ablate.grid.executors import make_executor
    from ablate.grid.status import dry_run_lines
    from ablate.grid.worker import disk_full, write_problem

    show_on_stderr()  # the workers' notes (ablate.messages), as `ablate: ...` lines

    # Validate everything before anything is written (the rules: ablate.experiment.execution).
    exp0 = load_experiment(args.experiment)
    defaults = dict(exp0.execution)

    def setting(name: str) -> tuple[object, str]:  # (value, where it came from)
        flag = getattr(args, name)
        return (flag, f"--{name}") if flag is not None else (defaults.get(name), f"[execution].{name}")

    executor_name = args.executor or defaults.get("executor", "local")
    for flag, executors in (("address", ("ray", "slurm")), ("partition", ("slurm",))):
        if getattr(args, flag) is not None and executor_name not in executors:
            raise ConfigError(f"--{flag} applies to --executor {' or '.join(executors)}, but the "
                              f"executor is {executor_name}; drop --{flag} or choose that executor")
    device, where = setting("device")
    device = "auto" if device is None else execution.check_device(device, where)
    threads = execution.check_threads(*setting("threads"), executor_name, args.address)
    workers, note = execution.cap_workers(*setting("workers"), executor_name, args.address)
    fuse = execution.positive(*setting("fuse"))
    results_dir = directory(args.results_dir, "--results-dir") if args.results_dir is not None else None
    grid = prepare(exp0, results_dir, device=device, threads=threads,  # the file is read once
                   check_device=execution.here(executor_name, args.address),
                   provision=not args.dry_run)  # a dry run writes nothing, data root included
    for warning in grid.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if note:
        print(f"ablate: note: {note}", file=sys.stderr)
    grid.experiment.check_decidable()  # the statistics below decide adaptive looks on a metric
    if args.dry_run:
        for line in dry_run_lines(grid, fuse, retry_failed=args.retry_failed):
            print(line)
        for flag in ("repair", "rebuild_index"):
            if getattr(args, flag):
                print(f"--{flag.replace('_', '-')}: acts in a real run only; this dry run "
                      "moved and rebuilt nothing")
        return 0
    check_creatable(grid.results_dir, "--results-dir" if results_dir else "results_dir")
    executor = make_executor(executor_name, workers=workers, threads=threads, device=device,
                             address=args.address, results_dir=grid.results_dir,
                             partition=args.partition)
    # Runs learn their thread count from the executor (it is recorded with each run).
    grid = dataclasses.replace(grid, specs=tuple(
        dataclasses.replace(s, config=dataclasses.replace(s.config, threads=executor.threads))
        for s in grid.specs))
    next_look = None
    if grid.experiment.policy.adaptive:
        # The statistics' decision between looks; imported only for adaptive grids
        # (import-time saving: the report's statistics stack loads statsmodels).
        from ablate.report.sequential import next_look
    # The command that resumes this grid (the same results dir; the rest comes from the file).
    resume = f"ablate grid {shlex.quote(str(args.experiment))}" + (
        f" --results-dir {shlex.quote(str(results_dir))}" if results_dir is not None else "")
    try:
        summary = run_grid(grid, executor, next_look=next_look, retry_failed=args.retry_failed,
                           repair=args.repair, rebuild_index=args.rebuild_index,
                           progress=not args.no_progress, fuse=fuse, log=_stderr)
    except PermissionError as exc:  # e.g. --repair moving a run dir it may not move
        print(f"ablate: the grid stopped: {exc}.\nFinished runs are kept; give this user write "
              f"permission there and rerun `{resume}` to resume", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error, RuntimeError) as exc:  # the driver's own writes: a full disk
        # (RuntimeError: torch.save reports ENOSPC as one, e.g. while pinning the classifier)
        if not disk_full(grid.results_dir, exc):
            raise
        print(f"ablate: the grid stopped: {write_problem(grid.results_dir, exc)}.\n"
              f"Finished runs are kept; rerun `{resume}` to resume", file=sys.stderr)
        return 1
    finally:
        executor.close()
    counts = ", ".join(f"{v} {k}" for k, v in summary.counts.items())
    name, results = grid.experiment.name, grid.results_dir
    print(f"{name}: {summary.planned} runs, {summary.keys} keys: {counts}; "
          f"trained {summary.trained} now, reused {summary.reused}; "
          f"{summary.wall_time_s:.1f} s wall; results in {results}")
    if grid.experiment.policy.adaptive and summary.look_reasons:
        print(f"adaptive seeds: stopped after look {summary.look}: "
              + "; ".join(summary.look_reasons))
    elif grid.experiment.policy.adaptive:  # stopped inside a look: nothing was decided
        print(f"adaptive seeds: look {max(summary.look, 1)} not finished; rerun to continue it")
    if summary.interrupted:
        print(f"ablate: stopped (Ctrl-C or SIGTERM); finished runs are kept. Resume with `{resume}`",
              file=sys.stderr)
        return 130
    if summary.halted:
        print(f"ablate: the grid stopped: {summary.halted}\nFinished runs are kept; fix that "
              f"and rerun `{resume}` to resume", file=sys.stderr)
        return 1
    ok = not summary.counts.get("failed") and not summary.counts.get("pending")
    if not args.no_report:
        try:
            ok = write_report_safely(results) and ok
        except KeyboardInterrupt as exc:  # the report is published whole (ablate.report.publish)
            print(f"ablate: stopped while writing the report (Ctrl-C or SIGTERM); every run is stored, and "
                  f"the report there is whole, the previous one or the new one. `ablate report "
                  f"{shlex.quote(str(results))}` writes it again", file=sys.stderr)
            return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
    return 0 if ok else 1


def _stderr(message: str) -> None:
    """The grid's own messages (plan, cross-check, looks, failures), one line each."""
    print(message, file=sys.stderr)


def write_report_safely(results: Path) -> bool:
    """Write the report; a failure is printed (the runs are safe), not fatal."""
    try:
        out = write_report(results)
    except Exception as exc:  # the runs are safe in the store; say how to retry
        tail = "".join(traceback.format_exception(exc)).strip().splitlines()[-3:]
        print("ablate: the report failed (the runs are stored; rerun `ablate grid` or "
              "`ablate report`):\n  " + "\n  ".join(tail), file=sys.stderr)
        return False
    if out:
        print(f"report: {out}")
    return True
