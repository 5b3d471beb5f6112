"""Packing: how many training runs one device sustains side by side.

Starts K ``ablate train`` processes at once (K = 1, 2, 4, ...) on one device and
reports, per K: wall time, runs/hour, aggregate training images/s and the mean
per-run images/s. On a GPU this is what decides the worker count of a grid; on the
CPU it compares worker/thread layouts.

    python benchmarks/bench_pack.py --device cuda --packs 1 2 4 8 --steps 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_pack(k: int, args, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, "-m", "ablate.cli", "train", "--dataset", args.dataset, "--steps",
           str(args.steps), "--batch-size", "64", "--ngf", str(args.ngf), "--ndf", str(args.ngf),
           "--hacks", "builtin", "--device", args.device, "--no-eval", "--log-every", "100",
           "--precision", args.precision]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd + ["--seed", str(i), "--out", str(tmp / f"k{k}-{i}")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(k)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a packed run failed:\n{err}")
    wall = time.perf_counter() - t
    per_run = [json.loads((tmp / f"k{k}-{i}/result.json").read_text())["images_per_s"]
               for i in range(k)]
    return {"k": k, "wall_s": wall, "runs_per_hour": k * 3600 / wall,
            "aggregate_img_s": k * args.steps * 64 / wall,
            "mean_run_img_s": sum(per_run) / k}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--packs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()
    print(f"device={args.device} dataset={args.dataset} steps={args.steps} ngf=ndf={args.ngf} "
          f"threads/process={args.threads or 'default'} precision={args.precision}")
    print(f"{'K':>3} {'wall s':>8} {'runs/h':>8} {'agg img/s':>10} {'img/s per run':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.packs:
            r = run_pack(k, args, Path(tmp))
            print(f"{r['k']:>3} {r['wall_s']:>8.1f} {r['runs_per_hour']:>8.0f} "
                  f"{r['aggregate_img_s']:>10.0f} {r['mean_run_img_s']:>14.0f}", flush=True)


if __name__ == "__main__":
    main()
