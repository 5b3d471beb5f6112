"""``ablate compare``: one summary (SUMMARY.md, tables, forest plots) over several experiments."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "one summary over several experiments' reports: per-hack verdicts side by side and pooled ratios"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dirs", type=Path, nargs="+", metavar="RESULTS_DIR",
                   help="experiments' results folders with a report, e.g. results/default results/fashion-mnist-1k")
    p.add_argument("--out", type=Path, default=None,
                   help="write SUMMARY.md and summary/ here (default: the folder holding the results "
                        "folders, e.g. results)")


def run(args: argparse.Namespace) -> int:
    from ablate.report.compare import write_summary  # pandas/matplotlib: only when it runs

    out = args.out or Path(os.path.commonpath([str(d.resolve().parent) for d in args.results_dirs]))
    print(write_summary(args.results_dirs, out))
    return 0
