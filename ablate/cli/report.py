"""``ablate report``: statistics, tables, figures and REPORT.md for an experiment's results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ablate.report import write_report

HELP = "statistics, tables, figures and REPORT.md for an experiment's results"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR",
                   help="an experiment's results folder, e.g. results/default")
    p.add_argument("--out", type=Path, default=None,
                   help="write the report here instead of into RESULTS_DIR")


def run(args: argparse.Namespace) -> int:
    print(write_report(args.results_dir, args.out))
    return 0
