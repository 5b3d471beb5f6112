"""``ablate status``: progress of an experiment's runs, per variant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "progress of an experiment's runs, per variant"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", type=Path,
                   help="experiment file (TOML), or a results directory a grid wrote")
    p.add_argument("--results-dir", default=None,
                   help="override the experiment's results directory")


def run(args: argparse.Namespace) -> int:
    from ablate.artefacts import directory
    from ablate.errors import ConfigError
    from ablate.layout import DB_NAME, ExperimentDir
    from ablate.experiment.spec import load_experiment  # import-time saving: loads torch
    from ablate.grid.driver import other_owner

    if args.experiment.is_dir():  # a results directory: its own store says everything
        if args.results_dir is not None:
            raise ConfigError(f"{args.experiment} is a results directory already; give --results-dir "
                              "only with an experiment file")
        if not ExperimentDir(args.experiment).db.is_file():
            raise ConfigError(f"{args.experiment} is a directory without {DB_NAME}: not a results "
                              "directory; give the experiment file (TOML) or the folder a grid wrote")
        return print_status(args.experiment)
    experiment = load_experiment(args.experiment)  # a missing or bad file says so
    if args.results_dir is not None:
        results = directory(args.results_dir, "--results-dir", use="read")
    else:
        results = experiment.results_dir
    if results.exists() and not results.is_dir():
        raise ConfigError(f"results directory {results} is a file; choose another --results-dir")
    owner = other_owner(results, experiment)  # another experiment's on other data: exit 2
    if owner is not None:  # as `ablate grid` warns: the runs shown are partly another's
        print(f"warning: results directory {results} holds experiment {owner!r} (its "
              f"experiment.json), not {experiment.name!r}: the progress below is that of {owner!r}",
              file=sys.stderr)
    return print_status(results)


def print_status(results_dir: Path) -> int:
    """Print what :func:`ablate.grid.status.status_lines` finds (read-only)."""
    from ablate.grid.status import status_lines

    for line in status_lines(results_dir):
        print(line)
    return 0
