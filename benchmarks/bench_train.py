"""Training throughput: ablate's trainer against a faithful pytorch/examples DCGAN loop.

Both loops train the same all-on architecture (parameter counts are checked equal),
batch 64, on the same device and thread count, side by side in one process; rounds
alternate A, B, A, B so that drift in machine load hits both. Prints images/s, the
ratio, FLOPs per step (torch.utils.flop_counter) and achieved FLOP/s as a fraction
of the fp32 matmul roof measured in the same run, and of the bf16 one with ``--roof
bf16`` (the machine's real ceiling where bf16 pays: ``ablate doctor``; ``make bench``
passes its verdict).

    python benchmarks/bench_train.py [--device cpu|cuda] [--steps 60] [--rounds 3] [--roof bf16]

The reference is pytorch/examples' dcgan/main.py loop: a torchvision dataset with
ToTensor + Normalize transforms behind a DataLoader (shuffle, ``--workers``), BCELoss on
a Sigmoid D output, D's real and fake losses backpropagated before one D step, the
G step reusing the fake batch, and three ``.item()`` reads per step for its log line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from ablate.hacks import registry  # noqa: E402
from ablate.data import DatasetSpec, register_dataset  # noqa: E402
from ablate.training.models import build_models  # noqa: E402
from ablate.config import TrainConfig  # noqa: E402
from ablate.training.resolve import resolve  # noqa: E402
from ablate.training.loop import train  # noqa: E402

NZ = 100


# --------------------------------------------------------------------------------------
# The reference: pytorch/examples dcgan, same layer shapes as ablate's all-on DCGAN
# --------------------------------------------------------------------------------------
def reference_nets(nc: int, side: int, ngf: int, ndf: int) -> tuple[nn.Module, nn.Module]:
    """pytorch/examples' Generator/Discriminator written out, scaled to 28 or 32 px."""
    if side == 32:
        g = nn.Sequential(
            nn.ConvTranspose2d(NZ, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=True), nn.Tanh())
        d = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=True), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=True), nn.Sigmoid())
    else:
        g = nn.Sequential(
            nn.ConvTranspose2d(NZ, ngf * 2, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=True), nn.Tanh())
        d = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=True), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=True), nn.Sigmoid())

    def weights_init(m):  # pytorch/examples' weights_init
        name = m.__class__.__name__
        if name.find("Conv") != -1:
            nn.init.normal_(m.weight.data, 0.0, 0.02)
        elif name.find("BatchNorm") != -1:
            nn.init.normal_(m.weight.data, 1.0, 0.02)
            nn.init.constant_(m.bias.data, 0)

    g.apply(weights_init)
    d.apply(weights_init)
    return g, d


