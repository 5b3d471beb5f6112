"""``ablate eval``: score a run directory and write its ``metrics.json``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablate.experiment import execution
from ablate.config import EvalProtocol, parse_features, with_validation
from ablate.layout import RunDir

HELP = "score a run: FID/KID, precision/recall, density/coverage, modes"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run directory written by `ablate train`")
    p.add_argument("--features", default="auto",
                   help="classifier, inception, both, or auto (classifier on CPU, both on GPU)")
    p.add_argument("--n", type=int, default=EvalProtocol.n, help="generated (and real) samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def protocol_for(features: str, device: str, **changes) -> EvalProtocol:
    """``--features`` (``auto`` = classifier on CPU, both on GPU) -> an EvalProtocol."""
    if features == "auto":
        from ablate.environment import resolve_device  # loads torch: only when needed

        return EvalProtocol.for_device_type(resolve_device(device).type, **changes)
    return EvalProtocol(features=parse_features(features), **changes)


def print_summary(doc: dict) -> None:
    """One line per checkpoint and feature net: FID, KID, PRDC, modes."""
    for label in ("last", "best"):
        for feat, m in doc.get(label, {}).items():
            if isinstance(m, dict) and "fid" in m:
                extra = f" modes {m['modes']}/{m['num_modes']} kl {m['kl']:.4f}" if "modes" in m else ""
                print(f"{label:<5} step {doc[label].get('step')} {feat:<10} FID {m['fid']:.3f} "
                      f"KID {m['kid_mean']:.5f}±{m['kid_std']:.5f} P {m['precision']:.3f} "
                      f"R {m['recall']:.3f} D {m['density']:.3f} C {m['coverage']:.3f}{extra}")


def run(args: argparse.Namespace) -> int:
    # Import-time saving: torch and the metrics stack load only when a command needs
    # them, so `ablate --help` and `ablate hacks` stay fast.
    from ablate.environment import apply_threads
    from ablate.metrics.evaluate import evaluate_run
    from ablate.training.resolve import read_config

    apply_threads(execution.check_threads(args.threads, "--threads", "inline"))  # scores here
    train_cfg = {}
    if RunDir(args.run_dir).config.exists():  # record how the run was validated
        train_cfg = read_config(args.run_dir).get("train") or {}  # bad JSON: exit 2
    protocol = with_validation(protocol_for(args.features, args.device, n=args.n), train_cfg)
    doc = evaluate_run(args.run_dir, protocol, args.device)
    print_summary(doc)
    print(f"wrote {RunDir(args.run_dir).metrics}", file=sys.stderr)
    return 0
