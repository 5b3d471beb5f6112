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
    # Fused training: one thread per process (the default grid's layout), CPU-time rates.
    ["bench_fused.py", "--device", "cpu", "--ks", "1", "2", "4", "8", "--steps", "24",
     "--threads", "1"],
    ["bench_fused.py", "--formulations", "--ks", "1", "2", "4", "8", "16", "--threads", "1",
     "--steps", "16", "--rounds", "2"],
    ["bench_hooks.py", "--ngf", "32", "--steps", "30", "--rounds", "5"],
]

if __name__ == "__main__":
    failed = 0
    for script, *args in SCRIPTS:
        print(f"\n===== {script} {' '.join(args)} =====", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / script), *args]).returncode
    sys.exit(failed)
