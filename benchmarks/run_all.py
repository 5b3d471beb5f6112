"""`make bench`: every benchmark script in turn, on this machine's CPU.

First ``ablate doctor``'s measurement (ablate.training.doctor.diagnose): which precision pays on
this machine, and the bf16/fp32 ratios; the scripts that print a share of the roof are
then given the right roof (bf16 where bf16 pays). Each script prints ratios measured side
by side in one run; see benchmarks/README.md for the figures recorded on the development
machine and on a lent H100.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOF_SCRIPTS = {"bench_train.py", "bench_fused.py"}  # they print a share of the matmul roof
SCRIPTS = [
    ["bench_step.py", "--ngf", "64"],
    ["bench_step.py", "--ngf", "32", "--all-off"],
    ["bench_train.py", "--device", "cpu", "--steps", "60", "--rounds", "3"],
    # The bf16 path side by side (examples fp32, ablate fp32, bf16 untuned, bf16 tuned).
    ["bench_bf16.py", "--quick"],
    ["bench_eval.py"],
    ["bench_grid.py", "--layouts", "1x2", "2x1"],
    # Fused training: one thread per process (the default grid's layout), CPU-time rates.
    ["bench_fused.py", "--device", "cpu", "--ks", "1", "2", "4", "8", "--steps", "24",
     "--threads", "1"],
    ["bench_fused.py", "--formulations", "--ks", "1", "2", "4", "8", "16", "--threads", "1",
     "--steps", "16", "--rounds", "2"],
    ["bench_hooks.py", "--ngf", "32", "--steps", "30", "--rounds", "5"],
]


def precision_choice() -> str:
    """Print ``ablate doctor``'s report for this CPU; return the precision that pays."""
    from ablate.cli.doctor import report
    from ablate.training.doctor import diagnose

    print("===== ablate doctor (which precision pays here) =====", flush=True)
    d = diagnose(device="cpu")
    print(report(d), flush=True)
    return d.precision


if __name__ == "__main__":
    failed = 0
    roof = precision_choice()
    for script, *args in SCRIPTS:
        if script in ROOF_SCRIPTS and "--formulations" not in args:
            args = [*args, "--roof", roof]
        print(f"\n===== {script} {' '.join(args)} =====", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / script), *args]).returncode
    sys.exit(failed)
