"""Grid throughput (runs/hour) of the default experiment's budget for worker layouts.

Runs the same four-run grid — default.toml's dataset, budget and evaluation with the
variants all-on, -strided-downsample, -strided-upsample and all-off (the cheapest and
the dearest kinds of run), seed 0 — once per layout (processes x threads) into a
fresh results directory, and prints wall time, runs/hour and the ratio to the first
layout. Rounds alternate layouts so that drift in machine load hits each alike.

    python benchmarks/bench_grid.py [--layouts 1x2 2x1] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def experiment_text(base: Path) -> str:
    """default.toml's dataset, model, budget and evaluation with four explicit variants."""
    exp = tomllib.loads(base.read_text())
    from ablate.hacks import registry

    on = registry.builtin_names()
    variants = {"all-on": on, "-strided-downsample": [h for h in on if h != "strided-downsample"],
                "-strided-upsample": [h for h in on if h != "strided-upsample"], "all-off": []}

    def table(name: str, d: dict) -> str:
        return f"[{name}]\n" + "".join(f'"{k}" = {_toml(v)}\n' for k, v in d.items())

    text = 'description = "bench_grid: four runs of the default budget"\nseeds = [0]\n'
    for section in ("data", "model", "budget", "evaluation"):
        if section in exp:
            text += table(section, exp[section])
    text += table("design", {"kind": "explicit"})
    text += table("design.variants", variants)
    text += table("hacks", {"scope": "builtin"})
    return text


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def run_layout(exp: Path, workers: int, threads: int, results: Path) -> float:
    cmd = [sys.executable, "-m", "ablate", "grid", str(exp), "--results-dir", str(results),
           "--workers", str(workers), "--threads", str(threads), "--no-progress", "--no-report",
           "--device", "cpu"]
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"grid failed ({workers}x{threads}):\n{out.stdout}\n{out.stderr}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", type=Path, default=REPO / "experiments/default.toml")
    p.add_argument("--layouts", nargs="+", default=["1x2", "2x1"],
                   help="PROCESSESxTHREADS, e.g. 1x2 (one process, two threads)")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    layouts = [tuple(map(int, s.split("x"))) for s in args.layouts]
    print(f"cpu_count={os.cpu_count()}; four runs of {args.experiment.name}'s budget per layout")
    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "bench-grid.toml"
        exp.write_text(experiment_text(args.experiment))
        walls: dict[tuple[int, int], list[float]] = {lay: [] for lay in layouts}
        for r in range(args.rounds):
            for w, t in layouts:
                walls[(w, t)].append(run_layout(exp, w, t, Path(tmp) / f"r{r}-{w}x{t}"))
        first = min(walls[layouts[0]])
        print(f"{'layout':>8} {'wall s':>8} {'runs/h':>8} {'speed vs ' + args.layouts[0]:>14}")
        for (w, t), xs in walls.items():
            best = min(xs)
            print(f"{w}x{t:<6} {best:>8.1f} {4 * 3600 / best:>8.0f} {first / best:>14.2f}")


if __name__ == "__main__":
    main()
