"""``ablate grid``: train and score every run of an experiment (resumable)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from pathlib import Path

from ablate.report import write_report

HELP = "train and score every run of an experiment (resumable)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", type=Path, help="experiment file (TOML), e.g. experiments/smoke.toml")
    p.add_argument("--dry-run", action="store_true",
                   help="print the variants, run count and aliasing; write nothing")
    p.add_argument("--retry-failed", action="store_true", help="run failed keys again")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="override the experiment's results directory")
    p.add_argument("--executor", choices=["local", "inline", "ray", "slurm"], default=None,
                   help="where runs execute: local process pool (default), inline (this "
                        "process, serial), ray (--address), slurm (submitit)")
    p.add_argument("--address", default=None,
                   help="ray: cluster address (auto joins a running cluster); slurm: 'local' "
                        "runs the job array as local processes (submitit's test mode)")
    p.add_argument("--partition", default=None, help="slurm: the partition to submit to")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel runs (default: one per GPU, else cores / threads)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")


def run(args: argparse.Namespace) -> int:
    # Import-time saving (see ablate/cli/__init__.py): the grid stack loads torch.
    from ablate.experiment import load_experiment
    from ablate.grid.driver import prepare, run_grid
    from ablate.grid.executors import make_executor
    from ablate.grid.status import print_dry_run

    # Validate everything before anything is written.
    exp0 = load_experiment(args.experiment)
    exe_defaults = dict(exp0.execution)
    device = args.device or exe_defaults.get("device", "auto")
    threads = args.threads or exe_defaults.get("threads")
    workers = args.workers or exe_defaults.get("workers")
    executor_name = args.executor or exe_defaults.get("executor", "local")
    experiment, design, results, specs = prepare(args.experiment, args.results_dir, device=device,
                                                 threads=threads, retry_failed=args.retry_failed)
    if args.dry_run:
        print_dry_run(experiment, design, results, specs)
        return 0
    executor = make_executor(executor_name, workers=workers, threads=threads, device=device,
                             address=args.address, results_dir=results, partition=args.partition)
    if getattr(executor, "threads", None):  # runs learn their thread count from the executor
        specs = [dataclasses.replace(s, config=dataclasses.replace(s.config, threads=executor.threads))
                 for s in specs]
    try:
        summary = run_grid(experiment, design, results, specs, executor,
                           retry_failed=args.retry_failed, progress=not args.no_progress)
    finally:
        executor.close()
    counts = ", ".join(f"{v} {k}" for k, v in summary.counts.items())
    print(f"{experiment.name}: {summary.planned} runs, {summary.keys} keys: {counts}; "
          f"trained {summary.trained} now, reused {summary.reused}; "
          f"{summary.wall_time_s:.1f} s wall; results in {results}")
    ok = not summary.counts.get("failed") and not summary.counts.get("pending")
    if not args.no_report:
        ok = write_report_safely(results) and ok
    return 0 if ok else 1


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
