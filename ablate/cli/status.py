"""``ablate status``: progress of an experiment's runs, per variant."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "progress of an experiment's runs, per variant"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", type=Path, help="experiment file (TOML)")
    p.add_argument("--results-dir", type=Path, default=None)


def run(args: argparse.Namespace) -> int:
    from ablate.experiment.spec import load_experiment  # import-time saving: loads torch

    if args.results_dir:
        results = args.results_dir
    else:
        results = load_experiment(args.experiment).results_dir
    return print_status(results)


def print_status(results_dir: Path) -> int:
    """Print what :func:`ablate.grid.status.status_lines` finds (read-only)."""
    from ablate.grid.status import status_lines

    for line in status_lines(results_dir):
        print(line)
    return 0
