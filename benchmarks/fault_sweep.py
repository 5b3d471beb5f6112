"""Issue 11's fault and bad-input classes: how many are tried, how many now end cleanly.

Runs the regression tests that reproduce each class (tests/test_grid_faults.py,
test_grid_index.py, test_bad_inputs.py, the grid's kill/resume tests and the
experiment- and seed-policy validation tests) and tallies them. A case is *clean* when
its test passes: a fault loses and duplicates nothing, prints no traceback and resumes;
a bad input exits 2 with a message naming the key and the valid range, before anything
is written. Also prints the Ctrl-C stop times the tests measured.

    python benchmarks/fault_sweep.py            # ~30-40 min on the 2-core dev machine
    python benchmarks/fault_sweep.py --junit J  # tally a finished `pytest --junitxml=J` run
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULES = ["tests/test_grid_faults.py", "tests/test_grid_index.py", "tests/test_bad_inputs.py",
           "tests/test_grid_reliability.py", "tests/test_experiment_spec.py",
           "tests/test_grid_adaptive.py", "tests/test_grid_driver.py"]
# Test names (regex on "module::test") of each class; a test in neither is not counted.
BAD_INPUT = re.compile(r"test_bad_inputs|test_bad_|exit_2|exits_2|threads_below_one|"
                       r"needs_a_validation_curve")
FAULT = re.compile(r"test_grid_faults|test_grid_index|sigkill|two_grids|claims_are_exclusive|"
                   r"resume_after_a_kill")
NOT_A_FAULT = re.compile(r"committed_results_dry_run|read_only_store_never_writes")  # checks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--junit", type=Path, default=None,
                   help="tally this pytest --junitxml file (of a run with -s) instead of running")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xml = args.junit or Path(tmp) / "junit.xml"
        stdout = ""
        if args.junit is None:
            stdout = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p",
                                     "no:cacheprovider", f"--junitxml={xml}", *MODULES], cwd=REPO,
                                    capture_output=True, text=True).stdout
        root = ET.parse(xml).getroot()
        cases = list(root.iter("testcase"))
        stdout += "".join(c.findtext("system-out") or "" for c in cases)
        tally = {"bad input": [0, 0, 0], "fault": [0, 0, 0]}  # tried, clean, skipped
        failures = []
        for case in cases:
            name = f"{case.get('classname')}::{case.get('name')}"
            kind = "bad input" if BAD_INPUT.search(name) else \
                "fault" if FAULT.search(name) and not NOT_A_FAULT.search(name) else None
            if kind is None:
                continue
            if case.find("skipped") is not None:
                tally[kind][2] += 1
                continue
            tally[kind][0] += 1
            if case.find("failure") is None and case.find("error") is None:
                tally[kind][1] += 1
            else:
                failures.append(name)
    print(f"{'class':<10} {'tried':>6} {'clean':>6} {'skipped':>8}")
    for kind, (tried, clean, skipped) in tally.items():
        print(f"{kind:<10} {tried:>6} {clean:>6} {skipped:>8}")
    for line in stdout.splitlines():
        if "Ctrl-C: exit after" in line:
            print(line.strip(". "))
    for name in failures:
        print(f"not clean: {name}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
