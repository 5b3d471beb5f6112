"""One training step, four ways: memory layout and Adam implementation side by side.

Times the all-on (or ``--all-off``) DCGAN step — G forward, two D updates (real-only,
fake-only), one G update, batch 64 — with NCHW vs channels_last and foreach vs fused
Adam, interleaving the variants over rounds so that load drift hits all alike, and
prints ms/step and the speed-up over the plain NCHW + foreach step. This is the
evidence for the choices in ``ablate.training.loop`` (channels_last: kept; fused Adam: no gain).

    python benchmarks/bench_step.py [--ngf 64] [--side 28|32] [--all-off]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ablate.hacks import registry
from ablate.training.models import build_models


def make_step(recipe, shape, ngf: int, channels_last: bool, fused: bool):
    torch.manual_seed(0)
    g, d = build_models(recipe, shape, ngf, ngf)
    x = torch.rand(64, *shape) * 2 - 1
    if channels_last:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    kw = {"fused": True} if fused else {"foreach": True}
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999), **kw)
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999), **kw)
    ones, zeros = torch.ones(64), torch.zeros(64)

    def step():
        fake = g(torch.randn(64, 100))
        for xx, t in ((x, ones), (fake.detach(), zeros)):
            opt_d.zero_grad()
            F.binary_cross_entropy_with_logits(d(xx), t).backward()
            opt_d.step()
        opt_g.zero_grad()
        F.binary_cross_entropy_with_logits(d(fake), ones).backward()
        opt_g.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--side", type=int, default=28, choices=[28, 32])
    p.add_argument("--all-off", action="store_true")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hacks = [] if args.all_off else registry.builtin_names()
    recipe = registry.build_recipe(registry.instantiate(hacks))
    shape = (1, 28, 28) if args.side == 28 else (3, 32, 32)
    variants = {f"{'channels_last' if cl else 'NCHW'} + {'fused' if fu else 'foreach'} Adam":
                make_step(recipe, shape, args.ngf, cl, fu)
                for cl in (False, True) for fu in (False, True)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for step in variants.values():
        for _ in range(3):
            step()  # warm-up: oneDNN primitive caches
    for _ in range(args.rounds):
        for name, step in variants.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t) / args.steps)
    print(f"{'all-off' if args.all_off else 'all-on'} step, {shape[1]}x{shape[2]}x{shape[0]}, "
          f"ngf=ndf={args.ngf}, batch 64, {args.threads} threads")
    base = statistics.median(next(iter(times.values())))
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<26} {1000 * med:7.1f} ms/step   speed-up {base / med:.2f}x")


if __name__ == "__main__":
    main()
