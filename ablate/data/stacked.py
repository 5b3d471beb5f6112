"""Stacked MNIST-style datasets: three random images as the RGB channels (1000 modes).

Each sample stacks three images drawn at random (with replacement, fixed seed) from the
base dataset's split; its label is ``100*c0 + 10*c1 + c2`` (PacGAN / VEEGAN protocol).
Stacked test images come from the base test split, training images from the base
training split. Mode counting classifies each channel with the base dataset's
classifier (:mod:`ablate.metrics.classifier`).

Registered datasets: ``stacked-mnist`` (full MNIST; needs the IDX files),
``stacked-mnist-5k`` (the offline 5k MNIST subset) and ``stacked-fashion-mnist``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ablate.data.core import DatasetSpec

STACKED: dict[str, str] = {  # stacked dataset -> base dataset
    "stacked-mnist": "mnist",
    "stacked-mnist-5k": "mnist-5k",
    "stacked-fashion-mnist": "fashion-mnist",
}
SIZES = {True: 50_000, False: 10_000}  # stacked train / test samples
_SEEDS = {True: 11, False: 12}


def stack(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of 3 random 1-channel images as channels; labels base-10 coded."""
    idx = torch.randint(len(labels), (n, 3), generator=torch.Generator().manual_seed(seed))
    stacked = images[idx].squeeze(2)  # (n, 3, 1, H, W) -> (n, 3, H, W)
    code = labels[idx] * torch.tensor([100, 10, 1])
    return stacked.contiguous(), code.sum(1)


def stacked_spec(base: str, base_spec: DatasetSpec) -> DatasetSpec:
    """The spec of the stacked dataset built from ``base`` (``base_spec``'s loader)."""

    def load(train: bool, root: Path):
        images, labels, source = base_spec.loader(train, root)
        x, y = stack(images, labels, SIZES[train], _SEEDS[train])
        return x, y, f"stacked from {base} ({source})"

    return DatasetSpec(load, (3, *base_spec.shape[1:]), 1000,
                       f"Stacked {base}: 3 random {base} images as RGB, 1000 modes "
                       f"({SIZES[True] // 1000}k/{SIZES[False] // 1000}k)", base=base)
