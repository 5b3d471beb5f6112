"""``ablate report``: statistics, tables, figures and REPORT.md for an experiment's results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ablate.artefacts import directory
from ablate.report import write_report

HELP = "statistics, tables, figures and REPORT.md for an experiment's results"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR",
                   help="an experiment's results folder, e.g. results/default")
    p.add_argument("--out", default=None,
                   help="write the report here instead of into RESULTS_DIR")


def run(args: argparse.Namespace) -> int:
    out = directory(args.out, "--out") if args.out is not None else None  # "" is not the cwd
    print(write_report(args.results_dir, out))
    return 0
