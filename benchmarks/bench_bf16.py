"""The bf16 CPU training path, side by side (issue #21 item 2).

Four loops at each width, rounds alternating (the order reversing every round) in one
process, so that machine load drifts into all of them alike:

* ``examples fp32``: the pytorch/examples DCGAN loop (bench_train.py's reference, its
  best setting here: 0 DataLoader workers);
* ``ablate fp32``: ablate's trainer (``ablate.training.loop.train``), all-on, fp32;
* ``ablate bf16 untuned``: ``precision = "bf16"`` with every switch of
  ``ablate.training.precision.TUNING`` off (plain autocast, as before the tuning);
* ``ablate bf16 tuned``: ``precision = "bf16"`` as it ships;
* with ``--compile MODE``, also ``ablate bf16 compiled``: the tuned path with G's and D's
  autocast forwards under ``torch.compile(mode=MODE)`` (inductor compiles their forward
  and backward graphs; Adam stays eager). Its compile time is printed apart: the first
  round pays it cold, later rounds (and later runs on the machine) read inductor's cache.
  ``--compile-scope norm-act`` compiles only each BatchNorm and the activation after it,
  as one function (the elementwise work between the convolutions, which inductor can
  fuse), and leaves the convolutions to oneDNN, eager.

The bf16 path's allocator setting is process-wide, so it is made before the first
round for all four loops (``--allocator default``: for none of them); the untuned
column then differs from the tuned one by the per-step tunings only.

Prints images/s, each loop's ratio to the examples loop, FLOPs per step
(torch.utils.flop_counter) and the share of the fp32 and bf16 2048^3 matmul roofs
measured in the same run. Batch 64, Fashion-MNIST's 28x28x1, widths ngf = ndf = 64, 32.

    python benchmarks/bench_bf16.py [--quick] [--threads T] [--steps 60] [--rounds 3]
                                    [--compile default|max-autotune-no-cudagraphs] [--compile-scope modules|norm-act]

``--quick`` (40 steps x 2 rounds) finishes in well under 4 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import _ablate_config, flops_per_step, matmul_roof, reference_throughput  # noqa: E402

from ablate.data import load  # noqa: E402
from ablate.training import loop, precision  # noqa: E402
from ablate.training.resolve import resolve  # noqa: E402

LOOPS = ("examples fp32", "ablate fp32", "ablate bf16 untuned", "ablate bf16 tuned")
COMPILED = "ablate bf16 compiled"


def _bn_act(x, w, b, mean, var, momentum: float, eps: float, slope: float):
    """Training-mode BatchNorm, then ReLU (slope 0) or LeakyReLU."""
    y = F.batch_norm(x, mean, var, w, b, True, momentum, eps)
    return F.leaky_relu(y, slope) if slope else F.relu(y)


@functools.cache
def _compiled_bn_act(mode: str):
    return torch.compile(_bn_act, dynamic=False, **({} if mode == "default" else {"mode": mode}))


def compile_norm_act(module: nn.Module, mode: str) -> int:
    """Run each (BatchNorm2d, ReLU/LeakyReLU) pair of ``module`` as one compiled function in
    training mode, eager in eval mode (the activation's forward becomes the identity);
    returns the number of pairs."""
    bn_act = _compiled_bn_act(mode)
    mods, pairs = list(module.modules()), 0
    for bn, act in zip(mods, mods[1:]):
        if isinstance(bn, nn.BatchNorm2d) and isinstance(act, (nn.ReLU, nn.LeakyReLU)):
            slope = act.negative_slope if isinstance(act, nn.LeakyReLU) else 0.0

            def forward(self, x, slope=slope):
                if not self.training:  # samples and evaluation: the pair eager
                    y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                     False, 0.0, self.eps)
                    return F.leaky_relu(y, slope) if slope else F.relu(y)
                self.num_batches_tracked.add_(1)
                return bn_act(x, self.weight, self.bias, self.running_mean, self.running_var,
                              self.momentum, self.eps, slope)
            bn.forward = types.MethodType(forward, bn)
            act.forward = types.MethodType(lambda self, x: x, act)
            pairs += 1
    return pairs


def ablate_rate(ngf: int, steps: int, prec: str, tuned: bool, compile_mode: str | None = None,
                first_window: list[tuple[float, int]] | None = None, scope: str = "modules") -> float:
    """Steady-state images/s of ablate's trainer (median of the log windows after the first);
    ``compile_mode``: G's and D's forwards (``scope`` "modules") or their BatchNorm +
    activation pairs ("norm-act") under torch.compile, the first window's seconds
    (compilation included) and its steps appended to ``first_window``."""
    config = dataclasses.replace(_ablate_config("fashion-mnist", ngf, steps + steps // 4,
                                                torch.device("cpu")), precision=prec)
    saved, forwards = dict(precision.TUNING), loop.forwards
    if not tuned:
        precision.TUNING.update({k: False for k in saved})
    if compile_mode is not None and scope == "norm-act":
        def norm_act(g, d, *a):
            if not (compile_norm_act(g, compile_mode) and compile_norm_act(d, compile_mode)):
                raise RuntimeError("--compile-scope norm-act: no BatchNorm + activation pair")
            return forwards(g, d, *a)
        loop.forwards = norm_act
    elif compile_mode is not None:
        kw = {} if compile_mode == "default" else {"mode": compile_mode}
        loop.forwards = lambda *a: tuple(torch.compile(m, dynamic=False, **kw) for m in forwards(*a))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            loop.train(resolve(config), Path(tmp) / "run")
            log = [json.loads(x) for x in (Path(tmp) / "run/log.jsonl").read_text().splitlines()]
    finally:
        precision.TUNING.update(saved)
        loop.forwards = forwards
    if first_window is not None:
        first_window.append((log[0]["step"] * config.batch_size / log[0]["images_per_s"], log[0]["step"]))
    return statistics.median(r["images_per_s"] for r in log[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 32])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="40 steps x 2 rounds")
    p.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                   help="tuned: the bf16 path's glibc setting, made first for every loop (it is "
                        "process-wide); default: glibc's, for every loop")
    p.add_argument("--compile", metavar="MODE", default=None,
                   help="also time the tuned bf16 path under torch.compile(mode=MODE): default, "
                        "max-autotune-no-cudagraphs, ...")
    p.add_argument("--compile-scope", choices=["modules", "norm-act"], default="modules",
                   help="with --compile: G's and D's whole forwards (modules), or only each "
                        "BatchNorm with its activation, the convolutions eager (norm-act)")
    args = p.parse_args()
    if args.allocator == "tuned":
        precision.tune_allocator()
    else:
        precision.TUNING["allocator"] = False
    if args.quick:
        args.steps, args.rounds = 40, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cpu = torch.device("cpu")
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} "
          f"cpu capability={torch.backends.cpu.get_cpu_capability()} "
          f"steps={args.steps} rounds={args.rounds} allocator={args.allocator} compile={args.compile}"
          + (f" scope={args.compile_scope}" if args.compile else ""))
    roofs = {"fp32": matmul_roof(cpu), "bf16": matmul_roof(cpu, dtype=torch.bfloat16)}
    print("2048^3 matmul roofs: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roofs.items()))
    images = load("fashion-mnist", "train").images
    runs = {
        "examples fp32": lambda w: reference_throughput(images, w, args.steps, cpu, 0),
        "ablate fp32": lambda w: ablate_rate(w, args.steps, "fp32", True),
        "ablate bf16 untuned": lambda w: ablate_rate(w, args.steps, "bf16", False),
        "ablate bf16 tuned": lambda w: ablate_rate(w, args.steps, "bf16", True),
    }
    loops = LOOPS + ((COMPILED,) if args.compile else ())
    first: list[tuple[float, int]] = []
    runs[COMPILED] = lambda w: ablate_rate(w, args.steps, "bf16", True, args.compile, first,
                                           args.compile_scope)
    for ngf in args.widths:
        rates: dict[str, list[float]] = {k: [] for k in loops}
        first.clear()
        for r in range(args.rounds):
            for name in (loops if r % 2 == 0 else loops[::-1]):
                rates[name].append(runs[name](ngf))
        flops = flops_per_step("fashion-mnist", ngf)
        ref = statistics.median(rates["examples fp32"])
        print(f"\n28x28x1 all-on, batch 64, ngf=ndf={ngf}: {flops / 1e9:.2f} GFLOP/step")
        print(f"  {'loop':22s} {'img/s':>7s} {'vs examples':>11s} {'fp32 roof':>9s} {'bf16 roof':>9s}  rounds")
        for name in loops:
            med = statistics.median(rates[name])
            achieved = flops * med / 64 / 1e9
            print(f"  {name:22s} {med:7.0f} {med / ref:10.2f}x {100 * achieved / roofs['fp32']:8.0f}% "
                  f"{100 * achieved / roofs['bf16']:8.0f}%  {', '.join(f'{x:.0f}' for x in rates[name])}")
        tuned, untuned = (statistics.median(rates[f"ablate bf16 {k}"]) for k in ("tuned", "untuned"))
        print(f"  tuned / untuned bf16: {tuned / untuned:.2f}x")
        if args.compile:
            compiled = statistics.median(rates[COMPILED])
            eager = 64 * first[0][1] / tuned  # the first window's steps at the tuned rate
            print(f"  compiled / tuned bf16: {compiled / tuned:.2f}x steady; first log window "
                  f"({first[0][1]} steps) {', '.join(f'{t:.1f}' for t, _ in first)} s by round, "
                  f"compilation included ({eager:.1f} s uncompiled)")
    print(f"\nwall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
