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
    from ablate.grid.status import print_status

    if args.results_dir:
        results = args.results_dir
    else:
        results = load_experiment(args.experiment).results_dir
    return print_status(results)
