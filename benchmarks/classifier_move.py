"""How far a second training of the scoring classifier moves the numbers.

    python benchmarks/classifier_move.py RESCORED_RESULTS_DIR COMMITTED_RESULTS_DIR

RESCORED_RESULTS_DIR is the same experiment trained again (the same keys) and scored by
another training of the classifier (another CPU kind or thread count). Per metric, over
the runs both have: the classifier test accuracy on each side, then the mean, sd and
range of log(new / committed) for FID and KID at both checkpoints; then, when both have
a report, each hack's log-ratio estimate and verdict on both sides. The figures of
docs/statistics.md ("Which classifier scored a run") are this script's output, committed
in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import pandas as pd

from ablate.layout import ExperimentDir, RunDir


def _scores(results: Path) -> tuple[dict[str, dict], set]:
    out, accuracy = {}, set()
    for run in sorted((results / "runs").iterdir()):
        rd = RunDir(run)
        if not rd.metrics.is_file() or not rd.run_info.is_file():
            continue
        m = json.loads(rd.metrics.read_text())
        out[json.loads(rd.run_info.read_text())["key"]] = m
        accuracy.add(m["provenance"]["features"]["classifier"]["classifier_test_accuracy"])
    return out, accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rescored", type=Path)
    p.add_argument("committed", type=Path)
    a = p.parse_args()
    new, acc_new = _scores(a.rescored)
    old, acc_old = _scores(a.committed)
    keys = sorted(set(new) & set(old))
    print(f"runs in both: {len(keys)}; classifier test accuracy: rescored {sorted(acc_new, key=str)}, "
          f"committed {sorted(acc_old, key=str)}")
    for ck in ("last", "best"):
        for metric in ("fid", "kid_mean"):
            r = [math.log(new[k][ck]["classifier"][metric] / old[k][ck]["classifier"][metric]) for k in keys
                 if old[k].get(ck, {}).get("classifier", {}).get(metric)]
            print(f"{ck}.classifier.{metric}: log(new/committed) over {len(r)} runs: mean {statistics.fmean(r):+.4f}, "
                  f"sd {statistics.stdev(r):.4f}, range {min(r):+.4f} .. {max(r):+.4f}")
    eff = [ExperimentDir(d).effects_csv for d in (a.rescored, a.committed)]
    if all(e.is_file() for e in eff):
        n, o = (pd.read_csv(e).set_index("hack") for e in eff)
        moved = (n["estimate"] - o["estimate"]).abs()
        print(f"hack contrasts ({o['metric'].iloc[0]}): |estimate change| {moved.min():.4f} .. {moved.max():.4f} "
              f"(log ratio); verdicts changed: {int((n['verdict'] != o['verdict']).sum())} of {len(o)}")
        for h in o.index:
            print(f"  {h}: committed {o.at[h, 'estimate']:+.4f} {o.at[h, 'verdict']}, "
                  f"rescored {n.at[h, 'estimate']:+.4f} {n.at[h, 'verdict']}")


if __name__ == "__main__":
    main()
