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

from ablate import data

STACKED: dict[str, str] = {  # stacked dataset -> base dataset
    "stacked-mnist": "mnist",
    "stacked-mnist-5k": "mnist-5k",
    "stacked-fashion-mnist": "fashion-mnist",
}
SIZES = {True: 50_000, False: 10_000}  # stacked train / test samples
_SEEDS = {True: 11, False: 12}


def base_dataset(name: str) -> str:
    """The dataset whose classifier scores ``name`` (itself unless stacked)."""
    return STACKED.get(name, name)


def is_stacked(name: str) -> bool:
    return name in STACKED


def stack(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of 3 random 1-channel images as channels; labels base-10 coded."""
    idx = torch.randint(len(labels), (n, 3), generator=torch.Generator().manual_seed(seed))
    stacked = images[idx].squeeze(2)  # (n, 3, 1, H, W) -> (n, 3, H, W)
    code = labels[idx] * torch.tensor([100, 10, 1])
    return stacked.contiguous(), code.sum(1)


def _loader(base: str):
    def load(train: bool, root: Path):
        images, labels, source = data.dataset_spec(base).loader(train, root)
        x, y = stack(images, labels, SIZES[train], _SEEDS[train])
        return x, y, f"stacked from {base} ({source})"

    return load


for _name, _base in STACKED.items():
    _shape = data.DATASETS[_base].shape
    data.register_dataset(_name, data.DatasetSpec(
        _loader(_base), (3, *_shape[1:]), 1000,
        f"Stacked {_base}: 3 random {_base} images as RGB, 1000 modes "
        f"({SIZES[True] // 1000}k/{SIZES[False] // 1000}k)"))