class _Dataset(torch.utils.data.Dataset):
    """uint8 images served like torchvision's MNIST/CIFAR: PIL image -> transforms."""

    def __init__(self, images: torch.Tensor):
        import torchvision.transforms as T
        from PIL import Image

        self.images, self.Image = images, Image
        c = images.shape[1]
        self.transform = T.Compose([T.ToTensor(), T.Normalize((0.5,) * c, (0.5,) * c)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        img = self.Image.fromarray(x[0].numpy(), mode="L") if x.shape[0] == 1 else \
            self.Image.fromarray(x.permute(1, 2, 0).numpy())
        return self.transform(img), 0


def reference_throughput(images: torch.Tensor, ngf: int, steps: int, device: torch.device,
                         workers: int) -> float:
    """Images/s of the pytorch/examples loop over ``steps`` steps after 5 warm-up steps."""
    torch.manual_seed(0)
    g, d = reference_nets(images.shape[1], images.shape[2], ngf, ngf)
    g, d = g.to(device), d.to(device)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), lr=0.0002, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=0.0002, betas=(0.5, 0.999))
    loader = DataLoader(_Dataset(images), batch_size=64, shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    real_label, fake_label = 1.0, 0.0
    t0 = None
    for i, data in enumerate(batches):
        if i == 5:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        if i == 5 + steps:
            break
        d.zero_grad()
        real_cpu = data[0].to(device)
        b = real_cpu.size(0)
        label = torch.full((b,), real_label, dtype=real_cpu.dtype, device=device)
        output = d(real_cpu).view(-1)
        err_real = criterion(output, label)
        err_real.backward()
        d_x = output.mean().item()
        noise = torch.randn(b, NZ, 1, 1, device=device)
        fake = g(noise)
        label.fill_(fake_label)
        output = d(fake.detach()).view(-1)
        err_fake = criterion(output, label)
        err_fake.backward()
        d_g_z1 = output.mean().item()
        opt_d.step()
        g.zero_grad()
        label.fill_(real_label)
        output = d(fake).view(-1)
        err_g = criterion(output, label)
        err_g.backward()
        d_g_z2 = output.mean().item()
        opt_g.step()
        del d_x, d_g_z1, d_g_z2
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * 64 / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# ablate's trainer
# --------------------------------------------------------------------------------------
def _ablate_config(dataset: str, ngf: int, steps: int, device: torch.device) -> TrainConfig:
    return TrainConfig(dataset=dataset, steps=steps, batch_size=64, seed=0, ngf=ngf, ndf=ngf,
                       hacks=tuple(registry.builtin_names()), device=str(device),
                       log_every=max(1, steps // 4))


def ablate_throughput(dataset: str, ngf: int, steps: int, device: torch.device) -> float:
    """Steady-state images/s of ``ablate.training.loop`` (the first log window is warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        train(resolve(_ablate_config(dataset, ngf, steps + steps // 4, device)), Path(tmp) / "run")
        log = [json.loads(x) for x in (Path(tmp) / "run/log.jsonl").read_text().splitlines()]
    windows = [r["images_per_s"] for r in log[1:]]
    return statistics.median(windows)


def flops_per_step(dataset: str, ngf: int) -> int:
    """FLOPs of one ablate training step: FLOPs(2 steps) - FLOPs(1 step), so that setup,
    the sample grid and evaluation cancel out."""
    counts = []
    for steps in (1, 2):
        with tempfile.TemporaryDirectory() as tmp, FlopCounterMode(display=False) as fc:
            train(resolve(_ablate_config(dataset, ngf, steps, torch.device("cpu"))), Path(tmp) / "run")
        counts.append(fc.get_total_flops())
    return counts[1] - counts[0]


def matmul_roof(device: torch.device, n: int = 2048, reps: int = 15,
                dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n^3 matmul in ``dtype``, the best of ``reps``: the practical compute roof.

    The best (not the median) rate, so that a loaded moment cannot lower the roof and
    flatter the efficiency figures."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(reps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times[2:]) / 1e9


def _register_rgb32() -> None:
    """32x32x3 uint8 images with CIFAR-10's pixel statistics are enough for timing."""
    def loader(train_split: bool, root):
        gen = torch.Generator().manual_seed(0)
        n = 6000 if train_split else 1000
        return (torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8),
                torch.randint(0, 10, (n,), generator=gen), "generated (benchmark)")

    register_dataset("bench-rgb32", DatasetSpec(loader, (3, 32, 32), 10, "benchmark only"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                   help="DataLoader workers of the reference (pytorch/examples default: 2)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--configs", nargs="+", default=["28:64", "28:32", "32:64"])
    p.add_argument("--roof", default="fp32", choices=["fp32", "bf16"],
                   help="the right roof: bf16 where bf16 pays here (ablate doctor); the fp32 share is printed too")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    _register_rgb32()
    from ablate.data import load

    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    roofs = {"fp32": matmul_roof(device)}
    if args.roof == "bf16":
        roofs["bf16"] = matmul_roof(device, dtype=torch.bfloat16)
    print("; ".join(f"{k} 2048^3 matmul roof: {v:.0f} GFLOP/s" for k, v in roofs.items())
          + (" (the right roof here: bf16 pays)" if args.roof == "bf16" else ""))
    for spec in args.configs:
        side, ngf = map(int, spec.split(":"))
        dataset = "fashion-mnist" if side == 28 else "bench-rgb32"
        images = load(dataset, "train").images
        g_ref, d_ref = reference_nets(images.shape[1], side, ngf, ngf)
        g_abl, d_abl = build_models(registry.build_recipe(registry.instantiate(
            registry.builtin_names())), tuple(images.shape[1:]), ngf, ngf)
        n_ref = sum(p.numel() for p in itertools.chain(g_ref.parameters(), d_ref.parameters()))
        n_abl = sum(p.numel() for p in itertools.chain(g_abl.parameters(), d_abl.parameters()))
        assert n_ref == n_abl, f"architectures differ: {n_ref} vs {n_abl} parameters"
        ours, refs = [], {w: [] for w in args.workers}
        for _ in range(args.rounds):
            ours.append(ablate_throughput(dataset, ngf, args.steps, device))
            for w in args.workers:
                refs[w].append(reference_throughput(images, ngf, args.steps, device, w))
        flops = flops_per_step(dataset, ngf)
        ours_med = statistics.median(ours)
        achieved = flops * ours_med / 64 / 1e9
        print(f"\n{side}x{side}x{images.shape[1]} ngf=ndf={ngf} batch 64 ({n_abl:,} parameters)")
        print(f"  ablate all-on:            {ours_med:8.0f} img/s  (rounds: {', '.join(f'{x:.0f}' for x in ours)})")
        best_ref = 0.0
        for w, xs in refs.items():
            med = statistics.median(xs)
            best_ref = max(best_ref, med)
            print(f"  reference, {w} workers:    {med:8.0f} img/s  -> ratio {ours_med / med:.2f}x")
        print(f"  ratio vs the faster reference: {ours_med / best_ref:.2f}x")
        print(f"  FLOPs/step {flops / 1e9:.2f} GFLOP -> {achieved:.0f} GFLOP/s = "
              + ", ".join(f"{100 * achieved / v:.0f}% of the {k} matmul roof" for k, v in roofs.items()))


if __name__ == "__main__":
    main()
