"""Check a classifier pin against committed results: score retrained generators with it.

    python benchmarks/pin_check.py RETRAINED_RESULTS_DIR COMMITTED_RESULTS_DIR [--pin FOLDER]

Every run directory of RETRAINED_RESULTS_DIR (the same experiment trained again, so its
generators exist: committed results omit them) is scored with the classifier pinned in
FOLDER (default: COMMITTED_RESULTS_DIR/classifier) under the protocol its committed twin
records, and every metric of both checkpoints is compared with the committed value.
`best.val_fid` comes from the retraining's validation (its classifier), not from this
scoring, and is reported apart. A pin that reproduces every other value to the last digit
is the classifier that scored the committed runs. Output: one line per run, then totals.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ablate.config import EvalProtocol
from ablate.layout import ExperimentDir
from ablate.metrics.classifier import pinned_in
from ablate.metrics.evaluate import evaluate_run


def _flat(doc: dict, prefix: str = ""):
    for k, v in doc.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield prefix + k, v


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("retrained", type=Path)
    p.add_argument("committed", type=Path)
    p.add_argument("--pin", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    pin = args.pin or ExperimentDir(args.committed).classifier
    equal = differ = val_fid = runs = 0
    weights = set()
    with pinned_in(pin):
        for run in sorted(ExperimentDir(args.retrained).runs.iterdir()):
            twin = ExperimentDir(args.committed).runs / run.name / "metrics.json"
            if not twin.exists():
                continue
            committed = json.loads(twin.read_text())
            doc = evaluate_run(run, EvalProtocol.from_dict(committed["protocol"]), "cpu", write=False)
            weights.add(doc["provenance"]["features"]["classifier"].get("classifier_weights"))
            a = dict(_flat({k: committed[k] for k in ("last", "best") if k in committed}))
            b = dict(_flat({k: doc[k] for k in ("last", "best") if k in doc}))
            same = [k for k in a if a[k] == b.get(k) or (math.isnan(a[k]) and math.isnan(b.get(k, 0.0)))]
            other = [k for k in a if k not in same and k != "best.val_fid"]
            equal, differ, val_fid = equal + len(same), differ + len(other), val_fid + ("best.val_fid" not in same)
            runs += 1
            print(f"{run.name}: {len(same)} equal, differ: {other or 'none'}", flush=True)
    print(f"{runs} runs scored with the pin in {pin} (weights {sorted(map(str, weights))}): "
          f"{equal} values equal, {differ} differ (best.val_fid, from the retraining's own "
          f"validation, differs in {val_fid} runs)")


if __name__ == "__main__":
    main()
