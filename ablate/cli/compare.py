"""``ablate compare``: one summary (SUMMARY.md, tables, forest plots) over several experiments."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ablate.artefacts import check_creatable, directory, write_fix
from ablate.errors import ConfigError

HELP = "one summary over several experiments' reports: per-hack verdicts side by side and pooled ratios"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dirs", type=Path, nargs="+", metavar="RESULTS_DIR",
                   help="experiments' results folders with a report, e.g. results/default results/fashion-mnist-1k")
    p.add_argument("--out", default=None,
                   help="write SUMMARY.md and summary/ here (default: the folder holding the results "
                        "folders, e.g. results)")


def run(args: argparse.Namespace) -> int:
    from ablate.report.compare import write_summary  # pandas/matplotlib: only when it runs

    if args.out is not None:
        out = directory(args.out, "--out")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; choose a directory for SUMMARY.md and summary/")
        check_creatable(out, "--out")
    else:
        out = Path(os.path.commonpath([str(d.resolve().parent) for d in args.results_dirs]))
    try:
        print(write_summary(args.results_dirs, out))
    except OSError as exc:  # a full disk, a read-only folder, summary/ blocked by a file
        raise ConfigError(f"cannot write the summary to {out}: {exc.strerror or exc}; the results "
                          f"directories are only read: {write_fix(exc)}, or pass --out DIR") from exc
    return 0
