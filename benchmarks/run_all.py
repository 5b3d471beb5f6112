"""`make bench`: every benchmark script in turn, on this machine's CPU.

Each prints ratios measured side by side in one run; see benchmarks/README.md for the
figures recorded on the development machine and on a lent H100.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    ["bench_step.py", "--ngf", "64"],
    ["bench_step.py", "--ngf", "32", "--all-off"],
    ["bench_train.py", "--device", "cpu", "--steps", "60", "--rounds", "3"],
    ["bench_eval.py"],
    ["bench_grid.py", "--layouts", "1x2", "2x1"],
    ["bench_hooks.py", "--ngf", "32", "--steps", "30", "--rounds", "5"],
]

if __name__ == "__main__":
    failed = 0
    for script, *args in SCRIPTS:
        print(f"\n===== {script} {' '.join(args)} =====", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / script), *args]).returncode
    sys.exit(failed)
