"""``ablate anchor``: TF-Inception FID of an experiment's all-on and all-off runs -> ``anchor.json``."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ablate.experiment import execution

HELP = ("TF-Inception FID (official FID's network) of chosen finished runs, for the report's protocol "
        "anchor beside published figures; writes RESULTS_DIR/anchor.json, never a run's metrics.json")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR",
                   help="an experiment's results folder, e.g. results/fashion-mnist-20k")
    p.add_argument("--variants", nargs="+", default=(), metavar="VARIANT",
                   help="variants whose finished runs are scored (default: all-on and all-off)")
    p.add_argument("--n", type=int, default=10_000,
                   help="generated images per run, scored against up to as many of the test split "
                        "(default 10000: Lucic et al.'s N)")
    p.add_argument("--checkpoint", choices=("best", "last"), default=None,
                   help="generator checkpoint (default: the one the report's primary metric uses, best "
                        "where measured)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def run(args: argparse.Namespace) -> int:
    from ablate.config import EvalProtocol
    from ablate.environment import apply_threads
    from ablate.layout import ExperimentDir
    from ablate.metrics.anchor import score_anchor
    from ablate.report.anchor import plan
    from ablate.report.results import Results

    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # the Inception's TorchScript
    execution.check_device(args.device, "--device")
    apply_threads(execution.check_threads(args.threads, "--threads", "inline"))
    EvalProtocol(n=args.n)  # a bad --n: ConfigError before anything loads
    runs, checkpoint = plan(Results.load(args.results_dir), tuple(args.variants), args.checkpoint)
    path = ExperimentDir(args.results_dir).anchor
    print(f"ablate anchor: {len(runs)} finished run(s), {checkpoint} checkpoint, N = {args.n} "
          f"(runs already in {path} are skipped)", file=sys.stderr)

    def show(e: dict) -> None:
        fid = f"FID {e['fid']:.3f} KID {e['kid_mean']:.5f}" if "fid" in e else e.get("error", "failed")
        print(f"{e['variant']} seed {e['seed']} ({e['key']}, step {e['step']}): TF-Inception {fid} "
              f"[{e['wall_s']:.0f} s]", flush=True)

    new = score_anchor(runs, path, n=args.n, checkpoint=checkpoint, device=args.device, on_scored=show)
    print(f"wrote {path} ({len(new)} new, {len(runs) - len(new)} already there)", file=sys.stderr)
    return 0
