"""Dataset basics: the image container, the dataset spec, the data root, scaling.

Every dataset loads as uint8 images (N, C, H, W) plus integer labels; an
:class:`ImageSet` records where they came from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

SPLITS = ("train", "val", "test")
VAL_SIZE = 2000  # held out of the training split; enough for a cheap, stable FID curve
SPLIT_SEED = 0  # fixed: every run, variant and seed sees the same split

# loader(train, root) -> (images uint8 NCHW, labels int64, source) of the official split
Loader = Callable[[bool, Path], tuple[torch.Tensor, torch.Tensor, str]]


@dataclass(frozen=True)
class ImageSet:
    """Images of one split, with their provenance."""

    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    name: str
    split: str
    source: str  # where the files came from: "data root", "download", "system copy", ...
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.images.shape[0]

    def provenance(self) -> dict:
        return {"dataset": self.name, "split": self.split, "source": self.source,
                "num_images": len(self), "shape": list(self.shape)}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's loader of its official train/test split, and its shape.

    ``base`` names the dataset a derived one is built from (Stacked MNIST: ``mnist``):
    it is available where its base is, and its classifier is the base's.
    """

    loader: Loader
    shape: tuple[int, int, int]
    num_classes: int
    description: str
    base: str | None = None


def data_root() -> Path:
    """The data root: ``$ABLATE_DATA`` or ``~/.cache/ablate/data``."""
    return Path(os.environ.get("ABLATE_DATA") or Path.home() / ".cache" / "ablate" / "data")


def scale(images: torch.Tensor, data_range: str) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (``unit``) or [-1, 1] (``symmetric``)."""
    x = images.float().div_(255.0)
    return x.mul_(2.0).sub_(1.0) if data_range == "symmetric" else x


def unscale(x: torch.Tensor, data_range: str) -> torch.Tensor:
    """Inverse of :func:`scale` up to quantisation: float images -> [0, 1]."""
    return ((x + 1.0) / 2.0 if data_range == "symmetric" else x).clamp(0.0, 1.0)
