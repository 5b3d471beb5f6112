"""The all-on training step before and after hack API v2's hooks, side by side in one run.

Trains the eleven-hack all-on DCGAN with three loops, rounds interleaved (A, B, C, A, B,
C, ...) so that drift in machine load hits all alike, and prints images/s (training time
only, from result.json) and the ratios:

* before — ``ablate/train.py`` as of the commit before the hooks (``--base``, default
  5859f55), loaded from git into a temporary module;
* after, plain path — today's ``train()`` (no enabled hack overrides a per-step hook, so
  the loop does the plain DCGAN work);
* after, hook path — today's ``train()`` with one extra hack whose ``d_penalty`` returns
  None: every step goes through the hooked D and G updates (``ablate.training.steps``), which is
  what any loss/augmentation plugin pays on top of its own work.

It also counts the aten operators each loop dispatches in a whole 5-step run (PyTorch's
profiler): a figure that does not depend on machine load. The plain path must dispatch
exactly what the loop before the hooks did.

    python benchmarks/bench_hooks.py [--steps 60] [--rounds 3] [--ngf 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import dataclasses
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ablate import Hack, registry
from ablate.config import TrainConfig
from ablate.training.resolve import resolve
from ablate.training.loop import train

REPO = Path(__file__).resolve().parent.parent


def load_old_train(commit: str, folder: Path):
    """``ablate/train.py`` at ``commit`` as a module (it imports today's ablate helpers,
    which the hook work kept: models, data, the Recipe, artefacts)."""
    source = subprocess.run(["git", "show", f"{commit}:ablate/train.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "train_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("train_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_before"] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


class NoOpPenalty(Hack):
    """Overrides d_penalty (returning None), so the loop takes its hook path."""

    name = "bench-noop-penalty"
    on = off = "nothing"

    def d_penalty(self, ctx):
        return None


def count_ops(fn, plan, out: Path) -> collections.Counter:
    """aten operators dispatched by ``fn(plan, out)`` (all threads, forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(plan, out)
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="5859f55", help="the commit before the hooks")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    registry.register_hack(NoOpPenalty)
    builtin = tuple(registry.builtin_names())

    def config(hacks):
        return TrainConfig(dataset="fake", steps=args.steps, batch_size=64, seed=0, hacks=hacks,
                           ngf=args.ngf, ndf=args.ngf, device="cpu", threads=args.threads,
                           log_every=args.steps)

    with tempfile.TemporaryDirectory() as tmp:
        old = load_old_train(args.base, Path(tmp))
        loops = {
            f"before ({args.base})": (old.train, resolve(config(builtin))),
            "after, plain path": (train, resolve(config(builtin))),
            "after, hook path": (train, resolve(config(builtin + (NoOpPenalty.name,)))),
        }
        rates: dict[str, list[float]] = {k: [] for k in loops}
        for name, (fn, plan) in loops.items():  # warm-up: oneDNN primitive caches, data
            fn(plan, Path(tmp) / f"warm-{len(rates[name])}-{hash(name)}")
        ops = {}
        for name, (fn, plan) in loops.items():
            short = dataclasses.replace(plan, config=dataclasses.replace(plan.config, steps=5, log_every=5))
            ops[name] = count_ops(fn, short, Path(tmp) / f"ops-{hash(name)}")
        for r in range(args.rounds):
            for name, (fn, plan) in loops.items():
                result = fn(plan, Path(tmp) / f"{r}-{hash(name)}")
                rates[name].append(result.images_per_s)
    print(f"all-on step, 28x28x1, ngf=ndf={args.ngf}, batch 64, {args.steps} steps x "
          f"{args.rounds} rounds, {args.threads} threads, torch {torch.__version__}")
    before = rates[f"before ({args.base})"]
    ops_before = ops[f"before ({args.base})"]
    for name, counter in ops.items():
        diff = (counter - ops_before) + (ops_before - counter)
        print(f"  {name:<22} {sum(counter.values()):6d} aten ops in a 5-step run; "
              + ("identical to before" if not diff else
                 f"differs from before in {sum(diff.values())} ops ({', '.join(f'{k} {counter[k] - ops_before[k]:+d}' for k in sorted(diff)[:6])})"))
    for name, rs in rates.items():
        med = statistics.median(rs)
        # Per-round ratios pair each loop with the "before" run of the same round (same load).
        paired = statistics.median(r / b for r, b in zip(rs, before))
        print(f"  {name:<22} {med:7.0f} img/s  {64e3 / med:6.1f} ms/step  speed vs before: "
              f"{paired:.3f} (median of per-round ratios)  rounds: {', '.join(f'{x:.0f}' for x in rs)}")


if __name__ == "__main__":
    sys.exit(main())
